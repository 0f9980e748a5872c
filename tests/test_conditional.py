"""Conditional models (``condition: [label, ...]``): forward/backward, the condition reaching the output,
errors for a missing or unexpected condition, standardization carried by the checkpoint, and unconditional
models left exactly as they were."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from genvae.data import MNISTDataModule
from genvae.data.attributes import ATTRIBUTE_NAMES
from genvae.errors import ConfigError
from genvae.models import AE, ARVAE, VAE
from genvae.models.base import batch_condition
from genvae.models.conditioning import ConditionEmbedding, draw_condition

# state-dict entries (name: shape) of the default unconditional models, as before conditioning existed
CONV_KEYS = {
    "backbone.encoder.0.weight": (32, 1, 4, 4),
    "backbone.encoder.0.bias": (32,),
    "backbone.encoder.2.weight": (64, 32, 4, 4),
    "backbone.encoder.2.bias": (64,),
    "backbone.decoder.0.weight": (64, 32, 4, 4),
    "backbone.decoder.0.bias": (32,),
    "backbone.decoder.2.weight": (32, 1, 4, 4),
    "backbone.decoder.2.bias": (1,),
    "decoder_head.0.weight": (3136, 16),
    "decoder_head.0.bias": (3136,),
}


def batch(n: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "image": torch.rand(n, 1, 28, 28, generator=generator),
        "label": torch.arange(n) % 10,
        "attributes": torch.rand(n, len(ATTRIBUTE_NAMES), generator=generator) * 3,
    }


@pytest.mark.parametrize("family", [AE, VAE, ARVAE])
def test_unconditional_state_dict_is_unchanged(family: type) -> None:
    model = family()
    heads = 16 if family is AE else 32
    expected = {**CONV_KEYS, "encoder_head.1.weight": (heads, 3136), "encoder_head.1.bias": (heads,)}
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    assert model.condition_names == () and batch_condition(model, batch()) is None


@pytest.mark.parametrize("family", [VAE, ARVAE])
def test_conditional_forward_backward(family: type) -> None:
    torch.manual_seed(0)
    model = family(latent_dim=8, condition=["label", "thickness"])
    terms = model.losses(batch())
    terms["loss"].backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and g.isfinite().all() for g in grads)
    assert model.encoder_head[1].weight.grad[:, -11:].abs().sum() > 0  # the condition reaches the encoder
    assert model.decoder_head[0].weight.grad[:, -11:].abs().sum() > 0  # and the decoder
    assert model.condition_channels and model.backbone.encoder[0].weight.shape == (32, 1 + 11, 4, 4)
    assert model.backbone.encoder[0].weight.grad[:, 1:].abs().sum() > 0  # as input channels too


def test_condition_channels_only_for_convolutional_encoders() -> None:
    x, condition = torch.rand(3, 1, 28, 28), {"label": torch.tensor([0, 4, 9])}
    resnet = VAE(latent_dim=4, backbone="resnet", condition=["label"])
    assert resnet.condition_channels and resnet.backbone.encoder[0].in_channels == 11
    mlp = VAE(latent_dim=4, backbone="mlp", backbone_kwargs={"hidden": [32]}, condition=["label"])
    assert not mlp.condition_channels and mlp.backbone.encoder[1].in_features == 784  # the head alone
    for model in (resnet, mlp):
        assert model.encode(x, condition).shape == (3, 4)
    keys = set(model.state_dict())
    assert {"condition_embedding.attribute_mean", "condition_embedding.attribute_std"} <= keys


def test_condition_changes_the_output() -> None:
    torch.manual_seed(0)
    model = VAE(latent_dim=4, condition=["label"]).eval()
    z = torch.randn(3, 4)
    three = model.decode(z, {"label": torch.full((3,), 3)})
    seven = model.decode(z, {"label": torch.full((3,), 7)})
    assert (three - seven).abs().amax() > 1e-4
    x = torch.rand(3, 1, 28, 28)
    assert (
        model.encode(x, {"label": torch.zeros(3)}) - model.encode(x, {"label": torch.ones(3)})
    ).abs().amax() > 0
    assert model.sample(5, {"label": torch.arange(5)}).shape == (5, 1, 28, 28)
    nll = model.iwae_nll(x, 4, condition={"label": torch.arange(3)})
    assert nll.shape == (3,) and nll.isfinite().all()


def test_missing_or_unexpected_condition_is_a_config_error() -> None:
    conditional = VAE(latent_dim=4, condition=["label"])
    x = torch.rand(2, 1, 28, 28)
    with pytest.raises(ConfigError, match=r"VAE needs condition \['label'\]"):
        conditional.encode(x)
    with pytest.raises(ConfigError, match="needs condition"):
        conditional.sample(2)
    with pytest.raises(ConfigError, match="not on"):
        conditional.decode(torch.zeros(2, 4), {"label": torch.zeros(2), "slant": torch.zeros(2)})
    with pytest.raises(ConfigError, match=r"classes must lie in \[0, 10\)"):
        conditional.decode(torch.zeros(2, 4), {"label": torch.tensor([3, 10])})
    with pytest.raises(ConfigError, match=r"classes must lie in \[0, 10\)"):
        conditional.decode(torch.zeros(2, 4), {"label": torch.tensor([-1, 3])})  # not class 9
    with pytest.raises(ConfigError, match="VAE is not conditional"):
        VAE(latent_dim=4).decode(torch.zeros(2, 4), {"label": torch.zeros(2)})
    with pytest.raises(ConfigError, match="model.condition"):
        VAE(condition=["colour"])
    with pytest.raises(ConfigError, match="model.condition"):
        VAE(condition=["label", "label"])


def test_embedding_one_hot_and_standardization() -> None:
    embedding = ConditionEmbedding(["slant", "label"])
    values = torch.tensor([[0.1], [0.3], [float("nan")], [0.5]])
    embedding.set_statistics(values)
    assert torch.allclose(embedding.attribute_mean, torch.tensor([0.3]))
    assert torch.allclose(embedding.attribute_std, torch.tensor([0.2]))
    out = embedding({"label": torch.tensor([2, 0]), "slant": torch.tensor([0.5, 0.1])})
    assert out.shape == (2, 11) and embedding.width == 11
    assert out[0, :10].argmax() == 2 and out[1, :10].argmax() == 0
    assert torch.allclose(out[:, 10], torch.tensor([1.0, -1.0]))
    restored = ConditionEmbedding(["slant", "label"])
    restored.load_state_dict(embedding.state_dict())
    assert bool(restored.statistics_set) and torch.equal(restored.attribute_std, embedding.attribute_std)


def test_draw_condition_is_class_balanced_or_follows_the_data() -> None:
    model = VAE(latent_dim=4, condition=["label"])
    assert draw_condition(model, 12, offset=5)["label"].tolist() == [5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6]
    assert draw_condition(VAE(latent_dim=4), 3) is None
    both = VAE(latent_dim=4, condition=["label", "width"])
    data = batch(4)
    drawn = draw_condition(both, 6, data, offset=2)
    assert drawn["label"].tolist() == [2, 3, 0, 1, 2, 3]
    assert torch.equal(drawn["width"], data["attributes"][[2, 3, 0, 1, 2, 3], ATTRIBUTE_NAMES.index("width")])
    with pytest.raises(ConfigError, match="data split with attributes"):
        draw_condition(both, 2)


def test_attribute_standardization_travels_in_the_checkpoint(tiny_mnist: Path, tmp_path: Path) -> None:
    """A fit sets the standardization from the training split once; a checkpoint carries it."""
    L.seed_everything(0)
    datamodule = MNISTDataModule(root=str(tiny_mnist), batch_size=32, download=False, data_on_device=False)
    model = ARVAE(latent_dim=8, condition=["label", "thickness", "slant"], backbone="mlp")
    trainer = L.Trainer(
        max_steps=2,
        limit_val_batches=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule)
    train = datamodule.splits["train"]["attributes"].double()
    columns = [ATTRIBUTE_NAMES.index("thickness"), ATTRIBUTE_NAMES.index("slant")]
    expected_mean = train[:, columns].nanmean(0).float()
    embedding = model.condition_embedding
    assert bool(embedding.statistics_set)
    assert torch.allclose(embedding.attribute_mean, expected_mean, atol=1e-5)
    assert model.condition_columns == {"thickness": columns[0], "slant": columns[1]}
    path = tmp_path / "cond.ckpt"
    trainer.save_checkpoint(path)
    loaded = ARVAE.load_from_checkpoint(path, map_location="cpu")
    assert loaded.condition_names == ("label", "thickness", "slant")
    assert torch.equal(loaded.condition_embedding.attribute_mean, embedding.attribute_mean)
    assert torch.equal(loaded.condition_embedding.attribute_std, embedding.attribute_std)
    condition = batch_condition(loaded, batch(4))
    assert set(condition) == {"label", "thickness", "slant"}
    assert loaded.decode(torch.zeros(4, 8), condition).shape == (4, 1, 28, 28)

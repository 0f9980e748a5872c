"""AR-VAE loss, configuration errors, the test-time metrics of GenerativeModel and the traversal callback."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from genvae.callbacks import LatentTraversal
from genvae.callbacks.traversal import attribute_curves, attribute_pairs, traverse
from genvae.data import MNISTDataModule
from genvae.data.attributes import ATTRIBUTE_NAMES
from genvae.errors import ConfigError
from genvae.metrics.evaluation import EvaluationCollector, gather_rows
from genvae.models import ARVAE, VAE
from genvae.models.arvae import attribute_regularization


def brute_force_loss(z: torch.Tensor, a: torch.Tensor, delta: float) -> float:
    """The paper's definition, one pair at a time."""
    m = len(z)
    total = 0.0
    for i in range(m):
        for j in range(m):
            gap = a[i] - a[j]
            sign = 1.0 if gap > 0 else (-1.0 if gap < 0 else 0.0)
            total += abs(math.tanh(delta * (z[i] - z[j])) - sign)
    return total / m**2


def small_arvae(**kwargs) -> ARVAE:
    options = {"backbone": "mlp", "backbone_kwargs": {"hidden": [32]}, "latent_dim": 8, **kwargs}
    return ARVAE(**options)


def fake_batch(n: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.rand(n, 1, 28, 28, generator=g),
        "attributes": torch.randn(n, 6, generator=g),
        "label": torch.zeros(n, dtype=torch.long),
        "index": torch.arange(n),
    }


# ------------------------------------------------------------------ the regulariser
def test_loss_matches_a_brute_force_double_loop_with_ties() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(9, 2, generator=g, dtype=torch.float64)
    a = torch.randint(0, 3, (9, 2), generator=g).double()  # many equal attributes: sign(0) = 0
    loss = attribute_regularization(z, a, delta=1.7)
    for k in range(2):
        assert loss[k].item() == pytest.approx(brute_force_loss(z[:, k].tolist(), a[:, k].tolist(), 1.7))


def test_equal_attributes_pull_latents_together_and_ordered_latents_cost_nothing() -> None:
    z = torch.tensor([[0.0], [2.0]])
    tied = torch.tensor([[5.0], [5.0]])
    # pairs (0,1) and (1,0) have target 0 and cost tanh(2); the diagonal costs nothing
    assert attribute_regularization(z, tied).item() == pytest.approx(2 * math.tanh(2.0) / 4)
    a = torch.arange(6.0).unsqueeze(1) * 3.0
    ordered = attribute_regularization(a * 10, a, delta=1.0).item()
    reversed_ = attribute_regularization(-a * 10, a, delta=1.0).item()
    assert ordered == pytest.approx(0.0, abs=1e-6)
    assert reversed_ == pytest.approx(2.0 * 30 / 36, rel=1e-5)  # 30 off-diagonal pairs, each |-1 - 1|


def test_gradient_flows_into_z_and_the_encoder() -> None:
    z = torch.randn(8, 3, requires_grad=True)
    attribute_regularization(z, torch.randn(8, 3)).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    model = small_arvae()
    model.losses(fake_batch())["ar_loss"].backward()
    assert model.encoder_head[1].weight.grad.abs().sum() > 0
    assert model.decoder_head[0].weight.grad is None  # the regulariser acts on z only


def test_nan_attributes_are_left_out_of_the_pairs() -> None:
    z = torch.randn(5, 1)
    a = torch.tensor([[1.0], [2.0], [float("nan")], [0.5], [3.0]])
    keep = [0, 1, 3, 4]
    expected = brute_force_loss(z[keep, 0].tolist(), a[keep, 0].tolist(), 1.0)
    assert attribute_regularization(z, a).item() == pytest.approx(expected)


def test_losses_add_gamma_times_the_regulariser_on_the_chosen_dims() -> None:
    model = small_arvae(attributes=["slant", "area"], latent_dims=[5, 2], gamma=3.0, delta=0.5).eval()
    batch = fake_batch()
    torch.manual_seed(1)
    terms = model.losses(batch)
    torch.manual_seed(1)
    vae_terms, z = model.vae_terms(batch)
    expected = attribute_regularization(z[:, [5, 2]], batch["attributes"][:, [1, 3]], delta=0.5)
    assert torch.allclose(torch.stack([terms["ar_loss/slant"], terms["ar_loss/area"]]), expected)
    assert torch.allclose(terms["loss"], vae_terms["loss"] + 3.0 * expected.sum())
    assert set(terms) >= {"loss", "recon", "kl", "ar_loss", "reconstruction"}


def test_defaults_regularize_the_first_six_dims_in_datamodule_order() -> None:
    model = small_arvae()
    assert model.regularized_attributes == ATTRIBUTE_NAMES
    assert model.regularized_dims == (0, 1, 2, 3, 4, 5)
    assert (model.gamma, model.delta, model.beta) == (10.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attributes": ["thickness", "colour"]}, "unknown: \\['colour'\\]"),
        ({"attributes": ["slant", "slant"]}, "distinct names"),
        ({"attributes": ["slant", "area"], "latent_dims": [0]}, "1 dims given for 2 attributes"),
        ({"attributes": ["slant"], "latent_dims": [8]}, "latent_dims"),
        ({"attributes": ["slant", "area"], "latent_dims": [1, 1]}, "distinct dims"),
        ({"delta": 0.0}, "delta > 0"),
    ],
)
def test_bad_configuration_is_a_config_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        small_arvae(**kwargs)


def test_batch_without_attributes_is_a_config_error() -> None:
    batch = fake_batch()
    del batch["attributes"]
    with pytest.raises(ConfigError, match="attributes=true"):
        small_arvae().losses(batch)


# ------------------------------------------------------------------ test-time evaluation
def test_fit_and_test_log_the_metrics_and_the_traversal(tiny_mnist: Path, tmp_path: Path) -> None:
    L.seed_everything(0)
    data = MNISTDataModule(root=str(tiny_mnist), batch_size=32, eval_batch_size=64, download=False)
    model = small_arvae()
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[LatentTraversal(steps=3, curve_steps=3, num_bases=1)],
    )
    trainer.fit(model, data)
    trainer.test(model, data, verbose=False)
    results = model.test_results
    expected = {"recon_accuracy", "interpretability", "mig", "modularity", "sap", "spearman"}
    assert {f"test/{name}" for name in expected} <= set(results)
    assert {f"test/interpretability/{name}" for name in ATTRIBUTE_NAMES} <= set(results)
    monotonicity = {k: v for k, v in results.items() if k.startswith("test/traversal_monotonicity/")}
    assert set(monotonicity) == {f"test/traversal_monotonicity/{name}" for name in ATTRIBUTE_NAMES}
    assert all(-1.0 <= v <= 1.0 or math.isnan(v) for v in monotonicity.values())
    for name, value in results.items():
        if name not in monotonicity:  # added by LatentTraversal after logging has closed
            assert float(trainer.callback_metrics[name]) == pytest.approx(value, rel=1e-6)
    assert 0.0 <= results["test/recon_accuracy"] <= 1.0
    n_test = len(data.splits["test"]["label"])
    assert model.test_outputs["latent"].shape == (n_test, 8)
    assert torch.equal(model.test_outputs["index"], torch.arange(n_test))
    assert torch.equal(model.test_outputs["attributes"], data.splits["test"]["attributes"])
    for stage in ("fit", "test"):
        for figure in ("grid", "attributes"):
            assert len(list((tmp_path / "figures" / stage / "traversal" / figure).glob("*.png"))) == 1


def test_models_without_attributes_still_get_reconstruction_accuracy(
    tiny_mnist: Path, tmp_path: Path
) -> None:
    data = MNISTDataModule(root=str(tiny_mnist), eval_batch_size=64, download=False, attributes=False)
    model = VAE(backbone="mlp", backbone_kwargs={"hidden": [16]}, latent_dim=2)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.test(model, data, verbose=False)
    assert set(model.test_results) == {"test/recon_accuracy"}


class TwoRankStub:
    """Stands in for rank 0 of two DDP ranks: ``all_gather`` stacks this rank's tensor with rank 1's."""

    def __init__(self, other_rows: torch.Tensor) -> None:
        self._trainer = type("T", (), {"world_size": 2})()
        self.other_rows = other_rows

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.shape == (1,):  # the lengths
            return torch.stack([tensor, torch.tensor([len(self.other_rows)])])
        other = tensor.new_zeros(tensor.shape)
        other[: len(self.other_rows)] = self.other_rows
        return torch.stack([tensor, other])


def test_gather_rows_drops_the_padding_of_unequal_shards() -> None:
    mine, theirs = torch.arange(10.0).view(5, 2), torch.arange(100.0, 106.0).view(3, 2)
    assert torch.equal(gather_rows(TwoRankStub(theirs), mine), torch.cat([mine, theirs]))
    assert torch.equal(gather_rows(TwoRankStub(mine), theirs), torch.cat([theirs, mine]))


def test_collector_keeps_each_example_once_in_index_order() -> None:
    collector = EvaluationCollector()
    collector.update(index=torch.tensor([3, 1]), latent=torch.tensor([[3.0], [1.0]]))
    collector.update(index=torch.tensor([2, 3]), latent=torch.tensor([[2.0], [3.0]]))  # 3 repeated
    gathered = collector.gather(SimpleNamespace(_trainer=None))  # a single process
    assert gathered["index"].tolist() == [1, 2, 3]
    assert gathered["latent"].flatten().tolist() == [1.0, 2.0, 3.0]


# ------------------------------------------------------------------ traversal curves
class RectangleDecoder(torch.nn.Module):
    """A 'model' whose decoded digit is a bar: z0 sets its width, z1 its height (known monotone answer)."""

    latent_dim = 3
    regularized_dims = (0, 1)
    regularized_attributes = ("width", "height")

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        half_width = 3 + 2 * z[:, 0].clamp(-1.4, 1.4)  # 0.2 .. 5.8 pixels
        half_height = 7 + 2 * z[:, 1].clamp(-3, 3)
        coords = torch.arange(28.0) - 13.5
        cols = torch.sigmoid(4 * (half_width.view(-1, 1) - coords.abs()))
        rows = torch.sigmoid(4 * (half_height.view(-1, 1) - coords.abs()))
        return (rows.unsqueeze(2) * cols.unsqueeze(1)).unsqueeze(1)


def test_attribute_curves_rise_when_the_decoder_is_monotone() -> None:
    model = RectangleDecoder()
    pairs = attribute_pairs(model)
    assert pairs == [(0, "width"), (1, "height")]
    offsets, curves = attribute_curves(model, pairs, steps=9, span=1.0)
    assert torch.allclose(offsets, torch.linspace(-1, 1, 9))
    assert curves.shape == (2, 9)
    assert (curves.diff(dim=1) > 0).all(), curves
    images = traverse(model, [0, 1], offsets)
    assert images.shape == (9, 2, 1, 1, 28, 28)


def test_traversal_is_centred_on_the_test_latents() -> None:
    model = RectangleDecoder()
    latents = torch.randn(200, 3) * torch.tensor([0.1, 0.5, 1.0]) + torch.tensor([0.2, -1.0, 0.0])
    model.test_outputs = {"latent": latents}
    z_seen: list[torch.Tensor] = []
    decode = model.decode
    model.decode = lambda z: z_seen.append(z) or decode(z)  # type: ignore[method-assign]
    traverse(model, [1], torch.tensor([-3.0, 0.0, 3.0]))
    swept = z_seen[0][:, 1]
    mean, std = latents[:, 1].mean(), latents[:, 1].std()
    assert torch.allclose(swept, torch.stack([mean - 3 * std, mean, mean + 3 * std]))
    assert torch.allclose(z_seen[0][:, 0], latents[:, 0].mean().expand(3))


def test_curve_monotonicity_is_the_rank_correlation_with_the_offset() -> None:
    from genvae.callbacks.traversal import curve_monotonicity

    nan = float("nan")
    curves = torch.tensor(
        [
            [0.1, 0.5, 0.6, 2.0],  # rising, not linearly: 1
            [3.0, 2.0, 1.0, 0.0],  # falling: -1
            [0.0, 2.0, 1.0, 3.0],  # one swap: 0.8
            [nan, 1.0, nan, 2.0],  # NaN points (blank images) left out
            [nan, nan, nan, 1.0],  # fewer than two points: NaN
        ]
    )
    scores = curve_monotonicity(curves)
    assert scores[:4] == pytest.approx([1.0, -1.0, 0.8, 1.0])
    assert math.isnan(scores[4])

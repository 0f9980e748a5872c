"""VQ-VAE: quantizer math against hand computations, codebook maintenance, the model, and the prior."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from genvae.data import MNISTDataModule
from genvae.errors import ConfigError
from genvae.models import VAE, VQVAE, VQPrior
from genvae.models.quantizer import VectorQuantizer, code_usage, kmeans, perplexity
from genvae.utils import sync

from .conftest import REPO


def grid(vectors: torch.Tensor) -> torch.Tensor:
    """``[N, D]`` vectors as a ``[1, D, N]`` "image" grid, the layout the quantizer takes."""
    return vectors.t().unsqueeze(0)


# ----------------------------------------------------------------------------------- quantizer math
@pytest.mark.parametrize("cosine", [False, True])
def test_nearest_code_matches_brute_force(cosine: bool) -> None:
    torch.manual_seed(0)
    quantizer = VectorQuantizer(num_codes=32, code_dim=5, cosine=cosine).eval()
    with torch.no_grad():
        quantizer.codebook.normal_()
    z = torch.randn(3, 5, 4, 6)
    quantized, indices = quantizer.lookup(z)
    vectors = z.permute(0, 2, 3, 1).reshape(-1, 5)
    codes = quantizer.codebook.detach()
    if cosine:
        expected = (vectors @ codes.t() / vectors.norm(dim=1, keepdim=True) / codes.norm(dim=1)).argmax(1)
        codes = codes / codes.norm(dim=1, keepdim=True)
    else:
        expected = torch.stack([(codes - v).pow(2).sum(1).argmin() for v in vectors])
    assert indices.shape == (3, 4, 6)
    assert torch.equal(indices.flatten(), expected)
    assert torch.allclose(quantized.permute(0, 2, 3, 1).reshape(-1, 5), codes[expected])


def test_straight_through_gradient_and_losses_by_hand() -> None:
    quantizer = VectorQuantizer(num_codes=2, code_dim=1, beta=0.25).train()
    with torch.no_grad():
        quantizer.codebook.copy_(torch.tensor([[0.0], [10.0]]))
    z = torch.tensor([[[1.0, 2.0, 9.0]], [[11.0, -1.0, 4.0]]], requires_grad=True)  # [B=2, D=1, 3]
    out = quantizer(z)
    assert out.indices.tolist() == [[0, 0, 1], [1, 0, 0]]
    assert out.quantized.tolist() == [[[0.0, 0.0, 10.0]], [[10.0, 0.0, 0.0]]]
    squared = 1 + 4 + 1 + 1 + 1 + 16  # per-vector squared distances to the chosen codes
    assert out.commitment_loss.item() == pytest.approx(squared / 2)
    assert out.codebook_loss.item() == pytest.approx(squared / 2)
    assert out.loss.item() == pytest.approx(squared / 2 * 1.25)
    weights = torch.randn_like(z)
    (weights * out.quantized).sum().backward(inputs=[z])
    assert torch.equal(z.grad, weights)  # straight-through: identity Jacobian dz_q/dz_e
    z.grad = None
    out.codebook_loss.backward()
    # d/de_0 of sum over vectors on code 0 of (z - e_0)^2 / B  =  -2 * sum(z - e_0) / B
    expected = torch.tensor([[-2 * (1 + 2 - 1 + 4) / 2], [-2 * (9 - 10 + 11 - 10) / 2]])
    assert torch.allclose(quantizer.codebook.grad, expected)


def test_ema_update_matches_hand_computation() -> None:
    quantizer = VectorQuantizer(num_codes=3, code_dim=1, ema=True, decay=0.9, epsilon=0.0).train()
    quantizer.codebook.copy_(torch.tensor([[0.0], [10.0], [100.0]]))
    quantizer.embed_sum.copy_(quantizer.codebook)
    out = quantizer(grid(torch.tensor([[1.0], [2.0], [9.0]])))
    assert out.indices.tolist() == [[0, 0, 1]]
    assert out.codebook_loss.item() == 0.0  # EMA replaces the codebook loss
    # N = 0.9 * 1 + 0.1 * n = [1.1, 1.0, 0.9]; m = 0.9 * e + 0.1 * sum = [0.3, 9.9, 90]
    assert torch.allclose(quantizer.cluster_size, torch.tensor([1.1, 1.0, 0.9]))
    assert torch.allclose(quantizer.embed_sum.flatten(), torch.tensor([0.3, 9.9, 90.0]))
    assert torch.allclose(quantizer.codebook.flatten(), torch.tensor([0.3 / 1.1, 9.9 / 1.0, 90.0 / 0.9]))

    smoothed = VectorQuantizer(num_codes=3, code_dim=1, ema=True, decay=0.9, epsilon=0.5).train()
    smoothed.codebook.copy_(torch.tensor([[0.0], [10.0], [100.0]]))
    smoothed.embed_sum.copy_(smoothed.codebook)
    smoothed(grid(torch.tensor([[1.0], [2.0], [9.0]])))
    sizes = (torch.tensor([1.1, 1.0, 0.9]) + 0.5) / (3.0 + 3 * 0.5) * 3.0  # Laplace smoothing
    assert torch.allclose(smoothed.codebook.flatten(), torch.tensor([0.3, 9.9, 90.0]) / sizes)


def test_no_codebook_update_outside_training_mode() -> None:
    quantizer = VectorQuantizer(num_codes=4, code_dim=2, ema=True, kmeans_init=True, restart_dead=True)
    before = {k: v.clone() for k, v in quantizer.state_dict().items()}
    quantizer.eval()(torch.randn(2, 2, 3, 3))
    assert all(torch.equal(before[k], v) for k, v in quantizer.state_dict().items())


def test_perplexity_and_usage_of_known_distributions() -> None:
    assert perplexity(torch.full((256,), 7.0)).item() == pytest.approx(256)
    assert perplexity(torch.tensor([0.0, 0.0, 5.0, 0.0])).item() == pytest.approx(1.0)
    assert perplexity(torch.tensor([3, 0, 3, 0])).item() == pytest.approx(2.0)
    p = torch.tensor([0.5, 0.25, 0.25])
    assert perplexity(p * 8).item() == pytest.approx(math.exp(-(p * p.log()).sum().item()))
    assert code_usage(torch.tensor([3, 0, 3, 0])).item() == 0.5
    assert code_usage(torch.ones(10)).item() == 1.0


def four_clusters(n_per: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    g = torch.Generator().manual_seed(0)
    points = centers.repeat_interleave(n_per, 0) + 0.1 * torch.randn(4 * n_per, 2, generator=g)
    return centers, points


def sort_rows(x: torch.Tensor) -> torch.Tensor:
    return x[torch.argsort(x[:, 0].round() * 1000 + x[:, 1].round())]


def test_loading_an_uninitialised_state_reruns_the_kmeans_initialisation() -> None:
    torch.manual_seed(0)
    centers, points = four_clusters()
    fresh = VectorQuantizer(num_codes=4, code_dim=2, ema=True, kmeans_init=True)
    quantizer = VectorQuantizer(num_codes=4, code_dim=2, ema=True, kmeans_init=True).train()
    quantizer(grid(points))
    quantizer.load_state_dict(fresh.state_dict())  # the host-side "initialised" mirror must follow
    assert not quantizer.initialized
    quantizer(grid(points))
    assert quantizer.initialized
    assert torch.allclose(sort_rows(quantizer.codebook), sort_rows(centers), atol=0.05)


def test_kmeans_finds_separated_clusters_and_initialises_the_codebook() -> None:
    torch.manual_seed(0)
    centers, points = four_clusters()
    centroids, counts = kmeans(points, 4, iters=10)
    assert torch.allclose(sort_rows(centroids), sort_rows(centers), atol=0.05)
    assert counts.tolist() == [50.0] * 4

    quantizer = VectorQuantizer(num_codes=4, code_dim=2, ema=True, kmeans_init=True).train()
    assert not quantizer.initialized
    quantizer(grid(points))
    assert quantizer.initialized
    assert torch.allclose(sort_rows(quantizer.codebook), sort_rows(centers), atol=0.05)
    # k-means codes start as "seen once" (size 1, sum = code); one EMA step of 50 vectors each follows
    assert torch.allclose(quantizer.cluster_size, torch.full((4,), 0.99 * 1 + 0.01 * 50))
    initial = quantizer.codebook.clone()
    quantizer(grid(points + 1.0))  # no second k-means: the EMA moves each code towards its shifted points
    size = 0.99 * 1.49 + 0.01 * 50
    expected_shift = 0.01 * 50 * 1.0 / size  # the new sum's extra (1 - decay) * 50 * 1 over the new size
    assert torch.allclose(quantizer.codebook - initial, torch.full((4, 2), expected_shift), atol=2e-3)


@pytest.mark.parametrize("sync_free", [False, True], ids=["host-checked", "on-device"])
def test_dead_codes_restart_on_encoder_outputs(sync_free: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync, "SIMULATE_ACCELERATOR", sync_free)  # True: what every accelerator runs
    torch.manual_seed(0)
    centers, points = four_clusters(10)
    quantizer = VectorQuantizer(num_codes=4, code_dim=2, decay=0.5, restart_dead=True).train()
    with torch.no_grad():
        quantizer.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [5.0, 10.0], [-500.0, -500.0]]))
    quantizer(grid(points))
    # code 3 got nothing: 0.5 * 1 + 0.5 * 0 = 0.5 < 1, so it now sits on one of the batch's vectors
    assert torch.allclose(quantizer.cluster_size[:3], 0.5 + 0.5 * torch.tensor([10.0, 10.0, 20.0]))
    assert quantizer.cluster_size[3] == 1.0
    assert (points - quantizer.codebook[3]).abs().sum(1).min() == 0
    assert torch.equal(quantizer.codebook[:3], torch.tensor([[0.0, 0.0], [10.0, 0.0], [5.0, 10.0]]))

    off = VectorQuantizer(num_codes=4, code_dim=2, decay=0.5, restart_dead=False).train()
    with torch.no_grad():
        off.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [5.0, 10.0], [-500.0, -500.0]]))
    off(grid(points))
    assert off.codebook[3].tolist() == [-500.0, -500.0]


def test_restart_on_device_reads_nothing_back_and_draws_distinct_vectors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The accelerator's restart: no tensor -> Python conversion (each would wait for the device), and
    dead codes land on distinct batch vectors, more dead codes than vectors cycling through them."""
    torch.manual_seed(0)
    _, points = four_clusters(1)  # 4 distinct vectors
    quantizer = VectorQuantizer(num_codes=6, code_dim=2, ema=True, decay=0.5, restart_dead=True).train()
    monkeypatch.setattr(sync, "SIMULATE_ACCELERATOR", True)
    with torch.no_grad():
        far = torch.tensor([[0.0, 0.0], [-500.0, 0.0], [0.0, -500.0], [-500.0, -500.0], [500.0, -500.0]])
        quantizer.codebook.copy_(torch.cat([far, torch.tensor([[-900.0, 900.0]])]))
        quantizer.embed_sum.copy_(quantizer.codebook)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a tensor was read back to the host")

    for name in ("item", "__bool__", "__int__", "__float__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    quantizer(grid(points))
    monkeypatch.undo()
    # code 0 took all four vectors (0.5 + 0.5 * 4 = 2.5); codes 1-5 got none (0.5 < 1): restarted
    assert quantizer.cluster_size.tolist() == [2.5, 1.0, 1.0, 1.0, 1.0, 1.0]
    restarted = quantizer.codebook[1:]
    assert all((points - code).abs().sum(1).min() == 0 for code in restarted)  # each on a batch vector
    assert len({tuple(code.tolist()) for code in restarted[:4]}) == 4  # the first four distinct
    torch.testing.assert_close(quantizer.embed_sum[1:], restarted * 1.0)


def test_quantizer_runs_in_float32_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    model = VQVAE(num_codes=16, code_dim=4, backbone_kwargs={"channels": [8, 8]}).train()
    x = torch.rand(4, 1, 28, 28)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z_e = model.encoder_output(x)
        assert z_e.dtype == torch.bfloat16  # the backbone does run in bf16
        out = model.quantizer(z_e)
        terms = model.losses({"image": x})
    assert out.quantized.dtype == torch.float32 and out.commitment_loss.dtype == torch.float32
    assert (
        model.quantizer.codebook.dtype == torch.float32 and model.quantizer.embed_sum.dtype == torch.float32
    )
    vectors = z_e.float().permute(0, 2, 3, 1).reshape(-1, 4)
    expected = torch.cdist(vectors.double(), model.quantizer.codes().double()).argmin(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        indices = model.quantizer.lookup(z_e)[1]
    assert torch.equal(indices.flatten(), expected)
    assert torch.isfinite(terms["loss"])


def _ddp_worker(rank: int, port: int, vectors: torch.Tensor, out_dir: str, sync_free: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(rank)  # ranks draw different restart candidates; rank 0's must win
        quantizer = VectorQuantizer(num_codes=3, code_dim=1, ema=True, decay=0.9, restart_dead=0.95).train()
        sync.SIMULATE_ACCELERATOR = sync_free
        quantizer.codebook.copy_(torch.tensor([[0.0], [10.0], [100.0]]))
        quantizer.embed_sum.copy_(quantizer.codebook)
        quantizer(grid(vectors[rank]))
        torch.save(quantizer.state_dict(), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("sync_free", [False, True], ids=["host-checked", "on-device"])
def test_ema_statistics_are_all_reduced_under_ddp(sync_free: bool, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    vectors = torch.tensor([[[1.0], [9.0]], [[2.0], [11.0]]])  # rank 0, rank 1
    mp.spawn(_ddp_worker, args=(port, vectors, str(tmp_path), sync_free), nprocs=2, join=True)
    result = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    assert torch.equal(result[0]["codebook"], result[1]["codebook"])
    # one process seeing both ranks' vectors: counts [2, 2, 0], sums [3, 20, 0]
    assert torch.allclose(result[0]["cluster_size"], torch.tensor([1.1, 1.1, 0.95]))
    assert torch.allclose(
        result[0]["codebook"][:2].flatten(), torch.tensor([0.3 / 1.1, 11.0 / 1.1]), atol=1e-4
    )
    assert result[0]["codebook"][2].item() in (1.0, 9.0)  # code 2 (0.9 < 0.95) restarted on a rank-0 vector


# ----------------------------------------------------------------------------------- the model
def test_grid_comes_from_the_backbone_and_encode_decode_shapes() -> None:
    model = VQVAE(num_codes=8, code_dim=3).eval()
    assert model.grid_shape == (7, 7)
    x = torch.rand(5, 1, 28, 28)
    assert model.encode(x).shape == (5, 3, 7, 7)
    indices = model.encode_indices(x)
    assert indices.shape == (5, 7, 7) and indices.dtype == torch.long
    images = model.decode_indices(indices)
    assert images.shape == (5, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    assert torch.allclose(images, model.decode(model.encode(x)))
    assert VQVAE(backbone_kwargs={"channels": [8]}).grid_shape == (14, 14)
    assert VQVAE(backbone="mlp", backbone_kwargs={"hidden": [8]}).encode_indices(x).shape == (5, 1, 1)


def tiny_trainer(tmp_path: Path, **kwargs: object) -> L.Trainer:
    options = {
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": tmp_path,
        **kwargs,
    }
    return L.Trainer(**options)


@pytest.fixture(scope="module")
def vqvae_checkpoint(tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("vqvae")
    L.seed_everything(0)
    model = VQVAE(num_codes=16, code_dim=4, backbone_kwargs={"channels": [8, 16]}, restart_dead=0.5)
    data = MNISTDataModule(root=str(tiny_mnist), batch_size=32, attributes=False)
    trainer = tiny_trainer(tmp_path, max_steps=3, limit_val_batches=1)
    trainer.fit(model, data)
    path = tmp_path / "vqvae.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_load_from_checkpoint_restores_codebook_and_codes(vqvae_checkpoint: Path) -> None:
    model = VQVAE.load_from_checkpoint(vqvae_checkpoint, map_location="cpu").eval()
    assert model.num_codes == 16 and model.quantizer.ema and bool(model.quantizer.initialized)
    state = torch.load(vqvae_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(model.quantizer.codebook, state["quantizer.codebook"])
    x = torch.rand(4, 1, 28, 28)
    again = VQVAE.load_from_checkpoint(vqvae_checkpoint, map_location="cpu").eval()
    assert torch.equal(model.encode_indices(x), again.encode_indices(x))


# ----------------------------------------------------------------------------------- the prior
def test_prior_samples_images_and_is_causal(vqvae_checkpoint: Path) -> None:
    torch.manual_seed(0)
    prior = VQPrior(vqvae_checkpoint=str(vqvae_checkpoint), d_model=32, num_layers=2, num_heads=2).eval()
    assert not prior.vqvae.training and not any(p.requires_grad for p in prior.vqvae.parameters())
    prior.train()
    assert not prior.vqvae.training  # the frozen first stage stays in eval mode
    prior.eval()
    samples = prior.sample(3)
    assert samples.shape == (3, 1, 28, 28) and samples.min() >= 0 and samples.max() <= 1
    assert prior.sample_codes(2).shape == (2, 7, 7)

    codes = torch.randint(0, 16, (2, 49))
    logits = prior.logits(codes)
    for position in (0, 20, 48):
        changed = codes.clone()
        changed[:, position] = (changed[:, position] + 1) % 16
        new = prior.logits(changed)
        assert torch.allclose(new[:, : position + 1], logits[:, : position + 1], atol=1e-5)
        if position < 48:
            assert not torch.allclose(new[:, position + 1 :], logits[:, position + 1 :])


def test_prior_sampling_with_key_value_cache_equals_full_passes(vqvae_checkpoint: Path) -> None:
    """The cached single-position passes give the logits of the full causal pass, so sampling draws the
    same codes as recomputing every prefix would, under the same random numbers."""
    from genvae.models.prior import VQPrior

    torch.manual_seed(0)
    prior = VQPrior(vqvae_checkpoint=str(vqvae_checkpoint), d_model=32, num_layers=2, num_heads=2).eval()
    with torch.no_grad():  # untrained weights are small: scale them up so the check has teeth
        for parameter in prior.transformer.parameters():
            parameter.mul_(3.0)
    codes = torch.randint(0, prior.num_codes, (5, prior.sequence_length))
    full = prior.logits(codes)
    shape = (5, 2, prior.sequence_length, 16)
    cache = [(torch.empty(shape), torch.empty(shape)) for _ in range(2)]
    inputs = torch.full((5,), prior.num_codes)
    with torch.no_grad():
        for position in range(prior.sequence_length):
            step = prior._next_logits(inputs, position, cache)
            assert torch.allclose(step, full[:, position], atol=1e-4), position
            inputs = codes[:, position]

    def recomputed(n: int) -> torch.Tensor:  # the sampler without a cache
        drawn = torch.zeros(n, prior.sequence_length, dtype=torch.long)
        for i in range(prior.sequence_length):
            logits = prior.logits(drawn[:, : i + 1])[:, i] / prior.temperature
            drawn[:, i] = torch.multinomial(logits.softmax(-1), 1).squeeze(1)
        return drawn.view(n, *prior.grid_shape)

    torch.manual_seed(1)
    expected = recomputed(8)
    torch.manual_seed(1)
    assert torch.equal(prior.sample_codes(8), expected)


def test_class_conditional_prior(vqvae_checkpoint: Path) -> None:
    """condition: [label] adds a class token to every input position: the logits depend on the label, the
    cached sampler still equals the full pass, and the token learns; the unconditional prior has none."""
    torch.manual_seed(0)
    options = {"vqvae_checkpoint": str(vqvae_checkpoint), "d_model": 32, "num_layers": 2, "num_heads": 2}
    plain = VQPrior(**options)
    assert not any(key.startswith("class_embedding") for key in plain.state_dict())
    prior = VQPrior(**options, condition=["label"]).eval()
    assert prior.condition_names == ("label",) and prior.class_embedding.weight.shape == (10, 32)
    codes = torch.randint(0, prior.num_codes, (4, prior.sequence_length))
    three, seven = ({"label": torch.full((4,), c)} for c in (3, 7))
    with torch.no_grad():
        full = prior.logits(codes, three)
        assert (full - prior.logits(codes, seven)).abs().amax() > 1e-3
        token = prior.class_token(three, 4)
        shape = (4, 2, prior.sequence_length, 16)
        cache = [(torch.empty(shape), torch.empty(shape)) for _ in range(2)]
        inputs = torch.full((4,), prior.num_codes)
        for position in range(prior.sequence_length):
            step = prior._next_logits(inputs, position, cache, token)
            assert torch.allclose(step, full[:, position], atol=1e-4), position
            inputs = codes[:, position]
    assert prior.sample(4, condition={"label": torch.arange(4)}).shape == (4, 1, 28, 28)
    from genvae.latent import sample

    drawn = sample(prior, 3, label=5, seed=0)  # the user-facing sampler: through the class token
    assert drawn.images.shape == (3, 1, 28, 28) and drawn.label.tolist() == [5] * 3
    assert drawn.via == {"label": "condition"} and drawn.measured.shape == (3, 6)
    torch.manual_seed(0)
    assert torch.equal(drawn.images, prior.sample(3, condition={"label": torch.full((3,), 5)}))
    prior.train()
    prior.nll(codes, three).backward()
    assert (
        prior.class_embedding.weight.grad[3].abs().sum() > 0
        and prior.class_embedding.weight.grad[7].eq(0).all()
    )
    with pytest.raises(ConfigError, match=r"VQPrior needs condition \['label'\]"):
        prior.sample(2)
    with pytest.raises(ConfigError, match="VQPrior is not conditional"):
        plain.sample(2, condition={"label": torch.zeros(2)})
    for label in (10, -1):
        with pytest.raises(ConfigError, match=r"condition label: classes must lie in \[0, 10\)"):
            prior.sample(2, condition={"label": torch.tensor([3, label])})
    with pytest.raises(ConfigError, match=r"conditioned on \[label\] only"):
        VQPrior(**options, condition=["thickness"])


def test_prior_transformer_computes_what_nn_transformer_encoder_computes(vqvae_checkpoint: Path) -> None:
    """VQPrior._transform runs the layers of its nn.TransformerEncoder batch first with its own attention;
    without dropout both give the same hidden states."""
    torch.manual_seed(0)
    prior = VQPrior(
        vqvae_checkpoint=str(vqvae_checkpoint), d_model=32, num_layers=2, num_heads=4, dropout=0.0
    )
    hidden = torch.randn(3, 49, 32)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(49)
    for training in (False, True):
        prior.train(training)
        reference = prior.transformer(hidden, mask=mask, is_causal=True)
        torch.testing.assert_close(prior._transform(hidden), reference, atol=1e-5, rtol=1e-5)


def save_prior(prior: VQPrior, path: Path) -> Path:
    """A checkpoint of ``prior`` as ``load_from_checkpoint`` reads it."""
    state = {
        "state_dict": prior.state_dict(),
        "hyper_parameters": dict(prior.hparams),
        "pytorch-lightning_version": L.__version__,
    }
    torch.save(state, path)
    return path


def test_classifier_free_guidance_of_the_conditional_prior(vqvae_checkpoint: Path, tmp_path: Path) -> None:
    """Guided sampling draws each code from log p_u + s (log p(c | y) - log p_u), renormalised (Ho & Salimans
    2022, eq. 6), with the unconditional prior's own cached passes: the same codes as full passes of both
    priors under the same random numbers; s = 1 is the conditional prior alone; the unconditional prior
    stays out of the conditional one's state dict."""
    torch.manual_seed(0)
    options = {"vqvae_checkpoint": str(vqvae_checkpoint), "d_model": 32, "num_layers": 2, "num_heads": 2}
    unconditional = VQPrior(**options).eval()
    plain_conditional = VQPrior(**options, condition=["label"]).eval()
    with torch.no_grad():  # untrained weights are small: scale them up so the check has teeth
        for parameter in [
            *unconditional.transformer.parameters(),
            *plain_conditional.transformer.parameters(),
        ]:
            parameter.mul_(3.0)
    path = save_prior(unconditional, tmp_path / "unconditional.ckpt")
    prior = VQPrior(**options, condition=["label"], guidance=2.0, unconditional_prior=str(path)).eval()
    prior.load_state_dict(plain_conditional.state_dict())  # strict: no unconditional keys expected
    assert set(prior.state_dict()) == set(plain_conditional.state_dict())
    labels = {"label": torch.tensor([0, 3, 7, 9, 3])}

    def recomputed(scale: float) -> torch.Tensor:  # full passes of both priors, no cache
        drawn = torch.zeros(5, prior.sequence_length, dtype=torch.long)
        with torch.no_grad():
            for i in range(prior.sequence_length):
                conditional = prior.logits(drawn[:, : i + 1], labels)[:, i].log_softmax(-1)
                marginal = unconditional.logits(drawn[:, : i + 1])[:, i].log_softmax(-1)
                logits = marginal + scale * (conditional - marginal)
                drawn[:, i] = torch.multinomial((logits / prior.temperature).softmax(-1), 1).squeeze(1)
        return drawn.view(5, *prior.grid_shape)

    torch.manual_seed(1)
    expected = recomputed(2.0)
    torch.manual_seed(1)
    assert torch.equal(prior.sample_codes(5, condition=labels), expected)
    torch.manual_seed(1)
    assert not torch.equal(recomputed(1.0), expected)  # the guidance changes the draws
    prior.guidance = 1.0
    torch.manual_seed(2)
    alone = plain_conditional.sample_codes(5, condition=labels)
    torch.manual_seed(2)
    assert torch.equal(prior.sample_codes(5, condition=labels), alone)
    assert prior.sample(5, condition=labels).shape == (5, 1, 28, 28)


def test_guidance_errors_are_one_clear_config_error(vqvae_checkpoint: Path, tmp_path: Path) -> None:
    options = {"vqvae_checkpoint": str(vqvae_checkpoint), "d_model": 16, "num_layers": 1, "num_heads": 2}
    unconditional = save_prior(VQPrior(**options), tmp_path / "unconditional.ckpt")
    conditional = save_prior(VQPrior(**options, condition=["label"]), tmp_path / "conditional.ckpt")
    other = VQPrior(**options)
    with torch.no_grad():
        other.vqvae.quantizer.codebook.add_(1.0)
    other_vqvae = save_prior(other, tmp_path / "other_vqvae.ckpt")
    label = {"condition": ["label"]}
    with pytest.raises(ConfigError, match="guidance 1.5 needs model.init_args.unconditional_prior"):
        VQPrior(**options, **label, guidance=1.5)
    with pytest.raises(ConfigError, match="guidance must be > 0"):
        VQPrior(**options, **label, guidance=0.0, unconditional_prior=str(unconditional))
    with pytest.raises(ConfigError, match="guidance needs a class-conditional prior"):
        VQPrior(**options, guidance=1.5, unconditional_prior=str(unconditional))
    with pytest.raises(ConfigError, match="conditional.ckpt: a conditional prior"):
        VQPrior(**options, **label, guidance=1.5, unconditional_prior=str(conditional))
    with pytest.raises(ConfigError, match="other_vqvae.ckpt: its VQ-VAE differs"):
        VQPrior(**options, **label, guidance=1.5, unconditional_prior=str(other_vqvae))
    with pytest.raises(
        ConfigError, match=r"missing.ckpt: checkpoint file not found \(given as model.init_args.unc"
    ):
        VQPrior(**options, **label, guidance=1.5, unconditional_prior=str(tmp_path / "missing.ckpt"))


@pytest.mark.parametrize("other_eval_module", [False, True])
def test_prior_fit_warns_about_eval_modules_only_beyond_the_frozen_vqvae(
    vqvae_checkpoint: Path, tiny_mnist: Path, tmp_path: Path, other_eval_module: bool
) -> None:
    """The frozen VQ-VAE is in eval mode on purpose: no Lightning warning for it, but one for any other
    module the user left in eval mode."""
    import warnings

    from genvae.models.prior import VQPrior

    prior = VQPrior(vqvae_checkpoint=str(vqvae_checkpoint), d_model=16, num_layers=1, num_heads=2)
    if other_eval_module:
        original_train = prior.train

        def train_leaving_head_in_eval(mode: bool = True) -> VQPrior:
            original_train(mode)
            prior.head.eval()
            return prior

        prior.train = train_leaving_head_in_eval  # type: ignore[method-assign]
        prior.head.eval()
    data = MNISTDataModule(root=str(tiny_mnist), batch_size=32, attributes=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(prior, data)
    messages = [str(w.message) for w in caught if "in eval mode" in str(w.message)]
    frozen = sum(1 for _ in prior.vqvae.modules())
    if other_eval_module:
        assert len(messages) == 1 and messages[0].startswith(f"Found {frozen + 1} module(s) in eval mode")
    else:
        assert messages == []


def test_prior_nll_drops_when_fitting_fixed_codes(vqvae_checkpoint: Path) -> None:
    torch.manual_seed(0)
    prior = VQPrior(
        vqvae_checkpoint=str(vqvae_checkpoint), d_model=32, num_layers=1, num_heads=2, dropout=0.0, lr=1e-2
    )
    codes = (torch.arange(49) % 16).repeat(8, 1)  # one fixed sequence: learnable from positions alone
    optimizer = prior.configure_optimizers()
    start = prior.nll(codes).item()
    assert start == pytest.approx(math.log(16), rel=0.2)  # about uniform over the 16 codes at init
    for _ in range(10):
        optimizer.zero_grad()
        prior.nll(codes).backward()
        optimizer.step()
    assert prior.nll(codes).item() < 0.5 * start


def test_prior_checkpoint_errors_are_one_clear_config_error(tiny_mnist: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="vqvae_checkpoint is required"):
        VQPrior()
    with pytest.raises(
        ConfigError, match=r"missing.ckpt: checkpoint file not found \(given as model.init_args.vqvae"
    ):
        VQPrior(vqvae_checkpoint=str(tmp_path / "missing.ckpt"))
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="junk.ckpt: not a PyTorch checkpoint"):
        VQPrior(vqvae_checkpoint=str(junk))
    vae = VAE(latent_dim=2, backbone="mlp", backbone_kwargs={"hidden": [8]})
    trainer = tiny_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(vae, MNISTDataModule(root=str(tiny_mnist), batch_size=32, attributes=False))
    trainer.save_checkpoint(tmp_path / "vae.ckpt")
    with pytest.raises(ConfigError, match="vae.ckpt: not a VQ-VAE checkpoint"):
        VQPrior(vqvae_checkpoint=str(tmp_path / "vae.ckpt"))


# ----------------------------------------------------------------------------------- real data
def test_one_epoch_of_the_flagship_config_on_t10k_uses_most_of_the_codebook(
    shared_mnist: Path, tmp_path: Path
) -> None:
    config = yaml.safe_load((REPO / "experiments" / "vqvae.yaml").read_text())
    L.seed_everything(config["seed_everything"])
    model = VQVAE(**config["model"]["init_args"])
    data = MNISTDataModule(root=str(shared_mnist), source="test", batch_size=64, attributes=False)
    trainer = tiny_trainer(tmp_path, max_epochs=1)  # 141 steps of K = 256 codes on a 7x7 grid
    trainer.fit(model, data)
    metrics = trainer.callback_metrics
    assert metrics["val/usage"] > 0.5 and metrics["train/usage"] > 0.5
    assert metrics["val/dead_codes"] == round(256 * (1 - metrics["val/usage"].item()))
    assert metrics["val/perplexity"] > 32
    assert metrics["val/mse"] < 0.015

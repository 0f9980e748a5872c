"""Morphometric fidelity: distances against scipy, known answers on real t10k, the callback through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy import linalg, ndimage, stats

from genvae.cli import main
from genvae.data.attributes import ATTRIBUTE_NAMES, morpho_attributes
from genvae.data.idx import read_idx
from genvae.metrics.morphometry import (
    attribute_distances,
    gaussian_frechet_distance,
    ks_statistic,
    morphometric_distances,
    reconstruction_errors,
    reconstruction_morphometry,
    wasserstein_1d,
)
from genvae.models import VAE
from genvae.plots.morphometry import distribution_figure, reconstruction_figure

from .conftest import REPO, fake_digits
from .test_cli import checkpoint_of, data_args, run_cli

AUTOENCODER_OVERLAY = REPO / "experiments" / "eval" / "autoencoder.yaml"


def random_attributes(n: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    """``[n, 6]`` correlated, partly tied (rounded) values."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 6, generator=g, dtype=torch.float64) @ torch.rand(
        6, 6, generator=g, dtype=torch.float64
    )
    base[:, 3] = (base[:, 3] * 4).round()  # ties, like area in px^2 / 16
    return base + shift


def scipy_fmd(real: np.ndarray, generated: np.ndarray) -> float:
    """Frechet distance as pytorch-fid computes it, after standardising by the real set."""
    mean, std = real.mean(0), real.std(0, ddof=1)
    a, b = (real - mean) / std, (generated - mean) / std
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


# ------------------------------------------------------------------ math against scipy
def test_w1_and_ks_equal_scipy_per_column() -> None:
    u, v = random_attributes(300, 0), random_attributes(211, 1, shift=0.3)
    w1, ks = wasserstein_1d(u, v), ks_statistic(u, v)
    assert w1.shape == ks.shape == (6,)
    for j in range(6):
        assert w1[j].item() == pytest.approx(stats.wasserstein_distance(u[:, j], v[:, j]), rel=1e-12)
        assert ks[j].item() == pytest.approx(stats.ks_2samp(u[:, j], v[:, j]).statistic, rel=1e-12)


def test_attribute_distances_equal_scipy_and_name_every_key() -> None:
    real, generated = random_attributes(400, 2), random_attributes(250, 3, shift=0.5)
    results = attribute_distances(real, generated)
    expected_keys = {f"{kind}/{name}" for kind in ("w1", "ks", "shift") for name in ATTRIBUTE_NAMES}
    assert set(results) == expected_keys | {"fmd", "undefined/real", "undefined/generated"}
    r, g = real.numpy(), generated.numpy()
    assert results["fmd"] == pytest.approx(scipy_fmd(r, g), rel=1e-8)
    for j, name in enumerate(ATTRIBUTE_NAMES):
        assert results[f"w1/{name}"] == pytest.approx(stats.wasserstein_distance(r[:, j], g[:, j]), rel=1e-12)
        assert results[f"ks/{name}"] == pytest.approx(stats.ks_2samp(r[:, j], g[:, j]).statistic, rel=1e-12)
        assert results[f"shift/{name}"] == pytest.approx(g[:, j].mean() - r[:, j].mean(), rel=1e-12)
    assert results["undefined/real"] == results["undefined/generated"] == 0


def test_frechet_known_answers() -> None:
    x = random_attributes(500, 4)
    assert gaussian_frechet_distance(x, x).item() == pytest.approx(0.0, abs=1e-9)
    offset = torch.tensor([1.0, -2.0, 0.0, 0.5, 0.0, 3.0], dtype=torch.float64)
    # same covariance, means apart by the offset: the distance is |offset|^2
    assert gaussian_frechet_distance(x, x + offset).item() == pytest.approx(offset.pow(2).sum().item())
    # standardisation by the real set: scaling both sets together changes nothing
    y = random_attributes(300, 5, shift=0.2)
    scale = torch.tensor([0.1, 1.0, 10.0, 3.0, 0.5, 2.0], dtype=torch.float64)
    assert attribute_distances(x * scale, y * scale)["fmd"] == pytest.approx(attribute_distances(x, y)["fmd"])


def test_undefined_rows_are_left_out_and_counted() -> None:
    real, generated = random_attributes(100, 6), random_attributes(80, 7)
    nan_rows = torch.full((3, 6), float("nan"), dtype=torch.float64)
    with_blank = attribute_distances(torch.cat([real, nan_rows[:1]]), torch.cat([nan_rows, generated]))
    assert with_blank["undefined/real"] == 1 and with_blank["undefined/generated"] == 3
    clean = attribute_distances(real, generated)
    for key in clean:
        if not key.startswith("undefined/"):
            assert with_blank[key] == pytest.approx(clean[key], rel=1e-12), key
    too_few = attribute_distances(real, torch.cat([nan_rows, generated[:1]]))
    assert (
        too_few["undefined/generated"] == 3 and math.isnan(too_few["fmd"]) and math.isnan(too_few["w1/slant"])
    )


def test_reconstruction_errors_match_numpy_and_scipy() -> None:
    original = random_attributes(200, 8)
    noisy = original + 0.3 * random_attributes(200, 9)
    noisy[5] = float("nan")  # a blank reconstruction: that pair is left out
    results = reconstruction_errors(original, noisy)
    assert results["undefined/pairs"] == 1
    keep = np.ones(200, dtype=bool)
    keep[5] = False
    a, b = original.numpy()[keep], noisy.numpy()[keep]
    for j, name in enumerate(ATTRIBUTE_NAMES):
        assert results[f"recon_mae/{name}"] == pytest.approx(np.abs(b[:, j] - a[:, j]).mean(), rel=1e-12)
        assert results[f"recon_r/{name}"] == pytest.approx(stats.pearsonr(a[:, j], b[:, j])[0], rel=1e-10)
    perfect = reconstruction_errors(original, original)
    assert all(
        perfect[f"recon_mae/{n}"] == 0 and perfect[f"recon_r/{n}"] == pytest.approx(1)
        for n in ATTRIBUTE_NAMES
    )


def test_image_functions_measure_then_compare() -> None:
    images, _ = fake_digits(40, seed=3)
    images = images.unsqueeze(1).float() / 255
    thicker = torch.from_numpy(ndimage.maximum_filter(images.numpy(), size=(1, 1, 3, 3)))
    generated = torch.cat([thicker, torch.zeros(1, 1, 28, 28)])  # a blank sample
    results = morphometric_distances(images, generated)
    assert results == attribute_distances(morpho_attributes(images), morpho_attributes(thicker)) | {
        "undefined/generated": 1.0
    }
    assert results["shift/thickness"] > 1.0 and results["shift/area"] > 0
    recon = reconstruction_morphometry(images, thicker)
    # slant is 0 on every rectangle: its r is NaN on both sides (assert_equal treats NaN as equal)
    np.testing.assert_equal(
        recon, reconstruction_errors(morpho_attributes(images), morpho_attributes(thicker))
    )
    with pytest.raises(ValueError, match="reconstructions"):
        reconstruction_morphometry(images, thicker[:3])


def test_figures_render_even_when_every_sample_is_blank() -> None:
    real = random_attributes(200, 10)
    blank = torch.full((50, 6), float("nan"), dtype=torch.float64)
    results = attribute_distances(real, blank)
    assert results["undefined/generated"] == 50 and math.isnan(results["fmd"])
    figure = distribution_figure(real, blank, results, "all samples blank")
    assert figure.ndim == 3 and figure.shape[2] == 3 and figure.dtype == np.uint8
    noisy = real + 0.1 * random_attributes(200, 11)
    figure = reconstruction_figure(real, noisy, reconstruction_errors(real, noisy), "reconstructions")
    assert figure.ndim == 3 and figure.shape[2] == 3


# ------------------------------------------------------------------ known answers on the real t10k digits
@pytest.fixture(scope="module")
def t10k(shared_mnist: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The 10k test images ``[N, 1, 28, 28]`` uint8 and their attributes (measured once per module)."""
    images = read_idx(shared_mnist / "t10k-images-idx3-ubyte.gz").unsqueeze(1)
    return images, morpho_attributes(images)


def test_a_random_half_is_close_and_the_two_writer_populations_are_not(
    t10k: tuple[torch.Tensor, torch.Tensor],
) -> None:
    _, attributes = t10k
    order = torch.randperm(len(attributes), generator=torch.Generator().manual_seed(0))
    random_split = attribute_distances(attributes[order[:5000]], attributes[order[5000:]])
    assert random_split["fmd"] < 0.02 and random_split["w1/slant"] < 0.01
    assert max(random_split[f"ks/{name}"] for name in ATTRIBUTE_NAMES) < 0.03
    # the first 5,000 t10k digits (NIST SD-3 writers) against the last 5,000 (SD-1): a real shift
    writers = attribute_distances(attributes[:5000], attributes[5000:])
    assert writers["fmd"] == pytest.approx(1.40, abs=0.05)
    assert writers["w1/slant"] == pytest.approx(0.16, abs=0.01)
    assert writers["w1/thickness"] == pytest.approx(0.38, abs=0.02)
    assert writers["fmd"] > 50 * random_split["fmd"]


def test_dilation_thickens_without_slanting(t10k: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, attributes = t10k
    images, attributes = images[:1000], attributes[:1000]
    dilated = torch.from_numpy(ndimage.maximum_filter(images.numpy(), size=(1, 1, 3, 3)))
    results = attribute_distances(attributes, morpho_attributes(dilated))
    assert 2.4 < results["shift/thickness"] < 2.9
    assert results["w1/thickness"] == pytest.approx(
        results["shift/thickness"], rel=0.01
    )  # every digit thicker
    assert abs(results["shift/slant"]) < 0.01 and results["w1/slant"] < 0.02


def test_a_briefly_trained_model_is_farther_than_the_held_out_half(
    t10k: tuple[torch.Tensor, torch.Tensor],
) -> None:
    images, attributes = t10k
    torch.manual_seed(0)
    model = VAE(backbone="mlp", backbone_kwargs={"hidden": [128]}, latent_dim=8, lr=3e-3)
    optimizer = model.configure_optimizers()
    train = images[:5000].float() / 255
    for step in range(20):  # briefly: a few steps
        batch = {"image": train[step * 64 % 4992 :][:64]}
        optimizer.zero_grad()
        model.losses(batch)["loss"].backward()
        optimizer.step()
    model.eval()
    samples = model.sample(500)
    model_to_test = attribute_distances(attributes[5000:], morpho_attributes(samples))
    half_to_test = attribute_distances(attributes[5000:], attributes[:5000])
    assert model_to_test["undefined/generated"] < 500
    assert model_to_test["fmd"] > half_to_test["fmd"]
    assert sum(model_to_test[f"ks/{n}"] for n in ATTRIBUTE_NAMES) > sum(
        half_to_test[f"ks/{n}"] for n in ATTRIBUTE_NAMES
    )


# ------------------------------------------------------------------ the callback through `genvae test`
def cpu_quiet() -> list[str]:
    return ["--trainer.accelerator", "cpu", "--trainer.logger", "false"]


@pytest.fixture(scope="module")
def vqvae_checkpoint(tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return checkpoint_of("vqvae", tiny_mnist, tmp_path_factory.mktemp("vqvae"))


RECONSTRUCTION_KEYS = [
    "test/morpho/undefined/pairs",
    *(f"test/morpho/{kind}/{name}" for kind in ("recon_mae", "recon_r") for name in ATTRIBUTE_NAMES),
]
DISTANCE_KEYS = [
    "test/morpho/fmd",
    "test/morpho/undefined/real",
    "test/morpho/undefined/generated",
    *(f"test/morpho/{kind}/{name}" for kind in ("w1", "ks", "shift") for name in ATTRIBUTE_NAMES),
]


def figures_under(root: Path) -> set[str]:
    """Keys of the PNG figures written under ``root/figures`` (no logger: figures are files)."""
    return {p.parent.relative_to(root / "figures").as_posix() for p in (root / "figures").rglob("*.png")}


def test_autoencoder_overlay_composes_with_the_ae(capsys: pytest.CaptureFixture) -> None:
    config = REPO / "experiments" / "ae.yaml"
    with pytest.raises(SystemExit) as info:
        main(["test", "--config", str(config), "--config", str(AUTOENCODER_OVERLAY), "--print_config"])
    assert info.value.code == 0
    callbacks = yaml.safe_load(capsys.readouterr().out)["trainer"]["callbacks"]
    names = [c["class_path"].rsplit(".", 1)[-1] for c in callbacks]
    assert names == [
        "MorphometricFidelity",
        "CounterfactualSoundness",
        "Reconstructions",
        "Interpolation",
        "LatentScatter",
    ]
    assert callbacks[0]["init_args"]["samples"] is False


def test_autoencoder_overlay_end_to_end_on_a_vqvae(
    vqvae_checkpoint: Path, tiny_mnist: Path, tmp_path: Path
) -> None:
    ckpt = vqvae_checkpoint
    config = REPO / "experiments" / "vqvae.yaml"
    args = ["test", "--config", str(config), "--config", str(AUTOENCODER_OVERLAY), "--ckpt_path", str(ckpt)]
    run_cli([*args, *cpu_quiet(), *data_args(tiny_mnist)], tmp_path)
    written = json.loads(ckpt.with_name(f"{ckpt.stem}.metrics.json").read_text())
    assert set(RECONSTRUCTION_KEYS) <= set(written), sorted(written)
    assert not any(key.startswith("test/morpho/w1") or key == "test/morpho/fmd" for key in written)
    assert written["test/morpho/undefined/pairs"] < 100  # 100 tiny test images, not all left out
    assert all(written[f"test/morpho/recon_mae/{n}"] >= 0 for n in ATTRIBUTE_NAMES)
    # counterfactual soundness: composition only (no flat latent to edit attributes through)
    for m in (1, 10):  # an imperfect tiny model: some drift, far from the 255 of a blank-for-white swap
        assert 0 < written[f"test/soundness/composition/{m}"] < 128
        assert written[f"test/soundness/composition/{m}_std"] >= 0
    assert not any(key.startswith("test/soundness/reversibility") for key in written)
    assert {
        "test/morpho/reconstruction",
        "test/reconstructions",
        "test/interpolation",
        "test/latent_scatter",
    } <= figures_under(tmp_path)
    assert "test/morpho/distributions" not in figures_under(tmp_path)


def test_samples_of_a_model_without_sample_is_one_clear_line(
    vqvae_checkpoint: Path, tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    overlay = yaml.safe_load(AUTOENCODER_OVERLAY.read_text())
    overlay["trainer"]["callbacks"][0]["init_args"]["samples"] = True
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay))
    config = REPO / "experiments" / "vqvae.yaml"
    args = ["test", "--config", str(config), "--config", str(path), "--ckpt_path", str(vqvae_checkpoint)]
    with pytest.raises(SystemExit) as info:
        run_cli([*args, *cpu_quiet(), *data_args(tiny_mnist)], tmp_path)
    assert info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("genvae: error:")]
    assert errors == ["genvae: error: MorphometricFidelity.samples: VQVAE has no sample(n) method"]


def test_vqvae_prior_samples_are_measured(vqvae_checkpoint: Path, tiny_mnist: Path, tmp_path: Path) -> None:
    overlay = tmp_path / "morpho.yaml"
    callback = {"class_path": "genvae.callbacks.MorphometricFidelity", "init_args": {"num_samples": 40}}
    overlay.write_text(yaml.safe_dump({"trainer": {"callbacks": [callback]}}))
    config = REPO / "experiments" / "vqvae_prior.yaml"
    args = ["test", "--config", str(config), "--config", str(overlay)]
    args += ["--model.init_args.vqvae_checkpoint", str(vqvae_checkpoint), "--model.init_args.num_layers", "1"]
    run_cli([*args, *cpu_quiet(), *data_args(tiny_mnist)], tmp_path)
    written = json.loads((tmp_path / "test_metrics.json").read_text())
    assert set(DISTANCE_KEYS) <= set(written), sorted(written)
    assert not any(key.startswith("test/morpho/recon") for key in written)  # the prior does not reconstruct
    assert written["test/morpho/undefined/real"] == 0
    assert "test/morpho/distributions" in figures_under(tmp_path)

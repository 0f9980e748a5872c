"""FID, precision/recall, the IWAE bound, the classifier and the test-time evaluation callbacks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import scipy.linalg
import torch

from genvae.callbacks import ImportanceWeightedNLL, SampleQuality
from genvae.cli import main
from genvae.data import MNISTDataModule, TensorBatchLoader
from genvae.errors import ConfigError
from genvae.metrics.sample_quality import (
    ClassifierFeatures,
    SampleQualityMetric,
    frechet_distance,
    knn_radii,
    precision_recall,
)
from genvae.models import VAE, Classifier

from .conftest import REPO


# ------------------------------------------------------------------ FID
def numpy_fid(real: np.ndarray, fake: np.ndarray) -> float:
    """The textbook formula, with scipy's matrix square root."""
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_matches_a_numpy_scipy_computation() -> None:
    g = torch.Generator().manual_seed(0)
    real = torch.randn(300, 6, generator=g, dtype=torch.float64) @ torch.randn(
        6, 6, generator=g, dtype=torch.float64
    )
    fake = 0.7 * torch.randn(250, 6, generator=g, dtype=torch.float64) + 0.5
    expected = numpy_fid(real.numpy(), fake.numpy())
    assert expected > 1.0
    assert float(frechet_distance(real, fake, chunk_size=64)) == pytest.approx(expected, rel=1e-6)


def test_fid_of_a_set_with_itself_is_zero_and_a_shift_adds_its_squared_norm() -> None:
    real = torch.randn(500, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert abs(float(frechet_distance(real, real))) < 1e-6
    shift = torch.full((8,), 0.5, dtype=torch.float64)
    # same covariance, mean moved by `shift`: FID = |shift|^2 = 8 * 0.25
    assert float(frechet_distance(real, real + shift)) == pytest.approx(2.0, rel=1e-6)


# ------------------------------------------------------------------ precision / recall
def test_knn_radii_on_points_of_a_line() -> None:
    points = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    assert knn_radii(points, 1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert knn_radii(points, 2).tolist() == [3.0, 2.0, 3.0, 6.0]


def test_precision_recall_on_known_point_clouds() -> None:
    grid = torch.stack(torch.meshgrid(torch.arange(20.0), torch.arange(20.0), indexing="ij"), -1).view(-1, 2)
    far = grid + 1000.0
    assert [float(v) for v in precision_recall(grid, grid, k=3)] == [1.0, 1.0]
    assert [float(v) for v in precision_recall(grid, far, k=3)] == [0.0, 0.0]
    # samples from only the left half of the data (mode dropping), as many points as the data:
    half = torch.stack(torch.meshgrid(torch.arange(0.0, 10.0, 0.5), torch.arange(20.0), indexing="ij"), -1)
    precision, recall = precision_recall(grid, half.view(-1, 2), k=3)
    assert float(precision) == 1.0  # every sample is realistic
    # sample radii (3rd neighbour) are 1, so data column 10 (0.5 from column 9.5) is covered and column
    # 11 (1.5 away) is not: 11 of 20 columns
    assert float(recall) == pytest.approx(11 / 20)


def test_sample_quality_metric_gathers_features_and_scores_itself_perfectly() -> None:
    torch.manual_seed(0)  # the untrained feature network and the fake images: independent of test order
    extractor = ClassifierFeatures(Classifier(feature_dim=16))
    metric = SampleQualityMetric(extractor, k=3)
    images = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for chunk in images.split(20):
        metric.update(chunk, real=True)
        metric.update(chunk, real=False)
    assert metric.real_count() == 64
    scores = metric.compute()
    assert abs(float(scores["fid"])) < 1e-4
    assert float(scores["precision"]) == 1.0 and float(scores["recall"]) == 1.0
    fid = {}
    for name, fake in (("same distribution", torch.rand(64, 1, 28, 28)), ("brighter", images + 0.5)):
        metric.reset()
        metric.update(images, real=True)
        metric.update(fake, real=False)
        fid[name] = float(metric.compute()["fid"])
    assert 0 < 10 * fid["same distribution"] < fid["brighter"]


def test_classifier_features_stay_frozen_in_eval_mode() -> None:
    extractor = ClassifierFeatures(Classifier(feature_dim=16, dropout=0.5))
    extractor.train()
    assert not extractor.network.training
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(extractor(x), extractor(x))  # no dropout
    assert extractor(x).shape == (4, 16) and extractor.num_features == 16
    assert not any(p.requires_grad for p in extractor.parameters())


# ------------------------------------------------------------------ IWAE
def tiny_vae(latent_dim: int) -> VAE:
    torch.manual_seed(0)
    return VAE(backbone="mlp", backbone_kwargs={"hidden": [32]}, latent_dim=latent_dim).eval()


def test_iwae_with_one_sample_is_the_single_sample_elbo() -> None:
    """K = 1: -log w = -log p(x|z) - log p(z) + log q(z|x) for the one z drawn, checked with torch.distributions."""
    model = tiny_vae(latent_dim=3)
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(3)
    estimate = model.iwae_nll(x, num_samples=1)
    torch.manual_seed(3)
    with torch.no_grad():
        mu, logvar = model.posterior(x)
        z = mu + (0.5 * logvar).exp() * torch.randn(1, *mu.shape)[0]  # the draw iwae_nll makes
        posterior = torch.distributions.Normal(mu, (0.5 * logvar).exp())
        prior = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
        recon = model.reconstruction_nll(model.decode_logits(z), x)
        expected = recon + posterior.log_prob(z).sum(1) - prior.log_prob(z).sum(1)
    torch.testing.assert_close(estimate, expected, rtol=1e-5, atol=1e-4)
    # and on average it is the negative ELBO with the analytic KL that the model logs
    repeats = 4000
    batch = {"image": x[:1].repeat(repeats, 1, 1, 1)}
    single = model.iwae_nll(batch["image"], num_samples=1)
    with torch.no_grad():
        negative_elbo = -model.losses(batch)["elbo"]
    tolerance = 5 * float(single.std()) * math.sqrt(2 / repeats)
    assert abs(float(single.mean() - negative_elbo)) < tolerance


def test_iwae_tightens_with_k_towards_the_exact_nll() -> None:
    """1-D latent: -log p(x) by quadrature on a grid; IWAE bounds decrease with K and approach it."""
    model = tiny_vae(latent_dim=1)
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(5)).round()
    with torch.no_grad():
        grid = torch.linspace(-10, 10, 8001).view(-1, 1)
        logits = model.decode_logits(grid).float()  # [G, 1, 28, 28]
        log_px_z = torch.stack(
            [-model.reconstruction_nll(logits, xi.expand_as(logits)) for xi in x]
        )  # [3, G]
        log_pz = -0.5 * (grid.squeeze(1) ** 2 + math.log(2 * math.pi))
        step = float(grid[1] - grid[0])
        exact = -(torch.logsumexp(log_px_z + log_pz, dim=1) + math.log(step))
    torch.manual_seed(6)
    repeats = {1: 1000, 10: 100, 1000: 2}
    bounds = {k: model.iwae_nll(x.repeat(r, 1, 1, 1), k).view(r, 3).mean(0) for k, r in repeats.items()}
    chunked = model.iwae_nll(x, 1000, decode_batch=50)  # 16 latents per image per decoder call
    assert bounds[1].mean() > bounds[10].mean() > bounds[1000].mean()  # monotone on average
    assert (bounds[1000] >= exact - 0.05).all()
    assert torch.allclose(bounds[1000], exact, atol=0.1)
    assert torch.allclose(chunked, exact, atol=0.1)
    assert (bounds[1] - exact > 1.0).any()  # the bound is not trivially tight for this model


# ------------------------------------------------------------------ classifier and callbacks
def fit_classifier(data_root: Path, tmp_path: Path) -> Path:
    model = Classifier(backbone="mlp", backbone_kwargs={"hidden": [64]}, feature_dim=32)
    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    data = MNISTDataModule(root=str(data_root), batch_size=32, attributes=False)
    trainer.fit(model, datamodule=data)
    path = tmp_path / "classifier.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_sample_quality_and_iwae_callbacks_log_test_metrics(tiny_mnist: Path, tmp_path: Path) -> None:
    classifier = fit_classifier(tiny_mnist, tmp_path)
    model = tiny_vae(latent_dim=2)
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        callbacks=[SampleQuality(str(classifier), num_samples=40), ImportanceWeightedNLL(num_samples=5)],
    )
    data = MNISTDataModule(root=str(tiny_mnist), batch_size=32, eval_batch_size=8, attributes=False)
    (results,) = trainer.test(model, datamodule=data, verbose=False)
    assert (
        results["test/fid"] > 0 and 0 <= results["test/precision"] <= 1 and 0 <= results["test/recall"] <= 1
    )
    # the IWAE bound is below the negative ELBO of the same images (up to Monte-Carlo noise)
    assert results["test/iwae_nll"] < -results["test/elbo"] + 5


def test_sample_quality_needs_an_existing_classifier_checkpoint(tiny_mnist: Path, tmp_path: Path) -> None:
    trainer = L.Trainer(
        accelerator="cpu", logger=False, callbacks=[SampleQuality(str(tmp_path / "none.ckpt"))]
    )
    data = MNISTDataModule(root=str(tiny_mnist), attributes=False)
    with pytest.raises(
        ConfigError, match=r"none.ckpt: classifier checkpoint not found \(given as SampleQuality"
    ):
        trainer.test(tiny_vae(2), datamodule=data, verbose=False)


def striped_digits(n: int, seed: int) -> dict[str, torch.Tensor]:
    """Images of class c have a bright vertical bar at columns 2c+4..2c+5: a separable 10-class task."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = 0.2 * torch.rand(n, 1, 28, 28, generator=g)
    columns = torch.arange(28).view(1, 1, 1, 28)
    start = (2 * labels + 4).view(-1, 1, 1, 1)
    images[(columns >= start) & (columns < start + 2) & torch.ones_like(images, dtype=torch.bool)] = 1.0
    return {"image": images, "label": labels}


def test_classifier_learns_a_separable_task_and_logs_accuracy(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Classifier(backbone="mlp", backbone_kwargs={"hidden": [64]}, feature_dim=32, lr=3e-3)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    train = TensorBatchLoader(striped_digits(1000, 0), batch_size=50, shuffle=True)
    trainer.fit(model, train_dataloaders=train)
    (results,) = trainer.test(model, TensorBatchLoader(striped_digits(300, 1), batch_size=100), verbose=False)
    assert results["test/accuracy"] > 0.95
    assert model.features(torch.rand(2, 1, 28, 28)).shape == (2, 32)


def test_genvae_test_writes_metrics_json_beside_the_checkpoint(tiny_mnist: Path, tmp_path: Path) -> None:
    config = ["--config", str(REPO / "experiments" / "smoke.yaml"), "--data.init_args.root", str(tiny_mnist)]
    common = ["--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false"]
    main(
        [
            "fit",
            *config,
            *common,
            "--trainer.max_steps",
            "2",
            "--trainer.logger",
            "false",
            "--trainer.callbacks+=ModelCheckpoint",
            "--trainer.callbacks.dirpath",
            str(tmp_path / "ckpt"),
        ]
    )
    (ckpt,) = (tmp_path / "ckpt").glob("*.ckpt")
    main(
        [
            "test",
            *config,
            *common,
            "--ckpt_path",
            str(ckpt),
            "--trainer.callbacks+=genvae.callbacks.ImportanceWeightedNLL",
            "--trainer.callbacks.num_samples",
            "3",
        ]
    )
    written = json.loads(ckpt.with_name(f"{ckpt.stem}.metrics.json").read_text())
    assert {"test/loss", "test/elbo", "test/kl", "test/recon", "test/iwae_nll"} <= set(written)
    assert written["test/elbo"] == pytest.approx(-(written["test/recon"] + written["test/kl"]), rel=1e-4)

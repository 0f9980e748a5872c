"""The LatentMetrics callback: ``genvae test`` computes the latent metrics by the chosen protocol and latent,
and records both in the metrics JSON."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from genvae.callbacks import LatentMetrics
from genvae.errors import ConfigError
from genvae.metrics import disentanglement_metrics
from genvae.models import AE, VAE

from .conftest import REPO
from .test_cli import data_args, run_cli

SMOKE = ["--config", str(REPO / "experiments" / "smoke.yaml")]


@pytest.fixture(scope="module")
def smoke_checkpoint(tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """experiments/smoke.yaml (a 4-dim MLP VAE) trained for 3 steps on the tiny data."""
    folder = tmp_path_factory.mktemp("latent-metrics")
    run_cli(
        [
            "fit",
            *SMOKE,
            *data_args(tiny_mnist),
            "--trainer.max_steps",
            "3",
            "--trainer.logger",
            "false",
            "--trainer.callbacks+=ModelCheckpoint",
            "--trainer.callbacks.dirpath",
            str(folder / "ckpt"),
            "--trainer.callbacks.save_last",
            "true",
        ],
        folder,
    )
    return folder / "ckpt" / "last.ckpt"


def run_test(checkpoint: Path, data_root: Path, tmp_path: Path, *callback: str) -> dict:
    """Run ``genvae test`` on the checkpoint (with ``callback`` arguments) and read its metrics JSON."""
    run_cli(
        [
            "test",
            *SMOKE,
            *data_args(data_root),
            "--ckpt_path",
            str(checkpoint),
            "--trainer.logger",
            "false",
            *callback,
        ],
        tmp_path,
    )
    return json.loads(checkpoint.with_name(f"{checkpoint.stem}.metrics.json").read_text())


def test_defaults_are_ksg_on_the_posterior_mean(
    smoke_checkpoint: Path, tiny_mnist: Path, tmp_path: Path
) -> None:
    default = run_test(smoke_checkpoint, tiny_mnist, tmp_path / "default")
    assert default["meta/latent_protocol"] == "ksg" and default["meta/latent"] == "mean"
    explicit = run_test(
        smoke_checkpoint,
        tiny_mnist,
        tmp_path / "explicit",
        "--trainer.callbacks+=genvae.callbacks.LatentMetrics",
    )
    untimed = lambda metrics: {k: v for k, v in metrics.items() if not k.startswith("time/")}  # noqa: E731
    assert untimed(explicit) == untimed(default)  # the posterior mean and a seeded jitter: the same numbers
    assert default["time/test"] > 0 and "time/model" in default  # seconds, which differ between runs


def test_protocol_and_sample_latent_reach_the_metrics(
    smoke_checkpoint: Path, tiny_mnist: Path, tmp_path: Path
) -> None:
    default = run_test(smoke_checkpoint, tiny_mnist, tmp_path / "default")
    callback = ["--trainer.callbacks+=genvae.callbacks.LatentMetrics", "--trainer.callbacks.protocol"]
    binned = run_test(smoke_checkpoint, tiny_mnist, tmp_path / "hist", *callback, "histogram")
    assert binned["meta/latent_protocol"] == "histogram" and binned["meta/latent"] == "mean"
    assert binned["test/mig"] != pytest.approx(default["test/mig"], abs=1e-6)  # another estimator
    for key in ("test/sap", "test/spearman", "test/recon_accuracy"):  # no mutual information in these
        assert binned[key] == pytest.approx(default[key], abs=1e-9), key
    sampled = run_test(
        smoke_checkpoint,
        tiny_mnist,
        tmp_path / "sample",
        *callback,
        "ksg",
        "--trainer.callbacks.latent",
        "sample",
    )
    assert sampled["meta/latent_protocol"] == "ksg" and sampled["meta/latent"] == "sample"
    assert sampled["test/sap"] != pytest.approx(default["test/sap"], abs=1e-9)  # a noisy draw, not the mean
    assert sampled["test/recon_accuracy"] == pytest.approx(default["test/recon_accuracy"], abs=1e-9)


def test_bad_choices_are_config_errors(
    smoke_checkpoint: Path, tiny_mnist: Path, tmp_path: Path, capsys
) -> None:
    with pytest.raises(ConfigError, match=r"LatentMetrics.protocol: 'binned' is not one of \['ksg'"):
        LatentMetrics(protocol="binned")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="LatentMetrics.latent: 'mode'"):
        LatentMetrics(latent="mode")  # type: ignore[arg-type]
    with pytest.raises(SystemExit):
        run_test(
            smoke_checkpoint,
            tiny_mnist,
            tmp_path,
            "--trainer.callbacks+=genvae.callbacks.LatentMetrics",
            "--trainer.callbacks.protocol",
            "binned",
        )
    assert "binned" in capsys.readouterr().err


@torch.no_grad()
def test_sample_latent_is_a_posterior_draw_for_the_vae_and_the_latent_for_the_ae() -> None:
    torch.manual_seed(0)
    x = torch.rand(4, 1, 28, 28)
    vae = VAE(backbone="mlp", backbone_kwargs={"hidden": [16]}, latent_dim=3).eval()
    mu, logvar = vae.posterior(x)
    draws = vae.encode_sample(x.repeat(2000, 1, 1, 1)).view(2000, 4, 3)  # 2000 draws per image
    std = (0.5 * logvar).exp()
    assert torch.allclose(draws.mean(0), mu, atol=5 * std.max().item() / 2000**0.5)
    assert torch.allclose(draws.std(0), std, rtol=0.1)
    ae = AE(backbone="mlp", backbone_kwargs={"hidden": [16]}, latent_dim=3).eval()
    assert torch.equal(ae.encode_sample(x), ae.encode(x))


def test_module_without_latent_metrics_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="computes no latent metrics"):
        LatentMetrics().setup(L.Trainer(logger=False), L.LightningModule(), "test")


def test_model_computes_the_chosen_protocol() -> None:
    # the collector's compute uses the protocol and latent key it is given
    from genvae.metrics.evaluation import EvaluationCollector

    g = torch.Generator().manual_seed(0)
    attributes = torch.randn(300, 6, generator=g)
    outputs = {"latent": attributes + 0.3 * torch.randn(300, 6, generator=g), "attributes": attributes}
    outputs["latent_sample"] = torch.randn(300, 6, generator=g)
    names = [f"a{k}" for k in range(6)]
    for protocol in ("ksg", "quantile", "histogram"):
        for key in ("latent", "latent_sample"):
            expected = disentanglement_metrics(outputs[key], attributes, names, protocol=protocol)
            assert EvaluationCollector.compute(outputs, names, protocol, key) == expected

"""genvae's logging policy at the model's cost: what is logged, with which values, and what a step costs.

Known answers: the epoch means in metrics.csv equal the batch-size-weighted means of the values each step
computed, the step values equal those of the logging steps; and between logging steps neither the model,
Lightning's logging nor genvae's callbacks turn a tensor into a Python number (on a GPU each would wait for
the device).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch import Tensor

from genvae.cli import main
from genvae.models import VAE
from genvae.models.running_means import RunningMeans
from genvae.utils import sync

from .test_cli import checkpoint_of

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "experiments" / "smoke.yaml")


# ------------------------------------------------------------------ RunningMeans
def test_running_means_weight_by_batch_size_and_keep_host_numbers_on_the_host() -> None:
    running = RunningMeans()
    running.update({"loss": torch.tensor(1.0), "kl": torch.tensor(4.0), "beta": 0.5}, batch_size=3)
    running.update({"loss": torch.tensor(3.0), "kl": torch.tensor(0.0), "beta": 1.0}, batch_size=1)
    running.update({"loss": torch.tensor(2.0)}, batch_size=4)  # a step reporting fewer terms
    means = running.means()
    assert list(means) == ["loss", "kl", "beta"]
    torch.testing.assert_close(means["loss"][0], torch.tensor((3 * 1 + 1 * 3 + 4 * 2) / 8))
    assert means["loss"][1] == 8
    torch.testing.assert_close(means["kl"][0], torch.tensor(12 / 4))
    torch.testing.assert_close(means["beta"][0].float(), torch.tensor(2.5 / 4))
    restored = RunningMeans.from_state_dict(running.state_dict())
    assert {k: (v.item(), n) for k, (v, n) in restored.means().items()} == {
        k: (v.item(), n) for k, (v, n) in means.items()
    }
    running.reset()
    assert not running and running.means() == {}


# ------------------------------------------------------------------ what a fit logs
class RecordingVAE(VAE):
    """A VAE that records every step's loss (as computed) and every ``self.log`` call."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.steps: list[tuple[str, int, float, int]] = []  # stage, global step, loss, batch size
        self.log_calls: list[tuple[str, int, dict]] = []

    def log_stage(
        self, stage: str, values: dict, batch_size: int, prog_bar: tuple[str, ...] = ("loss",)
    ) -> None:
        if not self.trainer.sanity_checking:
            self.steps.append((stage, self.global_step, float(values["loss"].detach()), batch_size))
        super().log_stage(stage, values, batch_size, prog_bar)

    def log(self, name: str, value: Any, **kwargs: Any) -> None:
        if not self.trainer.sanity_checking:
            self.log_calls.append((name, self.global_step, kwargs))
        super().log(name, value, **kwargs)


def read_metrics_csv(log_dir: Path) -> list[dict[str, str]]:
    (path,) = log_dir.rglob("metrics.csv")
    with path.open() as f:
        return list(csv.DictReader(f))


def test_step_values_on_logging_steps_and_exact_epoch_means(tiny_mnist: Path, tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    model = RecordingVAE(backbone="mlp", backbone_kwargs={"hidden": [16]}, latent_dim=2)
    from genvae.data import MNISTDataModule

    datamodule = MNISTDataModule(root=str(tiny_mnist), batch_size=32, eval_batch_size=7, attributes=False)
    trainer = L.Trainer(
        max_epochs=2,
        log_every_n_steps=2,
        accelerator="cpu",
        logger=L.pytorch.loggers.CSVLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=datamodule)
    train = [s for s in model.steps if s[0] == "train"]
    steps_per_epoch = len(train) // 2
    assert steps_per_epoch >= 4

    # step values go to the loggers directly (genvae.utils.lightning.log_step_metrics), not through self.log
    assert not [name for name, _, _ in model.log_calls if name.endswith("_step")]
    epoch_logs = [kw for name, _, kw in model.log_calls if name == "train/loss_epoch"]
    assert len(epoch_logs) == 2 and all(kw["sync_dist"] and kw["on_epoch"] for kw in epoch_logs)
    val_logs = [kw for name, _, kw in model.log_calls if name == "val/loss"]
    assert len(val_logs) == 2 and all(kw["sync_dist"] and kw["prog_bar"] for kw in val_logs)

    rows = read_metrics_csv(tmp_path)
    step_rows = [r for r in rows if r.get("train/loss_step")]
    logged_steps = {int(r["step"]): float(r["train/loss_step"]) for r in step_rows}
    assert sorted(logged_steps) == [s for s in range(len(train)) if (s + 1) % 2 == 0]
    assert all(r["train/kl_step"] and r["train/mse_step"] and r["epoch"] for r in step_rows)
    assert [int(r["epoch"]) for r in step_rows] == [s // steps_per_epoch for s in sorted(logged_steps)]
    for _, step, loss, _ in train:
        if (step + 1) % 2 == 0:
            assert logged_steps[step] == pytest.approx(loss, rel=1e-6)
    epoch_means = [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    val_means = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    for epoch in range(2):
        part = train[epoch * steps_per_epoch : (epoch + 1) * steps_per_epoch]
        weighted = sum(loss * n for *_, loss, n in part) / sum(n for *_, n in part)
        assert epoch_means[epoch] == pytest.approx(weighted, rel=1e-6)
        val = [s for s in model.steps if s[0] == "val"]
        val = val[epoch * len(val) // 2 : (epoch + 1) * len(val) // 2]
        assert val_means[epoch] == pytest.approx(
            sum(v * n for *_, v, n in val) / sum(n for *_, n in val), rel=1e-6
        )
    expected = {"train/loss_step", "train/kl_step", "train/loss_epoch", "train/kl_epoch", "train/beta_epoch"}
    assert expected | {"val/loss", "val/mse"} <= set(trainer.callback_metrics)
    last_step = max(logged_steps)
    assert float(trainer.callback_metrics["train/loss_step"]) == pytest.approx(logged_steps[last_step])


# ------------------------------------------------------------------ no tensor -> Python number between logging steps
class CountConversions(L.Callback):
    """Counts tensor -> Python conversions (``item``, ``float``, ``int``, ``bool``, ``tolist``) per training
    step, from one ``on_train_batch_start`` to the next: each is a host-device synchronisation on a GPU."""

    per_step: dict[int, int] = {}
    METHODS = ("item", "__float__", "__int__", "__bool__", "tolist")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        CountConversions.per_step = {}
        self._originals = {name: getattr(torch.Tensor, name) for name in self.METHODS}
        self._step = -1

        def counting(original):
            def wrapper(tensor: Tensor, *args: Any, **kwargs: Any) -> Any:
                if self._step >= 0:
                    CountConversions.per_step[self._step] = CountConversions.per_step.get(self._step, 0) + 1
                return original(tensor, *args, **kwargs)

            return wrapper

        for name, original in self._originals.items():
            setattr(torch.Tensor, name, counting(original))

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._step = trainer.global_step
        CountConversions.per_step.setdefault(self._step, 0)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, original)


ARVAE = [
    "--config",
    SMOKE,
    "--model.class_path",
    "genvae.models.ARVAE",
    "--model.init_args.latent_dim",
    "8",
    "--data.init_args.attributes",
    "true",
]
FAMILIES = {
    "vae": ["--config", SMOKE],
    "arvae": ARVAE,
    "vqvae": [
        "--config",
        SMOKE,
        "--model.class_path",
        "genvae.models.VQVAE",
        "--model.init_args.backbone",
        "conv",
        "--model.init_args.backbone_kwargs",
        "{channels: [8, 16]}",
        "--model.init_args.num_codes",
        "16",
    ],
    "cvae": ["--config", SMOKE, "--model.init_args.condition", "[label]"],
    "arvae_conditional": [*ARVAE, "--model.init_args.condition", "[label]"],
    "classifier": [
        "--config",
        SMOKE,
        "--model.class_path",
        "genvae.models.Classifier",
        "--model.init_args.feature_dim",
        "16",
        "--data.init_args.attributes",
        "false",
    ],
}


PRIORS = {"prior": [], "prior_conditional": ["--model.init_args.condition", "[label]"]}


@pytest.fixture(scope="module")
def vqvae_checkpoint(tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """experiments/vqvae.yaml after one step: the first stage of the priors."""
    return checkpoint_of("vqvae", tiny_mnist, tmp_path_factory.mktemp("vqvae"))


def prior_args(family: str, vqvae_checkpoint: Path) -> list[str]:
    return [
        "--config",
        SMOKE,
        "--model.class_path",
        "genvae.models.VQPrior",
        "--model.init_args.vqvae_checkpoint",
        str(vqvae_checkpoint),
        "--model.init_args.d_model",
        "16",
        "--model.init_args.num_layers",
        "1",
        "--model.init_args.num_heads",
        "2",
        "--model.init_args.num_samples",
        "4",
        *PRIORS[family],
    ]


@pytest.mark.parametrize("family", [*FAMILIES, *PRIORS])
def test_no_host_conversion_between_logging_steps(
    family: str,
    tiny_mnist: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """smoke.yaml on 180 digits, batch 32, 2 epochs: 10 steps, log_every_n_steps 5: steps 4 and 9 log (and
    end their epochs); the first step may set things up. The models take the paths they take on an
    accelerator (a CPU may read back what lives in host memory: the VQ-VAE's dead-code flag, the labels'
    range), the VQ-VAE restarting dead codes every step."""
    monkeypatch.setattr(sync, "SIMULATE_ACCELERATOR", True)
    in_prior = family in PRIORS
    args = prior_args(family, request.getfixturevalue("vqvae_checkpoint")) if in_prior else FAMILIES[family]
    main(
        [
            "fit",
            *args,
            "--data.init_args.root",
            str(tiny_mnist),
            "--data.init_args.cache_dir",
            str(tmp_path / "cache"),
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.max_epochs",
            "2",
            "--trainer.callbacks+=tests.test_logging.CountConversions",
        ]
    )
    counts = CountConversions.per_step
    assert sorted(counts) == list(range(10))
    quiet = {step: n for step, n in counts.items() if step not in (0, 4, 9)}
    assert quiet == dict.fromkeys(quiet, 0), counts
    assert "train/loss_epoch" in capsys.readouterr().out  # the epoch summary line still shows the mean


def test_progress_bar_shows_the_loss_of_the_last_logging_step(tiny_mnist: Path, tmp_path: Path) -> None:
    from genvae.callbacks.progress import LoggingStepProgressBar

    bar = LoggingStepProgressBar()
    trainer = L.Trainer(
        max_steps=7,
        log_every_n_steps=3,
        limit_val_batches=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[bar],
    )
    from genvae.data import MNISTDataModule

    model = RecordingVAE(backbone="mlp", backbone_kwargs={"hidden": [16]}, latent_dim=2)
    trainer.fit(model, datamodule=MNISTDataModule(root=str(tiny_mnist), batch_size=16, attributes=False))
    assert bar.refresh_rate == 3
    shown = trainer.progress_bar_metrics["train/loss_step"]
    last_logged = [loss for stage, step, loss, _ in model.steps if stage == "train" and (step + 1) % 3 == 0][
        -1
    ]
    assert math.isclose(shown, last_logged, rel_tol=1e-6)

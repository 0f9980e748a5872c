"""Scale and reliability: DDP on CPU (gloo), bf16-mixed, W&B offline logging and sweeps, exact resume,
NaN stop, ``weights_only`` checkpoints."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import Tensor

from genvae.cli import WANDB_CONFIG_FILENAME, main
from genvae.data import TensorBatchLoader
from genvae.models import VAE
from genvae.utils.images import log_image

from .conftest import REPO

SWEEPS = sorted((REPO / "experiments" / "sweeps").glob("*.yaml"))
SMOKE = str(REPO / "experiments" / "smoke.yaml")
WANDB = str(REPO / "experiments" / "loggers" / "wandb.yaml")


def fit(args: list[str], root: Path) -> None:
    main(["fit", *args, "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false"])


def checkpoint_args(dirpath: Path, every_n_train_steps: int = 0) -> list[str]:
    args = [
        "--trainer.callbacks+=ModelCheckpoint",
        "--trainer.callbacks.dirpath",
        str(dirpath),
        "--trainer.callbacks.save_last",
        "true",
    ]
    if every_n_train_steps:
        args += [
            "--trainer.callbacks.every_n_train_steps",
            str(every_n_train_steps),
            "--trainer.callbacks.save_top_k",
            "-1",
            "--trainer.callbacks.filename",
            "{step}",
        ]
    return args


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "WANDB_SILENT": "true", **extra}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


# ------------------------------------------------------------------ test-only models and callbacks
class NaNLossVAE(VAE):
    """A VAE whose loss becomes NaN from optimizer step ``nan_at_step`` on."""

    def __init__(self, nan_at_step: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.nan_at_step = nan_at_step

    def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        terms = super().losses(batch)
        if self.training and self.global_step >= self.nan_at_step:
            terms["loss"] = terms["loss"] * float("nan")
        return terms


class ScheduledVAE(VAE):
    """A VAE whose optimizer comes with a learning-rate scheduler."""

    def configure_optimizers(self) -> Any:
        optimizer = super().configure_optimizers()
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1)}


class InfGradientVAE(VAE):
    """A VAE whose loss stays finite but one gradient becomes inf at step ``bad_step``."""

    def __init__(self, bad_step: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bad_step = bad_step

    def on_after_backward(self) -> None:
        if self.global_step == self.bad_step:
            next(self.parameters()).grad[0].fill_(float("inf"))


class RecordAutocastDtype(L.Callback):
    """Records the dtype of the encoder head's output in every training forward."""

    dtypes: list[torch.dtype] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        RecordAutocastDtype.dtypes = []
        record = lambda module, inputs, output: RecordAutocastDtype.dtypes.append(output.dtype)  # noqa: E731
        pl_module.encoder_head.register_forward_hook(record)


class RecordValidationMetrics(L.Callback):
    """Keeps the scalar metrics of the last validation run."""

    metrics: dict[str, float] = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        RecordValidationMetrics.metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}


class LogOneImage(L.Callback):
    """Logs a known 8x8 gradient image through genvae's ``log_image`` at the end of training."""

    caption: str | None = "ramp"

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        image = torch.linspace(0, 1, 64).view(1, 8, 8)
        log_image(trainer, "figures/ramp", image, caption=self.caption)


class LogOneImageWithoutCaption(LogOneImage):
    caption = None


# ------------------------------------------------------------------ loader position
def test_loader_resumes_mid_epoch_at_the_next_batch() -> None:
    tensors = {"image": torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1), "label": torch.arange(40)}
    straight = TensorBatchLoader(tensors, batch_size=4, shuffle=True, drop_last=True, seed=7)
    straight.sampler.set_epoch(3)
    expected = [b["label"] for b in straight]
    interrupted = TensorBatchLoader(tensors, batch_size=4, shuffle=True, drop_last=True, seed=7)
    interrupted.sampler.set_epoch(3)
    iterator = iter(interrupted)
    for _ in range(4):
        next(iterator)
    state = interrupted.state_dict()
    assert state == {"epoch": 3, "seed": 7, "consumed": 4}
    resumed = TensorBatchLoader(tensors, batch_size=4, shuffle=True, drop_last=True, seed=0)
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(3)  # what Lightning does at the start of the resumed epoch
    rest = [b["label"] for b in resumed]
    assert len(rest) == 6 and all(torch.equal(a, b) for a, b in zip(rest, expected[4:], strict=True))
    resumed.sampler.set_epoch(4)  # the next epoch starts from its first batch again
    assert len(list(resumed)) == 10


# ------------------------------------------------------------------ resume, NaN stop, weights_only
def test_resume_from_checkpoint_equals_an_uninterrupted_run(tiny_mnist: Path, tmp_path: Path) -> None:
    """180 training images, batch 32: 5 steps per epoch. Steps 3 (mid-epoch) and 5 (end of epoch 0)."""
    common = ["--config", SMOKE, "--data.init_args.root", str(tiny_mnist), "--trainer.logger", "false"]
    common += ["--trainer.limit_train_batches", "1.0", "--trainer.max_epochs", "2"]
    fit([*common, *checkpoint_args(tmp_path / "straight", every_n_train_steps=1)], tmp_path)
    reference = torch.load(tmp_path / "straight" / "last.ckpt", map_location="cpu", weights_only=True)
    assert reference["global_step"] == 10
    for step in (3, 5):
        resume_from = tmp_path / "straight" / f"step={step}.ckpt"
        loader_state = torch.load(resume_from, weights_only=True)["loops"]["fit_loop"]["state_dict"]
        assert loader_state["combined_loader"] == [{"epoch": 0, "seed": 0, "consumed": step}]
        fit(
            [*common, *checkpoint_args(tmp_path / f"resumed{step}"), "--ckpt_path", str(resume_from)],
            tmp_path,
        )
        resumed = torch.load(tmp_path / f"resumed{step}" / "last.ckpt", map_location="cpu", weights_only=True)
        assert resumed["global_step"] == 10
        for name, value in reference["state_dict"].items():
            assert torch.equal(resumed["state_dict"][name], value), (step, name)


def test_manual_step_equals_lightnings_automatic_loop(tiny_mnist: Path, tmp_path: Path) -> None:
    """genvae steps its optimizer itself; with gradient clipping (a bound no gradient reaches: the gradients
    are multiplied by exactly 1) Lightning's automatic loop steps it. Same weights, bitwise; and a checkpoint
    of the automatic loop resumes in the manual one at its step count, equal to an unbroken manual run."""
    from genvae.cli import build_cli

    common = ["--config", SMOKE, "--data.init_args.root", str(tiny_mnist), "--trainer.logger", "false"]
    common += ["--trainer.limit_train_batches", "1.0", "--trainer.max_epochs", "2"]
    clipped = ["--trainer.gradient_clip_val", "1e30"]
    modes = {}
    for name, extra in (("manual", []), ("automatic", clipped)):
        cli = build_cli([*common, *extra, "--trainer.default_root_dir", str(tmp_path)], run=False)
        cli.model.trainer = cli.trainer
        modes[name] = cli.model.automatic_optimization
    assert modes == {"manual": False, "automatic": True}

    fit([*common, *checkpoint_args(tmp_path / "manual", every_n_train_steps=1)], tmp_path)
    fit([*common, *clipped, *checkpoint_args(tmp_path / "automatic", every_n_train_steps=1)], tmp_path)
    fit(
        [
            *common,
            *checkpoint_args(tmp_path / "resumed"),
            "--ckpt_path",
            str(tmp_path / "automatic" / "step=3.ckpt"),
        ],
        tmp_path,
    )
    manual, automatic, resumed = (
        torch.load(tmp_path / run / "last.ckpt", map_location="cpu", weights_only=True)
        for run in ("manual", "automatic", "resumed")
    )
    assert manual["global_step"] == automatic["global_step"] == resumed["global_step"] == 10
    for name, value in manual["state_dict"].items():
        assert torch.equal(automatic["state_dict"][name], value), name
        assert torch.equal(resumed["state_dict"][name], value), name


def test_a_scheduler_under_the_manual_step_is_one_error_line(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Lightning steps schedulers only in its automatic loop: a model that returns one is refused, not
    trained at a silently constant learning rate."""
    with pytest.raises(SystemExit) as info:
        fit(
            [
                "--config",
                SMOKE,
                "--model.class_path",
                "tests.test_scale.ScheduledVAE",
                "--data.init_args.root",
                str(tiny_mnist),
                "--trainer.logger",
                "false",
            ],
            tmp_path,
        )
    assert info.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(
        "genvae: error: ScheduledVAE.configure_optimizers: returns a learning-rate scheduler"
    )


def test_checkpoint_loads_with_weights_only(tiny_mnist: Path, tmp_path: Path) -> None:
    fit(
        [
            "--config",
            SMOKE,
            "--data.init_args.root",
            str(tiny_mnist),
            "--trainer.max_steps",
            "2",
            "--trainer.logger",
            "false",
            *checkpoint_args(tmp_path / "ckpt"),
        ],
        tmp_path,
    )
    checkpoint = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    rng = checkpoint["callbacks"]["RNGStateCheckpoint"]
    assert rng["torch"].dtype == torch.uint8 and rng["numpy"]["keys"].shape == (624,)
    model = VAE.load_from_checkpoint(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert torch.equal(model.encoder_head[1].weight, checkpoint["state_dict"]["encoder_head.1.weight"])


def test_nan_loss_stops_with_one_message_and_keeps_the_last_good_checkpoint(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as info:
        fit(
            [
                "--config",
                SMOKE,
                "--model.class_path",
                "tests.test_scale.NaNLossVAE",
                "--model.init_args.nan_at_step",
                "3",
                "--data.init_args.root",
                str(tiny_mnist),
                "--trainer.logger",
                "false",
                *checkpoint_args(tmp_path / "ckpt", every_n_train_steps=1),
            ],
            tmp_path,
        )
    assert info.value.code == 1
    last = tmp_path / "ckpt" / "last.ckpt"
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("genvae: training stopped: the loss is nan at epoch 0, global step 3;")
    assert f"last good checkpoint: {last}" in lines[-1]
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 3
    assert sorted(p.name for p in last.parent.iterdir()) == [
        "last.ckpt",
        "step=1.ckpt",
        "step=2.ckpt",
        "step=3.ckpt",
    ]
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())


def test_non_finite_gradient_stops_before_the_optimizer_step(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as info:
        fit(
            [
                "--config",
                SMOKE,
                "--model.class_path",
                "tests.test_scale.InfGradientVAE",
                "--data.init_args.root",
                str(tiny_mnist),
                "--trainer.logger",
                "false",
                *checkpoint_args(tmp_path / "ckpt", every_n_train_steps=1),
            ],
            tmp_path,
        )
    assert info.value.code == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "gradient is non-finite (loss finite) at epoch 0, global step 2" in message
    checkpoint = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())


@pytest.mark.parametrize(
    ("model", "argument", "what"),
    [
        ("NaNLossVAE", "nan_at_step", "the loss is nan"),
        ("InfGradientVAE", "bad_step", "the gradient is non-finite (loss finite)"),
    ],
)
def test_guard_dates_a_bad_step_between_two_reads_of_its_flag(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture, model: str, argument: str, what: str
) -> None:
    """5 steps per epoch, the flag read on logging steps (every 5) and at epoch ends: the reads after
    global steps 5 and 10 bracket the bad step 8, which the counter on the device still names exactly."""
    with pytest.raises(SystemExit) as info:
        fit(
            [
                "--config",
                SMOKE,
                "--model.class_path",
                f"tests.test_scale.{model}",
                f"--model.init_args.{argument}",
                "8",
                "--data.init_args.root",
                str(tiny_mnist),
                "--trainer.max_epochs",
                "3",
                "--trainer.logger",
                "false",
                *checkpoint_args(tmp_path / "ckpt"),
            ],
            tmp_path,
        )
    assert info.value.code == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{what} at epoch 1, global step 8;" in message
    checkpoint = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 5  # the end of epoch 0, the last checkpoint before the bad step
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())


# ------------------------------------------------------------------ precision and DDP
def test_bf16_mixed_on_cpu_autocasts_and_keeps_float32_weights(tiny_mnist: Path, tmp_path: Path) -> None:
    fit(
        [
            "--config",
            SMOKE,
            "--data.init_args.root",
            str(tiny_mnist),
            "--trainer.precision",
            "bf16-mixed",
            "--trainer.max_steps",
            "3",
            "--trainer.logger",
            "false",
            "--trainer.callbacks+=tests.test_scale.RecordAutocastDtype",
            *checkpoint_args(tmp_path / "ckpt"),
        ],
        tmp_path,
    )
    assert torch.bfloat16 in RecordAutocastDtype.dtypes
    checkpoint = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 3
    assert all(
        v.dtype == torch.float32 and torch.isfinite(v).all() for v in checkpoint["state_dict"].values()
    )


SITECUSTOMIZE = """
import os
import genvae.data.datamodule as datamodule

_compute = datamodule.morpho_attributes


def _recorded(images):
    with open(os.environ["GENVAE_TEST_ATTRIBUTE_LOG"], "a") as log:
        log.write(f"{os.environ.get('LOCAL_RANK', '0')} {len(images)}\\n")
    return _compute(images)


datamodule.morpho_attributes = _recorded
"""


def test_ddp_two_cpu_processes_sync_metrics_and_share_the_attribute_cache(
    tiny_mnist: Path, tmp_path: Path
) -> None:
    """``python -m genvae`` with 2 gloo processes; a deterministic AE so validation can be recomputed."""
    config = {
        "seed_everything": 0,
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "log_every_n_steps": 1},
        "model": {
            "class_path": "genvae.models.AE",
            "init_args": {"backbone": "mlp", "backbone_kwargs": {"hidden": [32]}, "latent_dim": 4},
        },
        "data": {
            "class_path": "genvae.data.MNISTDataModule",
            "init_args": {
                "root": str(tiny_mnist),
                "batch_size": 16,
                "eval_batch_size": 8,
                "cache_dir": str(tmp_path / "cache"),
            },
        },
    }
    config_path = tmp_path / "ae.yaml"
    config_path.write_text(yaml.safe_dump(config))
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    attribute_log = tmp_path / "attributes.log"
    env = subprocess_env(
        WANDB_MODE="disabled",
        GENVAE_TEST_ATTRIBUTE_LOG=str(attribute_log),
        PYTHONPATH=os.pathsep.join([str(hook), str(REPO)]),
    )
    command = [sys.executable, "-m", "genvae", "fit", "--config", str(config_path)]
    command += [
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
        "--trainer.enable_progress_bar",
        "false",
    ]
    command += ["--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(tmp_path / "logs")]
    command += checkpoint_args(tmp_path / "ckpt")
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    # 180 training images, 90 per rank, batch 16, drop_last: 5 steps (one process would take 11)
    checkpoint = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 5
    # the attribute cache: computed by rank 0 only (train 200 and t10k 100 images), read by rank 1
    assert sorted(attribute_log.read_text().split("\n")[:-1]) == ["0 100", "0 200"]
    assert len(list((tmp_path / "cache").glob("mnist-*.morpho-*.pt"))) == 2

    # val/loss logged by rank 0 is the mean over both ranks' shards = the loss of the full val set
    (metrics_file,) = (tmp_path / "logs").rglob("metrics.csv")
    rows = [row for row in csv.DictReader(metrics_file.open()) if row.get("val/loss")]
    ddp_val_loss = float(rows[-1]["val/loss"])
    main(
        [
            "validate",
            "--config",
            str(config_path),
            "--trainer.devices",
            "1",
            "--trainer.logger",
            "false",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.callbacks+=tests.test_scale.RecordValidationMetrics",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--ckpt_path",
            str(tmp_path / "ckpt" / "last.ckpt"),
        ]
    )
    full_val_loss = RecordValidationMetrics.metrics["val/loss"]
    assert math.isclose(ddp_val_loss, full_val_loss, rel_tol=1e-5), (ddp_val_loss, full_val_loss)


# ------------------------------------------------------------------ Weights & Biases
def offline_runs(save_dir: Path) -> list[Path]:
    return sorted((save_dir / "wandb").glob("offline-run-*"))


@pytest.mark.parametrize("image_callback", ["LogOneImage", "LogOneImageWithoutCaption"])
def test_wandb_offline_run_keeps_config_images_and_checkpoint(
    image_callback: str, tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    try:
        fit(
            [
                "--config",
                SMOKE,
                "--config",
                WANDB,
                "--trainer.logger.init_args.save_dir",
                str(tmp_path),
                "--trainer.logger.init_args.tags",
                "[test, offline]",
                "--model.init_args.latent_dim",
                "3",
                "--data.init_args.root",
                str(tiny_mnist),
                "--trainer.max_steps",
                "2",
                f"--trainer.callbacks+=tests.test_scale.{image_callback}",
                *checkpoint_args(tmp_path / "ckpt"),
            ],
            tmp_path,
        )
        run = wandb.run
        assert run is not None and run.offline
        assert run.config["model"]["init_args"]["latent_dim"] == 3  # the full resolved config
        assert run.config["data"]["init_args"]["root"] == str(tiny_mnist)
        assert list(run.tags) == ["test", "offline"] and run.project == "genvae"
    finally:
        wandb.finish()
    (run_dir,) = offline_runs(tmp_path)
    saved = yaml.safe_load((run_dir / "files" / WANDB_CONFIG_FILENAME).read_text())
    assert saved["model"]["class_path"] == "genvae.models.VAE"
    assert saved["model"]["init_args"]["latent_dim"] == 3
    assert saved["trainer"]["logger"]["class_path"] == "lightning.pytorch.loggers.WandbLogger"
    (png,) = (run_dir / "files" / "media" / "images" / "figures").glob("ramp_*.png")
    pixels = torch.from_numpy(np.array(Image.open(png).convert("L")))
    assert pixels.shape == (8, 8) and pixels[0, 0] == 0 and pixels[-1, -1] == 255
    run_id = run_dir.name.split("-")[-1]
    records = (run_dir / f"run-{run_id}.wandb").read_bytes()  # log_model: the checkpoint artifact, for sync
    assert f"model-{run_id}".encode() in records and b"model.ckpt" in records


def sweep_command(sweep: dict[str, Any], values: dict[str, Any]) -> list[str]:
    """The command line the W&B agent runs for one parameter set (wandb/wandb_agent.py, Linux)."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    template = sweep_utils.create_sweep_command(list(sweep["command"]))
    variables = sweep_utils.create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})
    variables.update(env=["/usr/bin/env"], interpreter=["python"], program=[sweep["program"]])
    command: list[str] = []
    for chunk in map(str, template):
        if chunk.startswith("${") and chunk.endswith("}"):
            command += variables.get(chunk[2:-1]) or []
        else:
            command.append(chunk)
    return command


def first_value(spec: dict[str, Any]) -> Any:
    if "values" in spec:
        return spec["values"][0]
    if "value" in spec:
        return spec["value"]
    return spec["min"]


@pytest.mark.parametrize("sweep_file", SWEEPS, ids=lambda p: p.stem)
def test_sweep_command_runs_offline(
    sweep_file: Path,
    tiny_mnist: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The agent's command for the first value of every parameter: values reach the config, and it runs.

    The run uses ``fast_dev_run`` (one batch, loggers off); the full W&B offline path (config, images,
    checkpoint artifact) is covered by ``test_wandb_offline_run_keeps_config_images_and_checkpoint``.
    """
    sweep = yaml.safe_load(sweep_file.read_text())
    template = [str(c) for c in sweep["command"]]
    assert template[:3] == ["${env}", "genvae", "fit"] and template[-1] == "${args}"
    configs = [template[i + 1] for i, c in enumerate(template) if c == "--config"]
    assert "experiments/loggers/wandb.yaml" in configs
    assert all((REPO / c).is_file() for c in configs), configs
    assert sweep["method"] in {"grid", "random", "bayes"} and sweep["metric"]["goal"] in {
        "minimize",
        "maximize",
    }
    values = {key: first_value(spec) for key, spec in sweep["parameters"].items()}
    # test-only settings, passed the way the agent passes parameters
    extras = {"data.init_args.root": str(tiny_mnist), "trainer.accelerator": "cpu"}
    command = sweep_command(sweep, {**values, **extras})
    assert command[:3] == ["/usr/bin/env", "genvae", "fit"]
    assert all(f"--{key}={value}" in command for key, value in values.items())

    monkeypatch.chdir(REPO)  # the agent runs from the repo root: the config paths are relative to it
    with pytest.raises(SystemExit) as info:
        main([*command[2:], "--print_config"])
    assert info.value.code == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    for key, value in values.items():
        node = resolved
        for part in key.split("."):
            node = node[part]
        assert node == value, key

    (tmp_path / "experiments").symlink_to(REPO / "experiments")
    result = subprocess.run(
        [*command, "--trainer.fast_dev_run=true", f"--trainer.default_root_dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=subprocess_env(WANDB_MODE="offline", PYTHONPATH=str(REPO)),
    )
    assert result.returncode == 0, result.stderr[-3000:]

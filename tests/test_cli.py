"""The genvae CLI, driven through ``main([...])``, the console script and ``python -m genvae``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from genvae.cli import SUBCOMMAND_HELP, main
from genvae.models import VAE

from .conftest import REPO

EXPERIMENTS = sorted((REPO / "experiments").glob("*.yaml"))


def run_cli(args: list[str], tmp_path: Path) -> None:
    main([*args, "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false"])


def data_args(root: Path) -> list[str]:
    return ["--data.init_args.root", str(root)]


def test_every_experiment_is_collected() -> None:
    names = {p.stem for p in EXPERIMENTS}
    assert {"ae", "vae", "smoke"} <= names


# Experiments that start from another experiment's checkpoint:
# config stem -> (stem of the config that makes the checkpoint, CLI key that takes its path).
NEEDS_CHECKPOINT: dict[str, tuple[str, str]] = {
    "vqvae_prior": ("vqvae", "--model.init_args.vqvae_checkpoint"),
    "vqvae_prior_conditional": ("vqvae", "--model.init_args.vqvae_checkpoint"),
}


def checkpoint_of(stem: str, data_root: Path, tmp_path: Path, extra: tuple[str, ...] = ()) -> Path:
    """Train experiments/<stem>.yaml for one step on CPU (with the ``extra`` arguments) and return its
    last.ckpt."""
    dirpath = tmp_path / f"{stem}-ckpt"
    run_cli(
        [
            "fit",
            "--config",
            str(REPO / "experiments" / f"{stem}.yaml"),
            "--trainer.max_steps",
            "1",
            "--trainer.limit_val_batches",
            "1",
            "--trainer.accelerator",
            "cpu",
            "--trainer.logger",
            "false",
            "--trainer.callbacks+=ModelCheckpoint",
            "--trainer.callbacks.dirpath",
            str(dirpath),
            "--trainer.callbacks.save_last",
            "true",
            *data_args(data_root),
            *extra,
        ],
        tmp_path / f"{stem}-run",
    )
    return dirpath / "last.ckpt"


@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_fast_dev_run_on_cpu(config: Path, tiny_mnist: Path, tmp_path: Path) -> None:
    extra: list[str] = []
    if config.stem in NEEDS_CHECKPOINT:
        source, key = NEEDS_CHECKPOINT[config.stem]
        extra = [key, str(checkpoint_of(source, tiny_mnist, tmp_path))]
    for subcommand in ("fit", "test"):  # test: the test-time evaluation of every family, on one batch
        run_cli(
            [
                subcommand,
                "--config",
                str(config),
                "--trainer.fast_dev_run",
                "true",
                "--trainer.accelerator",
                "cpu",
                *data_args(tiny_mnist),
                *extra,
            ],
            tmp_path,
        )


def test_print_config_resolves_the_model_family(tiny_mnist: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(
            [
                "fit",
                "--config",
                str(REPO / "experiments" / "vae.yaml"),
                "--model.init_args.beta",
                "4",
                "--print_config",
            ]
        )
    assert info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "genvae.models.VAE"
    assert printed["model"]["init_args"]["beta"] == 4.0
    assert printed["data"]["class_path"] == "genvae.data.MNISTDataModule"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--model.init_args.betta", "2"], "model.init_args.betta: not an argument of genvae.models.VAE"),
        (
            ["--model.init_args.likelihood", "poisson"],
            "model.init_args.likelihood: got 'poisson'; allowed values: 'bernoulli', 'gaussian'",
        ),
        (["--data.init_args.batch_size", "many"], "data.init_args.batch_size: expected int, got 'many'"),
        (
            ["--data.init_args.dataset", "celeba"],
            "data.init_args.dataset: got 'celeba'; allowed values: 'mnist', 'fashion_mnist', "
            "'morpho_thickness_intensity'",
        ),
        (["--trainer.max_epochs", "x"], "trainer.max_epochs: expected int, got 'x'"),
    ],
)
def test_bad_keys_and_values_are_one_line_parser_errors(
    args: list[str], line: str, capsys: pytest.CaptureFixture
) -> None:
    """The key, what was given and what is allowed, in one line: not jsonargparse's ~60-line usage and
    nested explanation."""
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(REPO / "experiments" / "vae.yaml"), *args])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"genvae: error: {line} (options: genvae fit --help)"
    ]


def test_bad_backbone_is_one_clear_line(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as info:
        run_cli(
            [
                "fit",
                "--config",
                str(REPO / "experiments" / "smoke.yaml"),
                *data_args(tiny_mnist),
                "--model.init_args.backbone",
                "transformer",
            ],
            tmp_path,
        )
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("genvae: error: backbone: unknown name 'transformer'")


def test_missing_data_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        run_cli(
            [
                "fit",
                "--config",
                str(REPO / "experiments" / "smoke.yaml"),
                *data_args(tmp_path / "nothing"),
                "--data.init_args.download",
                "false",
            ],
            tmp_path,
        )
    assert "genvae: error: mnist: file train-images-idx3-ubyte[.gz] not found" in capsys.readouterr().err


def test_fit_then_validate_test_predict_from_checkpoint(tiny_mnist: Path, tmp_path: Path) -> None:
    config = ["--config", str(REPO / "experiments" / "smoke.yaml"), *data_args(tiny_mnist)]
    run_cli(
        [
            "fit",
            *config,
            "--trainer.max_steps",
            "3",
            "--trainer.logger",
            "false",
            "--trainer.callbacks+=ModelCheckpoint",
            "--trainer.callbacks.dirpath",
            str(tmp_path / "ckpt"),
            "--trainer.callbacks.save_last",
            "true",
        ],
        tmp_path,
    )
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    assert ckpt.is_file()
    for subcommand in ("validate", "test", "predict"):
        run_cli([subcommand, *config, "--ckpt_path", str(ckpt), "--trainer.logger", "false"], tmp_path)
    model = VAE.load_from_checkpoint(ckpt, map_location="cpu")  # reload through the concrete class
    assert model.latent_dim == 4 and model.hparams.backbone == "mlp"
    assert model.sample(3).shape == (3, 1, 28, 28)
    loaded = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert loaded["hyper_parameters"]["image_shape"] == (1, 28, 28)


def _env() -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}


def test_console_script_and_module_entry_points(tiny_mnist: Path, tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("genvae")
    for command in ([str(script)], [sys.executable, "-m", "genvae"]):
        result = subprocess.run(
            [
                *command,
                "fit",
                "--config",
                str(REPO / "experiments" / "smoke.yaml"),
                *data_args(tiny_mnist),
                "--trainer.max_epochs",
                "1",
                "--trainer.limit_train_batches",
                "2",
                "--trainer.default_root_dir",
                str(tmp_path),
                "--trainer.enable_progress_bar",
                "false",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=_env(),
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "epoch 1/1 step 2 | train/loss_epoch" in result.stdout


def one_line(text: str) -> str:
    """Help text with argparse's line wrapping undone (it may also break a path after a hyphen)."""
    return re.sub(r"-\s+", "-", " ".join(text.split()))


@pytest.mark.parametrize(
    ("subcommand", "page"),
    [
        ("fit", "docs/models.md"),
        ("validate", "docs/evaluation.md"),
        ("test", "docs/evaluation.md"),
        ("predict", "docs/evaluation.md"),
        ("edit", "docs/latent-control.md"),
        ("sample", "docs/latent-control.md"),
    ],
)
def test_subcommand_help_says_what_it_does_and_where_it_is_explained(
    subcommand: str, page: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main([subcommand, "--help"])
    assert stop.value.code == 0
    text = one_line(capsys.readouterr().out)
    assert f"Explained in {page}" in text and (REPO / page).is_file()
    if subcommand in SUBCOMMAND_HELP:  # not Lightning's Trainer docstring
        assert one_line(SUBCOMMAND_HELP[subcommand]) in text


def test_console_script_help_lists_every_subcommand_with_its_page() -> None:
    script = Path(sys.executable).with_name("genvae")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=300, env=_env())
    assert result.returncode == 0, result.stderr[-3000:]
    text = one_line(result.stdout)
    for line in SUBCOMMAND_HELP.values():
        assert one_line(line) in text
    assert "docs/index.md" in text and "genvae edit --help" in text


HELP_PAGES = {
    "genvae.results": "docs/results.md",
    "genvae.results run": "docs/results.md",
    "genvae.results tables": "docs/results.md",
    "genvae.data.export": "docs/data.md",
    **{f"benchmarks/{path.name}": "docs/speed.md" for path in sorted((REPO / "benchmarks").glob("*.py"))},
}


@pytest.mark.parametrize(("command", "page"), HELP_PAGES.items())
def test_results_benchmark_and_export_help_name_their_docs_page(
    command: str, page: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--help`` of the results runner (and its subcommands), each benchmark and the attribute export, run
    as ``python -m`` / ``python benchmarks/...`` would (in this process: their imports are loaded already)."""
    import runpy

    target, *subcommand = command.split()
    monkeypatch.setattr(sys, "argv", [target, *subcommand, "--help"])
    with pytest.raises(SystemExit) as stop:
        if target.endswith(".py"):
            runpy.run_path(str(REPO / target), run_name="__main__")
        else:  # as `python -m`: the module runs fresh (runpy warns when it was imported before)
            monkeypatch.delitem(sys.modules, target, raising=False)
            runpy.run_module(target, run_name="__main__", alter_sys=True)
    assert stop.value.code == 0
    text = one_line(capsys.readouterr().out)
    assert page in text and (REPO / page).is_file(), text[:400]

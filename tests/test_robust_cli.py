"""Robust CLI: checkpoint errors as one line, atomic checkpoints and caches, a clean console (issue 16)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from unittest import mock

import pytest
import torch
from lightning.pytorch.loggers import WandbLogger

from genvae.checkpoints import AtomicCheckpointIO, EvaluationCheckpointIO, read_checkpoint
from genvae.cli import main, prepare_wandb_logger
from genvae.data import MNISTDataModule
from genvae.errors import ConfigError
from genvae.models import VAE

from .conftest import REPO, write_fake_mnist

SMOKE = str(REPO / "experiments" / "smoke.yaml")
GENVAE = str(Path(sys.executable).with_name("genvae"))


def env() -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}


def quiet(root: Path) -> list[str]:
    return ["--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false"]


def tiny_vae_checkpoint(path: Path, class_path: str = "genvae.models.VAE") -> Path:
    """A checkpoint as LightningCLI writes it (class recorded in the hyperparameters), without training."""
    model = VAE(latent_dim=4, backbone="mlp", backbone_kwargs={"hidden": [64, 32]})
    hparams = {"_class_path": class_path, **dict(model.hparams)}
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams, "epoch": 0}, path)
    return path


class Unpicklable:
    """A class that ``torch.load(weights_only=True)`` refuses to rebuild."""


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """name -> (path, the cause its error line must give)."""
    folder = tmp_path_factory.mktemp("bad_ckpts")
    good = tiny_vae_checkpoint(folder / "vae.ckpt")
    (folder / "text.ckpt").write_text("epoch: 3\nloss: 0.1\n")
    (folder / "truncated.ckpt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    torch.save({"state_dict": {}, "hyper_parameters": {}, "extra": Unpicklable()}, folder / "pickle.ckpt")
    torch.save({"weights": torch.zeros(3)}, folder / "plain.ckpt")
    return {
        "missing": (folder / "missing.ckpt", "checkpoint file not found"),
        "text": (folder / "text.ckpt", "not a PyTorch checkpoint"),
        "truncated": (folder / "truncated.ckpt", "truncated or damaged checkpoint"),
        "pickle": (folder / "pickle.ckpt", "refused by torch.load(weights_only=True)"),
        "plain": (folder / "plain.ckpt", "not a Lightning checkpoint of a genvae model"),
        "family": (
            good,
            "a checkpoint of genvae.models.VAE, but the configured model is genvae.models.VQVAE",
        ),
    }


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("genvae: error:")]


# ------------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("case", ["missing", "text", "truncated", "pickle", "plain", "family"])
def test_read_checkpoint_names_the_file_and_the_cause(case: str, bad_checkpoints: dict) -> None:
    path, cause = bad_checkpoints[case]
    with pytest.raises(ConfigError) as info:
        read_checkpoint(path, expected_class="genvae.models.VQVAE", key="--ckpt_path")
    message = str(info.value)
    assert message.startswith(f"{path}: {cause}") and message.endswith("(given as --ckpt_path)")
    assert "\n" not in message


def test_read_checkpoint_accepts_the_family_by_any_alias_or_base(bad_checkpoints: dict) -> None:
    path, _ = bad_checkpoints["family"]
    from genvae.models.base import GenerativeModel

    for expected in ("genvae.models.VAE", "genvae.models.vae.VAE", VAE, GenerativeModel):
        assert set(read_checkpoint(path, expected_class=expected)) >= {"state_dict", "hyper_parameters"}


@pytest.mark.parametrize("case", ["missing", "text", "truncated", "pickle", "family"])
def test_ckpt_path_errors_through_main_are_one_line(
    case: str, bad_checkpoints: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path, cause = bad_checkpoints[case]
    config = str(REPO / "experiments" / "vqvae.yaml")
    with pytest.raises(SystemExit) as info:
        main(["test", "--config", config, "--ckpt_path", str(path), *quiet(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith(f"genvae: error: {path}: {cause}"), lines


def test_ckpt_path_errors_through_the_genvae_command(bad_checkpoints: dict, tmp_path: Path) -> None:
    """The console script: exit status 2, one line, no traceback (the family mismatch; main() runs the rest)."""
    for case in ("family",):
        path, cause = bad_checkpoints[case]
        result = subprocess.run(
            [GENVAE, "test", "--config", str(REPO / "experiments" / "vqvae.yaml"), "--ckpt_path", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env(),
            cwd=tmp_path,
        )
        assert result.returncode == 2, result.stderr[-2000:]
        assert "Traceback" not in result.stderr
        lines = error_lines(result.stderr)
        assert len(lines) == 1 and lines[0].startswith(f"genvae: error: {path}: {cause}")


def test_vqvae_and_classifier_checkpoint_errors_are_one_line(
    bad_checkpoints: dict, tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    prior = str(REPO / "experiments" / "vqvae_prior.yaml")
    data = ["--data.init_args.root", str(tiny_mnist), "--data.init_args.attributes", "false"]
    cases = [
        (["fit", "--config", prior, "--model.init_args.vqvae_checkpoint"], "truncated"),
        (["fit", "--config", prior, "--model.init_args.vqvae_checkpoint"], "family"),
        (
            ["test", "--config", SMOKE, "--trainer.callbacks+=genvae.callbacks.SampleQuality"]
            + ["--trainer.callbacks.classifier_checkpoint"],
            "pickle",
        ),
    ]
    for args, case in cases:
        path, cause = bad_checkpoints[case]
        if case == "family":
            cause = "a checkpoint of genvae.models.VAE, but the configured model is VQVAE"
        with pytest.raises(SystemExit) as info:
            main([*args, str(path), *data, *quiet(tmp_path)])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        lines = error_lines(err)
        assert len(lines) == 1 and lines[0].startswith(f"genvae: error: {path}: {cause}"), lines


# ------------------------------------------------------------------------------------ atomic writes
class FailingWrite(Exception):
    pass


def test_an_interrupted_save_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    """A checkpoint IO whose write is interrupted (an exception mid-write) keeps the old file whole."""
    io_plugin = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io_plugin.save_checkpoint({"global_step": 1, "w": torch.ones(1000)}, path)

    def broken_fsync(fd: int) -> None:
        os.ftruncate(fd, 100)  # half a file on disk, then the process "dies"
        raise FailingWrite

    monkeypatch.setattr("genvae.utils.atomic.os.fsync", broken_fsync)
    with pytest.raises(FailingWrite):
        io_plugin.save_checkpoint({"global_step": 2, "w": torch.zeros(1000)}, path)
    loaded = io_plugin.load_checkpoint(path)
    assert loaded["global_step"] == 1 and torch.equal(loaded["w"], torch.ones(1000))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_evaluation_io_drops_model_checkpoint_state(tmp_path: Path) -> None:
    state = {"callbacks": {"ModelCheckpoint{'monitor': None}": {"dirpath": "x"}, "RNGStateCheckpoint": {}}}
    AtomicCheckpointIO().save_checkpoint(state, tmp_path / "a.ckpt")
    assert list(EvaluationCheckpointIO().load_checkpoint(tmp_path / "a.ckpt")["callbacks"]) == [
        "RNGStateCheckpoint"
    ]


def truncate_and_fail(fd: int) -> None:
    """Stands for a process dying mid-save: half of the file on disk, then no more."""
    os.ftruncate(fd, os.fstat(fd).st_size // 2)
    raise FailingWrite


class InterruptedCheckpointIO(AtomicCheckpointIO):
    """:class:`AtomicCheckpointIO` whose second save of ``last.ckpt`` is interrupted mid-write."""

    def __init__(self) -> None:
        super().__init__()
        self.last_saves = 0

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        self.last_saves += Path(path).name == "last.ckpt"
        if self.last_saves == 2 and Path(path).name == "last.ckpt":
            with mock.patch("genvae.utils.atomic.os.fsync", truncate_and_fail):
                super().save_checkpoint(checkpoint, path, storage_options)
        super().save_checkpoint(checkpoint, path, storage_options)


def fit_args(data: Path, dirpath: Path, root: Path, epochs: int) -> list[str]:
    return [
        "fit",
        "--config",
        SMOKE,
        "--data.init_args.root",
        str(data),
        "--data.init_args.attributes",
        "false",
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.limit_train_batches",
        "2",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.logger",
        "false",
        "--trainer.callbacks+=ModelCheckpoint",
        "--trainer.callbacks.dirpath",
        str(dirpath),
        "--trainer.callbacks.save_last",
        "true",
        *quiet(root),
    ]


def test_a_fit_interrupted_while_saving_resumes_from_the_previous_last_ckpt(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    dirpath = tmp_path / "ckpt"
    interrupted = ["--trainer.plugins", f"{__name__}.InterruptedCheckpointIO"]
    with pytest.raises(FailingWrite):
        main([*fit_args(tiny_mnist, dirpath, tmp_path, epochs=3), *interrupted])
    assert read_checkpoint(dirpath / "last.ckpt")["global_step"] == 2  # the save after epoch 1, whole
    assert not [p for p in dirpath.iterdir() if p.name.startswith(".")]  # no temporary file left
    capsys.readouterr()
    main([*fit_args(tiny_mnist, dirpath, tmp_path, epochs=2), "--ckpt_path", "last"])
    out = capsys.readouterr().out
    assert "epoch 2/2 step 4" in out and "epoch 1/2" not in out  # resumed after epoch 1
    assert read_checkpoint(dirpath / "last.ckpt")["global_step"] == 4


# ------------------------------------------------------------------------------------ attribute cache
def flip_bytes_in_values(path: Path, values: torch.Tensor, count: int = 20) -> None:
    """Flip ``count`` bytes inside the stored float32 values of a cache file."""
    raw = bytearray(path.read_bytes())
    start = bytes(raw).find(values.numpy().tobytes())
    assert start >= 0
    for i in range(count):
        raw[start + 4 * i + 1] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_a_damaged_attribute_cache_is_detected_and_recomputed(tmp_path: Path) -> None:
    data_root = write_fake_mnist(tmp_path / "data", n_train=0, n_test=64)
    first = MNISTDataModule(root=str(data_root), source="test")
    images = first.load_split("test")["image"][:, 0]
    values = first.load_split("test")["attributes"]
    path = first.attribute_cache_path("test", images)
    flip_bytes_in_values(path, values)
    assert not torch.equal(torch.load(path, weights_only=True)["attributes"], values)  # loads, but wrong
    with pytest.warns(
        UserWarning, match=rf"{path.name}: attribute cache content does not match its checksum"
    ):
        again = MNISTDataModule(root=str(data_root), source="test").load_split("test")["attributes"]
    assert torch.equal(again, values)
    assert torch.equal(torch.load(path, weights_only=True)["attributes"], values)  # rewritten


KILLED_CACHE_BUILD = """
import os, sys, time
from pathlib import Path
def fsync(fd):
    open(sys.argv[1], "w").close()
    time.sleep(600)
os.fsync = fsync
from genvae.data import MNISTDataModule
MNISTDataModule(root=sys.argv[2], source="test").prepare_data()
"""


def test_a_cache_build_killed_mid_write_leaves_nothing_trusted(tmp_path: Path) -> None:
    data_root = write_fake_mnist(tmp_path / "data", n_train=0, n_test=64)
    marker = tmp_path / "writing"
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_CACHE_BUILD, str(marker), str(data_root)], env=env(), cwd=tmp_path
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), "the cache build never reached its write"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert list(data_root.glob("*.morpho-*.pt")) == []  # only a temporary file is left
    assert list(data_root.glob(".mnist-test.morpho-*.tmp"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = MNISTDataModule(root=str(data_root), source="test").load_split("test")["attributes"]
    assert not [w for w in caught if "attribute cache" in str(w.message)]  # nothing half-written is read
    assert values.shape == (64, 6) and len(list(data_root.glob("*.morpho-*.pt"))) == 1


# ------------------------------------------------------------------------------------ console
NOISE = (
    "tensorboardX",
    "💡 Tip",
    "litlogger",
    "litmodels",
    "LeafSpec",
    "You have overridden `transfer_batch_to_device`",
    "dirpath has changed",
    "Be aware that when using `ckpt_path`",
    "sync_dist=True",
    "Traceback",
)


def test_the_console_of_fit_and_test_holds_no_unactionable_notices(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data_root = write_fake_mnist(tmp_path / "data", n_train=200, n_test=64)
    fit = subprocess.run(
        [GENVAE, "fit", "--config", SMOKE, "--data.init_args.root", str(data_root)]
        + ["--trainer.default_root_dir", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env(),
        cwd=tmp_path,
    )
    console = fit.stdout + fit.stderr
    assert fit.returncode == 0, console[-3000:]
    for noise in NOISE:
        assert noise not in console, noise
    # attributes: a progress bar with count and rate, then one line with the cache path
    assert "mnist train: Morpho-MNIST attributes: 100%" in console and "200/200" in console
    assert "img/s" in console
    cache = next(data_root.glob("mnist-train.morpho-*.pt"))
    assert f"mnist train: attributes of 200 images cached in {cache}" in console
    # the default logger is the chosen CSVLogger
    ckpt = next((tmp_path / "run" / "lightning_logs" / "version_0" / "checkpoints").glob("*.ckpt"))
    assert (tmp_path / "run" / "lightning_logs" / "version_0" / "metrics.csv").is_file()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(
            [
                "test",
                "--config",
                SMOKE,
                "--data.init_args.root",
                str(data_root),
                "--ckpt_path",
                str(ckpt),
                *quiet(tmp_path / "run"),
            ]
        )
    console = capsys.readouterr().out + "".join(f"{w.message}\n" for w in caught)
    for noise in NOISE:
        assert noise not in console, noise
    assert "Morpho-MNIST attributes" not in console  # read from the cache


def test_wandb_logger_is_prepared_before_its_run(tmp_path: Path) -> None:
    logger = WandbLogger(save_dir=str(tmp_path / "runs"), offline=True)
    assert logger._wandb_init.get("anonymous", "unset") is None  # what W&B warns about
    prepare_wandb_logger(logger)
    assert "anonymous" not in logger._wandb_init
    assert (tmp_path / "runs").is_dir()  # W&B finds the git root from there


# ------------------------------------------------------------------ parse errors as one line

# jsonargparse 4.53's messages for `genvae fit --config experiments/vae.yaml <argument>`, as it printed them
UNION_MESSAGE = """Parser key "{section}":
  Does not validate against any of the Union subtypes
  Subtypes: [<class 'lightning.pytorch.core.module.LightningModule'>, <class 'NoneType'>]
  Errors:
    - Problem with given class_path '{class_path}':
        {inner}
    - Expected a <class 'NoneType'>
  Given value type: <class 'jsonargparse._util.NestedArg'>
  Given value: NestedArg(key='x', val='y')"""


@pytest.mark.parametrize(
    ("message", "line"),
    [
        (
            UNION_MESSAGE.format(
                section="data",
                class_path="genvae.data.MNISTDataModule",
                inner="Parser key \"dataset\":\n          Expected a typing.Literal['mnist', 'fashion_mnist']. "
                "Got value: celeba",
            ),
            "data.init_args.dataset: got 'celeba'; allowed values: 'mnist', 'fashion_mnist'",
        ),
        (
            UNION_MESSAGE.format(
                section="data",
                class_path="genvae.data.MNISTDataModule",
                inner="Parser key \"batch_size\":\n          Expected a <class 'int'>. Got value: many",
            ),
            "data.init_args.batch_size: expected int, got 'many'",
        ),
        (
            UNION_MESSAGE.format(
                section="model", class_path="genvae.models.VAE", inner="Option 'betta' is not accepted"
            ),
            "model.init_args.betta: not an argument of genvae.models.VAE",
        ),
        (
            'Parser key "model":\n\n  - Expected a path but genvae.models.Nope either not accessible or invalid\n'
            + UNION_MESSAGE.format(
                section="model",
                class_path="genvae.models.Nope",
                inner="module 'genvae.models' has no attribute 'Nope'",
            ).split("\n", 1)[1],
            "model: class_path 'genvae.models.Nope': module 'genvae.models' has no attribute 'Nope'",
        ),
        (
            'Parser key "trainer.max_epochs":\n  Does not validate against any of the Union subtypes\n'
            "  Subtypes: [<class 'int'>, <class 'NoneType'>]\n  Errors:\n    - Expected a <class 'int'>\n"
            "    - Expected a <class 'NoneType'>\n  Given value type: <class 'str'>\n  Given value: x",
            "trainer.max_epochs: expected int, got 'x'",
        ),
        ("Parser key \"config\": File does not exist: '/no.yaml'", "config: File does not exist: '/no.yaml'"),
        ("unrecognized arguments: --nokey 3", "unrecognized arguments: --nokey 3"),
    ],
)
def test_parser_errors_condense_to_the_key_and_the_cause(message: str, line: str) -> None:
    from genvae.errors import condense_parser_error

    assert condense_parser_error(message) == line

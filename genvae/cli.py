"""The ``genvae`` command: a LightningCLI with subcommands fit / validate / test / predict.

Model family and datamodule are chosen by ``class_path`` in YAML (``model.class_path: genvae.models.VAE``).
The datamodule's ``image_shape`` is linked into the model after the datamodule is built.

Every run also gets: the resolved config saved next to the logs and, with a ``WandbLogger``, sent to W&B
(:class:`SaveConfigToLoggers`); a stop at the first NaN/inf loss (:class:`FiniteLossGuard`); generator
states in checkpoints for exact resumption (:class:`RNGStateCheckpoint`); checkpoints written atomically
(:class:`~genvae.checkpoints.AtomicCheckpointIO`); a ``CSVLogger`` under ``trainer.default_root_dir`` when
the config names no logger; and a ``--ckpt_path`` checked before use (:func:`~genvae.checkpoints.read_checkpoint`:
one-line errors, and no checkpoint of another model family silently replacing the configured model).
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import lightning as L
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities import rank_zero_only

from genvae.callbacks.guard import FiniteLossGuard, NonFiniteLossError
from genvae.callbacks.metrics_json import MetricsJSON
from genvae.callbacks.predictions import PredictionWriter
from genvae.callbacks.progress import EpochSummary, LoggingStepProgressBar
from genvae.callbacks.rng import RNGStateCheckpoint
from genvae.callbacks.timing import EvaluationTimer
from genvae.checkpoints import AtomicCheckpointIO, EvaluationCheckpointIO, read_checkpoint
from genvae.errors import condense_parser_error, exit_on_config_error
from genvae.utils.atomic import atomic_write_bytes
from genvae.utils.console import silence_unactionable_notices
from genvae.utils.lightning import NoOpProfiler, use_lean_callback_dispatch
from genvae.utils.numerics import flush_denormals

WANDB_CONFIG_FILENAME = "genvae_config.yaml"  # W&B keeps its own config.yaml in the same folder


class SaveConfigToLoggers(SaveConfigCallback):
    """Save ``config.yaml`` to the log dir and, for each ``WandbLogger``, send the full resolved config.

    The config goes to the W&B run's config panel (nested, as in the YAML) and as ``genvae_config.yaml``
    into the run's files (a YAML that ``genvae fit --config`` takes back), which offline runs keep for
    ``wandb sync``. Lightning calls :meth:`save_config` on global rank 0 only and does not add this
    callback under ``fast_dev_run``; nothing in it is a collective call.
    """

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        wandb_loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if not wandb_loggers:
            return
        text = self.parser.dump(self.config, skip_none=False)
        resolved = yaml.safe_load(io.StringIO(text))
        for logger in wandb_loggers:
            run = logger.experiment
            run.config.update(resolved, allow_val_change=True)
            atomic_write_bytes(Path(run.dir) / WANDB_CONFIG_FILENAME, text.encode())


# Callbacks every run gets, after those of ``trainer.callbacks`` (which a later ``--config`` replaces whole).
DEFAULT_CALLBACKS: tuple[type[L.Callback], ...] = (
    EpochSummary,
    FiniteLossGuard,
    RNGStateCheckpoint,
    MetricsJSON,
    PredictionWriter,  # acts in predict only: <log dir>/predictions.npz
)


def default_callbacks(configured: list[L.Callback]) -> list[L.Callback]:
    """A fresh instance of each :data:`DEFAULT_CALLBACKS` class that ``configured`` does not already hold.

    A callback listed in the config keeps its own arguments and is not added twice (two
    ``RNGStateCheckpoint`` would clash in the checkpoint, two ``MetricsJSON`` would write and print twice).
    """
    return [cls() for cls in DEFAULT_CALLBACKS if not any(isinstance(cb, cls) for cb in configured)]


# ``--ckpt_path`` values that Lightning resolves itself (to a file that its own callbacks wrote).
SPECIAL_CKPT_PATHS = ("last", "best", "hpc")


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def prepare_wandb_logger(logger: WandbLogger) -> None:
    """Set up a ``WandbLogger`` before its run starts, avoiding two W&B warnings at their source.

    Lightning always passes ``anonymous=None`` to ``wandb.init``, which W&B (>= 0.19) reports as "The
    anonymous setting has no effect"; and W&B looks for the git repository from the run folder
    (``save_dir``) before creating it ("git root runs does not exist"), recording no commit.
    """
    init = logger._wandb_init  # the keyword arguments of wandb.init
    if init.get("anonymous") is None:
        init.pop("anonymous", None)
    if init.get("dir"):
        Path(init["dir"]).mkdir(parents=True, exist_ok=True)


# One line per subcommand for ``--help``: what it does in genvae, and the docs page that explains it.
SUBCOMMAND_HELP: dict[str, str] = {
    "fit": "Train a model from its experiment YAML (--ckpt_path resumes a run). Explained in docs/models.md.",
    "validate": "Evaluate a checkpoint on the validation set. Explained in docs/evaluation.md.",
    "test": "Evaluate a checkpoint on the test set; add an overlay of experiments/eval/ for every metric. "
    "Explained in docs/evaluation.md.",
    "predict": "Write the latents, codes and attributes of every test digit to predictions.npz. "
    "Explained in docs/evaluation.md.",
}
DESCRIPTION = (
    "genvae: train, evaluate and compare generative autoencoders on MNIST-family images (docs/index.md). "
    "`genvae edit --help`: attribute edits in physical units (docs/latent-control.md)."
)


class GenVAEArgumentParser(LightningArgumentParser):
    """LightningCLI's parser, whose errors are one line: ``genvae: error: <key>: <cause>`` and where the
    options are explained, exit status 2 (:func:`~genvae.errors.condense_parser_error`).

    jsonargparse prints the parser's usage (some 60 lines for ``genvae fit``) before a nested explanation of
    every alternative it tried; the line that matters came last. ``JSONARGPARSE_DEBUG`` set, or a parser
    that does not exit on errors, keeps jsonargparse's own behaviour.
    """

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        print(f"genvae: error: {condense_parser_error(message)} (options: {prog} --help)", file=sys.stderr)
        raise SystemExit(2)


class GenVAECLI(LightningCLI):
    """LightningCLI with the data -> model links genvae relies on, the defaults of every run, and
    one-line parse errors (:class:`GenVAEArgumentParser`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parser_class", GenVAEArgumentParser)
        super().__init__(*args, **kwargs)

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        """LightningCLI's subcommands, each described (in its own ``--help`` and in ``genvae --help``) by
        :data:`SUBCOMMAND_HELP` instead of the first line of the ``Trainer`` method's docstring."""
        for name, text in SUBCOMMAND_HELP.items():
            kwargs[name] = {"description": text, **kwargs.get(name, {})}
        super()._add_subcommands(parser, **kwargs)
        for choice in parser._subcommands_action._choices_actions:  # the lines of `genvae --help`
            choice.help = SUBCOMMAND_HELP.get(choice.dest, choice.help)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.image_shape", "model.init_args.image_shape", apply_on="instantiate")
        parser.add_argument(
            "--flush_denormal",
            type=bool,
            default=True,
            help="Flush subnormal floats to zero in CPU computation (true: steps keep their speed as training "
            "goes on; false: exact IEEE subnormals, PyTorch's default). See genvae.utils.numerics.",
        )

    def before_instantiate_classes(self) -> None:
        """Apply the process-wide settings of the config before anything is built or computed."""
        flush_denormals(self._get(self.config, "flush_denormal", default=True))

    def _parse_ckpt_path(self) -> None:
        """Check ``--ckpt_path`` before LightningCLI merges the checkpoint's hyperparameters into the config.

        The merge (``LightningCLI._parse_ckpt_path``) replaces the configured model class by the one recorded
        in the checkpoint; a checkpoint of another class is refused here, naming both.
        """
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        special = (
            ckpt_path in SPECIAL_CKPT_PATHS
            or "://" in str(ckpt_path)
            or str(ckpt_path).startswith("registry")
        )
        if ckpt_path and not (special and not Path(ckpt_path).exists()):
            model_class = self.config[subcommand].get("model", {}).get("class_path")
            read_checkpoint(ckpt_path, expected_class=model_class, key="--ckpt_path")
        super()._parse_ckpt_path()

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        """The trainer, with genvae's defaults added to what the config sets.

        - :func:`default_callbacks` after the configured callbacks (LightningCLI appends
          ``trainer_defaults["callbacks"]`` to ``trainer.callbacks``, whatever the config sets there), and
          a :class:`~genvae.callbacks.progress.LoggingStepProgressBar` unless the config names a progress
          bar or disables it;
        - :class:`AtomicCheckpointIO` unless the config gives a checkpoint IO plugin;
        - a ``CSVLogger`` in ``default_root_dir`` (as Lightning's fallback, but chosen, not warned about)
          when the config leaves ``trainer.logger`` unset or ``true``;
        - :class:`~genvae.utils.lightning.NoOpProfiler` when it sets no ``trainer.profiler``, and with it
          :func:`~genvae.utils.lightning.use_lean_callback_dispatch` (only the hooks a callback defines);
        - in ``test``, an :class:`~genvae.callbacks.timing.EvaluationTimer` first among the callbacks (the
          seconds of each evaluation callback, into the metrics JSON);
        - outside ``fit``, no ``ModelCheckpoint`` (it saves nothing there) and, through
          :class:`EvaluationCheckpointIO`, no restoring of its state from ``--ckpt_path`` (which only
          warned that "the dirpath has changed").
        """
        trainer_config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        configured = _as_list(trainer_config.get("callbacks"))
        fitting = self.subcommand in (None, "fit")
        if not fitting:
            configured = [cb for cb in configured if not isinstance(cb, ModelCheckpoint)]
            kwargs["callbacks"], kwargs["enable_checkpointing"] = configured, False
        defaults = default_callbacks(configured)
        if fitting:  # they act in test and predict only; in fit they would only add hook calls to every step
            defaults = [cb for cb in defaults if not isinstance(cb, MetricsJSON | PredictionWriter)]
        wants_bar = trainer_config.get("enable_progress_bar") in (None, True)
        if wants_bar and not any(isinstance(cb, ProgressBar) for cb in configured):
            defaults.append(LoggingStepProgressBar())
        self.trainer_defaults["callbacks"] = defaults
        plugins = _as_list(trainer_config.get("plugins"))
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO() if fitting else EvaluationCheckpointIO()]
        if trainer_config.get("logger") in (None, True):
            kwargs["logger"] = CSVLogger(save_dir=trainer_config.get("default_root_dir") or os.getcwd())
        if trainer_config.get("profiler") is None:
            kwargs["profiler"] = NoOpProfiler()
            use_lean_callback_dispatch()  # acts for trainers with the NoOpProfiler only
        trainer = super().instantiate_trainer(**kwargs)
        if self.subcommand == "test":  # first, so that it wraps the other callbacks' hooks before they run
            trainer.callbacks.insert(0, EvaluationTimer())
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                prepare_wandb_logger(logger)
        return trainer


def build_cli(args: list[str] | None = None, run: bool = True) -> GenVAECLI:
    """The ``genvae`` LightningCLI on ``args``; with ``run=False`` (no subcommand in ``args``) it only builds
    model, datamodule and trainer from the config, as ``genvae fit`` would (the training benchmark's plain
    loop uses this to train the very model a user's YAML describes)."""
    return GenVAECLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,  # one optimizer story: the model's lr / weight_decay
        save_config_callback=SaveConfigToLoggers,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"callbacks": []},  # filled by GenVAECLI.instantiate_trainer
        parser_kwargs={"description": DESCRIPTION, "prog": "genvae"},  # also under `python -m genvae`
        args=args,
        run=run,
    )


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``genvae`` console script (``args`` = command line without the program name)."""
    argv = sys.argv[1:] if args is None else args
    silence_unactionable_notices()
    if argv[:1] == ["edit"]:  # attribute edits in physical units: genvae/commands/edit.py
        from genvae.commands.edit import main as edit

        return edit(argv[1:])
    if argv[:1] == ["sample"]:  # digits of a requested class and attributes: genvae/commands/sample.py
        from genvae.commands.sample import main as sample

        return sample(argv[1:])
    try:
        build_cli(args)
    except NonFiniteLossError as err:
        if rank_zero_only.rank == 0:
            print(f"genvae: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    except Exception as err:
        exit_on_config_error(err)

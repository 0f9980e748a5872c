"""The ``genvae`` command: a LightningCLI with subcommands fit / validate / test / predict.

Model family and datamodule are chosen by ``class_path`` in YAML (``model.class_path: genvae.models.VAE``).
The datamodule's ``image_shape`` is linked into the model after the datamodule is built.

Every run also gets: the resolved config saved next to the logs and, with a ``WandbLogger``, sent to W&B
(:class:`SaveConfigToLoggers`); a stop at the first NaN/inf loss (:class:`FiniteLossGuard`); generator
states in checkpoints for exact resumption (:class:`RNGStateCheckpoint`).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from genvae.callbacks import EpochSummary, MetricsJSON
from genvae.callbacks.guard import FiniteLossGuard, NonFiniteLossError
from genvae.callbacks.predictions import PredictionWriter
from genvae.callbacks.rng import RNGStateCheckpoint
from genvae.errors import ConfigError
from genvae.utils.atomic import atomic_write_bytes

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


class GenVAECLI(LightningCLI):
    """LightningCLI with the data -> model links genvae relies on, and the default callbacks of every run."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.image_shape", "model.init_args.image_shape", apply_on="instantiate")

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        """The trainer, with :func:`default_callbacks` appended to the configured callbacks.

        LightningCLI appends ``trainer_defaults["callbacks"]`` to ``trainer.callbacks`` (whatever the config
        sets there); they are computed here, once the configured callbacks are instantiated.
        """
        trainer_config = self._get(self.config_init, "trainer", default={})
        configured = kwargs.get("callbacks", trainer_config.get("callbacks"))
        if configured is None:
            configured = []
        elif not isinstance(configured, list):
            configured = [configured]
        self.trainer_defaults["callbacks"] = default_callbacks(configured)
        return super().instantiate_trainer(**kwargs)


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``genvae`` console script (``args`` = command line without the program name)."""
    argv = sys.argv[1:] if args is None else args
    if argv[:1] == ["edit"]:  # attribute edits in physical units: genvae/commands/edit.py
        from genvae.commands.edit import main as edit

        return edit(argv[1:])
    try:
        GenVAECLI(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,  # one optimizer story: the model's lr / weight_decay
            save_config_callback=SaveConfigToLoggers,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"callbacks": []},  # filled by GenVAECLI.instantiate_trainer
            args=args,
        )
    except NonFiniteLossError as err:
        if rank_zero_only.rank == 0:
            print(f"genvae: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    except Exception as err:
        config_error = find_config_error(err)
        if config_error is None:
            raise
        print(f"genvae: error: {config_error}", file=sys.stderr)
        raise SystemExit(2) from None


def find_config_error(err: BaseException | None) -> ConfigError | None:
    """The :class:`ConfigError` behind ``err``, also when jsonargparse wrapped it during instantiation."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, ConfigError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None

"""The ``genvae`` command: a LightningCLI with subcommands fit / validate / test / predict.

Model family and datamodule are chosen by ``class_path`` in YAML (``model.class_path: genvae.models.VAE``).
The datamodule's ``image_shape`` is linked into the model after the datamodule is built.
"""

from __future__ import annotations

import sys

import lightning as L
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from genvae.callbacks import EpochSummary
from genvae.errors import ConfigError


class GenVAECLI(LightningCLI):
    """LightningCLI with the data -> model links genvae relies on."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.image_shape", "model.init_args.image_shape", apply_on="instantiate")


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``genvae`` console script (``args`` = command line without the program name)."""
    try:
        GenVAECLI(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,  # one optimizer story: the model's lr / weight_decay
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"callbacks": [EpochSummary()]},
            args=args,
        )
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

"""Checkpoint files: validation with one-line errors, and atomic saving.

:func:`read_checkpoint` opens a checkpoint path given by the user (``--ckpt_path``,
``VQPrior.vqvae_checkpoint``, ``SampleQuality.classifier_checkpoint``) and turns every way it can be wrong
into a :class:`~genvae.errors.ConfigError` ``"<path>: <cause>"``: missing, not a PyTorch file, truncated,
refused by ``torch.load(weights_only=True)``, not a Lightning checkpoint of a model, or written by another
model class than the one configured. LightningCLI records the class as ``hyper_parameters["_class_path"]``
(``save_hyperparameters`` under the CLI's instantiator) and, given ``--ckpt_path``, merges the
checkpoint's hyperparameters into the configured model (``LightningCLI._parse_ckpt_path`` in
``lightning/pytorch/cli.py``), so a checkpoint of another family would silently replace the configured one.

:class:`AtomicCheckpointIO` writes checkpoints through a temporary file in the destination folder, flushed
to disk, then renamed over the destination (:func:`genvae.utils.atomic.atomic_write_bytes`): a run killed
while saving leaves the previous ``last.ckpt`` whole. Lightning's own ``TorchCheckpointIO`` writes through
an fsspec transaction whose temporary file lives in the system temp folder, so the final move is a copy
(not atomic) whenever that folder is on another device, and nothing is flushed to disk.

This module sits below ``models``: it imports no genvae model; classes to check against come as arguments.
"""

from __future__ import annotations

import importlib
import io
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from genvae.errors import ConfigError
from genvae.utils.atomic import atomic_write_bytes

__all__ = ["AtomicCheckpointIO", "EvaluationCheckpointIO", "checkpoint_class_path", "read_checkpoint"]

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format since torch 1.6
_PICKLE_PROTOCOL_2_PLUS = b"\x80"  # the legacy torch.save format starts with a pickle protocol opcode


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _unpickler_complaint(err: BaseException) -> str | None:
    """What torch's weights-only unpickler refused (``module.Class`` or the opcode), if its message says."""
    text = " ".join(str(err).split())
    if "Unsupported global: GLOBAL " in text:
        return text.split("Unsupported global: GLOBAL ", 1)[1].split(" ", 1)[0]
    if "WeightsUnpickler error:" in text:
        return (
            text.split("WeightsUnpickler error:", 1)[1].split(" Check the documentation", 1)[0].strip()
            or None
        )
    return None


def _load(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, or a ConfigError saying why the file is unusable."""
    with path.open("rb") as fh:
        head = fh.read(4)
    if head.startswith(_ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            raise ConfigError(f"{path}: truncated or damaged checkpoint (its zip directory is missing)")
    elif not head.startswith(_PICKLE_PROTOCOL_2_PLUS):
        raise ConfigError(f"{path}: not a PyTorch checkpoint (neither a torch zip archive nor a pickle)")
    try:
        with warnings.catch_warnings():  # torch's note on pickle protocols: the error below says more
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights_only" not in str(err) and "Weights only" not in str(err):
            raise ConfigError(f"{path}: damaged checkpoint ({_first_line(err)})") from None
        culprit = _unpickler_complaint(err)
        detail = f" ({culprit})" if culprit else ""
        raise ConfigError(
            f"{path}: refused by torch.load(weights_only=True){detail}; genvae loads only checkpoints of "
            "tensors and plain containers, which need no code to unpickle"
        ) from None
    except Exception as err:  # truncated members, bad records, ...: torch raises RuntimeError or OSError
        raise ConfigError(f"{path}: truncated or damaged checkpoint ({_first_line(err)})") from None


def checkpoint_class_path(checkpoint: dict[str, Any]) -> str | None:
    """The model class recorded by LightningCLI in a loaded checkpoint, or None when it recorded none."""
    hparams = checkpoint.get("hyper_parameters")
    class_path = hparams.get("_class_path") if isinstance(hparams, dict) else None
    return class_path if isinstance(class_path, str) else None


def _import_class(class_path: str) -> type | None:
    module, _, name = class_path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None
    return found if isinstance(found, type) else None


def _same_family(recorded: str, expected: str | type) -> bool:
    """Whether the recorded class path names ``expected`` or a subclass of it (aliases resolved)."""
    expected_path = (
        expected if isinstance(expected, str) else f"{expected.__module__}.{expected.__qualname__}"
    )
    if recorded == expected_path:
        return True
    recorded_cls = _import_class(recorded)
    expected_cls = _import_class(expected_path) if isinstance(expected, str) else expected
    return recorded_cls is not None and expected_cls is not None and issubclass(recorded_cls, expected_cls)


def read_checkpoint(
    path: str | Path, *, expected_class: str | type | None = None, key: str | None = None
) -> dict[str, Any]:
    """Load and check a Lightning checkpoint of a genvae model; a ConfigError ``"<path>: <cause>"`` otherwise.

    Args:
        path: the checkpoint file.
        expected_class: the model class (or its dotted path) the checkpoint must have been written by;
            checked against ``hyper_parameters["_class_path"]`` when the checkpoint records one.
        key: the config key or option that gave ``path``, named at the end of the message.

    Returns:
        The checkpoint dict (loaded on CPU with ``weights_only=True``), holding ``state_dict`` and
        ``hyper_parameters``.
    """
    path = Path(path)
    given = f" (given as {key})" if key else ""
    if not path.exists():
        raise ConfigError(f"{path}: checkpoint file not found{given}")
    if not path.is_file():
        raise ConfigError(f"{path}: not a file{given}")
    try:
        checkpoint = _load(path)
    except ConfigError as err:
        raise ConfigError(f"{err}{given}") from None
    except OSError as err:  # permissions, I/O errors
        raise ConfigError(f"{path}: cannot read ({_first_line(err)}){given}") from None
    missing = [
        name
        for name in ("state_dict", "hyper_parameters")
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get(name), dict)
    ]
    if missing:
        raise ConfigError(
            f"{path}: not a Lightning checkpoint of a genvae model (no {' or '.join(missing)}){given}"
        )
    recorded = checkpoint_class_path(checkpoint)
    if expected_class is not None and recorded is not None and not _same_family(recorded, expected_class):
        expected = expected_class if isinstance(expected_class, str) else expected_class.__qualname__
        raise ConfigError(
            f"{path}: a checkpoint of {recorded}, but the configured model is {expected}; "
            f"use the config of the run that wrote it{given}"
        )
    return checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic: temporary file in the same folder, fsync, rename.

    Remote paths (``s3://`` and the like) keep Lightning's own writer.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(Path(path), buffer.getbuffer())


class EvaluationCheckpointIO(AtomicCheckpointIO):
    """:class:`AtomicCheckpointIO` for ``validate`` / ``test`` / ``predict``: loads without checkpoint-callback state.

    Lightning restores every callback's state from ``--ckpt_path`` in every stage. Outside ``fit`` the CLI
    runs no ``ModelCheckpoint`` (it would save nothing), so the state a fit's ``ModelCheckpoint`` left in the
    file has no owner; Lightning would warn that the callback is missing (or, with one present, that "the
    dirpath has changed"). Dropping that state on load keeps the restore to what these stages use.
    """

    def load_checkpoint(
        self, path: _PATH, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        kwargs = {} if map_location is None else {"map_location": map_location}
        checkpoint = super().load_checkpoint(path, weights_only=weights_only, **kwargs)
        states = checkpoint.get("callbacks")
        if isinstance(states, dict):
            checkpoint["callbacks"] = {
                key: state for key, state in states.items() if not str(key).startswith("ModelCheckpoint")
            }
        return checkpoint

"""Opt-in speed switches for training and evaluation: ``torch.compile`` and the channels_last memory format.

Both are options of one callback, set from YAML::

    trainer:
      callbacks:
        - class_path: genvae.callbacks.SpeedUp
          init_args: {compile: true, channels_last: true}

Design — a callback, so that models, their hyperparameters and their checkpoints stay exactly as they are:

- ``compile``: at ``setup`` the model's networks are compiled *in place* with ``nn.Module.compile()``:
  the backbone's ``encoder`` and ``decoder`` and, when the model has them, its ``encoder_head`` and
  ``decoder_head`` (:func:`compile_networks`). In-place compilation wraps a module's call, not the module,
  so parameter names keep no ``_orig_mod.`` prefix: ``state_dict`` and checkpoints are those of an
  uncompiled model and reload into one. The model's own Python — loss terms, ``self.log``, schedules read
  from ``global_step`` — stays eager; compiling it would recompile at every new step value. The first
  steps are slow (compilation); on CPU, inductor needs a C++ compiler, and a failure surfaces at the first
  forward with torch's own message.
- ``channels_last``: at ``setup`` the model's 4-d parameters and buffers are converted to
  ``torch.channels_last`` (:func:`to_channels_last`), and at the start of every train / validation / test /
  predict batch the 4-d ``batch["image"]`` is too (the batch dict is changed in place, after it reached
  the device). Results equal the default layout up to floating-point rounding.

Whether either helps depends on the hardware: ``benchmarks/bench_training.py`` measures both.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

#: networks compiled by :func:`compile_networks`, as attribute paths on the LightningModule
COMPILED_NETWORKS = ("backbone.encoder", "backbone.decoder", "encoder_head", "decoder_head")


def compile_networks(model: nn.Module, **compile_kwargs: Any) -> list[str]:
    """Compile the model's encoder/decoder networks in place; returns the attribute paths compiled.

    ``compile_kwargs`` go to ``torch.compile`` (``mode``, ``dynamic``, ``backend``, ...). Parameter names
    and the ``state_dict`` do not change.
    """
    compiled = []
    for path in COMPILED_NETWORKS:
        module: Any = model
        for name in path.split("."):
            module = getattr(module, name, None)
        if isinstance(module, nn.Module):
            module.compile(**compile_kwargs)
            compiled.append(path)
    return compiled


def to_channels_last(model: nn.Module) -> nn.Module:
    """Convert the 4-d parameters and buffers of ``model`` to channels_last, in place."""
    return model.to(memory_format=torch.channels_last)


def batch_to_channels_last(batch: Any) -> Any:
    """Put a dict batch's 4-d ``image`` tensor into channels_last memory format (in place; also returned)."""
    if isinstance(batch, dict):
        image = batch.get("image")
        if isinstance(image, torch.Tensor) and image.dim() == 4:
            batch["image"] = image.contiguous(memory_format=torch.channels_last)
    return batch


class SpeedUp(L.Callback):
    """Compile the model's networks and/or run them in channels_last memory format (see the module doc).

    Args:
        compile: compile the encoder/decoder networks in place with ``torch.compile``.
        channels_last: convert the model and every batch's images to ``torch.channels_last``.
        compile_mode: ``torch.compile`` mode (``default``, ``reduce-overhead``, ``max-autotune``, ...).
        dynamic: ``torch.compile``'s ``dynamic`` (None = let torch decide after a shape change).
        compile_backend: ``torch.compile`` backend (``inductor``; ``aot_eager`` traces without generating
            code, for checking a model compiles).
    """

    def __init__(
        self,
        compile: bool = False,
        channels_last: bool = False,
        compile_mode: str | None = None,
        dynamic: bool | None = None,
        compile_backend: str = "inductor",
    ) -> None:
        self.compile = compile
        self.channels_last = channels_last
        self.compile_mode = compile_mode
        self.dynamic = dynamic
        self.compile_backend = compile_backend
        self._done: set[int] = set()  # ids of modules already converted (setup runs once per stage)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if id(pl_module) in self._done:
            return
        self._done.add(id(pl_module))
        if self.channels_last:
            to_channels_last(pl_module)
        if self.compile:
            compile_networks(
                pl_module, mode=self.compile_mode, dynamic=self.dynamic, backend=self.compile_backend
            )

    def _convert(self, batch: Any) -> None:
        if self.channels_last:
            batch_to_channels_last(batch)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._convert(batch)

    def on_validation_batch_start(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._convert(batch)

    def on_test_batch_start(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._convert(batch)

    def on_predict_batch_start(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._convert(batch)

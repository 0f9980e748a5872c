"""Random-number-generator state in checkpoints, so a resumed run draws the same noise as an unbroken one.

Lightning restores weights, optimizer, loop counters and (through ``TensorBatchLoader.state_dict``) the
data order, but not the generators that VAEs sample from. This callback stores them in every checkpoint
as plain tensors and ints (loadable with ``torch.load(weights_only=True)``) and puts them back when training
starts again, after the sanity check (which Lightning runs with the generators isolated).

Validation during fit is isolated the same way: the generators are put back after each validation run, so
the training noise does not depend on how often, or whether, validation ran. That is what makes a resume
from a checkpoint taken at the last batch of an epoch exact: Lightning does not re-run that epoch's
validation after such a resume.
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and (when present) CUDA generator states, as checkpoint-safe values."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    saved = state["numpy"]
    keys = saved["keys"].numpy().astype(np.uint32)
    np.random.set_state((saved["kind"], keys, saved["pos"], saved["has_gauss"], saved["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGStateCheckpoint(L.Callback):
    """Save the generator states with each checkpoint, restore them on resume, isolate validation.

    Every rank seeds its generators identically (``seed_everything``) and draws the same shapes, so rank 0's
    state, which is the one checkpointed, stands for all ranks.
    """

    def __init__(self) -> None:
        self._to_restore: dict[str, Any] | None = None
        self._before_validation: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return capture_rng_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._to_restore is not None:
            restore_rng_state(self._to_restore)
            self._to_restore = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._before_validation = capture_rng_state()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._before_validation is not None:
            restore_rng_state(self._before_validation)
            self._before_validation = None

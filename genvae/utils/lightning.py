"""Lightning glue shared by genvae's models, callbacks and CLI.

- :func:`is_logging_step`: whether Lightning writes step metrics to its loggers after the current training
  step — the one place genvae reads it (step logging, the NaN guard's flag, the progress bar's redraw).
- :class:`NoOpProfiler`: a profiler that costs nothing. The default ``PassThroughProfiler`` still builds a
  generator-based context manager for every hook call (about 200 per training step with a dozen
  callbacks), which shows up in the step time of a small model; this one hands back one shared
  ``contextlib.nullcontext``. ``genvae`` uses it when the config sets no ``trainer.profiler``; any real
  profiler (``simple``, ``advanced``, ``pytorch``) replaces it as usual.
- :func:`needs_automatic_optimization` and :func:`carry_optimizer_steps`: genvae's models step their
  optimizer themselves (manual optimization) except where the trainer asks for what only Lightning's
  automatic loop implements; a checkpoint written under one loop resumes under the other.
"""

from __future__ import annotations

import contextlib
import copy
import weakref
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import GradientAccumulationScheduler, ModelCheckpoint
from lightning.pytorch.profilers import PassThroughProfiler

_NULL = contextlib.nullcontext()


class NoOpProfiler(PassThroughProfiler):
    """:class:`~lightning.pytorch.profilers.PassThroughProfiler` without the per-call context manager."""

    def profile(self, action_name: str) -> contextlib.nullcontext:  # type: ignore[override]
        return _NULL


def is_logging_step(trainer: L.Trainer) -> bool:
    """Whether Lightning logs step metrics after this training step: every ``log_every_n_steps`` optimizer
    steps, every step under ``fast_dev_run`` (Lightning's own predicate, ``should_update_logs``)."""
    return bool(trainer.fast_dev_run) or trainer._logger_connector.should_update_logs


_AUTOMATIC: weakref.WeakKeyDictionary[L.Trainer, bool] = weakref.WeakKeyDictionary()


def needs_automatic_optimization(trainer: L.Trainer) -> bool:
    """Whether ``trainer`` asks for what only Lightning's automatic optimization implements: gradient
    clipping (``gradient_clip_val``) or accumulation (``accumulate_grad_batches``,
    ``GradientAccumulationScheduler``), which Lightning refuses under manual optimization, or a
    ``ModelCheckpoint`` on a ``train_time_interval``, which its manual-optimization path ignores.

    Decided once per trainer (Lightning reads the mode a dozen times per step)."""
    decided = _AUTOMATIC.get(trainer)
    if decided is None:
        decided = bool(trainer.gradient_clip_val) or trainer.accumulate_grad_batches != 1
        decided = decided or any(
            isinstance(c, GradientAccumulationScheduler)
            or (isinstance(c, ModelCheckpoint) and c._train_time_interval is not None)
            for c in trainer.callbacks
        )
        _AUTOMATIC[trainer] = decided
    return decided


_AUTOMATIC_STEPS = "epoch_loop.automatic_optimization.optim_progress"
_MANUAL_STEPS = "epoch_loop.manual_optimization.optim_step_progress"


def carry_optimizer_steps(checkpoint: dict[str, Any], automatic: bool) -> None:
    """Hand a checkpoint's optimizer-step count to the loop that resumes it.

    Lightning counts optimizer steps (``trainer.global_step``: ``max_steps``, logging steps, checkpoint
    names) in the loop that made them, automatic or manual. A checkpoint written under the other one — a
    genvae checkpoint from before its models stepped manually, or a manual run resumed with
    ``gradient_clip_val`` — would restart the count at 0; its count is copied into the resuming loop's
    (in place, when that loop's count is 0).
    """
    fit = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    if _AUTOMATIC_STEPS not in fit or _MANUAL_STEPS not in fit:
        return
    automatic_steps = fit[_AUTOMATIC_STEPS]["optimizer"]["step"]
    manual_steps = fit[_MANUAL_STEPS]
    if automatic and automatic_steps["total"]["completed"] == 0:
        fit[_AUTOMATIC_STEPS]["optimizer"]["step"] = copy.deepcopy(manual_steps)
    elif not automatic and manual_steps["total"]["completed"] == 0:
        fit[_MANUAL_STEPS] = copy.deepcopy(automatic_steps)

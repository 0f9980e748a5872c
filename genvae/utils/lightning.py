"""Lightning glue shared by genvae's models, callbacks and CLI.

- :func:`is_logging_step`: whether Lightning writes step metrics to its loggers after the current training
  step — the one place genvae reads it (step logging, the NaN guard's flag, the progress bar's redraw) —
  and :func:`log_step_metrics`, which writes a step's values where Lightning would have put them.
- :class:`NoOpProfiler`: a profiler that costs nothing. The default ``PassThroughProfiler`` still builds a
  generator-based context manager for every hook call (about 200 per training step with a dozen
  callbacks), which shows up in the step time of a small model; this one hands back one shared
  ``contextlib.nullcontext``. ``genvae`` uses it when the config sets no ``trainer.profiler``; any real
  profiler (``simple``, ``advanced``, ``pytorch``) replaces it as usual.
- :func:`needs_automatic_optimization` and :func:`carry_optimizer_steps`: genvae's models step their
  optimizer themselves (manual optimization) except where the trainer asks for what only Lightning's
  automatic loop implements; a checkpoint written under one loop resumes under the other.
- :func:`use_lean_callback_dispatch`: Lightning calls every hook of every callback, including the empty
  ones a callback inherits from ``Callback``, five times per training step; under the :class:`NoOpProfiler`
  genvae's trainers call only the hooks a callback defines (:func:`defines_hook`, also what
  ``genvae.callbacks.timing.EvaluationTimer`` times).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import weakref
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import (
    Checkpoint,
    EarlyStopping,
    GradientAccumulationScheduler,
    ModelCheckpoint,
)
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.trainer import call as lightning_call
from torch import Tensor

_NULL = contextlib.nullcontext()


class NoOpProfiler(PassThroughProfiler):
    """:class:`~lightning.pytorch.profilers.PassThroughProfiler` without the per-call context manager."""

    def profile(self, action_name: str) -> contextlib.nullcontext:  # type: ignore[override]
        return _NULL


def is_logging_step(trainer: L.Trainer) -> bool:
    """Whether Lightning logs step metrics after this training step: every ``log_every_n_steps`` optimizer
    steps, every step under ``fast_dev_run`` (Lightning's own predicate, ``should_update_logs``)."""
    return bool(trainer.fast_dev_run) or trainer._logger_connector.should_update_logs


def log_step_metrics(
    trainer: L.Trainer, values: dict[str, float], tensors: dict[str, Tensor], prog_bar: set[str]
) -> None:
    """Write one training step's ``values`` where Lightning puts a value logged with ``on_step=True`` at a
    logging step: every logger (with Lightning's step and ``epoch`` column), ``trainer.logged_metrics``,
    ``trainer.progress_bar_metrics`` (the keys in ``prog_bar``) and ``trainer.callback_metrics`` (as the
    0-dim ``tensors`` where given, as Lightning keeps them).

    Why not ``self.log``: each call walks Lightning's result collection (``_ResultCollection.log``, then
    ``_ResultMetric.to`` over every attribute of the stored metric), about 0.3 ms of host time per term on
    this project's CPU, and a logged step value stays in the collection, to be converted for the progress
    bar at every later step. Written here, a logging step costs one write per logger.
    """
    connector = trainer._logger_connector
    connector.log_metrics(values)  # loggers and logged_metrics; nothing without loggers, as Lightning
    connector._progress_bar_metrics.update({key: values[key] for key in prog_bar if key in values})
    connector._callback_metrics.update(
        {key: tensors[key] if key in tensors else torch.tensor(value) for key, value in values.items()}
    )


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


_LIGHTNING_CALL_CALLBACK_HOOKS = lightning_call._call_callback_hooks
_LOG = logging.getLogger(lightning_call.__name__)  # the logger of Lightning's function
_DEFINES_HOOK: dict[tuple[type, str], bool] = {}


def defines_hook(callback: L.Callback, hook_name: str) -> bool:
    """Whether ``callback`` has its own ``hook_name`` (its class or an instance attribute), not the empty
    method of :class:`lightning.Callback`; decided once per class and hook."""
    cls = type(callback)
    defined = _DEFINES_HOOK.get((cls, hook_name))
    if defined is None:
        defined = getattr(cls, hook_name, None) is not getattr(L.Callback, hook_name, None)
        _DEFINES_HOOK[(cls, hook_name)] = defined
    return defined or hook_name in vars(callback)


def _lean_call_callback_hooks(
    trainer: L.Trainer, hook_name: str, *args: Any, monitoring_callbacks: bool | None = None, **kwargs: Any
) -> None:
    """Lightning's ``_call_callback_hooks`` without the calls of empty inherited hooks, for trainers with
    the :class:`NoOpProfiler` (whose per-callback timing sections are empty anyway); any other profiler gets
    Lightning's own function, so its per-callback sections stay complete. The hooks that run, their order,
    their arguments and ``_current_fx_name`` during them are Lightning's."""
    if type(trainer.profiler) is not NoOpProfiler:
        return _LIGHTNING_CALL_CALLBACK_HOOKS(
            trainer, hook_name, *args, monitoring_callbacks=monitoring_callbacks, **kwargs
        )
    if _LOG.isEnabledFor(logging.DEBUG):
        _LOG.debug(f"{trainer.__class__.__name__}: calling callback hook: {hook_name}")
    pl_module = trainer.lightning_module
    if pl_module:
        previous = pl_module._current_fx_name
        pl_module._current_fx_name = hook_name
    callbacks = trainer.callbacks
    if monitoring_callbacks is True:
        callbacks = [cb for cb in callbacks if isinstance(cb, EarlyStopping | Checkpoint)]
    elif monitoring_callbacks is False:
        callbacks = [cb for cb in callbacks if not isinstance(cb, EarlyStopping | Checkpoint)]
    for callback in callbacks:
        if defines_hook(callback, hook_name):
            fn = getattr(callback, hook_name)
            if callable(fn):
                fn(trainer, trainer.lightning_module, *args, **kwargs)
    if pl_module:
        pl_module._current_fx_name = previous


def use_lean_callback_dispatch() -> None:
    """Route Lightning's callback-hook calls through :func:`_lean_call_callback_hooks` (idempotent).

    Why: with a dozen callbacks (genvae's defaults, a YAML's figure callbacks, checkpointing, the progress
    bar), Lightning makes about 60 callback calls per training step, most of them to empty inherited
    methods, each with an f-string of the callback's ``state_key`` for the profiler (``ModelCheckpoint``
    builds its key from five settings every time): a cost of the order of a small model's step on a GPU.
    Lightning's loops look the function up on its module at every call (``call._call_callback_hooks``), so
    replacing it there reaches them all; trainers without the :class:`NoOpProfiler` are unaffected.
    """
    lightning_call._call_callback_hooks = _lean_call_callback_hooks

"""Lightning glue shared by genvae's models, callbacks and CLI.

- :func:`is_logging_step`: whether Lightning writes step metrics to its loggers after the current training
  step — the one place genvae reads it (step logging, the NaN guard's flag, the progress bar's redraw).
- :class:`NoOpProfiler`: a profiler that costs nothing. The default ``PassThroughProfiler`` still builds a
  generator-based context manager for every hook call (about 200 per training step with a dozen
  callbacks), which shows up in the step time of a small model; this one hands back one shared
  ``contextlib.nullcontext``. ``genvae`` uses it when the config sets no ``trainer.profiler``; any real
  profiler (``simple``, ``advanced``, ``pytorch``) replaces it as usual.
"""

from __future__ import annotations

import contextlib

import lightning as L
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

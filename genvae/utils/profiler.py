"""A Lightning profiler that costs nothing: the default ``PassThroughProfiler`` still builds a generator-based
context manager for every hook call (about 200 per training step with a dozen callbacks), which shows up in
the step time of a small model. :class:`NoOpProfiler` hands back one shared ``contextlib.nullcontext``.
``genvae`` uses it when the config sets no ``trainer.profiler``; any real profiler (``simple``,
``advanced``, ``pytorch``) replaces it as usual."""

from __future__ import annotations

import contextlib

from lightning.pytorch.profilers import PassThroughProfiler

_NULL = contextlib.nullcontext()


class NoOpProfiler(PassThroughProfiler):
    """:class:`~lightning.pytorch.profilers.PassThroughProfiler` without the per-call context manager."""

    def profile(self, action_name: str) -> contextlib.nullcontext:  # type: ignore[override]
        return _NULL

"""Where the time of ``genvae test`` goes: seconds per evaluation callback and for the model's own metrics.

:class:`EvaluationTimer` (a default callback of the CLI) wraps, for the test run only, the test hooks of
every other callback (``setup``, ``on_test_start``, ``on_test_epoch_start``, ``on_test_batch_start``,
``on_test_batch_end``, ``on_test_epoch_end``, ``on_test_end``; only the callbacks that implement one) and
the model's ``test_step``, ``on_test_epoch_start`` and ``on_test_epoch_end``, and adds up their wall time.
:meth:`EvaluationTimer.timings` (``{"time/<CallbackClass>": s, "time/model": s, "time/test": s}``) is what
:class:`~genvae.callbacks.MetricsJSON` writes beside the metrics (the timer is ``pl_module.test_timer``);
``time/test`` runs from the timer's ``setup`` to that moment. On CUDA each timed call ends with a device
synchronisation so that the seconds belong to the call that queued the work (test only; training is never
timed this way).

:class:`StepTimer` times a window of training steps inside a run, for ``benchmarks/bench_training.py``.
"""

from __future__ import annotations

import functools
import json
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch

from genvae.utils.atomic import atomic_write_bytes
from genvae.utils.lightning import defines_hook

CALLBACK_HOOKS = (
    "setup",
    "on_test_start",
    "on_test_epoch_start",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_test_epoch_end",
    "on_test_end",
)
MODEL_HOOKS = ("test_step", "on_test_epoch_start", "on_test_epoch_end")


class EvaluationTimer(L.Callback):
    """Seconds per test callback and for the model, into ``pl_module.test_timings`` (see the module doc)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._restore: list[tuple[object, str]] = []
        self._start: float | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "test":
            return
        self.seconds.clear()
        self._start = time.perf_counter()
        synchronize = torch.cuda.synchronize if pl_module.device.type == "cuda" else None
        for callback in trainer.callbacks:
            if callback is self or type(callback).__name__ == "MetricsJSON":
                continue
            for hook in CALLBACK_HOOKS:
                if defines_hook(callback, hook):  # its own hooks only (instance attributes: left alone)
                    self._wrap(callback, hook, f"time/{type(callback).__name__}", synchronize)
        for hook in MODEL_HOOKS:
            self._wrap(pl_module, hook, "time/model", synchronize)
        pl_module.test_timer = self

    def timings(self) -> dict[str, float]:
        """Seconds so far per timed callback class and for the model, and ``time/test`` since ``setup``."""
        total = {} if self._start is None else {"time/test": time.perf_counter() - self._start}
        return {**self.seconds, **total}

    def _wrap(self, owner: object, hook: str, key: str, synchronize: Callable[[], None] | None) -> None:
        if hook in vars(owner):  # already an instance attribute: leave it alone
            return
        original = getattr(owner, hook)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                if synchronize is not None:
                    synchronize()
                self.seconds[key] += time.perf_counter() - start

        object.__setattr__(owner, hook, timed)  # an instance attribute: Lightning calls it by name
        self._restore.append((owner, hook))

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for owner, hook in self._restore:
            if hook in vars(owner):
                object.__delattr__(owner, hook)
        self._restore.clear()


class StepTimer(L.Callback):
    """Wall time of the training steps from optimizer step ``start`` to ``end`` of a run, measured inside it.

    ``benchmarks/bench_training.py`` adds it to the runs it times: the clock starts when step ``start``
    begins and stops when step ``end`` begins, so start-up, the sanity check and the final checkpoint are
    outside the window by construction (the two-run difference cancels them only up to their jitter).
    On CUDA the device is synchronised at both ends. Writes ``{"start", "end", "seconds", "ms_per_step"}``
    as JSON to ``path`` (atomically) when the window closes.
    """

    def __init__(self, start: int, end: int, path: str) -> None:
        if not 0 <= start < end:
            raise ValueError(f"StepTimer: needs 0 <= start < end, got {start}, {end}")
        self.start, self.end, self.path = start, end, path
        self._t0: float | None = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int
    ) -> None:
        self.at_step(trainer.global_step, pl_module.device)

    def at_step(self, step: int, device: torch.device) -> None:
        """Step ``step`` begins on ``device``: start or stop the clock there (the benchmark's plain loop calls
        this itself)."""
        if step not in (self.start, self.end):
            return
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        if step == self.start:
            self._t0 = now
        elif self._t0 is not None:
            seconds = now - self._t0
            record = {"start": self.start, "end": self.end, "seconds": seconds}
            record["ms_per_step"] = 1000 * seconds / (self.end - self.start)
            atomic_write_bytes(Path(self.path), json.dumps(record).encode())

"""genvae's callback dispatch (genvae.utils.lightning.use_lean_callback_dispatch): the hooks a callback
defines run as under Lightning's own dispatch, in the same order, with the same ``_current_fx_name``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from genvae.utils.lightning import defines_hook

from .conftest import fit_smoke

CALLS: list[tuple[str, str]] = []  # (hook, the module's _current_fx_name during it), of the latest run


class Recorder(L.Callback):
    """Records the hooks it defines; ``on_validation_end`` is added per instance, not by the class."""

    def __init__(self) -> None:
        self.on_validation_end = self._validation_end

    def _record(self, hook: str, pl_module: L.LightningModule) -> None:
        CALLS.append((hook, pl_module._current_fx_name))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._record("on_train_batch_start", pl_module)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._record("on_before_optimizer_step", pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record("on_train_epoch_end", pl_module)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._record("on_save_checkpoint", pl_module)

    def _validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record("on_validation_end", pl_module)


class Subclass(Recorder):
    pass


def test_a_hook_counts_as_defined_by_the_class_a_parent_or_the_instance() -> None:
    recorder = Subclass()
    assert defines_hook(recorder, "on_train_batch_start")  # from Recorder
    assert defines_hook(recorder, "on_validation_end")  # an instance attribute
    assert not defines_hook(recorder, "on_after_backward")  # Callback's empty method
    assert not defines_hook(L.Callback(), "on_train_batch_start")


def recorded_fit(tiny_mnist: Path, tmp_path: Path, *extra: str) -> list[tuple[str, str]]:
    CALLS.clear()
    fit_smoke(
        tiny_mnist,
        tmp_path,
        "--trainer.limit_train_batches",
        "3",
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.callbacks+=tests.test_callback_dispatch.Recorder",
        *extra,
    )
    return list(CALLS)


def test_lean_dispatch_calls_what_lightnings_dispatch_calls(tiny_mnist: Path, tmp_path: Path) -> None:
    lean = recorded_fit(tiny_mnist, tmp_path / "lean")
    lightning = recorded_fit(
        tiny_mnist,
        tmp_path / "lightning",
        "--trainer.profiler",
        "lightning.pytorch.profilers.PassThroughProfiler",
    )
    assert lean == lightning
    hooks = [hook for hook, _ in lean]
    assert hooks.count("on_train_batch_start") == 3 and hooks.count("on_before_optimizer_step") == 3
    assert {"on_train_epoch_end", "on_save_checkpoint", "on_validation_end"} <= set(hooks)
    assert all(fx == hook for hook, fx in lean if hook != "on_save_checkpoint")

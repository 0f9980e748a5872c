"""The metrics JSON file of a test run: every scalar test metric, written beside the checkpoint and printed.

On by default in the CLI (:data:`genvae.cli.DEFAULT_CALLBACKS`); a module of its own so that the CLI, which
adds it to every run, does not import the evaluation callbacks and their metrics stack.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from genvae.utils.atomic import atomic_write_bytes

__all__ = ["MetricsJSON", "scalar_metrics", "test_metadata", "test_timings"]


def scalar_metrics(trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float | None]:
    """Scalar ``trainer.callback_metrics`` plus the model's ``test_results`` (as ``test/<name>``), sorted.

    Non-finite values become ``None`` so the JSON stays standard.
    """
    metrics: dict[str, float] = {
        name: float(value) for name, value in trainer.callback_metrics.items() if torch.numel(value) == 1
    }
    for name, value in (getattr(pl_module, "test_results", None) or {}).items():
        metrics.setdefault(name if name.startswith("test/") else f"test/{name}", float(value))
    return {name: value if math.isfinite(value) else None for name, value in sorted(metrics.items())}


def _shown(value: float | str | None) -> str:
    """A JSON value as printed: numbers to 6 significant digits, ``nan`` for None, strings as they are."""
    if value is None:
        return "nan"
    return value if isinstance(value, str) else f"{value:.6g}"


def test_metadata(pl_module: L.LightningModule) -> dict[str, str]:
    """The model's ``test_metadata``: string entries saying how its metrics were computed, sorted."""
    metadata = getattr(pl_module, "test_metadata", None) or {}
    return {str(name): str(value) for name, value in sorted(metadata.items())}


def test_timings(pl_module: L.LightningModule) -> dict[str, float]:
    """Seconds of the test run per evaluation callback (``time/<Callback>``), for the model's own metrics
    (``time/model``) and in all (``time/test``), from :class:`~genvae.callbacks.timing.EvaluationTimer`."""
    timer = getattr(pl_module, "test_timer", None)
    timings = timer.timings() if timer is not None else {}
    return {name: round(float(seconds), 3) for name, seconds in sorted(timings.items())}


class MetricsJSON(L.Callback):
    """At the end of ``test``, write every scalar metric to JSON and print it.

    The file is ``<checkpoint stem>.metrics.json`` beside the tested checkpoint (``--ckpt_path``), else
    ``test_metrics.json`` in the run's log directory; it is written atomically. Values: see
    :func:`scalar_metrics`; the model's :func:`test_metadata` (e.g. ``meta/latent_protocol``) follow
    as strings in the same flat object, then :func:`test_timings` (``time/...``, seconds).
    """

    def output_path(self, trainer: L.Trainer) -> Path:
        if trainer.ckpt_path:
            ckpt = Path(trainer.ckpt_path)
            return ckpt.with_name(f"{ckpt.stem}.metrics.json")
        return Path(trainer.log_dir or trainer.default_root_dir) / "test_metrics.json"

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        metrics: dict[str, float | str | None] = {
            **scalar_metrics(trainer, pl_module),
            **test_metadata(pl_module),
            **test_timings(pl_module),
        }
        payload = (json.dumps(metrics, indent=2) + "\n").encode()
        path = self.output_path(trainer)
        try:
            atomic_write_bytes(path, payload)
        except OSError as err:
            fallback = Path(trainer.log_dir or trainer.default_root_dir) / "test_metrics.json"
            rank_zero_warn(f"MetricsJSON: cannot write {path} ({err}); writing {fallback}")
            path = fallback
            atomic_write_bytes(path, payload)
        width = max((len(name) for name in metrics), default=0)
        lines = [f"  {name:<{width}}  {_shown(value)}" for name, value in metrics.items()]
        print("\n".join([f"test metrics -> {path}", *lines]), flush=True)

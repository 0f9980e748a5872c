"""A plain-text line per epoch, readable in CI logs and batch-job output where progress bars are not."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_only


class EpochSummary(L.Callback):
    """Print ``epoch N | key value | ...`` of the epoch-level metrics at the end of each training epoch.

    Args:
        keys: metric-name prefixes to print (default: ``train/`` epoch aggregates and ``val/``).
    """

    def __init__(self, keys: tuple[str, ...] = ("train/loss_epoch", "val/")) -> None:
        self.keys = tuple(keys)

    @rank_zero_only
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        items = [
            f"{name} {float(value):.4g}"
            for name, value in sorted(trainer.callback_metrics.items())
            if name.startswith(self.keys) and value.numel() == 1
        ]
        print(
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} step {trainer.global_step} | "
            + " | ".join(items),
            flush=True,
        )

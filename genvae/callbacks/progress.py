"""Progress for people: a plain-text line per epoch (readable in CI logs and batch-job output, where progress
bars are not) and a progress bar that redraws on logging steps only."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_only

from genvae.utils.lightning import is_logging_step


class EpochSummary(L.Callback):
    """Print ``epoch N | key value | ...`` of the epoch-level metrics at the end of each training epoch.

    Args:
        keys: metric-name prefixes to print (default: ``train/`` epoch aggregates and ``val/``).
    """

    def __init__(self, keys: tuple[str, ...] = ("train/loss_epoch", "val/")) -> None:
        self.keys = tuple(keys)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning runs this hook before the module's: have a genvae module log its epoch means now (on
        # every rank, since they are all-reduced), so the line below shows them.
        log_epoch_means = getattr(pl_module, "log_epoch_means", None)
        if callable(log_epoch_means):
            log_epoch_means("train")
        # Reading the metrics computes the epoch means, all-reducing those logged with sync_dist: every rank
        # reads them here, so the collectives happen at the same point on all ranks.
        metrics = trainer.callback_metrics
        self._print(trainer, metrics)

    @rank_zero_only
    def _print(self, trainer: L.Trainer, metrics: dict[str, Any]) -> None:
        items = [
            f"{name} {float(value):.4g}"
            for name, value in sorted(metrics.items())
            if name.startswith(self.keys) and value.numel() == 1
        ]
        print(
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} step {trainer.global_step} | "
            + " | ".join(items),
            flush=True,
        )


class LoggingStepProgressBar(TQDMProgressBar):
    """Lightning's progress bar, redrawn on logging steps (``trainer.log_every_n_steps``) instead of every
    batch: that is when genvae's models log their step values (the loss it shows), and a redraw per batch
    costs a terminal write and a pass over the logged metrics in every step. The count, rate and loss are
    exact at each redraw; the last batch of an epoch always redraws. Validation and test bars redraw every
    ``log_every_n_steps`` batches. ``genvae`` adds it to every run whose config names no progress bar.
    """

    def __init__(self, process_position: int = 0, leave: bool = False) -> None:
        super().__init__(refresh_rate=1, process_position=process_position, leave=leave)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if trainer.log_every_n_steps > 0 and self._refresh_rate > 0:
            self._refresh_rate = trainer.log_every_n_steps

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        bar = self.train_progress_bar
        if bar is None or not self.is_enabled:
            return
        n = batch_idx + 1
        if is_logging_step(trainer) or n == bar.total:
            if not bar.disable:
                bar.n = n
                bar.refresh()
            bar.set_postfix(self.get_metrics(trainer, pl_module))

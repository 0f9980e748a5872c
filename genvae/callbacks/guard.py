"""Stop a run at the first non-finite loss or gradient, before the optimizer step can spoil the weights.

The check runs just before each optimizer step (after gradients are ready), so the weights still hold the
last finite state and no checkpoint is ever written from a NaN/inf step: ``last.ckpt`` stays the last good
one. Under DDP the verdict is reduced across ranks so that every rank stops at the same step.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss or gradient; the message says where and which checkpoint to use."""


class FiniteLossGuard(L.Callback):
    """Raise :class:`NonFiniteLossError` when the loss (or, without a grad scaler, a gradient) is NaN/inf.

    Gradients are not checked under ``precision: 16-mixed``, whose grad scaler skips inf/NaN steps itself.
    """

    def __init__(self) -> None:
        self._loss: Tensor | None = None

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        self._loss = loss.detach()

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        loss, self._loss = self._loss, None
        checks = []  # [loss finite, gradients finite] as 0-dim bool tensors, read with one sync
        if loss is not None:
            checks.append(torch.isfinite(loss).all())
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads and getattr(trainer.precision_plugin, "scaler", None) is None:
            norms = torch._foreach_norm(grads)
            checks.append(torch.isfinite(torch.stack([n.float() for n in norms]).sum()))
        if not checks:
            return
        flags = torch.stack(checks).cpu()
        failed = not bool(flags.all())
        if trainer.world_size > 1:
            failed = trainer.strategy.reduce_boolean_decision(failed, all=False)
        if failed:
            raise NonFiniteLossError(self._message(trainer, loss, flags))

    @staticmethod
    def _message(trainer: L.Trainer, loss: Tensor | None, flags: Tensor) -> str:
        if loss is not None and not bool(flags[0]):
            what = f"loss is {float(loss):g}"
        elif bool(flags.all()):
            what = "loss or gradient is non-finite on another rank"
        else:
            what = "gradient is non-finite (loss finite)"
        where = f"epoch {trainer.current_epoch}, global step {trainer.global_step}"
        checkpoint = trainer.checkpoint_callback
        last = checkpoint and (getattr(checkpoint, "last_model_path", "") or checkpoint.best_model_path)
        kept = (
            f"last good checkpoint: {last} (resume with --ckpt_path)"
            if last
            else "no checkpoint had been saved yet"
        )
        return (
            f"training stopped: the {what} at {where}; this step was not applied and no checkpoint was "
            f"written from it; {kept}. Lower the learning rate, use gradient_clip_val, or check the data."
        )

"""Stop a run at the first non-finite loss or gradient, without letting it reach the weights.

The check runs just before each optimizer step, on the device and without synchronising with it, in two
device ops: ``torch.amp.GradScaler``'s fused finite check over the gradients and the loss sets a sticky flag
``found_inf`` to 1 at the first step with a NaN/inf, and a counter adds the flag, so that it holds the
number of steps since that first one (which dates it). The loss tensors are kept by reference until the
flag is next read, so the message can quote the loss of the first bad step. The update is skipped on the device,
the way ``torch.amp.GradScaler`` skips it: optimizers that accept a ``found_inf`` tensor (torch's fused
Adam / AdamW, which every genvae model configures) leave weights, moments and step count untouched while it
is 1. From that step on no update is applied, so the weights keep the last finite state.

The host reads the flag only where a decision is due: on Lightning's logging steps (``log_every_n_steps``),
at the end of each training epoch and of training, and before any checkpoint is written
(:meth:`FiniteLossGuard.on_save_checkpoint`), so no checkpoint is ever written after a NaN/inf step and
``last.ckpt`` stays the last good one. The run then stops with one line naming the first bad step. Under
DDP the verdict is reduced across ranks at those same points, so every rank stops together.

An optimizer that does not take ``found_inf`` (a custom one) gets the previous behaviour: the flag is read
before every optimizer step (one host-device synchronisation per step) and the run stops before the step.
Under ``precision: 16-mixed`` the grad scaler owns ``found_inf`` and skips inf/NaN gradient steps itself;
only the loss is checked there.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import Tensor

from genvae.utils.lightning import is_logging_step


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss or gradient; the message says where and which checkpoint to use."""


def _raw_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    return getattr(optimizer, "_optimizer", optimizer)  # LightningOptimizer wraps the torch optimizer


def skips_on_found_inf(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step()`` honours a ``found_inf`` attribute (fused Adam / AdamW / SGD)."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))


class FiniteLossGuard(L.Callback):
    """Raise :class:`NonFiniteLossError` after the first NaN/inf loss (or gradient), never applying it.

    See the module docstring for where the device-side flag is read. Gradients are not checked under
    ``precision: 16-mixed``, whose grad scaler skips inf/NaN steps itself.
    """

    def __init__(self) -> None:
        self._loss: Tensor | None = None
        self._found_inf: Tensor | None = None  # float 0/1, sticky: the optimizers' skip flag
        self._bad_steps: Tensor | None = None  # checked steps from the first non-finite one on (float)
        self._one: Tensor | None = None
        self._last_step = -1  # global step of the latest check
        self._losses: list[Tensor | None] = []  # the loss of every check since the flag was last read

    # ----------------------------------------------------------- per step: device only
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        device = pl_module.device
        self._found_inf = torch.zeros((), device=device)
        self._bad_steps = torch.zeros((), device=device)
        self._one = torch.ones((), device=device)  # the "inverse scale" of the check: values unchanged
        self._losses = []

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        self._loss = loss.detach()

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """Two device ops per step: GradScaler's fused finite check over the gradients and the loss (one
        call per dtype) sets the sticky ``found_inf``, and ``bad_steps += found_inf`` counts the steps since
        the first bad one, which dates it when the flag is read (the losses are kept as tensor references
        until then, so the message can quote the loss of that step)."""
        if self._found_inf is None:
            self.on_train_start(trainer, pl_module)
        optimizer = _raw_optimizer(optimizer)
        loss, self._loss = self._loss, None
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        checked: dict[torch.dtype, list[Tensor]] = {}
        if scaler is None:  # under 16-mixed the scaler checks (and unscales) the gradients itself
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        checked.setdefault(p.grad.dtype, []).append(p.grad)
        if loss is not None:
            checked.setdefault(loss.dtype, []).append(loss)
        for same_dtype in checked.values():  # values are multiplied by exactly 1: unchanged
            torch._amp_foreach_non_finite_check_and_unscale_(same_dtype, self._found_inf, self._one)
        self._bad_steps.add_(self._found_inf)
        self._last_step = trainer.global_step
        self._losses.append(loss)
        if scaler is not None:
            return  # the scaler skips a non-finite step itself (a NaN/inf loss gives NaN/inf gradients)
        if skips_on_found_inf(optimizer):
            optimizer.found_inf = self._found_inf  # the fused kernels skip the whole update while it is 1
        else:
            self._raise_if_failed(trainer)  # no device-side skip: decide now, before the step

    # ----------------------------------------------------------- where the host reads the flag
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if is_logging_step(trainer):
            self._raise_if_failed(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._raise_if_failed(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._raise_if_failed(trainer)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Refuse to write a checkpoint after a non-finite step (Lightning builds it on every rank)."""
        if trainer.state.fn == "fit":
            self._raise_if_failed(trainer)

    def _raise_if_failed(self, trainer: L.Trainer) -> None:
        if self._found_inf is None:
            return
        found, bad_steps = torch.stack([self._found_inf, self._bad_steps]).tolist()  # the one sync
        failed = found > 0
        if trainer.world_size > 1:
            failed = trainer.strategy.reduce_boolean_decision(failed, all=False)
        if not failed:
            self._losses.clear()
            return
        first_loss = None
        if found > 0:  # the flag was 0 at the previous read, so the first bad step is among the kept ones
            first = len(self._losses) - int(bad_steps)
            loss = self._losses[first] if 0 <= first < len(self._losses) else None
            first_loss = None if loss is None else float(loss.float().reshape(-1)[0])
        raise NonFiniteLossError(
            self._message(trainer, found > 0, self._last_step - int(bad_steps) + 1, first_loss)
        )

    @staticmethod
    def _message(trainer: L.Trainer, found: bool, step: int, loss: float | None) -> str:
        if not found:
            what, where = (
                "loss or gradient is non-finite on another rank",
                f"global step {trainer.global_step}",
            )
        else:
            if loss is not None and not math.isfinite(loss):
                what = f"loss is {loss:g}"
            elif loss is not None:
                what = "gradient is non-finite (loss finite)"
            else:
                what = "loss or gradient is non-finite"
            where = f"global step {step}"
        where = f"epoch {trainer.current_epoch}, {where}"
        checkpoint = trainer.checkpoint_callback
        last = checkpoint and (getattr(checkpoint, "last_model_path", "") or checkpoint.best_model_path)
        kept = (
            f"last good checkpoint: {last} (resume with --ckpt_path)"
            if last
            else "no checkpoint had been saved yet"
        )
        return (
            f"training stopped: the {what} at {where}; no update was applied from it on and no checkpoint "
            f"was written after it; {kept}. Lower the learning rate, use gradient_clip_val, or check the data."
        )

"""The optimizer every genvae model trains with: torch's fused Adam / AdamW where the device has the kernel.

Fused, for two reasons: one kernel updates all parameters (fewer launches per step than the ``foreach``
default), and its ``step`` honours a ``found_inf`` flag on the device, which lets
:class:`genvae.callbacks.guard.FiniteLossGuard` skip a NaN/inf step without synchronising with the device
(the mechanism ``torch.amp.GradScaler`` uses). Where torch has no fused kernel for the parameters' device,
the ``foreach`` implementation is used and the guard falls back to a per-step check.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.optimizer import _get_fused_kernels_supported_devices


def adam(
    parameters: Iterable[nn.Parameter], lr: float, weight_decay: float = 0.0, decoupled: bool = False
) -> torch.optim.Optimizer:
    """Adam (``decoupled=False``; weight decay added to the gradient) or AdamW, fused where supported."""
    parameters = list(parameters)
    devices = {p.device.type for p in parameters}
    fused = bool(parameters) and devices <= set(_get_fused_kernels_supported_devices())
    fused = fused and all(p.is_floating_point() for p in parameters)
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    return cls(parameters, lr=lr, weight_decay=weight_decay, fused=fused or None)

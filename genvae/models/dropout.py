"""Dropout whose random mask is cheap on a CPU.

On a CPU, ``F.dropout`` draws one Bernoulli variable per element (``bernoulli_``, one generator call per
element), which made dropout ~45% of a training step of the VQ-VAE prior's transformer on 2 cores
(torch profiler: ``bernoulli_`` 30% of the step, the masking multiply most of another 11%). Here each
64-bit draw of the generator gives the keep/drop decisions of four elements (16 bits each): an element is
kept when its 16-bit word is at or above ``round(p * 2**16)``, so it is dropped with probability
``round(p * 2**16) / 2**16`` (within 2**-17 of ``p``) and the kept ones are scaled by the exact inverse of
the keep probability (unbiased, as ``F.dropout``). On other devices ``F.dropout`` is already a fused
kernel and is used unchanged. Both draw from torch's generator of the tensor's device, so
``seed_everything`` and checkpointed generator states make runs reproducible and resumable.

:func:`causal_attention` does the same for the dropout on attention weights, which ``nn.MultiheadAttention``
and ``F.scaled_dot_product_attention`` draw with ``bernoulli_`` inside the attention computation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LEVELS = 1 << 16


def keep_mask(shape: torch.Size | tuple[int, ...], drop_levels: int, device: torch.device) -> Tensor:
    """Boolean mask of ``shape``: True with probability ``1 - drop_levels / 2**16``, four elements per
    64-bit random draw."""
    n = math.prod(shape)
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=device)
    return words.view(torch.int16)[:n].view(shape) >= drop_levels - _LEVELS // 2


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``F.dropout(x, p, training)`` with the CPU mask of :func:`keep_mask` (see the module docstring)."""
    if not training or p == 0.0 or x.device.type != "cpu":
        return F.dropout(x, p, training)
    drop_levels = round(p * _LEVELS)
    if drop_levels >= _LEVELS:
        return torch.zeros_like(x)
    scale = _LEVELS / (_LEVELS - drop_levels)
    # a float mask times x: autograd keeps the mask and the backward pass is one multiply (torch.where in
    # both passes was slower than F.dropout's multiply)
    return x * keep_mask(x.shape, drop_levels, x.device).to(x.dtype).mul_(scale)


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same argument, same state) computed by :func:`dropout`."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


def use_fast_dropout(module: nn.Module) -> nn.Module:
    """Replace every ``nn.Dropout`` inside ``module`` by :class:`Dropout` (in place; no parameters change,
    so checkpoints load either way). Dropout inside attention (``nn.MultiheadAttention``'s ``dropout``
    argument) is a float, not a module, and stays as it is."""
    for name, child in list(module.named_children()):
        if type(child) is nn.Dropout:
            setattr(module, name, Dropout(child.p, child.inplace))
        else:
            use_fast_dropout(child)
    return module


def causal_attention(query: Tensor, key: Tensor, value: Tensor, p: float, training: bool = True) -> Tensor:
    """Causal self-attention ``dropout(softmax(q k^T / sqrt(d) + causal mask)) v`` of ``[B, heads, L, d]``
    tensors, the computation of ``F.scaled_dot_product_attention(..., dropout_p=p, is_causal=True)`` (Vaswani et
    al. 2017, eq. 1, with dropout on the weights as torch applies it).

    Computed by that function, except when dropping on a CPU: there its math path draws the weights' mask
    element by element (``bernoulli_``), so the weights are formed here and masked by :func:`dropout`."""
    if not training or p == 0.0 or query.device.type != "cpu":
        return F.scaled_dot_product_attention(
            query, key, value, dropout_p=p if training else 0.0, is_causal=True
        )
    length = query.shape[-2]
    future = torch.ones(length, length, dtype=torch.bool, device=query.device).triu_(1)
    weights = (query @ key.transpose(-1, -2)).mul_(query.shape[-1] ** -0.5).masked_fill_(future, -math.inf)
    return dropout(weights.softmax(-1), p) @ value

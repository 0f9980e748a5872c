"""Process-wide floating-point settings of a genvae run.

:func:`flush_denormals`: subnormal ("denormal") floats, |x| < 1.2e-38 in float32, take a slow microcode
path on x86 CPUs, many times slower than normal numbers. Training produces them as it goes on (small
gradients, Adam's second moments, weights driven towards 0), so a CPU step can get slower over a run for
no change in the model. How much depends on the model: ``benchmarks/bench_denormals.py`` times a later
epoch both ways (table in docs/speed.md): the MLP VAE of the training benchmark slows down markedly, the
conv VAE hardly at all. Flushing them to zero (the processor's flush-to-zero and denormals-are-zero modes,
set by ``torch.set_flush_denormal`` and inherited by PyTorch's CPU worker threads) keeps every step at the
cost of the first ones. The values that change are below float32's smallest normal number, far under any
quantity a model or a metric of genvae reads; CUDA computation is not affected. TensorFlow's CPU thread
pools run this way by default.
"""

from __future__ import annotations

import torch

__all__ = ["flush_denormals"]


def flush_denormals(enabled: bool) -> bool:
    """Flush subnormal floats to zero in this process's CPU computation (``enabled``) or compute them
    exactly (IEEE 754, PyTorch's default). Returns whether the CPU supports the setting (x86 with SSE3);
    where it does not, nothing changes."""
    return bool(torch.set_flush_denormal(bool(enabled)))

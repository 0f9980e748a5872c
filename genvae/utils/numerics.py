"""Process-wide floating-point settings of a genvae run.

:func:`flush_denormals`: subnormal ("denormal") floats, |x| < 1.2e-38 in float32, are computed by x86 CPUs
in a slow microcode path, tens of times slower than normal numbers. Training produces them as it goes on
(small gradients, Adam's second moments, weights driven towards 0), so a CPU step gets slower over a run
for no change in the model (measured by ``benchmarks/bench_denormals.py``, shown in docs/speed.md: the
MLP VAE's steps slow down by about half within its first two epochs). Flushing them to zero — the processor's
flush-to-zero / denormals-are-zero modes, set by ``torch.set_flush_denormal`` for the calling process's
CPU threads — keeps every step at the cost of the first ones. The change in value is below float32's
smallest normal number, far under any quantity a model or a metric of genvae reads; GPUs flush
subnormals in most fast kernels anyway, and the setting does not touch CUDA computation.
TensorFlow and JAX run their CPU kernels this way by default.
"""

from __future__ import annotations

import torch

__all__ = ["flush_denormals"]


def flush_denormals(enabled: bool) -> bool:
    """Flush subnormal floats to zero in this process's CPU computation (``enabled``) or compute them
    exactly (IEEE 754, PyTorch's default). Returns whether the CPU supports the setting (x86 with SSE3);
    where it does not, nothing changes."""
    return bool(torch.set_flush_denormal(bool(enabled)))

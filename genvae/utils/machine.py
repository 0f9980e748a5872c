"""What a measurement ran on: machine, threads, accelerator and versions (recorded with runs and benchmarks)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

__all__ = ["hardware_info"]


def hardware_info() -> dict[str, object]:
    """Machine, CPU model, thread count, GPU name (None without one) and the versions that matter."""
    import lightning

    return {
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"

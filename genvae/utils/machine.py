"""What a measurement ran on: machine, threads, accelerator and versions (recorded with runs and benchmarks)."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path

import torch

__all__ = ["benchmark_stamp", "hardware_info", "write_benchmark_record"]


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


def benchmark_stamp(load_before: tuple[float, float, float]) -> dict[str, object]:
    """What every benchmark record starts with: UTC date, :func:`hardware_info`, and the 1, 5 and 15 minute
    load averages before and after the run (the machine may be shared with other jobs)."""
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "hardware": hardware_info(),
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
    }


def write_benchmark_record(
    record: dict, folder: Path, kind: str, suffix: str = "", path: Path | None = None
) -> Path:
    """Write ``record`` (stamped by :func:`benchmark_stamp`) atomically as JSON to ``path``, by default
    ``<folder>/<kind>-<YYYYmmdd-HHMM>[-<suffix>].json``; print and return the path."""
    from genvae.utils.atomic import atomic_write_bytes

    if path is None:
        stamp = datetime.datetime.strptime(str(record["date"]), "%Y-%m-%d %H:%M").strftime("%Y%m%d-%H%M")
        path = Path(folder) / f"{kind}-{stamp}{f'-{suffix}' if suffix else ''}.json"
    atomic_write_bytes(path, (json.dumps(record, indent=2) + "\n").encode())
    print(f"-> {path}")
    return path

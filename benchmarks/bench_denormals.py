"""Time ``genvae fit`` with subnormal floats flushed to zero (genvae's default) and computed exactly.

    python benchmarks/bench_denormals.py --data ../shared/data/mnist [--workloads mlp_vae vae] \\
        [--epochs 1 3] [--repeats 2] [--json out.json]

Each workload of ``benchmarks/bench_training.py`` (a shipped YAML, with its overrides) runs through
``python -m genvae fit`` as a user runs it, with ``--flush_denormal true`` and ``false``, for SHORT and LONG
epochs in fresh processes. ``(T_long - T_short) / (LONG - SHORT)`` is the time of one later epoch (its
training steps, its validation, its checkpoint), with start-up and the first epoch cancelled: subnormal
numbers appear as training goes on, so the first few hundred steps do not show them
(``genvae.utils.numerics``). Repeats interleave both settings; the table reports medians and the ratio
exact / flushed (> 1: flushing is faster). The JSON under results/bench keeps every run's wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training import REPO, WORKLOADS, config_args, steps_per_epoch, timed_run  # noqa: E402

SETTINGS = {"flushed": "true", "exact": "false"}


def command(workload: str, data: str, device: str, epochs: int, flush: str, run_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "genvae",
        "fit",
        *config_args(WORKLOADS[workload], data, device),
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.default_root_dir",
        str(run_dir),
        "--flush_denormal",
        flush,
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=f"{__doc__.splitlines()[0]} Explained in docs/speed.md.")
    parser.add_argument("--data", required=True, help="folder with the MNIST IDX files")
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=["mlp_vae", "vae"])
    parser.add_argument("--epochs", nargs=2, type=int, default=[1, 3], metavar=("SHORT", "LONG"))
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats; the median is reported")
    parser.add_argument("--device", default="cpu", help="cpu (the setting acts on CPU computation only)")
    parser.add_argument("--json", type=Path, default=None, help="output file (default: results/bench/...)")
    parser.add_argument("--no-json", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if not 1 <= args.epochs[0] < args.epochs[1] or args.repeats < 1:
        parser.error("--epochs needs 1 <= SHORT < LONG, and --repeats >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import lightning as L

    from genvae.utils.machine import benchmark_stamp, write_benchmark_record

    load_before = os.getloadavg()
    short, long = args.epochs
    steps = {name: steps_per_epoch(name, args.data, args.device) for name in args.workloads}
    seconds = {w: {s: {"short": [], "long": []} for s in SETTINGS} for w in args.workloads}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; epochs {short} / {long}")
    with tempfile.TemporaryDirectory(prefix="genvae-denormals-") as tmp:
        for repeat in range(args.repeats):
            for name in args.workloads:
                order = list(SETTINGS) if repeat % 2 == 0 else list(SETTINGS)[::-1]
                for setting in order:
                    for length, epochs in (("short", short), ("long", long)):
                        run_dir = Path(tmp) / f"{name}-{setting}-{length}-{repeat}"
                        run_dir.mkdir(parents=True)
                        cmd = command(name, args.data, args.device, epochs, SETTINGS[setting], run_dir)
                        wall = timed_run(cmd, run_dir / "console.log")
                        seconds[name][setting][length].append(wall)
                        print(
                            f"  repeat {repeat + 1} {name:<8} {setting:<7} {epochs:>3} epochs: {wall:6.1f} s"
                        )

    workloads: dict[str, Any] = {}
    print(f"\n{'workload':<32} {'flushed s/epoch':>16} {'exact s/epoch':>14} {'exact / flushed':>16}")
    for name in args.workloads:
        per_epoch = {
            setting: statistics.median(
                (t_long - t_short) / (long - short)
                for t_short, t_long in zip(runs["short"], runs["long"], strict=True)
            )
            for setting, runs in seconds[name].items()
        }
        ratio = per_epoch["exact"] / per_epoch["flushed"]
        workloads[name] = {
            "label": WORKLOADS[name].label,
            "config": WORKLOADS[name].config,
            "overrides": list(WORKLOADS[name].overrides),
            "steps_per_epoch": steps[name],
            "seconds_per_epoch": per_epoch,
            "seconds": seconds[name],
            "ratio_exact_over_flushed": ratio,
        }
        print(
            f"{WORKLOADS[name].label:<32} {per_epoch['flushed']:>16.2f} {per_epoch['exact']:>14.2f} "
            f"{ratio:>15.2f}x"
        )
    result = {
        **benchmark_stamp(load_before),
        "kind": "later_epoch_time",
        "torch": torch.__version__,
        "lightning": L.__version__,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "epochs": [short, long],
        "repeats": args.repeats,
        "statistic": "median of the repeats' (T_long - T_short) / (LONG - SHORT) seconds",
        "workloads": workloads,
    }
    if not args.no_json:
        write_benchmark_record(result, REPO / "results" / "bench", "denormals", "cpu", args.json)
    return result


if __name__ == "__main__":
    main()

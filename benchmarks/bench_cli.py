"""Time the generation commands as a person at the terminal runs them: first call, repeat call, start-up.

    python benchmarks/bench_cli.py --data ../shared/data/mnist [--ckpt run/last.ckpt] [--repeats 3] \\
        [--json out.json]

The model is ``experiments/cvae.yaml`` trained for one epoch (``genvae fit --trainer.max_epochs 1``, in a
temporary folder; ``--ckpt`` reuses a checkpoint of that YAML). Each repeat runs, in fresh processes and in
a rotating order:

- ``import``: ``python -c "import genvae.cli"``, the start-up every command pays (torch, Lightning, genvae);
- ``sample first`` / ``sample repeat``: ``genvae sample --label 7 --num 16``, first with the checkpoint's
  cached fits deleted (the class latents of the 54,000 training digits are fitted and cached:
  :mod:`genvae.latent.fitted`), then again with them in place;
- ``edit first`` / ``edit repeat``: ``genvae edit --set label=3 --indices 0:8`` the same way.

The table reports medians; ``repeat - import`` is the median over repeats of each repeat call's time minus
the import time of the same repeat (target: within 3 s, issue #38). Each repeat also runs
``python -X importtime -c "import genvae.cli"`` once (untimed) and splits the start-up by package
(:func:`import_breakdown`): where it goes beyond genvae's own modules. The JSON under results/bench keeps
every wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training import REPO, timed_run  # noqa: E402

CONFIG = REPO / "experiments" / "cvae.yaml"
TARGET_SECONDS = 3.0  # a repeat call within this of the start-up (issue #38)
COMMANDS = {
    "sample": ["sample", "--label", "7", "--num", "16", "--out", "{out}/sample.png"],
    "edit": ["edit", "--set", "label=3", "--indices", "0:8", "--out", "{out}/edit.png"],
}


def genvae_command(data: str, ckpt: Path, args: list[str], out: Path) -> list[str]:
    """``python -m genvae <args>`` on the benchmark's checkpoint and data (the console script's code path)."""
    filled = [arg.format(out=out) for arg in args]
    common = ["--config", str(CONFIG), "--ckpt_path", str(ckpt), "--data.init_args.root", data]
    return [sys.executable, "-m", "genvae", filled[0], *common, *filled[1:]]


def train_checkpoint(data: str, folder: Path) -> Path:
    """A one-epoch checkpoint of experiments/cvae.yaml (the issue's model)."""
    cmd = [sys.executable, "-m", "genvae", "fit", "--config", str(CONFIG), "--data.init_args.root", data]
    cmd += ["--trainer.max_epochs", "1", "--trainer.default_root_dir", str(folder)]
    seconds = timed_run(cmd, folder / "fit.log")
    (ckpt,) = folder.glob("lightning_logs/version_*/checkpoints/*.ckpt")
    print(f"checkpoint: 1 epoch of {CONFIG.name} in {seconds:.0f} s")
    return ckpt


def cached_fits(ckpt: Path) -> list[Path]:
    """The fit files cached beside ``ckpt`` (``<stem>.*.pt``, ``<stem>.control.json``)."""
    return [*ckpt.parent.glob(f"{ckpt.stem}.*.pt"), *ckpt.parent.glob(f"{ckpt.stem}.control.json")]


# packages whose cumulative import time the start-up breakdown reports (each as first imported)
BREAKDOWN = (
    "torch",
    "lightning",
    "torchmetrics.functional",
    "torchvision",
    "torch._dynamo",
    "scipy.signal",
    "matplotlib.pyplot",
)


def import_breakdown(report: str) -> dict[str, float]:
    """Seconds of the start-up by package from ``python -X importtime`` output: ``genvae.cli`` (all of it,
    cumulative), each :data:`BREAKDOWN` package (cumulative, where it is first imported: Lightning imports
    torchmetrics, which imports torchvision and scipy) and ``genvae (own modules)``, the sum of the
    self times of genvae's modules."""
    cumulative: dict[str, float] = {}
    own = 0.0
    for line in report.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        fields = line.removeprefix("import time:").split("|")
        if not fields[0].strip().isdigit():
            continue  # the header line
        name = fields[2].strip()
        self_us, cumulative_us = int(fields[0]), int(fields[1])
        cumulative.setdefault(name, cumulative_us / 1e6)
        if name == "genvae" or name.startswith("genvae."):
            own += self_us / 1e6
    wanted = ("genvae.cli", *BREAKDOWN)
    return {name: cumulative[name] for name in wanted if name in cumulative} | {"genvae (own modules)": own}


def importtime_run() -> dict[str, float]:
    """:func:`import_breakdown` of one fresh ``python -X importtime -c "import genvae.cli"``."""
    cmd = [sys.executable, "-X", "importtime", "-c", "import genvae.cli"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=True)
    return import_breakdown(result.stderr)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=f"{__doc__.splitlines()[0]} Explained in docs/speed.md.")
    parser.add_argument("--data", required=True, help="folder with the MNIST IDX files")
    parser.add_argument("--ckpt", type=Path, default=None, help="a checkpoint of experiments/cvae.yaml")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the median is reported")
    parser.add_argument("--json", type=Path, default=None, help="output file (default: results/bench/...)")
    parser.add_argument("--no-json", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import lightning as L
    import torch

    from genvae.utils.machine import benchmark_stamp, write_benchmark_record

    load_before = os.getloadavg()
    ways = ["import", *(f"{name} {call}" for name in COMMANDS for call in ("first", "repeat"))]
    seconds: dict[str, list[float]] = {way: [] for way in ways}
    breakdowns: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="genvae-cli-") as tmp:
        tmp = Path(tmp)
        ckpt = args.ckpt
        if ckpt is None:
            (tmp / "fit").mkdir()
            ckpt = train_checkpoint(args.data, tmp / "fit")
        else:  # a copy: the benchmark deletes and writes the fits cached beside it
            ckpt = Path(tmp / "model.ckpt")
            ckpt.write_bytes(args.ckpt.read_bytes())
        steps = ["import", *COMMANDS]
        for repeat in range(args.repeats):
            shift = repeat % len(steps)
            for step in steps[shift:] + steps[:shift]:
                log = tmp / f"{step}-{repeat}.log"
                if step == "import":
                    seconds["import"].append(timed_run([sys.executable, "-c", "import genvae.cli"], log))
                    print(f"  repeat {repeat + 1} import        {seconds['import'][-1]:6.2f} s")
                    breakdowns.append(importtime_run())
                    continue
                for path in cached_fits(ckpt):
                    path.unlink()
                for call in ("first", "repeat"):
                    wall = timed_run(genvae_command(args.data, ckpt, COMMANDS[step], tmp), log)
                    seconds[f"{step} {call}"].append(wall)
                    print(f"  repeat {repeat + 1} {step:<6} {call:<6} {wall:6.2f} s")

    medians = {way: statistics.median(values) for way, values in seconds.items()}
    over_import = {
        name: statistics.median(
            r - i for r, i in zip(seconds[f"{name} repeat"], seconds["import"], strict=True)
        )
        for name in COMMANDS
    }
    commands: dict[str, Any] = {}
    print(f"\n{'command':<44} {'first s':>8} {'repeat s':>9} {'import s':>9} {'repeat - import':>16}")
    for name, template in COMMANDS.items():
        shown = " ".join(arg for arg in template if not arg.startswith(("--out", "{out}")))
        commands[name] = {
            "command": f"genvae {shown}",
            "seconds_first": medians[f"{name} first"],
            "seconds_repeat": medians[f"{name} repeat"],
            "seconds_import": medians["import"],
            "repeat_minus_import": over_import[name],
            "target": TARGET_SECONDS,
            "met": over_import[name] <= TARGET_SECONDS,
        }
        print(
            f"genvae {shown:<37} {medians[f'{name} first']:>8.2f} {medians[f'{name} repeat']:>9.2f} "
            f"{medians['import']:>9.2f} {over_import[name]:>16.2f}"
        )
    startup = {
        name: statistics.median(b[name] for b in breakdowns)
        for name in breakdowns[0]
        if all(name in b for b in breakdowns)
    }
    print(
        "\nstart-up (python -X importtime, median): "
        + ", ".join(f"{k} {v:.2f} s" for k, v in startup.items())
    )
    result = {
        **benchmark_stamp(load_before),
        "kind": "command_time",
        "torch": torch.__version__,
        "lightning": L.__version__,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "config": str(CONFIG.relative_to(REPO)),
        "repeats": args.repeats,
        "statistic": "median of the repeats' wall times, fresh processes",
        "commands": commands,
        "startup_seconds": startup,
        "startup_statistic": "median over repeats of python -X importtime's cumulative time where first imported",
        "seconds": seconds,
    }
    if not args.no_json:
        write_benchmark_record(result, REPO / "results" / "bench", "cli", result["device"], args.json)
    return result


if __name__ == "__main__":
    main()

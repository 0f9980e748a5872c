"""Time ``genvae fit`` as users run it against a plain PyTorch loop on the same model and tensors.

    python benchmarks/bench_training.py --data ../shared/data/mnist [--workloads vae arvae vqvae mlp_vae] \\
        [--steps SHORT LONG] [--repeats 3] [--device cpu|cuda] [--json out.json]

Each workload is a shipped YAML (with a few overrides for the MLP one), run two ways in fresh processes:

- ``genvae``: ``python -m genvae fit --config <yaml> --trainer.max_steps N`` with what a user gets: the
  YAML's callbacks, the CLI's default callbacks (epoch summary, NaN guard, RNG state, metrics JSON), the
  default CSV logger, checkpointing and the progress bar (its output goes to a file);
- ``lightning``: this script with ``--bare-trainer``: the same config's model and datamodule (built by the
  same CLI) trained by a bare ``lightning.Trainer`` — no callbacks, logger, checkpointing, progress bar,
  model summary or validation, Lightning's default profiler: what Lightning's own loop costs, which
  genvae cannot go below;
- ``plain``: this script with ``--plain-loop``: the same config built by the same CLI
  (:func:`genvae.cli.build_cli` with ``run=False``), then a hand-written loop over the datamodule's training
  tensors on the device: a seeded permutation per epoch, batches by ``index_select``, uint8 images to
  float, ``model.losses(batch)["loss"]``, ``backward``, and the optimizer of ``model.configure_optimizers()``.
  No logging, no hooks: the floor.

All three ways run with the process settings ``genvae`` applies (subnormal floats flushed to zero,
``--flush_denormal``): the plain loop and the bare Trainer are built by the same CLI. So the ratios measure
the framework alone; what the setting saves later in a run is ``benchmarks/bench_denormals.py``'s table.

Measure: the marginal time per optimizer step, two ways. Every way runs for SHORT and LONG steps in
separate processes, both inside the first training epoch (100 and 600 steps for batch 64, 843 steps an
epoch; 20 and 400 for the MLP's batch 128, 421 an epoch): a run that crossed an epoch end would add genvae's
validation epoch and its epoch-end callbacks, which the plain loop and the bare Trainer do not run.
``--steps`` sets both lengths for every workload; a LONG at or past an epoch end is refused.

- in the run (the table's ms/step): the LONG run times its steps SHORT to LONG - 1 with a clock that starts
  when step SHORT begins and stops when step LONG - 1 begins (:class:`genvae.callbacks.timing.StepTimer`,
  added to ``genvae fit`` and the bare Trainer as a callback; the same clock in the plain loop), so
  start-up and the final checkpoint are outside it by construction;
- from two runs (``two_run_*`` in the JSON, the table's last column): ``(T_long - T_short) / (LONG -
  SHORT)`` of the two processes' wall times, which cancels start-up (imports, data loading, the sanity check,
  the final checkpoint) up to its jitter: a few tenths of a second, i.e. up to ~1 ms per step over the
  MLP's 380-step window.

The repeats interleave the runs (workload by workload, all ways, both lengths), so background load hits them
alike; the table reports the median over the repeats and the ratio plain / genvae of those medians (1.0 =
genvae costs what the model costs). The JSON under results/bench keeps every run's wall time and clock.

Workloads: ``vae`` (``experiments/vae.yaml``: conv VAE, batch 64), ``arvae`` (``experiments/arvae.yaml``:
AR-VAE, batch 64, with the Morpho-MNIST attributes), ``vqvae`` (``experiments/vqvae.yaml``: batch 64),
``mlp_vae`` (``experiments/vae.yaml`` with an MLP backbone of hidden sizes 512, 256 and batch 128: a
short step, like a GPU step). Targets: plain / genvae >= 0.95 for the first three, >= 0.90 for the MLP.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from genvae.callbacks.timing import StepTimer

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Workload:
    label: str
    config: str
    overrides: tuple[str, ...] = field(default_factory=tuple)
    target: float = 0.95
    steps: tuple[int, int] = (100, 600)  # SHORT, LONG: both inside the first epoch


WORKLOADS: dict[str, Workload] = {
    "vae": Workload("conv VAE, batch 64", "experiments/vae.yaml"),
    "arvae": Workload("AR-VAE, batch 64, attributes", "experiments/arvae.yaml"),
    "vqvae": Workload("VQ-VAE, batch 64", "experiments/vqvae.yaml"),
    "mlp_vae": Workload(
        "MLP VAE (512, 256), batch 128",
        "experiments/vae.yaml",
        (
            "--model.init_args.backbone=mlp",
            "--model.init_args.backbone_kwargs={hidden: [512, 256]}",
            "--data.init_args.batch_size=128",
        ),
        target=0.90,
        steps=(20, 400),
    ),
}
WAYS = ("genvae", "lightning", "plain")


def config_args(workload: Workload, data: str, device: str) -> list[str]:
    """The command-line config of a workload, shared by both ways."""
    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    return [
        "--config",
        str(REPO / workload.config),
        "--data.init_args.root",
        data,
        "--trainer.accelerator",
        accelerator,
        *workload.overrides,
    ]


def command(
    way: str,
    workload: Workload,
    args: argparse.Namespace,
    steps: int,
    run_dir: Path,
    clock: tuple[int, int, Path] | None = None,
) -> list[str]:
    """The command line of one run; ``clock`` = (start, end, path): time steps [start, end) inside the run
    (:class:`~genvae.callbacks.timing.StepTimer`) and write them to path."""
    common = config_args(workload, str(args.data), args.device)
    if way == "genvae":
        timer = []
        if clock is not None:
            start, end, path = clock
            spec = {"class_path": StepTimer.__module__ + ".StepTimer"}
            spec["init_args"] = {"start": start, "end": end, "path": str(path)}
            timer = [f"--trainer.callbacks+={json.dumps(spec)}"]
        return [
            sys.executable,
            "-m",
            "genvae",
            "fit",
            *common,
            "--trainer.max_steps",
            str(steps),
            "--trainer.default_root_dir",
            str(run_dir),
            *timer,
        ]
    flag = "--plain-loop" if way == "plain" else "--bare-trainer"
    timer = [] if clock is None else ["--clock", str(clock[0]), str(clock[1]), str(clock[2])]
    return [sys.executable, str(Path(__file__).resolve()), flag, str(steps), *timer, "--", *common]


# ----------------------------------------------------------------------------- the children
def seeded_cli(cli_args: list[str]) -> Any:
    """The config's model, datamodule and trainer as ``genvae fit`` builds them, with its seed set."""
    import lightning as L

    from genvae.cli import build_cli
    from genvae.utils.console import silence_unactionable_notices

    silence_unactionable_notices()
    cli = build_cli(cli_args, run=False)
    L.seed_everything(cli.config.get("seed_everything") or 0, verbose=False)
    return cli


def plain_loop(steps: int, cli_args: list[str], clock: tuple[int, int, Path] | None = None) -> None:
    """Build the config's model and data with the genvae CLI, then train ``steps`` steps by hand."""
    cli = seeded_cli(cli_args)
    model, datamodule = cli.model, cli.datamodule
    device = cli.trainer.strategy.root_device
    datamodule.prepare_data()
    datamodule.setup("fit")
    tensors = {key: value.to(device) for key, value in datamodule.splits["train"].items()}
    model.to(device).train()
    optimizer = model.configure_optimizers()
    batch_size = datamodule.batch_size
    n = len(tensors["image"])
    per_epoch = n // batch_size
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(n, generator=generator).to(device)
    timer = None if clock is None else StepTimer(clock[0], clock[1], str(clock[2]))  # the others' clock
    for step in range(steps):
        if timer is not None:
            timer.at_step(step, device)
        b = step % per_epoch
        if b == 0 and step > 0:
            order = torch.randperm(n, generator=generator).to(device)
        idx = order[b * batch_size : (b + 1) * batch_size]
        batch = {key: value.index_select(0, idx) for key, value in tensors.items()}
        if batch["image"].dtype == torch.uint8:
            batch["image"] = batch["image"].float().div_(255.0)
        loss = model.losses(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_trainer(steps: int, cli_args: list[str], clock: tuple[int, int, Path] | None = None) -> None:
    """Build the config's model and data with the genvae CLI, then train ``steps`` steps with a bare
    ``lightning.Trainer`` (Lightning's loop and nothing else)."""
    import lightning as L

    cli = seeded_cli(cli_args)
    trainer = L.Trainer(
        max_steps=steps,
        accelerator=cli.trainer.accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[] if clock is None else [StepTimer(clock[0], clock[1], str(clock[2]))],
    )
    trainer.fit(cli.model, datamodule=cli.datamodule)


# ----------------------------------------------------------------------------- the parent
def steps_per_epoch(name: str, data: str, device: str) -> int:
    """Training steps of one epoch of workload ``name``, built as ``genvae fit`` builds it; prepares its data
    (the attribute cache), outside any timing."""
    from genvae.cli import build_cli
    from genvae.utils.console import silence_unactionable_notices

    silence_unactionable_notices()  # as genvae and the children do: no Lightning adverts in the log
    with mock.patch.object(sys, "argv", sys.argv[:1]):  # the config is the argument list, not this command
        datamodule = build_cli(config_args(WORKLOADS[name], data, device), run=False).datamodule
    datamodule.prepare_data()
    datamodule.setup("fit")
    return len(datamodule.train_dataloader())


def prepare(workloads: list[str], args: argparse.Namespace) -> dict[str, tuple[int, int]]:
    """Prepare every workload's data outside the timing; the SHORT and LONG steps of each, checked to end
    inside the first training epoch."""
    steps = {}
    for name in workloads:
        per_epoch = steps_per_epoch(name, str(args.data), args.device)
        short, long = args.steps or WORKLOADS[name].steps
        if long >= per_epoch:
            raise SystemExit(
                f"bench_training: --steps {short} {long}: {name} has {per_epoch} steps an epoch; LONG must end "
                "inside the first epoch, or genvae's validation epoch would count as step time"
            )
        steps[name] = (short, long)
    return steps


def timed_run(cmd: list[str], log: Path) -> float:
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with log.open("w") as out:
        start = time.perf_counter()
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        seconds = time.perf_counter() - start
    if result.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        raise SystemExit(f"bench_training: {' '.join(cmd[:4])} ... failed ({result.returncode}):\n{tail}")
    return seconds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=f"{__doc__.splitlines()[0]} Explained in docs/speed.md.")
    parser.add_argument("--data", help="folder with the MNIST IDX files")
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument(
        "--steps", nargs=2, type=int, default=None, metavar=("SHORT", "LONG"), help="default: per workload"
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the median is reported")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--json", type=Path, default=None, help="output file (default: results/bench/...)")
    parser.add_argument("--no-json", action="store_true", help="print only")
    parser.add_argument("--plain-loop", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--bare-trainer", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--clock", nargs=3, default=None, help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args, rest = parser.parse_args(argv[:split]), argv[split + 1 :]
    if args.plain_loop is None and args.bare_trainer is None:
        if args.data is None:
            parser.error("--data is required")
        if (args.steps is not None and not 1 <= args.steps[0] <= args.steps[1] - 2) or args.repeats < 1:
            parser.error(
                "--steps needs 1 <= SHORT <= LONG - 2 (the in-run clock times SHORT to LONG - 1), and --repeats >= 1"
            )
        if args.device is None:
            args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.rest = rest
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    clock = None if args.clock is None else (int(args.clock[0]), int(args.clock[1]), Path(args.clock[2]))
    if args.plain_loop is not None:
        plain_loop(args.plain_loop, args.rest, clock)
        return {}
    if args.bare_trainer is not None:
        bare_trainer(args.bare_trainer, args.rest, clock)
        return {}

    import lightning as L

    from genvae.utils.machine import benchmark_stamp, write_benchmark_record

    load_before = os.getloadavg()
    steps = prepare(args.workloads, args)
    seconds = {w: {way: {"short": [], "long": []} for way in WAYS} for w in args.workloads}
    in_run = {w: {way: [] for way in WAYS} for w in args.workloads}  # StepTimer ms/step of each LONG run
    print(
        f"torch {torch.__version__}, lightning {L.__version__}, device {args.device}, "
        f"{torch.get_num_threads()} threads; {args.repeats} repeats"
    )
    with tempfile.TemporaryDirectory(prefix="genvae-bench-") as tmp:
        for repeat in range(args.repeats):
            for name in args.workloads:
                ways = WAYS if repeat % 2 == 0 else WAYS[::-1]
                for way in ways:
                    for length, n in zip(("short", "long"), steps[name], strict=True):
                        run_dir = Path(tmp) / f"{name}-{way}-{length}-{repeat}"
                        clock_file = run_dir / "step_time.json"
                        clock = (steps[name][0], n - 1, clock_file) if length == "long" else None
                        cmd = command(way, WORKLOADS[name], args, n, run_dir, clock)
                        run_dir.mkdir(parents=True)
                        wall = timed_run(cmd, run_dir / "console.log")
                        seconds[name][way][length].append(wall)
                        if clock is not None:
                            in_run[name][way].append(json.loads(clock_file.read_text())["ms_per_step"])
                        print(f"  repeat {repeat + 1} {name:<8} {way:<6} {n:>5} steps: {wall:6.1f} s")

    workloads: dict[str, Any] = {}
    print(
        f"\n{'workload':<32} {'genvae ms/step':>15} {'Lightning ms/step':>18} {'plain ms/step':>14} "
        f"{'plain/genvae':>13} {'target':>7} {'plain/Lightning':>16} {'two runs':>9}"
    )
    for name in args.workloads:
        workload = WORKLOADS[name]
        short, long = steps[name]
        two_run = {
            way: [
                1000 * (t_long - t_short) / (long - short)
                for t_short, t_long in zip(
                    seconds[name][way]["short"], seconds[name][way]["long"], strict=True
                )
            ]
            for way in WAYS
        }
        median = {way: statistics.median(values) for way, values in in_run[name].items()}
        two_run_median = {way: statistics.median(values) for way, values in two_run.items()}
        ratio = median["plain"] / median["genvae"]
        floor = median["plain"] / median["lightning"]
        workloads[name] = {
            "label": workload.label,
            "config": workload.config,
            "overrides": list(workload.overrides),
            "steps": [short, long],
            "clock_steps": [short, long - 1],
            "ms_per_step": median,
            "all_ms_per_step": in_run[name],
            "ratio_plain_over_genvae": ratio,
            "ratio_plain_over_lightning": floor,
            "target": workload.target,
            "met": ratio >= workload.target,
            "two_run_ms_per_step": two_run_median,
            "all_two_run_ms_per_step": two_run,
            "two_run_ratio_plain_over_genvae": two_run_median["plain"] / two_run_median["genvae"],
            "seconds": seconds[name],
        }
        print(
            f"{workload.label:<32} {median['genvae']:>15.2f} {median['lightning']:>18.2f} "
            f"{median['plain']:>14.2f} {ratio:>12.2f}x {'>= ' + format(workload.target, '.2f'):>7} "
            f"{floor:>15.2f}x {workloads[name]['two_run_ratio_plain_over_genvae']:>8.2f}x"
        )
    result = {
        **benchmark_stamp(load_before),
        "kind": "marginal_step_time",
        "torch": torch.__version__,
        "lightning": L.__version__,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "statistic": "median of the repeats' in-run ms/step over steps [SHORT, LONG - 1) of the LONG runs; "
        "two_run_*: median of (T_long - T_short) / (LONG - SHORT)",
        "workloads": workloads,
    }
    if not args.no_json:
        device_type = "cuda" if args.device.startswith("cuda") else "cpu"
        write_benchmark_record(result, REPO / "results" / "bench", "training", device_type, args.json)
    return result


if __name__ == "__main__":
    main()

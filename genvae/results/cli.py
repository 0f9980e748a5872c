"""Command line of the results pipeline: ``python -m genvae.results run | tables``."""

from __future__ import annotations

import argparse
from pathlib import Path

from genvae.errors import ConfigError, exit_on_config_error
from genvae.results.presets import EXPERIMENTS, PRESETS
from genvae.results.runner import ResultsRunner

REPO = Path(__file__).resolve().parents[2]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m genvae.results",
        description="Train and test every experiment of the results tables over seeds, and render the tables "
        "of README.md and docs/. Explained in docs/results.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run_help = "train + test every (experiment, seed), then aggregate and render (docs/results.md)"
    run = sub.add_parser("run", help=run_help, description=f"{run_help[0].upper()}{run_help[1:]}.")
    run.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    run.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    run.add_argument("--experiments", nargs="+", choices=list(EXPERIMENTS), default=list(EXPERIMENTS))
    run.add_argument("--data", type=Path, required=True, help="folder of the MNIST IDX files")
    run.add_argument("--out", type=Path, default=REPO / "results", help="results folder (runs/, summary.csv)")
    run.add_argument("--work", type=Path, default=None, help="checkpoints and logs (default: <out>/work)")
    run.add_argument("--fit-only", action="store_true", help="train (or resume) only; test and render later")
    run.add_argument(
        "--seed-major",
        action="store_true",
        help="every experiment of a seed before the next seed",
    )
    run.add_argument(
        "--skip-busy", action="store_true", help="leave runs another runner holds to that runner"
    )
    run.add_argument(
        "--retest",
        action="store_true",
        help="test finished runs again from their checkpoints (after a change of the evaluation)",
    )
    run.add_argument("--no-render", action="store_true", help="skip the summary, tables and figures")
    tables_help = (
        "aggregate results/runs and results/bench and render the tables and figures of README.md and "
        "docs/ (docs/results.md, docs/speed.md)"
    )
    tables = sub.add_parser(
        "tables", help=tables_help, description=f"{tables_help[0].upper()}{tables_help[1:]}."
    )
    tables.add_argument("--out", type=Path, default=REPO / "results")
    tables.add_argument("--data", type=Path, default=None, help="MNIST folder (for the random-latent row)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        if args.command == "run":
            runner = ResultsRunner(
                PRESETS[args.preset],
                data=args.data,
                runs=args.out / "runs",
                work=args.work or args.out / "work",
                repo=REPO,
            )
            experiments = [name for name in EXPERIMENTS if name in args.experiments]  # needs first
            if args.seed_major:
                jobs = [(e, s) for s in args.seeds for e in experiments]
            else:
                jobs = [(e, s) for e in experiments for s in args.seeds]
            if args.fit_only:
                for experiment, seed in jobs:
                    runner.ensure_fit(experiment, seed)
            else:  # runs another runner holds are left for the end, then waited for
                busy = [(e, s) for e, s in jobs if not runner.run(e, s, wait=False, retest=args.retest)]
                for experiment, seed in [] if args.skip_busy else busy:
                    runner.run(experiment, seed, retest=args.retest)
            if not args.fit_only:
                for seed in args.seeds:
                    runner.random_baseline(seed)
            if not (args.no_render or args.fit_only):
                from genvae.results.render import render_all

                render_all(args.out, data=args.data, repo=REPO)
        else:
            from genvae.results.render import render_all

            render_all(args.out, data=args.data, repo=REPO)
    except ConfigError as err:
        exit_on_config_error(err)

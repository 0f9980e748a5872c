"""Train and test every (experiment, seed) of the results tables, resumably, through the ``genvae`` command.

For each run the work folder ``<work>/<experiment>/seed<k>/`` (not committed) holds the checkpoints and
logs; the result folder ``<runs>/<experiment>/seed<k>/`` (committed) holds what the tables are made of:

- ``metrics.json``: the metrics JSON ``genvae test`` wrote, as it wrote it;
- ``run.json``: preset, epochs, seed, data split sizes, wall times, hardware and versions.

A run whose ``run.json`` names the requested preset and its epochs is skipped. A fit that was interrupted
resumes from its ``last.ckpt`` (exactly: genvae checkpoints hold the loader position and the random
generators); a finished fit whose test did not run is only tested. A finished fit of the same preset with
fewer epochs than the preset now asks for is continued to the new count rather than started over: genvae's
models train at a constant learning rate, so with exact resume the continued fit equals a fit of that many
epochs from the start. A checkpoint another run needs (the classifier of the feature metrics, the VQ-VAE
under the prior) is retrained when its work folder is gone (e.g. on a fresh clone).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import functools
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import yaml

from genvae.errors import ConfigError
from genvae.results.presets import EXPERIMENTS, Preset
from genvae.utils.atomic import atomic_write_bytes
from genvae.utils.machine import hardware_info

if TYPE_CHECKING:
    from genvae.data.datamodule import MNISTDataModule

__all__ = ["ResultsRunner", "RunPaths"]

CLASSIFIER_SEED = 0  # one feature network for every run's FID / precision / recall / identity metrics


def write_json(path: Path, payload: object) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class RunPaths:
    """Folders and files of one (experiment, seed) run."""

    work: Path
    result: Path

    @property
    def checkpoint(self) -> Path:
        return self.work / "checkpoints" / "last.ckpt"

    @property
    def fit_record(self) -> Path:
        return self.work / "fit.json"

    @property
    def test_metrics(self) -> Path:
        return self.checkpoint.with_name("last.metrics.json")

    @property
    def log_dir(self) -> Path:
        return self.work / "logs"


class ResultsRunner:
    """Runs the experiments of the results tables under one preset.

    Args:
        preset: training budget (:data:`genvae.results.presets.PRESETS`).
        data: folder of the MNIST IDX files (train and t10k).
        runs: committed result folder (``results/runs``).
        work: uncommitted work folder (checkpoints, logs).
        repo: folder holding ``experiments/`` (the repository root).
        log: where progress lines go.
    """

    def __init__(
        self,
        preset: Preset,
        data: Path,
        runs: Path,
        work: Path,
        repo: Path,
        log: Callable[[str], object] = print,
    ) -> None:
        self.preset = preset
        self.data = Path(data).resolve()
        self.runs = Path(runs)
        self.work = Path(work)
        self.repo = Path(repo)
        self.log = log
        self._held: set[tuple[str, int]] = set()

    @contextlib.contextmanager
    def claim(self, experiment: str, seed: int, wait: bool = True) -> Iterator[bool]:
        """Hold the (experiment, seed) run for this process, so parallel runners never train it twice.

        An ``flock`` on ``<work>/<experiment>/seed<k>.lock``; re-entrant within one runner. Yields False
        (without waiting) when another process holds it and ``wait`` is False.
        """
        if (experiment, seed) in self._held:
            yield True
            return
        lock = self.work / experiment / f"seed{seed}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with lock.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            self._held.add((experiment, seed))
            try:
                yield True
            finally:
                self._held.discard((experiment, seed))
                fcntl.flock(handle, fcntl.LOCK_UN)

    # ----------------------------------------------------------------- paths
    def paths(self, experiment: str, seed: int) -> RunPaths:
        return RunPaths(self.work / experiment / f"seed{seed}", self.runs / experiment / f"seed{seed}")

    def is_done(self, experiment: str, seed: int) -> bool:
        paths = self.paths(experiment, seed)
        record = read_json(paths.result / "run.json")
        return self._of_this_preset(record, experiment) and (paths.result / "metrics.json").is_file()

    def _of_this_preset(self, record: dict | None, experiment: str) -> bool:
        """Whether a run or fit record was made under this preset, with its current epochs (a preset whose
        epochs changed trains again)."""
        return (
            record is not None
            and record.get("preset") == self.preset.name
            and record.get("epochs") == self.preset.epochs[experiment]
        )

    def _continues(self, record: dict | None, experiment: str) -> bool:
        """Whether a fit record is a finished fit of this preset with fewer epochs than it now asks for."""
        return (
            record is not None
            and record.get("preset") == self.preset.name
            and isinstance(record.get("epochs"), int)
            and record["epochs"] < self.preset.epochs[experiment]
        )

    # ----------------------------------------------------------------- commands
    def _genvae(self, args: Sequence[str], log_file: Path) -> float:
        """Run ``python -m genvae <args>`` from the repository root, output appended to ``log_file``."""
        log_file.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled")}
        start = time.perf_counter()
        with log_file.open("a") as out:
            out.write(f"\n$ genvae {' '.join(args)}\n")
            out.flush()
            process = subprocess.run(
                [sys.executable, "-m", "genvae", *args],
                cwd=self.repo,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        if process.returncode != 0:
            tail = "".join(log_file.read_text().splitlines(keepends=True)[-15:])
            raise RuntimeError(
                f"genvae {args[0]} failed (exit {process.returncode}); see {log_file}:\n{tail}"
            )
        return time.perf_counter() - start

    def _common_arguments(self, experiment: str, seed: int, log_version: str) -> list[str]:
        paths = self.paths(experiment, seed)
        args = [
            "--config",
            str(self.repo / "experiments" / f"{experiment}.yaml"),
            "--seed_everything",
            str(seed),
            "--data.init_args.root",
            str(self.data),
            "--data.init_args.source",
            "train",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.default_root_dir",
            str(paths.work),
            "--trainer.logger",
            "lightning.pytorch.loggers.CSVLogger",
            "--trainer.logger.save_dir",
            str(paths.log_dir),
            "--trainer.logger.name",
            "",
            "--trainer.logger.version",
            log_version,
        ]
        if "vqvae" in EXPERIMENTS[experiment].needs:  # the priors: the same seed's VQ-VAE
            args += ["--model.init_args.vqvae_checkpoint", str(self.paths("vqvae", seed).checkpoint)]
        if "vqvae_prior" in EXPERIMENTS[experiment].needs:  # guidance: the same seed's unconditional prior
            args += ["--model.init_args.unconditional_prior", str(self.paths("vqvae_prior", seed).checkpoint)]
        return args

    # ----------------------------------------------------------------- stages
    def ensure_fit(self, experiment: str, seed: int) -> RunPaths:
        """Train ``experiment`` with ``seed`` unless its work folder holds a finished fit of this preset."""
        with self.claim(experiment, seed):
            return self._ensure_fit(experiment, seed)

    def _ensure_fit(self, experiment: str, seed: int) -> RunPaths:
        paths = self.paths(experiment, seed)
        record = read_json(paths.fit_record)
        if self._of_this_preset(record, experiment) and paths.checkpoint.is_file():
            return paths
        continued = self._continues(record, experiment) and paths.checkpoint.is_file()
        if record is not None and not self._of_this_preset(record, experiment) and not continued:
            shutil.rmtree(paths.work)  # another preset's (or more epochs'): start over
        for need in EXPERIMENTS[experiment].needs:
            if need != "classifier":
                self.ensure_fit(need, seed)
        resumed = paths.checkpoint.is_file()
        if not resumed:
            shutil.rmtree(paths.log_dir, ignore_errors=True)  # logs of a fit that never checkpointed
        version = f"fit-resumed{len(list(paths.log_dir.glob('fit*')))}" if resumed else "fit"
        args = [
            "fit",
            *self._common_arguments(experiment, seed, version),
            *self.preset.fit_arguments(experiment),
        ]
        args += [
            "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
            "--trainer.callbacks.dirpath",
            str(paths.checkpoint.parent),
            "--trainer.callbacks.save_last",
            "true",  # with the default save_top_k = 1: Lightning writes last.ckpt only when it saves one
        ]
        if resumed:
            args += ["--ckpt_path", str(paths.checkpoint)]
        doing = "training"
        if continued:
            doing = f"continuing from {record['epochs']} epochs"
        elif resumed:
            doing = "resuming"
        self.log(f"results: {experiment} seed {seed}: {doing} ({self.preset.name})")
        seconds = self._genvae(args, paths.work / "fit.log")
        if continued:
            seconds += float(record.get("seconds", float("nan")))  # the whole fit: earlier epochs too
        write_json(
            paths.fit_record,
            {
                "preset": self.preset.name,
                "epochs": self.preset.epochs[experiment],
                "seconds": seconds,  # of the last (resumed) invocation, or of all parts when continued
                "resumed": resumed and not continued,
                "continued_from_epochs": record["epochs"] if continued else None,
            },
        )
        return paths

    def evaluation_overlay(self, experiment: str, paths: RunPaths) -> Path | None:
        """The experiment's evaluation overlay with this run's classifier checkpoint and IWAE samples."""
        overlay = EXPERIMENTS[experiment].overlay
        if overlay is None:
            return None
        source = self.repo / "experiments" / "eval" / f"{overlay}.yaml"
        if not source.is_file():
            raise ConfigError(f"{source}: evaluation overlay not found")
        config = yaml.safe_load(source.read_text()) or {}
        classifier = str(self.paths("classifier", CLASSIFIER_SEED).checkpoint)
        for callback in config.get("trainer", {}).get("callbacks", []) or []:
            init_args = callback.setdefault("init_args", {}) or {}
            callback["init_args"] = init_args
            if "classifier_checkpoint" in init_args:
                init_args["classifier_checkpoint"] = classifier
            class_name = callback.get("class_path", "").rsplit(".", 1)[-1]
            if class_name == "ImportanceWeightedNLL":
                init_args["num_samples"] = self.preset.iwae_samples
            init_args.update(self.preset.callback_overrides.get(class_name, {}))
        target = paths.work / "eval.yaml"
        atomic_write_bytes(target, yaml.safe_dump(config, sort_keys=False).encode())
        return target

    def run(self, experiment: str, seed: int, wait: bool = True, retest: bool = False) -> bool:
        """Fit (or resume) and test one run, then copy its metrics JSON into the result folder.

        A finished run is skipped, unless ``retest``: then its checkpoint is tested again (after a change
        of the evaluation), without training. Returns False, doing nothing, when another runner holds the
        run and ``wait`` is False.
        """
        with self.claim(experiment, seed, wait) as claimed:
            if claimed:
                self._run(experiment, seed, retest)
            return claimed

    def _run(self, experiment: str, seed: int, retest: bool = False) -> None:
        if self.is_done(experiment, seed) and not retest:
            self.log(f"results: {experiment} seed {seed}: done ({self.preset.name}), skipped")
            return
        if "classifier" in EXPERIMENTS[experiment].needs:
            self.ensure_fit("classifier", CLASSIFIER_SEED)
        paths = self.ensure_fit(experiment, seed)
        overlay = self.evaluation_overlay(experiment, paths)
        args = [
            "test",
            *self._common_arguments(experiment, seed, "test"),
            *self.preset.overrides_for(experiment),
        ]
        if overlay is not None:
            args += ["--config", str(overlay)]
        if self.preset.test_limit is not None:
            args += ["--trainer.limit_test_batches", str(self.preset.test_limit)]
        args += ["--ckpt_path", str(paths.checkpoint)]
        paths.test_metrics.unlink(missing_ok=True)
        shutil.rmtree(paths.log_dir / "test", ignore_errors=True)
        self.log(f"results: {experiment} seed {seed}: testing")
        seconds = self._genvae(args, paths.work / "test.log")
        metrics = read_json(paths.test_metrics)
        if metrics is None:
            raise RuntimeError(f"genvae test wrote no metrics JSON at {paths.test_metrics}")
        fit = read_json(paths.fit_record) or {}
        write_json(paths.result / "metrics.json", metrics)
        write_json(
            paths.result / "run.json",
            {
                "experiment": experiment,
                "seed": seed,
                "preset": self.preset.name,
                "epochs": self.preset.epochs[experiment],
                "fit_seconds": round(float(fit.get("seconds", float("nan"))), 1),
                "fit_resumed": bool(fit.get("resumed", False)),
                "fit_continued_from_epochs": fit.get("continued_from_epochs"),
                "test_seconds": round(seconds, 1),
                "test_images": self.test_images(experiment),
                "iwae_samples": self.preset.iwae_samples if EXPERIMENTS[experiment].iwae else None,
                "hardware": hardware_info(),
            },
        )
        self.collect_figures(experiment, seed, paths)
        self.collect_validation_curve(paths)
        self.log(f"results: {experiment} seed {seed}: -> {paths.result / 'metrics.json'}")

    def collect_figures(self, experiment: str, seed: int, paths: RunPaths) -> None:
        """Copy the test-time PNG figures of the run into its result folder (``figures/<key>.png``)."""
        figures = paths.log_dir / "test" / "figures"
        if not figures.is_dir():
            return
        for png in sorted(figures.rglob("*.png")):
            key = png.parent.relative_to(figures).as_posix().replace("/", "_")
            target = paths.result / "figures" / f"{key}.png"
            atomic_write_bytes(target, png.read_bytes())

    def collect_validation_curve(self, paths: RunPaths) -> None:
        """Keep the per-epoch validation metrics of the fit (all resumed parts) as ``fit_metrics.csv``."""
        rows: list[dict[str, str]] = []
        for metrics in sorted(paths.log_dir.glob("fit*/metrics.csv")):
            with metrics.open() as handle:
                rows += [
                    r for r in csv.DictReader(handle) if any(k.startswith("val/") and v for k, v in r.items())
                ]
        if not rows:
            return
        columns = ["epoch", "step", *sorted({k for r in rows for k in r if k.startswith("val/")})]
        rows.sort(key=lambda r: int(r["step"]))
        out = io.StringIO()
        writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(paths.result / "fit_metrics.csv", out.getvalue().encode())

    def random_baseline(self, seed: int, latent_dim: int = 16) -> None:
        """Latent metrics of random N(0, I) latents against the real test attributes: what chance gives."""
        from genvae.data.datamodule import MNISTDataModule
        from genvae.metrics import disentanglement_metrics

        result = self.runs / "random_latent" / f"seed{seed}"
        if (result / "metrics.json").is_file():
            return
        datamodule = MNISTDataModule(root=str(self.data), source="train", download=False)
        datamodule.prepare_data()
        attributes = datamodule.load_split("test")["attributes"].double()
        generator = torch.Generator().manual_seed(seed)
        latents = torch.randn(len(attributes), latent_dim, generator=generator, dtype=torch.float64)
        metrics = disentanglement_metrics(latents, attributes, list(datamodule.attribute_names))
        write_json(result / "metrics.json", {f"test/{k}": v for k, v in metrics.items()})
        write_json(
            result / "run.json",
            {
                "experiment": "random_latent",
                "seed": seed,
                "preset": self.preset.name,
                "epochs": 0,
                "latent_dim": latent_dim,
                "test_images": len(attributes),
                "hardware": hardware_info(),
            },
        )
        self.log(f"results: random latent seed {seed}: -> {result / 'metrics.json'}")

    @functools.cached_property
    def _mnist(self) -> MNISTDataModule:
        """A datamodule on the data folder: finds its files and knows the default evaluation batch size."""
        from genvae.data.datamodule import MNISTDataModule

        return MNISTDataModule(root=str(self.data), source="train", attributes=False, download=False)

    @functools.cached_property
    def _test_set_size(self) -> int:
        """Images in the t10k set (its label file is read once per runner)."""
        from genvae.data.idx import read_idx

        path = self._mnist.find_file("t10k-labels-idx1-ubyte")
        if path is None:
            raise ConfigError(f"{self.data}: t10k-labels-idx1-ubyte[.gz] not found")
        return len(read_idx(path))

    def test_images(self, experiment: str) -> int:
        """Number of test images the run was scored on: the t10k set, or the preset's first batches."""
        count = self._test_set_size
        if self.preset.test_limit is not None:
            overrides = self.preset.overrides_for(experiment)
            key = "--data.init_args.eval_batch_size"
            batch = (
                int(overrides[overrides.index(key) + 1]) if key in overrides else self._mnist.eval_batch_size
            )
            count = min(count, self.preset.test_limit * batch)
        return int(count)

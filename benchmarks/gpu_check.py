"""GPU readiness in one command: attributes, one epoch per family and precision, and the training ratios.

    python benchmarks/gpu_check.py --data ../shared/data/mnist [--device cuda] [--json out.json]
    python benchmarks/gpu_check.py --data <tiny IDX folder> --device cpu --quick   # the code path, on CPU

Prints one table:

- the Morpho-MNIST attributes (:func:`genvae.data.attributes.morpho_attributes`) of every digit in the
  folder (70,000 for MNIST: train and t10k) on the device, after a warm-up call on 64 digits (CUDA context
  and operator caches); then the largest absolute difference from the CPU values on the first 2,000
  digits (blank digits, NaN on both sides, are compared as NaN == NaN);
- the causal Morpho-MNIST (set thickness, set intensity: :func:`genvae.data.causal.causal_images`) of the
  same digits on the device, thickness and intensity drawn from the causal model, and the mean and largest
  difference from the CPU result on the first 2,000 digits, in grey levels;
- one training epoch on the 60k source (``MNISTDataModule(source="train")``: the 54,000-digit training
  part) of the VAE, AR-VAE and VQ-VAE of ``experiments/{vae,arvae,vqvae}.yaml`` in ``32-true``,
  ``bf16-mixed`` and ``16-mixed`` precision: seconds from the start to the end of the training epoch
  (no validation, logger or checkpointing) and training images per second;
- the ratios of ``benchmarks/bench_training.py`` on the same device: the marginal step time of a plain
  PyTorch loop over that of ``genvae fit`` with the shipped YAML, per workload (conv VAE, AR-VAE, VQ-VAE,
  MLP VAE), with the benchmark's targets.

Targets (the ``target`` column): 70k attributes under 5 s, the 70k causal digits under 10 s (device and
CPU within half a grey level on average), a VAE epoch on 60k under 3 s, plain / genvae at
least 0.95 (0.90 for the MLP VAE). Without a CUDA GPU (and without ``--device cpu``) it says so and exits 0.
``--quick`` shrinks every part (at most 512 digits, one batch per epoch, one timed step) so that a
CPU test runs the same code. Exit status 1 when a part fails (the table says which and why).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml

from genvae.data import MNISTDataModule
from genvae.data.attributes import morpho_attributes
from genvae.data.causal import causal_images, sample_targets
from genvae.data.generated import generate_in_blocks
from genvae.data.idx import read_idx
from genvae.utils.console import silence_unactionable_notices

REPO = Path(__file__).resolve().parents[1]
FAMILIES = {"VAE": "vae", "AR-VAE": "arvae", "VQ-VAE": "vqvae"}  # name -> experiments/<stem>.yaml
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
COMPARED_DIGITS = 2000
TARGET_ATTRIBUTES_S = 5.0
TARGET_VAE_EPOCH_S = 3.0
TARGET_CAUSAL_S = 10.0  # "in seconds on a GPU" (issue 22) for the 70,000 digits


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def all_digits(root: Path) -> torch.Tensor:
    """Every digit ``[N, 28, 28]`` uint8 of the IDX files in ``root`` (train then t10k, those present)."""
    finder = MNISTDataModule(root=str(root), download=False, attributes=False)
    parts = []
    for stem in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        path = finder.find_file(stem)
        if path is not None:
            parts.append(read_idx(path))
    if not parts:
        raise SystemExit(f"gpu_check: no MNIST image files in {root}")
    return torch.cat(parts)


def check_attributes(digits: torch.Tensor, device: torch.device, compared: int) -> dict[str, float]:
    """Seconds for the attributes of ``digits`` on ``device``; max |device - CPU| on the first ``compared``."""
    on_device = digits.to(device)
    morpho_attributes(on_device[:64])  # warm-up
    synchronize(device)
    start = time.perf_counter()
    values = morpho_attributes(on_device)
    synchronize(device)
    seconds = time.perf_counter() - start
    ours, reference = values[:compared].cpu(), morpho_attributes(digits[:compared])
    same_nan = bool(torch.equal(ours.isnan(), reference.isnan()))
    finite = ~reference.isnan()
    difference = (ours[finite] - reference[finite]).abs().max().item() if finite.any() else 0.0
    return {"digits": len(digits), "seconds": seconds, "max_abs_diff": difference, "same_nan": same_nan}


def check_causal_dataset(digits: torch.Tensor, device: torch.device, compared: int) -> dict[str, float]:
    """Seconds to generate the causal Morpho-MNIST of ``digits`` on ``device`` (thickness and intensity
    drawn from the causal model, seed 0: :func:`genvae.data.causal.causal_images`), and the mean and
    largest |device - CPU| in grey levels over the first ``compared`` generated digits."""
    thickness, intensity = sample_targets(len(digits), seed=0)
    on_device = digits.to(device)
    causal_images(on_device[:64], thickness[:64].to(device), intensity[:64].to(device))  # warm-up
    synchronize(device)
    start = time.perf_counter()
    generated = generate_in_blocks(
        causal_images,
        on_device,
        thickness.to(device),
        intensity.to(device),
        description="causal Morpho-MNIST",
    )
    synchronize(device)
    seconds = time.perf_counter() - start
    reference = causal_images(digits[:compared], thickness[:compared], intensity[:compared])
    difference = (generated[:compared].cpu().int() - reference.int()).abs().float()
    return {
        "digits": len(digits),
        "seconds": seconds,
        "mean_abs_diff": float(difference.mean()),
        "max_abs_diff": float(difference.max()),
    }


class EpochTimer(L.Callback):
    """Wall time of the (single) training epoch, and the images it trained on."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.start, self.seconds, self.images = device, 0.0, math.nan, 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        synchronize(self.device)
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.images += len(batch["image"])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self.start


def build_from_config(stem: str) -> tuple[L.LightningModule, dict[str, Any]]:
    """The model of ``experiments/<stem>.yaml`` and its datamodule arguments."""
    config = yaml.safe_load((REPO / "experiments" / f"{stem}.yaml").read_text())
    module, _, name = config["model"]["class_path"].rpartition(".")
    model = getattr(importlib.import_module(module), name)(**config["model"].get("init_args", {}))
    return model, dict(config["data"].get("init_args", {}))


def one_epoch(root: Path, stem: str, precision: str, device: torch.device, quick: bool) -> dict[str, float]:
    """One training epoch of ``experiments/<stem>.yaml`` on the 60k source, in ``precision``."""
    L.seed_everything(0, verbose=False)
    model, data_args = build_from_config(stem)
    data_args.update(root=str(root), source="train", download=False)
    timer = EpochTimer(device)
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=1 if quick else 1.0,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        precision=precision,
        accelerator=device.type,
        devices=[device.index or 0] if device.type == "cuda" else 1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(model, datamodule=MNISTDataModule(**data_args))
    return {"seconds": timer.seconds, "images": timer.images, "images_per_s": timer.images / timer.seconds}


def training_ratios(root: Path, device: torch.device, quick: bool) -> dict[str, dict[str, Any]]:
    """Per workload of ``benchmarks/bench_training.py`` on ``device``: its label, the ratio plain / genvae
    of the marginal step times, and the target."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_training

    # a full run also records its JSON under results/bench (the README's speed table); a quick one does not
    sizes = ["--workloads", "mlp_vae", "--steps", "1", "3", "--repeats", "1", "--no-json"] if quick else []
    result = bench_training.main(["--data", str(root), "--device", str(device), *sizes])
    return {
        name: {"label": w["label"], "ratio": w["ratio_plain_over_genvae"], "target": w["target"]}
        for name, w in result["workloads"].items()
    }


def row(check: str, result: str, target: str = "", ok: bool | None = None) -> tuple[str, str, str, str]:
    return check, result, target, "" if ok is None else ("yes" if ok else "NO")


def timed_row(check: str, seconds: float, target_s: float) -> tuple[str, str, str, str]:
    """A table row of a timed check against its time target."""
    return row(check, f"{seconds:.2f} s", f"< {target_s:g} s", seconds < target_s)


def failure(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"failed: {type(err).__name__}: {text[0] if text else ''}"[:120]


def print_table(title: str, rows: list[tuple[str, str, str, str]]) -> None:
    header = ("check", "result", "target", "met")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    line = lambda r: "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    print(f"\n{title}\n{line(header)}\n{'  '.join('-' * w for w in widths)}")
    for r in rows:
        print(line(r))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=f"{__doc__.splitlines()[0]} Explained in docs/speed.md.")
    parser.add_argument("--data", type=Path, default=Path("data"), help="folder with the MNIST IDX files")
    parser.add_argument(
        "--device", default="cuda", help="cuda[:i] (default) or cpu (with --quick, for tests)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: runs the code path in seconds")
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA GPU on this machine (torch {torch.__version__}); nothing to check")
        return 0
    silence_unactionable_notices()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*You defined a `validation_step` but have no `val_dataloader`.*")
    warnings.filterwarnings("ignore", ".*is not supported on CPU. Using `precision='bf16-mixed'`.*")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    title = f"gpu_check on {name}: torch {torch.__version__} (CUDA {torch.version.cuda}), lightning {L.__version__}"
    start = time.perf_counter()
    rows, results, failed = [], {}, False

    digits = all_digits(args.data)
    if args.quick:
        digits = digits[:512]
    compared = min(COMPARED_DIGITS, len(digits))
    try:
        attrs = results["attributes"] = check_attributes(digits, device, compared)
        rows.append(
            timed_row(f"attributes of {attrs['digits']} digits", attrs["seconds"], TARGET_ATTRIBUTES_S)
        )
        nan_note = "" if attrs["same_nan"] else " (NaN rows differ)"
        rows.append(
            row(f"  max |{device.type} - cpu|, {compared} digits", f"{attrs['max_abs_diff']:.2e}{nan_note}")
        )
        failed |= not attrs["same_nan"]
    except Exception as err:  # report and go on: the other parts still say something
        rows.append(row("attributes", failure(err)))
        failed = True

    try:
        causal = results["causal_dataset"] = check_causal_dataset(digits, device, compared)
        rows.append(
            timed_row(f"causal Morpho-MNIST of {causal['digits']} digits", causal["seconds"], TARGET_CAUSAL_S)
        )
        rows.append(
            row(
                f"  |{device.type} - cpu| grey levels, {compared} digits",
                f"mean {causal['mean_abs_diff']:.3f}, max {causal['max_abs_diff']:.0f}",
                "mean < 0.5",
                causal["mean_abs_diff"] < 0.5,
            )
        )
        failed |= causal["mean_abs_diff"] >= 0.5
    except Exception as err:
        rows.append(row("causal Morpho-MNIST", failure(err)))
        failed = True

    results["epochs"] = {}
    for family in args.families:
        stem = FAMILIES[family]
        for precision in args.precisions:
            label = f"epoch {family} {precision}"
            try:
                epoch = results["epochs"][f"{family} {precision}"] = one_epoch(
                    args.data, stem, precision, device, args.quick
                )
            except Exception as err:
                rows.append(row(label, failure(err)))
                failed = True
                continue
            is_vae = family == "VAE"
            rows.append(
                row(
                    f"{label} ({epoch['images']} images)",
                    f"{epoch['seconds']:.2f} s, {epoch['images_per_s']:.0f} img/s",
                    f"< {TARGET_VAE_EPOCH_S:g} s" if is_vae else "",
                    epoch["seconds"] < TARGET_VAE_EPOCH_S if is_vae else None,
                )
            )

    try:
        ratios = results["bench_training"] = training_ratios(args.data, device, args.quick)
        for workload in ratios.values():
            rows.append(
                row(
                    f"bench_training plain/genvae, {workload['label']}",
                    f"{workload['ratio']:.2f}x",
                    f">= {workload['target']:.2f}x",
                    workload["ratio"] >= workload["target"],
                )
            )
    except Exception as err:
        rows.append(row("bench_training", failure(err)))
        failed = True

    results["seconds"] = time.perf_counter() - start
    print_table(f"{title}; {results['seconds']:.0f} s in all{' (--quick)' if args.quick else ''}", rows)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": name, "quick": args.quick, **results}, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

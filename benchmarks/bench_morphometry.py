"""Morphometric distances on the real t10k digits: known answers and the time of a 10k vs 10k comparison.

    python benchmarks/bench_morphometry.py --data ../shared/data/mnist [--device cpu] [--repeats 3] [--json F]
        [--checkpoint results/work/vae/seed0/checkpoints/last.ckpt]

Prints a Markdown table of FMD, W1 (thickness, slant) and the thickness / slant mean shift for three pairs
of sets: a random split of t10k into halves (same population), the first vs the last 5,000 digits (NIST SD-3
vs SD-1 writers) and the 10k digits vs the same digits dilated by one pixel (3 x 3 max filter), then the
best-of-``repeats`` wall time of ``morphometric_distances`` on two 10k vs 10k workloads and of the distances
alone on precomputed attributes. The typical workload compares t10k with as many training digits (the
population a model should generate), and with ``--checkpoint`` also with 10k samples of a trained model;
the dilated digits are the worst case, since the medial axis and the distance transform cost grows with
stroke area and thickness.
Every number it prints goes, with the machine (:func:`genvae.utils.machine.hardware_info`), the date and
the load average before and after, to ``results/bench/morphometry-<date>-<device>.json`` (or ``--json``),
from which ``python -m genvae.results tables`` renders the README's ``morphometry-known-answers`` and
``speed-morphometry`` sections.
"""

from __future__ import annotations

import argparse
import os
import pydoc
import sys
import time
from pathlib import Path

import torch
from scipy import ndimage

from genvae.checkpoints import checkpoint_class_path, read_checkpoint
from genvae.data.attributes import morpho_attributes
from genvae.data.datamodule import MNISTDataModule
from genvae.data.idx import read_idx
from genvae.errors import ConfigError, exit_on_config_error
from genvae.metrics.morphometry import attribute_distances, morphometric_distances
from genvae.utils.machine import benchmark_stamp, write_benchmark_record

REPO = Path(__file__).resolve().parents[1]


def best_time(fn: object, repeats: int, device: torch.device) -> float:
    """Best wall time of ``fn()`` in seconds over ``repeats`` runs (synchronised on CUDA)."""
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def find_images(folder: Path, split: str) -> Path:
    """The ``<split>-images-idx3-ubyte(.gz)`` file of an MNIST folder (found as the datamodule finds it), or
    a one-line ConfigError."""
    stem = f"{split}-images-idx3-ubyte"
    path = MNISTDataModule(root=str(folder), download=False, attributes=False).find_file(stem)
    if path is None:
        raise ConfigError(f"{folder}: {stem}[.gz] not found (given as --data)")
    return path


def display_path(path: Path) -> str:
    """``path`` as given when relative (e.g. ``results/work/vae/seed0/...``), else its file name only."""
    return path.name if path.is_absolute() else path.as_posix()


def model_samples(path: Path, count: int, device: torch.device) -> tuple[str, torch.Tensor]:
    """``count`` samples ``[count, 1, 28, 28]`` of the genvae model of a checkpoint, and the model's class name."""
    model_class = pydoc.locate(checkpoint_class_path(read_checkpoint(path, key="--checkpoint")) or "")
    if not isinstance(model_class, type) or not hasattr(model_class, "sample"):
        raise ConfigError(f"{path}: not a checkpoint of a genvae model that samples (given as --checkpoint)")
    model = model_class.load_from_checkpoint(path, map_location=device).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        samples = torch.cat([model.sample(min(1000, count - i)) for i in range(0, count, 1000)])
    return model_class.__name__, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=f"{__doc__.splitlines()[0]} Explained in docs/speed.md.")
    parser.add_argument("--data", required=True, help="folder with t10k-images-idx3-ubyte(.gz)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random split")
    parser.add_argument("--json", type=Path, default=None, help="output file (default: results/bench/...)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="also time t10k vs 10k samples of it")
    args = parser.parse_args()
    load_before = os.getloadavg()
    device = torch.device(args.device)
    folder = Path(args.data)
    path = find_images(folder, "t10k")
    images = read_idx(path).unsqueeze(1)
    training = read_idx(find_images(folder, "train"))[: len(images)].unsqueeze(1)
    if args.checkpoint is not None:
        family, samples = model_samples(args.checkpoint, len(images), device)
    dilated = torch.from_numpy(ndimage.maximum_filter(images.numpy(), size=(1, 1, 3, 3)))
    images, dilated = images.to(device), dilated.to(device)
    attributes, dilated_attributes = morpho_attributes(images), morpho_attributes(dilated)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed)).to(device)
    half = len(images) // 2
    pairs = {
        f"random halves of t10k (seed {args.seed})": (attributes[order[:half]], attributes[order[half:]]),
        f"first vs last {half:,} t10k (SD-3 vs SD-1 writers)": (attributes[:half], attributes[half:]),
        "t10k vs t10k dilated (3x3 max filter)": (attributes, dilated_attributes),
    }
    print(
        f"t10k: {len(images)} images from {path}, device {device}, torch threads {torch.get_num_threads()}\n"
    )
    columns = ["fmd", "w1/thickness", "w1/slant", "shift/thickness", "shift/slant", "ks/slant"]
    print("| sets | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    cases = []
    for name, (real, generated) in pairs.items():
        results = attribute_distances(real, generated)
        cases.append({"name": name, "real": len(real), "generated": len(generated), **results})
        print(f"| {name} | " + " | ".join(f"{results[c]:.3f}" for c in columns) + " |")
    compared = {f"t10k vs the first {len(training):,} training digits": training.to(device)}
    if args.checkpoint is not None:
        compared[f"t10k vs {len(samples):,} samples of a {family} ({display_path(args.checkpoint)})"] = (
            samples
        )
    compared["t10k vs t10k dilated (worst case: thick strokes)"] = dilated
    workloads = []
    print()
    for name, generated in compared.items():
        seconds = best_time(lambda g=generated: morphometric_distances(images, g), args.repeats, device)
        workloads.append({"name": name, "images": [len(images), len(generated)], "seconds": seconds})
        print(
            f"morphometric_distances, {name}, {len(images)} vs {len(generated)} images: "
            f"{seconds:.2f} s (best of {args.repeats})"
        )
    only = best_time(lambda: attribute_distances(attributes, dilated_attributes), args.repeats, device)
    print(f"attribute_distances on the precomputed attributes: {only * 1000:.1f} ms")
    record = {
        **benchmark_stamp(load_before),
        "command": " ".join(["benchmarks/bench_morphometry.py", *sys.argv[1:]]),
        "device": str(device),
        "images": len(images),
        "seed": args.seed,
        "cases": cases,
        "timing": {
            "repeats": args.repeats,
            "workloads": workloads,
            "attribute_distances_seconds": only,
        },
    }
    write_benchmark_record(record, REPO / "results" / "bench", "morphometry", device.type, args.json)


if __name__ == "__main__":
    try:
        main()
    except ConfigError as err:
        exit_on_config_error(err)

"""Morphometric distances on the real t10k digits: known answers and the time of a 10k vs 10k comparison.

    python benchmarks/bench_morphometry.py --data ../shared/data/mnist [--device cpu] [--repeats 3] [--json F]

Prints a Markdown table of FMD, W1 (thickness, slant) and the thickness / slant mean shift for three pairs
of sets: a random split of t10k into halves (same population), the first vs the last 5,000 digits (NIST SD-3
vs SD-1 writers) and the 10k digits vs the same digits dilated by one pixel (3 x 3 max filter), then the
best-of-``repeats`` wall time of ``morphometric_distances`` on 10k vs 10k images and of the distances alone
on their precomputed attributes. Every number it prints goes, with the machine
(:func:`genvae.utils.machine.hardware_info`), the date and the load average before and after, to
``results/bench/morphometry-<date>-<device>.json`` (or ``--json``), from which ``python -m genvae.results
tables`` renders the README's ``morphometry-known-answers`` section.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from scipy import ndimage

from genvae.data.attributes import morpho_attributes
from genvae.data.idx import read_idx
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with t10k-images-idx3-ubyte(.gz)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random split")
    parser.add_argument("--json", type=Path, default=None, help="output file (default: results/bench/...)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    device = torch.device(args.device)
    folder = Path(args.data)
    path = next(
        p for p in (folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-images-idx3-ubyte") if p.exists()
    )
    images = read_idx(path).unsqueeze(1)
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
    full = best_time(lambda: morphometric_distances(images, dilated), args.repeats, device)
    only = best_time(lambda: attribute_distances(attributes, dilated_attributes), args.repeats, device)
    print(
        f"\nmorphometric_distances, {len(images)} vs {len(dilated)} images: {full:.2f} s (best of {args.repeats})"
    )
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
            "images": [len(images), len(dilated)],
            "morphometric_distances_seconds": full,
            "attribute_distances_seconds": only,
        },
    }
    write_benchmark_record(record, REPO / "results" / "bench", "morphometry", device.type, args.json)


if __name__ == "__main__":
    main()

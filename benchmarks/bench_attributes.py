"""Time the torch Morpho-MNIST attributes against the scikit-image reference algorithm, in one run.

    python benchmarks/bench_attributes.py --data path/to/mnist [--reference-images 10000]

The reference is the released Morpho-MNIST procedure per image (scikit-image pyramid_expand, medial_axis,
numpy moments and bounding parallelogram). It prints ms/image for both and their ratio, and writes them
with the machine, thread count and versions to ``results/bench/attributes-<date>-<device>.json`` (or
``--json``), from which ``python -m genvae.results tables`` renders the README's speed table.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from skimage import morphology, transform

from genvae.data.attributes import morpho_attributes
from genvae.data.idx import read_idx
from genvae.utils.machine import benchmark_stamp, write_benchmark_record

REPO = Path(__file__).resolve().parents[1]

_PAIR_WEIGHTS = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [np.sqrt(2.0), 1.0, np.sqrt(2.0)]])


def _quantile_positions(cdf: np.ndarray, frac: float) -> tuple[float, float]:
    return tuple(np.interp([frac / 2, 1 - frac / 2], cdf, np.arange(len(cdf))))


def reference_attributes(image: np.ndarray, scale: int = 4) -> list[float]:
    """One image, the reference way: thickness, slant, length, area, width, height."""
    hires = (255.0 * transform.pyramid_expand(image, upscale=scale, order=3)).astype(np.uint8)
    low, high = int(hires.min()), int(hires.max())
    binary = hires >= low + 0.5 * (high - low)
    skeleton, distance = morphology.medial_axis(binary, return_distance=True, rng=0)
    skel = skeleton.astype(float)
    length = float((ndimage.correlate(skel, _PAIR_WEIGHTS, mode="constant") * skel).sum()) / scale
    thickness = 2.0 * float(distance[skeleton].mean()) / scale
    img = hires.astype(float)
    rows, cols = np.indices(img.shape)
    mass = img.sum()
    cy, cx = (rows * img).sum() / mass, (cols * img).sum() / mass
    mu11 = ((rows - cy) * (cols - cx) * img).sum() / mass
    mu02 = ((rows - cy) ** 2 * img).sum() / mass
    shear = mu11 / mu02
    shifted = cols + 0.5 - shear * (rows - cy)
    hcdf = np.array([img[shifted < t].sum() for t in range(img.shape[1])]) / mass
    vcdf = np.concatenate([[0.0], np.cumsum(img.sum(1))[:-1]]) / mass
    left, right = _quantile_positions(hcdf, 0.02)
    top, bottom = _quantile_positions(vcdf, 0.02)
    area = float(binary.sum()) / scale**2
    return [thickness, float(np.arctan(-shear)), length, area, (right - left) / scale, (bottom - top) / scale]


def main() -> None:
    parser = argparse.ArgumentParser(description=f"{__doc__.splitlines()[0]} Explained in docs/speed.md.")
    parser.add_argument("--data", required=True, help="folder with t10k-images-idx3-ubyte(.gz)")
    parser.add_argument("--reference-images", type=int, default=10000, help="images timed with the reference")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs of the torch version (best counts)"
    )
    parser.add_argument("--json", type=Path, default=None, help="output file (default: results/bench/...)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    path = next(
        p
        for p in (Path(args.data) / "t10k-images-idx3-ubyte.gz", Path(args.data) / "t10k-images-idx3-ubyte")
        if p.is_file()
    )
    images = read_idx(path)
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, {len(images)} images"
    )

    morpho_attributes(images[:256].to(device))  # warm-up
    runs = []
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        ours = morpho_attributes(images.to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        runs.append(time.perf_counter() - start)
    ours_s = min(runs)
    ours_ms = 1000 * ours_s / len(images)
    print(
        f"genvae torch : {ours_s:8.2f} s for {len(images)} images = {ours_ms:.4f} ms/image "
        f"(best of {' / '.join(f'{r:.2f}' for r in runs)} s)"
    )

    n_ref = min(args.reference_images, len(images))
    subset = images[:n_ref].numpy()
    start = time.perf_counter()
    ref = np.array([reference_attributes(img) for img in subset])
    ref_s = time.perf_counter() - start
    ref_ms = 1000 * ref_s / n_ref
    print(f"reference    : {ref_s:8.2f} s for {n_ref} images = {ref_ms:.4f} ms/image")
    print(f"speed-up     : {ref_ms / ours_ms:.1f}x per image")
    agreement = np.corrcoef(ours[:n_ref].cpu().double().numpy().T, ref.T).diagonal(len(ref.T))
    print("pearson r vs reference run:", " ".join(f"{r:.4f}" for r in agreement))
    record = {
        **benchmark_stamp(load_before),
        "device": str(device),
        "images": len(images),
        "repeats_seconds": runs,
        "genvae_seconds": ours_s,
        "genvae_ms_per_image": ours_ms,
        "reference_images": n_ref,
        "reference_seconds": ref_s,
        "reference_ms_per_image": ref_ms,
        "speedup": ref_ms / ours_ms,
        "pearson_r": [float(r) for r in agreement],
    }
    write_benchmark_record(record, REPO / "results" / "bench", "attributes", device.type, args.json)


if __name__ == "__main__":
    main()

"""Time the generation of the causal Morpho-MNIST dataset against DeepSCM's per-image scikit-image code.

    python benchmarks/bench_perturb.py --data path/to/mnist [--targets path/to/morpho_causal]
        [--reference-images 100]

Ours: :func:`genvae.data.causal.generate_causal_images` (``set_intensity(set_thickness(x, t), i)``) over all
train + t10k digits (70,000), then the six morphometrics of the generated images (the datamodule's two
steps at preparation). The reference: DeepSCM's ``create_synth_thickness_intensity_data.py`` per image
(``ImageMorphology`` at scale 16: ``pyramid_expand``, ``medial_axis``; ``SetThickness`` with its
supersampled disk; ``pyramid_reduce``; the intensity step), written out here with scikit-image, on the first
``--reference-images`` t10k digits. Both outputs are measured and compared with the targets. Targets: the
released CSVs when ``--targets`` is given, else drawn from the causal model (seed 0). Writes the numbers with
the machine, load and versions to ``results/bench/perturb-<date>-<device>.json`` (or ``--json``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from skimage import morphology, transform

from genvae.data.attributes import morpho_attributes
from genvae.data.causal import generate_causal_images, read_targets, sample_targets, target_file
from genvae.data.datamodule import attributes_with_progress
from genvae.data.idx import read_idx
from genvae.data.perturb import median_intensity
from genvae.utils.machine import benchmark_stamp, write_benchmark_record

REPO = Path(__file__).resolve().parents[1]
REFERENCE_SCALE = 16  # DeepSCM: ImageMorphology(images_[n], scale=16)


def _idx(folder: Path, stem: str) -> torch.Tensor:
    path = next(p for p in (folder / f"{stem}.gz", folder / stem) if p.is_file())
    return read_idx(path)


def reference_causal_image(image: np.ndarray, thickness: float, intensity: float) -> np.ndarray:
    """One digit, DeepSCM's way: SetThickness at scale 16, downscale, then the intensity step."""
    scale = REFERENCE_SCALE
    hires = (255.0 * transform.pyramid_expand(image, upscale=scale, order=3)).astype(np.uint8)
    low, high = int(hires.min()), int(hires.max())
    binary = hires >= low + 0.5 * (high - low)
    skeleton, distance = morphology.medial_axis(binary, return_distance=True, rng=0)
    delta = thickness - 2.0 * float(distance[skeleton].mean()) / scale
    radius = int(scale * abs(delta) / 2.0)
    disk = transform.pyramid_reduce(
        morphology.disk(scale * radius, dtype=np.float64), downscale=scale, order=1
    )
    footprint = disk > 0  # scipy's grey morphology reads a footprint as its non-zero support
    moved = morphology.dilation(binary, footprint) if delta >= 0 else morphology.erosion(binary, footprint)
    down = (255.0 * transform.pyramid_reduce(np.float32(moved), downscale=scale, order=3)).astype(np.uint8)
    low, high = down.min(), down.max()
    median = np.median(down[down >= low + (high - low) * 0.5])
    return np.clip(down * (intensity / median), 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=f"{__doc__.splitlines()[0]} Explained in docs/speed.md.")
    parser.add_argument("--data", required=True, type=Path, help="folder with the MNIST IDX files")
    parser.add_argument(
        "--targets", type=Path, default=None, help="folder with train-morpho.csv, t10k-morpho.csv"
    )
    parser.add_argument(
        "--reference-images", type=int, default=100, help="t10k digits run through the reference"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="output file (default: results/bench/...)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    device = torch.device(args.device)
    splits = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
    images, thickness, intensity = [], [], []
    for split, stem in splits.items():
        digits = _idx(args.data, stem)
        if args.targets is not None:
            t, i = read_targets(target_file(args.targets, split), len(digits))
        else:
            t, i = sample_targets(len(digits), seed=int(split == "test"))
        images.append(digits)
        thickness.append(t)
        intensity.append(i)
    test_start = len(images[0])
    images, thickness, intensity = torch.cat(images), torch.cat(thickness), torch.cat(intensity)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, {len(images)} images"
    )

    generate_causal_images(images[:256].to(device), thickness[:256], intensity[:256], "warm-up")
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    generated = generate_causal_images(images.to(device), thickness, intensity, "set thickness, intensity")
    if device.type == "cuda":
        torch.cuda.synchronize()
    generate_s = time.perf_counter() - start
    start = time.perf_counter()
    measured = attributes_with_progress(generated.to(device), "morphometrics")
    measure_s = time.perf_counter() - start
    total_s = generate_s + measure_s
    ours_ms = 1000 * generate_s / len(images)
    thickness_error = (measured[:, 0] - thickness).abs()
    intensity_error = (median_intensity(generated).float() - intensity).abs()
    print(f"genvae generation : {generate_s:8.2f} s = {ours_ms:.4f} ms/image")
    print(f"genvae measurement: {measure_s:8.2f} s; dataset total {total_s:.1f} s")
    print(
        f"|measured - target|: thickness mean {thickness_error.mean():.4f} median {thickness_error.median():.4f} px;"
        f" intensity mean {intensity_error.mean():.3f} grey levels"
    )

    n_ref = min(args.reference_images, len(images) - test_start)
    sample = slice(test_start, test_start + n_ref)
    start = time.perf_counter()
    reference = np.stack(
        [
            reference_causal_image(img, float(t), float(i))
            for img, t, i in zip(
                images[sample].numpy(), thickness[sample].tolist(), intensity[sample].tolist(), strict=True
            )
        ]
    )
    ref_s = time.perf_counter() - start
    ref_ms = 1000 * ref_s / n_ref
    reference = torch.from_numpy(reference)
    ref_thickness_error = (morpho_attributes(reference)[:, 0] - thickness[sample]).abs()
    ours_sample_error = thickness_error[sample]
    pixel_mae = (reference.float() - generated[sample].float()).abs().mean()
    print(f"reference (DeepSCM, scale 16): {ref_s:8.2f} s for {n_ref} images = {ref_ms:.2f} ms/image")
    print(f"speed-up          : {ref_ms / ours_ms:.0f}x per image")
    print(
        f"on the sample, thickness |measured - target| mean: reference {ref_thickness_error.mean():.4f}, "
        f"genvae {ours_sample_error.mean():.4f} px; pixel |genvae - reference| mean {pixel_mae:.2f} grey levels"
    )
    record = {
        **benchmark_stamp(load_before),
        "device": str(device),
        "images": len(images),
        "targets": "released" if args.targets is not None else "sampled (seed 0 train, 1 test)",
        "generation_seconds": generate_s,
        "generation_ms_per_image": ours_ms,
        "measurement_seconds": measure_s,
        "dataset_seconds": total_s,
        "thickness_abs_error_mean": float(thickness_error.mean()),
        "thickness_abs_error_median": float(thickness_error.median()),
        "intensity_abs_error_mean": float(intensity_error.mean()),
        "reference_images": n_ref,
        "reference_seconds": ref_s,
        "reference_ms_per_image": ref_ms,
        "speedup": ref_ms / ours_ms,
        "sample_reference_thickness_abs_error_mean": float(ref_thickness_error.mean()),
        "sample_genvae_thickness_abs_error_mean": float(ours_sample_error.mean()),
        "sample_pixel_abs_difference_mean": float(pixel_mae),
    }
    write_benchmark_record(record, REPO / "results" / "bench", "perturb", device.type, args.json)


if __name__ == "__main__":
    main()

"""Figure of the Morpho-MNIST perturbations (:mod:`genvae.data.perturb`) on real digits.

Rows are digits; columns the original, Castro et al.'s released perturbations (thinned 0.7, thickened 1.0,
swollen 3 / 7, 3 fractures) and the digit set to 1.5, 3 and 5 px thickness. Under each image, its measured
thickness (:func:`~genvae.data.attributes.morpho_attributes`), so the figure shows that the edits do what
they say.

    python -m genvae.plots.perturbations --data path/to/mnist [--out docs/figures/perturbations.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from genvae.data import perturb
from genvae.data.attributes import ATTRIBUTE_NAMES, morpho_attributes
from genvae.utils.images import figure_to_array, png_bytes

__all__ = ["perturbation_columns", "perturbation_figure"]

SET_THICKNESS = (1.5, 3.0, 5.0)


def perturbation_columns(images: Tensor, seed: int = 0) -> dict[str, Tensor]:
    """Column name -> the perturbed ``images`` (uint8 ``[N, 28, 28]``), in figure order."""
    generator = torch.Generator().manual_seed(seed)
    columns = {
        "original": images,
        "thinned (0.7)": perturb.thin(images, 0.7),
        "thickened (1.0)": perturb.thicken(images, 1.0),
        "swollen (3, 7)": perturb.swell(images, 3.0, 7.0, generator=generator),
        "fractured (3)": perturb.fracture(images, 3, generator=generator),
    }
    for value in SET_THICKNESS:
        columns[f"set to {value:g} px"] = perturb.set_thickness(images, value)
    return columns


def perturbation_figure(images: Tensor, seed: int = 0) -> np.ndarray:
    """``[H, W, 3]`` uint8 grid: one row per digit of ``images`` (uint8 ``[N, 28, 28]``), one column per
    perturbation, each image labelled with its measured thickness in px."""
    from matplotlib.figure import Figure

    columns = perturbation_columns(images, seed)
    thickness = {
        name: morpho_attributes(x)[:, ATTRIBUTE_NAMES.index("thickness")] for name, x in columns.items()
    }
    rows, cols = len(images), len(columns)
    figure = Figure(figsize=(1.25 * cols + 0.6, 1.35 * rows + 0.9))
    axes = figure.subplots(rows, cols, squeeze=False)
    figure.suptitle("Morpho-MNIST perturbations of t10k digits (measured thickness under each image, px)")
    for j, (name, x) in enumerate(columns.items()):
        axes[0, j].set_title(name, fontsize=9)
        for i in range(rows):
            ax = axes[i, j]
            ax.imshow(x[i].numpy(), cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"{float(thickness[name][i]):.2f} px", fontsize=8, labelpad=2)
            if j == 0:
                ax.set_ylabel(f"digit {i + 1}", fontsize=9)
    figure.tight_layout()
    return figure_to_array(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="folder with t10k-images-idx3-ubyte(.gz)")
    parser.add_argument("--out", type=Path, default=Path("docs/figures/perturbations.png"))
    parser.add_argument("--digits", type=int, default=6, help="first N t10k digits, one per row")
    parser.add_argument("--seed", type=int, default=0, help="seed of the swelling and fracture locations")
    args = parser.parse_args(argv)
    from genvae.data.idx import read_idx
    from genvae.utils.atomic import atomic_write_bytes

    path = next(
        p
        for p in (args.data / "t10k-images-idx3-ubyte.gz", args.data / "t10k-images-idx3-ubyte")
        if p.is_file()
    )
    images = read_idx(path)[: args.digits]
    atomic_write_bytes(args.out, png_bytes(perturbation_figure(images, args.seed)))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()

"""Figures of the morphometric evaluation: attribute distributions of two sets, and reconstruction scatter.

Both return ``[H, W, 3]`` uint8 arrays for :func:`genvae.utils.images.log_image`; the numbers in the
panel titles come from :mod:`genvae.metrics.morphometry`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from genvae.data.attributes import ATTRIBUTE_NAMES
from genvae.metrics.morphometry import ATTRIBUTE_UNITS, defined_rows
from genvae.utils.images import figure_to_array

__all__ = ["distribution_figure", "reconstruction_figure"]


def _panels(title: str) -> tuple[Any, np.ndarray]:
    """A titled figure with one panel per attribute (2 x 3)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 6.4))
    axes = figure.subplots(2, 3, squeeze=False)
    figure.suptitle(title)
    return figure, axes


def distribution_figure(
    real: Tensor,
    generated: Tensor,
    results: dict[str, float],
    title: str,
    labels: tuple[str, str] = ("test images", "generated"),
) -> np.ndarray:
    """Histograms (densities) of each attribute of ``real`` and ``generated`` ``[N, 6]``, 2 x 3 panels.

    Bins span the 0.5%-99.5% quantiles of the pooled values; each panel is titled with its W1 and KS from
    ``results`` (:func:`~genvae.metrics.morphometry.attribute_distances`); ``labels`` name the two sets.
    """
    real = real[defined_rows(real)].double().cpu()
    generated = generated[defined_rows(generated)].double().cpu()
    figure, axes = _panels(title)
    for j, (ax, name) in enumerate(zip(axes.flat, ATTRIBUTE_NAMES, strict=True)):
        unit = ATTRIBUTE_UNITS[name]
        pooled = torch.cat([real[:, j], generated[:, j]])
        if len(pooled):
            low, high = torch.quantile(pooled, torch.tensor([0.005, 0.995], dtype=torch.float64)).tolist()
            bins = np.linspace(low, high if high > low else low + 1.0, 41)
            for values, label in zip((real, generated), labels, strict=True):
                if not len(values):  # every image of this set blank: nothing to draw
                    continue
                ax.hist(values[:, j].numpy(), bins=bins, density=True, histtype="step", label=label)
        w1, ks = results.get(f"w1/{name}", math.nan), results.get(f"ks/{name}", math.nan)
        ax.set_title(f"{name}: W1 {w1:.3g} {unit}, KS {ks:.2f}", fontsize=10)
        ax.set_xlabel(f"{name} ({unit})")
        ax.set_ylabel(f"density (1/{unit})")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    figure.tight_layout()
    return figure_to_array(figure)


def reconstruction_figure(
    original: Tensor, reconstructed: Tensor, results: dict[str, float], title: str, max_points: int = 2000
) -> np.ndarray:
    """Scatter of each attribute of the reconstruction against the original's (first ``max_points``)."""
    ok = defined_rows(original) & defined_rows(reconstructed)
    original, reconstructed = original[ok][:max_points].cpu(), reconstructed[ok][:max_points].cpu()
    figure, axes = _panels(title)
    for j, (ax, name) in enumerate(zip(axes.flat, ATTRIBUTE_NAMES, strict=True)):
        unit = ATTRIBUTE_UNITS[name]
        x, y = original[:, j].numpy(), reconstructed[:, j].numpy()
        ax.scatter(x, y, s=3, alpha=0.4)
        if len(x):
            low, high = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
            ax.plot([low, high], [low, high], color="black", linewidth=0.8, label="a(x^) = a(x)")
        r, mae = results.get(f"recon_r/{name}", math.nan), results.get(f"recon_mae/{name}", math.nan)
        ax.set_title(f"{name}: r {r:.3f}, MAE {mae:.3g} {unit}", fontsize=10)
        ax.set_xlabel(f"test image ({unit})")
        ax.set_ylabel(f"reconstruction ({unit})")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    figure.tight_layout()
    return figure_to_array(figure)

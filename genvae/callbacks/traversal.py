"""Latent traversals: decode a sweep of one latent dim at a time, and measure what changes.

Around a centre latent (the mean of the test latents after ``test``, the prior's 0 otherwise) each
traversed dim ``d`` is moved from ``-span`` to ``+span`` standard deviations (the test latents' std of
``d``, or the prior's 1) with the other dims held. The grid image has one column per dim and one row per
step. When the data has Morpho-MNIST attributes, the attribute tied to each dim (the AR-VAE's regularized
attribute, or after ``test`` the attribute whose interpretability picked the dim) is measured with
:func:`~genvae.data.attributes.morpho_attributes` on the decoded images of a finer sweep, averaged over
sweeps from several test latents, and plotted: for a well-trained AR-VAE each curve rises monotonically.
The sweeps themselves live in :mod:`genvae.latent.traversal` (re-exported here); this module is the
Lightning glue and the figure.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchvision.utils import make_grid

from genvae.errors import ConfigError
from genvae.latent.traversal import (
    attribute_curves,
    attribute_pairs,
    base_latents,
    curve_monotonicity,
    traversal_axis,
    traverse,
)
from genvae.utils.images import figure_to_array, log_image

__all__ = [
    "LatentTraversal",
    "attribute_curves",
    "attribute_pairs",
    "base_latents",
    "curve_monotonicity",
    "traversal_axis",
    "traverse",
]


_UNITS = {"thickness": "px", "slant": "rad", "length": "px", "area": "px²", "width": "px", "height": "px"}


def _grid_figure(grid: Tensor, offsets: Tensor, columns: Sequence[str], cell: int) -> object:
    """The traversal grid with named columns (latent dim and its attribute) and rows (offset in std)."""
    from matplotlib.figure import Figure

    height, width = grid.shape[-2:]
    figure = Figure(figsize=(max(4.0, 0.75 * len(columns) + 1.2), 0.75 * len(offsets) + 1.0))
    ax = figure.add_subplot()
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([2 + cell / 2 + i * (cell + 2) for i in range(len(columns))])
    ax.set_xticklabels(columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks([2 + cell / 2 + i * (cell + 2) for i in range(len(offsets))])
    ax.set_yticklabels([f"{v:+.1f}σ" for v in offsets.tolist()], fontsize=8)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_ylabel("offset from the mean latent (std)")
    ax.set_title("latent traversal: one dim per column")
    figure.tight_layout()
    return figure


def _curve_figure(offsets: Tensor, values: Tensor, pairs: Sequence[tuple[int, str]]) -> object:
    """One panel per (dim, attribute) pair: the measured attribute against the offset in std."""
    from matplotlib.figure import Figure

    cols = min(3, len(pairs))
    rows = -(-len(pairs) // cols)
    figure = Figure(figsize=(3.2 * cols, 2.6 * rows))
    axes = figure.subplots(rows, cols, squeeze=False)
    for ax, (dim, name), curve in zip(axes.flat, pairs, values, strict=False):
        ax.plot(offsets.numpy(), curve.numpy(), marker="o", markersize=3)
        ax.set_title(f"z{dim}: {name}", fontsize=10)
        ax.set_xlabel("offset (std)")
        ax.set_ylabel(f"measured {name} ({_UNITS.get(name, 'units')})", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(pairs) :]:
        ax.axis("off")
    figure.tight_layout()
    return figure


class LatentTraversal(L.Callback):
    """Log a latent traversal grid (and measured attribute curves) at the end of ``fit`` and ``test``.

    Images go through :func:`~genvae.utils.images.log_image` as ``<stage>/traversal/grid`` and
    ``<stage>/traversal/attributes`` with ``stage`` ``fit`` or ``test``. Needs a model with a flat latent
    (``latent_dim``) and ``decode``.

    Args:
        dims: latent dims to traverse (default: the AR-VAE's regularized dims, else every dim).
        steps: rows of the grid, evenly spaced from ``-span`` to ``+span`` std.
        span: extent of the sweep in standard deviations.
        curve_steps: points of the finer sweep on which attributes are measured.
        num_bases: test latents whose sweeps are measured and averaged (the centre alone before ``test``).
    """

    def __init__(
        self,
        dims: list[int] | None = None,
        steps: int = 7,
        span: float = 3.0,
        curve_steps: int = 13,
        num_bases: int = 16,
    ) -> None:
        if steps < 2 or curve_steps < 2 or span <= 0 or num_bases < 1:
            raise ConfigError(
                "LatentTraversal: steps and curve_steps must be >= 2, span > 0 and num_bases >= 1"
            )
        self.num_bases = num_bases
        self.dims = None if dims is None else [int(d) for d in dims]
        self.steps = steps
        self.span = span
        self.curve_steps = curve_steps

    def traversed_dims(self, module: L.LightningModule) -> list[int]:
        if self.dims is not None:
            bad = [d for d in self.dims if not 0 <= d < module.latent_dim]
            if bad:
                raise ConfigError(f"LatentTraversal.dims: {bad} outside [0, latent_dim={module.latent_dim})")
            return self.dims
        regularized = getattr(module, "regularized_dims", None)
        return list(regularized) if regularized is not None else list(range(module.latent_dim))

    def log_traversal(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        if trainer.global_rank != 0 or trainer.sanity_checking:
            return
        if not isinstance(getattr(module, "latent_dim", None), int) or not hasattr(module, "decode"):
            rank_zero_warn(
                f"LatentTraversal: {type(module).__name__} has no flat latent; no traversal logged"
            )
            return
        offsets = torch.linspace(-self.span, self.span, self.steps)
        dims = self.traversed_dims(module)
        images = traverse(module, dims, offsets)[:, :, 0]  # from the centre
        cols = images.shape[1]
        grid = make_grid(images.flatten(0, 1).float().cpu(), nrow=cols, padding=2, pad_value=1.0)
        pairs = attribute_pairs(module)
        names = dict(pairs)
        columns = [f"z{d}: {names[d]}" if d in names else f"z{d}" for d in dims]
        figure = _grid_figure(grid, offsets, columns, images.shape[-1])
        log_image(trainer, f"{stage}/traversal/grid", figure_to_array(figure))
        datamodule = getattr(trainer, "datamodule", None)
        if not getattr(datamodule, "attributes", False) or not pairs:
            return
        curve_offsets, values = attribute_curves(module, pairs, self.curve_steps, self.span, self.num_bases)
        figure = _curve_figure(curve_offsets, values, pairs)
        log_image(trainer, f"{stage}/traversal/attributes", figure_to_array(figure))
        results = getattr(module, "test_results", None)
        if stage == "test" and isinstance(results, dict):  # read by MetricsJSON, which runs after this
            for (_, name), rho in zip(pairs, curve_monotonicity(values), strict=True):
                results[f"test/traversal_monotonicity/{name}"] = rho

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.log_traversal(trainer, pl_module, "fit")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.log_traversal(trainer, pl_module, "test")

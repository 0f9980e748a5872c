"""Edit grids: rows = digits, columns = requested values of one attribute, each cell annotated with the
value measured on the decoded image (the Morpho-MNIST morphometrics, physical units).

:func:`edit_grid` runs the edits (:class:`~genvae.latent.control.AttributeControl`); :func:`grid_figure`
draws them with matplotlib (title, named columns and rows, units); :func:`comparison_figure` shows input,
reconstruction and edited digit side by side for ``genvae edit --set``. Used by the
``AttributeControlEvaluation`` callback and by the ``genvae edit`` command.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from genvae.data.attributes import ATTRIBUTE_NAMES
from genvae.latent.control import AttributeControl
from genvae.metrics.morphometry import ATTRIBUTE_UNITS
from genvae.models.conditioning import Condition

__all__ = ["comparison_figure", "edit_grid", "format_request", "grid_figure"]


def format_request(value: float, absolute: bool, name: str) -> str:
    """``+1 px`` for a change, ``=3 px`` for an absolute value."""
    return f"{'=' if absolute else ''}{value:{'' if absolute else '+'}.3g} {ATTRIBUTE_UNITS[name]}"


def edit_grid(
    control: AttributeControl,
    images: Tensor,
    name: str,
    values: Sequence[float],
    absolute: Sequence[bool],
    condition: Condition | None = None,
) -> tuple[Tensor, Tensor]:
    """Edited images ``[R, C, 1, H, W]`` and the measured attribute ``[R, C]`` of ``name``: row ``r`` is
    ``images[r]``, column ``c`` asks for ``values[c]`` (a change, or an absolute value where
    ``absolute[c]``); ``condition``: the images' condition for a conditional model."""
    if len(values) != len(absolute) or not values:
        raise ValueError("edit_grid: one absolute flag per requested value, and at least one value")
    column = ATTRIBUTE_NAMES.index(name)
    cells, measured = [], []
    reference = control.reference(images, condition)
    for value, is_absolute in zip(values, absolute, strict=True):
        request = {name: float(value)}
        if is_absolute:
            result = control.apply(images, absolute=request, reference=reference)
        else:
            result = control.apply(images, request, reference=reference)
        cells.append(result.images.cpu())
        measured.append(result.measured[:, column].cpu())
    return torch.stack(cells, dim=1), torch.stack(measured, dim=1)


def _show(ax: Any, image: Tensor) -> None:
    ax.imshow(image.squeeze(0).float().clamp(0, 1).numpy(), cmap="gray_r", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def grid_figure(
    images: Tensor,
    measured: Tensor,
    name: str,
    column_titles: Sequence[str],
    row_titles: Sequence[str],
    title: str,
    originals: Tensor | None = None,
) -> Any:
    """A matplotlib figure of an edit grid ``[R, C, 1, H, W]``, each cell captioned with ``measured [R, C]``
    (``name`` in its unit); ``originals [R, 1, H, W]`` add a first column with the input digits."""
    from matplotlib.figure import Figure

    rows, cols = images.shape[:2]
    extra = 0 if originals is None else 1
    figure = Figure(figsize=(max(1.25 * (cols + extra) + 0.8, 6.5), 1.45 * rows + 1.2))  # room for the title
    axes = figure.subplots(rows, cols + extra, squeeze=False)
    unit = ATTRIBUTE_UNITS[name]
    for r in range(rows):
        if originals is not None:
            _show(axes[r, 0], originals[r].cpu())
            axes[r, 0].set_xlabel("input", fontsize=7)
        for c in range(cols):
            ax = axes[r, c + extra]
            _show(ax, images[r, c])
            value = float(measured[r, c])
            ax.set_xlabel("blank" if math.isnan(value) else f"{value:.2f} {unit}", fontsize=7)
        axes[r, 0].set_ylabel(row_titles[r], fontsize=8)
    if originals is not None:
        axes[0, 0].set_title("input", fontsize=8)
    for c, text in enumerate(column_titles):
        axes[0, c + extra].set_title(text, fontsize=8)
    figure.suptitle(f"{title}\ncolumns: requested {name} ({unit})\nunder each digit: {name} measured on it")
    figure.tight_layout()
    return figure


def comparison_figure(
    inputs: Tensor,
    reconstruction: Tensor,
    edited: Tensor,
    original: Tensor,
    measured: Tensor,
    requests: Mapping[str, str],
    row_titles: Sequence[str],
    title: str,
) -> Any:
    """Input, reconstruction and edited digit per row; the requested attributes measured on the
    reconstruction ``original [N, 6]`` and on the edit ``measured [N, 6]`` written under them (a request
    without attributes, such as a label edit, shows thickness, slant, width and height: the style it keeps)."""
    from matplotlib.figure import Figure

    names = [name for name in requests if name in ATTRIBUTE_NAMES] or [
        "thickness",
        "slant",
        "width",
        "height",
    ]
    columns = [ATTRIBUTE_NAMES.index(n) for n in names]

    def caption(values: Tensor) -> str:
        return "\n".join(
            f"{n} {float(values[c]):.2f} {ATTRIBUTE_UNITS[n]}" for n, c in zip(names, columns, strict=True)
        )

    rows = len(inputs)
    figure = Figure(figsize=(5.2, (1.3 + 0.25 * len(names)) * rows + 0.9))
    axes = figure.subplots(rows, 3, squeeze=False)
    for r in range(rows):
        for c, image in enumerate((inputs[r], reconstruction[r], edited[r])):
            _show(axes[r, c], image.cpu())
        axes[r, 1].set_xlabel(caption(original[r]), fontsize=7)
        axes[r, 2].set_xlabel(caption(measured[r]), fontsize=7)
        axes[r, 0].set_ylabel(row_titles[r], fontsize=8)
    asked = ", ".join(f"{n} {text}" for n, text in requests.items())
    for c, text in enumerate(("input", "reconstruction", f"edited: {asked}")):
        axes[0, c].set_title(text, fontsize=8)
    figure.suptitle(f"{title}\nunder each digit: attributes measured on it (Morpho-MNIST)")
    figure.tight_layout()
    return figure

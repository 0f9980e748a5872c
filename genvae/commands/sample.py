"""``genvae sample``: new digits of a requested class with requested Morpho-MNIST attributes.

    genvae sample --config experiments/arvae_conditional.yaml --ckpt_path run/last.ckpt \\
        --label 7 --set thickness=3.0 --set slant=-0.2 --num 64 --out sevens.png
    genvae sample --config experiments/arvae_conditional.yaml --ckpt_path run/last.ckpt \\
        --grid thickness=1.5,2.5,3.5,4.5 --out thickness.png --npz thickness.npz

Values are absolute, in the attribute's unit (px, rad, px^2): ``slant=-0.2`` asks for a slant of -0.2 rad.
Each request goes through the model's condition where it is conditioned on it, else through the calibrated
regularized dim of an AR-VAE, closed loop as ``genvae edit`` does (:func:`genvae.latent.sample`); the
calibration is the one ``genvae edit`` reads or fits (``<checkpoint stem>.control.json``). A request the
model can serve neither way is one ``genvae: error:`` line. ``--grid NAME=V1,V2,...``: rows = classes 0-9
(a label-conditional model; otherwise ``--rows`` prior draws), columns = the requested values, each cell
captioned with the value measured on the generated digit; a row keeps its prior draw across the columns.
``--npz`` writes the images ``[N, 1, 28, 28]`` (float in [0, 1]) with their label, the requested and the
measured attributes. A label-conditional model draws its latents from the Gaussian of the requested class's
aggregate posterior, fitted on the training split (``--prior class``, :mod:`genvae.latent.class_latents`),
or from the N(0, I) prior it was trained with (``--prior standard``). Model, data and overrides are read as
by ``genvae fit/test`` (:mod:`genvae.commands.edit`).
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from genvae.commands.edit import (
    add_calibration_arguments,
    attribute_control,
    load_model,
    parse_label,
    parse_request,
)
from genvae.data.attributes import ATTRIBUTE_NAMES
from genvae.errors import ConfigError, exit_on_config_error
from genvae.latent.class_latents import ClassLatents, has_class_latents
from genvae.latent.grid import grid_figure
from genvae.latent.sampling import SampleResult, check_requests, latent_attributes, sample
from genvae.metrics.morphometry import ATTRIBUTE_UNITS
from genvae.models.conditioning import LABEL, NUM_CLASSES
from genvae.utils.atomic import atomic_write_bytes
from genvae.utils.images import figure_to_array, png_bytes

__all__ = ["build_parser", "main", "run", "sample_figure"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genvae sample",
        description="Generate digits of a requested class with requested Morpho-MNIST attributes (absolute "
        "values, px / rad). Explained in docs/latent-control.md. Other arguments (--data.init_args.root ...) go "
        "to the config parser of genvae fit.",
    )
    parser.add_argument("--config", action="append", required=True, help="experiment YAML (repeatable)")
    parser.add_argument("--ckpt_path", required=True, help="checkpoint of the model")
    parser.add_argument("--label", type=int, help="class of every digit (label-conditional models)")
    parser.add_argument("--set", action="append", metavar="NAME=VALUE", help="absolute attribute value")
    parser.add_argument("--grid", metavar="NAME=V1,V2,...", help="rows = classes 0-9, one column per value")
    parser.add_argument("--num", type=int, default=64, help="digits drawn with --set (default 64)")
    parser.add_argument("--rows", type=int, default=10, help="--grid rows of a model without labels")
    parser.add_argument("--out", default="samples.png", help="PNG file written")
    parser.add_argument("--npz", help="also write images, requested and measured attributes to this .npz")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prior draws")
    parser.add_argument(
        "--prior",
        choices=("class", "standard"),
        help="latents of a label-conditional model: class = each class's aggregate posterior (default), "
        "standard = the N(0, I) prior it was trained with",
    )
    add_calibration_arguments(parser)
    return parser


def _class_latents(
    model: Any, train: Mapping[str, Tensor], prior: str | None, checkpoint: Path
) -> ClassLatents | None:
    """The class latents of a label-conditional model with a flat latent (``--prior class``, its default),
    fitted on the training split (cached beside the checkpoint); None for ``--prior standard`` and for
    other models."""
    possible = has_class_latents(model)
    if prior == "standard" or (prior is None and not possible):
        return None
    if not possible:
        raise ConfigError(
            f"--prior class: {type(model).__name__} is not a label-conditional model with a flat latent "
            "(condition: [label]); use --prior standard"
        )
    return ClassLatents.fit_split(model, train, checkpoint)


def _requests(texts: Sequence[str], key: str) -> dict[str, float]:
    """``--set`` values as absolute numbers (a sign is part of the value here)."""
    requests = {}
    for text in texts:
        name, values = parse_request(text, key)
        if len(values) != 1:
            raise ConfigError(f"{key}: one value per attribute (use --grid for several)")
        requests[name] = values[0][0]
    return requests


def sample_figure(result: SampleResult, names: Sequence[str], title: str, columns: int = 8) -> Any:
    """The digits of ``result`` in rows of ``columns``, each captioned with its class and the requested
    attributes ``names`` measured on it."""
    from matplotlib.figure import Figure

    n = len(result.images)
    columns = min(columns, n)
    rows = math.ceil(n / columns)
    figure = Figure(figsize=(1.25 * columns + 0.4, (1.25 + 0.18 * len(names)) * rows + 1.0))
    axes = figure.subplots(rows, columns, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        ax.imshow(result.images[i, 0].float().clamp(0, 1).cpu().numpy(), cmap="gray_r", vmin=0, vmax=1)
        lines = [] if int(result.label[i]) < 0 else [f"class {int(result.label[i])}"]
        for name in names:
            value = float(result.measured[i, ATTRIBUTE_NAMES.index(name)])
            lines.append("blank" if math.isnan(value) else f"{value:.2f} {ATTRIBUTE_UNITS[name]}")
        ax.set_xlabel("\n".join(lines), fontsize=7)
    asked = ", ".join(f"{name} = {_value(result, name):g} {ATTRIBUTE_UNITS[name]}" for name in names)
    figure.suptitle(
        f"{title}\nrequested: {asked or 'nothing'}; under each digit: its class and measured values"
    )
    figure.tight_layout()
    return figure


def _value(result: SampleResult, name: str) -> float:
    return float(result.requested[0, ATTRIBUTE_NAMES.index(name)])


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _report(result: SampleResult, names: Sequence[str]) -> None:
    """One line per requested attribute: how it was served and the median |measured - requested|."""
    for name in names:
        column = ATTRIBUTE_NAMES.index(name)
        error = (result.measured[:, column] - result.requested[:, column]).abs().nanmedian()
        print(
            f"{name} = {_value(result, name):g} {ATTRIBUTE_UNITS[name]} (via {result.via[name]}): "
            f"median |measured - requested| = {float(error):.3g} {ATTRIBUTE_UNITS[name]}",
            file=sys.stderr,
        )


def run(options: argparse.Namespace, overrides: list[str]) -> Path:
    """Parse the requests, load model and data, generate, draw and write ``--out`` (and ``--npz``)."""
    label, texts = parse_label(options.set or [], "--set")
    if label is not None:
        raise ConfigError("--set: the class is --label K, not --set label=K")
    attributes = _requests(texts, "--set")
    grid = parse_request(options.grid, "--grid") if options.grid else None
    if grid is not None and grid[0] in attributes:
        raise ConfigError(f"--grid: {grid[0]} is also given with --set")
    if options.num < 1 or options.rows < 1 or options.calibration_images < 3 or options.rounds < 0:
        raise ConfigError("--num and --rows must be >= 1, --calibration_images >= 3 and --rounds >= 0")
    if options.label is not None and not 0 <= options.label < NUM_CLASSES:
        raise ConfigError(f"--label: {options.label} is not a class in [0, {NUM_CLASSES})")
    options.ckpt_path = Path(options.ckpt_path)
    model, datamodule = load_model(options.config, overrides, options.ckpt_path, "genvae sample", False)
    model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    asked = {**attributes, **({grid[0]: grid[1][0][0]} if grid else {})}
    check_requests(model, options.label, asked)  # before any calibration: one line for what cannot be served
    train = datamodule.splits["train"]
    steered = [name for name in asked if name in latent_attributes(model)]
    control = attribute_control(model, datamodule, options, steered) if steered else None

    class_latents = _class_latents(model, train, options.prior, options.ckpt_path)
    title = f"{type(model).__name__} {options.ckpt_path.name}" + (", class latents" if class_latents else "")

    def draw(n: int, label: int | Tensor | None, values: Mapping[str, float]) -> SampleResult:
        return sample(
            model,
            n,
            label,
            values,
            control=control,
            class_latents=class_latents,
            data=train,
            seed=options.seed,
        )

    if grid is None:
        result = draw(options.num, options.label, attributes)
        figure = sample_figure(result, list(attributes), title)
        results, shape = [result], (len(result.images),)
        _report(result, list(attributes))
    else:
        name, values = grid
        if options.label is not None:
            raise ConfigError("--label: --grid draws one row per class (0-9); leave --label out")
        by_class = LABEL in getattr(model, "condition_names", ())
        rows = NUM_CLASSES if by_class else options.rows
        labels = torch.arange(NUM_CLASSES) if by_class else None
        results = [draw(rows, labels, {**attributes, name: value}) for value, _ in values]
        images = torch.stack([r.images.cpu() for r in results], 1)  # [rows, columns, 1, H, W]
        measured = torch.stack([r.measured[:, ATTRIBUTE_NAMES.index(name)].cpu() for r in results], 1)
        row_titles = (
            [f"class {c}" for c in range(rows)] if by_class else [f"draw {r + 1}" for r in range(rows)]
        )
        titles = [f"{name} = {value:g} {ATTRIBUTE_UNITS[name]}" for value, _ in values]
        extra = "".join(f", {k} = {v:g} {ATTRIBUTE_UNITS[k]}" for k, v in attributes.items())
        figure = grid_figure(images, measured, name, titles, row_titles, f"{title}: generated digits{extra}")
        shape = (rows, len(values))
        for result in results:
            _report(result, [name, *attributes])
    out = Path(options.out)
    atomic_write_bytes(out, png_bytes(figure_to_array(figure)))
    print(f"samples -> {out}")
    if options.npz:
        # one result per column (a single one without --grid): digits in row-major order of the figure
        arrays = {
            key: torch.stack([getattr(r, key).cpu() for r in results], 1).flatten(0, 1).numpy()
            for key in ("images", "label", "requested", "measured")
        }
        arrays["attribute_names"] = np.array(ATTRIBUTE_NAMES)
        arrays["grid_shape"] = np.array(shape)
        npz = Path(options.npz)
        atomic_write_bytes(npz, _npz_bytes(arrays))
        print(f"arrays -> {npz}")
    return out


def main(argv: list[str]) -> None:
    """``genvae sample`` with ``argv`` (without ``genvae sample``); one-line ``genvae: error:`` on bad input."""
    options, overrides = build_parser().parse_known_args(argv)
    try:
        run(options, overrides)
    except Exception as err:
        exit_on_config_error(err)

"""``genvae edit``: edit test digits in physical units of their Morpho-MNIST attributes.

    genvae edit --config experiments/arvae.yaml --data.init_args.root path/to/mnist \\
        --ckpt_path run/last.ckpt --set thickness=+1.0 --set slant=-0.2 --indices 0:16 --out edits.png
    genvae edit --config experiments/arvae.yaml --ckpt_path run/last.ckpt \\
        --grid thickness=-1,-0.5,+0,+0.5,+1 --indices 0:8 --out thickness.png

``NAME=+1.0`` / ``NAME=-0.2`` (a sign) asks for a change relative to the attribute of the unedited
reconstruction, ``NAME=3.0`` (no sign) for an absolute value, in the attribute's unit (px, rad, px^2). The
model and the data come from the same ``--config`` files (and any ``--data.*`` / ``--model.*`` overrides) as
``genvae fit/test``, parsed by :class:`genvae.cli.GenVAECLI`; the weights from ``--ckpt_path``. The
calibration (:class:`~genvae.latent.control.AttributeControl`) is read from ``<checkpoint stem>.control.json``
beside the checkpoint when it was fitted from this checkpoint on the first ``--calibration_images`` training
images and covers the requested attributes (written by ``genvae test`` with the ``AttributeControlEvaluation``
callback, or by an earlier ``genvae edit`` / ``genvae sample``); otherwise it is fitted there and saved, with
one line saying why (:mod:`genvae.latent.fitted`); ``--calibration FILE`` uses the given file as it is. The
class latents of a label edit are cached beside the checkpoint the same way. ``--set`` draws input,
reconstruction and edit per digit; ``--grid`` one column per value.

A model conditioned on the label (``condition: [label]``) also takes ``--set label=3``: each digit is encoded
with its true label, its latent moved to the new class (the same position relative to the class's
aggregate posterior, :func:`genvae.latent.class_latents.label_edit`; an AR-VAE's thickness and slant dims
kept and those attributes held at the digit's values in closed loop) and decoded with the new label;
attribute requests beside it are met on the new digit. Every encode and decode of a
conditional model runs under the digit's own condition (an attribute edit keeps the label).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch

from genvae.data.attributes import ATTRIBUTE_NAMES, morpho_attributes
from genvae.errors import ConfigError, exit_on_config_error
from genvae.latent.class_latents import ClassLatents, held_attributes, label_edit
from genvae.latent.control import AttributeControl, check_flat_latent
from genvae.latent.fitted import DATA_KEYS
from genvae.latent.grid import comparison_figure, edit_grid, format_request, grid_figure
from genvae.models.conditioning import LABEL, NUM_CLASSES, batch_condition
from genvae.utils.atomic import atomic_write_bytes
from genvae.utils.images import figure_to_array, png_bytes

__all__ = ["attribute_control", "load_model", "main", "parse_indices", "parse_label", "parse_request"]


def parse_request(text: str, key: str) -> tuple[str, list[tuple[float, bool]]]:
    """``"thickness=+1"`` -> ``("thickness", [(1.0, False)])``; comma-separated values; no sign = absolute."""
    name, sep, values = text.partition("=")
    name = name.strip()
    if not sep or not values.strip():
        raise ConfigError(f"{key}: expected NAME=VALUE (e.g. thickness=+1.0), got {text!r}")
    if name not in ATTRIBUTE_NAMES:
        raise ConfigError(f"{key}: unknown attribute {name!r}; choose from {list(ATTRIBUTE_NAMES)}")
    parsed = []
    for item in values.split(","):
        item = item.strip()
        try:
            value = float(item)
        except ValueError:
            raise ConfigError(f"{key}: {name}={item!r} is not a number") from None
        parsed.append((value, not item.startswith(("+", "-"))))
    return name, parsed


def parse_label(texts: list[str], key: str) -> tuple[int | None, list[str]]:
    """The ``label=K`` entry of ``texts`` (``--set`` values) as a class index, and the other entries."""
    labels = [text for text in texts if text.partition("=")[0].strip() == LABEL]
    if not labels:
        return None, texts
    value = labels[-1].partition("=")[2].strip()
    if len(labels) > 1 or not value.isdigit() or not 0 <= int(value) < NUM_CLASSES:
        raise ConfigError(f"{key}: label={value!r}: expected one class index in [0, {NUM_CLASSES})")
    return int(value), [text for text in texts if text not in labels]


def parse_indices(text: str, count: int | None = None) -> range:
    """``"0:16"`` -> ``range(0, 16)`` (``"5"`` is one digit), checked against ``count`` test images."""
    start, sep, stop = text.partition(":")
    try:
        first = int(start) if start.strip() else 0
        last = (int(stop) if stop.strip() else count) if sep else first + 1
    except ValueError:
        raise ConfigError(
            f"--indices: {text!r} is not a range START:STOP of test images (e.g. 0:16)"
        ) from None
    if last is None:
        return range(first, first)  # checked once the data is loaded
    if not 0 <= first < last or (count is not None and last > count):
        limit = f" of the {count} test images" if count is not None else ""
        raise ConfigError(
            f"--indices: {text!r} is not a non-empty range START:STOP within [0, {count}]{limit}"
        )
    return range(first, last)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genvae edit",
        description="Edit test digits in physical units of their Morpho-MNIST attributes and measure the "
        "edits. Explained in docs/latent-control.md. Other arguments (--data.init_args.root ...) go to the "
        "config parser of genvae fit/test.",
    )
    parser.add_argument("--config", action="append", required=True, help="experiment YAML (repeatable)")
    parser.add_argument("--ckpt_path", required=True, help="checkpoint of the model")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="+x/-x: change, x: absolute; label=K: decode as class K (label-conditional models)",
    )
    mode.add_argument("--grid", metavar="NAME=V1,V2,...", help="one column per requested value")
    parser.add_argument("--indices", default="0:8", help="test images START:STOP (default 0:8)")
    parser.add_argument("--out", default="edits.png", help="PNG file written")
    add_calibration_arguments(parser)
    return parser


def add_calibration_arguments(parser: argparse.ArgumentParser) -> None:
    """The calibration options of ``genvae edit`` and ``genvae sample`` (both read or fit the same one)."""
    parser.add_argument("--calibration", help="calibration JSON (default <checkpoint stem>.control.json)")
    parser.add_argument(
        "--calibration_images", type=int, default=1000, help="training images to calibrate on"
    )
    parser.add_argument("--rounds", type=int, default=6, help="closed-loop refinement rounds")


def load_model(
    configs: list[str],
    overrides: list[str],
    ckpt_path: Path,
    who: str = "genvae edit",
    flat_latent: bool = True,
) -> tuple[L.LightningModule, L.LightningDataModule]:
    """The configured model with the checkpoint's weights, and the configured datamodule, set up (the
    datamodule's attribute order given to a conditional model). ``flat_latent``: refuse a model without a
    flat latent (attribute control needs one)."""
    from genvae.cli import GenVAECLI

    if not ckpt_path.is_file():
        raise ConfigError(f"--ckpt_path: file {ckpt_path} not found")
    args = [arg for config in configs for arg in ("--config", config)] + overrides
    # the command line holds this command's own arguments too: the parser is given its share (args=)
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within")
    cli = GenVAECLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        save_config_callback=None,
        trainer_defaults={"callbacks": []},
        run=False,
        parser_kwargs={"prog": "genvae fit"},  # a config error points to the help that lists these keys
        args=[*args, "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"],
    )
    model, datamodule = cli.model, cli.datamodule
    if flat_latent:
        check_flat_latent(model, who)
    try:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)["state_dict"]
        model.load_state_dict(state)
    except Exception as err:  # not a checkpoint, another model's weights, ...
        raise ConfigError(
            f"--ckpt_path: {ckpt_path} is not a checkpoint of this {type(model).__name__} ({err})"
        ) from None
    datamodule.prepare_data()
    datamodule.setup("test")
    names = getattr(datamodule, "attribute_names", None)
    if names and callable(getattr(model, "use_attribute_order", None)):
        model.use_attribute_order(names)
    return model, datamodule


def attribute_control(
    model: L.LightningModule,
    datamodule: L.LightningDataModule,
    options: argparse.Namespace,
    names: Sequence[str] = ATTRIBUTE_NAMES,
) -> AttributeControl:
    """The calibration of ``names`` (at least) given with ``--calibration``, else the one cached beside the
    checkpoint when it was fitted from this checkpoint on the same training images, else one of every
    attribute fitted on the first ``--calibration_images`` training images (under their own condition, for a
    conditional model) and cached there (:meth:`AttributeControl.cached`). ``options``: ``calibration``,
    ``ckpt_path``, ``calibration_images``, ``rounds``."""
    if options.calibration:
        return AttributeControl.load(Path(options.calibration), model, rounds=options.rounds)
    train = datamodule.splits["train"]
    rows = {key: value[: options.calibration_images] for key, value in train.items() if key in DATA_KEYS}

    def fit() -> AttributeControl:
        on_device = {key: value.to(model.device) for key, value in rows.items()}
        images = on_device["image"].float().div(255.0)
        attributes = on_device.get("attributes")
        attributes = morpho_attributes(images) if attributes is None else attributes
        condition = batch_condition(model, on_device)
        return AttributeControl.fit(model, images, attributes, rounds=options.rounds, condition=condition)

    return AttributeControl.cached(options.ckpt_path, model, rows, names, fit, rounds=options.rounds)


def run(options: argparse.Namespace, overrides: list[str]) -> Path:
    """Parse the requests, load model and data, edit, draw and write ``--out``; return its path."""
    new_label, texts = parse_label(options.set or [], "--set")
    requests = dict(parse_request(text, "--set") for text in texts)
    if any(len(values) != 1 for values in requests.values()):
        raise ConfigError("--set: one value per attribute (use --grid for several)")
    grid = parse_request(options.grid, "--grid") if options.grid else None
    parse_indices(options.indices)  # the syntax, before the (slow) model and data
    if options.calibration_images < 3 or options.rounds < 0:
        raise ConfigError("--calibration_images must be >= 3 and --rounds >= 0")
    options.ckpt_path = Path(options.ckpt_path)
    model, datamodule = load_model(options.config, overrides, options.ckpt_path)
    model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    if new_label is not None and LABEL not in getattr(model, "condition_names", ()):
        raise ConfigError(
            f"label: {type(model).__name__} is not conditioned on the label (condition: "
            f"{list(getattr(model, 'condition_names', ()))}); label edits need a model with condition: [label]"
        )
    test = datamodule.splits["test"]
    indices = parse_indices(options.indices, len(test["image"]))
    take = torch.tensor(list(indices), device=test["image"].device)
    digits = {
        key: value.index_select(0, take.to(value.device)).to(model.device) for key, value in test.items()
    }
    images = digits["image"].float().div(255.0)
    condition = batch_condition(model, digits)  # each digit's own, for a conditional model
    rows = [f"#{i}: digit {int(label)}" for i, label in zip(indices, digits["label"].tolist(), strict=True)]
    # a label edit alone needs a calibration only for the attributes it holds (an AR-VAE's thickness, slant)
    needed = [
        *requests,
        *([grid[0]] if grid else []),
        *(held_attributes(model) if new_label is not None else []),
    ]
    control = attribute_control(model, datamodule, options, needed) if needed else AttributeControl(model, {})
    title = f"{type(model).__name__} {options.ckpt_path.name}"
    if grid is not None:
        name, values = grid
        edited, measured = edit_grid(
            control, images, name, [v for v, _ in values], [a for _, a in values], condition
        )
        titles = [format_request(v, a, name) for v, a in values]
        figure = grid_figure(edited, measured, name, titles, rows, title, originals=images)
    else:
        changes = {n: v[0][0] for n, v in requests.items() if not v[0][1]}
        absolute = {n: v[0][0] for n, v in requests.items() if v[0][1]}
        if new_label is None:
            result = control.apply(images, changes, absolute=absolute, condition=condition)
        else:  # the latent moves to the new class, an AR-VAE's thickness and slant held
            class_latents = ClassLatents.fit_split(model, datamodule.splits["train"], options.ckpt_path)
            new = torch.full((len(images),), new_label, dtype=torch.long, device=model.device)
            result = label_edit(
                model,
                class_latents,
                control.reference(images, condition),
                new,
                control,
                changes=changes,
                absolute=absolute,
            )
        asked = {n: format_request(v[0][0], v[0][1], n) for n, v in requests.items()}
        if new_label is not None:
            asked = {LABEL: f"-> {new_label}", **asked}
        figure = comparison_figure(
            images, result.reconstruction, result.images, result.original, result.measured, asked, rows, title
        )
        for name in requests:
            column = ATTRIBUTE_NAMES.index(name)
            error = (result.measured[:, column] - result.target[:, column]).abs().nanmedian()
            print(
                f"{name} {asked[name]}: median |achieved - requested| = {float(error):.3g}", file=sys.stderr
            )
        if new_label is not None:
            change = (result.measured - result.original).abs().nanmedian(dim=0).values
            kept = ", ".join(
                f"{name} {float(value):.3g}" for name, value in zip(ATTRIBUTE_NAMES, change, strict=True)
            )
            print(
                f"label -> {new_label}: median |edited - reconstruction| per attribute: {kept}",
                file=sys.stderr,
            )
    out = Path(options.out)
    atomic_write_bytes(out, png_bytes(figure_to_array(figure)))
    print(f"edits -> {out}")
    return out


def main(argv: list[str]) -> None:
    """``genvae edit`` with ``argv`` (without ``genvae edit``); one-line ``genvae: error:`` on bad input."""
    options, overrides = build_parser().parse_known_args(argv)
    try:
        run(options, overrides)
    except Exception as err:
        exit_on_config_error(err)

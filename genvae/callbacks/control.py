"""Closed-loop attribute-control evaluation at test end: thin glue around :mod:`genvae.latent`.

At the end of the test epoch the model's :class:`~genvae.latent.control.AttributeControl` is calibrated on
the first ``calibration_images`` training images (the datamodule's train split; the test images after the
evaluated ones when there is none), saved as ``<checkpoint stem>.control.json`` beside the tested checkpoint
with the key of its fit (``genvae edit`` and ``genvae sample`` read it from there when they would fit the
same: :meth:`~genvae.latent.control.AttributeControl.cached`), and evaluated on the first ``num_images``
test digits with :func:`~genvae.latent.evaluation.control_evaluation`. In YAML::

    trainer:
      callbacks:
        - class_path: genvae.callbacks.AttributeControlEvaluation
          init_args: {classifier_checkpoint: checkpoints/classifier/mnist-classifier.ckpt}

Logged as ``test/control/<key>`` (``pl_module.log(..., sync_dist=False)``, global rank 0 computes them) so
:class:`~genvae.callbacks.MetricsJSON` writes them: ``error/<a>/<step>``, ``error/<a>``, ``error``,
``leakage/<a>/<b>``, ``leakage/<a>``, ``leakage`` and, with a classifier, ``identity/...``; for each
``physical_edits`` entry (default: the issue's thickness +1 px, slant -0.2 rad, width +2 px, height -0.5 px),
applied alone to the first ``physical_images`` of the edited digits, ``physical/<a>/error``,
``physical/<a>/error_open_loop`` (calibration alone), ``physical/<a>/leakage`` and ``physical/<a>/identity``
(:func:`~genvae.latent.evaluation.physical_evaluation`). The Markdown
table goes to ``<checkpoint stem>.control.md`` (else ``control.md`` in the log dir), and one edit grid per
``grid_attributes`` entry is logged as ``test/control/grid/<attribute>``.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch import Tensor

from genvae.callbacks.evaluation import load_classifier
from genvae.data.attributes import (
    ALL_ATTRIBUTE_NAMES,
    ATTRIBUTE_NAMES,
    all_attributes,
    morpho_attributes,
    morpho_columns,
)
from genvae.errors import ConfigError
from genvae.latent.class_latents import ClassLatents, has_class_latents
from genvae.latent.control import CACHE_KIND, VERSION, AttributeControl, calibration_path, check_flat_latent
from genvae.latent.evaluation import (
    DEFAULT_PHYSICAL_EDITS,
    DEFAULT_STEPS,
    check_physical_edits,
    class_attribute_ranges,
    control_evaluation,
    control_table,
)
from genvae.latent.fitted import fit_key
from genvae.latent.grid import edit_grid, format_request, grid_figure
from genvae.models.conditioning import batch_condition
from genvae.utils.atomic import atomic_write_bytes
from genvae.utils.images import figure_to_array, log_image

__all__ = ["AttributeControlEvaluation", "class_latents_of", "saved_or_fitted_control"]

PREFIX = "test/control"


class AttributeControlEvaluation(L.Callback):
    """Calibrate attribute control, measure edits in closed loop, log the metrics, table and edit grids.

    Args:
        classifier_checkpoint: genvae Classifier checkpoint for identity preservation (None: no identity).
        num_images: test digits edited (the first of the test set).
        calibration_images: images the calibration is fitted on.
        steps: requested changes in attribute standard deviations.
        attributes: attributes evaluated (default: all six).
        grid_attributes: one edit-grid figure per attribute.
        grid_rows: test digits (rows) of each grid.
        grid_steps: columns of each grid: requested changes in attribute stds (shown in physical units).
        rounds: closed-loop refinement rounds per edit.
        physical_edits: ``{attribute: change}`` in physical units (px, rad), each evaluated alone (default:
            thickness +1, slant -0.2, width +2, height -0.5; ``{}``: none).
        physical_images: the first this many of the ``num_images`` test digits get the physical edits.
    """

    def __init__(
        self,
        classifier_checkpoint: str | None = None,
        num_images: int = 1000,
        calibration_images: int = 1000,
        steps: list[float] | None = None,
        attributes: list[str] | None = None,
        grid_attributes: list[str] | None = None,
        grid_rows: int = 6,
        grid_steps: list[float] | None = None,
        rounds: int = 6,
        physical_edits: dict[str, float] | None = None,
        physical_images: int = 500,
    ) -> None:
        names = list(ATTRIBUTE_NAMES if attributes is None else attributes)
        grid_names = ["thickness", "slant"] if grid_attributes is None else list(grid_attributes)
        unknown = sorted(set(names + grid_names) - set(ATTRIBUTE_NAMES))
        if unknown:
            raise ConfigError(
                f"AttributeControlEvaluation: unknown attributes {unknown}; choose from {list(ATTRIBUTE_NAMES)}"
            )
        if num_images < 3 or calibration_images < 3 or grid_rows < 1 or rounds < 0 or physical_images < 1:
            raise ConfigError(
                "AttributeControlEvaluation: num_images and calibration_images must be >= 3, grid_rows >= 1, "
                "rounds >= 0, physical_images >= 1"
            )
        self.physical_edits = check_physical_edits(
            DEFAULT_PHYSICAL_EDITS if physical_edits is None else physical_edits,
            "AttributeControlEvaluation: physical_edits",
        )
        self.physical_images = physical_images
        self.classifier_checkpoint = classifier_checkpoint
        self.num_images = num_images
        self.calibration_images = calibration_images
        self.steps = tuple(float(s) for s in (DEFAULT_STEPS if steps is None else steps))
        self.names = names
        self.grid_names = grid_names
        self.grid_rows = grid_rows
        self.grid_steps = [float(s) for s in ([-2, -1, 0, 1, 2] if grid_steps is None else grid_steps)]
        self.rounds = rounds
        self.classifier: L.LightningModule | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "test":
            return
        check_flat_latent(pl_module, "AttributeControlEvaluation")
        if self.classifier_checkpoint is not None:
            self.classifier = load_classifier(self.classifier_checkpoint, pl_module.device).eval()

    # ------------------------------------------------------------------ data
    @staticmethod
    def _test_examples(trainer: L.Trainer, n: int) -> dict[str, Tensor]:
        loaders = trainer.test_dataloaders
        loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
        parts: dict[str, list[Tensor]] = {"image": [], "label": [], "attributes": []}
        count = 0
        for batch in loader:
            for key in parts:
                if key in batch:
                    parts[key].append(batch[key])
            count += len(batch["image"])
            if count >= n:
                break
        return {key: torch.cat(values)[:n] for key, values in parts.items() if values}

    @staticmethod
    def _train_split(trainer: L.Trainer) -> dict[str, Tensor] | None:
        """The datamodule's loaded training split (``image``, ``label``, ``attributes``), if it has one."""
        splits = getattr(getattr(trainer, "datamodule", None), "splits", None) or {}
        return splits.get("train")

    def _calibration_set(
        self, trainer: L.Trainer, test: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
        """Calibration images, their attributes (None when the data has none) and all their rows."""
        train = self._train_split(trainer)
        source, take = train, slice(0, self.calibration_images)
        if train is None or len(train["image"]) < 3:  # the test digits after the evaluated ones
            source = self._test_examples(trainer, self.num_images + self.calibration_images)
            take = (
                slice(self.num_images, None) if len(source["image"]) - self.num_images >= 3 else slice(None)
            )
        rows = {key: source[key][take] for key in ("image", "label", "attributes") if key in source}
        attributes = rows.get("attributes")
        return rows["image"], None if attributes is None else morpho_columns(attributes), rows

    @classmethod
    def _class_ranges(cls, trainer: L.Trainer) -> Tensor | None:
        """Attribute ranges of the training digits per label (:func:`class_attribute_ranges`), or None when
        the datamodule holds no labelled training split with attributes."""
        train = cls._train_split(trainer) or {}
        if "label" not in train or "attributes" not in train or len(train["label"]) < 10:
            return None
        return class_attribute_ranges(morpho_columns(train["attributes"]), train["label"])

    # ------------------------------------------------------------------ evaluation
    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        test = self._test_examples(trainer, self.num_images)
        images, attributes, rows = self._calibration_set(trainer, test)
        device = pl_module.device
        condition = batch_condition(
            pl_module, {k: v.to(device) for k, v in rows.items()}
        )  # conditional models
        images = images.to(device)
        images = images.float().div(255.0) if images.dtype == torch.uint8 else images.float()
        if attributes is None:
            attributes = morpho_attributes(images)
        names = sorted(
            set(self.names + self.grid_names) | set(self.physical_edits), key=ATTRIBUTE_NAMES.index
        )
        control = AttributeControl.fit(
            pl_module, images, attributes.to(device), names, rounds=self.rounds, condition=condition
        )
        checkpoint = checkpoint_file(trainer)
        key = None if checkpoint is None else fit_key(CACHE_KIND, VERSION, pl_module, checkpoint, rows)
        control.save(self._output(trainer, "control.json"), key)
        classify = None if self.classifier is None else self.classifier.to(device)
        labels = test.get("label")
        results = control_evaluation(
            control,
            test["image"].float(),
            labels,
            classify,
            self.steps,
            self.names,
            self.physical_edits,
            self.physical_images,
            self._class_ranges(trainer),
            batch_condition(pl_module, {k: v.to(device) for k, v in test.items()}),
        )
        for key, value in results.items():
            pl_module.log(f"{PREFIX}/{key}", value, sync_dist=False)
        atomic_write_bytes(
            self._output(trainer, "control.md"), control_table(results, self.names, self.steps).encode()
        )
        self._log_grids(trainer, control, test)

    def _output(self, trainer: L.Trainer, suffix: str) -> Path:
        """``<checkpoint stem>.<suffix>`` beside the tested checkpoint, else ``<suffix>`` in the log dir."""
        if trainer.ckpt_path:
            path = calibration_path(trainer.ckpt_path)
            return path.with_name(path.name.replace("control.json", suffix))
        return Path(trainer.log_dir or trainer.default_root_dir) / suffix

    def _log_grids(self, trainer: L.Trainer, control: AttributeControl, test: dict[str, Tensor]) -> None:
        rows = test["image"][: self.grid_rows].float()
        device = control.model.device
        condition = batch_condition(
            control.model, {k: v[: self.grid_rows].to(device) for k, v in test.items()}
        )
        labels = test.get("label")
        row_titles = [f"digit {int(labels[i])}" if labels is not None else f"#{i}" for i in range(len(rows))]
        for name in self.grid_names:
            std = control.calibrations[name].std
            values = [step * std for step in self.grid_steps]
            images, measured = edit_grid(control, rows, name, values, [False] * len(values), condition)
            titles = [
                f"{format_request(v, False, name)}\n({s:+g} std)"
                for v, s in zip(values, self.grid_steps, strict=True)
            ]
            figure = grid_figure(
                images,
                measured,
                name,
                titles,
                row_titles,
                f"{type(control.model).__name__}: edits of {name}",
                originals=rows,
            )
            log_image(trainer, f"{PREFIX}/grid/{name}", figure_to_array(figure))


def checkpoint_file(trainer: L.Trainer) -> Path | None:
    """The checkpoint file the trainer's model was loaded from (``--ckpt_path``), or None."""
    path = Path(trainer.ckpt_path) if trainer.ckpt_path else None
    return path if path is not None and path.is_file() else None


def saved_or_fitted_control(
    trainer: L.Trainer,
    pl_module: L.LightningModule,
    names: list[str],
    calibration_images: int = 1000,
    rounds: int = 6,
    who: str = "AttributeControl",
) -> AttributeControl | None:
    """The calibration saved beside the tested checkpoint when it was fitted from that checkpoint and covers
    ``names`` (:meth:`AttributeControl.cached`, on any data: :class:`AttributeControlEvaluation`'s of the
    same test run, or ``genvae edit``'s), else one fitted on the first ``calibration_images`` training
    images (under their own condition, for a conditional model) and not saved; None for a model without a
    flat latent or no attributes to edit."""
    if not names or not isinstance(getattr(pl_module, "latent_dim", None), int):
        return None
    train = AttributeControlEvaluation._train_split(trainer)
    rows = {
        k: v[:calibration_images] for k, v in (train or {}).items() if k in ("image", "label", "attributes")
    }

    def fit() -> AttributeControl:
        if train is None or len(train["image"]) < 3:
            raise ConfigError(
                f"{who}: no saved calibration and no training split to fit one on; list "
                "AttributeControlEvaluation before this callback or give the datamodule a train split"
            )
        images = rows["image"].to(pl_module.device)
        images = images.float().div(255.0) if images.dtype == torch.uint8 else images.float()
        # intensity (an AR-VAE of the causal Morpho-MNIST regularizes it) needs the seven-column measure
        seven = any(name not in ATTRIBUTE_NAMES for name in names)
        measure = all_attributes if seven else morpho_attributes
        columns = ALL_ATTRIBUTE_NAMES if seven else ATTRIBUTE_NAMES
        attributes = rows.get("attributes")
        if attributes is None or tuple(getattr(trainer.datamodule, "attribute_names", ())) != columns:
            attributes = measure(images)
        attributes = attributes[: len(images)].to(pl_module.device)
        on_device = {k: v.to(pl_module.device) for k, v in rows.items() if k in ("label", "attributes")}
        return AttributeControl.fit(
            pl_module,
            images,
            attributes,
            names,
            rounds=rounds,
            condition=batch_condition(pl_module, on_device),
            measure=measure,
            attribute_names=columns,
        )

    checkpoint = checkpoint_file(trainer)
    if checkpoint is None:
        return fit()
    return AttributeControl.cached(
        checkpoint, pl_module, rows, names, fit, any_data=True, save=False, rounds=rounds
    )


def class_latents_of(trainer: L.Trainer, pl_module: L.LightningModule) -> ClassLatents | None:
    """The :class:`~genvae.latent.class_latents.ClassLatents` of a label-conditional model with a flat
    latent, fitted on the whole training split of the datamodule (each digit under its own condition) and
    cached beside the tested checkpoint (read back from there when it was fitted on the same checkpoint and
    data); None for any other model or without a labelled training split."""
    train = AttributeControlEvaluation._train_split(trainer)
    if not has_class_latents(pl_module) or train is None or "label" not in train:
        return None
    return ClassLatents.fit_split(pl_module, train, checkpoint_file(trainer))

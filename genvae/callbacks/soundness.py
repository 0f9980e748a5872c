"""Counterfactual soundness at test end: thin glue around :func:`genvae.latent.soundness.soundness_evaluation`.

Composition (1 and 10 null edits of the test digits) and reversibility (+-1 std edits of each attribute and
back) of the model's edits, logged as ``test/soundness/<key>`` so :class:`~genvae.callbacks.MetricsJSON`
writes them (distances: per-image mean |x - x_0| on the 0-255 scale, Monteiro et al. 2023 and the protocol
of Melistas et al. 2024; :mod:`genvae.metrics.soundness`). In YAML::

    trainer:
      callbacks:
        - class_path: genvae.callbacks.CounterfactualSoundness

Attribute edits through the latent use the model's :class:`~genvae.latent.control.AttributeControl`: the
calibration ``<checkpoint stem>.control.json`` beside the tested checkpoint when it exists (written by
:class:`~genvae.callbacks.AttributeControlEvaluation`, listed before this callback in
``experiments/eval/vae_family.yaml``), else one fitted here on the first ``calibration_images`` training
images. A model without a flat latent (VQ-VAE) gets composition only. A conditional model
(``condition: [label, ...]``) is edited through its condition for what it is conditioned on, with the
classifier (``classifier_checkpoint``) scoring its label edits (``effectiveness/label``), and through the
latent, under each digit's own condition, for the other attributes.
"""

from __future__ import annotations

import sys

import lightning as L
import torch

from genvae.callbacks.control import AttributeControlEvaluation
from genvae.callbacks.evaluation import load_classifier
from genvae.data.attributes import ALL_ATTRIBUTE_NAMES, ATTRIBUTE_NAMES, all_attributes, morpho_attributes
from genvae.errors import ConfigError
from genvae.latent.control import AttributeControl, calibration_path
from genvae.latent.soundness import soundness_evaluation
from genvae.metrics.soundness import DEFAULT_CYCLES
from genvae.models.conditioning import batch_condition, condition_names

__all__ = ["CounterfactualSoundness"]

PREFIX = "test/soundness"


class CounterfactualSoundness(L.Callback):
    """Log composition and reversibility of the model's edits of the test digits.

    Args:
        num_images: test digits of the composition (None: all of them).
        reversibility_images: the first this many of them are edited and edited back.
        attributes: attributes edited through the latent (default: the AR-VAE's regularized attributes,
            else all six; ``[]``: none).
        step: size of each edit in attribute standard deviations (edited by ``+step`` and ``-step``).
        cycles: numbers of null edits in a row whose distance is reported.
        calibration_images: training images a calibration is fitted on when none is saved.
        rounds: closed-loop refinement rounds of each attribute edit.
        classifier_checkpoint: genvae Classifier checkpoint scoring label edits of label-conditional models.
        seed: seed of the new labels of label edits.
    """

    def __init__(
        self,
        num_images: int | None = None,
        reversibility_images: int = 100,
        attributes: list[str] | None = None,
        step: float = 1.0,
        cycles: list[int] | None = None,
        calibration_images: int = 1000,
        rounds: int = 6,
        classifier_checkpoint: str | None = None,
        seed: int = 0,
    ) -> None:
        unknown = sorted(set(attributes or ()) - set(ATTRIBUTE_NAMES))
        if unknown:
            raise ConfigError(
                f"CounterfactualSoundness: unknown attributes {unknown}; choose from {list(ATTRIBUTE_NAMES)}"
            )
        self.cycles = tuple(int(m) for m in (DEFAULT_CYCLES if cycles is None else cycles))
        if (
            (num_images is not None and num_images < 1)
            or reversibility_images < 1
            or calibration_images < 3
            or rounds < 0
            or not step > 0
            or not self.cycles
            or min(self.cycles) < 1
        ):
            raise ConfigError(
                "CounterfactualSoundness: num_images and reversibility_images must be >= 1, calibration_images "
                ">= 3, rounds >= 0, step > 0 and cycles positive integers"
            )
        self.num_images = num_images
        self.reversibility_images = reversibility_images
        self.attributes = None if attributes is None else list(attributes)
        self.step = float(step)
        self.calibration_images = calibration_images
        self.rounds = rounds
        self.classifier_checkpoint = classifier_checkpoint
        self.seed = seed
        self.classifier: L.LightningModule | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "test":
            return
        if not callable(getattr(pl_module, "encode", None)) or not callable(
            getattr(pl_module, "decode", None)
        ):
            raise ConfigError(
                f"CounterfactualSoundness: {type(pl_module).__name__} has no encode / decode to edit with"
            )
        names = condition_names(pl_module)
        if self.classifier_checkpoint is not None and "label" in names:
            self.classifier = load_classifier(self.classifier_checkpoint, pl_module.device).eval()

    def _names(self, pl_module: L.LightningModule) -> list[str]:
        if self.attributes is not None:
            return self.attributes
        return list(getattr(pl_module, "regularized_attributes", None) or ATTRIBUTE_NAMES)

    def _control(self, trainer: L.Trainer, pl_module: L.LightningModule) -> AttributeControl | None:
        """The saved calibration beside the checkpoint when it covers the attributes, else a fitted one; None
        for a model without a flat latent or no attributes to edit (a conditional model's calibration decodes
        each digit under its own condition)."""
        names = self._names(pl_module)
        if not names or not isinstance(getattr(pl_module, "latent_dim", None), int):
            return None
        if trainer.ckpt_path and calibration_path(trainer.ckpt_path).is_file():
            control = AttributeControl.load(
                calibration_path(trainer.ckpt_path), pl_module, rounds=self.rounds
            )
            if set(names) <= set(control.calibrations):
                return control
        train = AttributeControlEvaluation._train_split(trainer)
        if train is None or len(train["image"]) < 3:
            raise ConfigError(
                "CounterfactualSoundness: no saved calibration and no training split to fit one on; list "
                "AttributeControlEvaluation before this callback or give the datamodule a train split"
            )
        images = train["image"][: self.calibration_images].to(pl_module.device)
        images = images.float().div(255.0) if images.dtype == torch.uint8 else images.float()
        # intensity (an AR-VAE of the causal Morpho-MNIST regularizes it) needs the seven-column measure
        seven = any(name not in ATTRIBUTE_NAMES for name in names)
        measure = all_attributes if seven else morpho_attributes
        columns = ALL_ATTRIBUTE_NAMES if seven else ATTRIBUTE_NAMES
        attributes = train.get("attributes")
        names_of_data = tuple(getattr(trainer.datamodule, "attribute_names", ()))
        if attributes is None or names_of_data != columns:
            attributes = measure(images)
        attributes = attributes[: len(images)].to(pl_module.device)
        rows = {
            k: v[: len(images)].to(pl_module.device) for k, v in train.items() if k in ("label", "attributes")
        }
        condition = batch_condition(pl_module, rows)
        return AttributeControl.fit(
            pl_module,
            images,
            attributes,
            names,
            rounds=self.rounds,
            condition=condition,
            measure=measure,
            attribute_names=columns,
        )

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        test = AttributeControlEvaluation._test_examples(trainer, self.num_images or sys.maxsize)
        classify = None if self.classifier is None else self.classifier.to(pl_module.device)
        results = soundness_evaluation(
            pl_module,
            test["image"],
            batch_condition(pl_module, test),
            self._control(trainer, pl_module),
            self._names(pl_module),
            self.reversibility_images,
            self.step,
            self.cycles,
            classify=classify,
            seed=self.seed,
        )
        for key, value in sorted(results.items()):
            pl_module.log(f"{PREFIX}/{key}", value, sync_dist=False)

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
latent, under each digit's own condition, for the other attributes. A label edit of a label-conditional
model with a flat latent moves the latent to the new class's aggregate posterior and holds the thickness
and slant an AR-VAE regularizes (:func:`genvae.latent.class_latents.label_edit`; class latents fitted on
the training split), and ``label_edit/<attribute>`` says how much each attribute changed.
"""

from __future__ import annotations

import sys

import lightning as L

from genvae.callbacks.control import AttributeControlEvaluation, class_latents_of, saved_or_fitted_control
from genvae.callbacks.evaluation import load_classifier
from genvae.data.attributes import ATTRIBUTE_NAMES
from genvae.errors import ConfigError
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
        class_latents: label edits of a label-conditional model through its class latents
            (:func:`genvae.latent.class_latents.label_edit`: the latent moves to the new class, an AR-VAE's
            thickness and slant held); False: the latent is kept and decoded under the new label.
        label_edit_images: test digits whose label edits are scored (``effectiveness/label``,
            ``label_edit/<attribute>``) when ``class_latents``.
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
        class_latents: bool = True,
        label_edit_images: int = 1000,
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
        self.class_latents = class_latents
        if label_edit_images < 1:
            raise ConfigError("CounterfactualSoundness: label_edit_images must be >= 1")
        self.label_edit_images = label_edit_images
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

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        test = AttributeControlEvaluation._test_examples(trainer, self.num_images or sys.maxsize)
        classify = None if self.classifier is None else self.classifier.to(pl_module.device)
        names = self._names(pl_module)
        control = saved_or_fitted_control(
            trainer, pl_module, names, self.calibration_images, self.rounds, "CounterfactualSoundness"
        )
        results = soundness_evaluation(
            pl_module,
            test["image"],
            batch_condition(pl_module, test),
            control,
            self._names(pl_module),
            self.reversibility_images,
            self.step,
            self.cycles,
            classify=classify,
            seed=self.seed,
            class_latents=class_latents_of(trainer, pl_module) if self.class_latents else None,
            label_edit_images=self.label_edit_images,
        )
        for key, value in sorted(results.items()):
            pl_module.log(f"{PREFIX}/{key}", value, sync_dist=False)

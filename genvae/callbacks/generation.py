"""Conditional generation at test end: thin glue around
:func:`genvae.latent.generation.conditional_generation_evaluation`.

For a model conditioned on the label (issue 21's ``condition_names``), ``samples_per_class`` digits of every
class are drawn with ``sample(n, condition=...)`` (the other conditioned attributes taken from real test
digits of the class) and scored against the test set; logged as ``test/conditional/<key>`` so
:class:`~genvae.callbacks.MetricsJSON` writes them: ``accuracy`` and ``accuracy/<c>`` (share the genvae
classifier assigns to the requested class), ``attribute_error/<a>`` (median |measured - requested| / std of
each requested morphometric attribute), ``fid``, ``precision``, ``recall`` (classifier features) and
``fmd`` (Morpho-MNIST), ``undefined/generated``. A grid of the generated digits (rows = classes) is logged
as ``test/conditional/samples``. A model with a flat latent is sampled a second time from the Gaussian of
each class's aggregate posterior (:mod:`genvae.latent.class_latents`, fitted on the training split): the
same keys under ``test/conditional/class_latents/``; an AR-VAE a third time, from the class latents with
the thickness, slant, width and height of a real test digit of the class requested through its calibrated
dims (closed loop): under ``test/conditional/attributes_requested/``. A VQ-VAE prior set to sample with
classifier-free guidance (``guidance`` != 1) is scored without it (``test/conditional/``, the conditional
prior itself) and with it (``test/conditional/guided/``, its scale as ``test/conditional/guided/guidance``),
so the tables show what guidance buys and costs. In YAML::

    trainer:
      callbacks:
        - class_path: genvae.callbacks.ConditionalGeneration
          init_args: {classifier_checkpoint: checkpoints/classifier/mnist-classifier.ckpt}

An unconditional model is skipped (``required: null``, the default, so one overlay serves both kinds).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
import torch

from genvae.callbacks.control import AttributeControlEvaluation, class_latents_of, saved_or_fitted_control
from genvae.callbacks.evaluation import load_classifier
from genvae.errors import ConfigError
from genvae.latent.generation import LATENT_REQUESTS, conditional_generation_evaluation
from genvae.latent.sampling import latent_attributes
from genvae.metrics.sample_quality import ClassifierFeatures
from genvae.models.conditioning import condition_names
from genvae.utils.images import figure_to_array, log_image

__all__ = ["ConditionalGeneration"]

PREFIX = "test/conditional"


class ConditionalGeneration(L.Callback):
    """Draw class-balanced conditional samples and log how well they match their requests.

    Args:
        classifier_checkpoint: genvae Classifier checkpoint (label accuracy and the FID / precision / recall
            features).
        samples_per_class: digits drawn per class (None: as many in all as there are test images).
        num_classes: classes requested (0 .. num_classes - 1).
        k: neighbourhood size of precision / recall.
        sample_batch_size: digits per ``sample`` call.
        required: None: evaluate models conditioned on the label, skip the others; True: a ConfigError for
            a model without a label condition; False: off.
        seed: seed of the sampling noise (forked: other random draws are not affected).
        grid_columns: digits per class in the logged grid (0: no grid).
        class_latents: also draw from each class's aggregate posterior (a label-conditional model with a
            flat latent; :class:`~genvae.latent.class_latents.ClassLatents` fitted on the training split),
            logged as ``test/conditional/class_latents/<key>``; for an AR-VAE once more with the thickness,
            slant, width and height of a real test digit of the class requested through its calibrated
            dims, closed loop: ``test/conditional/attributes_requested/<key>``.
    """

    def __init__(
        self,
        classifier_checkpoint: str,
        samples_per_class: int | None = None,
        num_classes: int = 10,
        k: int = 3,
        sample_batch_size: int = 1000,
        required: bool | None = None,
        seed: int = 0,
        grid_columns: int = 8,
        class_latents: bool = True,
    ) -> None:
        if (samples_per_class is not None and samples_per_class < 1) or num_classes < 2 or k < 1:
            raise ConfigError(
                "ConditionalGeneration: samples_per_class must be >= 1, num_classes >= 2 and k >= 1"
            )
        if sample_batch_size < 1 or grid_columns < 0:
            raise ConfigError("ConditionalGeneration: sample_batch_size >= 1 and grid_columns >= 0")
        self.classifier_checkpoint = classifier_checkpoint
        self.samples_per_class = samples_per_class
        self.num_classes = num_classes
        self.k = k
        self.sample_batch_size = sample_batch_size
        self.required = required
        self.seed = seed
        self.grid_columns = grid_columns
        self.class_latents = class_latents
        self.active = False
        self.classifier: L.LightningModule | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "test" or self.required is False:
            return
        labelled = "label" in condition_names(pl_module) and callable(getattr(pl_module, "sample", None))
        if self.required and not labelled:
            raise ConfigError(
                f"ConditionalGeneration: {type(pl_module).__name__} is not a label-conditional model with "
                f"sample(n, condition) (condition: {list(condition_names(pl_module))})"
            )
        self.active = labelled
        if labelled:
            self.classifier = load_classifier(self.classifier_checkpoint, pl_module.device).eval()

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active or trainer.global_rank != 0:
            return
        test = AttributeControlEvaluation._test_examples(trainer, sys.maxsize)
        if "label" not in test:
            raise ConfigError("ConditionalGeneration: the test data has no labels to request")
        per_class = self.samples_per_class or math.ceil(len(test["label"]) / self.num_classes)
        names = tuple(getattr(trainer.datamodule, "attribute_names", ()) or ())
        device = pl_module.device
        classifier = self.classifier.to(device)
        cuda = [device] if device.type == "cuda" else []
        guidance = float(getattr(pl_module, "guidance", 1.0))
        passes = [(PREFIX, None, None, 1.0)]  # key prefix, class latents, control, guidance scale
        if guidance != 1.0:
            passes.append((f"{PREFIX}/guided", None, None, guidance))
            pl_module.log(f"{PREFIX}/guided/guidance", guidance, sync_dist=False)
        if self.class_latents:
            class_latents = class_latents_of(trainer, pl_module)
            if class_latents is not None:
                passes.append((f"{PREFIX}/class_latents", class_latents, None, 1.0))
                steered = [name for name in latent_attributes(pl_module) if name in LATENT_REQUESTS]
                if steered and test.get("attributes") is not None:
                    control = saved_or_fitted_control(
                        trainer, pl_module, steered, who="ConditionalGeneration"
                    )
                    passes.append((f"{PREFIX}/attributes_requested", class_latents, control, 1.0))
        for prefix, class_latents, control, scale in passes:
            with torch.random.fork_rng(devices=cuda), _guidance(pl_module, scale):
                torch.manual_seed(self.seed)
                images, condition, results = conditional_generation_evaluation(
                    pl_module,
                    test["label"],
                    test.get("attributes"),
                    names,
                    per_class,
                    classify=classifier,
                    features=ClassifierFeatures(classifier),
                    real_images=test["image"],
                    num_classes=self.num_classes,
                    k=self.k,
                    batch_size=self.sample_batch_size,
                    class_latents=class_latents,
                    control=control,
                )
            for key, value in sorted(results.items()):
                pl_module.log(f"{prefix}/{key}", value, sync_dist=False)
            if self.grid_columns:
                self._log_grid(trainer, pl_module, images, per_class, results, prefix)

    def _log_grid(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        images: torch.Tensor,
        per_class: int,
        results: dict[str, float],
        prefix: str,
    ) -> None:
        import matplotlib.pyplot as plt

        columns = min(self.grid_columns, per_class)
        rows = images.view(self.num_classes, per_class, *images.shape[1:])[:, :columns].cpu()
        figure, axes = plt.subplots(
            self.num_classes, columns, figsize=(columns * 0.9, self.num_classes * 0.9), squeeze=False
        )
        for c in range(self.num_classes):
            for j in range(columns):
                axis = axes[c, j]
                axis.imshow(rows[c, j, 0], cmap="gray", vmin=0, vmax=1)
                axis.set_xticks([])
                axis.set_yticks([])
            accuracy = results.get(f"accuracy/{c}")
            shown = "" if accuracy is None else f"\n{accuracy:.0%}"
            axes[c, 0].set_ylabel(f"label {c}{shown}", rotation=0, ha="right", va="center", fontsize=8)
        drawn = "the prior" if prefix == PREFIX else "class latents"
        if prefix.endswith("/guided"):
            drawn = f"the prior, guidance {pl_module.guidance:g}"
        if prefix.endswith("attributes_requested"):
            drawn += ", attributes of a test digit requested"
        figure.suptitle(
            f"{type(pl_module).__name__}: samples per requested label from {drawn}\n"
            "(row: label, share classified as it)"
        )
        log_image(trainer, f"{prefix}/samples", figure_to_array(figure))


@contextmanager
def _guidance(model: L.LightningModule, scale: float) -> Iterator[None]:
    """Sample ``model`` at classifier-free guidance ``scale`` inside the block (a model without guidance is
    left alone)."""
    if not hasattr(model, "guidance"):
        yield
        return
    configured, model.guidance = model.guidance, scale
    try:
        yield
    finally:
        model.guidance = configured

"""Test-time evaluation callbacks: sample quality and importance-weighted NLL.

``genvae test --config experiments/vae.yaml --ckpt_path run/last.ckpt`` with, in YAML::

    trainer:
      callbacks:
        - class_path: genvae.callbacks.SampleQuality
          init_args: {classifier_checkpoint: checkpoints/classifier/mnist-classifier.ckpt}
        - class_path: genvae.callbacks.ImportanceWeightedNLL
          init_args: {num_samples: 500}

logs ``test/fid``, ``test/precision``, ``test/recall`` and ``test/iwae_nll``;
:class:`~genvae.callbacks.metrics_json.MetricsJSON` (on by default in the CLI) writes every test metric to
``<checkpoint stem>.metrics.json`` beside the checkpoint.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from genvae.checkpoints import read_checkpoint
from genvae.errors import ConfigError
from genvae.metrics.sample_quality import ClassifierFeatures, SampleQualityMetric
from genvae.models.conditioning import batch_condition, condition_kwargs, draw_condition

__all__ = ["ImportanceWeightedNLL", "SampleQuality", "load_classifier"]


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> L.LightningModule:
    """A :class:`genvae.models.Classifier` from its checkpoint, or a ConfigError ``"<path>: <cause>"``."""
    from genvae.models.classifier import Classifier

    key = "SampleQuality.classifier_checkpoint"
    path = Path(path)
    if not path.exists():
        raise ConfigError(
            f"{path}: classifier checkpoint not found (given as {key}); train the feature classifier with "
            "`genvae fit --config experiments/classifier.yaml` and give its checkpoint path"
        )
    read_checkpoint(path, expected_class=Classifier, key=key)
    try:
        return Classifier.load_from_checkpoint(path, map_location=device)
    except Exception as err:  # a checkpoint of another model that records no class
        raise ConfigError(f"{path}: not a genvae Classifier checkpoint ({err}) (given as {key})") from None


class SampleQuality(L.Callback):
    """FID, precision and recall of the model's samples against the test images, at test end.

    Features are the penultimate layer of a genvae :class:`~genvae.models.Classifier` (trained with
    ``experiments/classifier.yaml``). Real features come from every test batch; at the end of the test
    epoch the model's ``sample(n)`` generates the fake set. Logs ``test/fid``, ``test/precision`` and
    ``test/recall``.

    Args:
        classifier_checkpoint: path of the classifier checkpoint.
        num_samples: number of generated images (default: as many as there are test images; precision and
            recall always compare equally many of each).
        k: neighbourhood size of the precision / recall manifolds.
        sample_batch_size: images generated per ``sample`` call.
    """

    def __init__(
        self,
        classifier_checkpoint: str,
        num_samples: int | None = None,
        k: int = 3,
        sample_batch_size: int = 1000,
    ) -> None:
        if (num_samples is not None and num_samples < 2) or k < 1 or sample_batch_size < 1:
            raise ConfigError("SampleQuality: num_samples must be >= 2, k and sample_batch_size >= 1")
        self.classifier_checkpoint = classifier_checkpoint
        self.num_samples = num_samples
        self.k = k
        self.sample_batch_size = sample_batch_size
        self.metric: SampleQualityMetric | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "test":
            return
        if not callable(getattr(pl_module, "sample", None)):
            raise ConfigError(f"SampleQuality: {type(pl_module).__name__} has no sample(n) method")
        classifier = load_classifier(self.classifier_checkpoint, pl_module.device)
        self.metric = SampleQualityMetric(ClassifierFeatures(classifier), k=self.k)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.metric = self.metric.to(pl_module.device)
        self.metric.reset()

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: dict[str, Tensor],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.metric.update(batch["image"].float(), real=True)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metric = self.metric
        total = self.num_samples if self.num_samples is not None else None
        n = metric.real_count() if total is None else math.ceil(total / trainer.world_size)
        for start in range(0, n, self.sample_batch_size):
            count = min(self.sample_batch_size, n - start)
            condition = draw_condition(pl_module, count, offset=start)  # a conditional model's
            images = pl_module.sample(count, **condition_kwargs(condition))
            metric.update(images.float(), real=False)
        for name, value in metric.compute().items():
            pl_module.log(f"test/{name}", value.float(), sync_dist=False)  # equal on every rank
        metric.reset()


class ImportanceWeightedNLL(L.Callback):
    """Logs ``test/iwae_nll``: the mean importance-weighted bound on -log p(x) of the test images, in nats.

    Needs a model with ``iwae_nll(x, num_samples, decode_batch)`` (the VAE family).

    Args:
        num_samples: importance samples K per image (the bound tightens as K grows; K = 1 is the ELBO).
        decode_batch: latents decoded per forward pass.
    """

    def __init__(self, num_samples: int = 100, decode_batch: int = 4096) -> None:
        if num_samples < 1 or decode_batch < 1:
            raise ConfigError("ImportanceWeightedNLL: num_samples and decode_batch must be >= 1")
        self.num_samples = num_samples
        self.decode_batch = decode_batch

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "test" and not callable(getattr(pl_module, "iwae_nll", None)):
            raise ConfigError(
                f"ImportanceWeightedNLL: {type(pl_module).__name__} has no iwae_nll method (VAE family only)"
            )

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: dict[str, Tensor],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        condition = condition_kwargs(batch_condition(pl_module, batch))
        nll = pl_module.iwae_nll(batch["image"], self.num_samples, self.decode_batch, **condition)
        pl_module.log(
            "test/iwae_nll", nll.mean(), on_step=False, on_epoch=True, sync_dist=True, batch_size=len(nll)
        )

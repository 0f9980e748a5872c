"""Morphometric fidelity at test end: Morpho-MNIST attributes of samples and reconstructions vs test images.

Thin glue around :mod:`genvae.metrics.morphometry`. During ``test`` the attributes of every test image are
taken from ``batch["attributes"]`` when the datamodule provides them (else measured), and the model's
reconstructions (``reconstruct(x)``) are measured batch by batch. At the end of the test epoch the model's
``sample(n)`` draws as many images as there are test images (or ``num_samples``), and everything is logged
as ``test/morpho/<key>`` (``pl_module.log(..., sync_dist=False)``: every rank computes the same values from
the gathered attributes), so :class:`~genvae.callbacks.MetricsJSON` writes them. In YAML::

    trainer:
      callbacks:
        - class_path: genvae.callbacks.MorphometricFidelity

Keys: ``test/morpho/w1/<attribute>``, ``ks/<attribute>``, ``shift/<attribute>``, ``fmd``,
``undefined/real``, ``undefined/generated`` (models with ``sample``) and ``recon_mae/<attribute>``,
``recon_r/<attribute>``, ``undefined/pairs`` (models with ``reconstruct``). Figures (through
:func:`~genvae.utils.images.log_image`): ``test/morpho/distributions``, the real and generated distribution
of each attribute, and ``test/morpho/reconstruction``, each attribute of the reconstruction against the
original's.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from genvae.data.attributes import ATTRIBUTE_NAMES, morpho_attributes
from genvae.errors import ConfigError
from genvae.metrics.evaluation import EvaluationCollector, gather_rows
from genvae.metrics.morphometry import attribute_distances, reconstruction_errors
from genvae.models.conditioning import batch_condition, condition_kwargs, draw_condition
from genvae.plots.morphometry import distribution_figure, reconstruction_figure
from genvae.utils.images import log_image

__all__ = ["MorphometricFidelity"]

PREFIX = "test/morpho"


class MorphometricFidelity(L.Callback):
    """Log Morpho-MNIST distances of samples and reconstruction errors against the test images.

    Args:
        num_samples: generated images (default: as many as there are test images).
        sample_batch_size: images generated per ``sample`` call.
        samples: compare samples from ``sample(n)``: ``None`` when the model has it, ``True`` required
            (a ConfigError otherwise), ``False`` off.
        reconstructions: measure ``reconstruct(x)`` of the test images; ``None`` / ``True`` / ``False`` as
            ``samples``.
        seed: seed of the sampling noise (forked: other random draws are not affected).
        figures: log the distribution and reconstruction figures.
    """

    def __init__(
        self,
        num_samples: int | None = None,
        sample_batch_size: int = 1000,
        samples: bool | None = None,
        reconstructions: bool | None = None,
        seed: int = 0,
        figures: bool = True,
    ) -> None:
        if (num_samples is not None and num_samples < 2) or sample_batch_size < 1:
            raise ConfigError("MorphometricFidelity: num_samples must be >= 2 and sample_batch_size >= 1")
        self.num_samples = num_samples
        self.sample_batch_size = sample_batch_size
        self.samples = samples
        self.reconstructions = reconstructions
        self.seed = seed
        self.figures = figures
        self.use_samples = self.use_reconstructions = False
        self.collector = EvaluationCollector()

    @staticmethod
    def _resolve(option: bool | None, available: bool, key: str, method: str, model: str) -> bool:
        if option and not available:
            raise ConfigError(f"MorphometricFidelity.{key}: {model} has no {method} method")
        return available if option is None else option

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "test":
            return
        model = type(pl_module).__name__
        can_sample = callable(getattr(pl_module, "sample", None))
        can_reconstruct = callable(getattr(pl_module, "reconstruct", None))
        self.use_samples = self._resolve(self.samples, can_sample, "samples", "sample(n)", model)
        self.use_reconstructions = self._resolve(
            self.reconstructions, can_reconstruct, "reconstructions", "reconstruct(x)", model
        )
        if not (self.use_samples or self.use_reconstructions):
            raise ConfigError(
                f"MorphometricFidelity: nothing to measure for {model} (needs sample(n) or reconstruct(x), "
                "and samples / reconstructions not both false)"
            )

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.collector = EvaluationCollector()

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: dict[str, Tensor],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        x = batch["image"].float()
        names = tuple(getattr(trainer.datamodule, "attribute_names", ())) if trainer.datamodule else ()
        cached = batch.get("attributes") if names == ATTRIBUTE_NAMES else None
        parts = {"real": cached.float() if cached is not None else morpho_attributes(x)}
        if self.use_reconstructions:
            condition = condition_kwargs(batch_condition(pl_module, batch))
            parts["reconstructed"] = morpho_attributes(
                pl_module.reconstruct(x, **condition).float().view_as(x)
            )
        if "index" in batch:
            parts["index"] = batch["index"]
        self.collector.update(**parts)

    @torch.no_grad()
    def generated_attributes(self, trainer: L.Trainer, pl_module: L.LightningModule, n: int) -> Tensor:
        """Attributes ``[n, 6]`` of ``n`` samples, drawn in equal shares on every rank and gathered."""
        share = math.ceil(n / trainer.world_size)
        device = pl_module.device
        cuda = [device] if device.type == "cuda" else []
        parts = []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.seed + trainer.global_rank)
            for start in range(0, share, self.sample_batch_size):
                count = min(self.sample_batch_size, share - start)
                offset = trainer.global_rank * share + start
                condition = condition_kwargs(draw_condition(pl_module, count, offset=offset))
                images = pl_module.sample(count, **condition).float()
                parts.append(morpho_attributes(images))
        return gather_rows(pl_module, torch.cat(parts))[:n]

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.collector.parts:
            return
        outputs = self.collector.gather(pl_module)
        real = outputs["real"]
        model = type(pl_module).__name__
        results: dict[str, float] = {}
        generated = None
        if self.use_reconstructions:
            results.update(reconstruction_errors(real, outputs["reconstructed"]))
        if self.use_samples:
            generated = self.generated_attributes(trainer, pl_module, self.num_samples or len(real))
            results.update(attribute_distances(real, generated))
            undefined = int(results["undefined/generated"])
            if undefined:
                rank_zero_warn(f"MorphometricFidelity: {undefined} of {len(generated)} samples are blank")
        for key, value in sorted(results.items()):
            pl_module.log(f"{PREFIX}/{key}", value, sync_dist=False)  # equal on every rank
        self.collector = EvaluationCollector()
        if not self.figures or trainer.global_rank != 0:
            return
        if generated is not None:
            title = f"{model}: {len(real)} test images vs {len(generated)} samples, FMD {results['fmd']:.3g}"
            log_image(
                trainer, f"{PREFIX}/distributions", distribution_figure(real, generated, results, title)
            )
        if self.use_reconstructions:
            title = f"{model}: attributes of {len(real)} test images and their reconstructions"
            figure = reconstruction_figure(real, outputs["reconstructed"], results, title)
            log_image(trainer, f"{PREFIX}/reconstruction", figure)

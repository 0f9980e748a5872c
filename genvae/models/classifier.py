"""A small MNIST classifier trained by genvae itself: the feature network of the sample-quality metrics.

Inception weights cannot be downloaded everywhere and Inception features of 28x28 digits are a poor fit
anyway, so FID and precision/recall use the penultimate layer of this classifier instead
(``genvae fit --config experiments/classifier.yaml``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genvae.backbones import build_backbone
from genvae.errors import ConfigError
from genvae.models.base import Batch, StagedModule
from genvae.models.optim import adam


class Classifier(StagedModule):
    """Backbone encoder -> linear feature layer (``features``) -> dropout -> linear class logits.

    Logs ``{stage}/loss`` (cross-entropy) and ``{stage}/accuracy``.

    Args:
        backbone: registry name or dotted class path of a ``Backbone``; only its encoder is used.
        backbone_kwargs: keyword arguments of the backbone.
        image_shape: ``[C, H, W]``; linked from the datamodule by the CLI.
        num_classes: number of labels.
        feature_dim: width of the penultimate layer, the feature vector of FID / precision-recall.
        dropout: dropout rate before the class layer (training only).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
    """

    def __init__(
        self,
        backbone: str = "conv",
        backbone_kwargs: dict[str, Any] | None = None,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
        feature_dim: int = 128,
        dropout: float = 0.25,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        if num_classes < 2 or feature_dim < 1 or not 0.0 <= dropout < 1.0:
            raise ConfigError("model: num_classes must be >= 2, feature_dim >= 1 and dropout in [0, 1)")
        self.save_hyperparameters()
        self.image_shape = tuple(int(s) for s in image_shape)
        backbone_module = build_backbone(backbone, self.image_shape, backbone_kwargs)
        self.encoder = backbone_module.encoder  # the decoder half is not needed
        self.feature_dim = feature_dim
        self.feature_layer = nn.Sequential(
            nn.Flatten(), nn.Linear(math.prod(backbone_module.feature_shape), feature_dim), nn.ReLU()
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))
        self.lr = lr
        self.weight_decay = weight_decay

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer activations ``[B, feature_dim]`` of images ``x`` in [0, 1]."""
        return self.feature_layer(self.encoder(x))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``[B, num_classes]``."""
        return self.head(self.features(x))

    def _shared_step(self, batch: Batch, stage: str) -> Tensor:
        logits = self(batch["image"].float())
        loss = F.cross_entropy(logits.float(), batch["label"])
        accuracy = (logits.argmax(dim=1) == batch["label"]).float().mean()
        values = {"loss": loss.detach(), "accuracy": accuracy}
        self.log_stage(stage, values, len(logits), prog_bar=("loss", "accuracy"))
        return loss

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        logits = self(batch["image"].float())
        return {"label": batch["label"], "prediction": logits.argmax(dim=1), "index": batch["index"]}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)

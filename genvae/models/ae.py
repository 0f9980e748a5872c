"""Plain deterministic autoencoder."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from genvae.models.base import Batch, VectorLatentModel, batch_condition
from genvae.models.conditioning import Condition
from genvae.models.losses import bernoulli_nll, squared_error


class AE(VectorLatentModel):
    """Autoencoder trained on a reconstruction loss.

    Args:
        latent_dim: size of the bottleneck.
        reconstruction: ``bce`` (binary cross-entropy on logits) or ``mse`` (squared error of the sigmoid
            output), both summed over pixels and averaged over the batch.
    """

    def __init__(
        self, latent_dim: int = 16, reconstruction: Literal["mse", "bce"] = "bce", **kwargs: Any
    ) -> None:
        super().__init__(latent_dim=latent_dim, encoder_outputs=1, **kwargs)
        self.reconstruction_loss = reconstruction

    def encode(self, x: Tensor, condition: Condition | None = None) -> Tensor:
        return self.encoder_output(x, condition)

    def losses(self, batch: Batch) -> dict[str, Tensor | float]:
        x = batch["image"]
        condition = batch_condition(self, batch)
        logits = self.decode_logits(self.encode(x, condition), condition).float()
        reconstruction = torch.sigmoid(logits)
        if self.reconstruction_loss == "bce":
            recon = bernoulli_nll(logits, x.float()).mean()
        else:
            recon = squared_error(reconstruction, x.float()).mean()
        return {"loss": recon, "recon": recon, "reconstruction": reconstruction}

"""VQ-VAE (van den Oord et al. 2017) on the shared backbones: a grid of discrete codes as the latent."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from genvae.errors import ConfigError
from genvae.models.base import Batch, GenerativeModel
from genvae.models.conditioning import Condition
from genvae.models.losses import bernoulli_nll, squared_error
from genvae.models.quantizer import VectorQuantizer, code_usage, perplexity


class VQVAE(GenerativeModel):
    """Backbone encoder ``[C, M, M]`` -> 1x1 conv to ``code_dim`` -> nearest of ``num_codes`` codes -> 1x1 conv
    back to ``C`` -> backbone decoder. The grid ``M x M`` is the backbone's feature map (7x7 for ``conv``
    with two stages on 28x28 images).

    Loss = recon + codebook + beta * commitment (see :class:`~genvae.models.quantizer.VectorQuantizer`),
    recon summed over pixels and the quantizer terms over the code grid, all averaged over the batch.
    Logged per step/epoch: ``loss``, ``recon``, ``commitment``, ``codebook`` (without EMA) and ``mse``;
    per epoch, from a histogram of the codes chosen during the whole epoch summed across ranks:
    ``perplexity``, ``usage`` (fraction of codes chosen at least once) and ``dead_codes`` (codes never chosen).

    Args:
        num_codes: codebook size K.
        code_dim: dimension D of each code (the 1x1 projection of the backbone features).
        beta: commitment weight.
        ema: codebook updated by exponential moving averages (decay ``decay``) instead of a loss.
        decay: decay of the moving averages.
        kmeans_init: k-means initialisation of the codebook on the first training batch.
        restart_dead: restart codes used less than this many times per step (moving average) on random
            encoder outputs; ``True`` = 1.0, ``False`` = off.
        cosine: cosine-similarity lookup of l2-normalised vectors.
        reconstruction: ``bce`` (Bernoulli NLL of logits) or ``mse`` (squared error of the sigmoid output).
    """

    # its latent is a 7x7 grid of code vectors (784 numbers): no single number is meant to carry an attribute
    scores_latent_dims = False

    def __init__(
        self,
        num_codes: int = 256,
        code_dim: int = 16,
        beta: float = 0.25,
        ema: bool = True,
        decay: float = 0.99,
        kmeans_init: bool = True,
        restart_dead: bool | float = True,
        cosine: bool = False,
        reconstruction: Literal["bce", "mse"] = "bce",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if reconstruction not in ("bce", "mse"):
            raise ConfigError(f"model.reconstruction must be 'bce' or 'mse', got {reconstruction!r}")
        channels, height, width = self.backbone.feature_shape
        self.grid_shape = (height, width)
        self.reconstruction_loss = reconstruction
        self.pre_quantization = nn.Conv2d(channels, code_dim, 1)
        self.post_quantization = nn.Sequential(nn.Conv2d(code_dim, channels, 1), nn.ReLU())
        self.quantizer = VectorQuantizer(
            num_codes=num_codes,
            code_dim=code_dim,
            beta=beta,
            ema=ema,
            decay=decay,
            kmeans_init=kmeans_init,
            restart_dead=restart_dead,
            cosine=cosine,
        )
        self.num_codes = num_codes
        self._stage: str | None = None
        self._histograms: dict[str, Tensor] = {}

    # ----------------------------------------------------------- encode / decode
    def encoder_output(self, x: Tensor) -> Tensor:
        """Continuous encoder grid ``z_e`` ``[B, D, M, M]``."""
        return self.pre_quantization(self.backbone.encoder(x))

    def encode(self, x: Tensor, condition: Condition | None = None) -> Tensor:
        """Quantized latent grid ``[B, D, M, M]`` (float32; no codebook update). Unconditional: a
        non-empty ``condition`` is an error."""
        self.condition_vector(condition)
        return self.quantizer.lookup(self.encoder_output(x))[0]

    def encode_indices(self, x: Tensor) -> Tensor:
        """Code indices ``[B, M, M]`` (int64) of images ``x``."""
        return self.quantizer.lookup(self.encoder_output(x))[1]

    def decode_logits(self, z_q: Tensor) -> Tensor:
        return self.backbone.decoder(self.post_quantization(z_q))

    def decode(self, z: Tensor, condition: Condition | None = None) -> Tensor:
        self.condition_vector(condition)
        return torch.sigmoid(self.decode_logits(z))

    def decode_indices(self, indices: Tensor) -> Tensor:
        """Images in [0, 1] from a code-index grid ``[B, M, M]``."""
        return self.decode(self.quantizer.embed(indices))

    # ----------------------------------------------------------- loss
    def losses(self, batch: Batch) -> dict[str, Tensor | float]:
        x = batch["image"].float()
        quantized = self.quantizer(self.encoder_output(x))
        logits = self.decode_logits(quantized.quantized).float()
        reconstruction = torch.sigmoid(logits)
        if self.reconstruction_loss == "bce":
            recon = bernoulli_nll(logits, x).mean()
        else:
            recon = squared_error(reconstruction, x).mean()
        if self._stage is not None:
            self._histogram(self._stage).add_(
                torch.bincount(quantized.indices.flatten(), minlength=self.num_codes)
            )
        terms = {
            "loss": recon + quantized.loss,
            "recon": recon,
            "commitment": quantized.commitment_loss,
            "reconstruction": reconstruction,
        }
        if not self.quantizer.ema:
            terms["codebook"] = quantized.codebook_loss
        return terms

    def _shared_step(self, batch: Batch, stage: str) -> Tensor:
        self._stage = stage
        try:
            return super()._shared_step(batch, stage)
        finally:
            self._stage = None

    # ----------------------------------------------------------- per-epoch code statistics
    def _histogram(self, stage: str) -> Tensor:
        histogram = self._histograms.get(stage)
        if histogram is None or histogram.device != self.device:
            histogram = torch.zeros(self.num_codes, device=self.device)  # float: reducible on any backend
            self._histograms[stage] = histogram
        return histogram

    def code_statistics(self, counts: Tensor) -> dict[str, Tensor]:
        """Perplexity, usage and dead-code count of a code histogram ``[K]``."""
        return {
            "perplexity": perplexity(counts),
            "usage": code_usage(counts),
            "dead_codes": (counts == 0).sum().float(),
        }

    def _log_code_statistics(self, stage: str) -> None:
        counts = self._histograms.pop(stage, None)
        if counts is None or self.trainer.sanity_checking:
            return
        counts = self.trainer.strategy.reduce(counts, reduce_op="sum")  # sum of the ranks' histograms
        stats = self.code_statistics(counts)
        # equal on every rank (summed histograms): sync_dist averages equal values, and spares the DDP warning
        self.log_dict(
            {f"{stage}/{name}": value for name, value in stats.items()}, on_epoch=True, sync_dist=True
        )

    def on_train_epoch_start(self) -> None:
        self._histograms.pop("train", None)

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._histograms.pop("val", None)

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()  # the shared test-time evaluation
        self._histograms.pop("test", None)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self._log_code_statistics("train")

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self._log_code_statistics("val")

    def on_test_epoch_end(self) -> None:
        self._log_code_statistics("test")
        super().on_test_epoch_end()

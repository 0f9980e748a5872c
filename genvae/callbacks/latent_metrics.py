"""How the test-end latent metrics (interpretability, MIG, modularity, SAP, Spearman) are computed.

The model computes the metrics itself at the end of ``genvae test`` (:class:`genvae.models.base.GenerativeModel`,
``on_test_epoch_end``); this callback only sets two options on it before the test starts. They are not
model hyperparameters, because LightningCLI merges a checkpoint's hyperparameters over the command line at
test time and they could then not be changed. In YAML::

    trainer:
      callbacks:
        - class_path: genvae.callbacks.LatentMetrics
          init_args: {protocol: ksg, latent: mean}

Without the callback the same defaults apply. Both choices are written to the metrics JSON as
``meta/latent_protocol`` and ``meta/latent``.
"""

from __future__ import annotations

from typing import Literal, get_args

import lightning as L

from genvae.errors import ConfigError
from genvae.metrics.mutual_information import PROTOCOLS, Protocol

__all__ = ["LatentMetrics"]

LatentChoice = Literal["mean", "sample"]


class LatentMetrics(L.Callback):
    """Chooses the mutual-information protocol and the latent of the test-end latent metrics.

    Args:
        protocol: ``ksg`` (the AR-VAE reference code: scikit-learn's k-nearest-neighbour estimator),
            ``quantile`` (20 equal-mass bins) or ``histogram`` (disentanglement_lib's 20 equal-width bins);
            see :mod:`genvae.metrics.mutual_information`.
        latent: ``mean`` (the encoder's deterministic latent, the posterior mean for the VAE family) or
            ``sample`` (one reparameterised posterior sample per test image, as the AR-VAE reference
            evaluates; models with a deterministic encoder, AE and VQ-VAE, use their latent either way).
    """

    def __init__(self, protocol: Protocol = "ksg", latent: LatentChoice = "mean") -> None:
        if protocol not in PROTOCOLS:
            raise ConfigError(f"LatentMetrics.protocol: {protocol!r} is not one of {list(PROTOCOLS)}")
        if latent not in get_args(LatentChoice):
            raise ConfigError(
                f"LatentMetrics.latent: {latent!r} is not one of {list(get_args(LatentChoice))}"
            )
        self.protocol = protocol
        self.latent = latent

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "test":
            return
        if not hasattr(pl_module, "latent_protocol") or not hasattr(pl_module, "metric_latent"):
            raise ConfigError(
                f"LatentMetrics: {type(pl_module).__name__} computes no latent metrics (a genvae "
                "GenerativeModel does)"
            )
        pl_module.latent_protocol = self.protocol
        pl_module.metric_latent = self.latent

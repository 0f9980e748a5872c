"""Latent-space metrics (interpretability, MIG, modularity, SAP, Spearman score) and reconstruction accuracy."""

from genvae.metrics.disentanglement import (
    disentanglement_metrics,
    interpretability,
    mig,
    modularity,
    reconstruction_accuracy,
    sap,
    spearman_score,
)

__all__ = [
    "disentanglement_metrics",
    "interpretability",
    "mig",
    "modularity",
    "reconstruction_accuracy",
    "sap",
    "spearman_score",
]

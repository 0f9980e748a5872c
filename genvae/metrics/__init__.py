"""Latent-space metrics (interpretability, MIG, modularity, SAP, Spearman score), reconstruction accuracy,
and sample quality (FID, precision / recall)."""

from genvae.metrics.disentanglement import (
    disentanglement_metrics,
    interpretability,
    mig,
    modularity,
    reconstruction_accuracy,
    sap,
    spearman_score,
)
from genvae.metrics.sample_quality import (
    ClassifierFeatures,
    SampleQualityMetric,
    frechet_distance,
    precision_recall,
)

__all__ = [
    "ClassifierFeatures",
    "SampleQualityMetric",
    "disentanglement_metrics",
    "frechet_distance",
    "interpretability",
    "mig",
    "modularity",
    "precision_recall",
    "reconstruction_accuracy",
    "sap",
    "spearman_score",
]

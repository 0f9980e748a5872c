"""Latent-space metrics (interpretability, MIG, modularity, SAP, Spearman score), reconstruction accuracy,
sample quality (FID, precision / recall) and morphometric fidelity (Morpho-MNIST distances)."""

from genvae.metrics.disentanglement import (
    disentanglement_metrics,
    interpretability,
    mig,
    modularity,
    reconstruction_accuracy,
    sap,
    spearman_score,
)
from genvae.metrics.morphometry import (
    attribute_distances,
    morphometric_distances,
    reconstruction_errors,
    reconstruction_morphometry,
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
    "attribute_distances",
    "disentanglement_metrics",
    "frechet_distance",
    "interpretability",
    "mig",
    "modularity",
    "morphometric_distances",
    "precision_recall",
    "reconstruction_accuracy",
    "reconstruction_errors",
    "reconstruction_morphometry",
    "sap",
    "spearman_score",
]

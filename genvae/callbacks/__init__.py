"""Lightning callbacks shipped with genvae."""

from genvae.callbacks.control import AttributeControlEvaluation
from genvae.callbacks.evaluation import ImportanceWeightedNLL, MetricsJSON, SampleQuality
from genvae.callbacks.figures import Interpolation, LatentScatter, Reconstructions, Samples
from genvae.callbacks.generation import ConditionalGeneration
from genvae.callbacks.ground_truth import GroundTruthCounterfactuals
from genvae.callbacks.latent_metrics import LatentMetrics
from genvae.callbacks.morphometry import MorphometricFidelity
from genvae.callbacks.progress import EpochSummary, LoggingStepProgressBar
from genvae.callbacks.soundness import CounterfactualSoundness
from genvae.callbacks.speed import SpeedUp
from genvae.callbacks.traversal import LatentTraversal

__all__ = [
    "AttributeControlEvaluation",
    "ConditionalGeneration",
    "CounterfactualSoundness",
    "EpochSummary",
    "GroundTruthCounterfactuals",
    "ImportanceWeightedNLL",
    "Interpolation",
    "LatentMetrics",
    "LatentScatter",
    "LatentTraversal",
    "LoggingStepProgressBar",
    "MetricsJSON",
    "MorphometricFidelity",
    "Reconstructions",
    "SampleQuality",
    "Samples",
    "SpeedUp",
]

"""Lightning callbacks shipped with genvae, imported on first use.

``genvae.callbacks.SampleQuality`` (a YAML ``class_path``, or ``from genvae.callbacks import ...``) imports
its module when it is first asked for (PEP 562 module ``__getattr__``), so a command pays only for the
callbacks its config names: the CLI itself imports just the few it adds to every run.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> module under genvae.callbacks
_MODULES = {
    "AttributeControlEvaluation": "control",
    "ConditionalGeneration": "generation",
    "CounterfactualSoundness": "soundness",
    "EpochSummary": "progress",
    "GroundTruthCounterfactuals": "ground_truth",
    "ImportanceWeightedNLL": "evaluation",
    "Interpolation": "figures",
    "LatentMetrics": "latent_metrics",
    "LatentScatter": "figures",
    "LatentTraversal": "traversal",
    "LoggingStepProgressBar": "progress",
    "MetricsJSON": "metrics_json",
    "MorphometricFidelity": "morphometry",
    "Reconstructions": "figures",
    "SampleQuality": "evaluation",
    "Samples": "figures",
    "SpeedUp": "speed",
}

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

if TYPE_CHECKING:  # what static tools (type checkers, the API docs) see
    from genvae.callbacks.control import AttributeControlEvaluation
    from genvae.callbacks.evaluation import ImportanceWeightedNLL, SampleQuality
    from genvae.callbacks.figures import Interpolation, LatentScatter, Reconstructions, Samples
    from genvae.callbacks.generation import ConditionalGeneration
    from genvae.callbacks.ground_truth import GroundTruthCounterfactuals
    from genvae.callbacks.latent_metrics import LatentMetrics
    from genvae.callbacks.metrics_json import MetricsJSON
    from genvae.callbacks.morphometry import MorphometricFidelity
    from genvae.callbacks.progress import EpochSummary, LoggingStepProgressBar
    from genvae.callbacks.soundness import CounterfactualSoundness
    from genvae.callbacks.speed import SpeedUp
    from genvae.callbacks.traversal import LatentTraversal


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULES})

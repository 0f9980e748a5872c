"""Lightning callbacks shipped with genvae."""

from genvae.callbacks.progress import EpochSummary
from genvae.callbacks.traversal import LatentTraversal

__all__ = ["EpochSummary", "LatentTraversal"]

"""Lightning callbacks shipped with genvae."""

from genvae.callbacks.progress import EpochSummary

__all__ = ["EpochSummary"]

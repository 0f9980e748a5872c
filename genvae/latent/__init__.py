"""Latent-space operations below the callbacks and the CLI: encode / decode, traversals, interpolation,
attribute control in physical units (:class:`AttributeControl`) and its closed-loop evaluation."""

from genvae.latent.control import AttributeControl, EditResult, ExtrapolationWarning, calibration_path
from genvae.latent.evaluation import control_evaluation, control_table
from genvae.latent.traversal import decode_latents, encode_images, interpolate, traverse

__all__ = [
    "AttributeControl",
    "EditResult",
    "ExtrapolationWarning",
    "calibration_path",
    "control_evaluation",
    "control_table",
    "decode_latents",
    "encode_images",
    "interpolate",
    "traverse",
]

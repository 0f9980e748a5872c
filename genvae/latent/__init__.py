"""Latent-space operations below the callbacks and the CLI: encode / decode, traversals, interpolation,
attribute control in physical units (:class:`AttributeControl`) and its closed-loop evaluation, and
generation on request (:func:`sample`: a class and attribute values) and the class latents of
label-conditional models (:class:`ClassLatents`, :func:`label_edit`); what a command fits from a
checkpoint is cached beside it (:mod:`genvae.latent.fitted`)."""

from genvae.latent.class_latents import ClassLatents, label_edit
from genvae.latent.control import AttributeControl, EditResult, ExtrapolationWarning, calibration_path
from genvae.latent.evaluation import control_evaluation, control_table
from genvae.latent.sampling import SampleResult, sample
from genvae.latent.traversal import decode_latents, encode_images, interpolate, traverse

__all__ = [
    "AttributeControl",
    "ClassLatents",
    "EditResult",
    "ExtrapolationWarning",
    "SampleResult",
    "calibration_path",
    "control_evaluation",
    "control_table",
    "decode_latents",
    "encode_images",
    "interpolate",
    "label_edit",
    "sample",
    "traverse",
]

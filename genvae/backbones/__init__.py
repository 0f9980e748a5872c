"""Encoder/decoder backbones shared by every model family.

A backbone is chosen by registry name (``"mlp"``, ``"conv"``, ``"resnet"``) or by the dotted class path
of a user's own :class:`Backbone` subclass, with its keyword arguments in ``backbone_kwargs``.
"""

from genvae.backbones.base import BACKBONES, Backbone, build_backbone, register_backbone
from genvae.backbones.conv import ConvBackbone
from genvae.backbones.mlp import MLPBackbone
from genvae.backbones.resnet import ResNetBackbone

__all__ = [
    "BACKBONES",
    "Backbone",
    "ConvBackbone",
    "MLPBackbone",
    "ResNetBackbone",
    "build_backbone",
    "register_backbone",
]

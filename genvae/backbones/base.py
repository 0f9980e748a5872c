"""Backbone interface and registry."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from genvae.errors import ConfigError

BACKBONES: dict[str, type[Backbone]] = {}


class Backbone(nn.Module):
    """An encoder/decoder pair around a spatial feature map.

    ``encoder`` maps images ``[B, C, H, W]`` to a feature map ``[B, *feature_shape]``; ``decoder`` maps a
    feature map of that shape back to image *logits* ``[B, C, H, W]``. Models put their own heads between
    the two (a linear Gaussian head for the VAE family, a 1x1 conv and a quantizer for the VQ-VAE), so the
    same backbone serves every family. Subclasses set ``encoder``, ``decoder`` and ``feature_shape``.
    """

    encoder: nn.Module
    decoder: nn.Module
    feature_shape: tuple[int, int, int]

    def __init__(self, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.image_shape = tuple(int(s) for s in image_shape)


def register_backbone(name: str) -> Callable[[type[Backbone]], type[Backbone]]:
    """Class decorator that makes a backbone selectable by ``name``."""

    def decorator(cls: type[Backbone]) -> type[Backbone]:
        if name in BACKBONES:
            raise ValueError(f"backbone name {name!r} is already registered by {BACKBONES[name].__name__}")
        BACKBONES[name] = cls
        return cls

    return decorator


def _resolve(spec: str) -> type[Backbone]:
    if spec in BACKBONES:
        return BACKBONES[spec]
    module_name, _, class_name = spec.rpartition(".")
    if not module_name:
        raise ConfigError(
            f"backbone: unknown name {spec!r}; registered names are {sorted(BACKBONES)}, "
            "or give the dotted class path of a Backbone subclass"
        )
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"backbone: cannot import {spec!r} ({err})") from None
    if not (isinstance(cls, type) and issubclass(cls, Backbone)):
        raise ConfigError(f"backbone: {spec!r} is not a subclass of genvae.backbones.Backbone")
    return cls


def build_backbone(
    spec: str, image_shape: tuple[int, int, int], kwargs: dict[str, Any] | None = None
) -> Backbone:
    """Instantiate the backbone named ``spec`` (registry name or dotted class path) for ``image_shape``."""
    cls = _resolve(spec)
    try:
        return cls(image_shape=tuple(image_shape), **(kwargs or {}))
    except TypeError as err:
        raise ConfigError(f"backbone_kwargs for backbone {spec!r}: {err}") from None


def make_activation(name: str) -> nn.Module:
    """Activation module by name (``relu``, ``silu``, ``gelu``, ``leaky_relu``, ``elu``)."""
    table: dict[str, Callable[[], nn.Module]] = {
        "relu": nn.ReLU,
        "silu": nn.SiLU,
        "gelu": nn.GELU,
        "leaky_relu": lambda: nn.LeakyReLU(0.2),
        "elu": nn.ELU,
    }
    if name not in table:
        raise ConfigError(f"backbone_kwargs.activation: unknown {name!r}; choose from {sorted(table)}")
    return table[name]()


def check_divisible(image_shape: tuple[int, ...], halvings: int, backbone: str) -> tuple[int, int]:
    """Spatial size after ``halvings`` stride-2 stages, or a clear error when it would not invert exactly."""
    _, height, width = image_shape
    factor = 2**halvings
    if height % factor or width % factor:
        raise ConfigError(
            f"backbone {backbone!r}: image size {height}x{width} is not divisible by 2**{halvings}; "
            "use fewer entries in backbone_kwargs.channels"
        )
    return height // factor, width // factor

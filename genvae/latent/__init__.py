"""Latent-space operations below the callbacks and the CLI: encode / decode, traversals, interpolation,
attribute control in physical units (:class:`AttributeControl`) and its closed-loop evaluation."""

from genvae.latent.traversal import (
    decode_latents,
    encode_images,
    interpolate,
    traverse,
)

__all__ = ["decode_latents", "encode_images", "interpolate", "traverse"]

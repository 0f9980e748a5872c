"""Attribute-regularized VAE (AR-VAE, Pati & Lerch 2020): one latent dim per attribute, ordered like it.

On each batch of ``m`` images and for each regularized attribute ``a`` with its latent dim ``r``:
``D_r[i, j] = z_i^r - z_j^r`` and ``D_a[i, j] = a(x_i) - a(x_j)``, and

    L(r, a) = mean over the m^2 pairs of | tanh(delta * D_r) - sign(D_a) |

(pairs with equal attributes, the diagonal included, have target ``sign(0) = 0``). The loss is
``recon + beta * KL + gamma * sum_a L(r, a)`` with ``z`` the reparameterised posterior sample, as in the
authors' code (github.com/ashispati/ar-vae, ``Trainer.reg_loss_sign``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from genvae.data.attributes import ATTRIBUTE_NAMES, EXTRA_ATTRIBUTE_NAMES
from genvae.errors import ConfigError
from genvae.models.base import Batch
from genvae.models.vae import VAE

__all__ = ["ARVAE", "attribute_regularization"]


def attribute_regularization(z: Tensor, attributes: Tensor, delta: float = 1.0) -> Tensor:
    """AR-VAE sign loss per regularized attribute: ``[R]`` from ``z [m, R]`` and ``attributes [m, R]``.

    Column ``k`` of ``z`` is the latent dim assigned to column ``k`` of ``attributes``. Pairs where either
    attribute is not finite (a blank image's NaN) are left out of the mean.
    """
    if z.shape != attributes.shape or z.dim() != 2:
        raise ValueError(f"z {list(z.shape)} and attributes {list(attributes.shape)} must both be [m, R]")
    latent_gap = torch.tanh(delta * (z.unsqueeze(1) - z.unsqueeze(0)))  # [m, m, R]
    attribute_gap = attributes.unsqueeze(1) - attributes.unsqueeze(0)
    valid = attribute_gap.isfinite()
    error = (latent_gap - torch.sign(attribute_gap).nan_to_num(0.0)).abs() * valid
    return error.sum(dim=(0, 1)) / valid.sum(dim=(0, 1)).clamp(min=1)


class ARVAE(VAE):
    """VAE whose latent dims ``latent_dims[k]`` grow monotonically with attribute ``attributes[k]``.

    Logged terms: those of :class:`VAE`, plus ``ar_loss`` (sum over attributes of ``L(r, a)``, before the
    ``gamma`` weight) and ``ar_loss/<attribute>`` per regularized attribute.

    Args:
        gamma: weight of the attribute regularizer.
        delta: tanh sharpness of the latent distances.
        beta: weight of the KL term.
        attributes: names of the regularized attributes (default: all six in the datamodule's order,
            thickness, slant, length, area, width, height).
        latent_dims: latent dim of each attribute (default ``0 .. len(attributes) - 1``).
        **kwargs: the :class:`VAE` arguments (``latent_dim``, ``backbone``, ``lr``, ...).
    """

    def __init__(
        self,
        gamma: float = 10.0,
        delta: float = 1.0,
        beta: float = 1.0,
        attributes: list[str] | None = None,
        latent_dims: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(beta=beta, **kwargs)
        if gamma < 0 or delta <= 0:
            raise ConfigError(f"model: gamma must be >= 0 and delta > 0, got gamma={gamma}, delta={delta}")
        self.gamma = gamma
        self.delta = delta
        names = list(ATTRIBUTE_NAMES if attributes is None else attributes)
        known = ATTRIBUTE_NAMES + EXTRA_ATTRIBUTE_NAMES
        unknown = [name for name in names if name not in known]
        if unknown or not names or len(set(names)) != len(names):
            raise ConfigError(
                f"model.attributes: {names} must be distinct names from {list(known)}"
                + (f" (unknown: {unknown})" if unknown else "")
            )
        dims = list(range(len(names)) if latent_dims is None else latent_dims)
        if len(dims) != len(names):
            raise ConfigError(
                f"model.latent_dims: {len(dims)} dims given for {len(names)} attributes {names}"
            )
        if len(set(dims)) != len(dims) or any(not 0 <= d < self.latent_dim for d in dims):
            raise ConfigError(
                f"model.latent_dims: {dims} must be distinct dims in [0, latent_dim={self.latent_dim})"
            )
        self.regularized_attributes: tuple[str, ...] = tuple(names)
        self.regularized_dims: tuple[int, ...] = tuple(int(d) for d in dims)
        self._attribute_columns = self._columns(known)  # the datamodule's order replaces this at setup

    def _columns(self, available: Sequence[str]) -> list[int]:
        missing = [name for name in self.regularized_attributes if name not in available]
        if missing:
            raise ConfigError(
                f"model.attributes: {missing} not among the datamodule's attributes {list(available)}"
            )
        return [list(available).index(name) for name in self.regularized_attributes]

    def setup(self, stage: str) -> None:
        """Follow the datamodule's attribute order when it declares one (``attribute_names``)."""
        super().setup(stage)
        names = getattr(getattr(self._trainer, "datamodule", None), "attribute_names", None)
        if names is not None:
            self._attribute_columns = self._columns(tuple(names))

    def attribute_loss(self, z: Tensor, attributes: Tensor) -> Tensor:
        """``L(r, a)`` per regularized attribute ``[R]`` for latents ``z [m, D]`` and ``attributes [m, A]``."""
        if attributes.dim() != 2 or attributes.shape[1] <= max(self._attribute_columns):
            raise ConfigError(
                f"ARVAE: batch['attributes'] has shape {list(attributes.shape)}, expected "
                f"[batch, {len(ATTRIBUTE_NAMES)}] in the order {list(ATTRIBUTE_NAMES)}"
            )
        dims = torch.tensor(self.regularized_dims, device=z.device)
        columns = torch.tensor(self._attribute_columns, device=attributes.device)
        return attribute_regularization(
            z.index_select(1, dims), attributes.index_select(1, columns).float(), self.delta
        )

    def losses(self, batch: Batch) -> dict[str, Tensor | float]:
        if "attributes" not in batch:
            raise ConfigError(
                "ARVAE needs batch['attributes']: set data.init_args.attributes=true (MNISTDataModule)"
            )
        terms, z = self.vae_terms(batch)
        per_attribute = self.attribute_loss(z, batch["attributes"])
        ar_loss = per_attribute.sum()
        terms["loss"] = terms["loss"] + self.gamma * ar_loss
        terms["ar_loss"] = ar_loss
        for name, value in zip(self.regularized_attributes, per_attribute, strict=True):
            terms[f"ar_loss/{name}"] = value
        return terms

"""Loss terms shared by the model families. Every function returns one value per example ``[B]``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL( N(mu, exp(logvar)) || N(0, I) ), summed over latent dims: 0.5 * sum(mu^2 + var - 1 - logvar)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=-1)


def bernoulli_nll(logits: Tensor, target: Tensor) -> Tensor:
    """-log p(x | logits) of a factorised Bernoulli decoder, summed over pixels (targets in [0, 1])."""
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(1)


def gaussian_nll(mean: Tensor, target: Tensor, std: float) -> Tensor:
    """-log N(x | mean, std^2 I), summed over pixels."""
    per_pixel = 0.5 * ((target - mean) / std).pow(2) + math.log(std) + 0.5 * math.log(2 * math.pi)
    return per_pixel.flatten(1).sum(1)


def squared_error(mean: Tensor, target: Tensor) -> Tensor:
    """Sum of squared errors over pixels."""
    return (target - mean).pow(2).flatten(1).sum(1)


def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I): differentiable in mu and logvar."""
    return mu + torch.randn_like(mu) * (0.5 * logvar).exp()


def linear_ramp(step: int, steps: int, end: float) -> float:
    """0 at step 0, rising linearly to ``end`` at ``steps`` (``end`` at once when steps == 0)."""
    if steps <= 0:
        return end
    return end * min(1.0, step / steps)

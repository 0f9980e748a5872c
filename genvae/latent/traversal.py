"""Latent helpers: batched encode / decode in eval mode, traversals of one dim at a time, interpolation.

These are the latent-space operations the figure callbacks, the attribute control
(:mod:`genvae.latent.control`) and the ``genvae edit`` command share. They take any module with
``encode(x)`` and ``decode(z)`` (``genvae.models.GenerativeModel``); traversals need a flat latent
(``latent_dim``). A conditional model (``condition_names``) encodes and decodes under a condition
(:mod:`genvae.models.conditioning`), one row per image or latent; traversals of a conditional model decode
under the conditions of their base digits (the test digits', else class-balanced draws).

Traversal convention: around a centre latent (the mean of the model's test latents after ``test``, the
prior's 0 otherwise) each traversed dim ``d`` is moved by offsets given in standard deviations of ``d``
(the test latents' std, or the prior's 1) with the other dims held. The attribute tied to each dim is the
AR-VAE's regularized attribute (Pati & Lerch 2020), or after ``test`` the attribute whose interpretability
(Adel et al. 2018, :func:`genvae.metrics.disentanglement.interpretability`) picked the dim.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import lightning as L
import torch
from torch import Tensor, nn

from genvae.data.attributes import ATTRIBUTE_NAMES, EXTRA_ATTRIBUTE_NAMES, all_attributes, morpho_attributes
from genvae.errors import ConfigError
from genvae.metrics.disentanglement import rank
from genvae.models.conditioning import (
    LABEL,
    Condition,
    batch_condition,
    condition_kwargs,
    draw_condition,
    split_condition,
)

__all__ = [
    "attribute_curves",
    "attribute_pairs",
    "base_condition",
    "base_latents",
    "curve_monotonicity",
    "decode_latents",
    "encode_images",
    "eval_mode",
    "interpolate",
    "traversal_axis",
    "traverse",
]


def _device(module: nn.Module) -> torch.device:
    device = getattr(module, "device", None)
    if isinstance(device, torch.device):
        return device
    parameter = next(module.parameters(), None) if isinstance(module, nn.Module) else None
    return parameter.device if parameter is not None else torch.device("cpu")


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Run a block with ``module`` in eval mode and without gradients, restoring its training flag after."""
    was_training = getattr(module, "training", False)
    if isinstance(module, nn.Module):
        module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        if isinstance(module, nn.Module):
            module.train(was_training)


def encode_images(
    module: nn.Module, images: Tensor, batch_size: int = 1000, condition: Condition | None = None
) -> Tensor:
    """Deterministic latents of ``images`` (``module.encode``, float32), ``batch_size`` images at a time;
    ``condition``: the images' condition (conditional models), a tensor ``[N]`` per name.

    Images may be uint8 (0..255) or float in [0, 1]; they are moved to the module's device.
    """
    device = _device(module)
    parts = []
    conditions = split_condition(condition, batch_size, len(images))
    with eval_mode(module):
        for chunk, part in zip(images.split(batch_size), conditions, strict=True):
            chunk = chunk.to(device)
            chunk = chunk.float().div(255.0) if chunk.dtype == torch.uint8 else chunk.float()
            parts.append(module.encode(chunk, **condition_kwargs(part)).float())
    return torch.cat(parts) if parts else torch.empty(0, device=device)


def decode_latents(
    module: nn.Module, latents: Tensor, batch_size: int = 1000, condition: Condition | None = None
) -> Tensor:
    """Images in [0, 1] decoded from ``latents`` (``module.decode``, float32), ``batch_size`` at a time;
    ``condition``: the condition of each latent (conditional models), a tensor ``[N]`` per name."""
    device = _device(module)
    conditions = split_condition(condition, batch_size, len(latents))
    with eval_mode(module):
        parts = [
            module.decode(chunk.to(device), **condition_kwargs(part)).float()
            for chunk, part in zip(latents.split(batch_size), conditions, strict=True)
        ]
    return torch.cat(parts)


def interpolate(z0: Tensor, z1: Tensor, steps: int) -> Tensor:
    """``t * z0 + (1 - t) * z1`` for ``t`` from 1 down to 0 in ``steps`` steps: ``[steps, *z0.shape]``."""
    t = torch.linspace(1.0, 0.0, steps, device=z0.device, dtype=z0.dtype).view(-1, *([1] * z0.ndim))
    return t * z0 + (1 - t) * z1


def traversal_axis(module: L.LightningModule) -> tuple[Tensor, Tensor]:
    """Centre ``[D]`` and per-dim scale ``[D]``: the test latents' mean and std, else the prior's 0 and 1."""
    outputs = getattr(module, "test_outputs", None) or {}
    latents = outputs.get("latent")
    if latents is not None and len(latents) > 1 and latents.shape[1] == module.latent_dim:
        latents = latents.float().to(module.device)
        return latents.mean(0), latents.std(0).clamp(min=1e-6)
    zeros = torch.zeros(module.latent_dim, device=module.device)
    return zeros, torch.ones_like(zeros)


def attribute_pairs(module: L.LightningModule) -> list[tuple[int, str]]:
    """(latent dim, attribute name) pairs to measure: the AR-VAE's, else the tested interpretability picks."""
    dims = getattr(module, "regularized_dims", None)
    names = getattr(module, "regularized_attributes", None)
    if dims is not None and names is not None:
        return list(zip(dims, names, strict=True))
    results = getattr(module, "test_results", None) or {}
    prefix = "test/interpretability_dim/"
    return [(int(v), k[len(prefix) :]) for k, v in results.items() if k.startswith(prefix)]


def base_latents(module: L.LightningModule, count: int) -> Tensor:
    """Up to ``count`` test latents ``[K, D]`` (the first by example index) to sweep from, else the centre."""
    latents = (getattr(module, "test_outputs", None) or {}).get("latent")
    if latents is not None and len(latents) and latents.shape[1] == module.latent_dim and count > 0:
        return latents[:count].float().to(module.device)
    return traversal_axis(module)[0].unsqueeze(0)


def base_condition(module: L.LightningModule, count: int) -> Condition | None:
    """Conditions of the ``count`` latents :func:`base_latents` returns (None for an unconditional model):
    the test digits' own (label, attributes) after ``test``, else class-balanced draws
    (:func:`~genvae.models.conditioning.draw_condition`)."""
    if not getattr(module, "condition_names", ()):
        return None
    outputs = getattr(module, "test_outputs", None) or {}
    latents = outputs.get("latent")
    count = len(base_latents(module, count))
    usable = latents is not None and len(latents) >= count and (LABEL in outputs or "attributes" in outputs)
    if usable:
        rows = {key: outputs[key][:count] for key in (LABEL, "attributes") if key in outputs}
        try:
            return {k: v.to(module.device) for k, v in batch_condition(module, rows).items()}
        except ConfigError:  # the test outputs lack a conditioned attribute
            pass
    return draw_condition(module, count)


@torch.no_grad()
def traverse(
    module: L.LightningModule,
    dims: Sequence[int],
    offsets: Tensor,
    bases: Tensor | None = None,
    condition: Condition | None = None,
) -> Tensor:
    """Decoded images ``[len(offsets), len(dims), K, C, H, W]`` of the traversals from ``bases [K, D]``.

    Image ``[i, j, k]`` is ``bases[k]`` with dim ``dims[j]`` set to ``centre + offsets[i] * std`` of that
    dim (:func:`traversal_axis`); ``bases`` defaults to the centre itself (K = 1). A conditional model
    decodes base ``k`` under row ``k`` of ``condition`` (default: :func:`base_condition`).
    """
    if condition is None and getattr(module, "condition_names", ()):
        condition = base_condition(module, 1 if bases is None else len(bases))
    center, scale = traversal_axis(module)
    bases = center.unsqueeze(0) if bases is None else bases.to(center.device, center.dtype)
    offsets = offsets.to(center.device, center.dtype)
    dims_t = torch.as_tensor(list(dims), device=center.device, dtype=torch.long)
    z = bases.repeat(len(offsets), len(dims_t), 1, 1)  # [steps, dims, K, D]
    columns = torch.arange(len(dims_t), device=center.device)
    values = center[dims_t] + offsets.unsqueeze(1) * scale[dims_t]  # [steps, dims]
    # the two index tensors are apart, so the indexed view is [dims, steps, K]
    z[:, columns, :, dims_t] = values.T.unsqueeze(-1)
    repeats = len(offsets) * len(dims_t)  # z.flatten(0, 2) runs over the bases fastest
    repeated = None if condition is None else {k: v.repeat(repeats) for k, v in condition.items()}
    with eval_mode(module):
        images = module.decode(z.flatten(0, 2), **condition_kwargs(repeated))
    return images.view(*z.shape[:3], *images.shape[1:])


def attribute_curves(
    module: L.LightningModule,
    pairs: Sequence[tuple[int, str]],
    steps: int = 25,
    span: float = 3.0,
    num_bases: int = 16,
) -> tuple[Tensor, Tensor]:
    """Offsets ``[steps]`` (in std) and the measured attribute ``[len(pairs), steps]`` along each traversal.

    Pair ``(d, name)``: dim ``d`` of each of ``num_bases`` test latents (:func:`base_latents`) is swept
    from ``-span`` to ``+span`` std around the centre, attribute ``name`` (one of :data:`ATTRIBUTE_NAMES`,
    physical units) is measured on every decoded image and averaged over the bases (blank images, whose
    attributes are NaN, left out).
    """
    known = ATTRIBUTE_NAMES + EXTRA_ATTRIBUTE_NAMES
    unknown = [name for _, name in pairs if name not in known]
    if unknown:
        raise ConfigError(f"LatentTraversal: unknown attributes {unknown}; choose from {list(known)}")
    offsets = torch.linspace(-span, span, steps)
    if not pairs:
        return offsets, torch.zeros(0, steps)
    images = traverse(module, [d for d, _ in pairs], offsets, base_latents(module, num_bases))
    shape = images.shape[:3]  # [steps, P, K]
    measure = all_attributes if any(name in EXTRA_ATTRIBUTE_NAMES for _, name in pairs) else morpho_attributes
    measured = measure(images.flatten(0, 2).float()).view(*shape, -1).cpu()
    columns = torch.tensor([known.index(name) for _, name in pairs])
    chosen = measured[:, torch.arange(len(pairs)), :, columns]  # [P, steps, K]
    return offsets, chosen.nanmean(dim=-1)


def curve_monotonicity(values: Tensor) -> list[float]:
    """Spearman correlation of each measured curve ``[P, steps]`` with its offsets: 1 for a rising curve.

    NaN where a curve has no finite point (every decoded image blank).
    """
    scores = []
    for curve in values.float():
        finite = curve.isfinite()
        if finite.sum() < 2:
            scores.append(float("nan"))
            continue
        position = torch.arange(len(curve), dtype=torch.float64)[finite]
        measured = rank(curve[finite].double().unsqueeze(1)).squeeze(1)
        scores.append(float(torch.corrcoef(torch.stack([position, measured]))[0, 1].nan_to_num(0.0)))
    return scores

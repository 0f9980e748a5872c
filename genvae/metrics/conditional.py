"""Conditional generation: do the digits a model draws for a request have what was requested?

Pure functions of tensors, for class-conditional (and attribute-conditional) samples:

- **label accuracy**: share of digits generated for class ``c`` that a digit classifier (the genvae
  classifier) assigns to ``c``, per class and over all requests: the "classification accuracy of
  class-conditional samples" of conditional generative models (e.g. the class-conditional PixelCNN prior of
  van den Oord et al. 2017, and the effectiveness of ``do(digit)`` in Monteiro et al. 2023);
- **attribute error**: per requested attribute the median over the digits of
  ``|measured - requested| / std``, with ``measured`` by the Morpho-MNIST morphometrics
  (:func:`genvae.data.attributes.morpho_attributes`; De Sousa Ribeiro et al. 2023 report the "measured" MAE
  of counterfactual thickness the same way) and ``std`` the attribute's std on the test set: the same
  units as the control evaluation's error (:mod:`genvae.latent.evaluation`).

Sample quality of the same digits (FID, precision / recall, morphometric FMD against the test set) comes
from :mod:`genvae.metrics.sample_quality` and :mod:`genvae.metrics.morphometry`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["attribute_request_errors", "balanced_indices", "label_accuracy"]


def label_accuracy(predicted: Tensor, requested: Tensor, num_classes: int = 10) -> dict[str, float]:
    """``accuracy`` (share of ``predicted == requested`` over all ``[N]`` requests) and ``accuracy/<c>``
    for every class ``c < num_classes`` that was requested."""
    if predicted.shape != requested.shape or predicted.dim() != 1 or len(predicted) == 0:
        raise ValueError(
            f"expected two non-empty [N] label tensors, got {list(predicted.shape)} and {list(requested.shape)}"
        )
    requested = requested.long().cpu()
    hit = (predicted.long().cpu() == requested).double()
    per_class = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, requested, hit)
    counts = torch.bincount(requested, minlength=num_classes)[:num_classes]
    results = {"accuracy": float(hit.mean())}
    for c in range(num_classes):
        if counts[c]:
            results[f"accuracy/{c}"] = float(per_class[c] / counts[c])
    return results


def attribute_request_errors(
    measured: Tensor, requested: Tensor, stds: Tensor, names: Sequence[str]
) -> dict[str, float]:
    """``attribute_error/<a>``: median over the digits of ``|measured - requested| / std`` for each column
    ``a`` of ``names`` (``measured``, ``requested`` ``[N, A]``, ``stds`` ``[A]``); blank digits (NaN
    measurements) are left out; NaN when none is left."""
    if measured.shape != requested.shape or measured.dim() != 2 or measured.shape[1] != len(names):
        raise ValueError(
            f"expected measured and requested [N, {len(names)}], got {list(measured.shape)} and "
            f"{list(requested.shape)}"
        )
    error = (measured.double().cpu() - requested.double().cpu()).abs() / stds.double().cpu().clamp(min=1e-12)
    return {f"attribute_error/{name}": float(error[:, j].nanmedian()) for j, name in enumerate(names)}


def balanced_indices(labels: Tensor, per_class: int, num_classes: int = 10) -> Tensor:
    """Indices into ``labels [M]``: ``per_class`` digits of each class ``0..num_classes - 1`` in turn (class
    0's first, in their order, cycling when a class has fewer digits), so that a class-balanced request can
    take its attribute values from real digits of the class; ``[num_classes * per_class]`` int64."""
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    labels = labels.long().cpu()
    parts = []
    for c in range(num_classes):
        members = (labels == c).nonzero().squeeze(1)
        if len(members) == 0:
            raise ValueError(f"no digit of class {c} to take a request from")
        parts.append(members[torch.arange(per_class) % len(members)])
    return torch.cat(parts)

"""Axiomatic soundness of counterfactual edits: composition and reversibility, as image distances.

Monteiro et al. 2023 ("Measuring axiomatic soundness of counterfactual image models", ICLR) turn the axioms
of counterfactuals (Galles & Pearl 1998) into measurable properties of an image model ``f(x, a -> a')``
that edits image ``x`` with parents ``a`` to parents ``a'``:

- **composition**: the null edit (abduct, then predict with nothing changed) must return the image:
  ``f(x, a -> a) = x``. Applied ``m`` times, each output fed to the next, the distance ``d(f^m(x), x)``
  shows how fast an imperfect model drifts away from the image;
- **reversibility**: an edit followed by the edit back to the original parents must return the image:
  ``f(f(x, a -> a'), a' -> a) = x``;
- **effectiveness**: the edit achieves the requested parents (measured by predictors; in genvae the
  Morpho-MNIST morphometrics and the digit classifier of :mod:`genvae.latent.evaluation`).

Distance and aggregation as in the benchmark of Melistas et al. 2024 ("Benchmarking counterfactual image
generation", code github.com/gulnazaki/counterfactual-benchmark, ``evaluation/metrics/composition.py`` and
``methods/deepscm/evaluate.py``): per image the mean absolute pixel difference on the 0-255 scale,
``mean_{c,h,w} |x_m - x_0|``, then the mean and the (population, ``ddof = 0``) standard deviation over the
test images, for ``m = 1`` and ``m = 10`` null edits. De Sousa Ribeiro et al. 2023 (code
github.com/biomedia-mira/causal-gen) report the same L1 composition and reversibility.

The functions take the edits as callables (``images -> images``), so they are model-agnostic:
:mod:`genvae.latent.soundness` builds them for genvae's models. Images are ``[N, C, H, W]`` uint8 (0..255)
or float in [0, 1]; the edits receive float images in [0, 1] and return images on the same scale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_CYCLES",
    "Edit",
    "composition",
    "image_l1",
    "mean_std",
    "reversibility",
    "to_unit",
]

Edit = Callable[[Tensor], Tensor]  # images [N, C, H, W] in [0, 1] -> edited images, same shape and scale
DEFAULT_CYCLES: tuple[int, ...] = (1, 10)


def to_unit(images: Tensor) -> Tensor:
    """Float images in [0, 1]: uint8 divided by 255, anything else as float32."""
    return images.float().div(255.0) if images.dtype == torch.uint8 else images.float()


def image_l1(images: Tensor, reference: Tensor) -> Tensor:
    """``[N]`` float64: per image the mean absolute difference ``mean_{c,h,w} |x - x_0|`` on the 0-255 scale
    (both arguments uint8 or float in [0, 1], same shape ``[N, ...]``)."""
    if images.shape != reference.shape or images.dim() < 2:
        raise ValueError(
            f"expected two image batches [N, ...] of one shape, got {list(images.shape)} and "
            f"{list(reference.shape)}"
        )
    difference = to_unit(images).double() - to_unit(reference).to(images.device).double()
    return difference.abs().mul(255.0).flatten(1).mean(dim=1)


def mean_std(distances: Tensor) -> tuple[float, float]:
    """Mean and population standard deviation (``ddof = 0``, as ``np.std`` in the benchmark) of per-image
    distances ``[N]``; non-finite entries are left out; NaN, NaN for none."""
    finite = distances[distances.isfinite()].double()
    if len(finite) == 0:
        return float("nan"), float("nan")
    return float(finite.mean()), float(finite.std(correction=0))


def composition(null_edit: Edit, images: Tensor, cycles: Sequence[int] = DEFAULT_CYCLES) -> dict[int, Tensor]:
    """Per-image composition distances ``{m: [N]}``: ``image_l1(f^m(x), x)`` for each ``m`` in ``cycles``,
    with ``f = null_edit`` applied ``max(cycles)`` times in a row, each output fed to the next."""
    cycles = sorted({int(m) for m in cycles})
    if not cycles or cycles[0] < 1:
        raise ValueError(f"cycles must be positive integers, got {list(cycles)}")
    original = to_unit(images)
    current = original
    distances = {}
    for m in range(1, cycles[-1] + 1):
        current = null_edit(current)
        if current.shape != original.shape:
            raise ValueError(
                f"the null edit returned images of shape {list(current.shape)}, not {list(original.shape)}"
            )
        if m in cycles:
            distances[m] = image_l1(current, original)
    return distances


def reversibility(edit: Edit, edit_back: Edit, images: Tensor) -> Tensor:
    """Per-image reversibility distances ``[N]``: ``image_l1(edit_back(edit(x)), x)``."""
    original = to_unit(images)
    restored = edit_back(edit(original))
    if restored.shape != original.shape:
        raise ValueError(
            f"the edits returned images of shape {list(restored.shape)}, not {list(original.shape)}"
        )
    return image_l1(restored, original)

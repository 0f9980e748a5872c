"""Morphometric fidelity: compare generated or reconstructed digits with real ones by their Morpho-MNIST
attributes (thickness, slant, length, area, width, height; :mod:`genvae.data.attributes`).

Morpho-MNIST (Castro et al. 2019, "Morpho-MNIST: Quantitative Assessment and Diagnostics for
Representation Learning", JMLR 20) measures the digits a model produces in physical units; this module
turns the measurements into distances between two sets of images. Pure, vectorised torch functions of
attribute arrays ``[N, A]`` (any device; statistics in float64):

- **W1** per attribute: the Wasserstein-1 distance between the two empirical distributions,
  ``int |F_u(x) - F_v(x)| dx``, in the attribute's unit (:data:`ATTRIBUTE_UNITS`), as
  ``scipy.stats.wasserstein_distance`` (scipy ``stats/_stats_py.py``, ``_cdf_distance`` with p = 1).
- **KS** per attribute: the two-sample Kolmogorov-Smirnov statistic ``sup_x |F_u(x) - F_v(x)|`` as
  ``scipy.stats.ks_2samp`` (unitless, in [0, 1]).
- **shift** per attribute: mean(generated) - mean(real), signed, in the attribute's unit.
- **FMD**, Frechet morphometric distance: the Frechet distance (Dowson & Landau 1982; as FID, Heusel et al.
  2017, pytorch-fid ``fid_score.calculate_frechet_distance``) between Gaussians fitted (mean, unbiased
  covariance) to the A-dimensional attributes of each set, after standardising both sets by the real set's
  per-attribute mean and (unbiased) standard deviation, so every attribute counts in units of its real
  spread. The matrix square root is taken as ``tr sqrt(C1 C2) = sum sqrt(eig(C1^1/2 C2 C1^1/2))`` with
  symmetric eigendecompositions (exact for covariance matrices, no complex round-off).
- **reconstruction**: per attribute the mean absolute error ``|a(x^) - a(x)|`` (unit of the attribute) and
  the Pearson r between ``a(x^)`` and ``a(x)`` over the test images.

Undefined attributes: a blank image (constant intensity) has NaN attributes. Rows with any non-finite
attribute are left out and counted: ``undefined/real`` and ``undefined/generated`` for distances,
``undefined/pairs`` (pairs where either image is undefined) for reconstructions. With fewer than two
defined rows on a side every distance is NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from genvae.data.attributes import ATTRIBUTE_NAMES, morpho_attributes

__all__ = [
    "ATTRIBUTE_UNITS",
    "attribute_distances",
    "defined_rows",
    "empirical_cdfs",
    "gaussian_frechet_distance",
    "ks_statistic",
    "morphometric_distances",
    "reconstruction_errors",
    "reconstruction_morphometry",
    "wasserstein_1d",
]

# physical unit of each attribute at the 28x28 scale (genvae.data.attributes)
ATTRIBUTE_UNITS: dict[str, str] = {
    "thickness": "px",
    "slant": "rad",
    "length": "px",
    "area": "px^2",
    "width": "px",
    "height": "px",
}


def _check_pair(u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    if u.dim() != 2 or v.dim() != 2 or u.shape[1] != v.shape[1]:
        raise ValueError(f"expected [N, A] and [M, A] arrays, got {list(u.shape)} and {list(v.shape)}")
    if len(u) == 0 or len(v) == 0:
        raise ValueError(f"need at least one row on each side, got {len(u)} and {len(v)}")
    return u.double(), v.to(u.device).double()


def defined_rows(attributes: Tensor) -> Tensor:
    """bool ``[N]``: rows of ``attributes [N, A]`` whose every value is finite (the image is not blank)."""
    return attributes.isfinite().all(dim=1)


def empirical_cdfs(u: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Pooled sorted values ``x [A, N + M]`` and both right-continuous empirical CDFs there, per column.

    ``u [N, A]`` and ``v [M, A]`` (finite); ``F_u(x) = #{u <= x} / N`` as scipy's ``searchsorted(...,
    side="right")``. Returns ``(x, F_u(x), F_v(x))``, each ``[A, N + M]`` float64.
    """
    u, v = _check_pair(u, v)
    u_sorted = u.T.sort(dim=1).values.contiguous()
    v_sorted = v.T.sort(dim=1).values.contiguous()
    pooled = torch.cat([u_sorted, v_sorted], dim=1).sort(dim=1).values.contiguous()
    cdf_u = torch.searchsorted(u_sorted, pooled, right=True).double() / u_sorted.shape[1]
    cdf_v = torch.searchsorted(v_sorted, pooled, right=True).double() / v_sorted.shape[1]
    return pooled, cdf_u, cdf_v


def _w1(pooled: Tensor, cdf_u: Tensor, cdf_v: Tensor) -> Tensor:
    return ((cdf_u - cdf_v)[:, :-1].abs() * pooled.diff(dim=1)).sum(dim=1)


def _ks(cdf_u: Tensor, cdf_v: Tensor) -> Tensor:
    return (cdf_u - cdf_v).abs().amax(dim=1)


def wasserstein_1d(u: Tensor, v: Tensor) -> Tensor:
    """Wasserstein-1 distance ``[A]`` between the empirical distributions of each column of ``u``, ``v``."""
    return _w1(*empirical_cdfs(u, v))


def ks_statistic(u: Tensor, v: Tensor) -> Tensor:
    """Two-sample Kolmogorov-Smirnov statistic ``[A]`` of each column of ``u [N, A]`` and ``v [M, A]``."""
    return _ks(*empirical_cdfs(u, v)[1:])


def _sqrt_psd(matrix: Tensor) -> Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative round-off clipped)."""
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def gaussian_frechet_distance(x: Tensor, y: Tensor) -> Tensor:
    """Frechet distance (float64 scalar) between Gaussians fitted to ``x [N, D]`` and ``y [M, D]``.

    ``|mu_x - mu_y|^2 + tr(C_x + C_y - 2 (C_x C_y)^1/2)`` with unbiased covariances; needs N, M >= 2.
    """
    x, y = _check_pair(x, y)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"need at least 2 rows on each side for a covariance, got {len(x)} and {len(y)}")
    cov_x, cov_y = torch.cov(x.T).reshape(x.shape[1], -1), torch.cov(y.T).reshape(y.shape[1], -1)
    root_x = _sqrt_psd(cov_x)
    middle = root_x @ cov_y @ root_x
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    mean_term = (x.mean(0) - y.mean(0)).pow(2).sum()
    return mean_term + cov_x.trace() + cov_y.trace() - 2 * trace_root


def _names(names: Sequence[str] | None, columns: int) -> list[str]:
    names = list(ATTRIBUTE_NAMES if names is None else names)
    if len(names) != columns:
        raise ValueError(f"{len(names)} attribute names for {columns} columns")
    return names


def attribute_distances(
    real: Tensor, generated: Tensor, names: Sequence[str] | None = None
) -> dict[str, float]:
    """Distances between the attributes ``real [N, A]`` and ``generated [M, A]`` (order of ``names``,
    default :data:`ATTRIBUTE_NAMES`).

    Returns ``w1/<name>``, ``ks/<name>``, ``shift/<name>`` per attribute, ``fmd``, and the counts of left
    out rows ``undefined/real`` and ``undefined/generated`` (see the module docstring).
    """
    real, generated = _check_pair(real, generated)
    names = _names(names, real.shape[1])
    real_ok, generated_ok = defined_rows(real), defined_rows(generated)
    results: dict[str, float] = {
        "undefined/real": float((~real_ok).sum()),
        "undefined/generated": float((~generated_ok).sum()),
    }
    real, generated = real[real_ok], generated[generated_ok]
    if len(real) < 2 or len(generated) < 2:
        nan = float("nan")
        keys = [f"{kind}/{name}" for kind in ("w1", "ks", "shift") for name in names]
        return {**dict.fromkeys(keys, nan), "fmd": nan, **results}
    pooled, cdf_real, cdf_generated = empirical_cdfs(real, generated)
    per_attribute = {
        "w1": _w1(pooled, cdf_real, cdf_generated),
        "ks": _ks(cdf_real, cdf_generated),
        "shift": generated.mean(0) - real.mean(0),
    }
    for kind, values in per_attribute.items():
        results.update({f"{kind}/{name}": float(v) for name, v in zip(names, values.tolist(), strict=True)})
    mean, std = real.mean(0), real.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant real attribute stays unscaled
    results["fmd"] = float(gaussian_frechet_distance((real - mean) / std, (generated - mean) / std))
    return dict(sorted(results.items()))


def morphometric_distances(real: Tensor, generated: Tensor) -> dict[str, float]:
    """:func:`attribute_distances` of two batches of images ``[N, 1, 28, 28]`` in [0, 1] (or uint8).

    The attributes are measured with :func:`~genvae.data.attributes.morpho_attributes` on the images'
    device; pass precomputed attributes to :func:`attribute_distances` to reuse them.
    """
    return attribute_distances(morpho_attributes(real), morpho_attributes(generated))


def reconstruction_errors(
    original: Tensor, reconstructed: Tensor, names: Sequence[str] | None = None
) -> dict[str, float]:
    """Per attribute ``recon_mae/<name>`` (mean |a(x^) - a(x)|, unit of the attribute) and ``recon_r/<name>``
    (Pearson r of a(x^) and a(x)) of paired attributes ``original [N, A]`` and ``reconstructed [N, A]``.

    Pairs where either side is undefined are left out and counted as ``undefined/pairs``; r is NaN for a
    constant column or fewer than two pairs.
    """
    if original.shape != reconstructed.shape or original.dim() != 2:
        raise ValueError(
            f"expected paired [N, A] arrays, got {list(original.shape)} and {list(reconstructed.shape)}"
        )
    names = _names(names, original.shape[1])
    original, reconstructed = original.double(), reconstructed.to(original.device).double()
    ok = defined_rows(original) & defined_rows(reconstructed)
    a, b = original[ok], reconstructed[ok]
    results = {"undefined/pairs": float((~ok).sum())}
    mae = (b - a).abs().mean(0) if len(a) else torch.full((len(names),), float("nan"))
    centred_a, centred_b = a - a.mean(0), b - b.mean(0)
    r = (centred_a * centred_b).sum(0) / (centred_a.norm(dim=0) * centred_b.norm(dim=0))
    if len(a) < 2:
        r = torch.full((len(names),), float("nan"))
    for name, error, corr in zip(names, mae.tolist(), r.tolist(), strict=True):
        results[f"recon_mae/{name}"] = error
        results[f"recon_r/{name}"] = corr
    return dict(sorted(results.items()))


def reconstruction_morphometry(images: Tensor, reconstructions: Tensor) -> dict[str, float]:
    """:func:`reconstruction_errors` of images ``[N, 1, 28, 28]`` and their reconstructions (same shape)."""
    if images.shape != reconstructions.shape:
        raise ValueError(f"images {list(images.shape)} and reconstructions {list(reconstructions.shape)}")
    return reconstruction_errors(morpho_attributes(images), morpho_attributes(reconstructions))

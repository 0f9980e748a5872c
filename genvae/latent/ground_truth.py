"""Edits scored against the true counterfactual, on the causal Morpho-MNIST dataset.

Every digit of the causal dataset (:mod:`genvae.data.causal`) is ``causal_images(source, t, i)`` of an MNIST
source digit with thickness ``t`` and intensity ``i`` set by the causal model thickness -> intensity
(Pawlowski et al. 2020). So "this digit, had its thickness been ``t'``" has a known answer: the same source
digit set to ``t'`` and to the intensity its mechanism gives with the digit's own noise
(:func:`~genvae.data.causal.true_counterfactuals`). A model's edit is compared with that answer:

- ``<mode>/mae``: per-image mean ``|edited - truth|`` over the pixels, on the 0-255 scale (the scale of the
  counterfactual benchmarks' composition and reversibility, Melistas et al. 2024), mean over digits, and
  ``<mode>/mae_std`` its std over digits;
- ``<mode>/thickness_error``, ``<mode>/intensity_error``: median over digits of ``|measured - true|`` of the
  edited digit's thickness (px) and intensity (grey levels), measured with the project's morphometry
  (:func:`~genvae.data.attributes.all_attributes`; the "measured" MAE of De Sousa Ribeiro et al. 2023, here
  a median as in genvae's control evaluation);
- ``unedited/...``: the same scores of the test digit itself (what doing nothing scores), and
  ``truth/thickness_error``: how far the truth's own measured thickness lies from ``t'`` (the floor set by
  the data generator, ~0.1 px).

Modes: ``thickness`` asks the model only for ``thickness = t'`` (a model without the mechanism keeps the
digit's intensity); ``thickness_intensity`` asks for ``t'`` and the mechanism's ``i'`` (the model is told
the intensity the causal model implies: what an edit can do when the graph is known). The interventions
``t'`` are drawn per digit from the thickness marginal of the causal model (``0.5 + Gamma(10, 5)``, seeded),
as the counterfactual benchmarks draw their interventions from the data distribution.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from genvae.data.attributes import ALL_ATTRIBUTE_NAMES, all_attributes
from genvae.data.causal import sample_thickness, true_counterfactuals

__all__ = ["Edit", "ground_truth_evaluation", "intervention_thickness"]

# images [N, 1, H, W] in [0, 1] and per-digit absolute requests {attribute: [N]} -> edited images in [0, 1]
Edit = Callable[[Tensor, Mapping[str, Tensor]], Tensor]
Measure = Callable[[Tensor], Tensor]
MODES: dict[str, tuple[str, ...]] = {
    "thickness": ("thickness",),
    "thickness_intensity": ("thickness", "intensity"),
}


def intervention_thickness(n: int, seed: int = 0) -> Tensor:
    """``n`` interventions ``t'`` (px, float32) from the causal model's thickness marginal, seeded."""
    return sample_thickness(n, torch.Generator().manual_seed(seed)).float()


def _scores(images: Tensor, measured: Tensor, truth: Tensor, goals: Mapping[str, Tensor]) -> dict[str, float]:
    """MAE to the truth (0-255) and median |measured - goal| per goal attribute of ``images`` in [0, 1]."""
    mae = (images.float() * 255.0 - truth.float()).abs().flatten(1).mean(1)
    out = {"mae": float(mae.mean()), "mae_std": float(mae.std(unbiased=False))}
    for name, goal in goals.items():
        error = (measured[:, ALL_ATTRIBUTE_NAMES.index(name)] - goal.to(measured)).abs()
        out[f"{name}_error"] = (
            float(error[error.isfinite()].median()) if error.isfinite().any() else float("nan")
        )
    return out


@torch.no_grad()
def ground_truth_evaluation(
    edit: Edit,
    images: Tensor,
    sources: Tensor,
    thickness: Tensor,
    intensity: Tensor,
    new_thickness: Tensor,
    *,
    modes: Sequence[str] = ("thickness",),
    invert: bool = False,
    measure: Measure = all_attributes,
) -> dict[str, float]:
    """Scores of ``edit`` against the true counterfactuals of ``do(thickness = new_thickness)``.

    Args:
        edit: the model's edit (:data:`Edit`), called once per mode with absolute per-digit requests.
        images: the causal dataset's digits ``[N, 1, H, W]`` (uint8 or float in [0, 1]).
        sources: the MNIST digits they were made from (uint8, same shape).
        thickness: the thickness target each digit was made with ``[N]``.
        intensity: the intensity target each digit was made with ``[N]``.
        new_thickness: the intervention per digit ``[N]`` (:func:`intervention_thickness`).
        modes: keys of :data:`MODES`: which attributes the edit is asked to set.
        invert: the dataset was made with the inverted mechanism.
        measure: images -> attributes ``[N, 7]`` in ``ALL_ATTRIBUTE_NAMES`` order.

    Returns:
        ``{"<mode>/mae", "<mode>/mae_std", "<mode>/<attribute>_error", "unedited/...",
        "truth/thickness_error"}`` (see the module docstring).
    """
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise ValueError(f"ground_truth_evaluation: unknown modes {unknown}; choose from {list(MODES)}")
    truth, new_intensity = true_counterfactuals(sources, thickness, intensity, new_thickness, invert)
    new_intensity = new_intensity.to(new_thickness.device)
    goals = {"thickness": new_thickness, "intensity": new_intensity}
    as_unit = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    results: dict[str, float] = {}
    truth_measured = measure(truth)
    results["truth/thickness_error"] = _scores(truth.float() / 255.0, truth_measured, truth, goals)[
        "thickness_error"
    ]
    for key, value in _scores(as_unit, measure(as_unit), truth, goals).items():
        results[f"unedited/{key}"] = value
    for mode in modes:
        edited = edit(as_unit, {name: goals[name] for name in MODES[mode]})
        for key, value in _scores(edited, measure(edited), truth, goals).items():
            results[f"{mode}/{key}"] = value
    return results

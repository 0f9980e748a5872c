"""Closed-loop evaluation of attribute control: ask for a change, measure what the decoded digit got.

For each controlled attribute ``a`` and each requested change of ``k`` attribute standard deviations
(default ``k`` in -2, -1, -0.5, +0.5, +1, +2; the std of ``a`` on the calibration images), every test digit
is edited with :meth:`~genvae.latent.control.AttributeControl.apply` and the edited image is measured with
the project's Morpho-MNIST morphometrics. Reported, all in units of attribute stds:

- **error**: ``median_i |achieved_i - requested_i| / std_a`` over the digits, with ``achieved`` the
  measured change from the unedited reconstruction (per step, and the median over all steps);
- **leakage** ``[a, b]``: ``mean_i |change of b_i| / std_b`` when only ``a`` is edited, averaged over the
  steps (``b != a``). Some leakage is physics, not entanglement: a thicker stroke has a larger area
  (thickness and area are coupled), a wider digit is longer;
- **identity**: share of edited digits to which a digit classifier (the genvae classifier) still assigns
  the original label (per step, and over the edits of at most 1 std).

Digits whose reconstruction or edit is blank (NaN attributes) are left out of the error and the leakage
(and count as not preserved for identity). A model whose dims map exactly onto the attributes scores 0
error and 0 leakage (known-answer test in ``tests/test_latent_control.py``). The evaluation follows the
closed-loop protocol of the issue; the attributes are those of Castro et al. 2019 (Morpho-MNIST).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from genvae.data.attributes import ATTRIBUTE_NAMES
from genvae.latent.control import AttributeControl, EditResult, ExtrapolationWarning

__all__ = ["DEFAULT_STEPS", "control_evaluation", "control_table", "edit_errors", "step_key"]

DEFAULT_STEPS: tuple[float, ...] = (-2.0, -1.0, -0.5, 0.5, 1.0, 2.0)
Classifier = Callable[[Tensor], Tensor]  # images -> class logits [N, C]


def step_key(step: float) -> str:
    """Name of a step in std units in metric keys: ``-0.5`` -> ``"-0.5std"``, ``1`` -> ``"+1std"``."""
    return f"{step:+g}std"


def edit_errors(result: EditResult, stds: Tensor) -> tuple[Tensor, Tensor]:
    """Per-digit signed error ``[N, 6]`` (achieved minus requested, in stds; NaN where nothing was asked)
    and absolute change ``[N, 6]`` of every attribute from the unedited reconstruction, in stds."""
    stds = stds.to(result.measured)
    error = (result.measured - result.target) / stds
    change = (result.measured - result.original).abs() / stds
    return error, change


@torch.no_grad()
def _identity(classify: Classifier | None, images: Tensor, labels: Tensor | None) -> Tensor:
    """``[N]`` bool: the classifier's label of each edited image equals ``labels`` (empty without one)."""
    if classify is None or labels is None:
        return torch.zeros(0, dtype=torch.bool)
    predicted = torch.cat([classify(chunk).argmax(dim=1) for chunk in images.split(1000)])
    return predicted.cpu() == labels.cpu()


def control_evaluation(
    control: AttributeControl,
    images: Tensor,
    labels: Tensor | None = None,
    classify: Classifier | None = None,
    steps: Sequence[float] = DEFAULT_STEPS,
    names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Error, leakage and identity of closed-loop edits of ``images`` (see the module docstring).

    Keys (flat, for the metrics JSON): ``error/<a>/<step>``, ``error/<a>`` (median over steps and digits),
    ``error`` (mean of the per-attribute errors), ``leakage/<a>/<b>``, ``leakage/<a>`` (mean over ``b``),
    ``leakage`` (mean over ``a``); with a classifier and labels, ``identity/<step>``, ``identity/<a>``,
    ``identity`` (over all edits) and ``identity_1std`` (edits of at most 1 std).
    """
    names = list(control.calibrations if names is None else names)
    stds = torch.tensor(
        [control.calibrations[n].std if n in control.calibrations else 1.0 for n in ATTRIBUTE_NAMES]
    )
    results: dict[str, float] = {}
    kept: dict[float, list[Tensor]] = {step: [] for step in steps}
    leakage_rows = []
    for name in names:
        column = ATTRIBUTE_NAMES.index(name)
        errors, changes, same = [], [], []
        for step in steps:
            with warnings.catch_warnings():  # large steps of extreme digits are expected to extrapolate
                warnings.simplefilter("ignore", ExtrapolationWarning)
                result = control.apply(images, {name: step * control.calibrations[name].std})
            error, change = edit_errors(result, stds)
            errors.append(error[:, column].abs().cpu())
            changes.append(change.cpu())
            results[f"error/{name}/{step_key(step)}"] = float(error[:, column].abs().nanmedian())
            preserved = _identity(classify, result.images, labels)
            if len(preserved):
                same.append(preserved)
                kept[step].append(preserved)
        results[f"error/{name}"] = float(torch.cat(errors).nanmedian())
        leakage = torch.stack(changes).nanmean(dim=(0, 1))  # [6]
        others = [b for b in ATTRIBUTE_NAMES if b != name]
        for other in others:
            results[f"leakage/{name}/{other}"] = float(leakage[ATTRIBUTE_NAMES.index(other)])
        leakage_rows.append(float(leakage[[ATTRIBUTE_NAMES.index(b) for b in others]].mean()))
        results[f"leakage/{name}"] = leakage_rows[-1]
        if same:
            results[f"identity/{name}"] = float(torch.cat(same).float().mean())
    if names:
        results["error"] = float(torch.tensor([results[f"error/{n}"] for n in names]).mean())
        results["leakage"] = float(torch.tensor(leakage_rows).mean())
    if any(kept.values()):
        for step, parts in kept.items():
            results[f"identity/{step_key(step)}"] = float(torch.cat(parts).float().mean())
        results["identity"] = float(torch.cat([p for parts in kept.values() for p in parts]).float().mean())
        small = [p for step, parts in kept.items() if abs(step) <= 1 for p in parts]
        if small:
            results["identity_1std"] = float(torch.cat(small).float().mean())
    return results


def control_table(
    results: Mapping[str, float], names: Sequence[str] | None = None, steps: Sequence[float] = DEFAULT_STEPS
) -> str:
    """Markdown tables of :func:`control_evaluation`'s results: per attribute the median |error| at each
    step, the mean leakage and the identity; then the leakage matrix (row = edited attribute)."""
    if names is None:
        names = [n for n in ATTRIBUTE_NAMES if f"error/{n}" in results]
    identity = any(f"identity/{n}" in results for n in names)

    def cell(key: str) -> str:
        value = results.get(key)
        return "-" if value is None or value != value else f"{value:.3f}"

    head = ["attribute", *(f"error {step_key(s)}" for s in steps), "error (all)", "leakage"]
    head += ["identity"] if identity else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        row = [name, *(cell(f"error/{name}/{step_key(s)}") for s in steps), cell(f"error/{name}")]
        row += [cell(f"leakage/{name}")] + ([cell(f"identity/{name}")] if identity else [])
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "| edited \\ measured | " + " | ".join(ATTRIBUTE_NAMES) + " |"]
    lines.append("|" + "---|" * (len(ATTRIBUTE_NAMES) + 1))
    for name in names:
        row = [cell(f"leakage/{name}/{b}") if b != name else "-" for b in ATTRIBUTE_NAMES]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"

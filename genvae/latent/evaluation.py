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

**Plausible requests.** A request can ask for a digit no writer produces: MNIST digits are size-normalised,
so a height 1 std above the mean is taller than nearly every real digit of most classes, and a classifier
trained on real digits may then change its mind however good the edit. With the attribute ranges of real
digits per class (:func:`class_attribute_ranges`: the central 98% of the training digits of each label),
identity is also split by whether the requested value lies inside the range of the digit's own class
(``identity_1std/plausible``, ``identity_1std/implausible``, ``plausible_1std`` = share inside), which
separates edits that broke a digit from requests for an atypical one.

Digits whose reconstruction or edit is blank (NaN attributes) are left out of the error and the leakage
(and count as not preserved for identity). A model whose dims map exactly onto the attributes scores 0
error and 0 leakage (known-answer test in ``tests/test_latent_control.py``). The evaluation follows the
closed-loop protocol of the issue; the attributes are those of Castro et al. 2019 (Morpho-MNIST).

**Physical edits.** The issue states its targets in physical units (thickness +1 px, slant -0.2 rad,
width +2 px, height -0.5 px: :data:`DEFAULT_PHYSICAL_EDITS`). Each such edit is applied alone to the first
``physical_images`` digits and scored as above (``physical/<a>/error``, ``/leakage``, ``/identity``, still
divided by the calibration std of each attribute), and once more with the calibration alone
(``rounds = 0``, ``physical/<a>/error_open_loop``) to show what the closed loop adds.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import torch
from torch import Tensor

from genvae.data.attributes import ATTRIBUTE_NAMES
from genvae.errors import ConfigError
from genvae.latent.control import AttributeControl, EditResult, ExtrapolationWarning, Reference
from genvae.models.conditioning import Condition, take_condition

__all__ = [
    "DEFAULT_PHYSICAL_EDITS",
    "DEFAULT_STEPS",
    "check_physical_edits",
    "class_attribute_ranges",
    "control_evaluation",
    "control_table",
    "edit_errors",
    "physical_evaluation",
    "step_key",
]

DEFAULT_STEPS: tuple[float, ...] = (-2.0, -1.0, -0.5, 0.5, 1.0, 2.0)
# the targets, in physical units (px, rad): one edit each, applied alone
DEFAULT_PHYSICAL_EDITS: Mapping[str, float] = MappingProxyType(
    {"thickness": 1.0, "slant": -0.2, "width": 2.0, "height": -0.5}
)
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


def check_physical_edits(edits: Mapping[str, float] | None, who: str = "physical_edits") -> dict[str, float]:
    """``edits`` as ``{attribute: change in physical units}`` (``None``: none), or a one-line
    :class:`~genvae.errors.ConfigError` naming ``who`` for an unknown attribute or a non-finite change."""
    edits = dict(edits or {})
    unknown = sorted(set(edits) - set(ATTRIBUTE_NAMES))
    if unknown:
        raise ConfigError(f"{who}: unknown attributes {unknown}; choose from {list(ATTRIBUTE_NAMES)}")
    checked = {}
    for name, value in edits.items():
        try:
            checked[name] = float(value)
        except (TypeError, ValueError):
            checked[name] = math.nan
        if not math.isfinite(checked[name]):
            raise ConfigError(f"{who}: {name}={value!r} is not a finite number")
    return checked


def _calibrated(control: AttributeControl, edits: dict[str, float]) -> dict[str, float]:
    """``edits``, or a one-line :class:`~genvae.errors.ConfigError` if one of them is not calibrated."""
    missing = sorted(set(edits) - set(control.calibrations))
    if missing:
        raise ConfigError(
            f"physical_edits: {missing} are not calibrated; calibrated: {list(control.calibrations)}"
        )
    return edits


def _apply(
    control: AttributeControl,
    images: Tensor,
    changes: Mapping[str, float],
    reference: Reference | None = None,
) -> EditResult:
    """:meth:`AttributeControl.apply` without the extrapolation warnings that large or extreme edits raise;
    ``reference``: the images' :meth:`AttributeControl.reference`, shared by all edits of them."""
    with warnings.catch_warnings():  # large steps of extreme digits are expected to extrapolate
        warnings.simplefilter("ignore", ExtrapolationWarning)
        return control.apply(images, changes, reference=reference)


@torch.no_grad()
def _identity(classify: Classifier | None, images: Tensor, labels: Tensor | None) -> Tensor:
    """``[N]`` bool: the classifier's label of each edited image equals ``labels`` (empty without one)."""
    if classify is None or labels is None:
        return torch.zeros(0, dtype=torch.bool)
    predicted = torch.cat([classify(chunk).argmax(dim=1) for chunk in images.split(1000)])
    return predicted.cpu() == labels.cpu()


def class_attribute_ranges(attributes: Tensor, labels: Tensor, coverage: float = 0.98) -> Tensor:
    """``[C, 6, 2]`` float: per label ``c < C = max(labels) + 1`` and attribute, the central ``coverage`` range
    (the ``(1 - coverage) / 2`` and ``(1 + coverage) / 2`` quantiles) of ``attributes [N, 6]`` of the digits
    with that label; NaN bounds for a label without digits. Blank digits (NaN attributes) are ignored."""
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    if attributes.dim() != 2 or len(attributes) != len(labels):
        raise ValueError(
            f"expected attributes [N, A] and labels [N], got {list(attributes.shape)}, {list(labels.shape)}"
        )
    attributes, labels = attributes.float().cpu(), labels.long().cpu()
    quantiles = torch.tensor([(1 - coverage) / 2, (1 + coverage) / 2])
    ranges = torch.full((int(labels.max()) + 1, attributes.shape[1], 2), float("nan"))
    for label in labels.unique().tolist():
        ranges[label] = attributes[labels == label].nanquantile(quantiles, dim=0).T
    return ranges


def _plausible(result: EditResult, column: int, labels: Tensor | None, ranges: Tensor | None) -> Tensor:
    """``[N]`` bool: the requested value of attribute ``column`` lies in the range of the digit's class (empty
    without labels or ranges; False for labels the ranges do not cover)."""
    if labels is None or ranges is None:
        return torch.zeros(0, dtype=torch.bool)
    labels = labels.long().cpu()
    known = labels < len(ranges)
    low, high = ranges[labels.clamp(max=len(ranges) - 1), column].unbind(-1)
    requested = result.target[:, column].float().cpu()
    return known & (requested >= low) & (requested <= high)


def _stds(control: AttributeControl) -> Tensor:
    """``[6]`` calibration std of each attribute (1 for the uncalibrated ones)."""
    return torch.tensor(
        [control.calibrations[n].std if n in control.calibrations else 1.0 for n in ATTRIBUTE_NAMES]
    )


def physical_evaluation(
    control: AttributeControl,
    images: Tensor,
    edits: Mapping[str, float] = DEFAULT_PHYSICAL_EDITS,
    labels: Tensor | None = None,
    classify: Classifier | None = None,
    reference: Reference | None = None,
    condition: Condition | None = None,
) -> dict[str, float]:
    """Error, leakage and identity of each edit of ``edits`` (physical units, applied alone) of ``images``
    (``reference``: their :meth:`AttributeControl.reference`, computed here when None, under ``condition``,
    the images' condition for a conditional model).

    Keys: ``physical/<a>/error`` (median |achieved - requested| / std_a, closed loop),
    ``physical/<a>/error_open_loop`` (the same with the calibration alone, ``rounds = 0``),
    ``physical/<a>/leakage`` (mean over the other attributes ``b`` of mean |change of b| / std_b) and, with a
    classifier and labels, ``physical/<a>/identity`` (share of edited digits still given their label).
    """
    edits = _calibrated(control, check_physical_edits(edits))
    stds = _stds(control)
    open_loop = copy.copy(control)
    open_loop.rounds = 0
    results: dict[str, float] = {}
    reference = control.reference(images, condition) if reference is None else reference
    for name, change in edits.items():
        column = ATTRIBUTE_NAMES.index(name)
        others = [b for b in range(len(ATTRIBUTE_NAMES)) if b != column]
        key = f"physical/{name}"
        result = _apply(control, images, {name: change}, reference)
        error, moved = edit_errors(result, stds)
        results[f"{key}/error"] = float(error[:, column].abs().nanmedian())
        results[f"{key}/leakage"] = float(moved[:, others].nanmean(dim=0).mean())
        preserved = _identity(classify, result.images, labels)
        if len(preserved):
            results[f"{key}/identity"] = float(preserved.float().mean())
        error, _ = edit_errors(_apply(open_loop, images, {name: change}, reference), stds)
        results[f"{key}/error_open_loop"] = float(error[:, column].abs().nanmedian())
    return results


def _identity_split(
    key: str, share_key: str, preserved: list[Tensor], plausible: list[Tensor]
) -> dict[str, float]:
    """``key``: share of ``preserved``; with plausibility masks, ``share_key`` (share of plausible requests)
    and ``key/plausible``, ``key/implausible`` (identity within each group, NaN for an empty group)."""
    if not preserved:
        return {}
    kept = torch.cat(preserved)
    results = {key: float(kept.float().mean())}
    inside = torch.cat(plausible) if plausible else torch.zeros(0, dtype=torch.bool)
    if len(inside) == len(kept):
        nan = float("nan")
        results[share_key] = float(inside.float().mean())
        results[f"{key}/plausible"] = float(kept[inside].float().mean()) if inside.any() else nan
        results[f"{key}/implausible"] = float(kept[~inside].float().mean()) if (~inside).any() else nan
    return results


def control_evaluation(
    control: AttributeControl,
    images: Tensor,
    labels: Tensor | None = None,
    classify: Classifier | None = None,
    steps: Sequence[float] = DEFAULT_STEPS,
    names: Sequence[str] | None = None,
    physical_edits: Mapping[str, float] | None = DEFAULT_PHYSICAL_EDITS,
    physical_images: int = 500,
    class_ranges: Tensor | None = None,
    condition: Condition | None = None,
) -> dict[str, float]:
    """Error, leakage and identity of closed-loop edits of ``images`` (see the module docstring);
    ``condition``: the images' condition for a conditional model (every edit keeps it).

    Keys (flat, for the metrics JSON): ``error/<a>/<step>``, ``error/<a>`` (median over steps and digits),
    ``error`` (mean of the per-attribute errors), ``leakage/<a>/<b>``, ``leakage/<a>`` (mean over ``b``),
    ``leakage`` (mean over ``a``); with a classifier and labels, ``identity/<step>``, ``identity/<a>``,
    ``identity`` (over all edits), ``identity_1std`` and ``identity_1std/<a>`` (edits of at most 1 std);
    with ``class_ranges`` (:func:`class_attribute_ranges`) as well, ``plausible_1std`` (share of those
    edits whose requested value lies in the range of the digit's class), ``identity_1std/plausible``,
    ``identity_1std/implausible``, and the same per attribute (``plausible_1std/<a>``,
    ``identity_1std/<a>/plausible``, ``identity_1std/<a>/implausible``).
    Then the keys of :func:`physical_evaluation` for ``physical_edits`` (``None`` or ``{}``: none) on the
    first ``physical_images`` of ``images``.
    """
    physical_edits = _calibrated(control, check_physical_edits(physical_edits))  # before the long loop
    if physical_images < 1:
        raise ConfigError(f"physical_images: {physical_images} must be >= 1")
    names = list(control.calibrations if names is None else names)
    stds = _stds(control)
    results: dict[str, float] = {}
    kept: dict[float, list[Tensor]] = {step: [] for step in steps}
    small_kept, small_plausible = [], []  # edits of at most 1 std, all attributes
    leakage_rows = []
    reference = control.reference(images, condition) if names else None
    for name in names:
        column = ATTRIBUTE_NAMES.index(name)
        errors, changes, same, small, plausible = [], [], [], [], []
        for step in steps:
            result = _apply(control, images, {name: step * control.calibrations[name].std}, reference)
            error, change = edit_errors(result, stds)
            errors.append(error[:, column].abs().cpu())
            changes.append(change.cpu())
            results[f"error/{name}/{step_key(step)}"] = float(error[:, column].abs().nanmedian())
            preserved = _identity(classify, result.images, labels)
            if len(preserved):
                same.append(preserved)
                kept[step].append(preserved)
                if abs(step) <= 1:
                    small.append(preserved)
                    plausible.append(_plausible(result, column, labels, class_ranges))
        results[f"error/{name}"] = float(torch.cat(errors).nanmedian())
        results |= _identity_split(f"identity_1std/{name}", f"plausible_1std/{name}", small, plausible)
        small_kept += small
        small_plausible += plausible
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
        results |= _identity_split("identity_1std", "plausible_1std", small_kept, small_plausible)
    if physical_edits:
        take = slice(0, physical_images)
        # the same images (physical_images >= their count): the same reference, not encoded and measured again
        same = reference is not None and physical_images >= len(images)
        results |= physical_evaluation(
            control,
            images[take],
            physical_edits,
            None if labels is None else labels[take],
            classify,
            reference if same else None,
            take_condition(condition, take),
        )
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

    split = any(f"plausible_1std/{n}" in results for n in names)
    head = ["attribute", *(f"error {step_key(s)}" for s in steps), "error (all)", "leakage"]
    head += ["identity", "identity ≤1 std"] if identity else []
    head += ["requests in class range ≤1 std", "identity ≤1 std, in range"] if split else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        row = [name, *(cell(f"error/{name}/{step_key(s)}") for s in steps), cell(f"error/{name}")]
        row += [cell(f"leakage/{name}")]
        row += [cell(f"identity/{name}"), cell(f"identity_1std/{name}")] if identity else []
        row += [cell(f"plausible_1std/{name}"), cell(f"identity_1std/{name}/plausible")] if split else []
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "| edited \\ measured | " + " | ".join(ATTRIBUTE_NAMES) + " |"]
    lines.append("|" + "---|" * (len(ATTRIBUTE_NAMES) + 1))
    for name in names:
        row = [cell(f"leakage/{name}/{b}") if b != name else "-" for b in ATTRIBUTE_NAMES]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    physical = [n for n in ATTRIBUTE_NAMES if f"physical/{n}/error" in results]
    if physical:
        head = ["physical edit (alone)", "error (closed loop)", "error (calibration alone)", "leakage"]
        head += ["identity"] if f"physical/{physical[0]}/identity" in results else []
        lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name in physical:
            keys = ["error", "error_open_loop", "leakage", "identity"][: len(head) - 1]
            lines.append(f"| {name} | " + " | ".join(cell(f"physical/{name}/{k}") for k in keys) + " |")
    return "\n".join(lines) + "\n"

"""Generate on request: new digits of a requested class with requested Morpho-MNIST attributes.

:func:`sample` draws ``n`` digits from a generative model and steers each request through what the model
offers for it:

- **the condition** of a conditional model (``condition: [label, thickness, ...]``, CVAE of Sohn et al. 2015;
  the class-conditional VQ-VAE prior of van den Oord et al. 2017): the requested label and attribute values
  are the condition the prior draw is decoded under;
- **the calibrated regularized dim** of an AR-VAE (Pati & Lerch 2020) for an attribute it regularizes but is
  not conditioned on: latents are drawn from the N(0, I) prior, then each requested attribute is set as an
  *absolute* value (one for all digits, or one per digit), closed loop, by
  :class:`~genvae.latent.control.AttributeControl` (the loop of ``genvae edit``: decode, measure, secant
  step on the dim, keep each digit's best iterate).

A label-conditional model's latents can come from the Gaussian of the requested class's aggregate
posterior (``class_latents``, :mod:`genvae.latent.class_latents`) instead of the N(0, I) prior the model
was trained with: draws then land where digits of that class do. With attributes set through the latent,
their dims start at the calibration's first guess and the other dims are drawn from the class's Gaussian
conditioned on them (so they fit the requested style as the class's digits do) before the closed loop.

A request the model can serve neither way (a label asked of a model not conditioned on it, an attribute the
model neither is conditioned on nor regularizes) is a :class:`~genvae.errors.ConfigError` naming the
request. Condition names the caller does not request are filled in: labels class-balanced, attribute
conditions from the rows of ``data`` (of the requested class when a label is requested), so that they follow
the data. Every generated digit is measured with the Morpho-MNIST morphometrics
(:func:`~genvae.data.attributes.morpho_attributes`), so what was asked and what was obtained sit side by side.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from genvae.data.attributes import ATTRIBUTE_NAMES, morpho_attributes
from genvae.errors import ConfigError
from genvae.latent.class_latents import ClassLatents
from genvae.latent.control import AttributeControl, ExtrapolationWarning
from genvae.latent.traversal import _device, decode_latents, eval_mode
from genvae.models.conditioning import (
    LABEL,
    NUM_CLASSES,
    Condition,
    batch_condition,
    condition_kwargs,
    condition_names,
    draw_condition,
)

__all__ = ["SampleResult", "check_requests", "latent_attributes", "sample"]


@dataclass
class SampleResult:
    """``n`` generated digits: ``images [n, 1, H, W]`` float in [0, 1]; ``label [n]`` int64, the class each
    was drawn for (requested, or drawn class-balanced for a label-conditional model; -1 for a model without
    labels); ``requested [n, 6]`` and ``measured [n, 6]``, attributes in :data:`ATTRIBUTE_NAMES` order and
    physical units (``requested`` NaN where nothing was asked); ``via`` says how each request was served
    (``"condition"`` or ``"latent z<d>"``)."""

    images: Tensor
    label: Tensor
    requested: Tensor
    measured: Tensor
    via: dict[str, str]


def latent_attributes(model: nn.Module) -> tuple[str, ...]:
    """Attributes a model can set through a calibrated latent dim: the AR-VAE's regularized attributes that
    are not among its conditions (those go through the condition)."""
    names = condition_names(model)
    return tuple(a for a in getattr(model, "regularized_attributes", ()) or () if a not in names)


def check_requests(
    model: nn.Module, label: int | Tensor | None, attributes: Mapping[str, float | Tensor]
) -> dict[str, str]:
    """How each request is served (name -> ``"condition"`` / ``"latent"``), or a ConfigError naming it."""
    who = type(model).__name__
    names = condition_names(model)
    via: dict[str, str] = {}
    if label is not None:
        if LABEL not in names:
            raise ConfigError(
                f"label: {who} is not conditioned on the label (condition: {list(names)}); train a "
                "conditional model (model condition: [label], e.g. experiments/cvae.yaml)"
            )
        via[LABEL] = "condition"
    latent = latent_attributes(model)
    for name in attributes:
        if name not in ATTRIBUTE_NAMES:
            raise ConfigError(f"{name}: unknown attribute; choose from {list(ATTRIBUTE_NAMES)}")
        if name in names:
            via[name] = "condition"
        elif name in latent:
            via[name] = "latent"
        else:
            raise ConfigError(
                f"{name}: {who} can set neither through its condition ({list(names)}) nor through a "
                f"regularized latent dim ({list(latent)}); use an AR-VAE regularizing {name} or a model "
                f"conditioned on it"
            )
    return via


def _column(value: float | Tensor, n: int, device: torch.device, key: str) -> Tensor:
    """A request as ``[n]`` float values (a number for all, or one per digit), finite."""
    column = torch.as_tensor(value, dtype=torch.float32, device=device)
    column = column.expand(n).clone() if column.dim() == 0 else column.flatten()
    if len(column) != n or not column.isfinite().all():
        raise ConfigError(f"{key}: expected a finite number or {n} finite values, got {value!r}")
    return column


def _condition(
    model: nn.Module,
    n: int,
    label: Tensor | None,
    requested: Mapping[str, Tensor],
    data: Mapping[str, Tensor] | None,
) -> Condition | None:
    """The condition of ``n`` draws: requested label / attributes, the rest filled in (see the module)."""
    names = condition_names(model)
    if not names:
        return None
    missing = [name for name in names if name != LABEL and name not in requested]
    filled: Condition = {}
    if missing:
        rows = data
        if rows is not None and label is not None and LABEL in rows:
            wanted = rows[LABEL].to(label.device)
            keep = torch.isin(wanted, label.unique())
            rows = {k: v[keep.to(v.device)] for k, v in rows.items()} if keep.any() else rows
        try:
            filled = draw_condition(model, n, rows) or {}
        except ConfigError:
            raise ConfigError(
                f"{missing[0]}: {type(model).__name__} is conditioned on {list(names)}; request a value "
                f"(e.g. --set {missing[0]}=...) or give data with attributes to draw it from"
            ) from None
    elif LABEL in names and label is None:
        filled = draw_condition(model, n) or {}
    device = _device(model)
    condition = {name: value.to(device) for name, value in filled.items()}
    if label is not None:
        condition[LABEL] = label.to(device)
    condition.update({name: value.to(device) for name, value in requested.items() if name in names})
    return {name: condition[name] for name in names}


@torch.no_grad()
def sample(
    model: nn.Module,
    n: int,
    label: int | Tensor | None = None,
    attributes: Mapping[str, float | Tensor] | None = None,
    *,
    control: AttributeControl | None = None,
    class_latents: ClassLatents | None = None,
    data: Mapping[str, Tensor] | None = None,
    seed: int | None = None,
    batch_size: int = 1000,
) -> SampleResult:
    """``n`` new digits of class ``label`` (an int, or ``[n]`` classes) with the Morpho-MNIST ``attributes``
    requested as absolute values in physical units (``{"thickness": 3.0, "slant": -0.2}``; a number, or
    ``[n]`` values), served as the module docstring says.

    Args:
        model: a generative model with ``sample(n, condition=...)`` (the VAE family, the VQ-VAE prior).
        control: the calibrated :class:`AttributeControl` of ``model`` for requests served through the latent
            (fitted here on the first 1000 images of ``data`` when None).
        class_latents: draw the latents of a label-conditional model from the Gaussian of the requested
            class's aggregate posterior (:class:`~genvae.latent.class_latents.ClassLatents`) instead of the
            N(0, I) prior.
        data: a data split (``image``, ``label``, ``attributes``), to calibrate the control and to draw the
            condition values the caller does not request.
        seed: seed of the prior draws (the same seed draws the same latents, e.g. for the columns of a grid).
        batch_size: latents decoded per forward pass.
    """
    if n < 1:
        raise ConfigError(f"num: {n} must be >= 1")
    attributes = dict(attributes or {})
    via = check_requests(model, label, attributes)
    device = _device(model)
    labels = None if label is None else _column(label, n, device, "label").round().long()
    if labels is not None and (int(labels.min()) < 0 or int(labels.max()) >= NUM_CLASSES):
        raise ConfigError(f"label: classes must lie in [0, {NUM_CLASSES}), got {label!r}")
    values = {name: _column(value, n, device, name) for name, value in attributes.items()}
    condition = _condition(model, n, labels, {k: v for k, v in values.items() if via[k] == "condition"}, data)
    steered = {name: value for name, value in values.items() if via[name] == "latent"}
    if steered and control is None:
        control = _fit_control(model, data, list(steered))
    missing = [name for name in steered if name not in control.calibrations]
    if missing:
        raise ConfigError(f"{missing[0]}: not calibrated; calibrated: {list(control.calibrations)}")
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None), eval_mode(model):
        if seed is not None:
            torch.manual_seed(seed)
        latent_dim = getattr(model, "latent_dim", None)
        if isinstance(latent_dim, int) and callable(getattr(model, "decode", None)):
            if class_latents is None:
                z = torch.randn(n, latent_dim, device=device)
            elif condition is None or LABEL not in condition:
                raise ConfigError(
                    f"prior: class latents need a label-conditional model, not {type(model).__name__}"
                )
            elif steered:  # the steered dims at the calibration's first guess, the others fitting them
                guesses = [control.calibrations[name] for name in steered]
                first = torch.stack([cal.latent_at(steered[cal.name].double()).float() for cal in guesses], 1)
                z = class_latents.sample_given(condition[LABEL], [cal.dim for cal in guesses], first)
            else:
                z = class_latents.sample(condition[LABEL])
            images = decode_latents(model, z, batch_size, condition)
        else:  # a prior over codes: its own sampler
            parts = []
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                part = None if condition is None else {k: v[start:stop] for k, v in condition.items()}
                parts.append(model.sample(stop - start, **condition_kwargs(part)).float())
            images = torch.cat(parts)
    if steered:
        images = _steer(control, z, condition, steered, images)
        via.update({name: f"latent z{control.calibrations[name].dim}" for name in steered})
    requested = torch.full((n, len(ATTRIBUTE_NAMES)), float("nan"), device=device)
    for name, value in values.items():
        requested[:, ATTRIBUTE_NAMES.index(name)] = value
    drawn = condition.get(LABEL) if condition is not None else None
    label_out = labels if labels is not None else drawn
    if label_out is None:
        label_out = torch.full((n,), -1, dtype=torch.long, device=device)
    measured = morpho_attributes(images.float()).to(device)
    return SampleResult(images.float(), label_out.long(), requested, measured, via)


def _fit_control(model: nn.Module, data: Mapping[str, Tensor] | None, names: list[str]) -> AttributeControl:
    """A control of ``names`` calibrated on the first 1000 images of ``data``."""
    if data is None or "image" not in data:
        raise ConfigError(
            f"{names[0]}: setting it through the latent needs a calibrated AttributeControl (control=...) "
            "or data to calibrate one on"
        )
    device = _device(model)
    rows = {
        key: value[:1000].to(device) for key, value in data.items() if key in ("image", LABEL, "attributes")
    }
    images = rows["image"].float()
    images = images.div(255.0) if rows["image"].dtype == torch.uint8 else images
    measured = rows.get("attributes")
    measured = morpho_attributes(images) if measured is None else measured
    return AttributeControl.fit(model, images, measured, names, condition=batch_condition(model, rows))


def _steer(
    control: AttributeControl,
    z: Tensor,
    condition: Condition | None,
    steered: Mapping[str, Tensor],
    images: Tensor,
) -> Tensor:
    """Set each steered attribute of the prior draws ``z`` to its requested absolute value, closed loop."""
    reference = control.latent_reference(z, condition, images)
    absolute = dict(steered)  # one value per digit
    with warnings.catch_warnings():  # what was obtained is measured and returned beside what was asked
        warnings.simplefilter("ignore", ExtrapolationWarning)
        return control.apply(images, absolute=absolute, reference=reference).images

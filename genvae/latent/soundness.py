"""Counterfactual soundness of a genvae model's edits: the edit callables of :mod:`genvae.metrics.soundness`.

Three kinds of edit, each an ``images -> images`` callable built for one set of images:

- **null edit** (:func:`null_edit`): abduct and predict with nothing changed, ``decode(encode(x))`` through the
  model's deterministic latent (the posterior mean of the VAE family, the quantized grid of the VQ-VAE).
  A model with ``condition_names`` (the conditional models of issue 21) encodes and decodes each digit with
  its own condition (label, attributes), as :func:`genvae.models.conditioning.batch_condition` builds it;
- **condition edits** (:func:`condition_edit`), for conditional models: abduct under the digit's condition,
  decode under a changed one (``do(label = l')``, ``do(thickness = t + 1 std)``); the way back decodes under
  the original condition again, so the reversibility of a conditioned parent is exact by construction of
  the request;
- **attribute edits** through the latent (:class:`~genvae.latent.control.AttributeControl`, closed loop):
  a change of ``+-step`` attribute stds and the change back. The way back asks for ``-change`` relative to
  the attribute measured on the edited digit's reconstruction (the control's only kind of request), which
  returns to the original value up to the forward edit's error (median below 0.05 std).

:func:`soundness_evaluation` runs composition (1 and 10 null edits) and reversibility of every edit and
returns flat keys for the metrics JSON (see its docstring).

**Differences from the benchmarks' protocol** (Melistas et al. 2024, De Sousa Ribeiro et al. 2023): they
pad MNIST to 32x32 and normalise intensities, their image mechanisms are conditional VAEs / HVAEs / flows
/ diffusion models abducting the exogenous noise at a sampling temperature (0.1 by default in the
benchmark), and their parents are (thickness, intensity, digit) of Morpho-MNIST's perturbed sets with
interventions drawn from the training parents. genvae works on the 28x28 images in [0, 1], abducts the
deterministic latent (the posterior mean; temperature 0), and intervenes by +-1 std of genvae's
morphometric attributes through the latent (unconditional models) or the condition (conditional models).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from genvae.data.attributes import ATTRIBUTE_NAMES
from genvae.latent.class_latents import ClassLatents, edit_reference, label_edit
from genvae.latent.control import AttributeControl, ExtrapolationWarning, Reference
from genvae.latent.traversal import _device, eval_mode
from genvae.metrics.soundness import DEFAULT_CYCLES, Edit, composition, mean_std, reversibility, to_unit
from genvae.models.conditioning import LABEL, Condition, condition_names

__all__ = [
    "attribute_edit",
    "condition_edit",
    "null_edit",
    "soundness_evaluation",
]

Classifier = Callable[[Tensor], Tensor]  # images -> class logits [N, C]


def _rows(condition: Condition | None, rows: slice) -> Condition | None:
    return None if condition is None else {name: value[rows] for name, value in condition.items()}


def _check_condition(model: nn.Module, condition: Condition | None, n: int) -> None:
    names = condition_names(model)
    if not names:
        return
    missing = [name for name in names if condition is None or name not in condition]
    if missing:
        raise ValueError(
            f"{type(model).__name__} is conditioned on {list(names)}; no condition for {missing}"
        )
    wrong = [name for name in names if len(condition[name]) != n]
    if wrong:
        raise ValueError(f"condition {wrong} does not have one value per image ({n})")


def _recode(
    model: nn.Module,
    images: Tensor,
    condition: Condition | None,
    new_condition: Condition | None,
    batch_size: int,
) -> Tensor:
    """``decode(encode(x, condition), new_condition)`` in eval mode, ``batch_size`` images at a time; an
    unconditional model is called as ``decode(encode(x))``."""
    device = _device(model)
    conditional = bool(condition_names(model))
    parts = []
    with eval_mode(model):
        for start in range(0, len(images), batch_size):
            rows = slice(start, start + batch_size)
            x = to_unit(images[rows].to(device))
            if conditional:
                c_in = {k: v.to(device) for k, v in _rows(condition, rows).items()}
                c_out = {k: v.to(device) for k, v in _rows(new_condition, rows).items()}
                decoded = model.decode(model.encode(x, condition=c_in), condition=c_out)
            else:
                decoded = model.decode(model.encode(x))
            parts.append(decoded.float().view_as(x))
    return torch.cat(parts)


def null_edit(model: nn.Module, condition: Condition | None = None, batch_size: int = 1000) -> Edit:
    """The null edit of ``model`` for one set of images: ``decode(encode(x))`` through the deterministic
    latent, under each image's own ``condition`` for a conditional model (ignored by unconditional ones)."""
    return condition_edit(model, condition, condition, batch_size)


def condition_edit(
    model: nn.Module, condition: Condition | None, new_condition: Condition | None, batch_size: int = 1000
) -> Edit:
    """Abduct under ``condition``, decode under ``new_condition`` (a conditional model's counterfactual);
    for images in the order the conditions give."""
    conditional = bool(condition_names(model))

    def edit(images: Tensor) -> Tensor:
        if conditional:
            _check_condition(model, condition, len(images))
            _check_condition(model, new_condition, len(images))
        return _recode(model, images, condition, new_condition, batch_size)

    return edit


def attribute_edit(
    control: AttributeControl,
    changes: Mapping[str, float],
    reference: Reference | None = None,
    condition: Condition | None = None,
) -> Edit:
    """A closed-loop :meth:`AttributeControl.edit` of ``changes`` (physical units, relative to each digit's
    reconstruction), without the extrapolation warnings of large edits of extreme digits. ``reference``:
    :meth:`AttributeControl.reference` of the images the edit will be given (shared by many edits of them);
    ``condition``: the images' own condition (conditional models)."""

    def edit(images: Tensor) -> Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExtrapolationWarning)
            return control.apply(images, changes, reference=reference, condition=condition).images.float()

    return edit


def _changed_labels(labels: Tensor, num_classes: int, seed: int) -> Tensor:
    """Another class for every digit, uniformly among the ``num_classes - 1`` others (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, num_classes, (len(labels),), generator=generator).to(labels.device)
    return (labels.long() + shift) % num_classes


def _share_classified(classify: Classifier, images: Tensor, labels: Tensor, batch_size: int) -> float:
    """The share of ``images`` the classifier assigns to ``labels``."""
    predicted = torch.cat([classify(chunk).argmax(dim=1) for chunk in images.split(batch_size)])
    return float((predicted.cpu() == labels.cpu()).float().mean())


def _label_edits(
    model: nn.Module,
    images: Tensor,
    condition: Condition,
    class_latents: ClassLatents,
    control: AttributeControl | None,
    results: dict[str, float],
    reversibility_images: int | None,
    label_edit_images: int | None,
    num_classes: int,
    classify: Classifier | None,
    seed: int,
    batch_size: int,
) -> Tensor:
    """Label edits through the class latents (see :func:`soundness_evaluation`): their effectiveness and
    the attributes they keep into ``results``; returns the reversibility distances."""

    def edit(own: Condition, new_labels: Tensor) -> Edit:
        def apply(x: Tensor) -> Tensor:
            reference = edit_reference(model, to_unit(x), own, control)
            return label_edit(
                model, class_latents, reference, new_labels, control, batch_size=batch_size
            ).images

        return apply

    n = len(images) if label_edit_images is None else min(label_edit_images, len(images))
    m = len(images) if reversibility_images is None else min(reversibility_images, len(images))
    everyone = _rows(condition, slice(0, max(n, m)))
    new_labels = _changed_labels(everyone[LABEL], num_classes, seed)
    own = _rows(everyone, slice(0, n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExtrapolationWarning)
        reference = edit_reference(model, to_unit(images[:n]), own, control)
        edited = label_edit(model, class_latents, reference, new_labels[:n], control, batch_size=batch_size)
        if classify is not None:
            results["effectiveness/label"] = _share_classified(
                classify, edited.images, new_labels[:n], batch_size
            )
        names = control.attribute_names if control is not None else ATTRIBUTE_NAMES
        for column, name in enumerate(names):
            before, after = edited.original[:, column].double(), edited.measured[:, column].double()
            finite = before.isfinite() & after.isfinite()
            if int(finite.sum()) > 1:
                change = (after - before)[finite].abs().median() / before[finite].std().clamp(min=1e-12)
                results[f"label_edit/{name}"] = float(change)
        first = _rows(everyone, slice(0, m))
        changed = {**first, LABEL: new_labels[:m]}
        return reversibility(edit(first, changed[LABEL]), edit(changed, first[LABEL]), images[:m])


def _summarise(results: dict[str, float], key: str, distances: Tensor) -> None:
    results[key], results[f"{key}_std"] = mean_std(distances)


@torch.no_grad()
def soundness_evaluation(
    model: nn.Module,
    images: Tensor,
    condition: Condition | None = None,
    control: AttributeControl | None = None,
    attributes: Sequence[str] | None = None,
    reversibility_images: int | None = None,
    step: float = 1.0,
    cycles: Sequence[int] = DEFAULT_CYCLES,
    num_classes: int = 10,
    classify: Classifier | None = None,
    seed: int = 0,
    batch_size: int = 1000,
    class_latents: ClassLatents | None = None,
    label_edit_images: int | None = 1000,
) -> dict[str, float]:
    """Composition and reversibility of ``model``'s edits of ``images`` (``[N, C, H, W]``, uint8 or [0, 1]).

    ``condition``: each image's condition (conditional models; :func:`genvae.models.conditioning.batch_condition`).
    ``control``: a calibrated :class:`AttributeControl` of the model (None: no attribute edits through the
    latent); ``attributes``: the calibrated attributes edited (default: all of the control's). Reversibility
    uses the first ``reversibility_images`` images (None: all).

    Keys (distances: per-image mean |x - x_0| on the 0-255 scale; ``<key>_std`` the population std over the
    images): ``composition/<m>`` and ``composition/<m>_std`` for each ``m`` in ``cycles``;
    ``reversibility/<a>`` (``+-step`` std of attribute ``a`` and back, both directions pooled; through the
    condition where the model is conditioned on ``a``, else through the control), ``reversibility/label``
    (a label-conditional model: ``do(label = l')`` with ``l'`` another class drawn uniformly, and back) and
    ``reversibility`` pooled over all of them; with a label condition and ``classify`` also
    ``effectiveness/label``, the share of ``do(label = l')`` images the classifier assigns to ``l'``.

    With ``class_latents`` (:class:`~genvae.latent.class_latents.ClassLatents`) a label edit is
    :func:`~genvae.latent.class_latents.label_edit`: the latent moves to the new class, the thickness and
    slant dims an AR-VAE regularizes are kept and held, closed loop, at the digit's values (``control``);
    the edit back is the same edit to the original label. ``effectiveness/label`` is then measured on the
    first ``label_edit_images`` images (None: all), with ``label_edit/<a>``, the median |edited -
    reconstruction| of each of the control's attributes in stds of the reconstructions' values.
    """
    names = condition_names(model)
    results: dict[str, float] = {}
    for m, distances in composition(null_edit(model, condition, batch_size), images, cycles).items():
        _summarise(results, f"composition/{m}", distances)
    n = len(images) if reversibility_images is None else min(reversibility_images, len(images))
    subset = images[:n]
    own = _rows(condition, slice(0, n))
    pooled = []

    def record(name: str, distances: Tensor) -> None:
        _summarise(results, f"reversibility/{name}", distances)
        pooled.append(distances)

    for name in names:  # edits through the condition
        value = own[name]
        if name == "label" and class_latents is not None:
            distances = _label_edits(
                model,
                images,
                condition,
                class_latents,
                control,
                results,
                reversibility_images,
                label_edit_images,
                num_classes,
                classify,
                seed,
                batch_size,
            )
            record(name, distances)
            continue
        if name == "label":
            changed = {**own, name: _changed_labels(value, num_classes, seed)}
            forward = condition_edit(model, own, changed, batch_size)
            record(name, reversibility(forward, condition_edit(model, changed, own, batch_size), subset))
            if classify is not None:
                edited = forward(subset)
                results["effectiveness/label"] = _share_classified(
                    classify, edited, changed[name], batch_size
                )
            continue
        delta = step * float(value.float().std())
        distances = []
        for sign in (1.0, -1.0):
            changed = {**own, name: value.float() + sign * delta}
            forward = condition_edit(model, own, changed, batch_size)
            distances.append(reversibility(forward, condition_edit(model, changed, own, batch_size), subset))
        record(name, torch.cat(distances))
    if control is not None:  # edits through the latent, each digit under its own condition
        reference = control.reference(to_unit(subset), own)  # the forward edits all start from these digits
        for name in attributes if attributes is not None else control.calibrations:
            if name in names:  # edited through the condition above
                continue
            delta = step * control.calibrations[name].std
            distances = [
                reversibility(
                    attribute_edit(control, {name: s}, reference, own),
                    attribute_edit(control, {name: -s}, condition=own),
                    subset,
                )
                for s in (delta, -delta)
            ]
            record(name, torch.cat(distances))
    if pooled:
        _summarise(results, "reversibility", torch.cat(pooled))
    return results

"""Evaluation of conditional generation: class-balanced requests, the digits drawn for them, their scores.

For a model conditioned on the label (issue 21's ``condition_names`` containing ``"label"``: a conditional
VAE / AR-VAE, or the VQ-VAE prior with a class token), :func:`conditional_generation_evaluation` requests
``per_class`` digits of every class. A request's other conditioned attributes (thickness, ...) are those of
a real test digit of the same class (:func:`~genvae.metrics.conditional.balanced_indices`), so the requests
follow the test set's joint distribution of label and attributes and the generated set can be compared
with the test set as a whole. The model draws the digits with ``sample(n, condition=...)``; the scores are
those of :mod:`genvae.metrics.conditional` (label accuracy by the classifier, attribute errors measured by
the morphometrics) and the sample quality of the generated set against the test images (FID, precision /
recall on classifier features, Morpho-MNIST FMD).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from genvae.data.attributes import ATTRIBUTE_NAMES, morpho_attributes
from genvae.latent.class_latents import ClassLatents
from genvae.latent.control import AttributeControl
from genvae.latent.sampling import latent_attributes, sample
from genvae.latent.traversal import _device, eval_mode
from genvae.metrics.conditional import attribute_request_errors, balanced_indices, label_accuracy
from genvae.metrics.morphometry import attribute_distances
from genvae.metrics.sample_quality import frechet_distance, precision_recall
from genvae.metrics.soundness import to_unit
from genvae.models.conditioning import LABEL, Condition, condition_names

__all__ = ["balanced_condition", "conditional_generation_evaluation", "conditional_samples"]

# attributes requested through an AR-VAE's dims with the class latents: those issue 21 names. Length and
# area follow from thickness and the digit's shape; requested too, they over-determine the style.
LATENT_REQUESTS = ("thickness", "slant", "width", "height")

Images = Callable[[Tensor], Tensor]  # images [N, C, H, W] in [0, 1] -> [N, K] (logits or features)


def balanced_condition(
    model: nn.Module,
    labels: Tensor,
    attributes: Tensor | None,
    attribute_names: Sequence[str],
    per_class: int,
    num_classes: int = 10,
) -> tuple[Condition, Tensor]:
    """The condition of ``per_class`` requests per class and the indices of the test digits (``labels [M]``,
    ``attributes [M, A]`` in ``attribute_names`` order) whose attribute values they request."""
    names = condition_names(model)
    if "label" not in names:
        raise ValueError(f"{type(model).__name__} is not conditioned on the label (condition: {list(names)})")
    index = balanced_indices(labels, per_class, num_classes)
    condition = {}
    for name in names:
        if name == "label":
            condition[name] = labels.long().cpu()[index]
        elif attributes is not None and name in attribute_names:
            condition[name] = attributes.cpu()[index, list(attribute_names).index(name)].float()
        else:
            raise ValueError(f"no test attribute {name!r} to request (the data has {list(attribute_names)})")
    return condition, index


@torch.no_grad()
def conditional_samples(model: nn.Module, condition: Condition, batch_size: int = 1000) -> Tensor:
    """``model.sample(n, condition=...)`` for every request of ``condition``, ``batch_size`` at a time:
    images ``[N, C, H, W]`` in [0, 1] (float32), in the order of the requests."""
    device = _device(model)
    n = len(next(iter(condition.values())))
    parts = []
    with eval_mode(model):
        for start in range(0, n, batch_size):
            chunk = {name: value[start : start + batch_size].to(device) for name, value in condition.items()}
            parts.append(to_unit(model.sample(len(chunk["label"]), condition=chunk)))
    return torch.cat(parts)


def _batched(function: Images, images: Tensor, batch_size: int) -> Tensor:
    return torch.cat([function(chunk) for chunk in images.split(batch_size)])


@torch.no_grad()
def conditional_generation_evaluation(
    model: nn.Module,
    labels: Tensor,
    attributes: Tensor | None = None,
    attribute_names: Sequence[str] = ATTRIBUTE_NAMES,
    per_class: int = 100,
    classify: Images | None = None,
    features: Images | None = None,
    real_images: Tensor | None = None,
    num_classes: int = 10,
    k: int = 3,
    batch_size: int = 1000,
    class_latents: ClassLatents | None = None,
    control: AttributeControl | None = None,
    latent_requests: Sequence[str] = LATENT_REQUESTS,
) -> tuple[Tensor, Condition, dict[str, float]]:
    """Draw ``per_class`` digits of every class from ``model`` and score them against the test digits.

    ``labels [M]`` and ``attributes [M, A]`` (``attribute_names`` order) of the test digits give the
    requests (:func:`balanced_condition`); ``real_images [M, C, H, W]`` are the test images. The digits are
    drawn with ``model.sample`` (its own prior), or, with ``class_latents``, from the Gaussian of each
    requested class's aggregate posterior (:func:`genvae.latent.sampling.sample`); then, with ``control``
    too, the ``latent_requests`` attributes the model regularizes (an AR-VAE's) are requested as well, each
    digit the values of the test digit its request copies, set through the calibrated dims in closed loop. Returns the
    generated images, the condition they were drawn for and the scores: with ``classify`` (images ->
    logits), ``accuracy`` and ``accuracy/<c>`` (:func:`~genvae.metrics.conditional.label_accuracy`); for each
    requested morphometric attribute ``attribute_error/<a>`` (median |measured - requested| / test std);
    with ``features`` (images -> features, e.g. :class:`~genvae.metrics.sample_quality.ClassifierFeatures`)
    and ``real_images``, ``fid``, ``precision`` and ``recall`` against all test images; with ``real_images``,
    ``fmd`` (Frechet morphometric distance) and ``undefined/generated`` (blank digits).
    """
    condition, index = balanced_condition(model, labels, attributes, attribute_names, per_class, num_classes)
    requested = {name: value for name, value in condition.items() if name in ATTRIBUTE_NAMES}
    if class_latents is None:
        images = conditional_samples(model, condition, batch_size)
        measured = morpho_attributes(images).cpu()
    else:
        if control is not None and attributes is not None:
            for name in latent_attributes(model):
                if name in control.calibrations and name in attribute_names and name in latent_requests:
                    column = attributes.cpu()[:, list(attribute_names).index(name)].float()
                    # a blank test digit has no value to copy: the median of the others stands in
                    requested[name] = column[index].nan_to_num(float(column.nanmedian()))
        drawn = sample(
            model,
            len(index),
            condition[LABEL],
            requested,
            control=control,
            class_latents=class_latents,
            batch_size=batch_size,
        )
        images, measured = drawn.images, drawn.measured.cpu()
    results: dict[str, float] = {}
    if classify is not None:
        predicted = _batched(classify, images, batch_size).argmax(dim=1)
        results |= label_accuracy(predicted, condition[LABEL], num_classes)
    if requested:
        names = list(requested)
        columns = [ATTRIBUTE_NAMES.index(name) for name in names]
        test_columns = [list(attribute_names).index(name) for name in names]
        test_values = attributes.cpu().double()[:, test_columns]  # blank test digits: NaN, left out
        stds = torch.stack([column[column.isfinite()].std() for column in test_values.T])
        wanted = torch.stack([requested[name].cpu() for name in names], dim=1)
        results |= attribute_request_errors(measured[:, columns], wanted, stds, names)
    if real_images is not None:
        real = to_unit(real_images)
        if attributes is not None and tuple(attribute_names) == ATTRIBUTE_NAMES:
            real_attributes = attributes.cpu().float()
        else:
            real_attributes = morpho_attributes(real).cpu()
        distances = attribute_distances(real_attributes, measured)
        results["fmd"] = distances["fmd"]
        results["undefined/generated"] = distances["undefined/generated"]
        if features is not None:
            device = images.device
            real_features = _batched(features, real.to(device), batch_size).float()
            fake_features = _batched(features, images, batch_size).float()
            results["fid"] = float(frechet_distance(real_features, fake_features))
            precision, recall = precision_recall(real_features, fake_features, k)
            results["precision"], results["recall"] = float(precision), float(recall)
    return images, condition, results

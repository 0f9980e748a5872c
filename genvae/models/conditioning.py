"""Conditions of conditional models (CVAE, Sohn et al. 2015; class-conditional prior, van den Oord et al. 2017).

A model conditioned on ``condition: [label, thickness, ...]`` (YAML) receives, besides its usual input, a
*condition*: a ``dict[str, Tensor]`` with one tensor ``[N]`` per name, ``label`` as int64 class indices and
attributes in their physical units (px, rad) exactly as batches carry them (``batch["attributes"]`` columns,
ordered by the datamodule's ``attribute_names``). :class:`ConditionEmbedding` turns it into the vector the
networks see: the one-hot label followed by the attributes standardized with the training set's mean and
std. Those statistics are buffers of the module, so a checkpoint carries them and a loaded model
standardizes exactly as it did in training.

:func:`batch_condition` builds the condition of a batch; :func:`draw_condition` the conditions under which a
conditional model generates when asked for ``n`` samples without one (class-balanced labels; attributes from
the rows of a data split, so that they follow the data's joint distribution).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genvae.data.attributes import ATTRIBUTE_NAMES
from genvae.errors import ConfigError
from genvae.utils.sync import reads_are_free

__all__ = [
    "LABEL",
    "NUM_CLASSES",
    "Condition",
    "ConditionEmbedding",
    "batch_condition",
    "check_labels",
    "check_condition_names",
    "condition_names",
    "condition_kwargs",
    "draw_condition",
    "split_condition",
    "take_condition",
]

LABEL = "label"
NUM_CLASSES = 10
Condition = dict[str, Tensor]


def check_condition_names(names: Sequence[str] | None, key: str = "model.condition") -> tuple[str, ...]:
    """The names of a ``condition`` option as a tuple, or a ConfigError naming the allowed values."""
    names = tuple(names or ())
    allowed = (LABEL, *ATTRIBUTE_NAMES)
    unknown = [name for name in names if name not in allowed]
    if unknown or len(set(names)) != len(names):
        raise ConfigError(
            f"{key}: {list(names)} must be distinct names from {list(allowed)}"
            + (f" (unknown: {unknown})" if unknown else "")
        )
    return names


def check_labels(label: Tensor, num_classes: int = NUM_CLASSES) -> None:
    """A ConfigError when a class label lies outside ``[0, num_classes)``, checked where reading the labels
    back is free (:func:`~genvae.utils.sync.reads_are_free`: a CPU run, or labels passed from the host).

    On an accelerator the check would make the host wait for the device at every training step; there the
    lookup that consumes the labels (``F.embedding``, which does not wrap negative indices as ``tensor[idx]``
    does) fails with a device-side assert instead. The datamodule checks the labels of its files once, on load.
    """
    if reads_are_free(label) and label.numel() and not 0 <= label.min() <= label.max() < num_classes:
        raise ConfigError(f"condition label: classes must lie in [0, {num_classes})")


class ConditionEmbedding(nn.Module):
    """Condition dict -> vector ``[N, width]``: one-hot label (``NUM_CLASSES`` wide) then standardized
    attributes, in the order of ``names``.

    Buffers ``attribute_mean`` / ``attribute_std`` ``[A]`` (one per attribute name, identity until
    :meth:`set_statistics`; ``statistics_set`` records whether it ran) travel in the state dict.

    Args:
        names: condition names (``label`` and/or attribute names).
        num_classes: classes of the one-hot label.
    """

    def __init__(self, names: Sequence[str], num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.names = check_condition_names(names)
        self.num_classes = num_classes
        self.attribute_names = tuple(name for name in self.names if name != LABEL)
        count = len(self.attribute_names)
        self.register_buffer("attribute_mean", torch.zeros(count))
        self.register_buffer("attribute_std", torch.ones(count))
        self.register_buffer("statistics_set", torch.tensor(False))

    @property
    def width(self) -> int:
        return (self.num_classes if LABEL in self.names else 0) + len(self.attribute_names)

    @torch.no_grad()
    def set_statistics(self, attributes: Tensor) -> None:
        """Standardize with the mean and std of ``attributes [N, A]`` (columns in ``attribute_names`` order;
        non-finite values, e.g. a blank image's NaN, left out)."""
        values = attributes.double()
        finite = values.isfinite()
        count = finite.sum(0).clamp(min=2)
        mean = values.nan_to_num(0.0).mul(finite).sum(0) / count
        var = ((values - mean).nan_to_num(0.0).pow(2) * finite).sum(0) / (count - 1)
        self.attribute_mean.copy_(mean.float())
        self.attribute_std.copy_(var.sqrt().clamp(min=1e-6).float())
        self.statistics_set.fill_(True)

    def check(self, condition: Mapping[str, Tensor] | None, who: str) -> None:
        """A ConfigError when ``condition`` misses names this embedding needs (or names it does not know)."""
        given = set(condition or {})
        missing = [name for name in self.names if name not in given]
        if missing:
            raise ConfigError(f"{who} needs condition {list(self.names)} (missing: {missing})")
        extra = sorted(given - set(self.names))
        if extra:
            raise ConfigError(f"{who} is conditioned on {list(self.names)}, not on {extra}")

    def forward(self, condition: Mapping[str, Tensor]) -> Tensor:
        parts = []
        if LABEL in self.names:
            label = condition[LABEL].long()
            check_labels(label, self.num_classes)
            label = label.to(self.attribute_mean.device)
            one_hot = torch.eye(self.num_classes, device=label.device)
            parts.append(F.embedding(label, one_hot))  # the one-hot rows
        if self.attribute_names:
            values = torch.stack(
                [condition[name].to(self.attribute_mean).float() for name in self.attribute_names], 1
            )
            parts.append(((values - self.attribute_mean) / self.attribute_std).nan_to_num(0.0))
        return torch.cat(parts, 1)


def condition_names(model: Any) -> tuple[str, ...]:
    """The names ``model`` is conditioned on (its ``condition_names``), ``()`` for an unconditional model or
    any module without them (a classifier, a wrapped network)."""
    return tuple(getattr(model, "condition_names", ()) or ())


def batch_condition(model: Any, batch: Mapping[str, Tensor]) -> Condition | None:
    """The condition of a batch for ``model``: ``batch["label"]`` and the columns of ``batch["attributes"]``
    given by the model's ``condition_columns`` (name -> column, recorded from the datamodule's
    ``attribute_names`` at setup); None for an unconditional model."""
    names = condition_names(model)
    if not names:
        return None
    condition: Condition = {}
    for name in names:
        if name == LABEL:
            if LABEL not in batch:
                raise ConfigError(f"{type(model).__name__} is conditioned on the label: the batch has none")
            condition[LABEL] = batch[LABEL]
            continue
        if "attributes" not in batch:
            raise ConfigError(
                f"{type(model).__name__} is conditioned on {name}: set data.init_args.attributes=true"
            )
        column = model.condition_columns[name]
        condition[name] = batch["attributes"][:, column]
    return condition


def draw_condition(
    model: Any, n: int, data: Mapping[str, Tensor] | None = None, offset: int = 0
) -> Condition | None:
    """Conditions of ``n`` samples of a conditional ``model`` when none is asked for (None when
    unconditional): labels class-balanced (``(offset + i) mod NUM_CLASSES``); with attribute conditions, the
    labels and attributes of rows ``offset + i`` (cycled) of ``data`` (a split: ``label``, ``attributes``;
    default: the test split of the model's trainer's datamodule)."""
    names = condition_names(model)
    if not names:
        return None
    device = getattr(model, "device", torch.device("cpu"))
    index = torch.arange(offset, offset + n, device=device)
    if names == (LABEL,):
        return {LABEL: index % NUM_CLASSES}
    if data is None:
        datamodule = getattr(getattr(model, "_trainer", None), "datamodule", None)
        data = (getattr(datamodule, "splits", None) or {}).get("test")
    if data is None or "attributes" not in data or not len(data["attributes"]):
        raise ConfigError(
            f"{type(model).__name__} is conditioned on {list(names)}: sampling without a condition needs a "
            "data split with attributes to draw them from"
        )
    rows = (index % len(data["attributes"])).to(data["attributes"].device)
    rows_of_data = {key: data[key][rows] for key in (LABEL, "attributes") if key in data}
    return {name: value.to(device) for name, value in batch_condition(model, rows_of_data).items()}


def condition_kwargs(condition: Condition | None) -> dict[str, Condition]:
    """``{"condition": condition}``, or ``{}`` for None: keyword arguments that leave the calls of an
    unconditional model (or of any module whose ``encode`` / ``decode`` / ``sample`` take no condition) as
    they were."""
    return {} if condition is None else {"condition": condition}


def take_condition(condition: Condition | None, index: Tensor | slice) -> Condition | None:
    """The rows ``index`` of every tensor of ``condition`` (None stays None)."""
    if condition is None:
        return None
    return {
        name: value[index.to(value.device) if isinstance(index, Tensor) else index]
        for name, value in condition.items()
    }


def split_condition(condition: Condition | None, size: int, total: int) -> list[Condition | None]:
    """``condition`` in consecutive chunks of ``size`` rows, as ``Tensor.split(size)`` cuts ``total`` rows."""
    return [take_condition(condition, slice(start, start + size)) for start in range(0, total, size)]

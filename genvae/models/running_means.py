"""Batch-size-weighted running means of named scalar terms, kept on the device they are computed on.

A training step of genvae produces a handful of scalar terms (loss, reconstruction, KL, one AR term per
attribute, ...). Handing each of them to Lightning's ``self.log`` at every step costs about a millisecond
of host-side bookkeeping per call, and turning them into Python numbers waits for the device. Instead, a
step adds its terms to one stacked sum tensor here — one ``stack`` and one in-place add, whatever the
number of terms, with no host-device synchronisation — and the epoch means are read once per epoch
(:meth:`RunningMeans.means`). The weighting by batch size is the one Lightning applies to a value logged
with ``on_epoch=True`` and ``batch_size=n`` (``_ResultMetric.update``: sum of ``value * n`` over sum of
``n``), so the means are the ones Lightning would have computed.

Python numbers (a schedule's weight, known on the host) are summed on the host, so they never cost a
host-to-device copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

Value = Tensor | float | int


class RunningMeans:
    """Weighted sums and counts per name; :meth:`update` per batch, :meth:`means` at the end of an epoch.

    Terms are grouped by the exact tuple of tensor names a step reports, so a step that reports a term
    only sometimes (e.g. a weight logged in training only) still averages each term over the batches that
    reported it.
    """

    def __init__(self) -> None:
        self._tensor_groups: dict[tuple[str, ...], list] = {}  # names -> [sum tensor [K], count]
        self._host_sums: dict[str, list[float]] = {}  # name -> [weighted sum, count]

    def __bool__(self) -> bool:
        return bool(self._tensor_groups or self._host_sums)

    def update(self, values: Mapping[str, Value], batch_size: int) -> None:
        """Add ``values`` (0-dim tensors on one device, or Python numbers) weighted by ``batch_size``."""
        names, tensors = [], []
        for name, value in values.items():
            if isinstance(value, Tensor):
                names.append(name)
                tensors.append(value)
            else:
                entry = self._host_sums.setdefault(name, [0.0, 0])
                entry[0] += float(value) * batch_size
                entry[1] += batch_size
        if not tensors:
            return
        stacked = torch.stack(tensors).detach()
        if stacked.dtype != torch.float64:
            stacked = stacked.float()
        group = self._tensor_groups.get(key := tuple(names))
        if group is None:
            self._tensor_groups[key] = [stacked * batch_size, batch_size]
        else:
            group[0].add_(stacked, alpha=batch_size)
            group[1] += batch_size

    def means(self) -> dict[str, tuple[Tensor, int]]:
        """``{name: (mean as a 0-dim tensor, number of examples it averages)}``, in first-seen order."""
        sums: dict[str, list] = {}
        for names, (total, count) in self._tensor_groups.items():
            for name, part in zip(names, total.unbind(), strict=True):
                entry = sums.setdefault(name, [0.0, 0])
                entry[0] = entry[0] + part
                entry[1] += count
        device = next((total.device for total, _ in self._tensor_groups.values()), torch.device("cpu"))
        for name, (total, count) in self._host_sums.items():
            entry = sums.setdefault(name, [0.0, 0])
            entry[0] = entry[0] + torch.tensor(total, device=device)
            entry[1] += count
        return {name: (torch.as_tensor(total) / count, count) for name, (total, count) in sums.items()}

    def state_dict(self) -> dict[str, Any]:
        """Plain lists, tensors and numbers (loadable with ``torch.load(weights_only=True)``)."""
        return {
            "tensor_groups": [
                [list(names), total.cpu(), count] for names, (total, count) in self._tensor_groups.items()
            ],
            "host_sums": {name: list(entry) for name, entry in self._host_sums.items()},
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], device: torch.device | str = "cpu") -> RunningMeans:
        running = cls()
        for names, total, count in state["tensor_groups"]:
            running._tensor_groups[tuple(names)] = [total.to(device), int(count)]
        for name, (total, count) in state["host_sums"].items():
            running._host_sums[name] = [float(total), int(count)]
        return running

    def reset(self) -> None:
        self._tensor_groups.clear()
        self._host_sums.clear()

"""Test-time evaluation of any model: collect per-batch latents and attributes, gather ranks, score once.

:class:`GenerativeModel` feeds a :class:`EvaluationCollector` from ``test_step`` and calls
:meth:`EvaluationCollector.compute` at the end of the test epoch; the results are logged as ``test/<name>``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import lightning as L
import torch
from torch import Tensor

from genvae.metrics.disentanglement import disentanglement_metrics
from genvae.metrics.mutual_information import Protocol

__all__ = ["EvaluationCollector", "gather_rows"]


def gather_rows(module: L.LightningModule, tensor: Tensor) -> Tensor:
    """Concatenate ``tensor [n_rank, ...]`` of every DDP rank in rank order (shards may differ in length).

    Each rank pads its rows to the longest shard, ``all_gather`` stacks them, and a mask of the true
    lengths drops the padding. Without a trainer or with one process the tensor is returned as is.
    """
    trainer = module._trainer
    if trainer is None or trainer.world_size == 1:
        return tensor
    lengths = module.all_gather(torch.tensor([len(tensor)], device=tensor.device)).view(-1)
    longest = int(lengths.max())
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: len(tensor)] = tensor
    gathered = module.all_gather(padded)  # [world, longest, ...]
    keep = torch.arange(longest, device=gathered.device) < lengths.to(gathered.device).unsqueeze(1)
    return gathered[keep]


class EvaluationCollector:
    """Per-example test outputs of one rank; :meth:`gather` joins all ranks, :meth:`compute` scores them.

    Every update adds equally long tensors under fixed keys: ``latent [B, D]``, ``recon_accuracy [B]``,
    ``label [B]``, ``index [B]`` and, when the data has them, ``attributes [B, A]``.
    """

    def __init__(self) -> None:
        self.parts: dict[str, list[Tensor]] = defaultdict(list)

    def update(self, **tensors: Tensor) -> None:
        for key, value in tensors.items():
            self.parts[key].append(value.detach())

    def gather(self, module: L.LightningModule) -> dict[str, Tensor]:
        """All ranks' examples, each once (duplicates by ``index`` dropped), sorted by ``index``."""
        gathered = {key: gather_rows(module, torch.cat(parts)) for key, parts in sorted(self.parts.items())}
        if "index" in gathered and len(gathered["index"]):
            index, order = gathered["index"].sort(stable=True)
            first = torch.ones_like(index, dtype=torch.bool)
            first[1:] = index[1:] != index[:-1]
            gathered = {key: value[order][first] for key, value in gathered.items()}
        return gathered

    @staticmethod
    def compute(
        outputs: dict[str, Tensor],
        attribute_names: Sequence[str] | None = None,
        protocol: Protocol = "ksg",
        latent_key: str = "latent",
    ) -> dict[str, float]:
        """``recon_accuracy`` (mean over images) and, with attributes, the :mod:`disentanglement` metrics.

        The latent metrics use ``outputs[latent_key]`` and mutual information by ``protocol``.
        """
        results: dict[str, float] = {}
        if "recon_accuracy" in outputs and len(outputs["recon_accuracy"]):
            results["recon_accuracy"] = outputs["recon_accuracy"].double().mean().item()
        attributes = outputs.get("attributes")
        if attributes is not None and len(attributes) >= 3:
            names = list(attribute_names or [f"attribute{k}" for k in range(attributes.shape[1])])
            if len(names) != attributes.shape[1]:
                names = [f"attribute{k}" for k in range(attributes.shape[1])]
            latents = outputs[latent_key]
            results.update(disentanglement_metrics(latents, attributes, names, protocol=protocol))
        return results

"""A batch iterator over tensors already in memory (or on the accelerator).

Batches are gathered with one ``index_select`` per tensor, so there is no per-item Python work on the hot
path. Lightning accepts any iterable as a dataloader and calls ``loader.sampler.set_epoch(epoch)`` at the
start of every epoch, which makes shuffling reproducible and identical across DDP ranks.

The loader is resumable: Lightning stores ``state_dict()`` (epoch, seed, batches consumed) in every
checkpoint and hands it back to ``load_state_dict`` on ``fit --ckpt_path``, so a run resumed from a
mid-epoch checkpoint continues with the batch that follows the last one trained on.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch


class EpochPermutation:
    """The order in which examples are visited: a seeded permutation per epoch, sharded by rank."""

    def __init__(
        self, n: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1, drop_last: bool = False
    ) -> None:
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices())

    def indices(self) -> torch.Tensor:
        """This rank's example indices for the current epoch (training ranks get equal-length shards)."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=generator)
        else:
            order = torch.arange(self.n)
        if self.world_size == 1:
            return order
        if self.drop_last:  # equal shards so every rank runs the same number of steps
            usable = (self.n // self.world_size) * self.world_size
            return order[:usable][self.rank :: self.world_size]
        per_rank = math.ceil(self.n / self.world_size)  # evaluation: contiguous shards, nothing repeated
        return order[self.rank * per_rank : (self.rank + 1) * per_rank]


class TensorBatchLoader:
    """Yields dict batches from equally long tensors; uint8 images become float32 in [0, 1] per batch."""

    def __init__(
        self,
        tensors: dict[str, torch.Tensor],
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        lengths = {len(t) for t in tensors.values()}
        if len(lengths) != 1:
            raise ValueError(f"tensors differ in length: { {k: len(t) for k, t in tensors.items()} }")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.tensors = tensors
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = EpochPermutation(lengths.pop(), shuffle, seed, rank, world_size, drop_last)
        self.batch_sampler = None  # read by Lightning's loader inspection, like DataLoader's attribute
        self._yielded = 0  # batches handed out by the current iteration (Lightning fetches a sized loader
        # just in time, without prefetching, so at a checkpoint this is the number of batches trained on)
        self._resume_at: tuple[int, int] | None = None  # (epoch, first batch) set by load_state_dict

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        device = next(iter(self.tensors.values())).device
        order = self.sampler.indices().to(device)
        start = 0
        if self._resume_at is not None:
            epoch, first = self._resume_at
            start = first if epoch == self.sampler.epoch else 0
            self._resume_at = None
        self._yielded = start
        for b in range(start, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            batch = {key: t.index_select(0, idx) for key, t in self.tensors.items()}
            if batch["image"].dtype == torch.uint8:
                batch["image"] = batch["image"].float().div_(255.0)
            batch["index"] = idx
            self._yielded = b + 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """Position in the epoch: the epoch, the shuffling seed and the batches handed out so far."""
        return {"epoch": self.sampler.epoch, "seed": self.sampler.seed, "consumed": self._yielded}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue epoch ``state["epoch"]`` at batch ``state["consumed"]`` (a later epoch starts at 0)."""
        self.sampler.seed = int(state["seed"])
        self.sampler.set_epoch(int(state["epoch"]))
        self._resume_at = (int(state["epoch"]), int(state["consumed"]))

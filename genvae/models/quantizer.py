"""Vector quantizer of VQ-VAE (van den Oord et al. 2017) with the tricks that keep a codebook alive.

Each vector of an encoder grid ``z_e`` ``[B, D, *grid]`` is replaced by its nearest of ``K`` codes ``e``;
gradients pass straight through (``z_q = z_e + sg[e - z_e]``). The loss terms are the codebook loss
``||sg[z_e] - e||^2`` and the commitment loss ``||z_e - sg[e]||^2`` (weighted by ``beta``), each summed over
the grid and the code dimension and averaged over the batch, like the squared norms of the paper.

Options:

- ``ema``: the codebook is not a parameter but an exponential moving average of the encoder vectors
  assigned to each code (Razavi et al. 2019): ``N_i <- d N_i + (1 - d) n_i``, ``m_i <- d m_i + (1 - d)
  sum(z_e -> i)``, ``e_i = m_i / N~_i`` with Laplace-smoothed sizes ``N~_i = (N_i + eps) / (N + K eps) N``.
  The codebook loss is then 0 and only the commitment loss is optimised.
- ``kmeans_init``: on the first training batch the codebook is set to k-means(++) centroids of its vectors,
  each with a moving-average size of 1 (as if seen once), so the EMA soon weighs them by their real use
  and codes that k-means left empty are restarted at the first step.
- ``restart_dead``: after every training step, codes whose moving-average assignment count (vectors per
  step, summed over ranks) is below the threshold (``True`` = 1.0) are moved onto encoder vectors of the
  batch (as in Jukebox, Dhariwal et al. 2020), drawn with probability proportional to their squared
  quantization error as in k-means++ seeding, so that restarts land where the codebook is poor and never
  on exact duplicates of a code (MNIST's many blank patches). On a CPU the host checks for dead codes
  each step; on an accelerator the restart runs on the device every step with ``where`` (no read back,
  so no synchronisation per step), drawing from the accelerator's random stream.
- ``cosine``: encoder vectors and codes are l2-normalised, so the nearest code is the one of highest
  cosine similarity (Yu et al. 2022). With a small ``code_dim`` (the model's 1x1 projection) this gives the
  low-dimensional factorised codes of ViT-VQGAN.

Distances, codebook and updates are computed in float32 with autocast disabled, also under mixed
precision. When ``torch.distributed`` is initialised the assignment counts and sums are all-reduced before
every EMA update, and k-means centroids and restart candidates come from rank 0 (broadcast), so every rank
holds the same codebook.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from genvae.errors import ConfigError
from genvae.utils.sync import reads_are_free

__all__ = [
    "QuantizerOutput",
    "VectorQuantizer",
    "code_usage",
    "kmeans",
    "perplexity",
    "squared_distances",
]


class QuantizerOutput(NamedTuple):
    """Result of :meth:`VectorQuantizer.forward`."""

    quantized: Tensor  # [B, D, *grid] float32, the nearest codes with straight-through gradients to z_e
    indices: Tensor  # [B, *grid] int64 code indices
    codebook_loss: Tensor  # scalar, ||sg[z_e] - e||^2 per example (0 with EMA updates)
    commitment_loss: Tensor  # scalar, ||z_e - sg[e]||^2 per example (not yet weighted by beta)
    loss: Tensor  # codebook_loss + beta * commitment_loss


# ---------------------------------------------------------------------------------------------- helpers
def squared_distances(x: Tensor, codes: Tensor) -> Tensor:
    """``[N, K]`` squared Euclidean distances between rows of ``x`` ``[N, D]`` and ``codes`` ``[K, D]``."""
    return x.pow(2).sum(1, keepdim=True) - 2.0 * x @ codes.t() + codes.pow(2).sum(1)


def perplexity(counts: Tensor) -> Tensor:
    """``exp(entropy)`` of the code distribution given by a histogram of counts (K for uniform, 1 for one code)."""
    counts = counts.float()
    p = counts / counts.sum().clamp_min(1e-12)
    entropy = -torch.where(p > 0, p * p.clamp_min(1e-12).log(), torch.zeros_like(p)).sum()
    return entropy.exp()


def code_usage(counts: Tensor) -> Tensor:
    """Fraction of codes with a non-zero count in the histogram ``counts`` ``[K]``."""
    return (counts > 0).float().mean()


def kmeans(x: Tensor, k: int, iters: int = 10, cosine: bool = False) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means of the rows of ``x`` ``[N, D]``: centroids ``[k, D]`` and cluster sizes ``[k]``.

    Centroids start by k-means++ seeding (each next one drawn with probability proportional to the squared
    distance to the nearest one so far); a cluster that empties is re-seeded at a random row. With
    ``cosine`` the centroids are re-normalised (spherical k-means, for l2-normalised data).
    """
    n = len(x)
    centroids = x.new_empty(k, x.shape[1])
    centroids[0] = x[torch.randint(n, (1,), device=x.device)]
    nearest = squared_distances(x, centroids[:1]).squeeze(1).clamp_min(0)
    for i in range(1, k):
        weights = torch.where(nearest.sum() > 0, nearest, torch.ones_like(nearest))  # all equal: uniform
        centroids[i] = x[torch.multinomial(weights, 1)]
        nearest = torch.minimum(nearest, squared_distances(x, centroids[i : i + 1]).squeeze(1).clamp_min(0))
    for _ in range(iters):
        assign = squared_distances(x, centroids).argmin(1)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        means = sums / counts.clamp_min(1.0).unsqueeze(1)
        reseed = x[torch.randint(n, (k,), device=x.device)]
        centroids = torch.where((counts > 0).unsqueeze(1), means, reseed)
        if cosine:
            centroids = F.normalize(centroids, dim=1)
    assign = squared_distances(x, centroids).argmin(1)
    return centroids, torch.bincount(assign, minlength=k).to(x.dtype)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce_sum(tensor: Tensor) -> Tensor:
    if _distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def _draw_weights(errors: Tensor) -> Tensor:
    """Restart draw weights of the batch's vectors: their squared quantization errors, so restarts land
    where the codebook is poor and, drawn without replacement, on distinct vectors (duplicated codes would
    all but one stay dead); the tiny floor keeps exact vectors drawable once the erroneous ones run out."""
    return errors + 1e-6 * errors.mean() + 1e-30


def _broadcast_from_rank0(tensor: Tensor) -> Tensor:
    if _distributed():
        dist.broadcast(tensor, src=0)
    return tensor


@contextlib.contextmanager
def _float32(device: torch.device) -> Iterator[None]:
    """Disable autocast (if any) on ``device`` so the enclosed math runs in the tensors' own dtype."""
    if device.type in ("cpu", "cuda", "xpu", "mps"):
        with torch.autocast(device_type=device.type, enabled=False):
            yield
    else:
        yield


# ---------------------------------------------------------------------------------------------- module
class VectorQuantizer(nn.Module):
    """Nearest-code quantizer with straight-through gradients, EMA updates, k-means init and code restarts.

    Args:
        num_codes: codebook size ``K``.
        code_dim: dimension ``D`` of each code (the channel dimension of the input).
        beta: weight of the commitment loss.
        ema: update the codebook by exponential moving averages instead of the codebook loss.
        decay: decay of the moving averages (EMA codebook and the assignment counts used for restarts).
        epsilon: Laplace smoothing of the EMA cluster sizes.
        kmeans_init: initialise the codebook by k-means on the first training batch.
        kmeans_iters: Lloyd iterations of that initialisation.
        restart_dead: ``False`` (off), ``True`` (threshold 1.0) or the threshold on the moving-average
            number of vectors assigned to a code per training step below which it is restarted.
        cosine: quantize l2-normalised vectors to l2-normalised codes (cosine-similarity lookup).
    """

    codebook: Tensor
    cluster_size: Tensor
    embed_sum: Tensor
    initialized: Tensor

    def __init__(
        self,
        num_codes: int = 256,
        code_dim: int = 64,
        beta: float = 0.25,
        ema: bool = False,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        restart_dead: bool | float = False,
        cosine: bool = False,
    ) -> None:
        super().__init__()
        if num_codes < 1 or code_dim < 1:
            raise ConfigError(f"model: num_codes and code_dim must be >= 1, got {num_codes}, {code_dim}")
        if beta < 0:
            raise ConfigError(f"model.beta must be >= 0, got {beta}")
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"model.decay must be in (0, 1), got {decay}")
        threshold = 1.0 if restart_dead is True else float(restart_dead)
        if threshold < 0:
            raise ConfigError(f"model.restart_dead must be a bool or a threshold >= 0, got {restart_dead}")
        self.num_codes = num_codes
        self.code_dim = code_dim
        self.beta = beta
        self.ema = ema
        self.decay = decay
        self.epsilon = epsilon
        self.kmeans_iters = kmeans_iters
        self.restart_threshold = threshold
        self.cosine = cosine

        codebook = torch.empty(num_codes, code_dim).uniform_(-1.0 / num_codes, 1.0 / num_codes)
        if cosine:
            codebook = F.normalize(torch.randn(num_codes, code_dim), dim=1)
        if ema:
            self.register_buffer("codebook", codebook)
            self.register_buffer("embed_sum", codebook.clone())  # each code starts as "seen itself once"
        else:
            self.codebook = nn.Parameter(codebook)
        # moving average of vectors assigned per training step: EMA cluster sizes and the restart criterion
        self.register_buffer("cluster_size", torch.ones(num_codes))
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self._known_initialized = not kmeans_init  # host-side mirror: no device read once it is True

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._known_initialized = False  # re-read the loaded buffer at the next training step

    def _needs_init(self) -> bool:
        """Whether the k-means initialisation is still to run; reads the buffer only until it is True."""
        if not self._known_initialized:
            self._known_initialized = bool(self.initialized)
        return not self._known_initialized

    # ------------------------------------------------------------------ lookup
    def codes(self) -> Tensor:
        """The effective codes ``[K, D]`` in float32 (l2-normalised with ``cosine``)."""
        codes = self.codebook.float()
        return F.normalize(codes, dim=1) if self.cosine else codes

    def _flatten(self, z: Tensor) -> Tensor:
        if z.ndim < 2 or z.shape[1] != self.code_dim:
            raise ValueError(f"expected [B, {self.code_dim}, ...] vectors, got shape {list(z.shape)}")
        flat = z.float().movedim(1, -1).reshape(-1, self.code_dim)
        return F.normalize(flat, dim=1) if self.cosine else flat

    @staticmethod
    def _unflatten(flat: Tensor, like: Tensor) -> Tensor:
        grid = (like.shape[0], *like.shape[2:])
        return flat.reshape(*grid, flat.shape[-1]).movedim(-1, 1)

    def nearest(self, flat: Tensor) -> Tensor:
        """Index of the nearest code of each row of ``flat`` ``[N, D]`` (already normalised with cosine)."""
        return squared_distances(flat, self.codes()).argmin(1)

    @torch.no_grad()
    def lookup(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Quantize without any update or gradient: codes ``[B, D, *grid]`` float32 and indices ``[B, *grid]``."""
        with _float32(z.device):
            flat = self._flatten(z)
            indices = self.nearest(flat)
            quantized = self._unflatten(self.codes()[indices], z)
        return quantized, indices.reshape(z.shape[0], *z.shape[2:])

    def embed(self, indices: Tensor) -> Tensor:
        """Codes of an index grid ``[B, *grid]`` as ``[B, D, *grid]`` float32."""
        return self.codes()[indices].movedim(-1, 1)

    # ------------------------------------------------------------------ training forward
    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantize ``z`` ``[B, D, *grid]``; in training mode also initialise / update / restart the codebook."""
        with _float32(z.device):
            flat = self._flatten(z)
            if self.training and self._needs_init():
                self._kmeans_init(flat.detach())
            indices = self.nearest(flat.detach())
            codes = self.codes()[indices]
            batch = z.shape[0]
            commitment = (flat - codes.detach()).pow(2).sum() / batch
            if self.ema:
                codebook_loss = torch.zeros((), device=z.device)
            else:
                codebook_loss = (flat.detach() - codes).pow(2).sum() / batch
            straight_through = flat + (codes - flat).detach()
            if self.training:
                errors = (flat.detach() - codes.detach()).pow(2).sum(1)
                self._update(flat.detach(), indices, errors)
        return QuantizerOutput(
            quantized=self._unflatten(straight_through, z),
            indices=indices.reshape(batch, *z.shape[2:]),
            codebook_loss=codebook_loss,
            commitment_loss=commitment,
            loss=codebook_loss + self.beta * commitment,
        )

    # ------------------------------------------------------------------ codebook maintenance
    @torch.no_grad()
    def _set_codes(self, mask: Tensor, vectors: Tensor, sizes: Tensor) -> None:
        """Put codes ``mask`` ``[K]`` at the matching rows of ``vectors`` ``[K, D]`` with moving-average sizes
        ``sizes`` ``[K]`` (EMA sums to match); the other codes stay. ``where``, not a masked assignment,
        so that nothing is read back to the host."""
        self.codebook.data.copy_(torch.where(mask[:, None], vectors.to(self.codebook.dtype), self.codebook))
        self.cluster_size.copy_(torch.where(mask, sizes, self.cluster_size))
        if self.ema:
            self.embed_sum.copy_(torch.where(mask[:, None], vectors * sizes[:, None], self.embed_sum))

    @torch.no_grad()
    def _kmeans_init(self, flat: Tensor) -> None:
        centroids, counts = kmeans(flat, self.num_codes, self.kmeans_iters, self.cosine)
        _broadcast_from_rank0(centroids)
        _broadcast_from_rank0(counts)
        everything = torch.ones(self.num_codes, dtype=torch.bool, device=flat.device)
        self._set_codes(everything, centroids, torch.ones_like(counts))
        self.initialized.fill_(True)
        self._known_initialized = True

    @torch.no_grad()
    def _update(self, flat: Tensor, indices: Tensor, errors: Tensor) -> None:
        """One training step of moving averages (all-reduced across ranks), then dead-code restarts."""
        counts = torch.bincount(indices, minlength=self.num_codes).float()
        _all_reduce_sum(counts)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
        if self.ema:
            sums = torch.zeros(self.num_codes, self.code_dim, device=flat.device).index_add_(0, indices, flat)
            _all_reduce_sum(sums)
            self.embed_sum.mul_(self.decay).add_(sums, alpha=1.0 - self.decay)
            total = self.cluster_size.sum()
            smoothed = (self.cluster_size + self.epsilon) / (total + self.num_codes * self.epsilon) * total
            self.codebook.copy_(self.embed_sum / smoothed.unsqueeze(1))
        if self.restart_threshold > 0:
            self._restart_dead(flat, errors)

    @torch.no_grad()
    def _restart_dead(self, flat: Tensor, errors: Tensor) -> None:
        """Move codes with too few assignments onto vectors drawn with probability ~ their squared error;
        the j-th dead code takes the j-th draw.

        On a CPU the host decides whether any code is dead (free there) and draws exactly as many vectors.
        On an accelerator, where that read would wait for the device every step, every step draws
        ``min(K, N)`` distinct vectors instead (the first ``m`` of a draw without replacement are a draw of
        ``m``; more dead codes than vectors cycle through them) and :meth:`_set_codes` keeps the live codes,
        so nothing is read back; under DDP rank 0's draw is then broadcast every step."""
        dead = self.cluster_size < self.restart_threshold  # identical on every rank (all-reduced counts)
        if not reads_are_free(dead):
            drawn = torch.multinomial(
                _draw_weights(errors), min(self.num_codes, len(flat)), replacement=False
            )
        elif bool(dead.any()):
            num_dead = int(dead.sum())
            drawn = torch.multinomial(_draw_weights(errors), num_dead, replacement=num_dead > len(flat))
        else:
            return
        slot = (dead.long().cumsum(0) - 1).clamp_(min=0) % len(drawn)
        candidates = flat[drawn[slot]]
        _broadcast_from_rank0(candidates)
        self._set_codes(dead, candidates, torch.full_like(self.cluster_size, self.restart_threshold))

    def extra_repr(self) -> str:
        return (
            f"num_codes={self.num_codes}, code_dim={self.code_dim}, beta={self.beta}, ema={self.ema}, "
            f"restart_threshold={self.restart_threshold}, cosine={self.cosine}"
        )

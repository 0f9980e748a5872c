"""Datasets made from the MNIST digits at preparation: block-wise generation with a progress bar, and the
verified on-disk cache of the generated images (:mod:`genvae.data.causal`, the global perturbations).

The cache file ``<folder>/<stem>.images-<key>.pt`` is keyed by a hash of the source images, of the tensors
that define the generation (targets, perturbation labels, seeds) and of a generator version string; it
holds the images with the SHA-256 of their bytes, checked on every read, and is written atomically.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from tqdm import tqdm

from genvae.errors import ConfigError
from genvae.utils.atomic import atomic_write_bytes

__all__ = ["GENERATION_BLOCK", "ImageCache", "generate_in_blocks"]

GENERATION_BLOCK = 4096  # images per block: fixed, so that seeded random draws do not depend on the machine


def generate_in_blocks(
    make: Callable[..., torch.Tensor], images: torch.Tensor, *params: torch.Tensor, description: str
) -> torch.Tensor:
    """``torch.cat([make(images[block], *params[block]) for block])`` on the images' device, returned on
    CPU, with a tqdm progress bar (images per second) on rank 0."""
    parts = []
    with tqdm(
        total=len(images), desc=description, unit="img", disable=rank_zero_only.rank != 0, leave=True
    ) as bar:
        for start in range(0, len(images), GENERATION_BLOCK):
            block = slice(start, start + GENERATION_BLOCK)
            parts.append(make(images[block], *(p[block].to(images.device) for p in params)).cpu())
            bar.update(len(parts[-1]))
    return torch.cat(parts) if parts else images.new_zeros(images.shape).cpu()


def _checksum(images: torch.Tensor) -> str:
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()


class ImageCache:
    """The generated uint8 images of one split, in one verified file (see the module docstring); ``shape``:
    theirs when it is not the source's (dSprites: bit-packed sprites, keyed by their factor classes)."""

    def __init__(
        self,
        folder: Path,
        stem: str,
        version: str,
        source: torch.Tensor,
        *keys: torch.Tensor,
        shape: tuple[int, ...] | None = None,
    ) -> None:
        digest = hashlib.sha1(source.contiguous().numpy().tobytes())
        for key in keys:
            digest.update(key.detach().cpu().contiguous().numpy().tobytes())
        digest.update(version.encode())
        self.path = Path(folder) / f"{stem}.images-{digest.hexdigest()[:16]}.pt"
        self.version = version
        self.shape = tuple(source.shape) if shape is None else tuple(shape)  # of the images cached

    def read(self) -> torch.Tensor | None:
        """The cached images if the file is there, whole and current; else None (with a warning if present)."""
        if not self.path.is_file():
            return None
        try:
            cached = torch.load(self.path, map_location="cpu", weights_only=True)
            images = cached["images"]
            current = cached["version"] == self.version and tuple(images.shape) == self.shape
            if current and images.dtype == torch.uint8 and cached.get("sha256") == _checksum(images):
                return images
            cause = "written by another generator" if not current else "content does not match its checksum"
        except Exception as err:  # a truncated or foreign file
            cause = f"unreadable (truncated or not a genvae cache: {type(err).__name__})"
        rank_zero_warn(f"{self.path}: generated image cache {cause}; regenerating")
        return None

    def write(self, images: torch.Tensor) -> None:
        buffer = io.BytesIO()
        torch.save({"version": self.version, "images": images, "sha256": _checksum(images)}, buffer)
        try:
            atomic_write_bytes(self.path, buffer.getvalue())
        except OSError as err:
            raise ConfigError(
                f"{self.path}: cannot write the generated image cache ({err}); set data.init_args.cache_dir"
            ) from None

    def read_or_make(self, make: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float | None]:
        """The cached images, or ``make()``'s, cached; with the generation time (None when read)."""
        images = self.read()
        if images is not None:
            return images, None
        start = time.perf_counter()
        images = make()
        seconds = time.perf_counter() - start
        self.write(images)
        return images, seconds

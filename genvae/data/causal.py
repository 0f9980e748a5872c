"""The causal Morpho-MNIST dataset of Pawlowski et al. 2020 ("Deep Structural Causal Models for Tractable
Counterfactual Inference"): MNIST digits whose thickness and intensity are *set*, thickness -> intensity.

Its causal model (``biomedia-mira/deepscm``, ``datasets/morphomnist/create_synth_thickness_intensity_data.py``)
samples per digit ``thickness = 0.5 + Gamma(10, rate 5)`` and ``intensity = 64 + 191 * sigmoid(N(2 *
(thickness - 2.5), 0.5))`` (inverted mechanism: ``N(-2 * (thickness - 2), 0.5)``), then makes the image
``set_intensity(set_thickness(mnist_digit, thickness), intensity)`` (:mod:`genvae.data.perturb`). The
released targets are CSV files (``train-morpho.csv``, ``t10k-morpho.csv``: ``index,thickness,intensity``,
one row per MNIST image of that split, in order); :func:`sample_targets` draws new ones with a seed.

The generated images are cached on disk beside the attribute cache, keyed by the source images, the targets
and :data:`CAUSAL_VERSION`, with the SHA-256 of their bytes checked on every read, and written atomically.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import time
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from tqdm import tqdm

from genvae.data.attributes import CPU_CHUNK, GPU_CHUNK
from genvae.data.perturb import MAX_THICKNESS, set_intensity, set_thickness
from genvae.errors import ConfigError
from genvae.utils.atomic import atomic_write_bytes

__all__ = [
    "CAUSAL_VERSION",
    "CausalCache",
    "generate_causal_images",
    "read_targets",
    "sample_targets",
    "target_file",
]

CAUSAL_VERSION = "causal-morpho-1"  # part of the image cache key; bump when the generated images change
TARGET_COLUMNS = ("index", "thickness", "intensity")
_TARGET_STEMS = {"train": "train-morpho.csv", "test": "t10k-morpho.csv"}


def target_file(folder: Path, split: str) -> Path:
    """The released target CSV of a split (``train`` or ``test``) in ``folder``."""
    return Path(folder) / _TARGET_STEMS[split]


def sample_targets(
    n: int, seed: int, invert: bool = False, noise: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(thickness, intensity)`` float32 ``[n]`` drawn from the causal model with a seeded generator.

    ``invert`` switches to the inverted mechanism (``loc = -2 * (thickness - 2)``); ``noise`` is the
    standard deviation of the logit-normal (DeepSCM's ``--scale``, 0.5).
    """
    generator = torch.Generator().manual_seed(seed)
    gamma = torch._standard_gamma(torch.full((n,), 10.0, dtype=torch.float64), generator=generator)
    thickness = 0.5 + gamma / 5.0
    loc = -2.0 * (thickness - 2.0) if invert else 2.0 * (thickness - 2.5)
    normal = torch.randn(n, generator=generator, dtype=torch.float64)
    intensity = 64.0 + 191.0 * torch.sigmoid(loc + noise * normal)
    return thickness.float(), intensity.float()


def read_targets(path: Path, n_images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(thickness, intensity)`` float32 ``[n_images]`` from a target CSV, validated.

    The file must have the columns ``index,thickness,intensity`` and one row per image, indices 0..N-1 in
    order; thickness must be a finite number in (0, :data:`~genvae.data.perturb.MAX_THICKNESS`] px and
    intensity in [0, 255]. Any other content raises :class:`~genvae.errors.ConfigError` naming the file.
    """
    if not path.is_file():
        raise ConfigError(f"{path}: target file not found; set data.init_args.causal_targets to its folder")
    try:
        with path.open(newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ConfigError(f"{path}: unreadable target file ({err})") from None
    if header is None or tuple(h.strip() for h in header) != TARGET_COLUMNS:
        raise ConfigError(f"{path}: expected the header {','.join(TARGET_COLUMNS)}, got {header}")
    if len(rows) != n_images:
        raise ConfigError(f"{path}: {len(rows)} target rows for {n_images} images")
    values = []
    for line, row in enumerate(rows, start=2):
        try:
            index, thickness, intensity = (float(v) for v in row)
        except ValueError:
            raise ConfigError(f"{path}: line {line}: expected three numbers, got {row}") from None
        if index != line - 2:
            raise ConfigError(f"{path}: line {line}: index {row[0]} does not match image {line - 2}")
        if not (math.isfinite(thickness) and 0.0 < thickness <= MAX_THICKNESS):
            raise ConfigError(
                f"{path}: line {line}: thickness {row[1]} is not a finite number in (0, {MAX_THICKNESS}]"
            )
        if not (math.isfinite(intensity) and 0.0 <= intensity <= 255.0):
            raise ConfigError(f"{path}: line {line}: intensity {row[2]} is not a finite number in [0, 255]")
        values.append((thickness, intensity))
    table = torch.tensor(values, dtype=torch.float32).view(-1, 2)
    return table[:, 0].contiguous(), table[:, 1].contiguous()


def generate_causal_images(
    images: torch.Tensor, thickness: torch.Tensor, intensity: torch.Tensor, description: str
) -> torch.Tensor:
    """``set_intensity(set_thickness(images, thickness), intensity)`` (uint8 ``[N, 28, 28]``, on the images'
    device, returned on CPU) in blocks, with a tqdm progress bar on rank 0."""
    block = CPU_CHUNK * max(1, torch.get_num_threads()) * 8 if images.device.type == "cpu" else GPU_CHUNK
    parts = []
    with tqdm(
        total=len(images), desc=description, unit="img", disable=rank_zero_only.rank != 0, leave=True
    ) as bar:
        for start in range(0, len(images), block):
            part = slice(start, start + block)
            thick = set_thickness(images[part], thickness[part].to(images.device))
            parts.append(set_intensity(thick, intensity[part].to(images.device)).cpu())
            bar.update(len(parts[-1]))
    return torch.cat(parts) if parts else images.new_zeros(images.shape).cpu()


def _checksum(images: torch.Tensor) -> str:
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()


class CausalCache:
    """The generated images of one split in one file: ``<folder>/<stem>.images-<key>.pt``.

    The key hashes the source images, the targets and :data:`CAUSAL_VERSION`; the file holds the images
    with the SHA-256 of their bytes, checked on every read.
    """

    def __init__(
        self, folder: Path, stem: str, source: torch.Tensor, thickness: torch.Tensor, intensity: torch.Tensor
    ):
        digest = hashlib.sha1(source.contiguous().numpy().tobytes())
        digest.update(thickness.float().numpy().tobytes())
        digest.update(intensity.float().numpy().tobytes())
        digest.update(CAUSAL_VERSION.encode())
        self.path = Path(folder) / f"{stem}.images-{digest.hexdigest()[:16]}.pt"
        self.shape = tuple(source.shape)

    def read(self) -> torch.Tensor | None:
        """The cached images if the file is there, whole and current; else None (with a warning if present)."""
        if not self.path.is_file():
            return None
        try:
            cached = torch.load(self.path, map_location="cpu", weights_only=True)
            images = cached["images"]
            current = cached["version"] == CAUSAL_VERSION and tuple(images.shape) == self.shape
            if current and images.dtype == torch.uint8 and cached.get("sha256") == _checksum(images):
                return images
            cause = "written by another generator" if not current else "content does not match its checksum"
        except Exception as err:  # a truncated or foreign file
            cause = f"unreadable (truncated or not a genvae cache: {type(err).__name__})"
        rank_zero_warn(f"{self.path}: causal image cache {cause}; regenerating")
        return None

    def write(self, images: torch.Tensor) -> None:
        buffer = io.BytesIO()
        torch.save({"version": CAUSAL_VERSION, "images": images, "sha256": _checksum(images)}, buffer)
        try:
            atomic_write_bytes(self.path, buffer.getvalue())
        except OSError as err:
            raise ConfigError(
                f"{self.path}: cannot write the causal image cache ({err}); set data.init_args.cache_dir"
            ) from None


def cached_causal_images(
    cache: CausalCache,
    source: torch.Tensor,
    thickness: torch.Tensor,
    intensity: torch.Tensor,
    device: torch.device,
    description: str,
) -> tuple[torch.Tensor, float | None]:
    """The split's generated images from the verified cache, or generated on ``device`` and cached.

    Returns the images and the generation time in seconds (None when read from the cache).
    """
    images = cache.read()
    if images is not None:
        return images, None
    start = time.perf_counter()
    images = generate_causal_images(source.to(device), thickness, intensity, description)
    seconds = time.perf_counter() - start
    cache.write(images)
    return images, seconds

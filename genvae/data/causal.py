"""The causal Morpho-MNIST dataset of Pawlowski et al. 2020 ("Deep Structural Causal Models for Tractable
Counterfactual Inference"): MNIST digits whose thickness and intensity are *set*, thickness -> intensity.

Its causal model (``biomedia-mira/deepscm``, ``datasets/morphomnist/create_synth_thickness_intensity_data.py``)
samples per digit ``thickness = 0.5 + Gamma(10, rate 5)`` and ``intensity = 64 + 191 * sigmoid(N(2 *
(thickness - 2.5), 0.5))`` (inverted mechanism: ``N(-2 * (thickness - 2), 0.5)``), then makes the image
``set_intensity(set_thickness(mnist_digit, thickness), intensity)`` (:mod:`genvae.data.perturb`). The
released targets are CSV files (``train-morpho.csv``, ``t10k-morpho.csv``: ``index,thickness,intensity``,
one row per MNIST image of that split, in order); :func:`sample_targets` draws new ones with a seed.

The generated images are cached on disk beside the attribute cache (:class:`~genvae.data.generated.ImageCache`,
keyed by the source images, the targets and :data:`CAUSAL_VERSION`).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch

from genvae.data.generated import generate_in_blocks
from genvae.data.perturb import MAX_THICKNESS, set_intensity, set_thickness
from genvae.errors import ConfigError

__all__ = [
    "CAUSAL_VERSION",
    "causal_images",
    "counterfactual_intensity",
    "generate_causal_images",
    "read_targets",
    "sample_targets",
    "sample_thickness",
    "target_file",
    "true_counterfactuals",
]

CAUSAL_VERSION = "causal-morpho-1"  # part of the image cache key; bump when the generated images change
TARGET_COLUMNS = ("index", "thickness", "intensity")
_TARGET_STEMS = {"train": "train-morpho.csv", "test": "t10k-morpho.csv"}


def target_file(folder: Path, split: str) -> Path:
    """The released target CSV of a split (``train`` or ``test``) in ``folder``."""
    return Path(folder) / _TARGET_STEMS[split]


def sample_thickness(n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` draws of the causal model's thickness marginal ``0.5 + Gamma(shape 10, rate 5)``, float64."""
    gamma = torch._standard_gamma(torch.full((n,), 10.0, dtype=torch.float64), generator=generator)
    return 0.5 + gamma / 5.0


def _intensity_location(thickness: torch.Tensor, invert: bool) -> torch.Tensor:
    """Location of the intensity logit given thickness: ``2 (t - 2.5)``, or ``-2 (t - 2)`` inverted."""
    return -2.0 * (thickness - 2.0) if invert else 2.0 * (thickness - 2.5)


def sample_targets(
    n: int, seed: int, invert: bool = False, noise: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(thickness, intensity)`` float32 ``[n]`` drawn from the causal model with a seeded generator.

    ``invert`` switches to the inverted mechanism (``loc = -2 * (thickness - 2)``); ``noise`` is the
    standard deviation of the logit-normal (DeepSCM's ``--scale``, 0.5).
    """
    generator = torch.Generator().manual_seed(seed)
    thickness = sample_thickness(n, generator)
    normal = torch.randn(n, generator=generator, dtype=torch.float64)
    intensity = 64.0 + 191.0 * torch.sigmoid(_intensity_location(thickness, invert) + noise * normal)
    return thickness.float(), intensity.float()


def counterfactual_intensity(
    thickness: torch.Tensor, intensity: torch.Tensor, new_thickness: torch.Tensor, invert: bool = False
) -> torch.Tensor:
    """Intensity of each digit had its thickness been ``new_thickness``, float32 ``[N]``.

    Pearl's three steps on the causal model's intensity mechanism (Pawlowski et al. 2020, Sec. 4):
    abduction of the exogenous noise ``u = logit((i - 64) / 191) - loc(t)``, action ``t := t'``, prediction
    ``i' = 64 + 191 sigmoid(loc(t') + u)``. The noise is recovered exactly from the targets the digit was
    made with (the logit is taken within float64's range; intensities at 64 or 255 stay there).
    """
    t, t_new = thickness.double(), new_thickness.double()
    fraction = ((intensity.double() - 64.0) / 191.0).clamp(1e-12, 1.0 - 1e-12)
    noise = torch.logit(fraction) - _intensity_location(t, invert)
    return (64.0 + 191.0 * torch.sigmoid(_intensity_location(t_new, invert) + noise)).float()


def true_counterfactuals(
    sources: torch.Tensor,
    thickness: torch.Tensor,
    intensity: torch.Tensor,
    new_thickness: torch.Tensor,
    invert: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ground-truth answer to "this digit, with thickness ``t'``": ``(images, intensity')``.

    A digit of the causal dataset is ``causal_images(source, t, i)`` of its MNIST source digit; under
    ``do(thickness = t')`` the source (all other factors of the image) is unchanged, intensity follows its
    mechanism with the digit's own noise (:func:`counterfactual_intensity`), so the true counterfactual is
    ``causal_images(source, t', i')``. ``sources`` are the MNIST digits (uint8), the result the same kind.
    """
    new_intensity = counterfactual_intensity(thickness, intensity, new_thickness, invert)
    return causal_images(sources, new_thickness, new_intensity.to(new_thickness.device)), new_intensity


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


def causal_images(images: torch.Tensor, thickness: torch.Tensor, intensity: torch.Tensor) -> torch.Tensor:
    """``set_intensity(set_thickness(images, thickness), intensity)``: DeepSCM's two steps."""
    return set_intensity(set_thickness(images, thickness), intensity)


def generate_causal_images(
    images: torch.Tensor, thickness: torch.Tensor, intensity: torch.Tensor, description: str
) -> torch.Tensor:
    """:func:`causal_images` of a whole split (uint8 ``[N, 28, 28]`` on the images' device, returned on CPU),
    in blocks with a progress bar (:func:`~genvae.data.generated.generate_in_blocks`)."""
    return generate_in_blocks(causal_images, images, thickness, intensity, description=description)

"""dSprites (Matthey et al. 2017, github.com/deepmind/dsprites-dataset): 737,280 binary 64x64 sprites.

Every combination of five factors appears once, in a fixed order (posY varies fastest):

| factor | values | grid |
| --- | --- | --- |
| shape | 3 | square, ellipse, heart (``latents_values`` 1, 2, 3) |
| scale | 6 | ``linspace(0.5, 1, 6)`` |
| orientation | 40 | ``linspace(0, 2 pi, 40)``, both ends included (0 and 2 pi draw the same sprite) |
| posX, posY | 32 each | ``linspace(0, 1, 32)`` |

with a constant colour first: image ``index = shape * 245760 + scale * 40960 + orientation * 1024 + posX * 32 +
posY`` (:data:`LATENTS_BASES`). :func:`read_official` reads DeepMind's
``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` (``imgs`` uint8 ``[737280, 64, 64]``, ``latents_values``
float64 ``[737280, 6]``, ``latents_classes`` int64 ``[737280, 6]``) and checks it, with one error line naming the
file. Without it, :func:`generate` draws the same grid procedurally; :func:`load_dsprites` does either and caches
the generated set (bit-packed, with its SHA-256, :class:`~genvae.data.generated.ImageCache`).

The original renderer was never published. Known and kept: the grids, order and index above, binary images,
one sprite per image, the same sprite at orientations 0 and 2 pi, and position steps of one pixel ("the
smallest step changes while ensuring that all pixel outputs were different", the dataset's README: 32
positions, one pixel apart). Approximated here (:data:`SPRITE_SIZE`, :func:`sprite_masks`): the sprites'
sizes (a square of side 20 px at scale 1, an ellipse of axes 24 x 12 px, a heart in a 24 px box), their
outlines (the ellipse's axis ratio, the heart's curve), the first position's pixel (centres from 16.5 to
47.5 px on each axis, posX along the columns, posY along the rows, downwards) and the direction of rotation
(counter-clockwise on screen). So models trained on either are compared on the factors, not pixel for pixel:
docs/data.md says what that means for published numbers.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from tqdm import tqdm

from genvae.data.generated import ImageCache
from genvae.errors import ConfigError

__all__ = [
    "FACTOR_NAMES",
    "LATENTS_BASES",
    "LATENTS_SIZES",
    "NUM_IMAGES",
    "OFFICIAL_FILENAME",
    "DSprites",
    "generate",
    "latents_classes",
    "latents_values",
    "load_dsprites",
    "official_arrays",
    "read_official",
    "render",
]

OFFICIAL_FILENAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
LATENT_NAMES = (
    "color",
    "shape",
    "scale",
    "orientation",
    "posX",
    "posY",
)  # the columns of the official arrays
FACTOR_NAMES = LATENT_NAMES[1:]  # colour is constant
SHAPE_NAMES = ("square", "ellipse", "heart")
LATENTS_SIZES = (1, 3, 6, 40, 32, 32)
LATENTS_BASES = (737280, 245760, 40960, 1024, 32, 1)
NUM_IMAGES = 737280
IMAGE_SIZE = 64
SPRITE_SIZE = 24.0  # px at scale 1: the ellipse's long axis and the heart's box; the square's side is 20 px
FIRST_CENTRE = 16.5  # px, the sprite centre at position 0 (one pixel per position step)
VERSION = "dsprites-procedural-1"
_EDGE = 1e-9  # px (or the outline's units): points on the outline are inside
# the arrays of DeepMind's npz: name -> (shape, dtype)
OFFICIAL_LAYOUT = {
    "imgs": ((NUM_IMAGES, IMAGE_SIZE, IMAGE_SIZE), np.uint8),
    "latents_values": ((NUM_IMAGES, 6), np.float64),
    "latents_classes": ((NUM_IMAGES, 6), np.int64),
}


def _grids() -> tuple[np.ndarray, ...]:
    """The value of each class of each latent column (:data:`LATENT_NAMES`)."""
    return (
        np.ones(1),
        np.arange(1.0, 4.0),
        np.linspace(0.5, 1.0, 6),
        np.linspace(0.0, 2 * math.pi, 40),
        np.linspace(0.0, 1.0, 32),
        np.linspace(0.0, 1.0, 32),
    )


def latents_classes() -> np.ndarray:
    """The class of each latent of every image, ``[737280, 6]`` int64, in the dataset's order."""
    return np.indices(LATENTS_SIZES).reshape(len(LATENTS_SIZES), -1).T.astype(np.int64)


def latents_values(classes: np.ndarray) -> np.ndarray:
    """The latent values ``[N, 6]`` float64 of latent ``classes`` ``[N, 6]`` (the official ``latents_values``)."""
    return np.stack([grid[classes[:, i]] for i, grid in enumerate(_grids())], 1)


def _outline_test(shape: int, u: torch.Tensor, v: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Whether the sprite-frame points ``(u, v)`` (px from the centre, ``v`` up) lie in ``shape`` at ``scale``;
    a point on the outline counts as inside (``_EDGE`` absorbs the rounding of ``scale * size``, so that
    0.7 x 20 px covers 7 px on each side, not 6)."""
    half = SPRITE_SIZE / 2 * scale
    if shape == 0:  # square of side 20 px at scale 1
        side = 20.0 / SPRITE_SIZE * half + _EDGE
        return (u.abs() <= side) & (v.abs() <= side)
    if shape == 1:  # ellipse, axes 24 x 12 px at scale 1
        return (u / half) ** 2 + (v / (half / 2)) ** 2 <= 1.0 + _EDGE
    # heart: (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0 spans x in [-1.14, 1.14], y in [-1, 1.24]: fitted to the box
    x, y = u / half * 1.14, v / half * 1.12 + 0.12
    return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= _EDGE


def sprite_masks(shape: int, scales: torch.Tensor, angles: torch.Tensor, size: int) -> torch.Tensor:
    """Binary sprites ``[len(scales), size, size]`` centred on the centre of pixel ``(size // 2, size // 2)``,
    each at its scale and rotated counter-clockwise by its angle; a pixel is set when its centre is inside."""
    coords = torch.arange(size, dtype=torch.float64) - size // 2
    x = coords.view(1, 1, size)  # columns, rightwards
    y = -coords.view(1, size, 1)  # rows, upwards on screen
    angles = angles.double().remainder(2 * math.pi)  # 2 pi draws exactly the sprite of 0, as in dSprites
    cos, sin = angles.cos().view(-1, 1, 1), angles.sin().view(-1, 1, 1)
    u, v = cos * x + sin * y, -sin * x + cos * y  # rotate the canvas by -angle: the sprite by +angle
    return _outline_test(shape, u, v, scales.double().view(-1, 1, 1)).to(torch.uint8)


def render(classes: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The procedural images ``[N, 64, 64]`` uint8 of latent ``classes`` ``[N, 6]``, one by one (the
    reference :func:`generate` is checked against)."""
    classes = torch.as_tensor(np.asarray(classes), dtype=torch.long)
    values = torch.as_tensor(latents_values(classes.numpy()))
    images = torch.zeros(len(classes), IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
    canvas = 2 * IMAGE_SIZE
    for shape in range(3):
        rows = (classes[:, 1] == shape).nonzero().flatten()
        if len(rows) == 0:
            continue
        masks = sprite_masks(shape, values[rows, 2], values[rows, 3], canvas)
        for mask, row in zip(masks, rows.tolist(), strict=True):
            col0, row0 = _corner(canvas, int(classes[row, 4])), _corner(canvas, int(classes[row, 5]))
            images[row] = mask[row0 : row0 + IMAGE_SIZE, col0 : col0 + IMAGE_SIZE]
    return images


def _corner(canvas: int, position: int) -> int:
    """The canvas offset of an image's first row (or column) whose sprite is at ``position`` on that axis,
    for sprites drawn centred on a ``canvas``-pixel canvas (:func:`sprite_masks`)."""
    return canvas // 2 - int(FIRST_CENTRE) - position


def _placed(masks: torch.Tensor) -> torch.Tensor:
    """Every placement ``[K, 32 (posX), 32 (posY), 64, 64]`` of sprites drawn centred on a 96 px canvas: a
    strided view of the canvas (each position one pixel further), copied once."""
    k, canvas = len(masks), masks.shape[-1]
    last = _corner(canvas, LATENTS_SIZES[4] - 1)  # the offset of position 31; position 0's is last + 31
    stride = masks.stride()
    view = masks.as_strided(
        (k, LATENTS_SIZES[5], LATENTS_SIZES[4], IMAGE_SIZE, IMAGE_SIZE),
        (stride[0], stride[1], stride[2], stride[1], stride[2]),
        masks.storage_offset() + last * stride[1] + last * stride[2],
    )  # [K, rows from position 31 to 0, columns from 31 to 0, 64, 64]
    return view.flip(1, 2).transpose(1, 2).contiguous()


def generate(description: str = "dSprites: generating 737,280 sprites") -> torch.Tensor:
    """All 737,280 procedural images ``[737280, 64, 64]`` uint8 in the dataset's order, one (shape, scale)
    block of 40 orientations x 1024 positions at a time, with a progress bar."""
    _, _, scales, angles, _, _ = (torch.as_tensor(g) for g in _grids())
    images = torch.empty(NUM_IMAGES, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
    block = LATENTS_BASES[2]  # images of one (shape, scale)
    canvas = IMAGE_SIZE + 32
    with tqdm(total=NUM_IMAGES, desc=description, unit="img", disable=rank_zero_only.rank != 0) as bar:
        for shape in range(3):
            for s, scale in enumerate(scales):
                masks = sprite_masks(shape, scale.expand(len(angles)), angles, canvas)
                start = shape * LATENTS_BASES[1] + s * block
                images[start : start + block] = _placed(masks).view(block, IMAGE_SIZE, IMAGE_SIZE)
                bar.update(block)
    return images


@dataclass
class DSprites:
    """dSprites in memory: ``images`` ``[737280, 64, 64]`` uint8 in {0, 1}, ``values`` ``[737280, 6]`` float64
    and ``classes`` ``[737280, 6]`` int64 (the official columns, :data:`LATENT_NAMES`), and ``source``:
    ``"official"`` (the npz) or ``"procedural"``."""

    images: torch.Tensor
    values: torch.Tensor
    classes: torch.Tensor
    source: str


def read_official(path: Path) -> DSprites:
    """DeepMind's npz, checked: its three arrays with the published shapes and dtypes, binary images, and the
    latent classes in the dataset's order; a ConfigError naming the file otherwise."""
    try:
        with np.load(path) as npz:
            arrays = {key: npz[key] for key in OFFICIAL_LAYOUT if key in npz}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ConfigError(f"{path}: not a readable dSprites npz (truncated or damaged: {err})") from None
    missing = sorted(set(OFFICIAL_LAYOUT) - set(arrays))
    if missing:
        raise ConfigError(f"{path}: not the dSprites npz (no {', '.join(missing)})")
    for key, (shape, dtype) in OFFICIAL_LAYOUT.items():
        if arrays[key].shape != shape or arrays[key].dtype != dtype:
            raise ConfigError(
                f"{path}: {key} is {arrays[key].dtype} {list(arrays[key].shape)}, expected "
                f"{np.dtype(dtype).name} {list(shape)}"
            )
    if not np.array_equal(arrays["latents_classes"], latents_classes()):
        raise ConfigError(f"{path}: latents_classes are not in the dSprites order (shape, scale, ..., posY)")
    if arrays["imgs"].max(initial=0) > 1:
        raise ConfigError(f"{path}: imgs are not binary (values above 1)")
    return DSprites(
        torch.from_numpy(arrays["imgs"]),
        torch.from_numpy(arrays["latents_values"]),
        torch.from_numpy(arrays["latents_classes"]),
        "official",
    )


def load_dsprites(root: str | Path, cache_dir: str | Path | None = None) -> DSprites:
    """The official npz when it sits in ``root``; else the procedural set, read from its verified cache in
    ``cache_dir`` (default ``root``) or generated and cached there."""
    root = Path(root)
    official = root / OFFICIAL_FILENAME
    if official.is_file():
        return read_official(official)
    classes = latents_classes()
    key = torch.from_numpy(classes)
    packed_shape = (NUM_IMAGES, IMAGE_SIZE * IMAGE_SIZE // 8)
    cache = ImageCache(Path(cache_dir or root), "dsprites", VERSION, key, shape=packed_shape)

    def make() -> torch.Tensor:
        return torch.from_numpy(np.packbits(generate().numpy().reshape(NUM_IMAGES, -1), axis=1))

    packed, seconds = cache.read_or_make(make)
    if seconds is not None:
        rank_zero_info(
            f"dSprites: {NUM_IMAGES:,} procedural sprites generated in {seconds:.1f} s, cached in {cache.path}"
        )
    images = np.unpackbits(packed.numpy(), axis=1).reshape(NUM_IMAGES, IMAGE_SIZE, IMAGE_SIZE)
    return DSprites(torch.from_numpy(images), torch.from_numpy(latents_values(classes)), key, "procedural")


def official_arrays(data: DSprites) -> dict[str, np.ndarray]:
    """The arrays of the official npz layout (``imgs``, ``latents_values``, ``latents_classes``)."""
    tensors = {"imgs": data.images, "latents_values": data.values, "latents_classes": data.classes}
    return {
        key: tensors[key].numpy().astype(dtype, copy=False) for key, (_, dtype) in OFFICIAL_LAYOUT.items()
    }

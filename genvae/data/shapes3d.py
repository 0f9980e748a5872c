"""3D Shapes (Burgess & Kim 2018, github.com/deepmind/3d-shapes): RGB 64x64 renders of six known factors.

The published file ``3dshapes.h5`` holds ``images`` uint8 ``[480000, 64, 64, 3]`` and ``labels`` float64
``[480000, 6]``, every combination of the factors once, the last varying fastest:

| factor | values |
| --- | --- |
| floor_hue, wall_hue, object_hue | 10 each, ``linspace(0, 0.9, 10)`` |
| scale | 8, ``linspace(0.75, 1.25, 8)`` |
| shape | 4: cube, cylinder, sphere, capsule (0-3) |
| orientation | 15, ``linspace(-30, 30, 15)`` degrees |

:func:`read_shapes3d` reads it (h5py, the optional extra ``genvae[shapes3d]``) and checks the layout: the
two datasets, their dtypes and shapes, and labels on the published grids; any other file is one
``genvae: error:`` line naming it. Images come back channels first, ``[N, 3, 64, 64]``, with each factor's
value and its class (the index of the value on its grid).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genvae.errors import ConfigError

__all__ = [
    "FACTOR_NAMES",
    "FACTOR_SIZES",
    "FILENAME",
    "NUM_IMAGES",
    "Shapes3D",
    "factor_grids",
    "read_shapes3d",
]

FILENAME = "3dshapes.h5"
FACTOR_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
FACTOR_SIZES = (10, 10, 10, 8, 4, 15)
NUM_IMAGES = 480000
SHAPE_NAMES = ("cube", "cylinder", "sphere", "capsule")
EXTRA = "genvae[shapes3d]"


def factor_grids() -> tuple[np.ndarray, ...]:
    """The published values of each factor, in :data:`FACTOR_NAMES` order."""
    hue = np.linspace(0.0, 0.9, 10)
    return hue, hue, hue, np.linspace(0.75, 1.25, 8), np.arange(4.0), np.linspace(-30.0, 30.0, 15)


@dataclass
class Shapes3D:
    """3D Shapes in memory: ``images`` ``[N, 3, 64, 64]`` uint8, ``values`` ``[N, 6]`` float64 (the published
    labels) and ``classes`` ``[N, 6]`` int64 (each value's index on its grid, :func:`factor_grids`)."""

    images: torch.Tensor
    values: torch.Tensor
    classes: torch.Tensor


def _classes(labels: np.ndarray, path: Path) -> np.ndarray:
    """Each label's index on its factor's grid; a ConfigError naming the factor when one lies off it."""
    classes = np.empty(labels.shape, dtype=np.int64)
    for column, (name, grid) in enumerate(zip(FACTOR_NAMES, factor_grids(), strict=True)):
        index = np.abs(labels[:, column, None] - grid[None, :]).argmin(1)
        off = np.abs(grid[index] - labels[:, column]) > 1e-6 * max(1.0, float(np.abs(grid).max()))
        if off.any():
            row = int(off.argmax())
            raise ConfigError(
                f"{path}: labels[{row}] {name} = {labels[row, column]:g} is not one of the published values "
                f"{np.round(grid, 4).tolist()}"
            )
        classes[:, column] = index
    return classes


def read_shapes3d(root: str | Path) -> Shapes3D:
    """``<root>/3dshapes.h5`` read and checked (module docstring); a ConfigError naming the file, or the extra
    to install when h5py is missing."""
    path = Path(root) / FILENAME
    try:
        import h5py
    except ImportError:
        raise ConfigError(f"{path}: reading 3D Shapes needs h5py: pip install '{EXTRA}'") from None
    if not path.is_file():
        raise ConfigError(f"{path}: file not found (3D Shapes: put the published 3dshapes.h5 there)")
    try:
        with h5py.File(path, "r") as h5:
            missing = [key for key in ("images", "labels") if key not in h5]
            if missing:
                raise ConfigError(f"{path}: not the 3D Shapes file (no {', '.join(missing)} dataset)")
            images, labels = h5["images"], h5["labels"]
            n = labels.shape[0] if labels.ndim else 0
            if images.dtype != np.uint8 or images.shape != (n, 64, 64, 3):
                raise ConfigError(
                    f"{path}: images is {images.dtype} {list(images.shape)}, expected uint8 [N, 64, 64, 3]"
                )
            if labels.dtype.kind != "f" or labels.shape != (n, 6):
                raise ConfigError(
                    f"{path}: labels is {labels.dtype} {list(labels.shape)}, expected float [N, 6]"
                )
            pixels, values = images[()], labels[()].astype(np.float64)
    except ConfigError:
        raise
    except (OSError, ValueError, KeyError) as err:  # h5py's messages for truncated or foreign files
        raise ConfigError(f"{path}: not a readable HDF5 file (truncated or damaged: {err})") from None
    classes = _classes(values, path)
    return Shapes3D(
        torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(values),
        torch.from_numpy(classes),
    )

"""3D Shapes (genvae.data.shapes3d): the published 3dshapes.h5 layout read on a small file written by the test,
and every way a file can be wrong as one line naming it."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest
import torch

from genvae.data import shapes3d
from genvae.errors import ConfigError

h5py = pytest.importorskip("h5py")


def _labels(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` label rows on the published grids and their classes."""
    rng = np.random.default_rng(seed)
    classes = np.stack([rng.integers(0, size, n) for size in shapes3d.FACTOR_SIZES], 1)
    grids = shapes3d.factor_grids()
    return np.stack([grids[i][classes[:, i]] for i in range(6)], 1), classes


def write_h5(root: Path, n: int = 40, **override: np.ndarray) -> Path:
    """A 3dshapes.h5 of ``n`` images in the published layout (``override`` replaces or, as None, drops a dataset)."""
    labels, _ = _labels(n)
    arrays = {"images": np.arange(n * 64 * 64 * 3, dtype=np.uint64).astype(np.uint8).reshape(n, 64, 64, 3)}
    arrays["labels"] = labels
    arrays.update(override)
    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / shapes3d.FILENAME, "w") as h5:
        for key, value in arrays.items():
            if value is not None:
                h5.create_dataset(key, data=value)
    return root


def test_a_file_in_the_published_layout_is_read_channels_first_with_its_factor_classes(
    tmp_path: Path,
) -> None:
    root = write_h5(tmp_path / "data")
    data = shapes3d.read_shapes3d(root)
    labels, classes = _labels(40)
    with h5py.File(root / shapes3d.FILENAME) as h5:
        pixels = h5["images"][()]
    assert data.images.shape == (40, 3, 64, 64) and data.images.dtype == torch.uint8
    assert torch.equal(data.images, torch.from_numpy(pixels).permute(0, 3, 1, 2))
    assert torch.equal(data.values, torch.from_numpy(labels)) and torch.equal(
        data.classes, torch.from_numpy(classes)
    )
    assert [len(g) for g in shapes3d.factor_grids()] == list(shapes3d.FACTOR_SIZES)
    assert np.prod(shapes3d.FACTOR_SIZES) == shapes3d.NUM_IMAGES


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"labels": None}, r"not the 3D Shapes file \(no labels dataset\)"),
        (
            {"images": np.zeros((40, 64, 64, 3), np.float32)},
            r"images is float32 \[40, 64, 64, 3\], expected uint8",
        ),
        (
            {"images": np.zeros((40, 32, 32, 3), np.uint8)},
            r"images is uint8 \[40, 32, 32, 3\], expected uint8",
        ),
        ({"labels": np.zeros((40, 5))}, r"labels is float64 \[40, 5\], expected float \[N, 6\]"),
        ({"labels": np.full((40, 6), 0.5)}, r"labels\[0\] scale = 0.5 is not one of the published values"),
    ],
)
def test_a_file_of_another_layout_is_one_line_naming_it(tmp_path: Path, override: dict, message: str) -> None:
    root = write_h5(tmp_path, **override)
    with pytest.raises(ConfigError, match=f"3dshapes.h5: {message}"):
        shapes3d.read_shapes3d(root)


def test_a_missing_truncated_or_unreadable_file_and_a_missing_h5py_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="3dshapes.h5: file not found"):
        shapes3d.read_shapes3d(tmp_path)
    path = write_h5(tmp_path) / shapes3d.FILENAME
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(ConfigError, match=r"3dshapes.h5: not a readable HDF5 file \(truncated or damaged"):
        shapes3d.read_shapes3d(tmp_path)
    real_import = builtins.__import__

    def no_h5py(name: str, *args, **kwargs):
        if name == "h5py":
            raise ImportError("No module named 'h5py'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_h5py)
    with pytest.raises(ConfigError, match=r"reading 3D Shapes needs h5py: pip install 'genvae\[shapes3d\]'"):
        shapes3d.read_shapes3d(tmp_path)

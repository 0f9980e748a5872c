"""dSprites (genvae.data.dsprites): the published grid, order and index, the procedural sprites, the checks of
the official npz, and (GENVAE_SLOW_TESTS=1) the full set generated, cached, exported and read back."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from genvae.data import dsprites
from genvae.errors import ConfigError


def test_classes_values_and_index_follow_the_published_definition() -> None:
    classes = dsprites.latents_classes()
    assert classes.shape == (737280, 6) and classes.dtype == np.int64
    assert np.array_equal(classes @ np.array(dsprites.LATENTS_BASES), np.arange(737280))
    assert classes[1].tolist() == [0, 0, 0, 0, 0, 1] and classes[32].tolist() == [0, 0, 0, 0, 1, 0]
    assert classes[245760].tolist() == [0, 1, 0, 0, 0, 0]  # shape varies slowest
    values = dsprites.latents_values(classes)
    assert values.dtype == np.float64 and (values[:, 0] == 1).all()
    assert sorted(set(values[:, 1])) == [1.0, 2.0, 3.0]
    assert np.allclose(sorted(set(values[:, 2])), np.linspace(0.5, 1, 6))
    orientations = sorted(set(values[:, 3]))
    assert len(orientations) == 40 and orientations[0] == 0 and orientations[-1] == 2 * math.pi
    assert np.array_equal(sorted(set(values[:, 4])), np.linspace(0, 1, 32))


def _block(shape: int, scale_class: int, orientation_classes: list[int]) -> tuple[np.ndarray, torch.Tensor]:
    """The classes and the fast-path images of some orientations of one (shape, scale) block."""
    grids = dsprites._grids()
    angles = torch.as_tensor(grids[3][orientation_classes])
    scale = torch.tensor(grids[2][scale_class]).expand(len(angles))
    images = dsprites._placed(dsprites.sprite_masks(shape, scale, angles, dsprites.IMAGE_SIZE + 32))
    classes = dsprites.latents_classes()
    rows = (
        (classes[:, 1] == shape)
        & (classes[:, 2] == scale_class)
        & np.isin(classes[:, 3], orientation_classes)
    )
    return classes[rows], images.reshape(-1, 64, 64)


@pytest.mark.parametrize("shape", [0, 1, 2])
def test_every_placement_of_the_fast_path_is_the_sprite_drawn_one_by_one(shape: int) -> None:
    classes, images = _block(shape, 5, [0, 7, 39])
    assert torch.equal(images, dsprites.render(classes))
    assert set(images.unique().tolist()) == {0, 1}
    assert torch.equal(images[:1024], images[-1024:])  # orientations 0 and 2 pi: the same sprites
    assert images[:, 0].sum() + images[:, -1].sum() + images[:, :, 0].sum() + images[:, :, -1].sum() == 0


def test_positions_move_the_sprite_one_pixel_along_columns_and_rows() -> None:
    classes, images = _block(2, 3, [4])
    image = images.view(32, 32, 64, 64)  # [posX, posY]
    assert torch.equal(image[1, 0, :, 1:], image[0, 0, :, :-1])  # posX + 1: one column to the right
    assert torch.equal(image[0, 1, 1:], image[0, 0, :-1])  # posY + 1: one row down
    scales = [int(_block(0, s, [0])[1][0].sum()) for s in range(6)]
    assert scales == sorted(scales) and len(set(scales)) == 6  # every scale a bigger square


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_the_official_npz_is_checked_with_one_line_naming_the_file(tmp_path: Path) -> None:
    small = {
        "imgs": np.zeros((4, 64, 64), np.uint8),
        "latents_values": np.zeros((4, 6)),
        "latents_classes": np.zeros((4, 6), np.int64),
    }
    path = _npz(tmp_path / "a.npz", **small)
    with pytest.raises(
        ConfigError, match=r"a.npz: imgs is uint8 \[4, 64, 64\], expected uint8 \[737280, 64, 64\]"
    ):
        dsprites.read_official(path)
    path = _npz(tmp_path / "b.npz", imgs=small["imgs"])
    with pytest.raises(
        ConfigError, match=r"b.npz: not the dSprites npz \(no latents_classes, latents_values\)"
    ):
        dsprites.read_official(path)
    whole = _npz(tmp_path / "c.npz", **small).read_bytes()
    (tmp_path / "c.npz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ConfigError, match=r"c.npz: not a readable dSprites npz \(truncated or damaged"):
        dsprites.read_official(tmp_path / "c.npz")


@pytest.mark.skipif(
    os.environ.get("GENVAE_SLOW_TESTS") != "1",
    reason="generates, caches and exports all 737,280 sprites (~1 min, 3 GB); set GENVAE_SLOW_TESTS=1 to run",
)
def test_the_full_set_is_generated_cached_exported_and_read_back(tmp_path: Path) -> None:
    from genvae.data.export import export_dsprites_npz

    generated = dsprites.load_dsprites(tmp_path / "root")
    assert generated.source == "procedural" and generated.images.shape == (737280, 64, 64)
    (cache,) = (tmp_path / "root").glob("dsprites.images-*.pt")
    assert (
        export_dsprites_npz(str(tmp_path / "root"), str(tmp_path / "out.npz")) == "procedural"
    )  # cache read
    official = dsprites.read_official(tmp_path / "out.npz")
    assert torch.equal(official.images, generated.images) and torch.equal(official.values, generated.values)
    (tmp_path / "out.npz").rename(tmp_path / "root" / dsprites.OFFICIAL_FILENAME)
    assert dsprites.load_dsprites(tmp_path / "root").source == "official"
    assert cache.is_file()

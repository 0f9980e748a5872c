"""Morpho-MNIST attributes: against the released reference values, scipy/scikit-image oracles, the cache."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from genvae.data import MNISTDataModule
from genvae.data.attributes import (
    ATTRIBUTE_NAMES,
    _ring_neighbours,
    _row_distance,
    _squared_distance,
    morpho_attributes,
    upscale_images,
)
from genvae.data.export import main as export_main
from genvae.data.idx import read_idx

from .conftest import MORPHO_REFERENCE, fake_digits, write_fake_mnist


@pytest.fixture(scope="module")
def reference(shared_mnist: Path) -> tuple[torch.Tensor, np.ndarray]:
    if not MORPHO_REFERENCE.is_file():
        pytest.skip("reference morphometrics CSV not present")
    rows = list(csv.DictReader(MORPHO_REFERENCE.open()))
    images = read_idx(shared_mnist / "t10k-images-idx3-ubyte.gz")[: len(rows)]
    values = np.array([[float(r[name]) for name in ATTRIBUTE_NAMES] for r in rows])
    return images, values


def test_matches_released_morpho_mnist_values(reference: tuple[torch.Tensor, np.ndarray]) -> None:
    images, expected = reference
    measured = morpho_attributes(images).double().numpy()
    assert measured.shape == (500, 6)
    for j, name in enumerate(ATTRIBUTE_NAMES):
        pearson = np.corrcoef(measured[:, j], expected[:, j])[0, 1]
        assert pearson >= 0.99, (name, pearson)
        if name == "slant":
            assert np.median(np.abs(measured[:, j] - expected[:, j])) < 0.01
        else:
            assert np.median(np.abs(measured[:, j] - expected[:, j]) / np.abs(expected[:, j])) < 0.02, name


def test_float_images_give_the_uint8_result(reference: tuple[torch.Tensor, np.ndarray]) -> None:
    images = reference[0][:50]
    torch.testing.assert_close(morpho_attributes(images.float() / 255.0), morpho_attributes(images))
    torch.testing.assert_close(morpho_attributes(images.unsqueeze(1)), morpho_attributes(images))


def test_chunks_and_threads_do_not_change_the_result(reference: tuple[torch.Tensor, np.ndarray]) -> None:
    images = reference[0][:40]
    threads = torch.get_num_threads()
    one_pass = morpho_attributes(images, chunk_size=len(images))
    torch.set_num_threads(2)  # several chunks on a CPU with 2 threads: the thread pool runs them
    try:
        chunked = morpho_attributes(images, chunk_size=7)
        assert torch.get_num_threads() == 2  # restored after the pool
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(chunked, one_pass, rtol=0, atol=0, equal_nan=True)
    mixed = images.float() / 255.0
    mixed[::3] *= 0.5  # images with different grey ranges in one chunk: the per-image clip bounds
    torch.testing.assert_close(
        morpho_attributes(mixed, chunk_size=len(mixed)),
        torch.cat([morpho_attributes(image.unsqueeze(0)) for image in mixed]),
        rtol=0,
        atol=0,
    )


def test_bspline_upscale_matches_scikit_image() -> None:
    transform = pytest.importorskip("skimage.transform")
    images, _ = fake_digits(3, 0)
    x = images.float() / 255.0
    x[:, 10:12, 4:20] = 0.5  # some grey levels
    ours = upscale_images(x, interpolation="bspline")
    for i in range(3):
        theirs = np.floor(255.0 * transform.pyramid_expand(x[i].double().numpy(), upscale=4, order=3) + 1e-4)
        assert np.mean(ours[i].numpy() != theirs) < 0.002  # only float rounding at integer boundaries
        assert np.abs(ours[i].numpy() - theirs).max() <= 1


def _blobs(n: int, seed: int) -> torch.Tensor:
    """Random binary shapes on 40x40 (smoothed noise thresholded), a zero border included."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.standard_normal((n, 40, 40)), sigma=(0, 3, 3))
    binary = noise > 0.05
    binary[:, :2], binary[:, -2:], binary[:, :, :2], binary[:, :, -2:] = False, False, False, False
    return torch.from_numpy(binary)


def _flat_distances(binary: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zero-bordered flat image, its foreground indices, their 8-neighbour indices and squared distances.

    The row stride of the flat image is 42.
    """
    padded = torch.nn.functional.pad(binary, (1, 1, 1, 1)).flatten()
    fg = torch.nonzero(padded).squeeze(1)
    neighbours = _ring_neighbours(fg, padded.numel(), 42)
    return padded, fg, neighbours, _squared_distance(_row_distance(fg), fg, padded.numel(), 42)


def test_distance_transform_is_exact() -> None:
    binary = _blobs(6, 1)
    padded, fg, _, d2 = _flat_distances(binary)
    ours = torch.zeros(padded.numel(), dtype=torch.float64)
    ours[fg] = d2.double().sqrt()
    expected = np.stack([ndimage.distance_transform_edt(b) for b in binary.numpy()])
    np.testing.assert_allclose(ours.view(6, 42, 42)[:, 1:-1, 1:-1].numpy(), expected, atol=1e-6)


def test_skeleton_keeps_topology_and_length_tracks_scikit_image() -> None:
    morphology = pytest.importorskip("skimage.morphology")
    from genvae.data.attributes import _medial_axis

    binary = _blobs(8, 2)
    padded, fg, neighbours, d2 = _flat_distances(binary)
    on_axis = torch.zeros(padded.numel(), dtype=torch.bool)
    on_axis[fg[_medial_axis(fg, d2, neighbours, 42)]] = True
    skeleton = on_axis.view(8, 42, 42)[:, 1:-1, 1:-1].numpy()
    eight = np.ones((3, 3))
    for shape, skel in zip(binary.numpy(), skeleton, strict=True):
        assert not (skel & ~shape).any()  # subset of the shape
        assert ndimage.label(skel, eight)[1] == ndimage.label(shape, eight)[1]  # same components
        reference = morphology.medial_axis(shape, rng=0)
        assert abs(int(skel.sum()) - int(reference.sum())) <= 0.1 * reference.sum() + 3


def test_known_shapes() -> None:
    image = torch.zeros(1, 28, 28, dtype=torch.uint8)
    image[0, 6:22, 12:16] = 255  # vertical bar, 16 tall, 4 wide
    thickness, slant, length, area, width, height = morpho_attributes(image)[0].tolist()
    assert abs(slant) < 1e-6
    assert area == pytest.approx(16 * 4, rel=0.1)
    assert thickness == pytest.approx(4, rel=0.15)
    assert length == pytest.approx(16 - 4, rel=0.25)  # the medial axis stops short of the ends
    assert height == pytest.approx(16, rel=0.1) and width == pytest.approx(4, rel=0.25)
    sheared = torch.zeros(1, 28, 28, dtype=torch.uint8)
    for r in range(6, 22):
        sheared[0, r, 14 + (14 - r) // 3 : 18 + (14 - r) // 3] = 255  # top to the right: positive slant
    assert morpho_attributes(sheared)[0, 1] > 0.2


def test_blank_images_give_nan() -> None:
    values = morpho_attributes(torch.zeros(2, 28, 28))
    assert torch.isnan(values).all()


def test_datamodule_yields_cached_attributes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_fake_mnist(tmp_path / "data", n_train=40, n_test=20)
    dm = MNISTDataModule(root=str(root), batch_size=8, cache_dir=str(tmp_path / "cache"))
    dm.prepare_data()
    caches = sorted((tmp_path / "cache").glob("*.pt"))
    assert [p.name.split(".")[0] for p in caches] == ["mnist-test", "mnist-train"]
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["attributes"].shape == (8, 6) and batch["attributes"].dtype == torch.float32
    expected = morpho_attributes(dm.splits["train"]["image"][batch["index"]])
    torch.testing.assert_close(batch["attributes"], expected)

    calls = []
    monkeypatch.setattr(
        "genvae.data.datamodule.morpho_attributes", lambda x: calls.append(1) or torch.zeros(1)
    )
    MNISTDataModule(root=str(root), cache_dir=str(tmp_path / "cache")).setup()
    assert not calls  # served from the cache

    caches[0].write_bytes(b"garbage")  # corrupt: recomputed and rewritten
    monkeypatch.undo()
    with pytest.warns(UserWarning, match="attribute cache unreadable"):
        MNISTDataModule(root=str(root), cache_dir=str(tmp_path / "cache")).prepare_data()
    assert torch.load(caches[0], weights_only=True)["attributes"].shape == (20, 6)


def test_export_csv(tmp_path: Path) -> None:
    root = write_fake_mnist(tmp_path / "data", n_train=0, n_test=12)
    out = tmp_path / "attrs.csv"
    export_main(["--root", str(root), "--split", "test", "--out", str(out), "--cache-dir", str(tmp_path)])
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 12 and list(rows[0]) == ["index", "label", *ATTRIBUTE_NAMES]
    assert float(rows[0]["area"]) > 0

"""Morpho-MNIST perturbations: scikit-image oracles for the operators, known answers on real t10k digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import morphology, transform

from genvae.data import perturb
from genvae.data.attributes import downscale_operator, hires_morphology, morpho_attributes, unit_range
from genvae.data.idx import read_idx

N_DIGITS = 48


@pytest.fixture(scope="module")
def digits(shared_mnist: Path) -> torch.Tensor:
    return read_idx(shared_mnist / "t10k-images-idx3-ubyte.gz")[:N_DIGITS]


@pytest.fixture(scope="module")
def measured(digits: torch.Tensor) -> torch.Tensor:
    return morpho_attributes(digits)


def _components(images: torch.Tensor) -> np.ndarray:
    """8-connected components of each image binarised at half its range."""
    out = []
    for image in images.numpy():
        binary = image >= image.min() + 0.5 * (int(image.max()) - int(image.min()))
        out.append(ndimage.label(binary, structure=np.ones((3, 3)))[1])
    return np.array(out)


# ------------------------------------------------------------------ operators against scikit-image
def test_downscale_operator_is_pyramid_reduce() -> None:
    rng = np.random.default_rng(0)
    image = (rng.random((112, 112)) > 0.6).astype(np.float64)
    d = downscale_operator(28, 4, "bspline").numpy()
    expected = transform.pyramid_reduce(image, downscale=4, order=3)
    np.testing.assert_allclose(d @ image @ d.T, expected, atol=1e-9)


def test_erosion_and_dilation_are_skimage_disks(digits: torch.Tensor) -> None:
    morph = hires_morphology(unit_range(digits[:6]))
    radius = torch.tensor([0, 1, 2, 3, 5, 8])
    binary = morph.binary.transpose(0, 1)
    eroded, dilated = perturb.eroded(morph, radius), perturb.dilated(binary, radius)
    for b, r in enumerate(radius.tolist()):
        image = binary[b].numpy()
        assert np.array_equal(eroded[b].numpy(), morphology.erosion(image, morphology.disk(r))), r
        assert np.array_equal(dilated[b].numpy(), morphology.dilation(image, morphology.disk(r))), r


def test_median_intensity_is_numpy_median(digits: torch.Tensor) -> None:
    expected = []
    for image in digits[:10].numpy():
        low, high = image.min(), image.max()
        expected.append(np.median(image[image >= low + (high - low) * 0.5]))
    np.testing.assert_allclose(perturb.median_intensity(digits[:10]).numpy(), expected)


# ------------------------------------------------------------------ known answers on real digits
def test_set_thickness_lands_on_the_target(digits: torch.Tensor) -> None:
    """Targets from the causal model (0.5 + Gamma(10, 5)): the released images are ~0.12 px mean abs off."""
    g = torch.Generator().manual_seed(0)
    target = 0.5 + torch._standard_gamma(torch.full((N_DIGITS,), 10.0), generator=g) / 5.0
    error = (morpho_attributes(perturb.set_thickness(digits, target))[:, 0] - target).abs()
    assert float(error.median()) < 0.12 and float(error.mean()) < 0.15, (error.median(), error.mean())
    for value in (1.5, 3.0):
        error = (morpho_attributes(perturb.set_thickness(digits, value))[:, 0] - value).abs()
        assert float(error.median()) < 0.15, (value, error.median())


def test_thin_and_thicken_move_thickness_by_the_disk(digits: torch.Tensor, measured: torch.Tensor) -> None:
    """Each side moves by the disk radius r = int(amount * 4 * thickness / 2) / 4 px; slant stays."""
    base = morpho_attributes(perturb.plain(digits))
    radius = (0.7 * 4 * measured[:, 0].double() / 2).floor() / 4
    thinner = morpho_attributes(perturb.thin(digits, 0.7))
    change = (thinner[:, 0] - base[:, 0]).double()
    assert bool((change < 0).all())
    assert float((change + 2 * radius).abs().median()) < 0.5
    radius = (1.0 * 4 * measured[:, 0].double() / 2).floor() / 4
    thicker = morpho_attributes(perturb.thicken(digits, 1.0))
    change = (thicker[:, 0] - base[:, 0]).double()
    assert float((change - 2 * radius).abs().median()) < 0.3
    for result in (thinner, thicker):
        assert float((result[:, 1] - measured[:, 1]).abs().median()) < 0.05  # slant, radians


def test_set_intensity_gives_the_median(digits: torch.Tensor) -> None:
    target = torch.linspace(64, 255, N_DIGITS)
    result = perturb.set_intensity(digits, target)
    assert result.dtype == torch.uint8
    error = (perturb.median_intensity(result) - target.double()).abs()
    # uint8 truncation; the pixels above half range change with the scaling (as in DeepSCM: ~0.5 mean)
    assert float(error.median()) <= 1.0 and float(error.mean()) <= 1.0
    darker = perturb.set_intensity(digits.float() / 255, 100.0)  # no clipping, no truncation: exact
    assert float((perturb.median_intensity(darker) - 100.0).abs().max()) < 1e-3


def test_swelling_grows_a_local_region(digits: torch.Tensor) -> None:
    base = perturb.plain(digits)
    assert torch.equal(perturb.swell(digits, strength=1.0), base)  # exponent 0: the identity map
    swollen = perturb.swell(digits, generator=torch.Generator().manual_seed(1))
    changed = (swollen.int() - base.int()).abs() > 32
    assert float((morpho_attributes(swollen)[:, 3] - morpho_attributes(base)[:, 3]).median()) > 5  # area
    # the change is local: its pixels span less than the digit
    rows = changed.any(2).sum(1)[changed.flatten(1).any(1)]
    assert float(rows.float().median()) < 20


def test_fractures_cut_length_and_topology(digits: torch.Tensor) -> None:
    base = perturb.plain(digits)
    assert torch.equal(perturb.fracture(digits, num=0), base)
    fractured = perturb.fracture(digits, num=3, generator=torch.Generator().manual_seed(2))
    before, after = morpho_attributes(base), morpho_attributes(fractured)
    assert float((after[:, 2] - before[:, 2]).median()) < -3  # length, px
    assert float((after[:, 3] - before[:, 3]).median()) < 0  # area
    assert np.mean(_components(fractured) > _components(base)) > 0.6  # strokes broken apart


def test_random_perturbations_are_seeded_and_chunk_free(digits: torch.Tensor) -> None:
    for fn in (perturb.swell, perturb.fracture):
        first = fn(digits, generator=torch.Generator().manual_seed(3))
        again = fn(digits, generator=torch.Generator().manual_seed(3))
        assert torch.equal(first, again)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            assert torch.equal(fn(digits, generator=torch.Generator().manual_seed(3)), first)
        finally:
            torch.set_num_threads(threads)


def test_kinds_and_shapes_round_trip(digits: torch.Tensor) -> None:
    x = digits[:4]
    for fn in (perturb.thin, perturb.thicken, perturb.plain, lambda i: perturb.set_thickness(i, 2.0)):
        as_uint8, channel, as_float = fn(x), fn(x.unsqueeze(1)), fn(x.float() / 255)
        assert as_uint8.dtype == torch.uint8 and as_uint8.shape == x.shape
        assert channel.shape == (4, 1, 28, 28) and torch.equal(channel[:, 0], as_uint8)
        assert as_float.dtype == torch.float32 and float(as_float.min()) >= 0 and float(as_float.max()) <= 1
        assert float((as_float * 255 - as_uint8.float()).abs().max()) < 1.0 + 1e-3
    blank = torch.zeros(2, 28, 28, dtype=torch.uint8)
    assert torch.equal(perturb.set_thickness(blank, 3.0), blank)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x: perturb.thin(x, 1.5), "amount"),
        (lambda x: perturb.thicken(x, -1.0), "amount"),
        (lambda x: perturb.set_thickness(x, float("nan")), "thickness target"),
        (lambda x: perturb.set_thickness(x, torch.tensor([2.0, -1.0])), "thickness target"),
        (lambda x: perturb.set_intensity(x, 300.0), "intensity target"),
        (lambda x: perturb.fracture(x, num=1.5), "num"),
        (lambda x: perturb.swell(x, strength=0.5), "strength"),
        (lambda x: perturb.set_thickness(x, torch.ones(3)), "shape"),
    ],
)
def test_bad_parameters_are_refused(call, message: str) -> None:  # noqa: ANN001
    x = torch.zeros(2, 28, 28, dtype=torch.uint8)
    with pytest.raises(ValueError, match=message):
        call(x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_gpu_agree(digits: torch.Tensor) -> None:
    x = digits[:16]
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    calls = [
        lambda i: perturb.thin(i),
        lambda i: perturb.thicken(i),
        lambda i: perturb.set_thickness(i, torch.linspace(1.0, 5.0, 16)),
        lambda i: perturb.set_intensity(i, 128.0),
        lambda i: perturb.swell(i, generator=g()),
        lambda i: perturb.fracture(i, generator=g()),
    ]
    for call in calls:
        cpu, gpu = call(x), call(x.cuda()).cpu()
        assert float((cpu.int() - gpu.int()).abs().float().mean()) < 0.5  # grey levels: float32 rounding


def test_perturbation_figure_has_a_row_per_digit(digits: torch.Tensor) -> None:
    from genvae.plots.perturbations import perturbation_columns, perturbation_figure

    columns = perturbation_columns(digits[:2])
    assert list(columns)[:5] == [
        "original",
        "thinned (0.7)",
        "thickened (1.0)",
        "swollen (3, 7)",
        "fractured (3)",
    ]
    assert [name for name in columns if name.startswith("set to")] == [
        "set to 1.5 px",
        "set to 3 px",
        "set to 5 px",
    ]
    figure = perturbation_figure(digits[:2])
    assert figure.dtype == np.uint8 and figure.ndim == 3 and figure.shape[2] == 3

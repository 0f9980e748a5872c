"""Counterfactual soundness metrics (genvae.metrics.soundness) against known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from genvae.latent.soundness import condition_edit, null_edit, soundness_evaluation
from genvae.metrics.soundness import composition, image_l1, mean_std, reversibility, to_unit

from .test_latent_control import exact_control


def _images(n: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g)


def test_image_l1_is_the_mean_absolute_difference_on_the_255_scale() -> None:
    x = torch.zeros(2, 1, 2, 2)
    y = x.clone()
    y[0, 0, 0, 0] = 1.0  # one pixel of four off by 255
    y[1] = 0.5
    assert image_l1(y, x).tolist() == pytest.approx([255 / 4, 127.5])
    # uint8 images are on the 0-255 scale already
    as_uint8 = (y * 255).round().to(torch.uint8)
    assert image_l1(as_uint8, x).tolist() == pytest.approx([255 / 4, 128.0])
    with pytest.raises(ValueError, match="one shape"):
        image_l1(x, x[:1])


def test_the_identity_is_perfectly_composable_and_reversible() -> None:
    x = _images()
    distances = composition(lambda images: images, x)
    assert set(distances) == {1, 10}
    for values in distances.values():
        assert values.shape == (len(x),) and values.abs().max() == 0
    assert reversibility(lambda images: images, lambda images: images, x).abs().max() == 0


def test_a_constant_drift_accumulates_over_the_cycles_and_clips() -> None:
    c = 0.05
    x = torch.zeros(2, 1, 4, 4)
    x[1, :, :2] = 0.9  # half of image 1's pixels start near white: they clip at 1 after 2 cycles
    calls = []

    def drift(images: torch.Tensor) -> torch.Tensor:
        calls.append(images.clone())
        return (images + c).clamp(0, 1)

    distances = composition(drift, x, cycles=[10, 1, 3])
    assert len(calls) == 10  # max(cycles) edits, each fed the previous output
    assert torch.equal(calls[1], drift(x))
    calls.clear()
    for m in (1, 3, 10):
        dark = min(m * c, 1.0)
        light = min(0.9 + m * c, 1.0) - 0.9
        expected = [255 * dark, 255 * (dark + light) / 2]
        assert distances[m].tolist() == pytest.approx(expected), m


def test_a_known_inverse_pair_is_reversible_and_a_wrong_one_is_not() -> None:
    x = _images()
    halve, double = (lambda images: images * 0.5), (lambda images: images * 2.0)  # exact in floating point
    assert reversibility(halve, double, x).abs().max() == 0
    invert = lambda images: 1.0 - images  # noqa: E731
    expected = (1.0 - 2.0 * x).abs().mul(255).flatten(1).mean(1).double()
    assert torch.allclose(reversibility(invert, lambda images: images, x), expected)
    assert reversibility(invert, invert, x).abs().max() < 1e-4  # its own inverse


def test_uint8_input_reaches_the_edits_as_unit_floats() -> None:
    x = (_images() * 255).round().to(torch.uint8)
    seen = []
    composition(lambda images: seen.append(images) or images, x, cycles=[1])
    assert seen[0].dtype == torch.float32 and torch.equal(seen[0], to_unit(x))


def test_mean_std_is_numpys_population_std_over_finite_values() -> None:
    values = torch.tensor([1.0, 2.0, 4.0, float("nan"), 7.0])
    mean, std = mean_std(values)
    finite = np.array([1.0, 2.0, 4.0, 7.0])
    assert mean == pytest.approx(finite.mean()) and std == pytest.approx(finite.std())
    assert all(v != v for v in mean_std(torch.tensor([float("nan")])))


def test_bad_cycles_and_shape_changing_edits_are_refused() -> None:
    x = _images(2)
    with pytest.raises(ValueError, match="positive"):
        composition(lambda images: images, x, cycles=[0, 1])
    with pytest.raises(ValueError, match="shape"):
        composition(lambda images: images[:, :, :14], x)
    with pytest.raises(ValueError, match="shape"):
        reversibility(lambda images: images, lambda images: images[:1], x)


# ------------------------------------------------------------------ the model glue (genvae.latent.soundness)


class DriftModel(nn.Module):
    """Unconditional: ``decode(encode(x)) = clamp(x + c, 0, 1)`` (latent = the image, decode adds ``c``)."""

    latent_dim = 784

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c
        self.anchor = nn.Parameter(torch.zeros(()))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return (z + self.c).clamp(0, 1).view(-1, 1, 28, 28)


class ConditionalFake(nn.Module):
    """Issue 21's conditional interface, with known answers: the decoder writes ``label / 10`` into pixel
    (0, 0) and ``thickness / 10`` into pixel (0, 1) of the encoded image; ``classify`` reads the label back."""

    condition_names = ("label", "thickness")

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def encode(self, x: torch.Tensor, condition: dict | None = None) -> torch.Tensor:
        assert condition is not None and set(condition) == set(self.condition_names)
        return x.flatten(1)

    def decode(self, z: torch.Tensor, condition: dict | None = None) -> torch.Tensor:
        assert condition is not None and set(condition) == set(self.condition_names)
        images = z.clone().view(-1, 1, 28, 28)
        images[:, 0, 0, 0] = condition["label"].float() / 10
        images[:, 0, 0, 1] = condition["thickness"].float() / 10
        return images

    @staticmethod
    def classify(images: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot((images[:, 0, 0, 0] * 10).round().long(), 10).float()

    @staticmethod
    def digits(n: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        g = torch.Generator().manual_seed(3)
        images = torch.rand(n, 1, 28, 28, generator=g) * 0.5
        condition = {"label": torch.arange(n) % 10, "thickness": 1 + torch.rand(n, generator=g) * 4}
        images[:, 0, 0, 0] = condition["label"].float() / 10
        images[:, 0, 0, 1] = condition["thickness"] / 10
        return images, condition


def test_the_null_edit_of_a_drifting_model_drifts_by_the_known_amount() -> None:
    x = torch.zeros(5, 1, 28, 28)
    results = soundness_evaluation(DriftModel(0.02), x, batch_size=2)  # batches of 2: the rows line up
    assert results["composition/1"] == pytest.approx(255 * 0.02)
    assert results["composition/10"] == pytest.approx(255 * 0.2)
    assert results["composition/1_std"] == pytest.approx(0, abs=1e-9)
    assert not any(key.startswith("reversibility") for key in results)  # no control, no condition


def test_latent_attribute_edits_of_an_exact_model_are_reversible() -> None:
    control, images = exact_control(tolerance=1e-5, rounds=10)
    results = soundness_evaluation(
        control.model,
        images[:40],
        control=control,
        attributes=["thickness", "slant"],
        reversibility_images=20,
    )
    assert results["composition/10"] == pytest.approx(0, abs=1e-4)
    assert {"reversibility/thickness", "reversibility/slant", "reversibility"} <= set(results)
    assert "reversibility/length" not in results
    # the image stores the latent: an edit and its way back return within the closed loop's tolerance
    assert results["reversibility"] < 0.05


def test_a_conditional_model_is_edited_through_its_condition() -> None:
    model = ConditionalFake()
    images, condition = ConditionalFake.digits(30)
    results = soundness_evaluation(
        model, images, condition, reversibility_images=20, classify=ConditionalFake.classify
    )
    assert results["composition/1"] == pytest.approx(0, abs=1e-4)
    assert results["composition/10"] == pytest.approx(0, abs=1e-4)
    for name in ("label", "thickness"):
        assert results[f"reversibility/{name}"] == pytest.approx(0, abs=1e-4)
    assert results["effectiveness/label"] == 1.0  # every do(label = l') decodes as l'
    edit = condition_edit(model, condition, {**condition, "label": (condition["label"] + 1) % 10})
    assert (ConditionalFake.classify(edit(images)).argmax(1) == (condition["label"] + 1) % 10).all()
    with pytest.raises(ValueError, match="no condition for"):
        null_edit(model, None)(images)


def test_a_label_conditional_vae_is_also_edited_through_its_latent() -> None:
    """A real label-conditional VAE: the label through the condition, the attributes through a control
    calibrated and applied under each digit's own label."""
    from genvae.data.attributes import morpho_attributes
    from genvae.latent.control import AttributeControl
    from genvae.models import VAE

    torch.manual_seed(0)
    model = VAE(latent_dim=4, backbone="mlp", backbone_kwargs={"hidden": [32]}, condition=["label"]).eval()
    images = torch.zeros(24, 1, 28, 28)
    for i in range(24):
        images[i, 0, 6:22, 10 + i % 5 : 13 + i % 5 + i % 3] = 1.0  # bars of several widths and places
    condition = {"label": torch.arange(24) % 10}
    control = AttributeControl.fit(
        model, images, morpho_attributes(images), ["thickness"], rounds=1, condition=condition
    )
    results = soundness_evaluation(model, images, condition, control, ["thickness"], reversibility_images=6)
    assert {"reversibility/label", "reversibility/thickness", "reversibility"} <= set(results)
    assert all(math.isfinite(results[key]) for key in ("reversibility/label", "composition/10"))

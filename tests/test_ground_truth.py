"""Edits scored against the true counterfactuals of the causal Morpho-MNIST (genvae.latent.ground_truth)."""

from __future__ import annotations

import pytest
import torch

from genvae.data.causal import causal_images, true_counterfactuals
from genvae.latent.ground_truth import ground_truth_evaluation, intervention_thickness


def _digits() -> tuple[torch.Tensor, ...]:
    sources = torch.zeros(6, 1, 28, 28, dtype=torch.uint8)
    for i in range(6):
        sources[i, 0, 6 + i : 22, 10 + i % 3 : 14 + i % 3] = 255  # vertical bars of stroke width 4
    thickness = torch.tensor([1.8, 2.2, 2.6, 3.0, 3.4, 2.0])
    intensity = torch.tensor([100.0, 140.0, 180.0, 200.0, 240.0, 120.0])
    return sources, thickness, intensity, causal_images(sources, thickness, intensity)


def test_the_oracle_edit_scores_zero_and_doing_nothing_scores_the_gap() -> None:
    sources, thickness, intensity, images = _digits()
    new_thickness = intervention_thickness(len(images), seed=1)
    assert torch.equal(new_thickness, intervention_thickness(len(images), seed=1))

    def oracle(x: torch.Tensor, request: dict) -> torch.Tensor:
        assert set(request) == {"thickness", "intensity"} and torch.equal(request["thickness"], new_thickness)
        return true_counterfactuals(sources, thickness, intensity, request["thickness"])[0].float() / 255

    def nothing(x: torch.Tensor, request: dict) -> torch.Tensor:
        return x

    oracle_scores = ground_truth_evaluation(
        oracle, images, sources, thickness, intensity, new_thickness, modes=("thickness_intensity",)
    )
    assert oracle_scores["thickness_intensity/mae"] == pytest.approx(0.0, abs=1e-4)
    assert oracle_scores["thickness_intensity/thickness_error"] == oracle_scores["truth/thickness_error"]
    assert oracle_scores["thickness_intensity/intensity_error"] < 1.0  # set_intensity hits its median
    idle = ground_truth_evaluation(nothing, images, sources, thickness, intensity, new_thickness)
    assert idle["thickness/mae"] == pytest.approx(idle["unedited/mae"]) and idle["unedited/mae"] > 5
    assert idle["thickness/thickness_error"] > oracle_scores["thickness_intensity/thickness_error"]


def test_unknown_modes_are_refused() -> None:
    sources, thickness, intensity, images = _digits()
    with pytest.raises(ValueError, match="unknown modes"):
        ground_truth_evaluation(
            lambda x, r: x, images, sources, thickness, intensity, thickness, modes=("slant",)
        )

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


def test_genvae_test_scores_edits_against_the_truth(tiny_mnist, tmp_path) -> None:  # noqa: ANN001
    """An AR-VAE of the causal dataset (thickness, intensity regularized) through `genvae test` with the
    ground-truth and soundness callbacks: every key of both modes, and both attributes' reversibility."""
    import json

    import yaml

    from .conftest import REPO
    from .test_cli import checkpoint_of, data_args, run_cli

    checkpoint = checkpoint_of("arvae_causal", tiny_mnist, tmp_path)
    overlay = tmp_path / "truth.yaml"
    callback = {
        "class_path": "genvae.callbacks.GroundTruthCounterfactuals",
        "init_args": {"num_images": 8, "calibration_images": 16, "rounds": 1},
    }
    # soundness of the regularized dims, intensity included (the control measures seven attributes)
    soundness = {
        "class_path": "genvae.callbacks.CounterfactualSoundness",
        "init_args": {"num_images": 8, "reversibility_images": 4, "calibration_images": 16, "rounds": 1},
    }
    overlay.write_text(yaml.safe_dump({"trainer": {"callbacks": [callback, soundness]}}))
    config = str(REPO / "experiments" / "arvae_causal.yaml")
    args = ["test", "--config", config, "--config", str(overlay), "--ckpt_path", str(checkpoint)]
    run_cli(
        [*args, "--trainer.accelerator", "cpu", "--trainer.logger", "false", *data_args(tiny_mnist)], tmp_path
    )
    metrics = json.loads(checkpoint.with_name(f"{checkpoint.stem}.metrics.json").read_text())
    for mode in ("thickness", "thickness_intensity", "unedited"):
        for key in ("mae", "mae_std", "thickness_error", "intensity_error"):
            assert f"test/ground_truth/{mode}/{key}" in metrics, (mode, key)
    assert 0 < metrics["test/ground_truth/unedited/mae"] < 255
    assert {"test/soundness/reversibility/thickness", "test/soundness/reversibility/intensity"} <= set(
        metrics
    )
    assert metrics["test/ground_truth/truth/thickness_error"] < 1.0

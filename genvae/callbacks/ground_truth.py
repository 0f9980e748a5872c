"""Ground-truth counterfactual evaluation at test end, on the causal Morpho-MNIST: thin glue around
:func:`genvae.latent.ground_truth.ground_truth_evaluation`.

The model's :class:`~genvae.latent.control.AttributeControl` is calibrated for thickness (and intensity, where
the data has it) on the first ``calibration_images`` training digits, then the first ``num_images`` test
digits are edited to ``do(thickness = t')`` with ``t'`` drawn from the causal model's thickness marginal
(seeded) and compared with the true counterfactuals. In YAML (the dataset must be
``morpho_thickness_intensity``)::

    trainer:
      callbacks:
        - class_path: genvae.callbacks.GroundTruthCounterfactuals
          init_args: {num_images: 1000}

Logged as ``test/ground_truth/<key>`` (global rank 0 computes them): ``thickness/mae``,
``thickness/mae_std``, ``thickness/thickness_error``, ``thickness/intensity_error``, the same for
``thickness_intensity`` (the edit is also told the mechanism's intensity), ``unedited/...`` and
``truth/thickness_error`` (see :mod:`genvae.latent.ground_truth`).
"""

from __future__ import annotations

import warnings

import lightning as L
from torch import Tensor

from genvae.data.attributes import ALL_ATTRIBUTE_NAMES, all_attributes
from genvae.errors import ConfigError
from genvae.latent.control import AttributeControl, ExtrapolationWarning, check_flat_latent
from genvae.latent.ground_truth import MODES, ground_truth_evaluation, intervention_thickness
from genvae.models.conditioning import batch_condition

__all__ = ["GroundTruthCounterfactuals"]

PREFIX = "test/ground_truth"
_NEEDED = ("image", "source_image", "thickness", "intensity", "attributes")


class GroundTruthCounterfactuals(L.Callback):
    """Edits of thickness scored against the true counterfactuals of the causal Morpho-MNIST.

    Args:
        num_images: test digits edited (the first of the test set).
        calibration_images: training digits the control is calibrated on.
        seed: seed of the interventions ``t'``.
        rounds: closed-loop refinement rounds per edit.
    """

    def __init__(
        self, num_images: int = 1000, calibration_images: int = 1000, seed: int = 0, rounds: int = 6
    ) -> None:
        if num_images < 1 or calibration_images < 3 or rounds < 0:
            raise ConfigError(
                "GroundTruthCounterfactuals: num_images must be >= 1, calibration_images >= 3, rounds >= 0"
            )
        self.num_images = num_images
        self.calibration_images = calibration_images
        self.seed = seed
        self.rounds = rounds

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "test":
            return
        check_flat_latent(pl_module, "GroundTruthCounterfactuals")
        splits = getattr(getattr(trainer, "datamodule", None), "splits", None)
        if splits is not None and splits and not all(k in splits.get("test", {}) for k in _NEEDED):
            raise ConfigError(
                "GroundTruthCounterfactuals: needs data.init_args.dataset: morpho_thickness_intensity "
                "with attributes: true (the test split carries no source digits and targets)"
            )

    @staticmethod
    def _split(trainer: L.Trainer, name: str, n: int) -> dict[str, Tensor]:
        split = trainer.datamodule.splits[name]
        return {key: value[:n] for key, value in split.items()}

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        device = pl_module.device
        train = self._split(trainer, "train", self.calibration_images)
        test = {k: v.to(device) for k, v in self._split(trainer, "test", self.num_images).items()}
        names = ["thickness", "intensity"]
        calibration = train["image"].to(device).float().div(255.0)
        control = AttributeControl.fit(
            pl_module,
            calibration,
            train["attributes"].to(device),
            names,
            condition=batch_condition(pl_module, {k: v.to(device) for k, v in train.items()}),
            measure=all_attributes,
            attribute_names=ALL_ATTRIBUTE_NAMES,
            rounds=self.rounds,
        )
        condition = batch_condition(pl_module, test)
        # a model whose thickness and intensity share one latent dim cannot be asked for both at once
        dims = {name: control.calibrations[name].dim for name in names}
        modes = tuple(MODES) if dims["thickness"] != dims["intensity"] else ("thickness",)

        def edit(images: Tensor, request: dict[str, Tensor]) -> Tensor:
            return control.apply(images, absolute=request, condition=condition).images

        new_thickness = intervention_thickness(len(test["image"]), self.seed).to(device)
        with (
            warnings.catch_warnings()
        ):  # interventions from the marginal's tails extrapolate: scored as they are
            warnings.simplefilter("ignore", ExtrapolationWarning)
            results = ground_truth_evaluation(
                edit,
                test["image"],
                test["source_image"],
                test["thickness"],
                test["intensity"],
                new_thickness,
                modes=modes,
                invert=bool(getattr(trainer.datamodule, "causal_invert", False)),
            )
        for key, value in results.items():
            pl_module.log(f"{PREFIX}/{key}", value, sync_dist=False)

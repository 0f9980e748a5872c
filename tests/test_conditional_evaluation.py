"""Evaluation of conditional generation (genvae.metrics.conditional, genvae.latent.generation)."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from genvae.callbacks import ConditionalGeneration
from genvae.callbacks.evaluation import load_classifier
from genvae.data import MNISTDataModule
from genvae.data.attributes import ATTRIBUTE_NAMES, morpho_attributes
from genvae.errors import ConfigError
from genvae.latent.generation import balanced_condition, conditional_generation_evaluation
from genvae.metrics.conditional import attribute_request_errors, balanced_indices, label_accuracy

from . import test_evaluation_cli
from .conftest import fake_digits
from .test_evaluation_cli import CLASSIFIER

workdir = test_evaluation_cli.workdir  # the fixture: a working directory with a trained classifier


def test_label_accuracy_per_class_and_overall() -> None:
    requested = torch.tensor([0, 0, 1, 1, 1, 3])
    predicted = torch.tensor([0, 2, 1, 1, 0, 3])
    results = label_accuracy(predicted, requested, num_classes=4)
    assert results["accuracy"] == pytest.approx(4 / 6)
    assert results["accuracy/0"] == 0.5 and results["accuracy/1"] == pytest.approx(2 / 3)
    assert results["accuracy/3"] == 1.0 and "accuracy/2" not in results  # class 2 never requested
    with pytest.raises(ValueError):
        label_accuracy(predicted[:2], requested)


def test_attribute_errors_are_medians_in_stds_without_blank_digits() -> None:
    requested = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]])
    measured = requested + torch.tensor([[0.2, 0.1], [-0.4, 0.1], [0.6, -0.3], [float("nan"), 0.5]])
    results = attribute_request_errors(measured, requested, torch.tensor([2.0, 0.1]), ["thickness", "slant"])
    assert results["attribute_error/thickness"] == pytest.approx(0.2)  # median of 0.1, 0.2, 0.3
    assert results["attribute_error/slant"] == pytest.approx(1.0)  # lower median of 1, 1, 3, 5 (torch)


def test_balanced_indices_take_each_class_in_turn_and_cycle() -> None:
    labels = torch.tensor([1, 0, 1, 2, 0, 1])
    assert balanced_indices(labels, 2, num_classes=3).tolist() == [1, 4, 0, 2, 3, 3]
    with pytest.raises(ValueError, match="class 3"):
        balanced_indices(labels, 1, num_classes=4)


class BankSampler(nn.Module):
    """Issue 21's conditional interface with known answers: ``sample`` returns the bank digit of the requested
    label whose thickness is nearest the requested one (the requests come from the bank itself)."""

    condition_names = ("label", "thickness")

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, thickness: torch.Tensor) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.images, self.labels, self.thickness = images, labels, thickness

    def sample(self, n: int, condition: dict[str, torch.Tensor]) -> torch.Tensor:
        assert set(condition) == set(self.condition_names) and len(condition["label"]) == n
        other = self.labels.view(1, -1) != condition["label"].view(-1, 1)
        distance = (self.thickness.view(1, -1) - condition["thickness"].view(-1, 1)).abs()
        return self.images[distance.masked_fill(other, float("inf")).argmin(dim=1)]


@functools.cache
def _bank(n: int = 100) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images, _ = fake_digits(n, seed=5)
    images = images.float().div(255).unsqueeze(1)
    labels = torch.arange(n) % 10
    images[:, 0, 0, :10] = 0
    images[torch.arange(n), 0, 0, labels] = 1.0  # the label, readable by a fake classifier
    return images, labels, morpho_attributes(images)


def test_a_model_that_draws_real_digits_of_the_requested_class_scores_perfectly() -> None:
    images, labels, attributes = _bank()
    thickness = attributes[:, ATTRIBUTE_NAMES.index("thickness")]
    model = BankSampler(images, labels, thickness)

    def classify(x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, 0, :10]

    def features(x: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(x, 7).flatten(1)  # 16 features

    generated, condition, results = conditional_generation_evaluation(
        model, labels, attributes, ATTRIBUTE_NAMES, 10, classify, features, images
    )
    assert generated.shape == images.shape
    assert condition["label"].tolist() == sorted(labels.tolist())  # 10 requests per class, class by class
    assert results["accuracy"] == 1.0 and all(results[f"accuracy/{c}"] == 1.0 for c in range(10))
    assert results["attribute_error/thickness"] == pytest.approx(0, abs=1e-6)
    assert "attribute_error/slant" not in results  # not requested
    # ten per class of a bank with ten per class: the generated set is the test set reordered
    assert results["fid"] == pytest.approx(0, abs=1e-2)  # float32 matrix square root
    assert results["precision"] == 1.0 and results["recall"] == 1.0
    assert results["fmd"] == pytest.approx(0, abs=1e-2) and results["undefined/generated"] == 0


def test_a_model_that_ignores_the_label_is_caught() -> None:
    images, labels, attributes = _bank()
    model = BankSampler(images, labels, attributes[:, 0])
    wrong = BankSampler(images, (labels + 1) % 10, attributes[:, 0])  # draws a digit of the next class
    _, _, results = conditional_generation_evaluation(
        wrong, labels, attributes, per_class=10, classify=lambda x: x[:, 0, 0, :10]
    )
    assert results["accuracy"] == 0.0
    condition, index = balanced_condition(model, labels, attributes, ATTRIBUTE_NAMES, 3)
    assert torch.equal(condition["thickness"], attributes[index, 0])
    with pytest.raises(ValueError, match="not conditioned on the label"):
        balanced_condition(nn.Linear(1, 1), labels, attributes, ATTRIBUTE_NAMES, 3)


# ------------------------------------------------------------------ the callback, in a Lightning test run


class DigitSampler(L.LightningModule):
    """A label-conditional "model" (issue 21's interface) whose ``sample`` returns test digits of the requested
    class in the order :func:`balanced_indices` picks them: the classifier's accuracy on exactly those
    digits is the known answer."""

    condition_names = ("label",)

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.bank, self.bank_labels, self.served = images, labels, {}

    def test_step(self, batch: dict, batch_idx: int) -> None:
        pass

    def sample(self, n: int, condition: dict[str, torch.Tensor]) -> torch.Tensor:
        drawn = []
        for label in condition["label"].tolist():
            members = (self.bank_labels == label).nonzero().squeeze(1)
            count = self.served.get(label, 0)
            self.served[label] = count + 1
            drawn.append(self.bank[members[count % len(members)]])
        return torch.stack(drawn).float().div(255)


def tiny_test_split(root: Path) -> tuple[MNISTDataModule, dict[str, torch.Tensor]]:
    """The datamodule of the tiny MNIST, set up for test, and its test tensors."""
    data = MNISTDataModule(root=str(root), batch_size=32, eval_batch_size=32)
    data.prepare_data()
    data.setup("test")
    return data, data.splits["test"]


def test_the_callback_logs_the_classifier_accuracy_of_the_requested_digits(
    workdir: Path, tiny_mnist: Path, tmp_path: Path
) -> None:
    data, test = tiny_test_split(tiny_mnist)
    model = DigitSampler(test["image"], test["label"])
    callback = ConditionalGeneration(str(workdir / CLASSIFIER), samples_per_class=4, k=2, grid_columns=2)
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        callbacks=[callback],
        default_root_dir=tmp_path,
        enable_progress_bar=False,
    )
    trainer.test(model, datamodule=data)
    logged = {key: float(value) for key, value in trainer.callback_metrics.items()}
    classifier = load_classifier(workdir / CLASSIFIER)
    index = balanced_indices(test["label"], 4)
    with torch.no_grad():
        predicted = classifier(test["image"][index].float().div(255)).argmax(1)
    expected = label_accuracy(predicted, test["label"][index])
    for key, value in expected.items():
        assert logged[f"test/conditional/{key}"] == pytest.approx(value), key
    assert {f"test/conditional/{key}" for key in ("fid", "precision", "recall", "fmd")} <= set(logged)
    assert (tmp_path / "figures" / "test" / "conditional" / "samples").is_dir()


class GuidedDigitSampler(DigitSampler):
    """A DigitSampler with a classifier-free guidance scale (as ``VQPrior.guidance``): records the scale each
    ``sample`` call saw."""

    guidance = 2.0

    def sample(self, n: int, condition: dict[str, torch.Tensor]) -> torch.Tensor:
        self.seen = [*getattr(self, "seen", []), self.guidance]
        return super().sample(n, condition)


def test_a_guided_model_is_scored_without_and_with_its_guidance(
    workdir: Path, tiny_mnist: Path, tmp_path: Path
) -> None:
    data, test = tiny_test_split(tiny_mnist)
    model = GuidedDigitSampler(test["image"], test["label"])
    callback = ConditionalGeneration(str(workdir / CLASSIFIER), samples_per_class=4, k=2, grid_columns=0)
    trainer = L.Trainer(accelerator="cpu", logger=False, callbacks=[callback], enable_progress_bar=False)
    trainer.test(model, datamodule=data)
    logged = {key: float(value) for key, value in trainer.callback_metrics.items()}
    assert model.seen == [1.0, 2.0] and model.guidance == 2.0  # unguided pass, guided pass, restored
    assert logged["test/conditional/guided/guidance"] == 2.0
    for key in ("accuracy", "fid", "precision", "recall", "fmd"):
        assert f"test/conditional/{key}" in logged and f"test/conditional/guided/{key}" in logged


def test_the_callback_skips_an_unconditional_model_unless_required(workdir: Path) -> None:
    model = nn.Linear(1, 1)
    callback = ConditionalGeneration(str(workdir / CLASSIFIER))
    callback.setup(None, model, "test")  # type: ignore[arg-type]
    assert not callback.active and callback.classifier is None
    with pytest.raises(ConfigError, match="not a label-conditional model"):
        ConditionalGeneration(str(workdir / CLASSIFIER), required=True).setup(None, model, "test")  # type: ignore[arg-type]

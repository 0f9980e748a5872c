"""Class latents (genvae.latent.class_latents): the moment-matched aggregate posterior of each class, its
draws, its conditional draws and the label edits that move a latent between classes, on known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from genvae.errors import ConfigError
from genvae.latent.class_latents import ClassLatents, edit_reference, label_edit
from genvae.latent.soundness import soundness_evaluation

D = 3


class LatentPixels(nn.Module):
    """A label-conditional "VAE" whose posterior mean is written in the image: pixels 0..D-1 of the first
    row hold z, pixel D the label / 10; the posterior variance is ``variance`` everywhere. Decoding writes z
    and the label back, so encode / decode are exact inverses and the label is readable (:meth:`classify`)."""

    condition_names = ("label",)
    latent_dim = D

    def __init__(self, variance: float = 0.01) -> None:
        super().__init__()
        self.variance = variance
        self.anchor = nn.Parameter(torch.zeros(()))

    def posterior(self, x: torch.Tensor, condition: dict) -> tuple[torch.Tensor, torch.Tensor]:
        assert set(condition) == {"label"} and len(condition["label"]) == len(x)
        mu = x[:, 0, 0, :D] * 10 - 5
        return mu, torch.full_like(mu, float(np.log(self.variance)))

    def encode(self, x: torch.Tensor, condition: dict) -> torch.Tensor:
        return self.posterior(x, condition)[0]

    def decode(self, z: torch.Tensor, condition: dict) -> torch.Tensor:
        images = torch.zeros(len(z), 1, 28, 28)
        images[:, 0, 0, :D] = (z + 5) / 10
        images[:, 0, 0, D] = condition["label"].float() / 10
        return images

    @staticmethod
    def classify(images: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot((images[:, 0, 0, D] * 10).round().long(), 10).float()


def _digits(n_per_class: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images of LatentPixels latents drawn per class from N(c / 4 * [1, -1, 0.5], A_c A_c^T)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(10).repeat_interleave(n_per_class)
    centres = torch.arange(10).float().unsqueeze(1) / 4 * torch.tensor([1.0, -1.0, 0.5])
    mixing = torch.randn(10, D, D, generator=g) * 0.4 + torch.eye(D) * 0.5
    z = centres[labels] + (mixing[labels] @ torch.randn(len(labels), D, 1, generator=g)).squeeze(-1)
    images = LatentPixels().decode(z, {"label": labels})
    return images, labels, z


def test_fit_is_the_class_mean_and_the_mixture_covariance() -> None:
    model = LatentPixels(variance=0.01)
    images, labels, _ = _digits()
    mu = model.encode(images, {"label": labels}).double().numpy()
    fitted = ClassLatents.fit(model, images, labels, jitter=0.0)
    for c in (0, 4, 9):
        rows = mu[labels.numpy() == c]
        expected = np.cov(rows.T, bias=True) + 0.01 * np.eye(D)  # Cov(mu) + E[sigma^2]
        covariance = (fitted.scale_tril[c] @ fitted.scale_tril[c].T).double().numpy()
        np.testing.assert_allclose(fitted.mean[c].numpy(), rows.mean(0), atol=1e-5)
        np.testing.assert_allclose(covariance, expected, atol=1e-5)
    assert fitted.count.tolist() == [400] * 10


def test_draws_have_the_class_moments() -> None:
    fitted = ClassLatents.fit(LatentPixels(), *_digits()[:2])
    torch.manual_seed(0)
    z = fitted.sample(torch.full((200_000,), 6)).double()
    covariance = (fitted.scale_tril[6] @ fitted.scale_tril[6].T).double()
    assert torch.allclose(z.mean(0), fitted.mean[6].double(), atol=0.02)
    assert torch.allclose(torch.cov(z.T), covariance, rtol=0.02, atol=0.02)


def test_transport_moves_one_class_onto_another_and_back() -> None:
    fitted = ClassLatents.fit(LatentPixels(), *_digits()[:2])
    torch.manual_seed(1)
    z = fitted.sample(torch.full((200_000,), 2))
    source, target = torch.full((len(z),), 2), torch.full((len(z),), 7)
    moved = fitted.transport(z, source, target)
    covariance = (fitted.scale_tril[7] @ fitted.scale_tril[7].T).double()
    assert torch.allclose(moved.double().mean(0), fitted.mean[7].double(), atol=0.02)
    assert torch.allclose(torch.cov(moved.double().T), covariance, rtol=0.02, atol=0.02)
    assert torch.allclose(fitted.transport(moved, target, source), z, atol=1e-4)  # the inverse map
    assert torch.allclose(fitted.transport(z, source, source), z, atol=1e-5)  # same class: identity
    kept = fitted.transport(z[:10], source[:10], target[:10], keep_dims=[1])
    assert torch.equal(kept[:, 1], z[:10, 1]) and torch.equal(kept[:, [0, 2]], moved[:10, [0, 2]])


def test_conditional_draws_follow_the_gaussian_conditional() -> None:
    """Bivariate known answer: corr 0.8, unit variances, z0 given 1 -> z1 ~ N(0.8, 0.36)."""
    covariance = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    latents = ClassLatents(
        torch.zeros(2, 2), torch.linalg.cholesky(covariance).expand(2, 2, 2).clone(), torch.tensor([9, 9])
    )
    torch.manual_seed(2)
    labels = torch.ones(200_000, dtype=torch.long)
    z = latents.sample_given(labels, [0], torch.ones(len(labels), 1))
    assert torch.equal(z[:, 0], torch.ones(len(labels)))
    assert float(z[:, 1].mean()) == pytest.approx(0.8, abs=0.01)
    assert float(z[:, 1].var()) == pytest.approx(0.36, abs=0.01)


def test_a_label_edit_changes_the_class_and_reverses_exactly() -> None:
    model = LatentPixels()
    images, labels, _ = _digits()
    fitted = ClassLatents.fit(model, images, labels)
    new = (labels[:50] + 3) % 10
    reference = edit_reference(model, images[:50], {"label": labels[:50]})
    edited = label_edit(model, fitted, reference, new)
    assert torch.equal(LatentPixels.classify(edited.images).argmax(1), new)
    expected = fitted.transport(reference.latents, labels[:50], new)
    assert torch.allclose(edited.latents, expected)
    results = soundness_evaluation(
        model,
        images[:50],
        {"label": labels[:50]},
        classify=LatentPixels.classify,
        class_latents=fitted,
        reversibility_images=20,
        label_edit_images=40,
    )
    assert results["effectiveness/label"] == 1.0
    assert results["reversibility/label"] == pytest.approx(0, abs=0.05)  # 0-255 scale: float32 round trip


def test_class_latents_need_a_label_condition_and_every_class() -> None:
    images, labels, _ = _digits(3)
    unconditional = LatentPixels()
    unconditional.condition_names = ()
    with pytest.raises(ConfigError, match="not conditioned on the label"):
        ClassLatents.fit(unconditional, images, labels)
    keep = labels != 4
    with pytest.raises(ConfigError, match="every class 0-9 needs >= 2 digits"):
        ClassLatents.fit(LatentPixels(), images[keep], labels[keep])

"""Loss math against closed forms and torch.distributions."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from genvae.models import VAE
from genvae.models.losses import (
    bernoulli_nll,
    gaussian_kl,
    gaussian_nll,
    linear_ramp,
    reparameterize,
    squared_error,
)


def test_gaussian_kl_matches_torch_distributions() -> None:
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 7), torch.randn(5, 7)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), expected)


def test_gaussian_kl_hand_values() -> None:
    # standard normal posterior: zero; mu = 1, var = 1 in one dim: 0.5; var = e in one dim: 0.5 * (e - 2)
    assert gaussian_kl(torch.zeros(1, 3), torch.zeros(1, 3)).item() == 0.0
    assert gaussian_kl(torch.tensor([[1.0]]), torch.tensor([[0.0]])).item() == pytest.approx(0.5)
    assert gaussian_kl(torch.tensor([[0.0]]), torch.tensor([[1.0]])).item() == pytest.approx(
        0.5 * (math.e - 2)
    )


def test_bernoulli_nll_matches_log_prob() -> None:
    torch.manual_seed(1)
    logits = torch.randn(4, 1, 5, 5)
    x = torch.randint(0, 2, (4, 1, 5, 5)).float()
    expected = -Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(bernoulli_nll(logits, x), expected)


def test_gaussian_nll_matches_log_prob() -> None:
    torch.manual_seed(2)
    mean, x = torch.rand(3, 1, 4, 4), torch.rand(3, 1, 4, 4)
    expected = -Normal(mean, 0.3).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(gaussian_nll(mean, x, 0.3), expected)
    torch.testing.assert_close(squared_error(mean, x), ((x - mean) ** 2).flatten(1).sum(1))


def test_reparameterize_moments_and_gradient() -> None:
    torch.manual_seed(3)
    mu = torch.full((200_000, 1), 2.0, requires_grad=True)
    logvar = torch.full((200_000, 1), math.log(0.25), requires_grad=True)
    z = reparameterize(mu, logvar)
    assert z.mean().item() == pytest.approx(2.0, abs=0.01)
    assert z.std().item() == pytest.approx(0.5, abs=0.01)
    z.sum().backward()
    assert torch.all(mu.grad == 1.0)
    assert logvar.grad is not None and logvar.grad.abs().sum() > 0


def test_linear_ramp() -> None:
    assert linear_ramp(0, 100, 4.0) == 0.0
    assert linear_ramp(50, 100, 4.0) == 2.0
    assert linear_ramp(500, 100, 4.0) == 4.0
    assert linear_ramp(0, 0, 4.0) == 4.0


def _fixed_batch() -> dict[str, torch.Tensor]:
    torch.manual_seed(4)
    return {"image": (torch.rand(8, 1, 28, 28) > 0.5).float(), "label": torch.zeros(8, dtype=torch.long)}


def test_vae_elbo_is_minus_recon_minus_kl_and_loss_uses_beta() -> None:
    model = VAE(latent_dim=3, beta=4.0, backbone="mlp", backbone_kwargs={"hidden": [16]})
    batch = _fixed_batch()
    torch.manual_seed(5)
    terms = model.losses(batch)
    torch.testing.assert_close(terms["elbo"], -(terms["recon"] + terms["kl"]))
    torch.testing.assert_close(terms["loss"], terms["recon"] + 4.0 * terms["kl"])


def test_vae_recon_term_is_the_decoder_nll_at_the_sampled_z() -> None:
    model = VAE(latent_dim=3, backbone="mlp", backbone_kwargs={"hidden": [16]})
    batch = _fixed_batch()
    x = batch["image"]
    mu, logvar = model.posterior(x)
    torch.manual_seed(6)
    z = reparameterize(mu, logvar)
    expected_nll = -Bernoulli(logits=model.decode_logits(z)).log_prob(x).flatten(1).sum(1).mean()
    torch.manual_seed(6)
    terms = model.losses(batch)
    torch.testing.assert_close(terms["recon"], expected_nll)


def test_vae_kl_warmup_and_capacity() -> None:
    batch = _fixed_batch()
    warm = VAE(latent_dim=3, beta=2.0, kl_warmup_steps=100, backbone="mlp", backbone_kwargs={"hidden": [16]})
    terms = warm.losses(batch)  # global_step is 0 without a trainer: beta_t = 0
    torch.testing.assert_close(terms["loss"], terms["recon"])
    cap = VAE(latent_dim=3, beta=2.0, capacity=5.0, backbone="mlp", backbone_kwargs={"hidden": [16]})
    terms = cap.losses(batch)  # C_0 = capacity when capacity_steps = 0
    torch.testing.assert_close(terms["loss"], terms["recon"] + 2.0 * (terms["kl"] - 5.0).abs())

"""Variational autoencoder with a beta-weighted KL (beta-VAE), warm-up and capacity annealing."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from genvae.errors import ConfigError
from genvae.models.base import Batch, VectorLatentModel, batch_condition
from genvae.models.conditioning import Condition
from genvae.models.losses import bernoulli_nll, gaussian_kl, gaussian_nll, linear_ramp, reparameterize


class VAE(VectorLatentModel):
    """Gaussian-posterior VAE: loss = recon NLL + beta_t * KL, or recon NLL + beta * |KL - C_t| with capacity.

    Logged terms: ``loss``, ``recon`` (decoder negative log-likelihood, nats per image), ``kl`` (nats per
    image), ``elbo`` (= -(recon + kl), the true beta = 1 bound whatever beta is), ``beta`` (current weight),
    and ``mse``.

    Args:
        latent_dim: size of the latent vector.
        beta: weight of the KL term (1 = VAE, > 1 = beta-VAE).
        likelihood: decoder distribution, ``bernoulli`` (logits) or ``gaussian`` (mean = sigmoid output).
        decoder_std: fixed standard deviation of the Gaussian decoder.
        kl_warmup_steps: beta rises linearly from 0 over this many optimizer steps (0 = off).
        capacity: target KL in nats (Burgess et al. 2018); when set the loss is recon + beta * |KL - C_t|.
        capacity_steps: C_t rises linearly from 0 to ``capacity`` over this many steps.
        **kwargs: the :class:`~genvae.models.base.VectorLatentModel` arguments (``condition`` makes it a
            conditional VAE, Sohn et al. 2015) and the ``GenerativeModel`` ones (``backbone``, ``lr``, ...).
    """

    def __init__(
        self,
        latent_dim: int = 16,
        beta: float = 1.0,
        likelihood: Literal["bernoulli", "gaussian"] = "bernoulli",
        decoder_std: float = 0.1,
        kl_warmup_steps: int = 0,
        capacity: float | None = None,
        capacity_steps: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(latent_dim=latent_dim, encoder_outputs=2, **kwargs)
        if beta < 0 or decoder_std <= 0 or kl_warmup_steps < 0 or capacity_steps < 0:
            raise ConfigError("model: beta, kl_warmup_steps and capacity_steps must be >= 0, decoder_std > 0")
        self.beta = beta
        self.likelihood = likelihood
        self.decoder_std = decoder_std
        self.kl_warmup_steps = kl_warmup_steps
        self.capacity = capacity
        self.capacity_steps = capacity_steps

    def posterior(self, x: Tensor, condition: Condition | None = None) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z | x) (q(z | x, y) under a condition y), in float32."""
        mu, logvar = self.encoder_output(x, condition).float().chunk(2, dim=-1)
        return mu, logvar.clamp(-30.0, 20.0)

    def encode(self, x: Tensor, condition: Condition | None = None) -> Tensor:
        return self.posterior(x, condition)[0]

    def encode_sample(self, x: Tensor, condition: Condition | None = None) -> Tensor:
        """One reparameterised draw of q(z | x) (the latent the AR-VAE reference evaluates)."""
        return reparameterize(*self.posterior(x, condition))

    def reconstruction_nll(self, logits: Tensor, x: Tensor) -> Tensor:
        """-log p(x | z) per example."""
        if self.likelihood == "bernoulli":
            return bernoulli_nll(logits, x)
        return gaussian_nll(torch.sigmoid(logits), x, self.decoder_std)

    @torch.no_grad()
    def sample(self, n: int, condition: Condition | None = None) -> Tensor:
        """Images decoded from ``n`` draws of the N(0, I) prior (under ``condition``, tensors ``[n]``, for a
        conditional model: p(x | y) = E_z p(x | z, y))."""
        return self.decode(torch.randn(n, self.latent_dim, device=self.device), condition)

    @torch.no_grad()
    def iwae_nll(
        self,
        x: Tensor,
        num_samples: int = 100,
        decode_batch: int = 4096,
        condition: Condition | None = None,
    ) -> Tensor:
        """Importance-weighted estimate of -log p(x) per image, in nats (Burda et al. 2016).

        ``-log (1/K) sum_k p(x | z_k) p(z_k) / q(z_k | x)`` with ``z_k ~ q(z | x)``, ``K = num_samples``:
        an upper bound on the NLL that tightens as K grows; at K = 1 it is the negative single-sample
        ELBO. Latents are decoded at most ``decode_batch`` at a time (at least one per image); the
        log-weights are combined with one logsumexp. A conditional model bounds -log p(x | y) of the images'
        ``condition``.
        """
        if num_samples < 1 or decode_batch < 1:
            raise ConfigError("iwae_nll: num_samples and decode_batch must be >= 1")
        x = x.float()
        mu, logvar = self.posterior(x, condition)
        std = (0.5 * logvar).exp()
        per_chunk = max(1, decode_batch // len(x))
        log_2pi = math.log(2 * math.pi)
        log_weights = []
        for start in range(0, num_samples, per_chunk):
            k = min(per_chunk, num_samples - start)
            eps = torch.randn(k, *mu.shape, device=mu.device)
            z = mu + std * eps  # [k, B, D]
            repeated = None if condition is None else {name: v.repeat(k) for name, v in condition.items()}
            logits = self.decode_logits(z.flatten(0, 1), repeated).float()
            log_px_z = -self.reconstruction_nll(logits, x.expand(k, *x.shape).flatten(0, 1)).view(k, -1)
            log_pz = -0.5 * (z.pow(2) + log_2pi).sum(-1)
            log_qz = -0.5 * (eps.pow(2) + logvar + log_2pi).sum(-1)
            log_weights.append(log_px_z + log_pz - log_qz)
        return math.log(num_samples) - torch.logsumexp(torch.cat(log_weights), dim=0)

    def vae_terms(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        """The VAE loss terms and the reparameterised sample z (subclasses add regularisers on z)."""
        x = batch["image"].float()
        condition = batch_condition(self, batch)
        mu, logvar = self.posterior(x, condition)
        z = reparameterize(mu, logvar)
        logits = self.decode_logits(z, condition).float()
        nll = self.reconstruction_nll(logits, x).mean()
        kl = gaussian_kl(mu, logvar).mean()
        step = self.global_step
        if self.capacity is None:
            beta_t = linear_ramp(step, self.kl_warmup_steps, self.beta)
            loss = nll + beta_t * kl
        else:
            beta_t = self.beta
            loss = nll + beta_t * (kl - linear_ramp(step, self.capacity_steps, self.capacity)).abs()
        terms = {
            "loss": loss,
            "recon": nll,
            "kl": kl,
            "elbo": -(nll + kl),
            "reconstruction": torch.sigmoid(logits),
        }
        if self.training:
            terms["beta"] = float(beta_t)  # known on the host: logged without a host-to-device copy
        return terms, z

    def losses(self, batch: Batch) -> dict[str, Tensor | float]:
        return self.vae_terms(batch)[0]

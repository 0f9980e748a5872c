"""Where each class lives in a conditional model's latent space: one Gaussian per class, and label edits.

A label-conditional VAE (CVAE, Sohn et al. 2015) is trained so that ``z`` carries the style and the
condition the class; its N(0, I) prior assumes ``z`` independent of the label. After training it is not:
the aggregate posterior of the digits of one class, q(z | y) = mean_i q(z | x_i, y), sits off-centre and
has its own spread (a 1 is narrow, so an AR-VAE's width dim of the 1s is far below 0), and prior draws
that land where no digit of the requested class does decode to digits of another class or to none.

:class:`ClassLatents` fits each class's aggregate posterior by its first two moments (ex-post density
estimation, Ghosh et al. 2020, "From Variational to Deterministic Autoencoders", ICLR, section 4; the
second stage of Dai & Wipf 2019's two-stage VAE): for the training digits of class ``y`` with posterior
means ``mu_i`` and variances ``sigma_i^2``, ``z | y ~ N(m_y, S_y)`` with ``m_y = mean_i mu_i`` and
``S_y = Cov_i(mu_i) + mean_i diag(sigma_i^2)`` (the mixture's covariance, law of total variance).

- **Generation** (:meth:`ClassLatents.sample`): ``z = m_y + L_y e``, ``e ~ N(0, I)``, ``L_y`` the Cholesky
  factor of ``S_y``, decoded under the label ``y``.
- **Label edits** (:meth:`ClassLatents.transport`, :func:`label_edit`): in the model
  ``z = m_y + L_y u`` the standardized position ``u`` is the digit's style relative to its class;
  abduction recovers ``u = L_y^{-1} (z - m_y)`` from the digit's posterior mean, the action sets the
  label to ``y'``, and the prediction decodes ``z' = m_{y'} + L_{y'} u`` under ``y'`` (Pearl's
  abduction-action-prediction on this linear-Gaussian mechanism). Dims that carry an attribute that is not
  a descendant of the label (an AR-VAE's thickness and slant dims: in Morpho-MNIST's causal graph the
  digit does not cause them) keep their factual value, and with a calibrated
  :class:`~genvae.latent.control.AttributeControl` those attributes are then held at the factual digit's
  measured values in closed loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from genvae.data.attributes import morpho_attributes
from genvae.errors import ConfigError
from genvae.latent.control import AttributeControl, EditResult, Reference
from genvae.latent.fitted import cached_tensors, fit_key, fitted_path
from genvae.latent.traversal import _device, decode_latents, encode_images, eval_mode
from genvae.models.conditioning import (
    LABEL,
    NUM_CLASSES,
    Condition,
    batch_condition,
    condition_names,
    split_condition,
)

__all__ = [
    "KEPT_UNDER_LABEL_EDITS",
    "ClassLatents",
    "edit_reference",
    "has_class_latents",
    "held_attributes",
    "label_edit",
    "posterior_moments",
]

# attributes a label edit keeps: style, not caused by the digit (Morpho-MNIST's causal graph)
KEPT_UNDER_LABEL_EDITS = ("thickness", "slant")
CACHE_KIND = "class-latents"  # <checkpoint stem>.class-latents.pt (genvae.latent.fitted)
CACHE_VERSION = 1  # bump when the fit changes


@torch.no_grad()
def posterior_moments(
    model: nn.Module, images: Tensor, condition: Condition | None, batch_size: int = 1000
) -> tuple[Tensor, Tensor]:
    """Posterior means and variances ``[N, D]`` of ``images`` under their ``condition``: the VAE family's
    ``posterior`` (mean, log-variance), or a deterministic ``encode`` (variance 0)."""
    device = _device(model)
    means, variances = [], []
    with eval_mode(model):
        for chunk, part in zip(
            images.split(batch_size), split_condition(condition, batch_size, len(images)), strict=True
        ):
            x = chunk.to(device)
            x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
            part = {k: v.to(device) for k, v in part.items()} if part is not None else None
            if callable(getattr(model, "posterior", None)):
                mu, logvar = model.posterior(x, part)
                means.append(mu.float())
                variances.append(logvar.float().exp())
            else:
                mu = model.encode(x, part).float()
                means.append(mu)
                variances.append(torch.zeros_like(mu))
    return torch.cat(means), torch.cat(variances)


@dataclass
class ClassLatents:
    """``z | y ~ N(mean[y], scale_tril[y] scale_tril[y]^T)`` for each class ``y``: ``mean [C, D]``,
    ``scale_tril [C, D, D]`` (lower Cholesky factors), ``count [C]`` digits each was fitted on."""

    mean: Tensor
    scale_tril: Tensor
    count: Tensor

    @classmethod
    @torch.no_grad()
    def fit(
        cls,
        model: nn.Module,
        images: Tensor,
        labels: Tensor,
        condition: Condition | None = None,
        num_classes: int = NUM_CLASSES,
        batch_size: int = 1000,
        jitter: float = 1e-5,
    ) -> ClassLatents:
        """The moment-matched aggregate posterior of each class (module docstring) from ``images`` (uint8 or
        [0, 1]) with their ``labels [N]``, encoded under ``condition`` (default: the label alone, for a model
        conditioned on it only). Every class needs at least two digits."""
        if LABEL not in condition_names(model):
            raise ConfigError(
                f"{type(model).__name__} is not conditioned on the label; class latents need a model with "
                "condition: [label, ...]"
            )
        labels = labels.long().cpu()
        if condition is None:
            condition = {LABEL: labels}
        mu, var = posterior_moments(model, images, condition, batch_size)
        mu, var = mu.double().cpu(), var.double().cpu()
        counts = torch.bincount(labels, minlength=num_classes)[:num_classes]
        if len(counts) < num_classes or int(counts.min()) < 2:
            raise ConfigError(
                f"class latents: every class 0-{num_classes - 1} needs >= 2 digits (counts {counts.tolist()})"
            )
        dim = mu.shape[1]
        means, factors = [], []
        for c in range(num_classes):
            rows = labels == c
            covariance = torch.cov(mu[rows].T, correction=0).reshape(dim, dim) + torch.diag(var[rows].mean(0))
            covariance = covariance + jitter * torch.eye(dim, dtype=covariance.dtype)
            means.append(mu[rows].mean(0))
            factors.append(torch.linalg.cholesky(covariance))
        device = _device(model)
        return cls(torch.stack(means).float().to(device), torch.stack(factors).float().to(device), counts)

    @classmethod
    def fit_split(
        cls, model: nn.Module, split: Mapping[str, Tensor], checkpoint: str | Path | None = None
    ) -> ClassLatents:
        """:meth:`fit` on a data split (``image``, ``label`` and, for attribute conditions, ``attributes``),
        each digit encoded under its own condition.

        With ``checkpoint`` (the file ``model``'s weights were loaded from) the fit is cached beside it as
        ``<checkpoint stem>.class-latents.pt``, keyed by the checkpoint's and the split's SHA-256
        (:mod:`genvae.latent.fitted`): a later call on the same checkpoint and data reads it instead of
        encoding the split again, and gets the same tensors."""

        def fit() -> dict[str, Tensor]:
            return cls.fit(model, split["image"], split[LABEL], batch_condition(model, split)).tensors()

        if checkpoint is None:
            return cls.from_tensors(fit(), _device(model))
        key = fit_key(CACHE_KIND, CACHE_VERSION, model, checkpoint, split)
        what = f"class latents on {len(split['image'])} training images"
        return cls.from_tensors(
            cached_tensors(fitted_path(checkpoint, CACHE_KIND), key, what, fit), _device(model)
        )

    def tensors(self) -> dict[str, Tensor]:
        """The fit as named tensors (what :meth:`from_tensors` takes back)."""
        return {"mean": self.mean, "scale_tril": self.scale_tril, "count": self.count}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Tensor], device: torch.device) -> ClassLatents:
        """The class latents of :meth:`tensors`, the Gaussians on ``device``."""
        return cls(tensors["mean"].to(device), tensors["scale_tril"].to(device), tensors["count"].cpu())

    @property
    def num_classes(self) -> int:
        return len(self.mean)

    def _classes(self, labels: Tensor) -> Tensor:
        return labels.long().to(self.mean.device)

    def sample(self, labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Latents ``[N, D]`` drawn from the Gaussian of each requested class ``labels [N]``; ``generator``
        (on the latents' device) for reproducible draws, else the global random stream."""
        labels = self._classes(labels)
        noise = torch.randn(
            len(labels),
            self.mean.shape[1],
            device=self.mean.device,
            generator=generator,
            dtype=self.mean.dtype,
        )
        return self.mean[labels] + (self.scale_tril[labels] @ noise.unsqueeze(-1)).squeeze(-1)

    def sample_given(
        self, labels: Tensor, dims: Sequence[int], values: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """Latents ``[N, D]`` drawn from each class's Gaussian conditioned on ``z[:, dims] = values [N, K]``
        (the other dims from the conditional Gaussian, so they fit the given ones as the class's digits
        do; the given dims exactly ``values``)."""
        labels = self._classes(labels)
        dims = list(dims)
        rest = [d for d in range(self.mean.shape[1]) if d not in dims]
        covariance = self.scale_tril @ self.scale_tril.transpose(1, 2)  # [C, D, D]
        s_aa = covariance[:, dims][:, :, dims]
        s_ba = covariance[:, rest][:, :, dims]
        s_bb = covariance[:, rest][:, :, rest]
        gain = torch.linalg.solve(s_aa, s_ba.transpose(1, 2)).transpose(1, 2)  # S_ba S_aa^-1, [C, B, A]
        conditional = s_bb - gain @ s_ba.transpose(1, 2)
        factor = torch.linalg.cholesky(conditional + 1e-6 * torch.eye(len(rest), device=conditional.device))
        offset = (values.to(self.mean) - self.mean[labels][:, dims]).unsqueeze(-1)
        mean_rest = self.mean[labels][:, rest] + (gain[labels] @ offset).squeeze(-1)
        noise = torch.randn(
            len(labels), len(rest), device=self.mean.device, generator=generator, dtype=self.mean.dtype
        )
        z = torch.empty(len(labels), self.mean.shape[1], device=self.mean.device, dtype=self.mean.dtype)
        z[:, rest] = mean_rest + (factor[labels] @ noise.unsqueeze(-1)).squeeze(-1)
        z[:, dims] = values.to(self.mean)
        return z

    def standardize(self, z: Tensor, labels: Tensor) -> Tensor:
        """Abduction: ``u = L_y^{-1} (z - m_y)``, the position of each latent relative to its class."""
        labels = self._classes(labels)
        centred = (z.to(self.mean) - self.mean[labels]).unsqueeze(-1)
        return torch.linalg.solve_triangular(self.scale_tril[labels], centred, upper=False).squeeze(-1)

    def transport(self, z: Tensor, source: Tensor, target: Tensor, keep_dims: Sequence[int] = ()) -> Tensor:
        """Latents ``z [N, D]`` of digits of class ``source [N]`` moved to class ``target [N]``: the same
        standardized position ``u`` in the target class's Gaussian; the dims ``keep_dims`` keep their
        value. The identity when ``source == target``."""
        u = self.standardize(z, source)
        target = self._classes(target)
        moved = self.mean[target] + (self.scale_tril[target] @ u.unsqueeze(-1)).squeeze(-1)
        if keep_dims:
            dims = torch.as_tensor(list(keep_dims), device=moved.device)
            moved[:, dims] = z.to(moved)[:, dims]
        return moved.to(z.dtype)


def has_class_latents(model: nn.Module) -> bool:
    """Whether ``model`` can have class latents: conditioned on the label, with a flat latent it decodes."""
    flat = isinstance(getattr(model, "latent_dim", None), int) and callable(getattr(model, "decode", None))
    return flat and LABEL in condition_names(model)


def held_attributes(model: nn.Module, keep: Sequence[str] = KEPT_UNDER_LABEL_EDITS) -> list[str]:
    """The attributes of ``keep`` that ``model`` regularizes in a latent dim (an AR-VAE's): those a label
    edit holds."""
    regularized = tuple(getattr(model, "regularized_attributes", ()) or ())
    return [name for name in keep if name in regularized]


@torch.no_grad()
def edit_reference(
    model: nn.Module, images: Tensor, condition: Condition, control: AttributeControl | None = None
) -> Reference:
    """The starting point of label edits of ``images`` under their own ``condition``: the control's
    :meth:`~AttributeControl.reference` (its attribute columns), else posterior means, reconstructions and
    their Morpho-MNIST attributes."""
    if control is not None:
        return control.reference(images, condition)
    z0 = encode_images(model, images, condition=condition)
    reconstruction = decode_latents(model, z0, condition=condition)
    return Reference(z0, reconstruction, morpho_attributes(reconstruction).to(z0.device).float(), condition)


@torch.no_grad()
def label_edit(
    model: nn.Module,
    class_latents: ClassLatents,
    reference: Reference,
    new_labels: Tensor,
    control: AttributeControl | None = None,
    keep: Sequence[str] = KEPT_UNDER_LABEL_EDITS,
    batch_size: int = 1000,
    changes: Mapping[str, float | Tensor] | None = None,
    absolute: Mapping[str, float | Tensor] | None = None,
) -> EditResult:
    """``do(label = new_labels)`` of the digits of ``reference`` (:meth:`AttributeControl.reference`, or one
    built from their posterior means, reconstructions, measured attributes and own condition).

    Latents are transported to the new class (:meth:`ClassLatents.transport`), keeping the latent dims of
    the ``keep`` attributes the model regularizes (AR-VAE); with ``control``, those attributes are then set
    in closed loop to the values measured on each digit's reconstruction (unless ``changes`` / ``absolute``
    request them: attribute requests of :meth:`AttributeControl.apply`, met on the new digit). A model
    without such dims (a CVAE) is transported only: steering its most informative dim instead moves class
    shape with the style (fewer of its label edits are then classified as the new label). Returns an :class:`EditResult`
    (images decoded under the new label; ``original`` the reconstructions' attributes, ``measured`` the
    edited digits')."""
    z0, reconstruction, original, own = reference
    if own is None or LABEL not in own:
        raise ConfigError(f"label edit: {type(model).__name__} needs each digit's own label (condition)")
    regularized = list(getattr(model, "regularized_attributes", ()) or ())
    dims = list(getattr(model, "regularized_dims", ()) or ())
    kept = held_attributes(model, keep)
    moved = class_latents.transport(z0, own[LABEL], new_labels, [dims[regularized.index(n)] for n in kept])
    counterfactual = {**own, LABEL: new_labels.to(own[LABEL].device)}
    changes, absolute = dict(changes or {}), dict(absolute or {})
    asked = set(changes) | set(absolute)
    held = [
        name for name in kept if control is not None and name in control.calibrations and name not in asked
    ]
    if asked and control is None:
        raise ConfigError(f"label edit: {sorted(asked)} requested without an AttributeControl to set them")
    if held or asked:
        for name in held:
            absolute[name] = original[:, control.attribute_names.index(name)]
        return control.apply(
            reconstruction,
            changes,
            absolute=absolute,
            reference=Reference(moved, reconstruction, original, own),
            counterfactual={LABEL: new_labels},
        )
    images = decode_latents(model, moved, batch_size, counterfactual)
    measure = control.measure if control is not None else morpho_attributes
    measured = measure(images).to(z0.device).float()
    target = torch.full_like(original, float("nan"))
    return EditResult(images, moved, reconstruction, original, measured, target)

"""Second stage of VQ-VAE: an autoregressive prior over the code grid of a trained, frozen VQ-VAE.

The prior is a small causal transformer over the ``M * M`` code indices in raster order. Each batch of
images is encoded to codes on the fly by the frozen VQ-VAE, so it trains on the same datamodule as the
first stage. New digits are drawn code by code from the prior and decoded by the VQ-VAE.

With ``condition: [label]`` the prior is class-conditional, p(c | y) (the class-conditional PixelCNN prior of
van den Oord et al. 2017, "Neural Discrete Representation Learning", section 4.2): a learned class token
(an embedding of the label, ``d_model`` wide) is added to the input of every position, start token included,
so every code is predicted knowing the class; the VQ-VAE itself is unchanged.

A class-conditional prior can sample with classifier-free guidance (Ho & Salimans 2022, "Classifier-Free
Diffusion Guidance", eq. 6, applied per code as autoregressive image models do): given an unconditional prior
over the same VQ-VAE (``unconditional_prior``, a checkpoint of ``experiments/vqvae_prior.yaml``), each code is
drawn from ``log p_u + s * (log p(c_i | c_<i, y) - log p_u)`` with ``p_u = p(c_i | c_<i)``, renormalised;
``guidance`` s = 1 is the conditional prior itself, s > 1 sharpens the class at some cost in diversity. The
two priors are trained separately (the paper trains one network with the label dropped at random; the
formula is the same), so a trained conditional prior can be guided without retraining. Likelihoods
(``loss``, ``bits_per_code``) are always those of the conditional prior.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import Tensor, nn
from torchvision.utils import make_grid

from genvae.checkpoints import read_checkpoint
from genvae.errors import ConfigError
from genvae.models.base import Batch, StagedModule
from genvae.models.conditioning import (
    LABEL,
    NUM_CLASSES,
    Condition,
    batch_condition,
    check_labels,
    draw_condition,
)
from genvae.models.dropout import causal_attention, use_fast_dropout
from genvae.models.optim import adam
from genvae.models.vqvae import VQVAE
from genvae.utils.images import log_image


def load_vqvae(checkpoint: str | None) -> VQVAE:
    """The VQ-VAE of a Lightning checkpoint, on CPU, frozen and in eval mode; a ConfigError when unusable."""
    key = "model.init_args.vqvae_checkpoint"
    if not checkpoint:
        raise ConfigError(f"{key} is required: the path of a trained VQ-VAE checkpoint (.ckpt)")
    path = Path(checkpoint)
    state = read_checkpoint(path, expected_class=VQVAE, key=key)
    if "quantizer.codebook" not in state["state_dict"]:  # also for checkpoints that record no class
        raise ConfigError(
            f"{path}: not a VQ-VAE checkpoint (no quantizer.codebook in its state_dict) (given as {key})"
        )
    return load_frozen(VQVAE, path, key)


def load_frozen(cls: type[L.LightningModule], path: Path, key: str, **overrides: Any) -> Any:
    """``cls.load_from_checkpoint(path, **overrides)`` on CPU, frozen and in eval mode, for a checkpoint
    :func:`read_checkpoint` has already vetted; a ConfigError naming ``key`` when it does not load."""
    try:
        model = cls.load_from_checkpoint(path, map_location="cpu", **overrides)
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(
            f"{path}: cannot load as genvae.models.{cls.__name__} ({err}) (given as {key})"
        ) from None
    model.requires_grad_(False)
    return model.eval()


def _heads(layer: nn.TransformerEncoderLayer, hidden: Tensor) -> Tensor:
    """Queries, keys and values ``[..., 3, heads, d_head]`` of a pre-norm layer's attention for ``hidden``
    ``[..., d]``: its packed input projection of ``norm1(hidden)``, split into heads."""
    attention = layer.self_attn
    projected = F.linear(layer.norm1(hidden), attention.in_proj_weight, attention.in_proj_bias)
    return projected.unflatten(-1, (3, attention.num_heads, attention.head_dim))


def _feedforward(layer: nn.TransformerEncoderLayer, hidden: Tensor) -> Tensor:
    """``hidden`` plus a pre-norm layer's feed-forward block of it (its dropout modules are identities in
    eval mode)."""
    inner = layer.dropout(layer.activation(layer.linear1(layer.norm2(hidden))))
    return hidden + layer.dropout2(layer.linear2(inner))


class VQPrior(StagedModule):
    """Causal transformer prior p(c) = prod_i p(c_i | c_<i) over the codes of a frozen VQ-VAE.

    Logged per epoch (and per step in training): ``loss`` = ``nll`` (nats per code) and ``bits_per_code``.
    At the end of every validation epoch a grid of ``num_samples`` sampled digits is logged as
    ``val/samples`` through :func:`genvae.utils.images.log_image`.

    Args:
        vqvae_checkpoint: path of the trained VQ-VAE Lightning checkpoint (loaded through :class:`VQVAE`).
        image_shape: ``[C, H, W]`` linked from the datamodule; must match the VQ-VAE's.
        d_model: transformer width.
        num_layers: transformer layers.
        num_heads: attention heads.
        dropout: dropout in the transformer.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        num_samples: digits in the logged sample grid.
        temperature: softmax temperature of sampling.
        condition: ``[label]`` for a class-conditional prior (a learned class token); None: unconditional.
        guidance: classifier-free guidance scale s of sampling (1: none); needs ``unconditional_prior``.
        unconditional_prior: checkpoint of an unconditional prior over the same VQ-VAE
            (``experiments/vqvae_prior.yaml``), the guidance's p_u; loaded frozen, not part of this
            prior's state dict.
    """

    def __init__(
        self,
        vqvae_checkpoint: str | None = None,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        d_model: int = 128,
        num_layers: int = 4,
        num_heads: int = 4,
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        num_samples: int = 64,
        temperature: float = 1.0,
        condition: list[str] | None = None,
        guidance: float = 1.0,
        unconditional_prior: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.vqvae = load_vqvae(vqvae_checkpoint)
        if tuple(image_shape) != tuple(self.vqvae.image_shape):
            raise ConfigError(
                f"model.init_args.image_shape {tuple(image_shape)} differs from the VQ-VAE's "
                f"{tuple(self.vqvae.image_shape)} ({vqvae_checkpoint})"
            )
        if d_model % num_heads:
            raise ConfigError(f"model: d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        if temperature <= 0 or num_samples < 1:
            raise ConfigError("model: temperature must be > 0 and num_samples >= 1")
        self.image_shape = tuple(image_shape)
        self.grid_shape = self.vqvae.grid_shape
        self.num_codes = self.vqvae.num_codes
        self.sequence_length = math.prod(self.grid_shape)
        self.lr, self.weight_decay = lr, weight_decay
        self.num_samples, self.temperature = num_samples, temperature
        self.condition_names: tuple[str, ...] = tuple(condition or ())
        if self.condition_names not in ((), (LABEL,)):
            raise ConfigError(
                f"model.condition: {list(self.condition_names)}; the prior can be conditioned on [label] only"
            )
        self.condition_columns: dict[str, int] = {}
        # the class token; absent from an unconditional prior's state dict
        self.class_embedding = nn.Embedding(NUM_CLASSES, d_model) if self.condition_names else None

        self.token_embedding = nn.Embedding(self.num_codes + 1, d_model)  # index num_codes = start token
        self.position_embedding = nn.Parameter(torch.randn(self.sequence_length, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, num_heads, 4 * d_model, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        use_fast_dropout(self.transformer)  # F.dropout's per-element draws were ~45% of a CPU step
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, self.num_codes)
        self.guidance = float(guidance)
        self._unconditional = self._load_unconditional(unconditional_prior)

    def _load_unconditional(self, checkpoint: str | None) -> tuple[VQPrior, ...]:
        """The guidance's unconditional prior, frozen, in a tuple (not a submodule: its weights stay out of
        this prior's checkpoints, which load with or without it); ConfigErrors for what cannot work."""
        key = "model.init_args.unconditional_prior"
        if self.guidance <= 0:
            raise ConfigError(f"model.init_args.guidance must be > 0 (given {self.guidance:g})")
        if not checkpoint:
            if self.guidance != 1:
                raise ConfigError(
                    f"model.init_args.guidance {self.guidance:g} needs {key}: a checkpoint of "
                    "experiments/vqvae_prior.yaml over the same VQ-VAE (or guidance 1: no guidance)"
                )
            return ()
        if not self.condition_names:
            raise ConfigError(f"{key}: guidance needs a class-conditional prior (condition: [label])")
        path = Path(checkpoint)
        read_checkpoint(path, expected_class=VQPrior, key=key)
        prior = load_frozen(VQPrior, path, key, vqvae_checkpoint=self.hparams.vqvae_checkpoint)
        if prior.condition_names:
            raise ConfigError(f"{checkpoint}: a conditional prior; {key} must be an unconditional one")
        if not torch.equal(prior.vqvae.quantizer.codebook, self.vqvae.quantizer.codebook):
            raise ConfigError(
                f"{checkpoint}: its VQ-VAE differs from this prior's (other codebook); {key} must be trained "
                "on the codes of the same VQ-VAE checkpoint"
            )
        return (prior,)

    def train(self, mode: bool = True) -> VQPrior:
        """Switch the prior's mode; the frozen VQ-VAE stays in eval mode (no batch-norm updates)."""
        super().train(mode)
        self.vqvae.eval()
        return self

    def on_fit_start(self) -> None:
        """Silence Lightning's warning about modules in eval mode at the start of training when they are
        exactly the frozen VQ-VAE's (on purpose); any other module left in eval mode changes the count in the
        message, so the warning still shows."""
        frozen = sum(1 for _ in self.vqvae.modules())
        warnings.filterwarnings(
            "ignore",
            message=rf"Found {frozen} module\(s\) in eval mode at the start",
            category=PossibleUserWarning,
        )

    # ----------------------------------------------------------- model
    def class_token(self, condition: Condition | None, n: int) -> Tensor | None:
        """The class token ``[n, d_model]`` of a conditional prior (None for an unconditional one); a
        ConfigError when a conditional prior gets no label or an unconditional one gets a condition."""
        if self.class_embedding is None:
            if condition:
                raise ConfigError(
                    f"VQPrior is not conditional; it cannot take the condition {sorted(condition)}"
                )
            return None
        if not condition or LABEL not in condition or set(condition) != {LABEL}:
            given = sorted(condition or {})
            raise ConfigError(f"VQPrior needs condition ['label'] (given: {given})")
        label = condition[LABEL].long()
        if len(label) != n:
            raise ConfigError(f"VQPrior: condition label has {len(label)} entries for {n} sequences")
        check_labels(label)  # before the move to the model's device: free for labels passed from the host
        return self.class_embedding(label.to(self.class_embedding.weight.device))

    def logits(self, codes: Tensor, condition: Condition | None = None) -> Tensor:
        """Logits ``[B, L, K]`` of each code given the codes before it (and the class, for a conditional
        prior), for a raster sequence ``[B, L]``."""
        length = codes.shape[1]
        start = torch.full_like(codes[:, :1], self.num_codes)
        inputs = torch.cat([start, codes[:, :-1]], dim=1)
        hidden = self.token_embedding(inputs) + self.position_embedding[:length]
        token = self.class_token(condition, len(codes))
        if token is not None:
            hidden = hidden + token.unsqueeze(1)
        return self.head(self.norm(self._transform(hidden))).float()

    def _transform(self, hidden: Tensor) -> Tensor:
        """The causal transformer over ``[B, L, d]``: each pre-norm ``nn.TransformerEncoderLayer`` of
        ``self.transformer`` computed from its own weights and dropout modules, batch first throughout
        (``nn.MultiheadAttention`` transposes to sequence-first and back, copies that together with its
        per-element attention-dropout draws were ~15% of a CPU training step), the attention by
        :func:`~genvae.models.dropout.causal_attention`."""
        n, length, width = hidden.shape
        for layer in self.transformer.layers:
            query, key, value = _heads(layer, hidden).permute(2, 0, 3, 1, 4)  # [n, heads, L, d_head] each
            attended = causal_attention(query, key, value, layer.self_attn.dropout, self.training)
            attended = attended.transpose(1, 2).reshape(n, length, width)
            hidden = _feedforward(layer, hidden + layer.dropout1(layer.self_attn.out_proj(attended)))
        return hidden

    @torch.no_grad()
    def encode_codes(self, images: Tensor) -> Tensor:
        """Raster code sequence ``[B, M * M]`` of images, from the frozen VQ-VAE."""
        return self.vqvae.encode_indices(images.float()).flatten(1)

    def nll(self, codes: Tensor, condition: Condition | None = None) -> Tensor:
        """Mean negative log-likelihood in nats per code."""
        logits = self.logits(codes, condition)
        return F.cross_entropy(logits.reshape(-1, self.num_codes), codes.reshape(-1))

    def _next_logits(
        self, inputs: Tensor, position: int, cache: list[tuple[Tensor, Tensor]], token: Tensor | None = None
    ) -> Tensor:
        """Logits ``[n, K]`` of the code at ``position`` given the input token there (``[n]``: the start token
        or the previous code) and the keys and values of the earlier positions in ``cache``.

        Incremental decoding of :meth:`logits` in eval mode (no dropout): each layer of the pre-norm
        ``nn.TransformerEncoderLayer`` attends from the new position to the cached keys and values, so a
        sequence of ``L`` codes costs ``L`` single-position passes instead of ``L`` passes over growing
        prefixes. ``cache`` holds per layer the keys and values ``[n, heads, L, d_head]``, filled here.
        ``token``: the class token ``[n, d]`` of a conditional prior.
        """
        x = self.token_embedding(inputs) + self.position_embedding[position]  # [n, d]
        if token is not None:
            x = x + token
        for layer, (keys, values) in zip(self.transformer.layers, cache, strict=True):
            query, key, value = _heads(layer, x).unbind(1)  # [n, heads, d_head] each
            keys[:, :, position], values[:, :, position] = key, value
            attended = F.scaled_dot_product_attention(
                query.unsqueeze(2), keys[:, :, : position + 1], values[:, :, : position + 1]
            )
            x = _feedforward(layer, x + layer.self_attn.out_proj(attended.reshape(len(x), -1)))
        return self.head(self.norm(x)).float()

    @torch.no_grad()
    def sample_codes(
        self, n: int, temperature: float | None = None, condition: Condition | None = None
    ) -> Tensor:
        """``n`` code grids ``[n, M, M]`` drawn from the prior, one code at a time (with a key/value cache:
        :meth:`_next_logits`); a conditional prior draws from p(c | y) for ``condition = {"label": [n]}``."""
        temperature = self.temperature if temperature is None else temperature
        token = self.class_token(condition, n)
        was_training = self.training
        self.eval()
        guided = self.guidance != 1 and token is not None
        unconditional = self._unconditional[0].to(self.device) if guided else None
        cache, unconditional_cache = self._empty_cache(n), unconditional._empty_cache(n) if guided else None
        codes = torch.zeros(n, self.sequence_length, dtype=torch.long, device=self.device)
        inputs = torch.full((n,), self.num_codes, dtype=torch.long, device=self.device)  # the start token
        for i in range(self.sequence_length):
            logits = self._next_logits(inputs, i, cache, token)
            if guided:  # log p_u + s (log p_c - log p_u), Ho & Salimans 2022 eq. 6
                log_conditional = logits.log_softmax(-1)
                log_unconditional = unconditional._next_logits(inputs, i, unconditional_cache).log_softmax(-1)
                logits = torch.lerp(log_unconditional, log_conditional, self.guidance)
            codes[:, i] = inputs = torch.multinomial((logits / temperature).softmax(-1), 1).squeeze(1)
        self.train(was_training)
        return codes.view(n, *self.grid_shape)

    def _empty_cache(self, n: int) -> list[tuple[Tensor, Tensor]]:
        """Per layer, the key and value buffers ``[n, heads, L, d_head]`` of :meth:`_next_logits`."""
        weight = self.token_embedding.weight
        cache = []
        for layer in self.transformer.layers:
            shape = (n, layer.self_attn.num_heads, self.sequence_length, layer.self_attn.head_dim)
            cache.append((weight.new_empty(shape), weight.new_empty(shape)))
        return cache

    @torch.no_grad()
    def sample(self, n: int, temperature: float | None = None, condition: Condition | None = None) -> Tensor:
        """``n`` new images ``[n, C, H, W]`` in [0, 1]: prior samples decoded by the VQ-VAE (of the classes
        ``condition["label"]`` for a conditional prior)."""
        return self.vqvae.decode_indices(self.sample_codes(n, temperature, condition)).float()

    # ----------------------------------------------------------- loop
    def _shared_step(self, batch: Batch, stage: str) -> Tensor:
        nll = self.nll(self.encode_codes(batch["image"]), batch_condition(self, batch))
        values = {"loss": nll.detach(), "bits_per_code": nll.detach() / math.log(2)}
        self.log_stage(stage, values, len(batch["image"]))
        return nll

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.trainer.sanity_checking:
            return
        samples = self.sample(self.num_samples, condition=draw_condition(self, self.num_samples))
        grid = make_grid(samples.cpu(), nrow=math.ceil(math.sqrt(self.num_samples)), padding=2, pad_value=0.5)
        log_image(self.trainer, "val/samples", grid[:1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        parameters = [p for p in self.parameters() if p.requires_grad]
        return adam(parameters, lr=self.lr, weight_decay=self.weight_decay, decoupled=True)

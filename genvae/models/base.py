"""Shared LightningModule base: backbone construction, optimizer, and the train/val/test/predict loop."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genvae.backbones import build_backbone
from genvae.data.attributes import ATTRIBUTE_NAMES
from genvae.errors import ConfigError
from genvae.metrics.disentanglement import reconstruction_accuracy
from genvae.metrics.evaluation import EvaluationCollector
from genvae.models.conditioning import (
    LABEL,
    Condition,
    ConditionEmbedding,
    batch_condition,
    check_condition_names,
)
from genvae.models.optim import adam
from genvae.models.running_means import RunningMeans
from genvae.utils.lightning import (
    carry_optimizer_steps,
    is_logging_step,
    log_step_metrics,
    needs_automatic_optimization,
)

Batch = dict[str, Tensor]

__all__ = ["Batch", "GenerativeModel", "StagedModule", "VectorLatentModel", "batch_condition"]

#: checkpoint key of the training epoch's running sums (see :meth:`StagedModule.on_save_checkpoint`)
RUNNING_MEANS_KEY = "genvae_running_means"


class StagedModule(L.LightningModule):
    """A LightningModule whose train, validation and test steps all run ``_shared_step(batch, stage)``.

    It owns genvae's one logging policy (:meth:`log_stage`). Keys: ``train/<name>_step`` (this rank's value
    at a logging step) and ``train/<name>_epoch`` (the epoch mean over all ranks), ``val/<name>`` and
    ``test/<name>`` (epoch means over all ranks), in every logger and in ``trainer.callback_metrics``.

    Why not ``self.log`` at every step: each call costs about a millisecond of host-side bookkeeping in
    Lightning's result collection, and the progress bar turns logged tensors into Python numbers, which
    waits for the device. So a step adds its terms to on-device running sums
    (:class:`~genvae.models.running_means.RunningMeans`: one ``stack`` and one add, no synchronisation)
    and hands values on only where they are used: the step values on Lightning's logging steps
    (``trainer.log_every_n_steps``, every step under ``fast_dev_run``), read to the host in one transfer
    and written to the loggers, the progress bar and ``callback_metrics`` directly
    (:func:`~genvae.utils.lightning.log_step_metrics`, the step and ``epoch`` column Lightning would give
    them, without its result collection); the epoch means once per epoch through ``self.log`` with
    ``sync_dist=True`` (one all-reduce per epoch under DDP, weighted by batch size as Lightning weights a
    value logged ``on_epoch``). The training sums travel in checkpoints, so the epoch means of a run
    resumed mid-epoch equal those of an unbroken run.

    The module steps its optimizer itself (see :attr:`automatic_optimization`). Subclasses that override
    ``setup``, ``on_load_checkpoint`` or the ``on_*_epoch_end`` hooks call ``super()``.
    """

    def _shared_step(self, batch: Batch, stage: str) -> Tensor:
        raise NotImplementedError

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets ``_current_fx_name`` around every hook call (~40 per training step); a plain string
        # attribute needs none of ``nn.Module.__setattr__``'s parameter / module / buffer bookkeeping.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """A dict batch already on ``device`` (genvae's loaders gather batches there) is returned as it is,
        without Lightning's recursive walk over the collection; anything else is moved as Lightning does."""
        if isinstance(batch, dict) and all(
            isinstance(v, Tensor) and v.device == device for v in batch.values()
        ):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    # ----------------------------------------------------------- the logging policy
    def log_stage(
        self,
        stage: str,
        values: dict[str, Tensor | float],
        batch_size: int,
        prog_bar: tuple[str, ...] = ("loss",),
    ) -> None:
        """Account one batch's scalar ``values`` (0-dim tensors or Python numbers) of ``stage``.

        Adds them to the stage's running means; in training on a logging step also logs them as
        ``train/<name>_step``. The means are logged at the end of the epoch by :meth:`log_epoch_means`.
        """
        running = self._running_means.setdefault(stage, RunningMeans())
        running.update(values, batch_size)
        self._prog_bar_names[stage] = prog_bar
        if stage == "train" and self._logs_this_step():
            self._log_step_values(values, prog_bar)

    def _log_step_values(self, values: dict[str, Tensor | float], prog_bar: tuple[str, ...]) -> None:
        """Log ``values`` as ``train/<name>_step``, the tensors read to the host in one transfer."""
        tensors = {name: value.detach() for name, value in values.items() if isinstance(value, Tensor)}
        read = torch.stack([t.float() for t in tensors.values()]).tolist() if tensors else []
        host = dict(zip(tensors, read, strict=True))
        key = "train/{}_step".format
        log_step_metrics(
            self._trainer,
            {key(name): host[name] if name in host else float(value) for name, value in values.items()},
            tensors={key(name): tensor for name, tensor in tensors.items()},
            prog_bar={key(name) for name in prog_bar},
        )

    def log_epoch_means(self, stage: str) -> None:
        """Log the epoch means of ``stage`` (``train/<name>_epoch``, ``val/<name>``, ``test/<name>``) and
        start the next epoch's sums. Called by the ``on_*_epoch_end`` hooks; a second call in the same
        epoch does nothing (:class:`~genvae.callbacks.EpochSummary` calls it for training before printing,
        because Lightning runs callbacks' ``on_train_epoch_end`` before the module's)."""
        running = self._running_means.pop(stage, None)
        if not running:
            return
        suffix, bar = ("_epoch", ()) if stage == "train" else ("", self._prog_bar_names.get(stage, ()))
        for name, (mean, count) in running.means().items():
            self.log(
                f"{stage}/{name}{suffix}",
                mean,
                on_step=False,
                on_epoch=True,
                sync_dist=True,
                prog_bar=name in bar,
                batch_size=count,
            )

    def _logs_this_step(self) -> bool:
        """Whether Lightning writes step metrics to its loggers after this training step."""
        return self._trainer is not None and is_logging_step(self._trainer)

    # Per-stage state, created on first use so that subclasses need no extra __init__ argument handling.
    @property
    def _running_means(self) -> dict[str, RunningMeans]:
        return self.__dict__.setdefault("_stage_sums", {})

    @property
    def _prog_bar_names(self) -> dict[str, tuple[str, ...]]:
        return self.__dict__.setdefault("_stage_prog_bar", {})

    # ----------------------------------------------------------- hooks
    def setup(self, stage: str) -> None:
        self._running_means.clear()  # a checkpoint being resumed from restores the training sums after this

    def on_train_epoch_end(self) -> None:
        self.log_epoch_means("train")

    def on_validation_epoch_start(self) -> None:
        self._running_means.pop("val", None)

    def on_validation_epoch_end(self) -> None:
        self.log_epoch_means("val")

    def on_test_epoch_start(self) -> None:
        self._running_means.pop("test", None)

    def on_test_epoch_end(self) -> None:
        self.log_epoch_means("test")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep this epoch's training sums so that a run resumed mid-epoch logs the same epoch means."""
        running = self._running_means.get("train")
        if running:
            checkpoint[RUNNING_MEANS_KEY] = running.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._trainer is not None:
            carry_optimizer_steps(checkpoint, automatic=self.automatic_optimization)
        state = checkpoint.get(RUNNING_MEANS_KEY)
        if state is not None:
            self._running_means["train"] = RunningMeans.from_state_dict(state, self.device)

    # ----------------------------------------------------------- steps
    @property
    def automatic_optimization(self) -> bool:
        """Whether Lightning's automatic loop steps the optimizer; otherwise :meth:`training_step` does.

        genvae steps its one optimizer itself: ``zero_grad``, ``manual_backward``, ``step`` through
        Lightning's optimizer wrapper, so the precision plugin, DDP, the ``on_before_backward`` /
        ``on_before_optimizer_step`` hooks and the NaN guard work as they do in the automatic loop, and the
        weights are bitwise the same. It skips what the automatic loop wraps around every step (a closure,
        two more hook sweeps over every callback, progress counters), a cost of the order of the whole
        step of a small model on a GPU (``benchmarks/bench_training.py`` measures it: docs/speed.md). The
        automatic loop is used where the trainer asks for what only it implements
        (:func:`~genvae.utils.lightning.needs_automatic_optimization`: gradient clipping or accumulation,
        time-interval checkpoints).
        """
        trainer = self._trainer
        return trainer is not None and needs_automatic_optimization(trainer)

    def on_train_start(self) -> None:
        if not self.automatic_optimization and self.trainer.lr_scheduler_configs:
            raise ConfigError(
                f"{type(self).__name__}.configure_optimizers: returns a learning-rate scheduler, which genvae's "
                "manual optimization step does not step; step it in training_step or on_train_epoch_end"
            )

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss = self._shared_step(batch, "train")
        if self.automatic_optimization:
            return loss
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._shared_step(batch, "test")


class GenerativeModel(StagedModule):
    """Base of every model family.

    Subclasses implement :meth:`losses` (a dict of scalar terms with ``"loss"`` the one optimised, plus the
    reconstructed image under ``"reconstruction"``), :meth:`encode` and :meth:`decode`. The base logs every
    term as ``<stage>/<name>`` (per step and per epoch in training, per epoch and synced across ranks in
    evaluation) and adds ``mse``, the per-pixel squared error of the reconstruction on the [0, 1] scale.

    Args:
        backbone: registry name (``mlp``, ``conv``, ``resnet``) or dotted class path of a ``Backbone``.
        backbone_kwargs: keyword arguments of the backbone (e.g. ``{channels: [32, 64]}``).
        image_shape: ``[C, H, W]``; linked from the datamodule by the CLI.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
    """

    def __init__(
        self,
        backbone: str = "conv",
        backbone_kwargs: dict[str, Any] | None = None,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        lr: float = 1e-3,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["encoder_outputs"])  # fixed by each family, not a setting
        self.image_shape = tuple(int(s) for s in image_shape)
        self.backbone = build_backbone(backbone, self.image_shape, backbone_kwargs)
        self.lr = lr
        self.weight_decay = weight_decay
        self.condition_embedding = None

    # ----------------------------------------------------------- condition
    #: Names of the condition the model's networks receive (``label`` and/or attribute names; see
    #: :mod:`genvae.models.conditioning`); empty for an unconditional model.
    condition_names: tuple[str, ...] = ()
    condition_embedding: ConditionEmbedding | None  # set in __init__; a module of conditional models
    #: Column of ``batch["attributes"]`` of each attribute condition (the datamodule's order, set at setup).
    condition_columns: dict[str, int] = {}

    def condition_vector(self, condition: Condition | None) -> Tensor | None:
        """The embedded ``condition`` ``[N, width]`` of a conditional model, None for an unconditional one; a
        ConfigError when a conditional model gets none or an unconditional one gets a non-empty one."""
        who = type(self).__name__
        if self.condition_embedding is None:
            if condition:
                raise ConfigError(
                    f"{who} is not conditional; it cannot take the condition {sorted(condition)}"
                )
            return None
        self.condition_embedding.check(condition, who)
        return self.condition_embedding(condition)

    # ----------------------------------------------------------- interface
    def losses(self, batch: Batch) -> dict[str, Tensor | float]:
        """Scalar terms (0-dim tensors, or Python numbers known on the host such as a schedule's weight)
        with ``"loss"`` the one optimised, plus the reconstructed images under ``"reconstruction"``."""
        raise NotImplementedError

    def encode(self, x: Tensor, condition: Condition | None = None) -> Tensor:
        """Deterministic latent representation of images ``x`` (used by metrics and figures); ``condition``:
        the images' condition (conditional models only)."""
        raise NotImplementedError

    def decode(self, z: Tensor, condition: Condition | None = None) -> Tensor:
        """Images in [0, 1] decoded from latents ``z`` (under ``condition`` for a conditional model)."""
        raise NotImplementedError

    def encode_sample(self, x: Tensor, condition: Condition | None = None) -> Tensor:
        """One draw of the latent of images ``x``: :meth:`encode` for a deterministic encoder (the default);
        a stochastic one (the VAE family) returns a reparameterised posterior sample."""
        return self.encode(x, condition)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, condition: Condition | None = None) -> Tensor:
        return self.decode(self.encode(x, condition), condition)

    # ----------------------------------------------------------- loop
    def _shared_step(self, batch: Batch, stage: str) -> Tensor:
        terms = self.losses(batch)
        reconstruction = terms.pop("reconstruction")
        # a logged metric, not a loss: no autograd graph for it
        terms["mse"] = F.mse_loss(reconstruction.detach().float(), batch["image"].float())
        loss = terms.pop("loss")
        values = {"loss": loss, **terms}
        self.log_stage(stage, values, len(batch["image"]))
        return loss

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        super().test_step(batch, batch_idx)
        self._collect_test_outputs(batch)

    # ----------------------------------------------------------- test-time evaluation
    #: How the test-end latent metrics are computed; set by :class:`genvae.callbacks.LatentMetrics`, not
    #: hyperparameters (a checkpoint's hyperparameters would override the command line at test time).
    latent_protocol: str = "ksg"  # mutual-information protocol, see genvae.metrics.mutual_information
    metric_latent: str = "mean"  # "mean": encode(x); "sample": encode_sample(x)
    #: Whether the latent-space metrics (interpretability, MIG, ...) apply: False for a latent that is not
    #: a flat vector whose dims could each align with an attribute (the VQ-VAE's grid of code vectors).
    scores_latent_dims: bool = True

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self._test_collector = EvaluationCollector()

    @torch.no_grad()
    def _collect_test_outputs(self, batch: Batch) -> None:
        """Keep what the test metrics need: latents, attributes, labels and per-image reconstruction accuracy."""
        x = batch["image"]
        condition = batch_condition(self, batch)
        z = self.encode(x, condition)
        outputs = {
            "latent": z.flatten(1).float(),
            "recon_accuracy": reconstruction_accuracy(self.decode(z, condition).float(), x.float()),
        }
        outputs.update({key: batch[key] for key in ("label", "index") if key in batch})
        if "attributes" in batch and self.scores_latent_dims:
            outputs["attributes"] = batch["attributes"].float()
            if self.metric_latent == "sample":
                outputs["latent_sample"] = self.encode_sample(x, condition).flatten(1).float()
        self._test_collector.update(**outputs)

    def on_test_epoch_end(self) -> None:
        """Gather every rank's test outputs, compute the metrics once and log them as ``test/<name>``.

        The results stay on the module as ``test_results`` (``{"test/<name>": float}``) and the gathered
        per-example tensors as ``test_outputs`` (keys ``latent``, ``recon_accuracy``, ``label``, ``index``
        and ``attributes`` when the data has them, ``latent_sample`` with ``metric_latent = "sample"``), for
        callbacks that run after the test epoch. With attributes, ``test_metadata`` records how the latent
        metrics were computed (``meta/latent_protocol``, ``meta/latent``) for the metrics JSON.
        """
        super().on_test_epoch_end()  # the epoch means of the test loss terms
        collector = getattr(self, "_test_collector", None)
        if collector is None or not collector.parts:
            return
        self.test_outputs = collector.gather(self)
        datamodule = getattr(self._trainer, "datamodule", None)
        names = getattr(datamodule, "attribute_names", None)
        key = "latent_sample" if "latent_sample" in self.test_outputs else "latent"
        results = EvaluationCollector.compute(self.test_outputs, names, self.latent_protocol, key)
        self.test_results = {f"test/{name}": value for name, value in results.items()}
        if "attributes" in self.test_outputs:
            self.test_metadata = {
                "meta/latent_protocol": self.latent_protocol,
                "meta/latent": self.metric_latent,
            }
        for name, value in self.test_results.items():
            self.log(name, value, sync_dist=False)
        self._test_collector = EvaluationCollector()

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        condition = batch_condition(self, batch)
        z = self.encode(batch["image"], condition)
        return {
            "latent": z,
            "reconstruction": self.decode(z, condition),
            "label": batch["label"],
            "index": batch["index"],
        }

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


def widen_first_convolution(encoder: nn.Module, extra: int) -> bool:
    """Give the first layer of ``encoder`` ``extra`` more input channels when it is an ``nn.Conv2d`` (the
    same kernel, stride and padding; fresh weights): True, else (a linear first layer) False and nothing
    changes."""
    for name, module in encoder.named_modules():
        if isinstance(module, nn.Linear):
            return False
        if isinstance(module, nn.Conv2d):
            if module.groups != 1:
                return False
            widened = nn.Conv2d(
                module.in_channels + extra,
                module.out_channels,
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                bias=module.bias is not None,
                padding_mode=module.padding_mode,
            )
            parent, _, child = name.rpartition(".")
            setattr(encoder.get_submodule(parent) if parent else encoder, child, widened)
            return True
    return False


class VectorLatentModel(GenerativeModel):
    """A model with a flat latent vector: linear heads between the backbone feature map and the latent.

    **Conditioning** (``condition: [label, thickness, ...]``; CVAE, Sohn et al. 2015): the embedded
    condition ``y`` (:class:`~genvae.models.conditioning.ConditionEmbedding`: one-hot label, standardized
    attributes) enters the decoder concatenated to ``z`` before its first linear layer, ``p(x | z, y)``,
    and the encoder twice, ``q(z | x, y)``: as extra input channels broadcast over the image when the
    backbone's encoder opens with a convolution (``conv``, ``resnet``: its first convolution gets
    ``width`` more input channels), and concatenated to the flattened features before the linear head
    (every backbone, so also ``mlp`` and a user's class). Why the encoder input: ``z`` should hold the
    style and not the condition (a label swap then keeps the style and changes the class, and prior draws
    decoded under a label show that label), and only an encoder that sees ``y`` from its first layer can
    compute condition-free features; given at the head alone, ``y`` can only shift the posterior per
    condition, and in a first run the decoder kept reading the class from ``z`` (label swaps after 2
    epochs: 49% classified as the new label). An unconditional model has the same modules, shapes and
    state-dict keys as before conditioning existed.

    Args:
        latent_dim: size of the latent vector.
        encoder_outputs: how many vectors of ``latent_dim`` the encoder head emits (2 for mean/log-variance).
        condition: names the encoder and decoder are conditioned on: ``label`` and/or attribute names of
            the datamodule (``thickness``, ``slant``, ``length``, ``area``, ``width``, ``height``); None or
            empty: unconditional.
    """

    def __init__(
        self,
        latent_dim: int = 16,
        *,
        encoder_outputs: int = 1,
        condition: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.condition_names = check_condition_names(condition)
        width = 0
        self.condition_channels = False  # whether the encoder's first convolution takes the condition
        if self.condition_names:
            self.condition_embedding = ConditionEmbedding(self.condition_names)
            width = self.condition_embedding.width
            self.condition_columns = {
                name: ATTRIBUTE_NAMES.index(name) for name in self.condition_names if name != LABEL
            }
            self.condition_channels = widen_first_convolution(self.backbone.encoder, width)
        feature_shape = self.backbone.feature_shape
        features = math.prod(feature_shape)
        self.encoder_head = nn.Sequential(
            nn.Flatten(), nn.Linear(features + width, encoder_outputs * latent_dim)
        )
        self.decoder_head = nn.Sequential(
            nn.Linear(latent_dim + width, features), nn.ReLU(), nn.Unflatten(1, feature_shape)
        )

    def setup(self, stage: str) -> None:
        """Take the attribute conditions' columns from the datamodule's ``attribute_names``, and their
        standardization from its training split (once: a checkpoint restores it afterwards)."""
        super().setup(stage)
        embedding = self.condition_embedding
        if embedding is None or not embedding.attribute_names:
            return
        datamodule = getattr(self._trainer, "datamodule", None)
        self.use_attribute_order(getattr(datamodule, "attribute_names", None) or ATTRIBUTE_NAMES)
        train = (getattr(datamodule, "splits", None) or {}).get("train") or {}
        if not bool(embedding.statistics_set) and "attributes" in train:
            columns = torch.tensor([self.condition_columns[n] for n in embedding.attribute_names])
            embedding.set_statistics(train["attributes"][:, columns.to(train["attributes"].device)])
        elif not bool(embedding.statistics_set) and stage == "fit":
            raise ConfigError(
                f"model.condition: {list(embedding.attribute_names)} need data.init_args.attributes=true"
            )

    def use_attribute_order(self, names: Sequence[str]) -> None:
        """Read attribute conditions from the columns of ``batch["attributes"]`` named ``names`` (the
        datamodule's ``attribute_names``); a ConfigError when a conditioned attribute is not among them."""
        wanted = [name for name in self.condition_names if name != LABEL]
        missing = [name for name in wanted if name not in names]
        if missing:
            raise ConfigError(
                f"model.condition: {missing} not among the datamodule's attributes {list(names)}"
            )
        self.condition_columns = {name: list(names).index(name) for name in wanted}

    def encoder_output(self, x: Tensor, condition: Condition | None = None) -> Tensor:
        c = self.condition_vector(condition)
        if c is not None and self.condition_channels:
            planes = c.to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[2:])
            x = torch.cat([x, planes], 1)
        features = self.backbone.encoder(x)
        if c is not None:  # the head's Flatten leaves the flat [B, features + width] as it is
            features = torch.cat([features.flatten(1), c.to(features.dtype)], 1)
        return self.encoder_head(features)

    def decode_logits(self, z: Tensor, condition: Condition | None = None) -> Tensor:
        c = self.condition_vector(condition)
        if c is not None:
            z = torch.cat([z, c.to(z.dtype)], 1)
        return self.backbone.decoder(self.decoder_head(z))

    def decode(self, z: Tensor, condition: Condition | None = None) -> Tensor:
        return torch.sigmoid(self.decode_logits(z, condition))

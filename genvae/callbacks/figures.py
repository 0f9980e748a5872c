"""Figures of a generative model, logged with :func:`genvae.utils.images.log_image`.

Each callback draws its figure from the model of the run (on whatever device it is on) and the current
stage's dataloader, at the end of every ``every_n_epochs``-th validation epoch (not during the sanity
check) and at the end of testing, on global rank 0 only. Keys are ``<stage>/<name>`` (``val/samples``,
``test/interpolation``...). Random draws use their own seeded generator state, so a figure shows the same
noise every epoch and training draws the same noise with or without figures. In YAML::

    trainer:
      callbacks:
        - class_path: genvae.callbacks.Reconstructions
          init_args: {every_n_epochs: 5}

The per-dimension latent traversal lives in :mod:`genvae.callbacks.traversal`.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchvision.utils import make_grid

from genvae.errors import ConfigError
from genvae.latent.traversal import interpolate
from genvae.models.conditioning import batch_condition, condition_kwargs, draw_condition, take_condition
from genvae.utils.images import figure_to_array, log_image

__all__ = [
    "FigureCallback",
    "Interpolation",
    "LatentScatter",
    "Reconstructions",
    "Samples",
    "image_grid",
    "interpolate",
    "project_2d",
]

PADDING = 2  # pixels between grid tiles


def image_grid(rows: Tensor, scale: int = 1) -> Tensor:
    """Tile images ``[R, N, C, H, W]`` into a ``[3, H', W']`` grid, row r of the grid = ``rows[r]``.

    Tiles are separated by ``PADDING`` white pixels and the grid is enlarged ``scale`` times (nearest).
    """
    n_rows, n_cols = rows.shape[:2]
    grid = make_grid(
        rows.flatten(0, 1).detach().float().clamp(0, 1).cpu(), nrow=n_cols, padding=PADDING, pad_value=1.0
    )
    if scale > 1:
        grid = F.interpolate(grid.unsqueeze(0), scale_factor=scale, mode="nearest").squeeze(0)
    return grid


def project_2d(latents: Tensor) -> tuple[Tensor, Tensor]:
    """Latents ``[N, ...]`` flattened to ``[N, D]`` and shown in 2-D: the first two principal components
    when D > 2 (else the coordinates themselves, padded with zeros for D = 1). Returns the ``[N, 2]``
    coordinates and the fraction of variance each shown axis explains."""
    flat = latents.detach().flatten(1).double()
    centred = flat - flat.mean(dim=0)
    total = centred.pow(2).sum().clamp_min(1e-30)
    if flat.shape[1] > 2:
        _, singular, v_t = torch.linalg.svd(centred, full_matrices=False)
        return (centred @ v_t[:2].T).float(), (singular[:2].pow(2) / total).float()
    coords = F.pad(centred, (0, 2 - flat.shape[1]))
    return coords.float(), (coords.pow(2).sum(0) / total).float()


class FigureCallback(L.Callback):
    """Base of the figure callbacks: when to draw, where the images come from, how the result is logged.

    Args:
        every_n_epochs: draw at the end of every n-th validation epoch (0 = only at test end).
        seed: seed of the figure's random draws.
        scale: integer enlargement of image grids.
    """

    name = "figure"

    def __init__(self, every_n_epochs: int = 1, seed: int = 0, scale: int = 2) -> None:
        if every_n_epochs < 0 or scale < 1:
            raise ConfigError(f"{type(self).__name__}: every_n_epochs must be >= 0 and scale >= 1")
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self.scale = scale

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> Tensor | np.ndarray:
        """The figure: ``[3, H, W]`` float in [0, 1] or ``[H, W, 3]`` uint8."""
        raise NotImplementedError

    def log_figure(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.global_rank != 0:
            return
        device = pl_module.device
        cuda = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            torch.manual_seed(self.seed)
            was_training = pl_module.training
            pl_module.eval()
            try:
                figure = self.draw(trainer, pl_module, stage)
            finally:
                pl_module.train(was_training)
        log_image(trainer, f"{stage}/{self.name}", figure)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.every_n_epochs == 0:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.log_figure(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.log_figure(trainer, pl_module, "test")

    # ------------------------------------------------------------ data of the stage
    @staticmethod
    def batches(trainer: L.Trainer, stage: str, device: torch.device) -> Iterator[dict[str, Tensor]]:
        """Batches of the stage's (first) dataloader, on ``device``."""
        loaders = trainer.val_dataloaders if stage == "val" else trainer.test_dataloaders
        if isinstance(loaders, list | tuple):
            loaders = loaders[0] if loaders else None
        if loaders is None:
            return
        for batch in loaders:
            yield {key: value.to(device) for key, value in batch.items() if isinstance(value, Tensor)}

    def first_examples(
        self, trainer: L.Trainer, stage: str, n: int, device: torch.device
    ) -> dict[str, Tensor]:
        """The first ``n`` images and labels (and attributes, where the data has them) of the stage's
        dataloader (fewer when it has fewer)."""
        parts: dict[str, list[Tensor]] = {"image": [], "label": [], "attributes": []}
        count = 0
        for batch in self.batches(trainer, stage, device):
            parts["image"].append(batch["image"].float())
            parts["label"].append(batch["label"])
            if "attributes" in batch:
                parts["attributes"].append(batch["attributes"])
            count += len(batch["image"])
            if count >= n:
                break
        if not parts["image"]:
            raise RuntimeError(f"{type(self).__name__}: the {stage} dataloader yielded no images")
        return {key: torch.cat(values)[:n] for key, values in parts.items() if values}


class Reconstructions(FigureCallback):
    """Grid of ``num_images`` inputs with their reconstructions: ``columns`` inputs above their outputs.

    Uses the model's ``reconstruct(x)`` (``decode(encode(x))``).
    """

    name = "reconstructions"

    def __init__(self, num_images: int = 16, columns: int = 8, **kwargs: int) -> None:
        super().__init__(**kwargs)
        if num_images < 1 or columns < 1:
            raise ConfigError("Reconstructions: num_images and columns must be >= 1")
        self.num_images = num_images
        self.columns = columns

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> Tensor:
        examples = self.first_examples(trainer, stage, self.num_images, pl_module.device)
        x = examples["image"]
        columns = min(self.columns, len(x))
        x = x[: len(x) // columns * columns]  # whole rows only
        condition = take_condition(batch_condition(pl_module, examples), slice(0, len(x)))
        outputs = pl_module.reconstruct(x, **condition_kwargs(condition)).float().view_as(x)
        pairs = torch.stack([x.view(-1, columns, *x.shape[1:]), outputs.view(-1, columns, *x.shape[1:])], 1)
        return image_grid(pairs.flatten(0, 1), self.scale)  # input row, output row, input row, ...


class Samples(FigureCallback):
    """Grid of ``num_images`` images from the model's ``sample(n)`` (the prior, or a learned prior); a
    conditional model's under :func:`~genvae.models.conditioning.draw_condition` (label-conditional: the
    classes 0, 1, ..., 9, 0, ... in reading order)."""

    name = "samples"

    def __init__(self, num_images: int = 64, columns: int = 8, **kwargs: int) -> None:
        super().__init__(**kwargs)
        if num_images < 1 or columns < 1 or num_images % columns:
            raise ConfigError(
                "Samples: num_images and columns must be >= 1, num_images a multiple of columns"
            )
        self.num_images = num_images
        self.columns = columns

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not callable(getattr(pl_module, "sample", None)):
            raise ConfigError(
                f"Samples callback: {type(pl_module).__name__} has no sample(n) method; remove the callback "
                "from trainer.callbacks for this model"
            )

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> Tensor:
        condition = draw_condition(pl_module, self.num_images)
        images = pl_module.sample(self.num_images, **condition_kwargs(condition)).float()
        return image_grid(images.view(-1, self.columns, *images.shape[1:]), self.scale)


class Interpolation(FigureCallback):
    """Decoded linear interpolations ``t * z0 + (1 - t) * z1`` between a digit of class ``classes[0]``
    and one of ``classes[1]`` (``t`` = 1 to 0 left to right), one pair per row, inputs at both ends.

    Latents are the model's ``encode(x)`` and are decoded with ``decode(z)``. When the stage's data lacks
    one of the classes, the first two images with different labels are used instead (with a warning). A
    conditional model encodes each digit under its own condition and decodes the whole path under the first
    digit's: a row shows the style moving from one digit to the other within the first digit's class.

    Args:
        classes: the two labels to interpolate between.
        rows: number of pairs (the i-th image of each class on row i).
        steps: decoded points per row, endpoints included.
    """

    name = "interpolation"

    def __init__(
        self, classes: tuple[int, int] = (0, 7), rows: int = 4, steps: int = 10, **kwargs: int
    ) -> None:
        super().__init__(**kwargs)
        if len(classes) != 2 or rows < 1 or steps < 2:
            raise ConfigError("Interpolation: classes must be two labels, rows >= 1 and steps >= 2")
        self.classes = (int(classes[0]), int(classes[1]))
        self.rows = rows
        self.steps = steps

    def endpoints(self, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Indices of ``rows`` images of each of the two classes (fewer when the data has fewer)."""
        first, second = ((labels == c).nonzero().squeeze(1)[: self.rows] for c in self.classes)
        if len(first) == 0 or len(second) == 0:
            present = labels.unique()
            if len(present) < 2:
                raise RuntimeError("Interpolation: the data holds images of fewer than two classes")
            rank_zero_warn(
                f"Interpolation: classes {self.classes} not both present; using {present[:2].tolist()}"
            )
            first, second = ((labels == c).nonzero().squeeze(1)[: self.rows] for c in present[:2])
        n = min(len(first), len(second))
        return first[:n], second[:n]

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> Tensor:
        examples = self.first_examples(trainer, stage, 1000, pl_module.device)
        i0, i1 = self.endpoints(examples["label"])
        x0, x1 = examples["image"][i0], examples["image"][i1]
        condition = batch_condition(pl_module, examples)
        c0, c1 = take_condition(condition, i0), take_condition(condition, i1)
        z0, z1 = pl_module.encode(x0, **condition_kwargs(c0)), pl_module.encode(x1, **condition_kwargs(c1))
        path = interpolate(z0, z1, self.steps)  # [steps, rows, ...]
        # a conditional model: the style moves from x0's to x1's, the condition stays x0's
        along = None if c0 is None else {k: v.repeat(self.steps) for k, v in c0.items()}
        decoded = pl_module.decode(path.flatten(0, 1), **condition_kwargs(along)).float()
        decoded = decoded.view(self.steps, len(x0), *x0.shape[1:])
        rows = torch.cat([x0.unsqueeze(1), decoded.transpose(0, 1), x1.unsqueeze(1)], dim=1)
        return image_grid(rows, self.scale)


class LatentScatter(FigureCallback):
    """Scatter plot of the latents (``encode(x)``, flattened) of up to ``max_points`` images of the stage,
    coloured by label: the latent coordinates when the latent has 2 dimensions, else its first two
    principal components (PCA)."""

    name = "latent_scatter"

    def __init__(self, max_points: int = 2000, **kwargs: int) -> None:
        super().__init__(**kwargs)
        if max_points < 2:
            raise ConfigError("LatentScatter: max_points must be >= 2")
        self.max_points = max_points

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> np.ndarray:
        from matplotlib.figure import Figure

        examples = self.first_examples(trainer, stage, self.max_points, pl_module.device)
        condition = batch_condition(pl_module, examples)
        starts = range(0, len(examples["image"]), 500)
        latents = torch.cat(
            [
                pl_module.encode(x, **condition_kwargs(take_condition(condition, slice(i, i + 500))))
                for i, x in zip(starts, examples["image"].split(500), strict=True)
            ]
        )
        coords, explained = project_2d(latents)
        coords, labels = coords.cpu().numpy(), examples["label"].cpu().numpy()
        dims = latents[0].numel()
        figure = Figure(figsize=(6, 5))
        axes = figure.add_subplot()
        points = axes.scatter(coords[:, 0], coords[:, 1], c=labels, cmap="tab10", vmin=-0.5, vmax=9.5, s=6)
        figure.colorbar(points, ax=axes, ticks=range(10), label="label")
        method = "PCA" if dims > 2 else "coordinates"
        axes.set_title(f"{stage} latents ({dims} dims, {method}), {len(coords)} images")
        axes.set_xlabel(f"axis 1 ({explained[0]:.0%} of variance)")
        axes.set_ylabel(f"axis 2 ({explained[1]:.0%} of variance)")
        figure.tight_layout()
        return figure_to_array(figure)

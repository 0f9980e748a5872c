"""``genvae predict`` output: one ``predictions.npz`` per run with per-image latents, attributes and errors.

Added by the CLI to every run (it acts in ``predict`` only). For each predicted image (the datamodule's
predict split, the test set for MNIST) it keeps, sorted by ``index``:

- ``index`` ``[N]`` (position in the split) and ``label`` ``[N]``;
- VAE family (``posterior``): ``mu`` and ``logvar`` ``[N, D]``, the posterior mean and log-variance;
  VQ-VAE (``encode_indices``): ``codes`` ``[N, M, M]``, the code indices; other models with ``encode``:
  ``latent`` ``[N, ...]``;
- ``attributes`` ``[N, 6]``: the Morpho-MNIST attributes of the image (``batch["attributes"]`` when the
  datamodule gives them, else measured), ``reconstruction_attributes`` ``[N, 6]`` those of the
  reconstruction, ``attribute_names`` ``[6]`` their names (NaN rows for blank images);
- ``recon_mse`` ``[N]``: mean squared error per pixel of the reconstruction ([0, 1] scale).

Models without ``encode`` / ``decode`` (the classifier) get every tensor of their ``predict_step`` output.
Format: NumPy ``.npz`` (``numpy.load``): no dependency beyond NumPy, keeps each array's shape and dtype
(the ``[N, 7, 7]`` code grids too, which a flat Parquet table would have to split into columns), and
loads lazily per array. The file is ``<log dir>/predictions.npz`` (``predictions.rank<r>.npz`` per rank
under multi-process prediction), written atomically.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from genvae.data.attributes import ATTRIBUTE_NAMES, morpho_attributes, morpho_columns
from genvae.models.conditioning import batch_condition, condition_kwargs
from genvae.utils.atomic import atomic_write_bytes

__all__ = ["PredictionWriter", "prediction_arrays"]


@torch.no_grad()
def prediction_arrays(
    module: L.LightningModule, batch: dict[str, Tensor], prediction: Any
) -> dict[str, Tensor]:
    """The per-image rows of one predicted batch (see the module docstring), on the CPU."""
    if not (callable(getattr(module, "encode", None)) and callable(getattr(module, "decode", None))):
        rows = prediction if isinstance(prediction, dict) else {"prediction": prediction}
        return {key: value.detach().cpu() for key, value in rows.items() if isinstance(value, Tensor)}
    x = batch["image"].float()
    condition = condition_kwargs(batch_condition(module, batch))
    rows: dict[str, Tensor] = {"index": batch["index"], "label": batch["label"]}
    if callable(getattr(module, "posterior", None)):
        rows["mu"], rows["logvar"] = module.posterior(x, **condition)
        latent = rows["mu"]
    elif callable(getattr(module, "encode_indices", None)):
        rows["codes"] = module.encode_indices(x)
        latent = module.encode(x)
    else:
        rows["latent"] = latent = module.encode(x, **condition)
    reconstruction = prediction.get("reconstruction") if isinstance(prediction, dict) else None
    if reconstruction is None:
        reconstruction = module.decode(latent, **condition)
    reconstruction = reconstruction.float()
    rows["recon_mse"] = (reconstruction - x).pow(2).flatten(1).mean(dim=1)
    rows["attributes"] = (
        morpho_columns(batch["attributes"]).float() if "attributes" in batch else morpho_attributes(x)
    )
    rows["reconstruction_attributes"] = morpho_attributes(reconstruction)
    return {key: value.detach().cpu() for key, value in rows.items()}


class PredictionWriter(BasePredictionWriter):
    """Collect :func:`prediction_arrays` of every predicted batch and write them as one ``.npz`` file.

    Args:
        filename: name of the file in the run's log dir.
    """

    def __init__(self, filename: str = "predictions.npz") -> None:
        super().__init__(write_interval="batch")
        self.filename = filename
        self.rows: dict[str, list[Tensor]] = defaultdict(list)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows = defaultdict(list)

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        for key, value in prediction_arrays(pl_module, batch, prediction).items():
            self.rows[key].append(value)

    def output_path(self, trainer: L.Trainer) -> Path:
        name = self.filename
        if trainer.world_size > 1:
            stem, dot, suffix = name.rpartition(".")
            name = f"{stem}.rank{trainer.global_rank}{dot}{suffix}"
        return Path(trainer.log_dir or trainer.default_root_dir) / name

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.rows:
            return
        arrays = {key: torch.cat(parts).numpy() for key, parts in self.rows.items()}
        if "index" in arrays:
            order = np.argsort(arrays["index"], kind="stable")
            arrays = {key: value[order] for key, value in arrays.items()}
        if "attributes" in arrays:
            arrays["attribute_names"] = np.array(ATTRIBUTE_NAMES)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        path = self.output_path(trainer)
        atomic_write_bytes(path, buffer.getvalue())
        self.rows = defaultdict(list)
        rank_zero_info(f"predictions of {len(next(iter(arrays.values())))} images -> {path}")

"""Send an image to whatever logger the run has: W&B panel, TensorBoard image, or a PNG file.

Every figure callback goes through :func:`log_image`, so a figure appears in W&B when a
``WandbLogger`` is configured, in TensorBoard with a ``TensorBoardLogger``, and otherwise as
``<log_dir>/figures/<key>/step<N>.png`` (written atomically) next to the run's other files.
"""

from __future__ import annotations

import io
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from genvae.utils.atomic import atomic_write_bytes

__all__ = ["figure_to_array", "log_image", "png_bytes", "to_uint8_hwc"]


def to_uint8_hwc(image: Tensor | np.ndarray) -> np.ndarray:
    """``[C, H, W]`` float in [0, 1] (torch) or ``[H, W, C]`` uint8 (numpy) -> ``[H, W, 3]`` uint8."""
    if isinstance(image, Tensor):
        image = image.detach().float().cpu().clamp(0, 1)
        if image.ndim == 2:
            image = image.unsqueeze(0)
        array = (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    else:
        array = np.asarray(image)
        if array.dtype != np.uint8:
            array = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
        if array.ndim == 2:
            array = array[..., None]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array[..., :3])


def figure_to_array(figure: object) -> np.ndarray:
    """Render a matplotlib figure to an ``[H, W, 3]`` uint8 array and close it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)  # type: ignore[attr-defined]
    plt.close(figure)  # type: ignore[arg-type]
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def figure_dir(trainer: L.Trainer) -> Path:
    """Where PNG figures go when no logger takes images: the run's log dir, else default_root_dir."""
    base = trainer.log_dir or trainer.default_root_dir
    return Path(base) / "figures"


def png_bytes(array: np.ndarray) -> bytes:
    """PNG encoding of an ``[H, W, 3]`` uint8 array."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def log_image(
    trainer: L.Trainer, key: str, image: Tensor | np.ndarray, caption: str | None = None
) -> Path | None:
    """Log ``image`` under ``key`` to every image-capable logger; return the PNG path when one was written.

    Only global rank 0 logs. Images go to W&B (``log_image``) and TensorBoard (``add_image``) loggers;
    when the run has neither, the image is saved as ``figures/<key>/step<N>.png`` in the run directory.
    """
    if trainer.global_rank != 0:
        return None
    array = to_uint8_hwc(image)
    step = trainer.global_step
    taken = False
    for logger in trainer.loggers:
        name = type(logger).__name__
        if name == "WandbLogger":
            extra = {"caption": [caption]} if caption else {}  # WandbLogger rejects caption=None
            logger.log_image(key=key, images=[array], step=step, **extra)
            taken = True
        elif name == "TensorBoardLogger":
            logger.experiment.add_image(key, array, global_step=step, dataformats="HWC")
            taken = True
    if taken:
        return None
    path = figure_dir(trainer) / key / f"step{step:07d}.png"
    atomic_write_bytes(path, png_bytes(array))
    return path

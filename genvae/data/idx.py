"""Reading and writing IDX files (the MNIST on-disk format), plain or gzip-compressed."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from genvae.errors import ConfigError
from genvae.utils.atomic import atomic_write_bytes

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4")}


def read_idx(path: str | Path) -> torch.Tensor:
    """Read an IDX file (``.gz`` or raw) into a tensor; a corrupt file raises :class:`ConfigError` naming it."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise ConfigError(f"{path}: cannot read IDX file ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise ConfigError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ConfigError(f"{path}: truncated or corrupt IDX file ({len(raw)} bytes, expected {expected})")
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def write_idx(path: str | Path, tensor: torch.Tensor) -> None:
    """Write a uint8 tensor as an IDX file (gzip-compressed when ``path`` ends in ``.gz``), atomically."""
    path = Path(path)
    array = tensor.detach().cpu().numpy()
    if array.dtype != np.uint8:
        raise ValueError("write_idx supports uint8 tensors only")
    payload = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    payload += array.tobytes()
    if path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    atomic_write_bytes(path, payload)

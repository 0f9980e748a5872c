"""Fits of a checkpoint, cached beside it: what a command computes from a model and its data, done once.

``genvae sample``, ``genvae edit``, the evaluation callbacks and the Python API fit things that a checkpoint
and its training data determine: the class latents of a label-conditional model
(:class:`~genvae.latent.class_latents.ClassLatents`, every training digit encoded: most of a ``genvae
sample`` call before this cache) and the attribute calibration
(:class:`~genvae.latent.control.AttributeControl`). Each kind is one file beside the checkpoint,
``<checkpoint stem>.<kind>.pt`` (the calibration keeps its readable ``<checkpoint stem>.control.json``), and
is keyed by a :class:`FitKey`:

- the SHA-256 of the checkpoint file (a retrained ``last.ckpt`` is another model) and the model's class;
- the SHA-256 of the data it was fitted on (:func:`tensors_sha256` of the split's images, labels and
  attributes: another root, split seed or source is other data);
- the kind's format version (bumped when its fitting code changes).

A file is read only when its key is the one asked for and its content matches the SHA-256 stored with it
(as the attribute cache, :mod:`genvae.data.datamodule`); otherwise, or when it is missing, the fit runs and
the file is written atomically (:func:`~genvae.utils.atomic.atomic_write_bytes`), with one line on stderr
saying why (:func:`announce_fit`). The fits are deterministic functions of the weights and the data, and a
cached file holds the very tensors the fit returned, so a result computed from the cache is the one
computed without it (the results runner's ``genvae test`` numbers do not depend on it).
"""

from __future__ import annotations

import hashlib
import io
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from genvae.utils.atomic import atomic_write_bytes

__all__ = [
    "DATA_KEYS",
    "FORMAT",
    "FitKey",
    "announce_fit",
    "cached_tensors",
    "file_sha256",
    "fit_key",
    "fitted_path",
    "key_mismatch",
    "read_fitted",
    "tensors_sha256",
    "write_fitted",
]

FORMAT = "genvae-fitted"
DATA_KEYS = ("image", "label", "attributes")  # the tensors of a split that a fit can depend on
_CHUNK = 1 << 24

_file_digests: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """The SHA-256 (hex) of a file's bytes, remembered per process for an unchanged file (path, size,
    modification time): a command asks for its checkpoint's digest once per fit it looks up."""
    path = Path(path).resolve()
    stat = path.stat()
    memo = (str(path), stat.st_size, stat.st_mtime_ns)
    if memo not in _file_digests:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        _file_digests[memo] = digest.hexdigest()
    return _file_digests[memo]


def tensors_sha256(tensors: Mapping[str, Tensor]) -> str:
    """The SHA-256 (hex) of named tensors: each name, dtype, shape and bytes, in name order (a view hashes
    as its contiguous copy; values on an accelerator are read back once)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name].detach()
        digest.update(f"{name}|{value.dtype}|{list(value.shape)}|".encode())
        if value.dtype == torch.bfloat16:  # numpy has no bfloat16: hash its 16-bit patterns
            value = value.view(torch.int16)
        digest.update(value.cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class FitKey:
    """What a cached fit is a function of: its ``kind`` and ``version``, the ``model`` class, the SHA-256
    of the ``checkpoint`` file and of the ``data`` it was fitted on."""

    kind: str
    version: int
    model: str
    checkpoint: str
    data: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def fit_key(
    kind: str, version: int, model: nn.Module, checkpoint: str | Path, data: Mapping[str, Tensor]
) -> FitKey:
    """The key of a ``kind`` fit of ``model`` (with the weights of ``checkpoint``) on the split ``data``
    (its :data:`DATA_KEYS` tensors)."""
    used = {name: value for name, value in data.items() if name in DATA_KEYS}
    return FitKey(kind, version, type(model).__name__, file_sha256(checkpoint), tensors_sha256(used))


def fitted_path(checkpoint: str | Path, kind: str) -> Path:
    """``<checkpoint stem>.<kind>.pt`` beside the checkpoint."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.{kind}.pt")


def key_mismatch(
    found: Mapping[str, object] | None, expected: FitKey, ignore: tuple[str, ...] = ()
) -> str | None:
    """Why a stored key is not ``expected`` (the first field that differs, fields in ``ignore`` aside), in
    words; None when it is."""
    if not isinstance(found, Mapping):
        return "holds no fit key (written by an older genvae)"
    wanted = expected.as_dict()
    for field, cause in (
        ("kind", "another kind of fit"),
        ("version", "written by another version of its fitting code"),
        ("model", "fitted for another model class"),
        ("checkpoint", "fitted from another checkpoint"),
        ("data", "fitted on other data"),
    ):
        if field not in ignore and found.get(field) != wanted[field]:
            return cause
    return None


def announce_fit(path: Path, what: str, cause: str | None) -> None:
    """The one line a command prints before a fit it caches: why it fits (``cause``: the stored file is
    stale or damaged; None: there is none yet) and where the fit goes."""
    if cause is None:
        print(f"genvae: fitting {what}; cached in {path}", file=sys.stderr)
    else:
        print(f"genvae: {path}: {cause}; refitting {what}", file=sys.stderr)


def read_fitted(path: Path, key: FitKey) -> tuple[dict[str, Tensor] | None, str | None]:
    """The tensors stored at ``path`` when the file is whole, holds a fit of ``key`` and its tensors match
    their checksum: ``(tensors, None)``; else ``(None, cause)``, ``cause`` None when there is no file."""
    if not path.is_file():
        return None, None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(stored, dict) or stored.get("format") != FORMAT:
            return None, "not a genvae fit file"
        cause = key_mismatch(stored.get("key"), key)
        if cause is not None:
            return None, cause
        tensors = stored["tensors"]
        if stored.get("sha256") != tensors_sha256(tensors):
            return None, "content does not match its checksum"
        return tensors, None
    except Exception as err:  # truncated or foreign: torch's own message is a paragraph
        return None, f"unreadable (truncated or not a genvae fit file: {type(err).__name__})"


def write_fitted(path: Path, key: FitKey, tensors: Mapping[str, Tensor]) -> None:
    """Store ``tensors`` (moved to the CPU) with ``key`` and their checksum at ``path``, atomically; a
    folder that cannot be written costs a warning line, not the command."""
    tensors = {name: value.detach().cpu() for name, value in tensors.items()}
    buffer = io.BytesIO()
    torch.save(
        {"format": FORMAT, "key": key.as_dict(), "tensors": tensors, "sha256": tensors_sha256(tensors)},
        buffer,
    )
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as err:
        print(f"genvae: warning: {path}: cannot cache the fit ({err})", file=sys.stderr)


def cached_tensors(
    path: Path, key: FitKey, what: str, fit: Callable[[], Mapping[str, Tensor]]
) -> dict[str, Tensor]:
    """The tensors of the fit ``key`` read from ``path``, or ``fit()`` run (announced in one line naming
    ``what`` is fitted) and stored there."""
    tensors, cause = read_fitted(path, key)
    if tensors is not None:
        return tensors
    announce_fit(path, what, cause)
    tensors = dict(fit())
    write_fitted(path, key, tensors)
    return tensors

"""Attribute control in physical units: "this digit, 1 px thicker and 0.2 rad less slanted".

Each controlled attribute (one of :data:`~genvae.data.attributes.ATTRIBUTE_NAMES`, measured with the
project's Morpho-MNIST morphometrics, :func:`~genvae.data.attributes.morpho_attributes`) is tied to one
latent dim: the regularized dim of an AR-VAE (Pati & Lerch 2020), or for any other model with a flat latent
the most informative dim of the interpretability metric (Adel et al. 2018,
:func:`genvae.metrics.disentanglement.interpretability`).

**Calibration** (:meth:`AttributeControl.fit`). For each attribute ``a`` with dim ``d``, the latents of
``num_bases`` calibration images have dim ``d`` swept over ``steps`` values from ``-span`` to ``+span``
standard deviations around its mean; ``a`` is measured on every decoded image and averaged over the bases:
the response curve ``r_a(z_d)`` in physical units. It is made monotone (running maximum in its direction,
rising or falling) so it can be inverted.

**Edit** (:meth:`AttributeControl.edit`). A request is a change relative to the attribute measured on the
unedited reconstruction (or an absolute value). The first guess moves ``z_d`` to
``r_a^-1(r_a(z_d) + change)``; then, since one dim's effect differs from digit to digit and saturates
(height), each edit is refined in closed loop: decode, measure, and a secant step on each requested dim
``z_d += (target - measured) / slope`` per digit, the slope from the last two iterates (the calibration
curve's local slope when the secant is unreliable), steps bounded by one latent std. The best iterate per
digit (smallest worst-case error in attribute stds) is kept, so refining never makes an edit worse.
Requests beyond the range the calibration sweep reached warn (extrapolation).

**Conditional models** (``condition_names``, :mod:`genvae.models.conditioning`): every encode and decode
runs under the condition of its digit (``condition=`` of :meth:`AttributeControl.fit`,
:meth:`~AttributeControl.reference` and :meth:`~AttributeControl.apply`), so an attribute edit of a
label-conditional AR-VAE keeps the digit's own label. ``apply(..., counterfactual={"label": new})`` decodes
the edited latents under another condition: the latent (the style) is kept and the class changes (encode
with the true label, decode with the new one), and attribute requests are then met on the new digit,
relative to the attributes of the unedited reconstruction.

The calibration is saved as a small JSON file (:meth:`AttributeControl.save`), by convention
``<checkpoint stem>.control.json`` beside the checkpoint (:func:`calibration_path`), with the SHA-256 of its
content and, when fitted from a checkpoint, the key of that fit (checkpoint and data, :mod:`genvae.latent.fitted`):
:meth:`AttributeControl.cached` reads it back only for the same checkpoint (and data), and refits otherwise.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from genvae.data.attributes import ATTRIBUTE_NAMES, morpho_attributes
from genvae.errors import ConfigError
from genvae.latent.fitted import FitKey, announce_fit, fit_key, key_mismatch
from genvae.latent.traversal import decode_latents, encode_images
from genvae.metrics.disentanglement import interpretability
from genvae.models.conditioning import Condition, take_condition
from genvae.utils.atomic import atomic_write_bytes

__all__ = [
    "AttributeCalibration",
    "AttributeControl",
    "EditResult",
    "ExtrapolationWarning",
    "calibration_path",
    "check_flat_latent",
]

FORMAT = "genvae-attribute-control"
VERSION = 2  # 2: the content's SHA-256 and the fit's key (fitted_on); files of version 1 still load
READABLE_VERSIONS = (1, 2)
CACHE_KIND = "control"
Measure = Callable[[Tensor], Tensor]


class ExtrapolationWarning(UserWarning):
    """An edit asks for an attribute value beyond the range its calibration sweep reached."""


def calibration_path(checkpoint: str | Path) -> Path:
    """``<checkpoint stem>.control.json`` beside the checkpoint."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.control.json")


def _content_sha256(payload: Mapping[str, object]) -> str:
    """The SHA-256 of a calibration's JSON content, its own ``sha256`` entry left out."""
    content = {key: value for key, value in payload.items() if key != "sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def check_flat_latent(model: nn.Module, who: str = "AttributeControl") -> int:
    """The model's ``latent_dim``, or a ConfigError when it has no flat latent vector to control."""
    latent_dim = getattr(model, "latent_dim", None)
    if not isinstance(latent_dim, int) or not callable(getattr(model, "decode", None)):
        raise ConfigError(
            f"{who}: {type(model).__name__} has no flat latent with attribute dims; attribute control needs "
            "an AR-VAE or another model of the VAE family (or an AE)"
        )
    return latent_dim


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear ``f(x)`` through ascending ``xp``, extended linearly by the end segments."""
    xp, fp = xp.to(x), fp.to(x)
    i = torch.searchsorted(xp, x.contiguous()).clamp(1, len(xp) - 1)
    x0, x1, f0, f1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    return f0 + (x - x0) * (f1 - f0) / (x1 - x0)


@dataclass(frozen=True)
class AttributeCalibration:
    """How latent dim ``dim`` moves attribute ``name``: response ``[T]`` (physical units, monotone) at the
    latent values ``grid [T]`` (ascending), the attribute's std on the calibration images and the dim's
    latent std."""

    name: str
    dim: int
    grid: Tensor
    response: Tensor
    std: float
    latent_std: float

    @property
    def sign(self) -> float:
        """+1 when the attribute rises with the dim, -1 when it falls."""
        return 1.0 if float(self.response[-1]) >= float(self.response[0]) else -1.0

    def _rising(self) -> Tensor:
        """``sign * response`` made strictly increasing (a tiny ramp breaks saturated flats) for inversion."""
        rising = self.sign * self.response.double()
        spread = max(float(rising[-1] - rising[0]), 1e-6)
        return rising + 1e-9 * spread * torch.arange(len(rising), dtype=torch.float64)

    def response_at(self, z: Tensor) -> Tensor:
        """The calibrated attribute at latent values ``z`` (linear beyond the sweep)."""
        return _interp(z.double(), self.grid.double(), self.response.double()).to(z.dtype)

    def latent_at(self, value: Tensor) -> Tensor:
        """The latent value whose calibrated attribute is ``value`` (inverse of :meth:`response_at`)."""
        return _interp(self.sign * value.double(), self._rising(), self.grid.double()).to(value.dtype)

    def slope_at(self, z: Tensor) -> Tensor:
        """Local slope ``dr/dz`` of the calibration at ``z``, at least 5% of the end-to-end slope in size."""
        grid, response = self.grid.to(z), self.response.to(z)
        i = torch.searchsorted(grid, z.contiguous()).clamp(1, len(grid) - 1)
        local = (response[i] - response[i - 1]) / (grid[i] - grid[i - 1])
        overall = abs(float(response[-1] - response[0])) / float(grid[-1] - grid[0])
        return self.sign * (local * self.sign).clamp(min=max(0.05 * overall, 1e-6))

    def to_dict(self) -> dict[str, object]:
        return {
            "dim": self.dim,
            "grid": [float(v) for v in self.grid],
            "response": [float(v) for v in self.response],
            "std": self.std,
            "latent_std": self.latent_std,
        }


@dataclass
class EditResult:
    """Edited images ``[N, C, H, W]`` in [0, 1] with their latents ``[N, D]``; attributes ``[N, 6]`` (in
    :data:`ATTRIBUTE_NAMES` order) measured on the unedited reconstruction (``original``) and on the edited
    images (``measured``); ``target [N, 6]`` holds the requested values (NaN where nothing was asked)."""

    images: Tensor
    latents: Tensor
    reconstruction: Tensor
    original: Tensor
    measured: Tensor
    target: Tensor


class Reference(NamedTuple):
    """The unedited digits an edit starts from: latents ``[N, D]``, reconstructions ``[N, C, H, W]`` and
    the attributes measured on them ``[N, 6]``, and the digits' condition for a conditional model (see
    :meth:`AttributeControl.reference`)."""

    latents: Tensor
    reconstruction: Tensor
    original: Tensor
    condition: Condition | None = None


class AttributeControl:
    """Edit digits in physical units of their Morpho-MNIST attributes through a model's latent dims.

    Build with :meth:`fit` (or :meth:`load` a saved calibration), then ``edit(images, {"thickness": +1.0})``.

    Args:
        model: a model with a flat latent (``latent_dim``), ``encode`` and ``decode``.
        calibrations: one :class:`AttributeCalibration` per controlled attribute, by name.
        rounds: closed-loop refinement rounds per edit (0 = the calibration's open-loop guess).
        tolerance: stop refining once every digit is within this many attribute stds.
        measure: images ``[N, C, H, W]`` -> attributes ``[N, A]`` (default: the six Morpho-MNIST
            morphometrics; :func:`~genvae.data.attributes.all_attributes` adds intensity).
        batch_size: images encoded / decoded per forward pass.
        attribute_names: the names of ``measure``'s columns (default :data:`ATTRIBUTE_NAMES`; with
            ``all_attributes``, :data:`~genvae.data.attributes.ALL_ATTRIBUTE_NAMES`).
    """

    def __init__(
        self,
        model: nn.Module,
        calibrations: Mapping[str, AttributeCalibration],
        rounds: int = 6,
        tolerance: float = 0.02,
        measure: Measure = morpho_attributes,
        batch_size: int = 1000,
        attribute_names: Sequence[str] = ATTRIBUTE_NAMES,
    ) -> None:
        if rounds < 0 or tolerance < 0 or batch_size < 1:
            raise ConfigError("AttributeControl: rounds and tolerance must be >= 0, batch_size >= 1")
        self.model = model
        self.latent_dim = check_flat_latent(model)
        self.calibrations = dict(calibrations)
        self.rounds = rounds
        self.tolerance = tolerance
        self.measure = measure
        self.batch_size = batch_size
        self.attribute_names = tuple(attribute_names)

    # ------------------------------------------------------------------ calibration
    @classmethod
    def fit(
        cls,
        model: nn.Module,
        images: Tensor,
        attributes: Tensor,
        names: Sequence[str] = ATTRIBUTE_NAMES,
        num_bases: int = 64,
        steps: int = 13,
        span: float = 3.0,
        condition: Condition | None = None,
        **kwargs: object,
    ) -> AttributeControl:
        """Calibrate each attribute of ``names`` on ``images [N, C, H, W]`` (in [0, 1], or uint8) with their
        ``attributes [N, 6]`` (physical units, :data:`ATTRIBUTE_NAMES` order); ``condition``: the images'
        condition for a conditional model (each sweep decodes under its base digit's condition).

        The dim of an attribute is the AR-VAE's regularized dim when the model regularizes it, else the most
        informative dim of the interpretability metric on these images. ``kwargs`` go to the constructor.
        """
        latent_dim = check_flat_latent(model)
        known = tuple(kwargs.get("attribute_names", ATTRIBUTE_NAMES))  # type: ignore[arg-type]
        unknown = [name for name in names if name not in known]
        if unknown or not names:
            raise ConfigError(f"AttributeControl: unknown attributes {unknown}; choose from {list(known)}")
        if attributes.dim() != 2 or attributes.shape != (len(images), len(known)):
            raise ValueError(
                f"expected attributes [N={len(images)}, {len(known)}], got {list(attributes.shape)}"
            )
        if steps < 2 or span <= 0 or num_bases < 1:
            raise ConfigError("AttributeControl.fit: steps must be >= 2, span > 0 and num_bases >= 1")
        control = cls(model, {}, **kwargs)  # type: ignore[arg-type]
        latents = encode_images(model, images, control.batch_size, condition)
        if latents.dim() != 2 or latents.shape[1] != latent_dim:
            raise ConfigError(
                f"AttributeControl: {type(model).__name__}.encode gives latents of shape "
                f"{list(latents.shape)}, not [N, latent_dim={latent_dim}]"
            )
        attributes = attributes.to(latents.device).float()
        finite = latents.isfinite().all(1) & attributes.isfinite().all(1)
        latents, attributes = latents[finite], attributes[finite]
        condition = take_condition(condition, finite)
        if len(latents) < 3:
            raise ValueError(
                f"AttributeControl.fit: need at least 3 images with finite attributes, got {len(latents)}"
            )
        dims = cls._dims(model, latents, attributes, names, control.attribute_names)
        mean, std = latents.mean(0), latents.std(0).clamp(min=1e-6)
        offsets = torch.linspace(-span, span, steps, device=latents.device)
        bases = latents[:num_bases]  # [K, D]
        sweep = bases.repeat(len(names), steps, 1, 1)  # [A, T, K, D]
        dims_t = torch.tensor(dims, device=latents.device)
        grids = mean[dims_t].unsqueeze(1) + offsets * std[dims_t].unsqueeze(1)  # [A, T]
        sweep[torch.arange(len(names)), :, :, dims_t] = grids.unsqueeze(-1)
        repeats = len(names) * steps  # sweep.flatten(0, 2) runs over the bases fastest
        bases_condition = take_condition(condition, slice(0, len(bases)))
        repeated = None if condition is None else {k: v.repeat(repeats) for k, v in bases_condition.items()}
        decoded = decode_latents(model, sweep.flatten(0, 2), control.batch_size, repeated)
        measured = control.measure(decoded).view(len(names), steps, len(bases), -1)
        calibrations = {}
        for i, name in enumerate(names):
            column = control.attribute_names.index(name)
            curve = measured[i, :, :, column].nanmean(dim=1)  # [T], NaN where every image is blank
            keep = curve.isfinite()
            if keep.sum() < 2:
                raise ValueError(
                    f"AttributeControl.fit: every image of the {name} sweep (z{dims[i]}) is blank"
                )
            grid, curve = grids[i][keep], curve[keep]
            sign = 1.0 if float(curve[-1]) >= float(curve[0]) else -1.0
            monotone = sign * torch.cummax(sign * curve, dim=0).values
            calibrations[name] = AttributeCalibration(
                name=name,
                dim=dims[i],
                grid=grid.double().cpu(),
                response=monotone.double().cpu(),
                std=float(attributes[:, column].std()),
                latent_std=float(std[dims[i]]),
            )
        control.calibrations = calibrations
        return control

    @staticmethod
    def _dims(
        model: nn.Module, latents: Tensor, attributes: Tensor, names: Sequence[str], columns: Sequence[str]
    ) -> list[int]:
        regularized = dict(
            zip(
                getattr(model, "regularized_attributes", ()),
                getattr(model, "regularized_dims", ()),
                strict=True,
            )
        )
        informative = interpretability(latents, attributes)[0].tolist()
        return [int(regularized.get(name, informative[columns.index(name)])) for name in names]

    # ------------------------------------------------------------------ save / load
    def to_dict(self) -> dict[str, object]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": type(self.model).__name__,
            "latent_dim": self.latent_dim,
            "attributes": {name: cal.to_dict() for name, cal in self.calibrations.items()},
        }

    def save(self, path: str | Path, key: FitKey | None = None) -> Path:
        """Write the calibration as JSON (atomically), with the SHA-256 of its content and the ``key`` of
        the fit when it is one of a checkpoint (:meth:`cached`); return the path."""
        path = Path(path)
        payload = self.to_dict()
        if key is not None:
            payload["fitted_on"] = key.as_dict()
        payload["sha256"] = _content_sha256(payload)
        atomic_write_bytes(path, (json.dumps(payload, indent=1) + "\n").encode())
        return path

    @classmethod
    def load(cls, path: str | Path, model: nn.Module, **kwargs: object) -> AttributeControl:
        """The calibration saved at ``path``, bound to ``model``; a ConfigError naming the file when it is
        missing, unreadable, damaged (its content no longer matches its SHA-256) or made for another model."""
        path = Path(path)
        try:
            payload = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: calibration file not found") from None
        except (OSError, ValueError) as err:
            raise ConfigError(f"{path}: unreadable calibration ({err})") from None
        try:
            return cls._from_payload(payload, model, **kwargs)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    @classmethod
    def _from_payload(cls, payload: object, model: nn.Module, **kwargs: object) -> AttributeControl:
        if (
            not isinstance(payload, dict)
            or payload.get("format") != FORMAT
            or payload.get("version") not in READABLE_VERSIONS
        ):
            raise ConfigError(f"not a genvae attribute-control calibration (format {FORMAT} v{VERSION})")
        if "sha256" in payload and payload["sha256"] != _content_sha256(payload):
            raise ConfigError("damaged calibration (its content does not match its SHA-256)")
        latent_dim = check_flat_latent(model)
        if payload["latent_dim"] != latent_dim or payload["model"] != type(model).__name__:
            raise ConfigError(
                f"calibrated for a {payload['model']} with latent_dim {payload['latent_dim']}, not this "
                f"{type(model).__name__} with latent_dim {latent_dim}; delete it to recalibrate"
            )
        calibrations = {
            name: AttributeCalibration(
                name=name,
                dim=int(entry["dim"]),
                grid=torch.tensor(entry["grid"], dtype=torch.float64),
                response=torch.tensor(entry["response"], dtype=torch.float64),
                std=float(entry["std"]),
                latent_std=float(entry["latent_std"]),
            )
            for name, entry in payload["attributes"].items()
        }
        return cls(model, calibrations, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def cached(
        cls,
        checkpoint: str | Path,
        model: nn.Module,
        data: Mapping[str, Tensor],
        names: Sequence[str],
        fit: Callable[[], AttributeControl],
        *,
        any_data: bool = False,
        save: bool = True,
        **kwargs: object,
    ) -> AttributeControl:
        """The calibration of ``model`` (the weights of ``checkpoint``) saved at
        ``<checkpoint stem>.control.json`` when it was fitted from this checkpoint on ``data`` (the rows
        it is fitted on: ``image``, ``label``, ``attributes``; on any data with ``any_data``) and calibrates
        ``names``; else ``fit()``, announced in one line and, with ``save``, saved there with its key.
        ``kwargs`` (``rounds``, ...) go to the loaded control."""
        path = calibration_path(checkpoint)
        key = fit_key(CACHE_KIND, VERSION, model, checkpoint, data)
        control, cause = cls._read_cached(path, model, key, names, any_data, **kwargs)
        if control is not None:
            return control
        if save or cause is not None:
            announce_fit(path, f"the attribute calibration on {len(data.get('image', ()))} images", cause)
        control = fit()
        if save:
            try:
                control.save(path, key)
            except OSError as err:
                print(f"genvae: warning: {path}: cannot save the calibration ({err})", file=sys.stderr)
        return control

    @classmethod
    def _read_cached(
        cls,
        path: Path,
        model: nn.Module,
        key: FitKey,
        names: Sequence[str],
        any_data: bool,
        **kwargs: object,
    ) -> tuple[AttributeControl | None, str | None]:
        """``(control, None)`` when ``path`` holds a whole calibration of the fit ``key`` (any data with
        ``any_data``) covering ``names``; else ``(None, why not)``, ``why`` None when there is no file."""
        if not path.is_file():
            return None, None
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError):
            return None, "unreadable (truncated or not JSON)"
        stored = payload.get("fitted_on") if isinstance(payload, dict) else None
        cause = key_mismatch(stored, key, ignore=("data",) if any_data else ())
        if cause is not None:
            return None, cause
        try:
            control = cls._from_payload(payload, model, **kwargs)
        except ConfigError as err:
            return None, str(err)
        missing = [name for name in names if name not in control.calibrations]
        if missing:
            return None, f"does not calibrate {missing}"
        return control, None

    # ------------------------------------------------------------------ edits
    def _requests(
        self, changes: Mapping[str, float | Tensor], absolute: Mapping[str, float | Tensor]
    ) -> list[tuple[AttributeCalibration, float | Tensor, bool]]:
        overlap = set(changes) & set(absolute)
        if overlap:
            raise ConfigError(f"edit: {sorted(overlap)} requested both as a change and as an absolute value")
        requests = []
        for name, value, is_absolute in [
            *((n, v, False) for n, v in changes.items()),
            *((n, v, True) for n, v in absolute.items()),
        ]:
            if name not in self.attribute_names:
                raise ConfigError(
                    f"edit: unknown attribute {name!r}; choose from {list(self.attribute_names)}"
                )
            if name not in self.calibrations:
                raise ConfigError(f"edit: {name} is not calibrated; calibrated: {list(self.calibrations)}")
            if isinstance(value, Tensor):  # one value per digit
                if not bool(value.isfinite().all()):
                    raise ConfigError(f"edit: {name} has values that are not finite numbers")
            elif not math.isfinite(float(value)):
                raise ConfigError(f"edit: {name}={value} is not a finite number")
            requests.append(
                (self.calibrations[name], value if isinstance(value, Tensor) else float(value), is_absolute)
            )
        dims = [cal.dim for cal, _, _ in requests]
        shared = {d for d in dims if dims.count(d) > 1}
        if shared:
            names = [cal.name for cal, _, _ in requests if cal.dim in shared]
            raise ConfigError(
                f"edit: {names} are all controlled by latent dim(s) {sorted(shared)}; edit one at a time"
            )
        return requests

    def edit(
        self,
        images: Tensor,
        changes: Mapping[str, float | Tensor] | None = None,
        *,
        absolute: Mapping[str, float | Tensor] | None = None,
    ) -> Tensor:
        """Edited images ``[N, C, H, W]`` in [0, 1]: ``changes`` (physical units) relative to the attributes of
        the unedited reconstruction, ``absolute`` values set outright; ``edit(images, {})`` is the
        reconstruction. See :meth:`apply` for the measured attributes as well."""
        return self.apply(images, changes, absolute=absolute).images

    def reference(self, images: Tensor, condition: Condition | None = None) -> Reference:
        """The unedited starting point of every edit of ``images`` (under their ``condition``, for a
        conditional model): latents, reconstructions and their measured attributes. Computed by
        :meth:`apply` when not given; pass it to many :meth:`apply` calls on the same images to encode,
        decode and measure them once."""
        z0 = encode_images(self.model, images, self.batch_size, condition)
        reconstruction = decode_latents(self.model, z0, self.batch_size, condition)
        measured = self.measure(reconstruction).to(z0.device).float()
        return Reference(z0, reconstruction, measured, condition)

    def latent_reference(
        self, latents: Tensor, condition: Condition | None = None, decoded: Tensor | None = None
    ) -> Reference:
        """A :class:`Reference` that starts from ``latents [N, D]`` instead of images (new digits drawn from
        the prior: :func:`genvae.latent.sampling.sample`); ``decoded``: their images when already decoded."""
        if decoded is None:
            decoded = decode_latents(self.model, latents, self.batch_size, condition)
        measured = self.measure(decoded).to(latents.device).float()
        return Reference(latents, decoded, measured, condition)

    def apply(
        self,
        images: Tensor,
        changes: Mapping[str, float | Tensor] | None = None,
        *,
        absolute: Mapping[str, float | Tensor] | None = None,
        reference: Reference | None = None,
        condition: Condition | None = None,
        counterfactual: Condition | None = None,
    ) -> EditResult:
        """Edit ``images`` as :meth:`edit` does and return the images with their measured attributes.
        ``reference``: :meth:`reference` of these ``images`` (computed here when None, under ``condition``,
        the images' own condition for a conditional model); ``counterfactual``: the condition the edited
        digits are decoded under (default: their own), e.g. ``{"label": new_labels}`` for a label edit.
        A request's value may be a tensor ``[N]``: one change or absolute value per digit."""
        requests = self._requests(dict(changes or {}), dict(absolute or {}))
        reference = reference if reference is not None else self.reference(images, condition)
        z0, reconstruction, original, own = reference
        target = torch.full_like(original, float("nan"))
        decode_condition = own if counterfactual is None else {**(own or {}), **counterfactual}
        if not requests:
            if counterfactual is None:
                return EditResult(reconstruction, z0, reconstruction, original, original.clone(), target)
            images = decode_latents(self.model, z0, self.batch_size, decode_condition)
            measured = self.measure(images).to(z0.device).float()
            return EditResult(images, z0, reconstruction, original, measured, target)
        dims = torch.tensor([cal.dim for cal, _, _ in requests], device=z0.device)
        columns = torch.tensor(
            [self.attribute_names.index(cal.name) for cal, _, _ in requests], device=z0.device
        )
        stds = torch.tensor([max(cal.std, 1e-6) for cal, _, _ in requests], device=z0.device)
        base = torch.zeros_like(original[:, 0])

        def asked(cal: AttributeCalibration, value: float | Tensor, is_absolute: bool) -> Tensor:
            value = value.to(base) if isinstance(value, Tensor) else value
            return base + value if is_absolute else original[:, self.attribute_names.index(cal.name)] + value

        wanted = torch.stack(
            [asked(*request) for request in requests], dim=1
        )  # [N, J]; a tensor value gives each digit its own request
        target[:, columns] = wanted
        z = z0.clone()
        low, high = [], []
        for j, (cal, _, _) in enumerate(requests):
            start = cal.response_at(z0[:, cal.dim].double())
            goal = start + (wanted[:, j].double() - original[:, columns[j]].double())
            self._warn_beyond(cal, goal, requests[j])
            z[:, cal.dim] = cal.latent_at(goal).float().nan_to_num(0.0)  # a blank reconstruction: NaN goal
            low.append(float(cal.grid[0]) - cal.latent_std)
            high.append(float(cal.grid[-1]) + cal.latent_std)
        low_t, high_t = torch.tensor(low, device=z.device), torch.tensor(high, device=z.device)
        z[:, dims] = torch.where(wanted.isfinite(), z[:, dims].clamp(low_t, high_t), z0[:, dims])
        return self._refine(
            z,
            z0,
            original,
            wanted,
            dims,
            columns,
            stds,
            (low_t, high_t),
            reconstruction,
            target,
            decode_condition,
        )

    def _warn_beyond(self, cal: AttributeCalibration, goal: Tensor, request: tuple) -> None:
        lo, hi = sorted((float(cal.response[0]), float(cal.response[-1])))
        finite = goal.isfinite()
        beyond = finite & ((goal < lo - 1e-9) | (goal > hi + 1e-9))
        if beyond.any():
            _, value, is_absolute = request
            if isinstance(value, Tensor):
                asked = "=<per digit>" if is_absolute else " changes per digit"
            else:
                asked = f"={value:g}" if is_absolute else f"{value:+g}"
            warnings.warn(
                f"AttributeControl: {cal.name}{asked} is beyond the calibrated range of z{cal.dim} "
                f"([{lo:.3g}, {hi:.3g}]) for {int(beyond.sum())} of {int(finite.sum())} digits (extrapolation)",
                ExtrapolationWarning,
                stacklevel=3,
            )

    def _refine(
        self,
        z: Tensor,
        z0: Tensor,
        original: Tensor,
        wanted: Tensor,
        dims: Tensor,
        columns: Tensor,
        stds: Tensor,
        bounds: tuple[Tensor, Tensor],
        reconstruction: Tensor,
        target: Tensor,
        condition: Condition | None = None,
    ) -> EditResult:
        """Closed loop: decode, measure, secant step per digit and requested dim; keep each digit's best
        (decoded under ``condition``, one row per digit, for a conditional model)."""
        cals = [next(c for c in self.calibrations.values() if c.dim == int(d)) for d in dims]
        latent_std = torch.tensor([c.latent_std for c in cals], device=z.device)
        signs = torch.tensor([c.sign for c in cals], device=z.device)
        previous_z, previous_a = z0[:, dims].clone(), original[:, columns].clone()
        best_score = torch.full((len(z),), float("inf"), device=z.device)
        best_images = best_measured = best_z = None
        images = measured = active = None
        for round_ in range(self.rounds + 1):
            if active is None:
                images = decode_latents(self.model, z, self.batch_size, condition)
                measured = self.measure(images).to(z.device).float()
            else:  # only the digits whose latent moved: the others would decode and measure as before
                rows = active.nonzero().squeeze(1)
                images, measured = images.clone(), measured.clone()
                images[rows] = decode_latents(
                    self.model, z[rows], self.batch_size, take_condition(condition, rows)
                )
                measured[rows] = self.measure(images[rows]).to(z.device).float()
            achieved = measured[:, columns]
            error = (wanted - achieved) / stds
            score = error.abs().nan_to_num(float("inf")).amax(dim=1)
            if best_images is None:
                best_images, best_measured, best_z, best_score = images, measured, z.clone(), score
            else:
                better = score < best_score
                best_images = torch.where(better.view(-1, 1, 1, 1), images, best_images)
                best_measured = torch.where(better.unsqueeze(1), measured, best_measured)
                best_z = torch.where(better.unsqueeze(1), z, best_z)
                best_score = torch.minimum(score, best_score)
            active = wanted.isfinite().all(dim=1) & (best_score > self.tolerance)
            if round_ == self.rounds or not active.any():
                break
            current = z[:, dims]
            dz, da = current - previous_z, achieved - previous_a
            secant = da / dz
            calibrated = torch.stack(
                [c.slope_at(current[:, j].double()).float() for j, c in enumerate(cals)], 1
            )
            reliable = (
                (dz.abs() > 1e-4 * latent_std)
                & secant.isfinite()
                & (secant * signs > 0)
                & (secant.abs() >= 0.1 * calibrated.abs())
            )
            slope = torch.where(reliable, secant, calibrated)
            step = ((wanted - achieved) / slope).clamp(-latent_std, latent_std)
            finite = achieved.isfinite()
            # a blank decoded image (NaN attributes): go halfway back towards the reconstruction's latent
            moved = torch.where(finite, current + step, 0.5 * (current + z0[:, dims]))
            previous_z = torch.where(finite, current, previous_z)
            previous_a = torch.where(finite, achieved, previous_a)
            moved = torch.where(active.unsqueeze(1), moved.clamp(*bounds), current)
            z = z.clone()
            z[:, dims] = moved
        return EditResult(best_images, best_z, reconstruction, original, best_measured, target)

"""Fits cached beside a checkpoint (genvae.latent.fitted): class latents and calibrations are read back
only for the same checkpoint and data, verified by their checksum, and refitted with one line otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from genvae.latent import fitted
from genvae.latent.class_latents import ClassLatents
from genvae.latent.control import AttributeControl, calibration_path

from .test_class_latents import LatentPixels, _digits
from .test_latent_control import ExactModel, exact_data


def _split(n_per_class: int = 40, seed: int = 0) -> dict[str, torch.Tensor]:
    images, labels, _ = _digits(n_per_class, seed)
    return {"image": images, "label": labels}


def _checkpoint(folder: Path, content: bytes = b"weights") -> Path:
    """A stand-in checkpoint file: the cache keys a fit by the file's bytes, not by what they hold."""
    path = folder / "last.ckpt"
    path.write_bytes(content)
    return path


def _fails() -> dict[str, torch.Tensor]:
    raise AssertionError("refitted although a valid cached fit was there")


def test_digests_follow_names_dtypes_shapes_and_bytes() -> None:
    a = {"image": torch.arange(6, dtype=torch.uint8).view(2, 3), "label": torch.tensor([0, 1])}
    assert fitted.tensors_sha256(a) == fitted.tensors_sha256(dict(reversed(a.items())))
    assert fitted.tensors_sha256(a) == fitted.tensors_sha256({**a, "image": a["image"].t().contiguous().t()})
    for other in (
        {**a, "image": a["image"].view(3, 2)},
        {**a, "image": a["image"].long()},
        {**a, "label": torch.tensor([0, 2])},
        {"images": a["image"], "label": a["label"]},
    ):
        assert fitted.tensors_sha256(other) != fitted.tensors_sha256(a)


def test_class_latents_are_fitted_once_then_read_back_equal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    model, split, ckpt = LatentPixels(), _split(), _checkpoint(tmp_path)
    first = ClassLatents.fit_split(model, split, ckpt)
    assert capsys.readouterr().err.strip() == (
        f"genvae: fitting class latents on 400 training images; cached in {tmp_path / 'last.class-latents.pt'}"
    )
    fresh = ClassLatents.fit_split(model, split)  # no checkpoint: nothing cached, the same fit
    monkeypatch.setattr(ClassLatents, "fit", classmethod(lambda *args, **kwargs: _fails()))
    again = ClassLatents.fit_split(model, split, ckpt)
    assert capsys.readouterr().err == ""
    for name, value in first.tensors().items():
        assert torch.equal(again.tensors()[name], value) and torch.equal(fresh.tensors()[name], value)


@pytest.mark.parametrize(
    ("change", "cause"),
    [
        ("checkpoint", "fitted from another checkpoint"),
        ("data", "fitted on other data"),
        ("truncated", "unreadable (truncated or not a genvae fit file"),
        ("tampered", "content does not match its checksum"),
        ("version", "written by another version of its fitting code"),
    ],
)
def test_a_stale_or_damaged_fit_is_refitted_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, change: str, cause: str
) -> None:
    model, split, ckpt = LatentPixels(), _split(), _checkpoint(tmp_path)
    ClassLatents.fit_split(model, split, ckpt)
    cache = tmp_path / "last.class-latents.pt"
    capsys.readouterr()
    if change == "checkpoint":
        ckpt.write_bytes(b"retrained weights")
    elif change == "data":
        split = _split(seed=1)
    elif change == "truncated":
        cache.write_bytes(cache.read_bytes()[:100])
    else:
        stored = torch.load(cache, weights_only=True)
        if change == "tampered":
            stored["tensors"]["mean"][0, 0] += 1
        else:
            stored["key"]["version"] = 0
        torch.save(stored, cache)
    refitted = ClassLatents.fit_split(model, split, ckpt)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"genvae: {cache}: {cause}")
    assert lines[0].endswith("; refitting class latents on 400 training images")
    expected = ClassLatents.fit_split(model, split)
    assert torch.equal(refitted.mean, expected.mean)
    stored = torch.load(cache, weights_only=True)  # rewritten, whole and current
    assert stored["key"] == fitted.fit_key("class-latents", 1, model, ckpt, split).as_dict()
    assert torch.equal(stored["tensors"]["mean"], expected.mean)


def test_a_fit_that_cannot_be_cached_is_still_returned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def refuse(path: Path, payload: bytes) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(fitted, "atomic_write_bytes", refuse)
    model, split, ckpt = LatentPixels(), _split(), _checkpoint(tmp_path)
    latents = ClassLatents.fit_split(model, split, ckpt)
    assert latents.mean.shape == (10, 3) and not (tmp_path / "last.class-latents.pt").exists()
    assert "cannot cache the fit ([Errno 13] Permission denied)" in capsys.readouterr().err


# ------------------------------------------------------------------ calibrations


def _control_fit(model: ExactModel, images: torch.Tensor, attributes: torch.Tensor, calls: list[str]):
    def fit() -> AttributeControl:
        calls.append("fit")
        return AttributeControl.fit(model, images, attributes, measure=ExactModel.measure)

    return fit


def test_a_calibration_is_read_back_only_for_its_checkpoint_and_data(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    model, images, attributes = exact_data()
    ckpt, calls = _checkpoint(tmp_path), []
    rows = {"image": images[:100], "attributes": attributes[:100]}
    fit = _control_fit(model, images[:100], attributes[:100], calls)
    first = AttributeControl.cached(ckpt, model, rows, ["area"], fit, measure=ExactModel.measure)
    path = calibration_path(ckpt)
    assert capsys.readouterr().err.strip() == (
        f"genvae: fitting the attribute calibration on 100 images; cached in {path}"
    )
    payload = json.loads(path.read_text())
    assert payload["version"] == 2 and payload["fitted_on"]["checkpoint"] == fitted.file_sha256(ckpt)
    again = AttributeControl.cached(ckpt, model, rows, ["area", "length"], fit, measure=ExactModel.measure)
    assert calls == ["fit"] and capsys.readouterr().err == ""
    assert torch.equal(again.calibrations["area"].response, first.calibrations["area"].response)
    other_rows = {"image": images[100:], "attributes": attributes[100:]}
    AttributeControl.cached(ckpt, model, other_rows, ["area"], fit, any_data=True, save=False)
    assert calls == ["fit"]  # the evaluation callbacks take a calibration of this checkpoint on any data
    AttributeControl.cached(ckpt, model, other_rows, ["area"], fit)
    assert calls == ["fit", "fit"]
    assert capsys.readouterr().err.strip() == (
        f"genvae: {path}: fitted on other data; refitting the attribute calibration on 100 images"
    )
    ckpt.write_bytes(b"retrained")
    AttributeControl.cached(ckpt, model, other_rows, ["area"], fit, any_data=True, save=False)
    assert calls == ["fit", "fit", "fit"] and "fitted from another checkpoint" in capsys.readouterr().err


def test_a_damaged_or_older_calibration_is_refitted_and_refused_when_given(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from genvae.errors import ConfigError

    model, images, attributes = exact_data()
    ckpt, calls = _checkpoint(tmp_path), []
    rows = {"image": images, "attributes": attributes}
    fit = _control_fit(model, images, attributes, calls)
    AttributeControl.cached(ckpt, model, rows, ["area"], fit)
    path = calibration_path(ckpt)
    payload = json.loads(path.read_text())
    payload["attributes"]["area"]["response"][0] += 1.0
    path.write_text(json.dumps(payload))
    with pytest.raises(ConfigError, match=r"last.control.json: damaged calibration \(its content does not"):
        AttributeControl.load(path, model)  # --calibration: a file given by hand is refused, not refitted
    capsys.readouterr()
    AttributeControl.cached(ckpt, model, rows, ["area"], fit)
    assert calls == ["fit", "fit"] and "damaged calibration" in capsys.readouterr().err
    del payload["fitted_on"], payload["sha256"]  # a version-1 file: no key
    payload["version"] = 1
    path.write_text(json.dumps(payload))
    loaded = AttributeControl.load(path, model)  # still readable when given
    assert loaded.calibrations["area"].dim == payload["attributes"]["area"]["dim"]
    AttributeControl.cached(ckpt, model, rows, ["area"], fit)
    assert calls == ["fit", "fit", "fit"]
    assert "holds no fit key (written by an older genvae)" in capsys.readouterr().err


def test_callbacks_package_resolves_every_name_on_first_use() -> None:
    import genvae.callbacks as callbacks

    for name in callbacks.__all__:
        assert getattr(callbacks, name).__name__ == name
    with pytest.raises(AttributeError, match="has no attribute 'Nothing'"):
        callbacks.Nothing  # noqa: B018

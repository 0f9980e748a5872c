"""Generation on request (genvae.latent.sample, `genvae sample`) and edits of conditional models (label
edits, attribute edits that keep the digit's label)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genvae.data.attributes import ATTRIBUTE_NAMES, morpho_attributes
from genvae.errors import ConfigError
from genvae.latent import AttributeControl, sample
from genvae.models import VAE

from .conftest import REPO
from .test_latent_control import BarModel

WIDTH = ATTRIBUTE_NAMES.index("width")


class LabelBarModel(BarModel):
    """:class:`BarModel` conditioned on the label: the decoder writes ``label / 100`` into the corner pixel as
    a marker (:func:`measure` leaves it out; the bar, the style, is that of z); encode and decode refuse to
    run without the condition."""

    condition_names = ("label",)

    def decode(self, z: torch.Tensor, condition: dict | None = None) -> torch.Tensor:
        assert condition is not None and len(condition["label"]) == len(z)
        images = super().decode(z)
        images[:, 0, 0, 0] = condition["label"].float() / 100
        return images

    def encode(self, x: torch.Tensor, condition: dict | None = None) -> torch.Tensor:
        assert condition is not None and len(condition["label"]) == len(x)
        return super().encode(x)


def marker(images: torch.Tensor) -> torch.Tensor:
    """The label each image was decoded under (:class:`LabelBarModel`)."""
    return (images[:, 0, 0, 0] * 100).round().long()


def measure(images: torch.Tensor) -> torch.Tensor:
    """The morphometrics of the bars, without :class:`LabelBarModel`'s marker pixel."""
    clean = images.clone()
    clean[:, 0, 0, 0] = 0.0
    return morpho_attributes(clean)


def bar_control(model: BarModel) -> AttributeControl:
    z = torch.randn(64, 3, generator=torch.Generator().manual_seed(0)) * 0.8
    labels = torch.arange(64) % 10
    condition = {"label": labels} if getattr(model, "condition_names", ()) else None
    images = model.decode(z, condition) if condition else model.decode(z)
    return AttributeControl.fit(
        model, images, measure(images), ["width"], condition=condition, rounds=4, measure=measure
    )


# ------------------------------------------------------------------ the Python API


def test_requests_through_the_condition_are_the_decoders_condition() -> None:
    torch.manual_seed(0)
    model = VAE(latent_dim=4, condition=["label", "thickness"]).eval()
    result = sample(model, 5, label=7, attributes={"thickness": 3.0}, seed=11)
    torch.manual_seed(11)
    z = torch.randn(5, 4)
    expected = model.decode(z, {"label": torch.full((5,), 7), "thickness": torch.full((5,), 3.0)})
    assert torch.allclose(result.images, expected)
    assert result.label.tolist() == [7] * 5 and result.via == {"label": "condition", "thickness": "condition"}
    assert torch.equal(result.requested[:, 0], torch.full((5,), 3.0))
    assert result.requested[:, 1:].isnan().all() and result.measured.shape == (5, 6)
    balanced = sample(VAE(latent_dim=4, condition=["label"]), 12)  # no label asked: class-balanced
    assert balanced.label.tolist() == [i % 10 for i in range(12)]


def test_requests_through_the_regularized_dim_are_met_closed_loop() -> None:
    model = BarModel()
    result = sample(model, 16, attributes={"width": 8.0}, control=bar_control(model), seed=0)
    assert result.via == {"width": "latent z0"} and result.label.eq(-1).all()
    assert (result.measured[:, WIDTH] - 8.0).abs().median() < 0.05
    assert torch.equal(
        result.measured, morpho_attributes(result.images)
    )  # the morphometrics, not control.measure


def test_conditional_latent_requests_keep_the_requested_label() -> None:
    model = LabelBarModel()
    result = sample(model, 8, label=6, attributes={"width": 7.0}, control=bar_control(model), seed=1)
    assert (measure(result.images)[:, WIDTH] - 7.0).abs().median() < 0.05
    assert marker(result.images).tolist() == [6] * 8


def test_requests_the_model_cannot_serve_are_one_config_error() -> None:
    with pytest.raises(ConfigError, match="label: VAE is not conditioned on the label"):
        sample(VAE(latent_dim=4), 2, label=3)
    with pytest.raises(ConfigError, match="colour: unknown attribute"):
        sample(VAE(latent_dim=4, condition=["label"]), 2, attributes={"colour": 1.0})
    with pytest.raises(ConfigError, match="slant: VAE can set neither through its condition"):
        sample(VAE(latent_dim=4, condition=["label"]), 2, label=1, attributes={"slant": 0.1})
    with pytest.raises(ConfigError, match=r"label: classes must lie in \[0, 10\)"):
        sample(VAE(latent_dim=4, condition=["label"]), 2, label=12)
    with pytest.raises(ConfigError, match="thickness: VAE is conditioned on"):  # nothing to draw it from
        sample(VAE(latent_dim=4, condition=["label", "thickness"]), 2, label=1)


# ------------------------------------------------------------------ edits of conditional models


def test_attribute_edits_keep_each_digits_label_and_label_edits_keep_the_style() -> None:
    model = LabelBarModel()
    control = bar_control(model)
    labels = torch.tensor([0, 3, 5, 9])
    z = torch.tensor([[0.0, 0.0, 0.0], [0.5, -0.5, 0.0], [-0.5, 0.5, 0.0], [0.3, 0.2, 0.0]])
    images = model.decode(z, {"label": labels})
    edited = control.apply(images, {"width": 1.0}, condition={"label": labels})
    assert torch.equal(marker(edited.images), labels)
    assert (edited.measured[:, WIDTH] - edited.original[:, WIDTH] - 1.0).abs().max() < 0.05
    moved = control.apply(images, condition={"label": labels}, counterfactual={"label": torch.full((4,), 2)})
    assert marker(moved.images).tolist() == [2] * 4
    assert torch.allclose(moved.measured[:, WIDTH], moved.original[:, WIDTH], atol=1e-3)  # the style is kept


# ------------------------------------------------------------------ the commands, on tiny trained checkpoints


@pytest.fixture(scope="module")
def checkpoints(tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from .test_cli import checkpoint_of

    root = tmp_path_factory.mktemp("conditional")
    return {stem: checkpoint_of(stem, tiny_mnist, root) for stem in ("arvae_conditional", "cvae", "arvae")}


def command(name: str, stem: str, ckpt: Path, data: Path, *args: str) -> list[str]:
    config = str(REPO / "experiments" / f"{stem}.yaml")
    return [name, "--config", config, "--ckpt_path", str(ckpt), "--data.init_args.root", str(data), *args]


def test_sample_command_through_the_console_script(
    checkpoints: dict[str, Path], tiny_mnist: Path, tmp_path: Path
) -> None:
    from .test_cli import _env

    out, npz = tmp_path / "sevens.png", tmp_path / "sevens.npz"
    args = ["--label", "7", "--num", "6", "--out", str(out), "--npz", str(npz)]
    script = Path(sys.executable).with_name("genvae")
    run = subprocess.run(
        [str(script), *command("sample", "cvae", checkpoints["cvae"], tiny_mnist, *args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    arrays = np.load(npz)
    assert arrays["images"].shape == (6, 1, 28, 28) and arrays["images"].dtype == np.float32
    assert arrays["images"].min() >= 0 and arrays["images"].max() <= 1
    assert arrays["label"].tolist() == [7] * 6 and np.isnan(arrays["requested"]).all()
    assert arrays["measured"].shape == (6, 6) and list(arrays["attribute_names"]) == list(ATTRIBUTE_NAMES)
    from PIL import Image

    assert Image.open(out).width > 300


def test_sample_through_the_latent_and_as_a_grid(
    checkpoints: dict[str, Path], tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A label-conditional AR-VAE: the label through the condition, thickness and slant through the
    calibrated regularized dims; the grid's rows are the classes, its columns the requested values."""
    from genvae.cli import main

    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(checkpoints["arvae_conditional"].read_bytes())
    fast = ["--calibration_images", "16", "--rounds", "1"]
    npz = tmp_path / "sevens.npz"
    args = ["--label", "7", "--set", "thickness=3.0", "--set", "slant=-0.2", "--num", "4", "--npz", str(npz)]
    main(
        command(
            "sample", "arvae_conditional", ckpt, tiny_mnist, *args, *fast, "--out", str(tmp_path / "s.png")
        )
    )
    err = capsys.readouterr().err
    assert "thickness = 3 px (via latent z0): median |measured - requested|" in err
    assert "slant = -0.2 rad (via latent z1)" in err
    arrays = np.load(npz)
    assert arrays["label"].tolist() == [7] * 4
    assert np.allclose(arrays["requested"][:, :2], [3.0, -0.2]) and np.isnan(arrays["requested"][:, 2:]).all()
    assert (tmp_path / "model.control.json").is_file()  # the calibration genvae edit reads, reused below
    npz = tmp_path / "grid.npz"
    args = ["--grid", "thickness=1.5,2.5,3.5", "--out", str(tmp_path / "grid.png"), "--npz", str(npz)]
    main(command("sample", "arvae_conditional", ckpt, tiny_mnist, *args, *fast))
    arrays = np.load(npz)
    assert arrays["grid_shape"].tolist() == [10, 3] and arrays["images"].shape == (30, 1, 28, 28)
    assert arrays["label"].tolist() == [c for c in range(10) for _ in range(3)]
    assert arrays["requested"][:3, 0].tolist() == [1.5, 2.5, 3.5]


@pytest.mark.parametrize(
    ("stem", "args", "message"),
    [
        ("arvae", ["--label", "7"], "genvae: error: label: ARVAE is not conditioned on the label"),
        ("cvae", ["--label", "1", "--set", "thickness=2"], "genvae: error: thickness: VAE can set neither"),
        ("cvae", ["--set", "colour=1"], "genvae: error: --set: unknown attribute 'colour'"),
        ("cvae", ["--label", "12"], "genvae: error: --label: 12 is not a class in [0, 10)"),
        ("arvae", ["--prior", "class"], "genvae: error: --prior class: ARVAE is not a label-conditional"),
    ],
)
def test_sample_command_bad_requests_are_one_line(
    checkpoints: dict[str, Path],
    tiny_mnist: Path,
    tmp_path: Path,
    stem: str,
    args: list[str],
    message: str,
    capsys,
) -> None:
    from genvae.cli import main

    with pytest.raises(SystemExit) as info:
        main(command("sample", stem, checkpoints[stem], tiny_mnist, *args, "--out", str(tmp_path / "x.png")))
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(message), err[-1]
    assert not (tmp_path / "x.png").exists()


def test_sample_command_draws_from_the_prior_asked_for(
    checkpoints: dict[str, Path], tiny_mnist: Path, tmp_path: Path
) -> None:
    """A label-conditional model draws from its class latents by default, from N(0, I) with --prior
    standard: the same seed gives other digits, and both runs give digits of the requested class."""
    from genvae.cli import main

    arrays = {}
    for prior in ("class", "standard"):
        npz = tmp_path / f"{prior}.npz"
        args = [
            "--label",
            "4",
            "--num",
            "3",
            "--prior",
            prior,
            "--npz",
            str(npz),
            "--out",
            str(tmp_path / "x.png"),
        ]
        main(command("sample", "cvae", checkpoints["cvae"], tiny_mnist, *args))
        arrays[prior] = np.load(npz)
        assert arrays[prior]["label"].tolist() == [4] * 3
    assert not np.allclose(arrays["class"]["images"], arrays["standard"]["images"])


def test_sample_and_edit_share_the_class_latents_cached_beside_the_checkpoint(
    checkpoints: dict[str, Path], tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The first call fits the class latents and caches them beside the checkpoint; a repeat `genvae sample`
    and a label edit read them (no fit announced) and the repeat draws the very same digits."""
    from genvae.cli import main

    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(checkpoints["cvae"].read_bytes())
    cache = tmp_path / "model.class-latents.pt"
    arrays = []
    for call in range(2):
        npz = tmp_path / f"{call}.npz"
        args = ["--label", "5", "--num", "4", "--npz", str(npz), "--out", str(tmp_path / "s.png")]
        main(command("sample", "cvae", ckpt, tiny_mnist, *args))
        err = capsys.readouterr().err
        assert ("genvae: fitting class latents" in err) == (call == 0), err
        arrays.append(np.load(npz)["images"])
    assert cache.is_file() and np.array_equal(arrays[0], arrays[1])
    main(
        command(
            "edit",
            "cvae",
            ckpt,
            tiny_mnist,
            "--set",
            "label=3",
            "--indices",
            "0:2",
            "--out",
            str(tmp_path / "e.png"),
        )
    )
    assert "fitting class latents" not in capsys.readouterr().err


def test_edit_command_label_edits(
    checkpoints: dict[str, Path], tiny_mnist: Path, tmp_path: Path, capsys
) -> None:
    from genvae.cli import main

    out = tmp_path / "threes.png"
    ckpt = checkpoints["arvae_conditional"]
    main(
        command(
            "edit",
            "arvae_conditional",
            ckpt,
            tiny_mnist,
            "--set",
            "label=3",
            "--indices",
            "0:4",
            "--out",
            str(out),
        )
    )
    assert "label -> 3: median |edited - reconstruction| per attribute: thickness" in capsys.readouterr().err
    assert out.is_file()
    with pytest.raises(SystemExit) as info:
        main(
            command("edit", "arvae", checkpoints["arvae"], tiny_mnist, "--set", "label=3", "--out", str(out))
        )
    assert info.value.code == 2
    assert "genvae: error: label: ARVAE is not conditioned on the label" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(command("edit", "arvae_conditional", ckpt, tiny_mnist, "--set", "label=x", "--out", str(out)))
    assert "genvae: error: --set: label='x': expected one class index in [0, 10)" in capsys.readouterr().err

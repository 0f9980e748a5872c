"""Attribute control in physical units (genvae.latent): calibration, closed-loop edits, evaluation, IO, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from genvae.data.attributes import ATTRIBUTE_NAMES, morpho_attributes
from genvae.errors import ConfigError
from genvae.latent.control import AttributeControl, ExtrapolationWarning, calibration_path
from genvae.latent.evaluation import (
    DEFAULT_PHYSICAL_EDITS,
    class_attribute_ranges,
    control_evaluation,
    control_table,
)

from .conftest import REPO

# ------------------------------------------------------------------ synthetic models with known answers


class ExactModel(nn.Module):
    """Dims 0-5 map exactly onto the six attributes through a nonlinear monotone curve.

    The 'image' stores the latent in its first pixels; :meth:`measure` reads attribute ``k`` back as
    ``exp(0.3 z_{k+6}) (2 tanh(z_k / 2) + 0.5 z_k) + 0.5 z_{k+6}``: the last six dims, never edited, change
    each digit's attribute and its response to ``z_k`` (known answer: exact control, no leakage).
    """

    latent_dim = 12
    regularized_attributes = ATTRIBUTE_NAMES
    regularized_dims = (0, 1, 2, 3, 4, 5)

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # a device for the helpers

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, : self.latent_dim]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        images = torch.zeros(len(z), 1, 28, 28)
        images.view(len(z), -1)[:, : self.latent_dim] = z
        return images

    @staticmethod
    def measure(images: torch.Tensor) -> torch.Tensor:
        z = images.flatten(1)[:, :12]
        gain = torch.exp(0.3 * z[:, 6:])
        return gain * (2 * torch.tanh(z[:, :6] / 2) + 0.5 * z[:, :6]) + 0.5 * z[:, 6:]


class BarModel(nn.Module):
    """A decoded bar, measured with the real morphometrics: z0 sets its width, z1 its height."""

    latent_dim = 3
    regularized_attributes = ("width", "height")
    regularized_dims = (0, 1)

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        half_width = 3 + 1.5 * z[:, 0]
        half_height = 8 + 2 * z[:, 1]
        coords = torch.arange(28.0) - 13.5
        cols = torch.sigmoid(4 * (half_width.view(-1, 1) - coords.abs()))
        rows = torch.sigmoid(4 * (half_height.view(-1, 1) - coords.abs()))
        return (rows.unsqueeze(2) * cols.unsqueeze(1)).unsqueeze(1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`decode` from the row and column profiles (sum of a sigmoid edge = its width)."""
        image = x[:, 0]
        half_width = image.amax(dim=1).sum(dim=1) / 2
        half_height = image.amax(dim=2).sum(dim=1) / 2
        return torch.stack([(half_width - 3) / 1.5, (half_height - 8) / 2, torch.zeros_like(half_width)], 1)


def exact_data(n: int = 200, seed: int = 0) -> tuple[ExactModel, torch.Tensor, torch.Tensor]:
    model = ExactModel()
    z = torch.randn(n, 12, generator=torch.Generator().manual_seed(seed))
    images = model.decode(z)
    return model, images, ExactModel.measure(images)


def exact_control(**kwargs: object) -> tuple[AttributeControl, torch.Tensor]:
    model, images, attributes = exact_data()
    control = AttributeControl.fit(model, images, attributes, measure=ExactModel.measure, **kwargs)
    return control, images


# ------------------------------------------------------------------ calibration and edits


def test_calibration_finds_the_regularized_dims_and_a_rising_response() -> None:
    control, _ = exact_control()
    assert [control.calibrations[n].dim for n in ATTRIBUTE_NAMES] == [0, 1, 2, 3, 4, 5]
    for cal in control.calibrations.values():
        assert cal.sign == 1.0 and (cal.response.diff() >= 0).all()
        z = torch.linspace(float(cal.grid[0]), float(cal.grid[-1]), 7, dtype=torch.float64)
        assert torch.allclose(cal.latent_at(cal.response_at(z)), z, atol=1e-4)


def test_closed_loop_edits_hit_the_requested_change_exactly() -> None:
    control, images = exact_control(tolerance=1e-4, rounds=10)
    result = control.apply(images[:50], {"thickness": 0.6, "slant": -0.5})
    achieved = result.measured - result.original
    assert achieved[:, 0] == pytest.approx(torch.full((50,), 0.6), abs=1e-3)
    assert achieved[:, 1] == pytest.approx(torch.full((50,), -0.5), abs=1e-3)
    assert achieved[:, 2:].abs().max() < 1e-6  # other attributes untouched


def test_open_loop_calibration_alone_misses_where_digits_differ() -> None:
    control, images = exact_control(rounds=0)
    result = control.apply(images, {"width": 2.0})
    error = (result.measured - result.target)[:, 4].abs()
    assert error.median() > 0.05  # the closed loop above is what makes it exact


def test_absolute_requests_set_the_value() -> None:
    control, images = exact_control(tolerance=1e-4, rounds=10)
    result = control.apply(images[:20], absolute={"height": 0.5})
    assert result.measured[:, 5] == pytest.approx(torch.full((20,), 0.5), abs=1e-3)


def test_empty_edit_is_the_reconstruction() -> None:
    model = BarModel()
    images = model.decode(torch.tensor([[0.5, -0.3, 0.0], [-0.8, 0.7, 0.0]]))
    control = AttributeControl.fit(
        model, images.repeat(4, 1, 1, 1), morpho_attributes(images.repeat(4, 1, 1, 1))
    )
    assert torch.equal(control.edit(images, {}), model.decode(model.encode(images)))


def test_bar_model_with_real_morphometrics_reaches_the_request() -> None:
    model = BarModel()
    z = torch.rand(24, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1
    images = model.decode(z)
    control = AttributeControl.fit(
        model, images, morpho_attributes(images), names=["width", "height"], span=1.5
    )
    result = control.apply(images[:12], {"width": 1.5, "height": -1.0})
    error = (result.measured - result.target)[:, [4, 5]].abs()
    assert (
        error.median(dim=0).values
        < 0.05 * torch.tensor([control.calibrations[n].std for n in ("width", "height")])
    ).all()


def test_request_beyond_the_calibrated_range_warns() -> None:
    control, images = exact_control()
    with pytest.warns(ExtrapolationWarning, match="thickness\\+20 is beyond the calibrated range"):
        control.apply(images[:5], {"thickness": 20.0})


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"colour": 1.0}, "unknown attribute 'colour'"), ({"thickness": math.nan}, "not a finite number")],
)
def test_bad_requests_are_config_errors(changes: dict, message: str) -> None:
    control, images = exact_control()
    with pytest.raises(ConfigError, match=message):
        control.edit(images[:2], changes)


def test_model_without_a_flat_latent_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no flat latent"):
        AttributeControl.fit(nn.Linear(2, 2), torch.zeros(3, 1, 28, 28), torch.zeros(3, 6))


# ------------------------------------------------------------------ calibration file


def test_calibration_saves_and_loads_back(tmp_path: Path) -> None:
    control, images = exact_control()
    path = control.save(calibration_path(tmp_path / "last.ckpt"))
    assert path == tmp_path / "last.control.json" and path.stat().st_size < 20_000
    loaded = AttributeControl.load(path, ExactModel(), measure=ExactModel.measure)
    for name, cal in control.calibrations.items():
        other = loaded.calibrations[name]
        assert other.dim == cal.dim and other.std == cal.std and torch.equal(other.grid, cal.grid)
        assert torch.equal(other.response, cal.response)
    assert torch.equal(loaded.edit(images[:8], {"area": 0.7}), control.edit(images[:8], {"area": 0.7}))


def test_calibration_of_another_model_or_a_foreign_file_is_refused(tmp_path: Path) -> None:
    control, _ = exact_control()
    path = control.save(tmp_path / "c.json")
    with pytest.raises(ConfigError, match="calibrated for a ExactModel with latent_dim 12"):
        AttributeControl.load(path, BarModel())
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ConfigError, match="bad.json: not a genvae attribute-control calibration"):
        AttributeControl.load(tmp_path / "bad.json", ExactModel())


# ------------------------------------------------------------------ closed-loop evaluation


def test_evaluation_of_an_exact_model_gives_no_error_no_leakage_full_identity() -> None:
    control, images = exact_control(tolerance=1e-4, rounds=10)
    labels = torch.arange(len(images)) % 10

    def classify(x: torch.Tensor) -> torch.Tensor:  # reads the label back from a pixel the edits never touch
        return nn.functional.one_hot(torch.arange(len(x)) % 10, 10).float()

    results = control_evaluation(control, images[:40], labels[:40], classify, names=["thickness", "width"])
    assert results["error"] < 1e-3 and results["error/thickness/-2std"] < 1e-3
    assert results["leakage"] < 1e-6 and results["leakage/width/area"] < 1e-6
    assert results["identity"] == 1.0 and results["identity_1std"] == 1.0
    table = control_table(results)
    assert "| thickness |" in table and "error +1std" in table and "identity" in table


def test_class_attribute_ranges_are_per_label_central_quantiles() -> None:
    attributes = torch.zeros(300, 6)
    attributes[:, 0] = torch.arange(300).float() % 100  # 0..99 in every label
    attributes[:, 1] = torch.arange(300).float() // 100  # label 0: 0, label 1: 1, label 2: 2
    attributes[5, 2] = float("nan")  # a blank digit is ignored
    labels = torch.arange(300) // 100
    labels[labels == 1] = 3  # label 1 has no digits
    ranges = class_attribute_ranges(attributes, labels, coverage=0.98)
    assert ranges.shape == (4, 6, 2)
    assert torch.allclose(ranges[0, 0], torch.tensor([0.99, 98.01]))  # numpy's linear quantiles of 0..99
    assert ranges[2, 1].tolist() == [2.0, 2.0] and ranges[0, 2].tolist() == [0.0, 0.0]
    assert ranges[1].isnan().all()
    with pytest.raises(ValueError, match="coverage"):
        class_attribute_ranges(attributes, labels, coverage=0.0)


def test_identity_is_split_by_whether_the_request_lies_in_the_class_range() -> None:
    """Known answer: a classifier that keeps the label exactly when the requested thickness is inside the
    class range gives identity 1 inside, 0 outside, and the share inside as the overall identity."""
    control, images = exact_control(tolerance=1e-4, rounds=10)
    images, labels = images[:40], torch.arange(40) % 2
    column = ATTRIBUTE_NAMES.index("thickness")
    original = control.apply(images, {}).original[:, column]
    std = control.calibrations["thickness"].std
    # class 0 accepts any thickness up to its digits' own + 0.75 std, class 1 any thickness at all
    ranges = torch.full((2, 6, 2), float("nan"))
    ranges[:, :, 0], ranges[:, :, 1] = -1e9, 1e9
    ranges[0, column, 1] = float(original[labels == 0].min()) + 0.75 * std
    requested: list[torch.Tensor] = []

    def classify(x: torch.Tensor) -> torch.Tensor:
        measured = control.measure(x)[:, column]
        inside = (labels == 1) | (measured <= ranges[0, column, 1] + 1e-3)
        requested.append(inside)
        predicted = torch.where(inside, labels, 1 - labels)
        return nn.functional.one_hot(predicted, 2).float()

    results = control_evaluation(
        control,
        images,
        labels,
        classify,
        steps=[-1.0, 0.5, 1.0],
        names=["thickness"],
        physical_edits={},
        class_ranges=ranges,
    )
    inside = torch.cat(requested)
    assert 0 < results["plausible_1std"] < 1
    assert results["plausible_1std"] == pytest.approx(float(inside.float().mean()))
    assert results["identity_1std/plausible"] == 1.0 and results["identity_1std/implausible"] == 0.0
    assert results["identity_1std/thickness/plausible"] == 1.0
    assert results["identity_1std"] == pytest.approx(results["plausible_1std"])
    table = control_table(results)
    assert "requests in class range ≤1 std" in table and "identity ≤1 std, in range" in table


def test_physical_edits_of_an_exact_model_hit_the_request_on_the_first_digits() -> None:
    control, images = exact_control(tolerance=1e-4, rounds=10)
    labels = torch.arange(len(images)) % 10
    sizes: list[int] = []

    def classify(x: torch.Tensor) -> torch.Tensor:
        sizes.append(len(x))
        return nn.functional.one_hot(torch.arange(len(x)) % 10, 10).float()

    results = control_evaluation(
        control, images[:40], labels[:40], classify, steps=[1.0], names=["slant"], physical_images=15
    )
    assert sizes == [40] + [15] * len(DEFAULT_PHYSICAL_EDITS)  # one step of slant, then each physical edit
    for name in ("thickness", "slant", "width", "height"):
        key = f"physical/{name}"
        assert results[f"{key}/error"] < 1e-3, name
        assert results[f"{key}/leakage"] < 1e-6 and results[f"{key}/identity"] == 1.0, name
        # the calibration alone misses (each digit responds differently): the closed loop is what hits
        assert results[f"{key}/error_open_loop"] > 10 * max(results[f"{key}/error"], 1e-4), name
    assert "physical/length/error" not in results
    assert "| width | " in control_table(results).split("physical edit (alone)")[1]


@pytest.mark.filterwarnings("ignore::genvae.latent.control.ExtrapolationWarning")
def test_physical_edits_are_scored_in_stds_of_the_attribute_and_can_be_switched_off() -> None:
    control, images = exact_control(rounds=0)  # open loop only: a nonzero error and leakage-free edits
    results = control_evaluation(
        control, images[:30], steps=[1.0], names=["width"], physical_edits={"width": 2.0, "slant": -0.2}
    )
    for name, change in (("width", 2.0), ("slant", -0.2)):  # the definition, computed by hand
        column = ATTRIBUTE_NAMES.index(name)
        result = control.apply(images[:30], {name: change})
        achieved = result.measured[:, column] - result.original[:, column]
        expected = float((achieved - change).abs().median() / control.calibrations[name].std)
        assert expected > 1e-3  # open loop misses
        assert results[f"physical/{name}/error"] == pytest.approx(expected, rel=1e-5)
        assert results[f"physical/{name}/error_open_loop"] == results[f"physical/{name}/error"]  # rounds = 0
    assert "physical/width/identity" not in results  # no classifier, no identity
    none = control_evaluation(control, images[:30], steps=[1.0], names=["width"], physical_edits={})
    assert not any(key.startswith("physical/") for key in none)


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        ({"colour": 1.0}, "physical_edits: unknown attributes ['colour']; choose from ['thickness'"),
        ({"slant": float("nan")}, "physical_edits: slant=nan is not a finite number"),
        ({"width": "wide"}, "physical_edits: width='wide' is not a finite number"),
    ],
)
def test_bad_physical_edits_are_one_line_config_errors(edits: dict, message: str) -> None:
    from genvae.callbacks import AttributeControlEvaluation

    control, images = exact_control(rounds=0)
    with pytest.raises(ConfigError) as info:
        control_evaluation(control, images[:5], physical_edits=edits)
    assert message in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="^AttributeControlEvaluation: physical_edits: "):
        AttributeControlEvaluation(physical_edits=edits)


def test_physical_edit_of_an_uncalibrated_attribute_is_refused_before_the_evaluation() -> None:
    model, images, attributes = exact_data()
    control = AttributeControl.fit(model, images, attributes, ["thickness"], measure=ExactModel.measure)
    with pytest.raises(
        ConfigError, match=r"physical_edits: \['height', 'slant', 'width'\] are not calibrated"
    ):
        control_evaluation(control, images[:5])


# ------------------------------------------------------------------ test-time callback and CLI


@pytest.fixture(scope="module")
def arvae_ckpt(tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An AR-VAE (experiments/arvae.yaml) trained one step on the tiny data."""
    from .test_cli import checkpoint_of

    return checkpoint_of("arvae", tiny_mnist, tmp_path_factory.mktemp("arvae"))


def test_callback_logs_control_metrics_table_grid_and_calibration(
    arvae_ckpt: Path, tiny_mnist: Path, tmp_path: Path
) -> None:
    from .test_cli import checkpoint_of, run_cli

    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(arvae_ckpt.read_bytes())
    classifier = checkpoint_of("classifier", tiny_mnist, tmp_path)
    callback = {
        "class_path": "genvae.callbacks.AttributeControlEvaluation",
        "init_args": {
            "classifier_checkpoint": str(classifier),
            "num_images": 12,
            "calibration_images": 24,
            "steps": [-1.0, 1.0],
            "attributes": ["thickness", "width"],
            "grid_attributes": ["slant"],
            "grid_rows": 2,
            "rounds": 2,
            "physical_edits": {"thickness": 1.0, "height": -0.5},
            "physical_images": 5,
        },
    }
    overlay = tmp_path / "control.yaml"
    overlay.write_text(json.dumps({"trainer": {"callbacks": [callback], "logger": False}}))
    run_cli(
        [
            "test",
            "--config",
            str(REPO / "experiments" / "arvae.yaml"),
            "--config",
            str(overlay),
            "--data.init_args.root",
            str(tiny_mnist),
            "--trainer.accelerator",
            "cpu",
            "--ckpt_path",
            str(ckpt),
        ],
        tmp_path,
    )
    metrics = json.loads(ckpt.with_name("last.metrics.json").read_text())
    for key in (
        "error/thickness/+1std",
        "error/width",
        "leakage/thickness/area",
        "identity",
        "identity_1std",
        "identity_1std/width",
        "plausible_1std",  # the training split's ranges per label
        "plausible_1std/thickness",
        "physical/thickness/error",
        "physical/thickness/error_open_loop",
        "physical/height/leakage",
        "physical/height/identity",
    ):
        assert f"test/control/{key}" in metrics, key
    assert "test/control/physical/width/error" not in metrics  # only the requested physical edits
    assert "test/control/error/slant" not in metrics  # only the evaluated attributes
    assert "| thickness |" in ckpt.with_name("last.control.md").read_text()
    control = json.loads(ckpt.with_name("last.control.json").read_text())
    assert control["attributes"]["thickness"]["dim"] == 0 and control["attributes"]["slant"]["dim"] == 1
    assert len(list((tmp_path / "figures" / "test" / "control" / "grid" / "slant").glob("*.png"))) == 1


def edit_cli(ckpt: Path, data: Path, *args: str) -> None:
    from genvae.cli import main

    main(
        ["edit", "--config", str(REPO / "experiments" / "arvae.yaml"), "--data.init_args.root", str(data)]
        + ["--ckpt_path", str(ckpt), "--calibration_images", "40", "--rounds", "2", *args]
    )


def test_edit_command_writes_the_figure_and_the_calibration(
    arvae_ckpt: Path, tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(arvae_ckpt.read_bytes())
    out = tmp_path / "edits.png"
    edit_cli(
        ckpt,
        tiny_mnist,
        "--set",
        "thickness=+1.0",
        "--set",
        "slant=-0.2",
        "--indices",
        "0:3",
        "--out",
        str(out),
    )
    assert "thickness +1 px: median |achieved - requested|" in capsys.readouterr().err
    assert (tmp_path / "model.control.json").is_file()  # fitted once, reused below
    grid = tmp_path / "grid.png"
    edit_cli(ckpt, tiny_mnist, "--grid", "width=-1,+0,+1,12", "--indices", "2:4", "--out", str(grid))
    from PIL import Image

    for path in (out, grid):
        image = Image.open(path)
        assert image.width > 300 and image.height > 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "colour=+1"], "--set: unknown attribute 'colour'; choose from"),
        (["--set", "thickness=+1", "--indices", "5:2"], "--indices: '5:2' is not a non-empty range"),
        (["--set", "thickness=+1", "--indices", "0:100000"], "within [0, 100] of the 100 test images"),
        (["--grid", "slant=0.1,x"], "--grid: slant='x' is not a number"),
    ],
)
def test_edit_command_bad_input_is_one_line(
    arvae_ckpt: Path, tiny_mnist: Path, args: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as info:
        edit_cli(arvae_ckpt, tiny_mnist, *args, "--calibration", str(arvae_ckpt.with_name("none.json")))
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("genvae: error: ") and message in err[-1], err


def test_edit_command_refuses_a_model_without_a_flat_latent(tiny_mnist: Path, tmp_path: Path, capsys) -> None:
    from genvae.cli import main

    ckpt = tmp_path / "vq.ckpt"
    ckpt.write_bytes(b"")
    with pytest.raises(SystemExit):
        main(
            ["edit", "--config", str(REPO / "experiments" / "vqvae.yaml"), "--ckpt_path", str(ckpt)]
            + ["--data.init_args.root", str(tiny_mnist), "--set", "thickness=+1"]
        )
    assert "genvae: error: genvae edit: VQVAE has no flat latent" in capsys.readouterr().err


def test_bad_physical_edits_in_the_overlay_are_one_line(
    arvae_ckpt: Path, tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from .test_cli import run_cli

    callback = {
        "class_path": "genvae.callbacks.AttributeControlEvaluation",
        "init_args": {"physical_edits": {"colour": 1.0}},
    }
    overlay = tmp_path / "control.yaml"
    overlay.write_text(json.dumps({"trainer": {"callbacks": [callback], "logger": False}}))
    with pytest.raises(SystemExit) as info:
        run_cli(
            ["test", "--config", str(REPO / "experiments" / "arvae.yaml"), "--config", str(overlay)]
            + ["--data.init_args.root", str(tiny_mnist), "--ckpt_path", str(arvae_ckpt)],
            tmp_path,
        )
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("genvae: error: AttributeControlEvaluation: physical_edits: unknown attributes")
    assert "Traceback" not in "\n".join(err)

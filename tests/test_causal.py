"""The causal Morpho-MNIST dataset: targets, generation, the verified cache, bad input as one line."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
import torch

from genvae.cli import main
from genvae.data import MNISTDataModule
from genvae.data import datamodule as datamodule_module
from genvae.data.attributes import ATTRIBUTE_NAMES
from genvae.data.causal import (
    causal_images,
    counterfactual_intensity,
    read_targets,
    sample_targets,
    true_counterfactuals,
)
from genvae.data.perturb import PERTURBATIONS, median_intensity
from genvae.models import ARVAE

from .conftest import REPO, write_causal_targets, write_fake_mnist

SHARED_CAUSAL = REPO.parent / "shared" / "data" / "morpho_causal"
CAUSAL_YAML = str(REPO / "experiments" / "vae_causal.yaml")


def causal_module_for(root: Path, cache: Path, **kwargs) -> MNISTDataModule:  # noqa: ANN003
    return MNISTDataModule(
        root=str(root), dataset="morpho_thickness_intensity", source="test", cache_dir=str(cache), **kwargs
    )


def test_sampled_targets_follow_the_causal_model() -> None:
    thickness, intensity = sample_targets(20000, seed=0)
    assert torch.equal(sample_targets(20000, seed=0)[0], thickness)
    assert abs(float(thickness.mean()) - 2.5) < 0.02  # 0.5 + Gamma(10, rate 5): mean 0.5 + 10 / 5
    assert abs(float(thickness.var()) - 0.4) < 0.02  # variance 10 / 25
    assert float(intensity.min()) >= 64 and float(intensity.max()) <= 255
    correlation = torch.corrcoef(torch.stack([thickness, intensity]))[0, 1]
    inverted = torch.corrcoef(torch.stack(sample_targets(20000, seed=0, invert=True)))[0, 1]
    assert float(correlation) > 0.7 and float(inverted) < -0.7


@pytest.mark.parametrize("invert", [False, True])
def test_counterfactual_intensity_abducts_the_mechanism_noise(invert: bool) -> None:
    thickness, intensity = sample_targets(20000, seed=3, invert=invert)
    # the noise recovered from each digit's targets is the N(0, 0.5) the model drew
    loc = -2.0 * (thickness.double() - 2.0) if invert else 2.0 * (thickness.double() - 2.5)
    noise = torch.logit((intensity.double() - 64) / 191) - loc
    assert abs(float(noise.mean())) < 0.02 and abs(float(noise.std()) - 0.5) < 0.02
    # the null intervention keeps intensity; an intervention and its inverse return to it
    assert torch.allclose(
        counterfactual_intensity(thickness, intensity, thickness, invert), intensity, atol=1e-3
    )
    new = thickness + 1.0
    there = counterfactual_intensity(thickness, intensity, new, invert)
    back = counterfactual_intensity(new, there, thickness, invert)
    assert torch.allclose(back, intensity, atol=1e-2)
    # thicker digits get brighter under the published mechanism, darker under the inverted one
    assert bool(((there > intensity) if not invert else (there < intensity)).all())
    # known value: t 2.5 -> 3.0 at noise 0 (i = 64 + 191 / 2) gives 64 + 191 sigmoid(1)
    one = counterfactual_intensity(torch.tensor([2.5]), torch.tensor([159.5]), torch.tensor([3.0]))
    assert float(one) == pytest.approx(64 + 191 * torch.sigmoid(torch.tensor(1.0)).item(), abs=1e-3)


def test_the_true_counterfactual_of_the_null_intervention_is_the_digit() -> None:
    torch.manual_seed(0)
    sources = torch.zeros(3, 28, 28, dtype=torch.uint8)
    sources[:, 8:20, 12:16] = 255  # bars of stroke width 4
    thickness, intensity = torch.tensor([2.0, 3.0, 4.0]), torch.tensor([120.0, 180.0, 230.0])
    digits = causal_images(sources, thickness, intensity)
    same, kept = true_counterfactuals(sources, thickness, intensity, thickness)
    assert torch.equal(same, digits) and torch.allclose(kept, intensity, atol=1e-3)
    thicker, brighter = true_counterfactuals(sources, thickness, intensity, thickness + 1.0)
    assert bool((brighter > intensity).all())
    assert bool(((thicker > 0).sum((1, 2)) > (digits > 0).sum((1, 2))).all())  # more ink


def test_the_dataset_is_generated_once_and_read_back(tmp_path: Path) -> None:
    root = write_fake_mnist(tmp_path / "data", n_train=0, n_test=64)
    data = causal_module_for(root, tmp_path / "cache")
    data.prepare_data()
    data.setup()
    batch = next(iter(data.test_dataloader()))
    assert {"image", "label", "thickness", "intensity", "attributes"} <= set(batch)
    targets = read_targets(root / "t10k-morpho.csv", 64)
    test = data.splits["test"]
    order = test["thickness"]
    assert set(order.tolist()) <= set(targets[0].tolist())
    # intensity is the seventh attribute, measured on the generated images
    assert data.attribute_names == (*ATTRIBUTE_NAMES, "intensity") and test["attributes"].shape == (
        len(order),
        7,
    )
    assert torch.equal(test["attributes"][:, 6], median_intensity(test["image"]).float())
    # intensity as requested (uint8 truncation; the above-half-range set moves with the scaling)
    assert float((median_intensity(test["image"]) - test["intensity"].double()).abs().mean()) < 1.0
    # a second module reads the verified cache and generates nothing
    with mock.patch.object(datamodule_module, "generate_causal_images", side_effect=AssertionError):
        again = causal_module_for(root, tmp_path / "cache")
        again.prepare_data()
        again.setup()
    assert torch.equal(again.splits["test"]["image"], test["image"])


def test_a_damaged_image_cache_is_regenerated(tmp_path: Path) -> None:
    root = write_fake_mnist(tmp_path / "data", n_train=0, n_test=32)
    first = causal_module_for(root, tmp_path / "cache").load_split("test")
    (path,) = (tmp_path / "cache").glob("*.images-*.pt")
    payload = torch.load(path, weights_only=True)
    payload["images"][0, 10, 10] ^= 0xFF
    torch.save(payload, path)
    with pytest.warns(UserWarning, match="generated image cache content does not match its checksum"):
        again = causal_module_for(root, tmp_path / "cache").load_split("test")
    assert torch.equal(again["image"], first["image"])


def test_targets_are_found_beside_the_mnist_folder(tmp_path: Path) -> None:
    root = write_fake_mnist(tmp_path / "data" / "mnist", n_train=0, n_test=16)
    (tmp_path / "data" / "morpho_causal").mkdir()
    (root / "t10k-morpho.csv").rename(tmp_path / "data" / "morpho_causal" / "t10k-morpho.csv")
    split = causal_module_for(root, tmp_path / "cache").load_split("test")
    expected = read_targets(tmp_path / "data" / "morpho_causal" / "t10k-morpho.csv", 16)
    assert torch.equal(split["thickness"], expected[0]) and torch.equal(split["intensity"], expected[1])
    assert split["source_image"].shape == split["image"].shape and split["source_image"].dtype == torch.uint8


def test_seeded_targets_make_a_new_dataset(tmp_path: Path) -> None:
    root = write_fake_mnist(tmp_path / "data", n_train=0, n_test=32)
    (root / "t10k-morpho.csv").unlink()  # not needed with a seed
    split = causal_module_for(root, tmp_path / "cache", causal_seed=3, causal_invert=True).load_split("test")
    thickness, intensity = sample_targets(32, seed=7, invert=True)
    assert torch.equal(split["thickness"], thickness) and torch.equal(split["intensity"], intensity)


def _bad_rows(path: Path) -> None:
    write_causal_targets(path, 40, 0)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:30]) + "\n")


def _replace(line: int, text: str):  # noqa: ANN202
    def edit(path: Path) -> None:
        write_causal_targets(path, 64, 0)
        lines = path.read_text().splitlines()
        lines[line] = text
        path.write_text("\n".join(lines) + "\n")

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda path: path.unlink(), "target file not found"),
        (_bad_rows, "29 target rows for 64 images"),
        (_replace(5, "4,-1.0,120.0"), "line 6: thickness -1.0 is not a finite number"),
        (_replace(5, "4,nan,120.0"), "line 6: thickness nan is not a finite number"),
        (_replace(5, "4,2.0,inf"), "line 6: intensity inf is not a finite number"),
        (_replace(5, "7,2.0,120.0"), "line 6: index 7 does not match image 4"),
        (_replace(0, "idx,thickness,intensity"), "expected the header"),
    ],
)
def test_bad_targets_are_one_line_and_cache_nothing(
    edit, message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:  # noqa: ANN001
    root = write_fake_mnist(tmp_path / "data", n_train=0, n_test=64)
    edit(root / "t10k-morpho.csv")
    cache = tmp_path / "cache"
    args = [
        "fit",
        "--config",
        CAUSAL_YAML,
        "--data.init_args.root",
        str(root),
        "--data.init_args.source",
        "test",
    ]
    args += ["--data.init_args.cache_dir", str(cache), "--trainer.default_root_dir", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as info:
        main([*args, "--trainer.enable_progress_bar", "false", "--trainer.fast_dev_run", "true"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith(f"genvae: error: {root / 't10k-morpho.csv'}: "), err
    assert message in lines[-1] and "Traceback" not in err
    assert not cache.exists() or not list(cache.iterdir())  # nothing cached


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["--data.init_args.causal_seed", "-1"], "data.causal_seed"),
        (["--data.init_args.causal_invert", "true"], "data.causal_invert"),
    ],
)
def test_bad_causal_keys_are_one_line(args: list[str], key: str, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    root = write_fake_mnist(tmp_path / "data", n_train=0, n_test=16)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", CAUSAL_YAML, "--data.init_args.root", str(root), *args])
    assert info.value.code == 2
    assert f"genvae: error: {key}" in capsys.readouterr().err


def test_released_targets_are_read(shared_mnist: Path) -> None:
    if not (SHARED_CAUSAL / "t10k-morpho.csv").is_file():
        pytest.skip("released causal Morpho-MNIST targets not present")
    thickness, intensity = read_targets(SHARED_CAUSAL / "t10k-morpho.csv", 10000)
    assert abs(float(thickness.mean()) - 2.5) < 0.05 and float(intensity.min()) >= 64


# ------------------------------------------------------------------ the global perturbation dataset
def test_the_perturbation_dataset_labels_every_digit(tmp_path: Path) -> None:
    root = write_fake_mnist(tmp_path / "data", n_train=0, n_test=200)
    probabilities = {"plain": 0.1, "thin": 0.2, "thicken": 0.2, "swell": 0.2, "fracture": 0.3}
    data = MNISTDataModule(
        root=str(root), source="test", cache_dir=str(tmp_path / "cache"), perturbation=probabilities
    )
    split = data.load_split("test")
    kinds = split["perturbation"]
    assert kinds.shape == (200,) and data.perturbation_names == PERTURBATIONS
    counts = torch.bincount(kinds, minlength=5).float() / 200
    assert float((counts - torch.tensor(list(probabilities.values()))).abs().max()) < 0.1
    source = MNISTDataModule(root=str(root), source="test", cache_dir=str(tmp_path / "plain")).load_split(
        "test"
    )
    from genvae.data import perturb

    plain = kinds == PERTURBATIONS.index("plain")
    assert torch.equal(split["image"][plain], perturb.plain(source["image"][plain]))
    thin = kinds == PERTURBATIONS.index("thin")
    assert torch.equal(split["image"][thin], perturb.thin(source["image"][thin], 0.7))
    # seeded: a fresh cache gives the same images
    again = MNISTDataModule(
        root=str(root), source="test", cache_dir=str(tmp_path / "again"), perturbation=probabilities
    ).load_split("test")
    assert torch.equal(again["image"], split["image"]) and torch.equal(again["perturbation"], kinds)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data.init_args.perturbation", "{thin: 0.5, thicken: 0.4}"], "sum to 1"),
        (["--data.init_args.perturbation", "{thin: 1.5, plain: -0.5}"], "non-negative"),
        (["--data.init_args.perturbation", "{blur: 1.0}"], "unknown perturbations ['blur']"),
        (
            ["--data.init_args.perturbation", "{thin: 1.0}", "--data.init_args.dataset", "fashion_mnist"],
            "applies to dataset mnist",
        ),
    ],
)
def test_bad_perturbation_keys_are_one_line(args: list[str], message: str, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    root = write_fake_mnist(tmp_path / "data", n_train=0, n_test=16)
    with pytest.raises(SystemExit) as info:
        main(
            [
                "fit",
                "--config",
                str(REPO / "experiments" / "vae.yaml"),
                "--data.init_args.root",
                str(root),
                *args,
            ]
        )
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "genvae: error: data.perturbation" in err and message in err and "Traceback" not in err


def test_the_arvae_regularizes_intensity_where_the_data_has_it(tmp_path: Path) -> None:
    model = ARVAE(latent_dim=4, attributes=["thickness", "intensity"], backbone="mlp")
    root = write_fake_mnist(tmp_path / "data", n_train=0, n_test=16)
    data = causal_module_for(root, tmp_path / "cache")
    assert model._columns(data.attribute_names) == [0, 6]
    with pytest.raises(Exception, match="not among the datamodule's attributes"):
        model._columns(ATTRIBUTE_NAMES)  # plain MNIST: no intensity column

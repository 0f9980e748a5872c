"""``genvae test`` with the evaluation overlay (experiments/eval/): every metric printed and in the JSON file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from genvae.callbacks import MetricsJSON
from genvae.cli import DEFAULT_CALLBACKS, default_callbacks, main
from genvae.data.attributes import ATTRIBUTE_NAMES
from genvae.latent.generation import LATENT_REQUESTS

from .conftest import REPO
from .test_cli import checkpoint_of, data_args, run_cli

EXPERIMENTS = REPO / "experiments"
VAE_FAMILY = EXPERIMENTS / "eval" / "vae_family.yaml"
# where experiments/classifier.yaml writes its checkpoint and where the overlays look for it (both relative
# to the working directory)
CLASSIFIER = Path("checkpoints/classifier/mnist-classifier.ckpt")

DISENTANGLEMENT = ["interpretability", "mig", "modularity", "sap", "spearman"]
EXPECTED = [
    "test/fid",
    "test/precision",
    "test/recall",
    "test/iwae_nll",
    "test/recon_accuracy",
    "test/loss",
    "test/elbo",
    *(f"test/{name}" for name in DISENTANGLEMENT),
    *(f"test/interpretability/{name}" for name in ATTRIBUTE_NAMES),
    "test/morpho/fmd",
    *(f"test/soundness/composition/{m}{s}" for m in (1, 10) for s in ("", "_std")),
    "test/soundness/reversibility",
    "test/soundness/reversibility_std",
    *(f"test/soundness/reversibility/{name}" for name in ATTRIBUTE_NAMES),
    *(f"test/morpho/{kind}/{name}" for kind in ("w1", "ks", "recon_mae") for name in ATTRIBUTE_NAMES),
]


# test-sized settings of the shipped overlay (class name -> init_args to change); the rest is used as shipped
QUICK = {
    "ImportanceWeightedNLL": {"num_samples": 5},
    "LatentTraversal": {"num_bases": 2, "curve_steps": 3},  # attribute curves measure 6 x 3 x 2 images
    # closed-loop edits of 8 digits, one step, one refinement round (tests/test_latent_control.py covers more)
    "AttributeControlEvaluation": {"num_images": 8, "calibration_images": 16, "steps": [1.0], "rounds": 1},
    "CounterfactualSoundness": {"reversibility_images": 4, "rounds": 1, "label_edit_images": 8},
    "ConditionalGeneration": {"samples_per_class": 3},
}


def quick_overlay(folder: Path) -> Path:
    """experiments/eval/vae_family.yaml with the :data:`QUICK` settings, written to ``folder``."""
    config = yaml.safe_load(VAE_FAMILY.read_text())
    for callback in config["trainer"]["callbacks"]:
        changes = QUICK.get(callback["class_path"].rsplit(".", 1)[-1], {})
        callback["init_args"] = {**(callback.get("init_args") or {}), **changes}
    path = folder / "vae_family_quick.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def cpu_quiet() -> list[str]:
    return ["--trainer.accelerator", "cpu", "--trainer.logger", "false"]


@pytest.fixture(scope="module")
def workdir(tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory holding the classifier checkpoint where experiments/classifier.yaml puts it."""
    work = tmp_path_factory.mktemp("eval-workdir")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)  # the classifier's ModelCheckpoint writes relative to the working directory
        run_cli(
            [
                "fit",
                "--config",
                str(EXPERIMENTS / "classifier.yaml"),
                "--trainer.max_epochs",
                "1",
                "--trainer.limit_train_batches",
                "1",
                "--trainer.limit_val_batches",
                "1",
                *cpu_quiet(),
                *data_args(tiny_mnist),
            ],
            work / "classifier-run",
        )
    assert (work / CLASSIFIER).is_file()
    return work


@pytest.fixture(scope="module")
def betavae_checkpoint(tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ckpt = checkpoint_of("betavae", tiny_mnist, tmp_path_factory.mktemp("betavae"))
    assert ckpt.is_file()
    return ckpt


def test_the_overlay_replaces_the_callbacks_and_the_cli_adds_its_own(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(
            [
                "test",
                "--config",
                str(EXPERIMENTS / "betavae.yaml"),
                "--config",
                str(VAE_FAMILY),
                "--print_config",
            ]
        )
    assert info.value.code == 0
    callbacks = yaml.safe_load(capsys.readouterr().out)["trainer"]["callbacks"]
    names = [c["class_path"].rsplit(".", 1)[-1] for c in callbacks]
    assert names == [
        "LatentMetrics",
        "SampleQuality",
        "MorphometricFidelity",
        "ImportanceWeightedNLL",
        "LatentTraversal",
        "AttributeControlEvaluation",
        "CounterfactualSoundness",
        "ConditionalGeneration",
        "Reconstructions",
        "Samples",
        "Interpolation",
        "LatentScatter",
        "SpeedUp",
    ]
    assert callbacks[0]["init_args"] == {"protocol": "ksg", "latent": "mean"}
    assert callbacks[1]["init_args"]["classifier_checkpoint"] == str(CLASSIFIER)
    # the CLI's own callbacks come on top of any list, once each
    added = default_callbacks([MetricsJSON()])
    assert [type(c) for c in added] == [c for c in DEFAULT_CALLBACKS if c is not MetricsJSON]


def test_genvae_test_prints_and_writes_every_metric(
    workdir: Path,
    betavae_checkpoint: Path,
    tiny_mnist: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.chdir(workdir)  # the overlay's classifier_checkpoint is relative, as after classifier.yaml
    run_cli(
        [
            "test",
            "--config",
            str(EXPERIMENTS / "betavae.yaml"),
            "--config",
            str(quick_overlay(tmp_path)),
            "--ckpt_path",
            str(betavae_checkpoint),
            *cpu_quiet(),
            *data_args(tiny_mnist),
        ],
        tmp_path,
    )
    path = betavae_checkpoint.with_name(f"{betavae_checkpoint.stem}.metrics.json")
    written = json.loads(path.read_text())
    missing = [key for key in EXPECTED if key not in written]
    assert not missing, f"{missing} not in {sorted(written)}"
    not_finite = [key for key in EXPECTED if written[key] is None or not math.isfinite(written[key])]
    assert not not_finite, written
    assert written["meta/latent_protocol"] == "ksg" and written["meta/latent"] == "mean"  # LatentMetrics
    assert written["test/fid"] > 0
    assert 0 <= written["test/precision"] <= 1 and 0 <= written["test/recall"] <= 1
    assert 0 <= written["test/recon_accuracy"] <= 1
    # LatentTraversal adds its curves' monotonicity at test end, before MetricsJSON (a CLI default, so last)
    # writes the file; on a one-step model a flat curve may make it null
    assert {f"test/traversal_monotonicity/{name}" for name in ATTRIBUTE_NAMES} <= set(written)
    out = capsys.readouterr().out
    assert out.count(f"test metrics -> {path}") == 1  # MetricsJSON ran once
    printed = out[out.index(f"test metrics -> {path}") :]
    for key in EXPECTED:
        assert f"  {key} " in printed
    figures = {
        p.parent.relative_to(tmp_path / "figures").as_posix() for p in tmp_path.rglob("figures/**/*.png")
    }
    assert {
        "test/traversal/grid",
        "test/traversal/attributes",
        "test/reconstructions",
        "test/samples",
        "test/interpolation",
        "test/latent_scatter",
        "test/morpho/distributions",
        "test/morpho/reconstruction",
    } <= figures


def test_a_label_conditional_arvae_is_sampled_from_its_class_latents_and_label_edited(
    workdir: Path, tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The overlay on a label-conditional AR-VAE: conditional generation from the N(0, I) prior, from the
    class latents, and from the class latents with attributes requested through the regularized dims;
    label edits through the class latents, scored by the classifier and by the attributes they keep."""
    ckpt = checkpoint_of("arvae_conditional", tiny_mnist, tmp_path / "model")
    monkeypatch.chdir(workdir)
    run_cli(
        [
            "test",
            "--config",
            str(EXPERIMENTS / "arvae_conditional.yaml"),
            "--config",
            str(quick_overlay(tmp_path)),
            "--ckpt_path",
            str(ckpt),
            *cpu_quiet(),
            *data_args(tiny_mnist),
        ],
        tmp_path,
    )
    written = json.loads(ckpt.with_name(f"{ckpt.stem}.metrics.json").read_text())
    expected = [
        "test/conditional/accuracy",
        "test/conditional/class_latents/accuracy",
        "test/conditional/class_latents/fid",
        "test/conditional/attributes_requested/accuracy",
        *(f"test/conditional/attributes_requested/attribute_error/{a}" for a in LATENT_REQUESTS),
        "test/soundness/effectiveness/label",
        "test/soundness/reversibility/label",
        *(f"test/soundness/label_edit/{a}" for a in ATTRIBUTE_NAMES),
    ]
    missing = [key for key in expected if key not in written]
    assert not missing, f"{missing} not in {sorted(written)}"
    assert "test/conditional/class_latents/attribute_error/thickness" not in written  # nothing requested
    assert all(0 <= written[key] <= 1 for key in expected if key.endswith("accuracy"))


def test_a_guided_class_conditional_prior_is_scored_without_and_with_guidance(
    workdir: Path, tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The results runner's way: the class-conditional prior tested with the prior overlay, guided by the
    unconditional prior over the same VQ-VAE; both passes of ConditionalGeneration land in the JSON."""
    vqvae = checkpoint_of("vqvae", tiny_mnist, tmp_path / "vqvae")
    first_stage = ("--model.init_args.vqvae_checkpoint", str(vqvae))
    unconditional = checkpoint_of("vqvae_prior", tiny_mnist, tmp_path / "prior", first_stage)
    guided = (*first_stage, "--model.init_args.unconditional_prior", str(unconditional))
    guided += ("--model.init_args.guidance", "1.5")
    ckpt = checkpoint_of("vqvae_prior_conditional", tiny_mnist, tmp_path / "conditional", guided)
    monkeypatch.chdir(workdir)
    run_cli(
        [
            "test",
            "--config",
            str(EXPERIMENTS / "vqvae_prior_conditional.yaml"),
            "--config",
            str(EXPERIMENTS / "eval" / "vqvae_prior.yaml"),
            "--ckpt_path",
            str(ckpt),
            *guided,
            *cpu_quiet(),
            *data_args(tiny_mnist),
        ],
        tmp_path,
    )
    written = json.loads(ckpt.with_name(f"{ckpt.stem}.metrics.json").read_text())
    for prefix in ("test/conditional", "test/conditional/guided"):
        for key in ("accuracy", "fid", "precision", "recall", "fmd"):
            assert f"{prefix}/{key}" in written, f"{prefix}/{key} not in {sorted(written)}"
    assert written["test/conditional/guided/guidance"] == 1.5


def test_a_missing_classifier_checkpoint_is_one_clear_line(
    betavae_checkpoint: Path,
    tiny_mnist: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)  # no checkpoints/classifier here
    with pytest.raises(SystemExit) as info:
        run_cli(
            [
                "test",
                "--config",
                str(EXPERIMENTS / "betavae.yaml"),
                "--config",
                str(VAE_FAMILY),
                "--ckpt_path",
                str(betavae_checkpoint),
                *cpu_quiet(),
                *data_args(tiny_mnist),
            ],
            tmp_path,
        )
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("genvae: error:")]
    assert len(errors) == 1
    assert errors[0].startswith(
        f"genvae: error: {CLASSIFIER}: classifier checkpoint not found (given as SampleQuality.classifier_checkpoint)"
    )


def test_a_listed_default_callback_is_not_added_twice(tiny_mnist: Path, tmp_path: Path) -> None:
    # two RNGStateCheckpoint would stop the trainer ("more than one stateful callback")
    run_cli(
        [
            "fit",
            "--config",
            str(EXPERIMENTS / "smoke.yaml"),
            "--trainer.fast_dev_run",
            "true",
            "--trainer.callbacks+=genvae.callbacks.rng.RNGStateCheckpoint",
            *data_args(tiny_mnist),
        ],
        tmp_path,
    )

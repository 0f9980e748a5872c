"""The results pipeline: aggregation and README sections (known answers), and a tiny smoke of the command."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from genvae.results.presets import EXPERIMENTS, PRESETS
from genvae.results.render import (
    aggregate,
    conditional_table,
    fmt,
    ground_truth_table,
    latent_table,
    morphometry_table,
    replace_marked_sections,
    runs_table,
    samples_table,
    soundness_table,
)
from genvae.results.speed import speed_tables

from .conftest import REPO


def write_run(runs: Path, experiment: str, seed: int, metrics: dict[str, object], **record: object) -> None:
    folder = runs / experiment / f"seed{seed}"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "run.json").write_text(
        json.dumps({"seed": seed, "preset": "cpu", "epochs": 3, "test_images": 10000, **record})
    )


def test_aggregate_mean_std_over_seeds(tmp_path: Path) -> None:
    for seed, value in enumerate([0.8, 0.9, 1.0]):
        write_run(tmp_path, "arvae", seed, {"test/mig": value, "meta/latent_protocol": "ksg", "test/x": None})
    summary = aggregate(tmp_path)
    stat = summary.get("arvae", "test/mig")
    assert stat.n == 3
    assert stat.mean == pytest.approx(0.9)
    assert stat.std == pytest.approx(0.1)  # sample std (n - 1)
    assert summary.get("arvae", "meta/latent_protocol") is None  # strings are metadata, not metrics
    assert summary.get("arvae", "test/x") is None
    rows = list(csv.DictReader(summary.to_csv().splitlines()))
    assert rows == [
        {
            "experiment": "arvae",
            "metric": "test/mig",
            "mean": "0.9",
            "std": "0.1",
            "n_seeds": "3",
            "test_images": "10000",
            "epochs": "3",
        }
    ]
    assert fmt(stat, 2) == "0.90 ± 0.10"


def test_latent_table_has_random_row_and_paper_values(tmp_path: Path) -> None:
    write_run(tmp_path, "random_latent", 0, {"test/modularity": 0.91, "test/mig": 0.001}, epochs=0)
    write_run(tmp_path, "arvae", 0, {"test/interpretability": 0.87, "test/mig": 0.2})
    table = latent_table(aggregate(tmp_path))
    lines = table.splitlines()
    assert lines[2].startswith("| random latent")
    assert "0.870 (0.850)" in lines[3]  # the paper's AR-VAE interpretability beside ours


def test_runs_table_gives_wall_minutes_per_seed_and_the_total(tmp_path: Path) -> None:
    write_run(tmp_path, "random_latent", 0, {"test/mig": 0.0}, epochs=0)  # not trained: no row
    write_run(tmp_path, "vae", 0, {"test/mig": 0.1}, fit_seconds=120.0, test_seconds=30.0)
    write_run(tmp_path, "vae", 1, {"test/mig": 0.1}, fit_seconds=90.0, test_seconds=33.0, fit_resumed=True)
    write_run(tmp_path, "arvae", 2, {"test/mig": 0.1}, fit_seconds=60.0, test_seconds=6.0)
    table = runs_table(aggregate(tmp_path))
    rows = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in table.splitlines()[2:]
        if line.startswith("|")
    ]
    assert rows == [
        ["VAE", "0, 1", "3", "2.0 / 1.5 (seed 1 resumed)", "0.5 / 0.6"],
        ["AR-VAE", "2", "3", "1.0", "0.1"],
    ]
    assert table.endswith("All runs together: 6 min of wall time.")  # (120+30+90+33+60+6) s = 5.65 min
    assert "no runs yet" in runs_table(aggregate(tmp_path / "empty"))


def _rows(table: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip("|").split("|")] for line in table.splitlines() if line.startswith("|")
    ]


def test_soundness_and_conditional_tables_are_absent_without_their_keys(tmp_path: Path) -> None:
    write_run(tmp_path, "vae", 0, {"test/mig": 0.1})  # a run of today's results: no soundness keys
    summary = aggregate(tmp_path)
    assert soundness_table(summary) == "_no soundness evaluation in the runs yet_"
    assert conditional_table(summary) == "_no conditional generation evaluation in the runs yet_"
    assert "no soundness" in soundness_table(aggregate(tmp_path / "empty"))


def test_soundness_table_mean_over_seeds_and_image_std(tmp_path: Path) -> None:
    for seed, (one, ten) in enumerate([(1.0, 3.0), (2.0, 5.0)]):
        metrics = {
            "test/soundness/composition/1": one,
            "test/soundness/composition/1_std": 0.5,
            "test/soundness/composition/10": ten,
            "test/soundness/composition/10_std": 1.5 + seed,
            "test/soundness/reversibility": 7.0,
            "test/soundness/reversibility_std": 2.0,
        }
        write_run(tmp_path, "arvae", seed, metrics)
    write_run(
        tmp_path, "vqvae", 0, {"test/soundness/composition/1": 4.0, "test/soundness/composition/10": 9.0}
    )
    rows = _rows(soundness_table(aggregate(tmp_path)))
    assert rows[0][:5] == [
        "model",
        "seeds",
        "composition, 1 null edit ↓",
        "composition, 10 null edits ↓",
        "reversibility ±1 std ↓",
    ]
    assert len(rows[0]) == 5  # no conditional model: no label columns
    assert rows[2] == ["AR-VAE", "2", "1.50 ± 0.71 (σ 0.50)", "4.00 ± 1.41 (σ 2.00)", "7.00 ± 0.00 (σ 2.00)"]
    assert rows[3] == ["VQ-VAE", "1", "4.00", "9.00", "—"]  # composition only: no attribute dims


def test_soundness_and_conditional_tables_take_new_conditional_experiments(tmp_path: Path) -> None:
    metrics = {
        "test/soundness/composition/1": 1.0,
        "test/soundness/composition/10": 2.0,
        "test/soundness/reversibility/label": 3.0,
        "test/soundness/effectiveness/label": 0.96,
        "test/soundness/label_edit/thickness": 0.05,
        "test/soundness/label_edit/slant": 0.01,
        "test/conditional/accuracy": 0.97,
        **{f"test/conditional/accuracy/{c}": 0.9 + c / 100 for c in range(10)},
        "test/conditional/attribute_error/thickness": 0.12,
        "test/conditional/fid": 3.25,
        "test/conditional/precision": 0.8,
        "test/conditional/recall": 0.7,
        "test/conditional/fmd": 0.05,
        "test/conditional/class_latents/accuracy": 0.99,
        "test/conditional/class_latents/accuracy/3": 0.95,
        "test/conditional/class_latents/fid": 2.0,
    }
    write_run(tmp_path, "cvae_wide", 0, metrics)  # an experiment the tables do not know by name
    write_run(tmp_path, "ae", 0, {"test/soundness/composition/1": 0.5, "test/soundness/composition/10": 0.9})
    rows = _rows(soundness_table(aggregate(tmp_path)))
    assert rows[0][-4:] == [
        "reversibility do(label) ↓",
        "do(label) classified as the new label",
        "do(label): Δ thickness / std",
        "do(label): Δ slant / std",
    ]
    assert rows[2] == ["AE", "1", "0.50", "0.90", "—", "—", "—", "—", "—"]
    assert rows[3] == ["cvae_wide", "1", "1.00", "2.00", "—", "3.00", "96.0%", "0.050", "0.010"]
    rows = _rows(conditional_table(aggregate(tmp_path)))
    assert rows[0] == [
        "model",
        "latents",
        "classified as requested",
        "worst class",
        "thickness error / std",
        "FID ↓",
        "precision",
        "recall",
        "morphometric FMD ↓",
    ]
    assert rows[2] == [
        "cvae_wide",
        "own prior",
        "97.0%",
        "90.0%",
        "0.120",
        "3.2",
        "0.800",
        "0.700",
        "0.050",
    ]
    assert rows[3] == ["cvae_wide", "class latents", "99.0%", "95.0%", "—", "2.0", "—", "—", "—"]
    assert len(rows) == 4  # no attributes_requested keys: no third row
    guided = {"test/conditional/guided/accuracy": 0.995, "test/conditional/guided/guidance": 1.5}
    write_run(tmp_path, "prior_wide", 0, {"test/conditional/accuracy": 0.94, **guided})
    rows = _rows(conditional_table(aggregate(tmp_path)))
    assert [row[:3] for row in rows[-2:]] == [
        ["prior_wide", "own prior", "94.0%"],
        ["prior_wide", "own prior, guided (s = 1.5)", "99.5%"],
    ]


def test_replace_marked_sections_keeps_everything_else() -> None:
    text = (
        "intro\n<!-- results:a -->\nold a\n<!-- /results:a -->\n"
        "middle\n<!-- results:b -->\nold b\n<!-- /results:b -->\n"
    )
    updated = replace_marked_sections(text, {"a": "| new |"})
    assert updated == text.replace("old a", "| new |")
    assert replace_marked_sections(updated, {"a": "| new |"}) == updated


def test_speed_tables_from_benchmark_json(tmp_path: Path) -> None:
    hardware = {"cpu_count": 2, "processor": "cpu", "torch_threads": 2, "torch": "2.x", "cuda": None}
    (tmp_path / "attributes-1.json").write_text(
        json.dumps(
            {
                "date": "2026-12-01",
                "hardware": hardware,
                "device": "cpu",
                "images": 10000,
                "genvae_seconds": 3.2,
                "genvae_ms_per_image": 0.32,
                "reference_images": 10000,
                "reference_ms_per_image": 22.1,
            }
        )
    )
    tables = speed_tables(tmp_path)
    assert "0.320 ms (3.20 s)" in tables["speed-attributes"]
    assert "22.1 ms" in tables["speed-attributes"] and "69.1×" in tables["speed-attributes"]
    assert "no training benchmark" in tables["speed-training"]


def test_presets_cover_every_experiment() -> None:
    for preset in PRESETS.values():
        assert set(preset.epochs) == set(EXPERIMENTS)
    for experiment in EXPERIMENTS.values():
        assert (REPO / "experiments" / f"{experiment.name}.yaml").is_file()
        if experiment.overlay is not None:
            assert (REPO / "experiments" / "eval" / f"{experiment.overlay}.yaml").is_file()


def test_make_results_runs_every_registered_experiment() -> None:
    """`make results` reproduces every table: its default EXPERIMENTS are the runner's registry."""
    makefile = (REPO / "Makefile").read_text()
    line = next(line for line in makefile.splitlines() if line.startswith("EXPERIMENTS ?="))
    assert line.split("?=", 1)[1].split() == list(EXPERIMENTS)


def test_results_command_smoke_is_resumable(tiny_mnist: Path, tmp_path: Path) -> None:
    """One experiment (and the classifier it needs), a few steps, into a temporary folder; then skipped."""
    command = [
        sys.executable,
        "-m",
        "genvae.results",
        "run",
        "--preset",
        "smoke",
        "--experiments",
        "vae",
        "--seeds",
        "0",
        "--data",
        str(tiny_mnist),
        "--out",
        str(tmp_path / "results"),
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    run = tmp_path / "results" / "runs" / "vae" / "seed0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"test/elbo", "test/fid", "test/iwae_nll", "test/mig"} <= set(metrics)
    record = json.loads((run / "run.json").read_text())
    assert record["preset"] == "smoke" and record["epochs"] == 1 and record["test_images"] == 64
    assert (tmp_path / "results" / "runs" / "random_latent" / "seed0" / "metrics.json").is_file()
    rows = list(csv.DictReader((tmp_path / "results" / "summary.csv").open()))
    assert {"experiment", "metric", "mean", "std", "n_seeds", "test_images", "epochs"} == set(rows[0])
    assert any(r["experiment"] == "vae" and r["metric"] == "test/elbo" for r in rows)
    assert "| VAE |" in (tmp_path / "results" / "tables" / "latent.md").read_text()
    assert (run / "fit_metrics.csv").read_text().startswith("epoch,step,")

    second = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "vae seed 0: done (smoke), skipped" in second.stdout
    assert "training" not in second.stdout

    # --retest: the checkpoint is tested again (the metrics file rewritten), nothing is trained
    (run / "metrics.json").write_text("{}")
    third = subprocess.run([*command, "--retest"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "vae seed 0: testing" in third.stdout and "training" not in third.stdout
    retested = json.loads((run / "metrics.json").read_text())
    untimed = lambda metrics: {k: v for k, v in metrics.items() if not k.startswith("time/")}  # noqa: E731
    assert untimed(retested) == untimed(metrics) and retested.keys() == metrics.keys()


def test_a_run_of_the_preset_with_other_epochs_is_not_done(tmp_path: Path) -> None:
    from genvae.results.runner import ResultsRunner

    runner = ResultsRunner(PRESETS["cpu"], tmp_path, tmp_path / "runs", tmp_path / "work", REPO)
    epochs = PRESETS["cpu"].epochs["arvae"]
    write_run(tmp_path / "runs", "arvae", 0, {"test/mig": 0.1}, epochs=epochs)
    write_run(tmp_path / "runs", "arvae", 1, {"test/mig": 0.1}, epochs=epochs - 1)  # the preset has changed
    assert runner.is_done("arvae", 0) and not runner.is_done("arvae", 1)


def test_a_finished_shorter_fit_is_continued_and_equals_a_fit_from_the_start(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Raising a preset's epochs continues the finished fit; at a constant learning rate with exact resume
    the continued weights equal those of a fit run for that many epochs at once."""
    import dataclasses

    import torch

    from genvae.results.runner import ResultsRunner

    smoke = PRESETS["smoke"]
    two_epochs = dataclasses.replace(smoke, epochs={**smoke.epochs, "vae": 2})
    continued = ResultsRunner(smoke, tiny_mnist, tmp_path / "runs", tmp_path / "continued", REPO)
    continued.ensure_fit("vae", 0)
    continued.preset = two_epochs
    paths = continued.ensure_fit("vae", 0)
    record = json.loads(paths.fit_record.read_text())
    assert record["epochs"] == 2 and record["continued_from_epochs"] == 1 and not record["resumed"]
    assert "vae seed 0: continuing from 1 epochs (smoke)" in capsys.readouterr().out

    at_once = ResultsRunner(two_epochs, tiny_mnist, tmp_path / "runs", tmp_path / "at_once", REPO)
    reference = at_once.ensure_fit("vae", 0)
    weights = [torch.load(p.checkpoint, weights_only=False)["state_dict"] for p in (paths, reference)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_parallel_runners_never_claim_the_same_run(tmp_path: Path) -> None:
    from genvae.results.runner import ResultsRunner

    first, second = (
        ResultsRunner(PRESETS["smoke"], tmp_path, tmp_path / "runs", tmp_path / "work", REPO)
        for _ in range(2)
    )
    with first.claim("vae", 0) as claimed:
        assert claimed
        with first.claim("vae", 0) as again:  # re-entrant: a run claims the fits it needs
            assert again
        with second.claim("vae", 0, wait=False) as taken:
            assert not taken
        with second.claim("vae", 1, wait=False) as other_seed:
            assert other_seed
    with second.claim("vae", 0, wait=False) as taken:
        assert taken


def test_ground_truth_table_rows_per_way_of_asking(tmp_path: Path) -> None:
    for seed, mae in enumerate([10.0, 12.0]):
        metrics = {"test/ground_truth/truth/thickness_error": 0.1}
        for way, scale in (("unedited", 3.0), ("thickness", 2.0), ("thickness_intensity", 1.0)):
            metrics |= {
                f"test/ground_truth/{way}/mae": mae * scale,
                f"test/ground_truth/{way}/thickness_error": 0.2 * scale,
                f"test/ground_truth/{way}/intensity_error": 5.0 * scale,
            }
        write_run(tmp_path, "arvae_causal", seed, metrics)
    metrics = {f"test/ground_truth/{w}/mae": 20.0 for w in ("unedited", "thickness")}  # one mode only
    write_run(tmp_path, "vae_causal", 0, metrics)
    table = ground_truth_table(aggregate(tmp_path))
    rows = _rows(table)
    assert len(rows[0]) == 5 and all(len(row) == 5 for row in rows)  # no stray pipes in the cells
    assert [row[0] for row in rows[2:]] == [
        *["VAE (causal Morpho-MNIST)"] * 2,
        *["AR-VAE (thickness, intensity; causal Morpho-MNIST)"] * 3,
    ]
    assert rows[2][1:] == ["nothing (the test digit itself)", "20.00", "—", "—"]
    assert rows[4][1:4] == ["nothing (the test digit itself)", "33.00 ± 4.24", "0.600 ± 0.000"]
    assert rows[6][1:3] == ["thickness t′ and the mechanism's intensity i′", "11.00 ± 1.41"]
    assert "the truth itself measures" in table
    assert ground_truth_table(aggregate(tmp_path / "none")).startswith("_no ground-truth")


def test_sample_tables_say_which_rows_are_guided(tmp_path: Path) -> None:
    base = {"test/fid": 10.0, "test/morpho/fmd": 0.1}
    write_run(tmp_path, "vae", 0, base)
    assert "guided" not in samples_table(aggregate(tmp_path))
    guided = {"test/conditional/accuracy": 0.94, "test/conditional/guided/guidance": 1.5}
    write_run(tmp_path, "vqvae_prior_conditional", 0, {**base, **guided})
    summary = aggregate(tmp_path)
    for table in (samples_table(summary), morphometry_table(summary)):
        assert "VQ-VAE + class-conditional prior: guided, s = 1.5 (the configured scale" in table

"""The benchmark sections of the README (``genvae.results.speed``) from tiny synthetic JSON records, and the
JSON that ``benchmarks/bench_morphometry.py`` writes, read back by its renderer."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

from genvae.results.speed import (
    cli_table,
    denormals_table,
    latent_metrics_table,
    morphometry_speed_table,
    morphometry_table,
    perturb_table,
    speed_tables,
    startup_table,
    summary_table,
    training_table,
)

from .conftest import REPO

HARDWARE = {"cpu_count": 2, "processor": "Xeon", "torch_threads": 2, "torch": "2.x", "cuda": None}


def load_script(script: Path) -> ModuleType:
    """A benchmark script of benchmarks/ as a module (named after its file)."""
    spec = importlib.util.spec_from_file_location(script.stem, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def body_rows(table: str) -> list[list[str]]:
    """The cells of every body row of a Markdown table (header and separator dropped)."""
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in table.splitlines()[2:]]


def header(table: str) -> list[str]:
    return [c.strip() for c in table.splitlines()[0].strip("|").split(" | ")]


def morphometry_record(date: str, fmd: float, seconds: float) -> dict:
    case = {"name": "random halves", "real": 5000, "generated": 5000, "fmd": fmd, "w1/thickness": 0.0123}
    case |= {"w1/slant": 0.004, "shift/thickness": -0.0456, "shift/slant": math.nan, "ks/slant": 0.5}
    return {
        "date": date,
        "hardware": HARDWARE,
        "load_average": {"before": [1.25, 1.0, 1.0], "after": [3.0, 1.0, 1.0]},
        "cases": [case, {**case, "name": "dilated", "real": 10000, "generated": 10000}],
        "timing": {
            "repeats": 3,
            "images": [10000, 10000],
            "morphometric_distances_seconds": seconds,
            "attribute_distances_seconds": 0.0123,
        },
    }


def test_morphometry_rows_show_the_newest_record_of_each_case(tmp_path: Path) -> None:
    # The file names sort the other way round: "newest" follows the recorded dates.
    (tmp_path / "morphometry-b.json").write_text(
        json.dumps(morphometry_record("2026-12-01 10:00", 0.01, 9.5))
    )
    (tmp_path / "morphometry-a.json").write_text(
        json.dumps(morphometry_record("2026-12-02 08:30", 0.02, 4.25))
    )
    (tmp_path / "morphometry-broken.json").write_text("{not json")
    table = morphometry_table(tmp_path)
    assert header(table)[4:10] == [
        "fmd",
        "w1/thickness (px)",
        "w1/slant (rad)",
        "shift/thickness (px)",
        "shift/slant (rad)",
        "ks/slant",
    ]
    rows = body_rows(table)
    assert [(r[0], r[3]) for r in rows] == [
        ("2026-12-02 08:30", "random halves: 5,000 vs 5,000"),
        ("2026-12-02 08:30", "dilated: 10,000 vs 10,000"),
    ]
    first = rows[0]
    assert first[1] == "2-core Xeon, 2 threads, torch 2.x"  # the machine in every row
    assert first[2] == "1.2 → 3.0"  # 1-minute load average before → after
    assert first[4:10] == ["0.020", "0.012", "0.004", "-0.046", "—", "0.500"]  # NaN shown as a dash
    assert len(first) == 10
    # the times: the newest row per timed workload; a record from before the named workloads timed t10k vs dilated
    speed = body_rows(morphometry_speed_table(tmp_path))
    assert speed == [
        [
            "2026-12-02 08:30",
            first[1],
            "1.2 → 3.0",
            "t10k vs t10k dilated",
            "10,000 vs 10,000",
            "4.25",
            "3",
            "12.3",
        ],
    ]


def latent_case(name: str, ksg: float, reference: float | None, difference: float | None) -> dict:
    case: dict = {"case": name, "shape": [10000, 16]}
    for protocol, seconds in (("ksg", ksg), ("quantile", 0.06), ("histogram", 0.04)):
        case[protocol] = {"seconds": seconds, "cpu_seconds": seconds - 0.01, "mig": 0.1}
    if reference is not None:
        case["reference"] = {"seconds": reference, "cpu_seconds": reference - 0.5, "mig": 0.1}
        case["max_abs_difference_ksg_vs_reference"] = difference
    return case


def test_latent_metrics_rows_per_case_old_and_new_records(tmp_path: Path) -> None:
    old = {  # the fields bench_latent_metrics.py wrote before it recorded hardware_info()
        "date": "2026-12-02T00:41:46",
        "command": "benchmarks/bench_latent_metrics.py --data ../shared/data/mnist",
        "torch": "2.y",
        "threads": 1,
        "cpus": 4,
        "processor": "x86_64",
        "load_average_after": [5.125, 5.0, 6.0],
        "records": [latent_case("random", 2.96, 4.4, 2.2e-3), latent_case("noisy", 3.0, 4.3, 5.2e-4)],
    }
    new = {
        "date": "2026-12-02T09:00:00+00:00",
        "source": "arvae checkpoint latents, measured test attributes",
        "hardware": {**HARDWARE, "cuda": "NVIDIA H200"},
        "load_average": {"before": [0.5, 1.0, 1.0], "after": [0.75, 1.0, 1.0]},
        "records": [latent_case("last.ckpt", 1.5, None, None)],
    }
    (tmp_path / "latent-metrics-2.json").write_text(json.dumps(old))
    (tmp_path / "latent-metrics-1.json").write_text(json.dumps(new))
    table = latent_metrics_table(tmp_path)
    assert header(table)[3:] == [
        "case: latents, attributes (N × dims)",
        "ksg",
        "quantile",
        "histogram",
        "reference (ar-vae + scikit-learn)",
        "largest ksg − reference difference",
    ]
    rows = body_rows(table)
    assert [r[3] for r in rows] == [
        "random: synthetic latents, measured test attributes (10,000 × 16)",
        "noisy: synthetic latents, measured test attributes (10,000 × 16)",
        "last.ckpt: arvae checkpoint latents, measured test attributes (10,000 × 16)",
    ]
    assert rows[0][:3] == ["2026-12-02 00:41", "4-core x86_64, 1 threads, torch 2.y", "5.1 (after)"]
    assert rows[0][4:] == [
        "2.96 s (2.95 s CPU)",
        "0.06 s (0.05 s CPU)",
        "0.04 s (0.03 s CPU)",
        "4.40 s (3.90 s CPU)",
        "2.2e-03",
    ]
    assert rows[2][:3] == ["2026-12-02 09:00", "NVIDIA H200, 2 threads, torch 2.x", "0.5 → 0.8"]
    assert rows[2][7:] == ["—", "—"]  # run with --no-reference


def test_speed_tables_registers_every_section_and_placeholders(tmp_path: Path) -> None:
    tables = speed_tables(tmp_path)
    assert set(tables) == {
        "speed-summary",
        "speed-history",
        "speed-attributes",
        "speed-training",
        "speed-denormals",
        "speed-cli",
        "speed-startup",
        "morphometry-known-answers",
        "speed-morphometry",
        "speed-latent-metrics",
        "speed-perturb",
    }
    assert "no perturbation benchmark" in tables["speed-perturb"]
    assert "no morphometry benchmark" in tables["morphometry-known-answers"]
    assert "no latent-metrics benchmark" in tables["speed-latent-metrics"]
    assert "no denormals benchmark" in tables["speed-denormals"]
    assert "no command benchmark" in tables["speed-cli"]
    assert "no start-up breakdown" in tables["speed-startup"]


def test_bench_morphometry_json_renders(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The benchmark on 100 fake digits, with a VAE's samples as one workload: its JSON holds the printed
    numbers and renders as table rows."""
    from .test_cli import checkpoint_of

    checkpoint = checkpoint_of("vae", tiny_mnist, tmp_path / "vae")
    out = tmp_path / "bench" / "morphometry-test.json"
    script = REPO / "benchmarks" / "bench_morphometry.py"
    bench = load_script(script)
    argv = [str(script), "--data", str(tiny_mnist), "--repeats", "1", "--json", str(out)]
    argv += ["--checkpoint", str(checkpoint)]
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())
    assert record["hardware"]["torch_threads"] >= 1 and len(record["load_average"]["after"]) == 3
    assert [c["name"] for c in record["cases"]][1] == "first vs last 50 t10k (SD-3 vs SD-1 writers)"
    assert [(c["real"], c["generated"]) for c in record["cases"]] == [(50, 50), (50, 50), (100, 100)]
    for case in record["cases"]:
        assert f"{case['fmd']:.3f} | {case['w1/thickness']:.3f}" in printed
    workloads = record["timing"]["workloads"]
    assert [w["images"] for w in workloads] == [[100, 100]] * 3
    assert workloads[0]["name"] == "t10k vs the first 100 training digits"
    assert workloads[1]["name"] == f"t10k vs 100 samples of a VAE ({checkpoint.name})"  # absolute: name only
    for workload in workloads:
        assert f"{workload['name']}, 100 vs 100 images: {workload['seconds']:.2f} s" in printed
    rows = body_rows(morphometry_table(out.parent))
    assert len(rows) == 3 and rows[2][4] == f"{record['cases'][2]['fmd']:.3f}"
    speed = body_rows(morphometry_speed_table(out.parent))
    assert [row[3:6] for row in speed] == [
        [w["name"], "100 vs 100", f"{w['seconds']:.2f}"] for w in workloads
    ]


def training_record(date: str, workloads: dict[str, float], device: str = "cpu") -> dict:
    """A marginal-step-time record: ``workloads`` maps name -> genvae ms/step (plain: 10 ms/step)."""
    return {
        "date": date,
        "hardware": HARDWARE,
        "kind": "marginal_step_time",
        "device": device,
        "steps": [100, 600],
        "repeats": 3,
        "workloads": {
            name: {
                "label": f"{name} label",
                "ms_per_step": {"genvae": ms, "lightning": 10.1, "plain": 10.0},
                "ratio_plain_over_genvae": 10.0 / ms,
                "target": 0.95,
                "met": 10.0 / ms >= 0.95,
                "ratio_plain_over_lightning": 10.0 / 10.1,
            }
            for name, ms in workloads.items()
        },
    }


def test_training_table_shows_the_newest_record_of_each_workload(tmp_path: Path) -> None:
    (tmp_path / "training-old-format.json").write_text(
        json.dumps({"date": "2026-12-01 00:00", "images_per_s": {}})
    )
    (tmp_path / "training-1.json").write_text(
        json.dumps(training_record("2026-12-01 10:00", {"vae": 20.0, "arvae": 12.5}))
    )
    newer = training_record("2026-12-02 10:00", {"vae": 10.2})
    newer["workloads"]["vae"]["two_run_ratio_plain_over_genvae"] = 0.9  # a record with the in-run clock
    (tmp_path / "training-2.json").write_text(json.dumps(newer))
    rows = body_rows(training_table(tmp_path))
    assert [(r[0], r[1]) for r in rows] == [
        ("vae label", "2026-12-02 10:00"),
        ("arvae label", "2026-12-01 10:00"),
    ]
    assert rows[0][5:] == ["10.20", "10.10", "10.00", "0.98", "≥ 0.95", "yes", "0.99", "0.90"]
    assert rows[1][5:] == ["12.50", "10.10", "10.00", "0.80", "≥ 0.95", "no", "0.99", "—"]


def test_bench_perturb_json_renders(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The causal-dataset benchmark on the 300 fake digits and their target CSVs, 2 through DeepSCM's code:
    its JSON holds the printed numbers and renders as a table row."""
    out = tmp_path / "bench" / "perturb-test.json"
    script = REPO / "benchmarks" / "bench_perturb.py"
    bench = load_script(script)
    argv = [str(script), "--data", str(tiny_mnist), "--targets", str(tiny_mnist), "--reference-images", "2"]
    monkeypatch.setattr(sys, "argv", [*argv, "--json", str(out)])
    bench.main()
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())
    assert record["images"] == 300 and record["reference_images"] == 2 and record["targets"] == "released"
    assert (
        f"{record['generation_seconds']:8.2f} s = {record['generation_ms_per_image']:.4f} ms/image" in printed
    )
    (row,) = body_rows(perturb_table(out.parent))
    assert row[3:5] == ["cpu", "300"] and row[9] == f"{record['thickness_abs_error_mean']:.3f} px / " + (
        f"{record['intensity_abs_error_mean']:.2f}"
    )


def test_summary_shows_the_newest_attribute_and_training_figures_and_history_lists_every_file(
    tmp_path: Path,
) -> None:
    from genvae.results.speed import history_table, summary_table

    attributes = {"hardware": HARDWARE, "device": "cpu", "images": 10000, "genvae_seconds": 3.0}
    attributes |= {"genvae_ms_per_image": 0.3, "reference_images": 2000, "reference_ms_per_image": 24.0}
    (tmp_path / "attributes-a.json").write_text(json.dumps({**attributes, "date": "2026-12-01 09:00"}))
    newer = {**attributes, "date": "2026-12-02 09:00", "genvae_ms_per_image": 0.25}
    (tmp_path / "attributes-b.json").write_text(json.dumps(newer))
    (tmp_path / "training-a.json").write_text(json.dumps(training_record("2026-12-01 10:00", {"vae": 20.0})))
    (tmp_path / "training-b.json").write_text(json.dumps(training_record("2026-12-02 10:00", {"vae": 12.5})))
    rows = body_rows(summary_table(tmp_path))
    assert [row[:5] for row in rows] == [
        ["Morpho-MNIST attributes of 10,000 digits", "cpu", "0.250 ms / image", rows[0][3], "96.0× faster"],
        ["training step: vae label", "cpu", "12.50 ms (`genvae fit`)", rows[1][3], "plain / genvae = 0.80"],
    ]
    assert rows[1][5].startswith("2026-12-02 10:00, 2-core Xeon")
    history = body_rows(history_table(tmp_path))
    assert [(row[0], row[2]) for row in history] == [
        ("`results/bench/attributes-a.json`", "2026-12-01 09:00"),
        ("`results/bench/training-a.json`", "2026-12-01 10:00"),
        ("`results/bench/attributes-b.json`", "2026-12-02 09:00"),
        ("`results/bench/training-b.json`", "2026-12-02 10:00"),
    ]
    assert "no benchmark" in summary_table(tmp_path / "empty")


def test_bench_denormals_times_a_later_epoch_both_ways_and_renders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """benchmarks/bench_denormals.py with its runs replaced by known wall times: one later epoch is
    (T_long - T_short) / (LONG - SHORT) per setting, the median over repeats, in the JSON and the table."""
    script = REPO / "benchmarks" / "bench_denormals.py"
    bench = load_script(script)
    walls = {("true", "1"): [10.0, 11.0], ("true", "3"): [16.0, 18.0], ("false", "1"): [10.0, 10.0]}
    walls[("false", "3")] = [18.0, 17.0]
    commands = []

    def fake_run(cmd: list[str], log: Path) -> float:
        commands.append(cmd)
        flush, epochs = cmd[cmd.index("--flush_denormal") + 1], cmd[cmd.index("--trainer.max_epochs") + 1]
        return walls[(flush, epochs)].pop(0)

    monkeypatch.setattr(bench, "timed_run", fake_run)
    monkeypatch.setattr(bench, "steps_per_epoch", lambda *args: 421)
    out = tmp_path / "denormals-test.json"
    record = bench.main(["--data", "mnist", "--workloads", "mlp_vae", "--repeats", "2", "--json", str(out)])
    assert len(commands) == 8 and all(cmd[1:4] == ["-m", "genvae", "fit"] for cmd in commands)
    workload = json.loads(out.read_text())["workloads"]["mlp_vae"]
    assert workload["seconds_per_epoch"] == {"flushed": 3.25, "exact": 3.75}  # medians of (3, 3.5), (4, 3.5)
    assert workload["ratio_exact_over_flushed"] == pytest.approx(3.75 / 3.25)
    assert record["kind"] == "later_epoch_time" and record["epochs"] == [1, 3]
    (row,) = body_rows(denormals_table(tmp_path))
    assert row[0] == "MLP VAE (512, 256), batch 128"
    assert row[4:] == ["1 / 3, 2×", "421", "3.2", "3.8", "1.15×"]


IMPORTTIME = """import time: self [us] | cumulative | imported package
import time:      2000 |    1500000 |     torch
import time:       100 |     900000 |           torchvision
import time:       300 |    1000000 |         torchmetrics.functional
import time:       200 |    3000000 |   lightning
import time:     30000 |      30000 |     genvae.models
import time:     20000 |      50000 |   genvae.callbacks.progress
import time:       500 |    3100000 | genvae.cli
"""


def test_bench_cli_times_first_and_repeat_calls_beside_the_import_and_renders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """benchmarks/bench_cli.py with its runs replaced by known wall times: the cached fits are deleted before
    each first call, the repeat - import figure pairs each repeat with its own import, the start-up is split
    by package from -X importtime output, and the record renders in the tables."""
    bench = load_script(REPO / "benchmarks" / "bench_cli.py")
    assert bench.import_breakdown(IMPORTTIME) == {
        "genvae.cli": 3.1,
        "torch": 1.5,
        "lightning": 3.0,
        "torchmetrics.functional": 1.0,
        "torchvision": 0.9,
        "genvae (own modules)": 0.0505,
    }
    walls = {"import": [5.0, 6.0, 5.5], "sample": [9.0, 6.5, 10.0, 7.5, 9.5, 6.9], "edit": [12.0, 7.0] * 3}
    cached_before_first = []

    def fake_run(cmd: list[str], log: Path) -> float:
        if cmd[1:] == ["-c", "import genvae.cli"]:
            return walls["import"].pop(0)
        name = cmd[3]
        assert cmd[1:3] == ["-m", "genvae"] and "--ckpt_path" in cmd
        ckpt = Path(cmd[cmd.index("--ckpt_path") + 1])
        if len(walls[name]) % 2 == 0:  # a first call: nothing cached beside the checkpoint
            cached_before_first.append(bench.cached_fits(ckpt))
        ckpt.with_name(f"{ckpt.stem}.class-latents.pt").write_bytes(b"fit")
        return walls[name].pop(0)

    monkeypatch.setattr(bench, "timed_run", fake_run)
    monkeypatch.setattr(bench, "importtime_run", lambda: bench.import_breakdown(IMPORTTIME))
    given = tmp_path / "given.ckpt"
    given.write_bytes(b"weights")
    out = tmp_path / "cli-test.json"
    record = bench.main(["--data", "mnist", "--ckpt", str(given), "--repeats", "3", "--json", str(out)])
    assert cached_before_first == [[]] * 6 and not list(tmp_path.glob("given.*.pt"))  # a copy was used
    sample = json.loads(out.read_text())["commands"]["sample"]
    assert (
        sample["seconds_first"] == 9.5 and sample["seconds_repeat"] == 6.9 and sample["seconds_import"] == 5.5
    )
    assert sample["repeat_minus_import"] == pytest.approx(1.5)  # per repeat 6.5 - 5, 7.5 - 6, 6.9 - 5.5
    assert (
        sample["met"] and record["kind"] == "command_time" and record["startup_seconds"]["genvae.cli"] == 3.1
    )
    (row, _) = body_rows(cli_table(tmp_path))
    assert row[0] == "`genvae sample --label 7 --num 16`"
    assert row[4:] == ["3×", "9.50", "6.90", "5.50", "1.50", "≤ 3", "yes"]
    (startup,) = body_rows(startup_table(tmp_path))
    assert (
        startup[3] == "3.10" and "genvae (own modules) 0.05" in startup[4] and "lightning 3.00" in startup[4]
    )
    assert any(
        "repeat − import = 1.50 s" in r for r in (" ".join(x) for x in body_rows(summary_table(tmp_path)))
    )

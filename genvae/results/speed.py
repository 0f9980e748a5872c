"""The benchmark tables of the README and the docs, from the benchmark JSON files under ``results/bench/``.

``benchmarks/bench_attributes.py`` writes ``attributes*.json``, ``benchmarks/bench_training.py``
``training*.json``, ``benchmarks/bench_denormals.py`` ``denormals*.json``,
``benchmarks/bench_morphometry.py`` ``morphometry*.json``, ``benchmarks/bench_latent_metrics.py``
``latent-metrics*.json``, ``benchmarks/bench_perturb.py`` ``perturb*.json`` and ``benchmarks/bench_cli.py``
``cli*.json`` (each with the machine,
thread count, versions and load average it ran on). Each table shows the newest measurement of each
workload (per device kind: a CPU and a GPU time are two rows), with its date, machine and load; the older
ones stay in their JSON files as the history. :func:`speed_tables` returns the marked sections
``speed-attributes``, ``speed-training``, ``speed-denormals``, ``speed-cli``, ``speed-startup``,
``morphometry-known-answers``, ``speed-morphometry``, ``speed-latent-metrics`` and ``speed-perturb`` (the
docs pages), ``speed-history`` (every record file) and ``speed-summary`` (the README's short table of the
newest attribute, training and command figures).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from genvae.results.markdown import markdown_table

__all__ = ["speed_tables"]


def _load(bench: Path, pattern: str) -> list[dict]:
    records = []
    for path in sorted(bench.glob(pattern)):
        try:
            records.append(json.loads(path.read_text()))
        except ValueError:
            continue
    return sorted(records, key=lambda r: str(r.get("date", "")).replace("T", " "))


def _machine(record: dict) -> str:
    """GPU name or CPU cores and model, threads and torch version; older records without ``hardware``
    (``bench_latent_metrics.py`` before it recorded one) fall back to their top-level fields."""
    hw = record.get("hardware") or {
        "cpu_count": record.get("cpus"),
        "processor": record.get("processor", "CPU"),
        "torch_threads": record.get("threads"),
        "torch": record.get("torch"),
    }
    where = hw.get("cuda") or f"{hw.get('cpu_count')}-core {hw.get('processor', 'CPU')}"
    return f"{where}, {hw.get('torch_threads')} threads, torch {hw.get('torch')}"


def _load_average(record: dict) -> str:
    """The 1-minute load average before → after the run (``load_average``), or after only (older
    ``load_average_after`` records), or an em dash: how busy the shared machine was."""
    load = record.get("load_average")
    if isinstance(load, dict) and load.get("before") and load.get("after"):
        return f"{load['before'][0]:.1f} → {load['after'][0]:.1f}"
    after = record.get("load_average_after")
    if after:
        return f"{after[0]:.1f} (after)"
    return "—"


def _date(record: dict) -> str:
    """``YYYY-MM-DD HH:MM`` of the record's ``date`` (ISO or already in that form)."""
    return str(record.get("date", "—")).replace("T", " ")[:16]


STAMP_HEADER = ("date", "machine", "load (1 min)")


def _stamp_cells(record: dict) -> list[str]:
    """The first cells of every benchmark row, under :data:`STAMP_HEADER`: when, where, how busy."""
    return [_date(record), _machine(record), _load_average(record)]


def _device_kind(record: dict) -> str:
    """``cuda`` or ``cpu``: a workload timed on a GPU and on a CPU are two workloads of a table."""
    hw = record.get("hardware") or {}
    device = str(record.get("device") or ("cuda" if hw.get("cuda") else "cpu"))
    return "cuda" if device.startswith("cuda") else "cpu"


def _newest_per_key(keyed_rows: list[tuple[object, list[str]]]) -> list[list[str]]:
    """The last row of each key (records are loaded oldest first), in the order keys first appear: a table
    shows the newest measurement of each workload; the older ones stay in their JSON files."""
    newest: dict[object, list[str]] = {}
    for key, row in keyed_rows:
        newest[key] = row
    return list(newest.values())


def _count(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else "—"


def _number(value: object, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals; an em dash for a missing or non-finite value."""
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"


def attributes_table(bench: Path) -> str:
    records = _load(bench, "attributes*.json")
    if not records:
        return "_no attribute benchmark in results/bench yet_"
    keyed = [
        (
            _device_kind(r),
            [
                *_stamp_cells(r),
                r.get("device", "cpu"),
                f"{r['images']:,}",
                f"{r['genvae_ms_per_image']:.3f} ms ({r['genvae_seconds']:.2f} s)",
                f"{r['reference_ms_per_image']:.1f} ms ({r['reference_images']:,} images)",
                f"{r['reference_ms_per_image'] / r['genvae_ms_per_image']:.1f}×",
            ],
        )
        for r in records
    ]
    rows = _newest_per_key(keyed)
    header = [
        *STAMP_HEADER,
        "device",
        "images",
        "genvae per image (total)",
        "reference per image",
        "speed-up",
    ]
    return markdown_table(header, rows)


def perturb_table(bench: Path) -> str:
    """The newest causal Morpho-MNIST generation record per device (``benchmarks/bench_perturb.py``): the
    whole dataset (generation, then the morphometrics of the generated images), DeepSCM's per-image code on a
    sample, and how close both land to the thickness targets."""
    records = _load(bench, "perturb*.json")
    if not records:
        return "_no perturbation benchmark in results/bench yet_"
    keyed = [
        (
            _device_kind(r),
            [
                *_stamp_cells(r),
                r.get("device", "cpu"),
                f"{r['images']:,}",
                f"{r['dataset_seconds']:.1f} s ({r['generation_seconds']:.1f} s + {r['measurement_seconds']:.1f} s)",
                f"{r['generation_ms_per_image']:.2f} ms",
                f"{r['reference_ms_per_image']:.0f} ms ({r['reference_images']:,} images)",
                f"{r['speedup']:.0f}×",
                f"{r['thickness_abs_error_mean']:.3f} px / {r['intensity_abs_error_mean']:.2f}",
                f"{r['sample_genvae_thickness_abs_error_mean']:.3f} / "
                f"{r['sample_reference_thickness_abs_error_mean']:.3f} px",
            ],
        )
        for r in records
    ]
    header = [
        *STAMP_HEADER,
        "device",
        "images",
        "dataset (generation + morphometrics)",
        "genvae per image",
        "DeepSCM per image",
        "speed-up",
        "mean abs. error to target: thickness / intensity",
        "sample: genvae / DeepSCM thickness error",
    ]
    return markdown_table(header, _newest_per_key(keyed))


def _newest_training(bench: Path) -> dict[tuple[str, str], tuple[dict, dict]]:
    """``(workload, device kind) -> (record, workload entry)`` of the newest marginal-step-time record."""
    newest: dict[tuple[str, str], tuple[dict, dict]] = {}
    for record in _load(bench, "training*.json"):
        if record.get("kind") != "marginal_step_time":
            continue
        device = "cuda" if str(record.get("device", "cpu")).startswith("cuda") else "cpu"
        for name, workload in record["workloads"].items():
            newest[(name, device)] = (record, workload)  # records are sorted oldest first
    return newest


def training_table(bench: Path) -> str:
    """The newest marginal-step-time record per workload and device (``benchmarks/bench_training.py``):
    ``genvae fit`` as users run it vs the plain PyTorch loop, and a bare Lightning Trainer (the floor of
    Lightning's own loop) where the record has it; ms/step from the clock inside the runs, and the ratio
    from the difference of two runs where the record has both (records before the in-run clock hold only
    the two-run figures, shown as the ms/step). Older records (other kinds, or superseded ones) stay in
    results/bench as the history."""
    newest = _newest_training(bench)
    if not newest:
        return "_no training benchmark in results/bench yet_"
    rows = []
    for record, w in newest.values():
        ms = w["ms_per_step"]
        rows.append(
            [
                w["label"],
                *_stamp_cells(record),
                f"{(w.get('steps') or record['steps'])[0]} / {(w.get('steps') or record['steps'])[1]}, "
                f"{record['repeats']}×",
                f"{ms['genvae']:.2f}",
                _number(ms.get("lightning"), 2),
                f"{ms['plain']:.2f}",
                f"{w['ratio_plain_over_genvae']:.2f}",
                f"≥ {w['target']:.2f}",
                "yes" if w["met"] else "no",
                _number(w.get("ratio_plain_over_lightning"), 2),
                _number(w.get("two_run_ratio_plain_over_genvae"), 2),
            ]
        )
    header = [
        "workload",
        *STAMP_HEADER,
        "steps, repeats",
        "genvae fit ms/step",
        "bare Lightning ms/step",
        "plain loop ms/step",
        "plain / genvae",
        "target",
        "met",
        "plain / bare Lightning",
        "plain / genvae, two runs",
    ]
    return markdown_table(header, rows)


def denormals_table(bench: Path) -> str:
    """The newest later-epoch-time record per workload (``benchmarks/bench_denormals.py``): ``genvae fit``
    with subnormal floats flushed to zero (the default) and computed exactly."""
    keyed = [
        (
            (name, _device_kind(record)),
            [
                w["label"],
                *_stamp_cells(record),
                f"{record['epochs'][0]} / {record['epochs'][1]}, {record['repeats']}×",
                f"{w['steps_per_epoch']:,}",
                f"{w['seconds_per_epoch']['flushed']:.1f}",
                f"{w['seconds_per_epoch']['exact']:.1f}",
                f"{w['ratio_exact_over_flushed']:.2f}×",
            ],
        )
        for record in _load(bench, "denormals*.json")
        for name, w in record["workloads"].items()
    ]
    if not keyed:
        return "_no denormals benchmark in results/bench yet_"
    header = [
        "workload",
        *STAMP_HEADER,
        "epochs, repeats",
        "steps an epoch",
        "s per later epoch, flushed",
        "s per later epoch, exact",
        "exact / flushed",
    ]
    return markdown_table(header, _newest_per_key(keyed))


def cli_table(bench: Path) -> str:
    """The newest command-time record per command (``benchmarks/bench_cli.py``): a generation command's
    first call (fits cached beside the checkpoint), its repeat call, and the start-up it cannot go below
    (``import genvae.cli``), medians of interleaved fresh processes."""
    keyed = [
        (
            (name, _device_kind(record)),
            [
                f"`{c['command']}`",
                *_stamp_cells(record),
                f"{record['repeats']}×",
                f"{c['seconds_first']:.2f}",
                f"{c['seconds_repeat']:.2f}",
                f"{c['seconds_import']:.2f}",
                f"{c['repeat_minus_import']:.2f}",
                f"≤ {c['target']:.0f}",
                "yes" if c["met"] else "no",
            ],
        )
        for record in _load(bench, "cli*.json")
        for name, c in record["commands"].items()
    ]
    if not keyed:
        return "_no command benchmark in results/bench yet_"
    header = [
        "command",
        *STAMP_HEADER,
        "repeats",
        "first call s",
        "repeat call s",
        "import genvae.cli s",
        "repeat − import s",
        "target",
        "met",
    ]
    return markdown_table(header, _newest_per_key(keyed))


def startup_table(bench: Path) -> str:
    """Where the start-up of every command goes (``benchmarks/bench_cli.py``'s ``python -X importtime``
    runs): ``import genvae.cli`` in all, the packages Lightning imports on the way, and genvae's own
    modules; the newest record per device kind that has the breakdown."""
    keyed = []
    for record in _load(bench, "cli*.json"):
        startup = record.get("startup_seconds")
        if not startup:
            continue
        parts = [f"{name} {seconds:.2f}" for name, seconds in startup.items() if name != "genvae.cli"]
        keyed.append(
            (_device_kind(record), [*_stamp_cells(record), f"{startup['genvae.cli']:.2f}", "; ".join(parts)])
        )
    if not keyed:
        return "_no start-up breakdown in results/bench yet_"
    header = [*STAMP_HEADER, "import genvae.cli s", "of which, cumulative where first imported (s)"]
    return markdown_table(header, _newest_per_key(keyed))


MORPHOMETRY_COLUMNS = ("fmd", "w1/thickness", "w1/slant", "shift/thickness", "shift/slant", "ks/slant")
MORPHOMETRY_UNITS = {"fmd": "", "w1/thickness": " (px)", "w1/slant": " (rad)", "shift/thickness": " (px)"}
MORPHOMETRY_UNITS |= {"shift/slant": " (rad)", "ks/slant": ""}


def _morphometry_workloads(record: dict) -> list[dict]:
    """The timed workloads of a morphometry record, each ``{"name", "images": [n, m], "seconds"}``.

    Records since 2026-12-02 time several named workloads (``timing.workloads``); older ones timed a single
    t10k vs dilated-t10k comparison (``timing.morphometric_distances_seconds``).
    """
    timing = record.get("timing", {})
    if "workloads" in timing:
        return list(timing["workloads"])
    images = record.get("images")
    return [
        {
            "name": "t10k vs t10k dilated",
            "images": timing.get("images") or [images, images],
            "seconds": timing.get("morphometric_distances_seconds"),
        }
    ]


def morphometry_table(bench: Path) -> str:
    """Known answers of the morphometric distances on the real t10k digits (``morphometry*.json``): one row
    per case of each file, with the file's machine, load and 10k vs 10k times in every row."""
    records = _load(bench, "morphometry*.json")
    if not records:
        return "_no morphometry benchmark in results/bench yet_"
    keyed = []
    for r in records:
        for case in r.get("cases", []):
            sets = f"{case.get('name', '—')}: {_count(case.get('real'))} vs {_count(case.get('generated'))}"
            keyed.append(
                (
                    sets,
                    [
                        *_stamp_cells(r),
                        sets,
                        *[_number(case.get(c)) for c in MORPHOMETRY_COLUMNS],
                    ],
                )
            )
    rows = _newest_per_key(keyed)
    header = [
        *STAMP_HEADER,
        "sets (images)",
        *[f"{c}{MORPHOMETRY_UNITS[c]}" for c in MORPHOMETRY_COLUMNS],
    ]
    return markdown_table(header, rows)


def morphometry_speed_table(bench: Path) -> str:
    """Wall time of ``morphometric_distances`` (attributes of both sets, then the distances) per timed
    workload of each ``morphometry*.json``, and of the distances alone on precomputed attributes."""
    records = _load(bench, "morphometry*.json")
    if not records:
        return "_no morphometry benchmark in results/bench yet_"
    keyed = []
    for r in records:
        timing = r.get("timing", {})
        repeats = timing.get("repeats")
        only = _number(1000 * timing.get("attribute_distances_seconds", math.nan), 1)
        for workload in _morphometry_workloads(r):
            n_real, n_generated = workload.get("images") or (None, None)
            keyed.append(
                (
                    (_device_kind(r), workload.get("name")),
                    [
                        *_stamp_cells(r),
                        workload.get("name", "—"),
                        f"{_count(n_real)} vs {_count(n_generated)}",
                        _number(workload.get("seconds"), 2),
                        str(repeats) if isinstance(repeats, int) else "—",
                        only,
                    ],
                )
            )
    rows = _newest_per_key(keyed)
    header = [
        *STAMP_HEADER,
        "workload",
        "images",
        "morphometric_distances (s)",
        "best of",
        "distances alone (ms)",
    ]
    return markdown_table(header, rows)


def _seconds(entry: dict | None) -> str:
    """Wall seconds with the process CPU seconds in brackets (the fairer measure on a shared machine)."""
    if not entry:
        return "—"
    return f"{_number(entry.get('seconds'), 2)} s ({_number(entry.get('cpu_seconds'), 2)} s CPU)"


def latent_metrics_table(bench: Path) -> str:
    """Time of every latent metric per mutual-information protocol and of the AR-VAE reference code
    (``latent-metrics*.json``), one row per case of each file, with the largest |ksg - reference|."""
    records = _load(bench, "latent-metrics*.json")
    if not records:
        return "_no latent-metrics benchmark in results/bench yet_"
    protocols = list(dict.fromkeys(p for r in records for c in r.get("records", []) for p in _protocols(c)))
    keyed = []
    for r in records:
        for case in r.get("records", []):
            n, dims = case.get("shape") or (None, "—")
            difference = case.get("max_abs_difference_ksg_vs_reference")
            workload = f"{case.get('case', '—')}: {_latent_source(r)} ({_count(n)} × {dims})"
            keyed.append(
                (
                    (_device_kind(r), workload),
                    [
                        *_stamp_cells(r),
                        workload,
                        *[_seconds(case.get(p)) for p in protocols],
                        _seconds(case.get("reference")),
                        f"{difference:.1e}" if isinstance(difference, int | float) else "—",
                    ],
                )
            )
    rows = _newest_per_key(keyed)
    header = [
        *STAMP_HEADER,
        "case: latents, attributes (N × dims)",
        *protocols,
        "reference (ar-vae + scikit-learn)",
        "largest ksg − reference difference",
    ]
    return markdown_table(header, rows)


def _latent_source(record: dict) -> str:
    """What the latents and attributes were (``source``; for older records read from their ``command``)."""
    if record.get("source"):
        return str(record["source"])
    command = str(record.get("command", ""))
    if "--checkpoint" in command:
        return "checkpoint latents, measured test attributes"
    if "--data" in command:
        return "synthetic latents, measured test attributes"
    return "synthetic latents, synthetic attributes"


def _protocols(case: dict) -> list[str]:
    """The protocol entries of a latent-metrics case: timed results other than the reference."""
    return [k for k, v in case.items() if isinstance(v, dict) and "seconds" in v and k != "reference"]


def summary_table(bench: Path) -> str:
    """The front page's speed figures: the newest attribute measurement per device kind against the
    scikit-image reference, the newest training step time per workload against a plain PyTorch loop, and
    the newest repeat call of each generation command against the start-up (``import genvae.cli``)."""
    rows = []
    newest_attributes: dict[str, dict] = {}
    for record in _load(bench, "attributes*.json"):
        newest_attributes[_device_kind(record)] = record
    for device, r in newest_attributes.items():
        rows.append(
            [
                f"Morpho-MNIST attributes of {r['images']:,} digits",
                device,
                f"{r['genvae_ms_per_image']:.3f} ms / image",
                f"{r['reference_ms_per_image']:.1f} ms / image (scikit-image reference)",
                f"{r['reference_ms_per_image'] / r['genvae_ms_per_image']:.1f}× faster",
                f"{_date(r)}, {_machine(r)}",
            ]
        )
    for (_, device), (record, w) in _newest_training(bench).items():
        ms = w["ms_per_step"]
        rows.append(
            [
                f"training step: {w['label']}",
                device,
                f"{ms['genvae']:.2f} ms (`genvae fit`)",
                f"{ms['plain']:.2f} ms (plain PyTorch loop)",
                f"plain / genvae = {w['ratio_plain_over_genvae']:.2f}",
                f"{_date(record)}, {_machine(record)}",
            ]
        )
    newest_cli: dict[tuple[str, str], tuple[dict, dict]] = {}
    for record in _load(bench, "cli*.json"):
        for name, command in record["commands"].items():
            newest_cli[(name, _device_kind(record))] = (record, command)
    for (_, device), (record, c) in newest_cli.items():
        rows.append(
            [
                f"`{c['command']}`, repeat call",
                device,
                f"{c['seconds_repeat']:.2f} s (first call {c['seconds_first']:.2f} s)",
                f"{c['seconds_import']:.2f} s (`import genvae.cli`)",
                f"repeat − import = {c['repeat_minus_import']:.2f} s",
                f"{_date(record)}, {_machine(record)}",
            ]
        )
    if not rows:
        return "_no benchmark in results/bench yet_"
    header = ["workload", "device", "genvae", "baseline", "ratio", "measured"]
    return markdown_table(header, rows)


HISTORY = {  # file prefix -> the benchmark that writes it
    "attributes": "benchmarks/bench_attributes.py",
    "training": "benchmarks/bench_training.py",
    "denormals": "benchmarks/bench_denormals.py",
    "morphometry": "benchmarks/bench_morphometry.py",
    "latent-metrics": "benchmarks/bench_latent_metrics.py",
    "perturb": "benchmarks/bench_perturb.py",
    "cli": "benchmarks/bench_cli.py",
}


def history_table(bench: Path) -> str:
    """Every benchmark record of ``bench`` (the history the other tables show the newest of), oldest first:
    its file under ``results/bench/``, the benchmark that wrote it, its date, device kind and machine."""
    rows = []
    for prefix, script in HISTORY.items():
        for path in sorted(bench.glob(f"{prefix}-*.json")):
            try:
                record = json.loads(path.read_text())
            except ValueError:
                continue
            rows.append(
                [
                    f"`results/bench/{path.name}`",
                    f"`{script}`",
                    _date(record),
                    _device_kind(record),
                    _machine(record),
                ]
            )
    if not rows:
        return "_no benchmark in results/bench yet_"
    rows.sort(key=lambda row: (row[2], row[0]))
    return markdown_table(["file", "written by", "date", "device", "machine"], rows)


def speed_tables(bench: Path) -> dict[str, str]:
    """Marked sections ``speed-attributes``, ``speed-training``, ``speed-denormals``, ``speed-cli``,
    ``speed-startup``, ``morphometry-known-answers``, ``speed-morphometry``, ``speed-latent-metrics``,
    ``speed-perturb``, ``speed-summary`` and ``speed-history``."""
    return {
        "speed-summary": summary_table(bench),
        "speed-history": history_table(bench),
        "speed-attributes": attributes_table(bench),
        "speed-training": training_table(bench),
        "speed-denormals": denormals_table(bench),
        "speed-cli": cli_table(bench),
        "speed-startup": startup_table(bench),
        "morphometry-known-answers": morphometry_table(bench),
        "speed-morphometry": morphometry_speed_table(bench),
        "speed-latent-metrics": latent_metrics_table(bench),
        "speed-perturb": perturb_table(bench),
    }

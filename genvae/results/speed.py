"""The README's speed tables, from the benchmark JSON files under ``results/bench/``.

``benchmarks/bench_attributes.py`` writes ``attributes*.json`` and ``benchmarks/bench_training.py`` writes
``training*.json`` (each with the machine, thread count and versions it ran on); every file is one row, so
repeated runs on different days or machines sit side by side with their absolute times.
"""

from __future__ import annotations

import json
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
    return sorted(records, key=lambda r: r.get("date", ""))


def _machine(record: dict) -> str:
    hw = record.get("hardware", {})
    where = hw.get("cuda") or f"{hw.get('cpu_count')}-core {hw.get('processor', 'CPU')}"
    return f"{where}, {hw.get('torch_threads')} threads, torch {hw.get('torch')}"


def attributes_table(bench: Path) -> str:
    records = _load(bench, "attributes*.json")
    if not records:
        return "_no attribute benchmark in results/bench yet_"
    rows = [
        [
            r.get("date", "—"),
            _machine(r),
            r.get("device", "cpu"),
            f"{r['images']:,}",
            f"{r['genvae_ms_per_image']:.3f} ms ({r['genvae_seconds']:.2f} s)",
            f"{r['reference_ms_per_image']:.1f} ms ({r['reference_images']:,} images)",
            f"{r['reference_ms_per_image'] / r['genvae_ms_per_image']:.1f}×",
        ]
        for r in records
    ]
    header = [
        "date",
        "machine",
        "device",
        "images",
        "genvae per image (total)",
        "reference per image",
        "speed-up",
    ]
    return markdown_table(header, rows)


def training_table(bench: Path) -> str:
    records = _load(bench, "training*.json")
    if not records:
        return "_no training benchmark in results/bench yet_"
    rows = []
    for r in records:
        rate = r["images_per_s"]
        switches = ", ".join(k for k in ("compile", "channels_last") if r.get(k)) or "—"
        rows.append(
            [
                r.get("date", "—"),
                _machine(r),
                switches,
                f"{rate['genvae']:.0f}",
                f"{rate['plain']:.0f}",
                f"{rate['dataloader']:.0f}",
                f"{r['ratios']['genvae/plain']:.2f}×",
                f"{r['ratios']['genvae/dataloader']:.2f}×",
            ]
        )
    header = [
        "date",
        "machine",
        "switches",
        "genvae img/s",
        "plain loop img/s",
        "DataLoader img/s",
        "genvae / plain",
        "genvae / DataLoader",
    ]
    return markdown_table(header, rows)


def speed_tables(bench: Path) -> dict[str, str]:
    """Marked README sections ``speed-attributes`` and ``speed-training``."""
    return {"speed-attributes": attributes_table(bench), "speed-training": training_table(bench)}

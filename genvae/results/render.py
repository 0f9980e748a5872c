"""Aggregate the per-run metrics JSONs into ``summary.csv`` and render the tables and figures of the README
and the docs pages.

Everything a reader sees in the results and speed sections of ``README.md`` and ``docs/*.md`` comes from
here: the Markdown between ``<!-- results:<name> -->`` and ``<!-- /results:<name> -->`` markers, in any of
those pages, is replaced by the section ``<name>`` built from ``results/summary.csv`` (and
``results/bench/*.json``), and the figures are copied or drawn into ``docs/figures/`` and linked relative
to each page. Nothing is typed by hand except the published reference values of :data:`PAPER_VALUES`,
each cited.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from genvae.results.markdown import markdown_table
from genvae.utils.atomic import atomic_write_bytes

__all__ = [
    "Summary",
    "aggregate",
    "build_sections",
    "marker_names",
    "page_sections",
    "pages",
    "render_all",
    "replace_marked_sections",
]

# Pati & Lerch 2020 ("Attribute-based regularization of latent spaces for variational auto-encoders",
# Neural Computing and Applications), Table 3, Morpho-MNIST, mean over their runs: beta-VAE and AR-VAE.
PAPER_VALUES: dict[str, dict[str, float]] = {
    "betavae": {
        "test/interpretability": 0.41,
        "test/sap": 0.28,
        "test/spearman": 0.63,
        "test/mig": 0.03,
        "test/recon_accuracy": 0.942,
    },
    "arvae": {
        "test/interpretability": 0.85,
        "test/sap": 0.55,
        "test/spearman": 0.96,
        "test/mig": 0.14,
        "test/recon_accuracy": 0.970,
    },
}

LABELS = {
    "random_latent": "random latent N(0, I)",
    "classifier": "classifier",
    "ae": "AE",
    "vae": "VAE",
    "betavae": "β-VAE (β = 4)",
    "arvae": "AR-VAE",
    "cvae": "CVAE (label)",
    "arvae_conditional": "AR-VAE (label-conditional)",
    "vqvae": "VQ-VAE",
    "vqvae_prior": "VQ-VAE + prior",
    "vqvae_prior_conditional": "VQ-VAE + class-conditional prior",
    "vae_causal": "VAE (causal Morpho-MNIST)",
    "arvae_causal": "AR-VAE (thickness, intensity; causal Morpho-MNIST)",
}
ATTRIBUTES = ("thickness", "slant", "length", "area", "width", "height")
# the physical-unit edit targets, as evaluated by AttributeControlEvaluation (labels only)
PHYSICAL_EDITS = {"thickness": "+1 px", "slant": "−0.2 rad", "width": "+2 px", "height": "−0.5 px"}
UNITS = {"thickness": "px", "slant": "rad", "length": "px", "area": "px²", "width": "px", "height": "px"}


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float
    n: int


class Summary:
    """Mean and std over seeds of every numeric metric of every experiment (``summary.csv``)."""

    def __init__(self, rows: dict[tuple[str, str], Stat], runs: dict[str, list[dict]]) -> None:
        self.rows = rows
        self.runs = runs  # run.json records per experiment

    def get(self, experiment: str, metric: str) -> Stat | None:
        return self.rows.get((experiment, metric))

    def experiments(self) -> list[str]:
        return [e for e in LABELS if e in self.runs] + sorted(set(self.runs) - set(LABELS))

    def run_info(self, experiment: str, key: str) -> object:
        values = {json.dumps(r.get(key)) for r in self.runs.get(experiment, [])}
        return json.loads(values.pop()) if len(values) == 1 else None

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["experiment", "metric", "mean", "std", "n_seeds", "test_images", "epochs"])
        for (experiment, metric), stat in sorted(self.rows.items()):
            writer.writerow(
                [
                    experiment,
                    metric,
                    f"{stat.mean:.6g}",
                    f"{stat.std:.6g}" if math.isfinite(stat.std) else "",
                    stat.n,
                    self.run_info(experiment, "test_images"),
                    self.run_info(experiment, "epochs"),
                ]
            )
        return out.getvalue()


def aggregate(runs_dir: Path) -> Summary:
    """Read ``<runs_dir>/<experiment>/seed<k>/{metrics,run}.json``; numeric metrics only (``meta/*`` skipped)."""
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    records: dict[str, list[dict]] = defaultdict(list)
    for metrics_file in sorted(runs_dir.glob("*/seed*/metrics.json")):
        experiment = metrics_file.parent.parent.name
        run_file = metrics_file.with_name("run.json")
        records[experiment].append(json.loads(run_file.read_text()) if run_file.is_file() else {})
        for metric, value in json.loads(metrics_file.read_text()).items():
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                values[(experiment, metric)].append(float(value))
    rows = {
        key: Stat(statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else float("nan"), len(v))
        for key, v in values.items()
    }
    return Summary(rows, dict(records))


# ---------------------------------------------------------------------------------------------- formatting
def fmt(stat: Stat | None, digits: int = 3, scale: float = 1.0, suffix: str = "") -> str:
    """``mean ± std`` (std over seeds; omitted for one seed), or an em dash when missing."""
    if stat is None:
        return "—"
    mean = f"{stat.mean * scale:.{digits}f}{suffix}"
    if stat.n < 2 or not math.isfinite(stat.std):
        return mean
    return f"{mean} ± {stat.std * scale:.{digits}f}"


def _provenance(summary: Summary, experiments: Iterable[str]) -> str:
    experiments = list(experiments)
    if not any(summary.runs.get(e) for e in experiments):
        return "_no runs yet: `make results` fills this table._"
    parts = []
    for experiment in experiments:
        runs = summary.runs.get(experiment)
        if not runs:
            continue
        epochs = summary.run_info(experiment, "epochs")
        seeds = f"{len(runs)} seed{'s' if len(runs) > 1 else ''}"
        epoch_word = "epoch" if epochs == 1 else "epochs"
        parts.append(f"{LABELS.get(experiment, experiment)} {epochs} {epoch_word} × {seeds}")
    presets = {r.get("preset") for e in experiments for r in summary.runs.get(e, [])} - {None}
    images = {r.get("test_images") for e in experiments for r in summary.runs.get(e, [])} - {None}
    hardware = {
        (r.get("hardware") or {}).get("cuda") or f"{(r.get('hardware') or {}).get('cpu_count')}-core CPU"
        for e in experiments
        for r in summary.runs.get(e, [])
        if e != "random_latent"
    }
    text = "; ".join(parts)
    extra = []
    if presets:
        extra.append(f"preset `{', '.join(sorted(presets))}`")
    if images:
        extra.append(", ".join(f"{i:,}" for i in sorted(images)) + " test images")
    if hardware:
        extra.append(", ".join(sorted(hardware)))
    return f"_{text} ({'; '.join(extra)}); mean ± std over seeds._"


# ---------------------------------------------------------------------------------------------- tables
def latent_table(
    summary: Summary, experiments: Iterable[str] = ("random_latent", "ae", "vae", "betavae", "arvae")
) -> str:
    """Latent-space metrics of every model with a latent, the random-latent row first."""
    experiments = [e for e in experiments if e in summary.runs]
    columns = [
        ("interpretability", "test/interpretability", 3, 1.0, ""),
        ("MIG", "test/mig", 3, 1.0, ""),
        ("modularity", "test/modularity", 3, 1.0, ""),
        ("SAP", "test/sap", 3, 1.0, ""),
        ("Spearman", "test/spearman", 3, 1.0, ""),
        ("recon. accuracy", "test/recon_accuracy", 1, 100.0, "%"),
    ]
    rows = []
    for experiment in experiments:
        row = [LABELS.get(experiment, experiment)]
        for _, key, digits, scale, suffix in columns:
            cell = fmt(summary.get(experiment, key), digits, scale, suffix)
            paper = PAPER_VALUES.get(experiment, {}).get(key)
            if paper is not None:
                cell += f" ({paper * scale:.{digits}f}{suffix})"
            row.append(cell)
        rows.append(row)
    table = markdown_table(["model", *[c[0] for c in columns]], rows)
    return f"{table}\n\n{_provenance(summary, experiments)} In brackets: the AR-VAE paper's values."


def per_attribute_table(summary: Summary, experiment: str = "arvae") -> str:
    if experiment not in summary.runs:
        return "_no runs yet_"
    header = ["metric", *ATTRIBUTES]
    rows = [
        [
            "interpretability",
            *[fmt(summary.get(experiment, f"test/interpretability/{a}"), 2) for a in ATTRIBUTES],
        ],
        [
            "traversal monotonicity",
            *[fmt(summary.get(experiment, f"test/traversal_monotonicity/{a}"), 2) for a in ATTRIBUTES],
        ],
    ]
    return markdown_table(header, rows)


def vqvae_table(summary: Summary) -> str:
    experiments = [e for e in ("vae", "vqvae") if e in summary.runs]
    rows = [
        [
            LABELS[e],
            fmt(summary.get(e, "test/mse"), 5),
            fmt(summary.get(e, "test/recon_accuracy"), 1, 100.0, "%"),
            fmt(summary.get(e, "test/usage"), 1, 100.0, "%"),
            fmt(summary.get(e, "test/perplexity"), 1),
            fmt(summary.get(e, "test/dead_codes"), 1),
        ]
        for e in experiments
    ]
    header = [
        "model",
        "test MSE (per pixel)",
        "recon. accuracy",
        "codebook usage",
        "perplexity",
        "dead codes",
    ]
    return f"{markdown_table(header, rows)}\n\n{_provenance(summary, experiments)}"


CONDITIONAL_MODELS = ("cvae", "arvae_conditional", "vqvae_prior_conditional")
GUIDED = "test/conditional/guided"  # keys of a guided prior's samples; its scale under GUIDED/guidance


def _guidance_note(summary: Summary, experiments: Iterable[str]) -> str:
    """Which rows' samples were drawn with classifier-free guidance: a guided prior's ``sample`` uses the
    scale it is configured with, so its sample-quality rows are of guided samples."""
    guided = [(e, summary.get(e, f"{GUIDED}/guidance")) for e in experiments]
    parts = [f"{LABELS.get(e, e)}: guided, s = {scale.mean:g}" for e, scale in guided if scale is not None]
    if not parts:
        return ""
    return (
        f" {'; '.join(parts)} (the configured scale; without guidance: "
        "[Conditional generation](#conditional-generation))."
    )


def samples_table(summary: Summary) -> str:
    models = ("vae", "betavae", "arvae", "vqvae_prior", *CONDITIONAL_MODELS)
    experiments = [e for e in models if e in summary.runs and summary.get(e, "test/fid") is not None]
    experiments.sort(key=lambda e: summary.get(e, "test/fid").mean)
    rows = [
        [
            LABELS[e],
            fmt(summary.get(e, "test/fid"), 1),
            fmt(summary.get(e, "test/precision"), 3),
            fmt(summary.get(e, "test/recall"), 3),
            fmt(summary.get(e, "test/iwae_nll"), 1),
            fmt(summary.get(e, "test/morpho/fmd"), 3),
        ]
        for e in experiments
    ]
    header = ["model", "FID ↓", "precision", "recall", "IWAE NLL (nats) ↓", "morphometric FMD ↓"]
    note = ""
    accuracy = summary.get("classifier", "test/accuracy")
    if accuracy is not None:
        note = f" Feature network: the genvae classifier, test accuracy {fmt(accuracy, 1, 100.0, '%')}."
    iwae = {summary.run_info(e, "iwae_samples") for e in experiments} - {None}
    if iwae:
        note += f" IWAE with K = {', '.join(str(k) for k in sorted(iwae))}."
    if any(e in CONDITIONAL_MODELS for e in experiments):
        note += (
            " Conditional models: class-balanced samples from their own prior (N(0, I), the class-token "
            "prior), IWAE bounds −log p(x | label); their class-latent samples: [Conditional generation]"
            "(#conditional-generation)."
        )
    note += _guidance_note(summary, experiments)
    return f"{markdown_table(header, rows)}\n\n{_provenance(summary, experiments)}{note}"


def morphometry_table(summary: Summary) -> str:
    """Models ranked by the Fréchet morphometric distance of their samples, with per-attribute W1."""
    experiments = [e for e in LABELS if summary.get(e, "test/morpho/fmd") is not None]
    experiments.sort(key=lambda e: summary.get(e, "test/morpho/fmd").mean)
    header = ["model", "FMD ↓", *[f"W1 {a} ({UNITS[a]})" for a in ATTRIBUTES], "FID"]
    rows = [
        [
            LABELS[e],
            fmt(summary.get(e, "test/morpho/fmd"), 3),
            *[fmt(summary.get(e, f"test/morpho/w1/{a}"), 3) for a in ATTRIBUTES],
            fmt(summary.get(e, "test/fid"), 1),
        ]
        for e in experiments
    ]
    note = _guidance_note(summary, experiments)
    return f"{markdown_table(header, rows)}\n\n{_provenance(summary, experiments)}{note}"


def reconstruction_morphometry_table(summary: Summary) -> str:
    experiments = [e for e in LABELS if summary.get(e, "test/morpho/recon_mae/thickness") is not None]
    header = ["model", *[f"{a} MAE ({UNITS[a]}) / r" for a in ATTRIBUTES]]
    rows = [
        [
            LABELS[e],
            *[
                f"{fmt(summary.get(e, f'test/morpho/recon_mae/{a}'), 3)} / "
                f"{fmt(summary.get(e, f'test/morpho/recon_r/{a}'), 3)}"
                for a in ATTRIBUTES
            ],
        ]
        for e in experiments
    ]
    return f"{markdown_table(header, rows)}\n\n{_provenance(summary, experiments)}"


def control_table(summary: Summary) -> str:
    """Closed-loop attribute control of the β-VAE, the AR-VAE and its label-conditional sibling: error,
    leakage, identity (``test/control/*``)."""
    chosen = ("betavae", "arvae", "arvae_conditional")
    experiments = [e for e in chosen if summary.get(e, "test/control/error") is not None]
    if not experiments:
        return "_no control evaluation in the runs yet_"
    rows_spec = [
        ("median abs. error / std, all edits", "test/control/error"),
        *((f"· error of {a} edits", f"test/control/error/{a}") for a in ATTRIBUTES),
        ("leakage into other attributes (mean abs. change / std)", "test/control/leakage"),
        *((f"· leakage of {a} edits", f"test/control/leakage/{a}") for a in ATTRIBUTES),
        ("identity kept, ±1 std edits", "test/control/identity_1std"),
        ("· share of ±1 std requests inside the range of the digit's class", "test/control/plausible_1std"),
        ("· identity kept, ±1 std requests inside that range", "test/control/identity_1std/plausible"),
        ("· identity kept, ±1 std requests outside it", "test/control/identity_1std/implausible"),
        *(
            (
                f"· {a} ±1 std: identity kept (share in range, identity kept there)",
                f"test/control/identity_1std/{a}",
            )
            for a in ATTRIBUTES
        ),
        ("identity kept, all edits", "test/control/identity"),
    ]
    for attribute, request in PHYSICAL_EDITS.items():
        key = f"test/control/physical/{attribute}"
        rows_spec += [
            (f"{attribute} {request}: median abs. error / std (closed loop)", f"{key}/error"),
            (f"{attribute} {request}: same, calibration alone", f"{key}/error_open_loop"),
            (f"{attribute} {request}: leakage / identity kept", f"{key}/leakage"),
        ]
    rows = []
    for label, key in rows_spec:
        cells = [fmt(summary.get(e, key), 3) for e in experiments]
        attribute = key.removeprefix("test/control/identity_1std/")
        if attribute in ATTRIBUTES:  # identity, then in brackets the share in range and the identity there
            cells = [
                f"{fmt(summary.get(e, key), 3)} ({fmt(summary.get(e, f'test/control/plausible_1std/{attribute}'), 3)}, "
                f"{fmt(summary.get(e, f'{key}/plausible'), 3)})"
                for e in experiments
            ]
        if key.endswith("/leakage") and "/physical/" in key:
            identity = key.removesuffix("leakage") + "identity"
            kept = [fmt(summary.get(e, identity), 1, 100.0, "%") for e in experiments]
            cells = [f"{c} / {k}" for c, k in zip(cells, kept, strict=True)]
        rows.append([label, *cells])
    table = markdown_table(["metric", *[LABELS[e] for e in experiments]], rows)
    return f"{table}\n\n{_provenance(summary, experiments)}"


def _with_experiment_key(summary: Summary, key: str) -> list[str]:
    """The experiments (README order, then any other, e.g. new conditional models) that have ``key``."""
    return [e for e in summary.experiments() if summary.get(e, key) is not None]


def soundness_table(summary: Summary) -> str:
    """Counterfactual soundness (``test/soundness/*``, Monteiro et al. 2023; protocol of Melistas et al.
    2024): composition after 1 and 10 null edits and reversibility of ±1 std edits, per-image mean
    |x - x_0| on the 0-255 scale; per model the mean over seeds ± std over seeds, and in brackets the
    std over the test images (the mean over seeds of each run's std)."""
    experiments = _with_experiment_key(summary, "test/soundness/composition/1")
    if not experiments:
        return "_no soundness evaluation in the runs yet_"

    def cell(experiment: str, key: str) -> str:
        stat = summary.get(experiment, key)
        spread = summary.get(experiment, f"{key}_std")
        if stat is None or spread is None:
            return fmt(stat, 2)
        return f"{fmt(stat, 2)} (σ {spread.mean:.2f})"

    label_keys = ("test/soundness/reversibility/label", "test/soundness/effectiveness/label")
    conditional = any(summary.get(e, k) is not None for e in experiments for k in label_keys)
    header = ["model", "seeds", "composition, 1 null edit ↓", "composition, 10 null edits ↓"]
    header += ["reversibility ±1 std ↓"]
    if conditional:
        header += ["reversibility do(label) ↓", "do(label) classified as the new label"]
        header += ["do(label): Δ thickness / std", "do(label): Δ slant / std"]
    rows = []
    for e in experiments:
        row = [LABELS.get(e, e), str(summary.get(e, "test/soundness/composition/1").n)]  # seeds with the keys
        row += [cell(e, f"test/soundness/composition/{m}") for m in (1, 10)]
        row += [cell(e, "test/soundness/reversibility")]
        if conditional:
            row += [
                cell(e, "test/soundness/reversibility/label"),
                fmt(summary.get(e, "test/soundness/effectiveness/label"), 1, 100.0, "%"),
                fmt(summary.get(e, "test/soundness/label_edit/thickness"), 3),
                fmt(summary.get(e, "test/soundness/label_edit/slant"), 3),
            ]
        rows.append(row)
    note = (
        " seeds: the runs evaluated for soundness (earlier runs are retested with `--retest`)."
        " Mean |x − x₀| per image on the 0–255 scale (σ: its std over the test images); reversibility pools "
        "the +1 std and −1 std edits of every edited attribute, each followed by the edit back. do(label): "
        "the latent moved to the new class's aggregate posterior, an AR-VAE's thickness and slant held "
        "(`genvae.latent.class_latents.label_edit`), scored on 1000 test digits; Δ: median |edited − "
        "reconstruction| / std of the reconstructions' values."
    )
    return f"{markdown_table(header, rows)}\n\n{_provenance(summary, experiments)}{note}"


# the ways conditional samples are drawn (ConditionalGeneration): key prefix, what the table calls them
CONDITIONAL_DRAWS = (
    ("test/conditional", "own prior"),
    (GUIDED, "own prior, guided"),
    ("test/conditional/class_latents", "class latents"),
    ("test/conditional/attributes_requested", "class latents + 4 attributes asked"),
)


def conditional_table(summary: Summary) -> str:
    """Conditional generation (``test/conditional/*``): class accuracy of class-balanced samples, the error
    of each requested attribute, and their sample quality against the test set; one row per model and way
    of drawing (:data:`CONDITIONAL_DRAWS`: the model's own prior; its class latents,
    :mod:`genvae.latent.class_latents`; the class latents with an AR-VAE's regularized attributes
    requested)."""
    experiments = _with_experiment_key(summary, "test/conditional/accuracy")
    if not experiments:
        return "_no conditional generation evaluation in the runs yet_"
    draws = [
        (e, prefix, name)
        for e in experiments
        for prefix, name in CONDITIONAL_DRAWS
        if summary.get(e, f"{prefix}/accuracy") is not None
    ]
    attributes = [
        a
        for a in ATTRIBUTES
        if any(summary.get(e, f"{prefix}/attribute_error/{a}") for e, prefix, _ in draws)
    ]

    def worst_class(experiment: str, prefix: str) -> str:
        stats = [summary.get(experiment, f"{prefix}/accuracy/{c}") for c in range(10)]
        stats = [s for s in stats if s is not None]
        return f"{min(s.mean for s in stats) * 100:.1f}%" if stats else "—"

    header = ["model", "latents", "classified as requested", "worst class"]
    header += [f"{a} error / std" for a in attributes]
    header += ["FID ↓", "precision", "recall", "morphometric FMD ↓"]

    def drawn(experiment: str, prefix: str, name: str) -> str:
        scale = summary.get(experiment, f"{prefix}/guidance")
        return f"{name} (s = {scale.mean:g})" if scale is not None else name

    rows = [
        [
            LABELS.get(e, e),
            drawn(e, prefix, name),
            fmt(summary.get(e, f"{prefix}/accuracy"), 1, 100.0, "%"),
            worst_class(e, prefix),
            *[fmt(summary.get(e, f"{prefix}/attribute_error/{a}"), 3) for a in attributes],
            fmt(summary.get(e, f"{prefix}/fid"), 1),
            fmt(summary.get(e, f"{prefix}/precision"), 3),
            fmt(summary.get(e, f"{prefix}/recall"), 3),
            fmt(summary.get(e, f"{prefix}/fmd"), 3),
        ]
        for e, prefix, name in draws
    ]
    note = (
        " Class-balanced samples (as many as test images); latents: the model's own prior (N(0, I) for the VAE "
        "family, the learned class-conditional prior for the VQ-VAE), or its class "
        "latents (each class's aggregate posterior on the training set, `genvae.latent.class_latents`), or "
        "the class latents with the thickness, slant, width and height of a real test digit of the class "
        "requested through an AR-VAE's calibrated dims (closed loop). Guided: the conditional prior sampled "
        "with classifier-free guidance at scale s (Ho & Salimans 2022) by the unconditional prior of the same "
        "seed and VQ-VAE (`VQPrior.guidance`). Conditioned attributes are requested at "
        "the values of real test digits of the class; error: median |measured − requested| / test std."
    )
    return f"{markdown_table(header, rows)}\n\n{_provenance(summary, experiments)}{note}"


def ground_truth_table(summary: Summary) -> str:
    """Edits scored against the true counterfactuals of the causal Morpho-MNIST (``test/ground_truth/*``,
    :mod:`genvae.latent.ground_truth`): per model and way of asking, the mean per-image |edited − truth| on
    the 0-255 scale and the median errors of the measured thickness and intensity, beside doing nothing."""
    experiments = _with_experiment_key(summary, "test/ground_truth/thickness/mae")
    if not experiments:
        return "_no ground-truth counterfactual evaluation in the runs yet_"
    ways = {
        "unedited": "nothing (the test digit itself)",
        "thickness": "do(thickness = t′) only",
        "thickness_intensity": "thickness t′ and the mechanism's intensity i′",
    }
    header = ["model", "edit asked for", "distance to the truth (0–255) ↓", "thickness error (px) ↓"]
    header += ["intensity error (grey levels) ↓"]
    rows = []
    for e in experiments:
        for way, text in ways.items():
            key = f"test/ground_truth/{way}"
            if summary.get(e, f"{key}/mae") is None:
                continue
            rows.append(
                [
                    LABELS.get(e, e),
                    text,
                    fmt(summary.get(e, f"{key}/mae"), 2),
                    fmt(summary.get(e, f"{key}/thickness_error"), 3),
                    fmt(summary.get(e, f"{key}/intensity_error"), 2),
                ]
            )
    floor = summary.get(experiments[0], "test/ground_truth/truth/thickness_error")
    note = (
        " t′ drawn per test digit from the causal model's thickness marginal; the truth is the same MNIST "
        "source digit set to t′ and to the intensity its mechanism gives with the digit's own noise. Errors: "
        "median over digits of |measured − true|; the truth itself measures "
        f"{fmt(floor, 3)} px from t′ (the generator's floor)."
    )
    return f"{markdown_table(header, rows)}\n\n{_provenance(summary, experiments)}{note}"


def runs_table(summary: Summary) -> str:
    """Wall time of every run (``run.json``): per experiment the seeds, epochs, and fit and test minutes per
    seed, then the total, so a reader sees what a preset costs on the machine the runs name."""
    rows, total = [], 0.0
    for experiment in summary.experiments():
        runs = sorted(summary.runs.get(experiment, []), key=lambda r: r.get("seed", 0))
        if experiment == "random_latent" or not runs:
            continue
        fit = [float(r.get("fit_seconds", math.nan)) / 60 for r in runs]
        test = [float(r.get("test_seconds", math.nan)) / 60 for r in runs]
        resumed = [str(r.get("seed")) for r in runs if r.get("fit_resumed")]
        continued = {
            str(r.get("seed")): r["fit_continued_from_epochs"]
            for r in runs
            if r.get("fit_continued_from_epochs")
        }
        notes = [f"seed {', '.join(resumed)} resumed"] if resumed else []
        notes += [f"seed {s} continued from {e} epochs" for s, e in continued.items()]
        total += sum(x for x in fit + test if math.isfinite(x))
        rows.append(
            [
                LABELS.get(experiment, experiment),
                ", ".join(str(r.get("seed")) for r in runs),
                str(summary.run_info(experiment, "epochs") or "—"),
                " / ".join(f"{x:.1f}" for x in fit) + (f" ({'; '.join(notes)})" if notes else ""),
                " / ".join(f"{x:.1f}" for x in test),
            ]
        )
    if not rows:
        return "_no runs yet: `make results` fills this table._"
    table = markdown_table(
        ["experiment", "seeds", "epochs", "fit (min, per seed)", "test (min, per seed)"], rows
    )
    return f"{table}\n\nAll runs together: {total:.0f} min of wall time."


def headline_table(summary: Summary) -> str:
    """The README's table: AR-VAE against β-VAE and the paper's values, beside the random-latent row."""
    return latent_table(summary, ("random_latent", "betavae", "arvae"))


TABLES: dict[str, Callable[[Summary], str]] = {
    "headline": headline_table,
    "runs": runs_table,
    "latent": latent_table,
    "arvae-attributes": per_attribute_table,
    "vqvae": vqvae_table,
    "samples": samples_table,
    "morphometry": morphometry_table,
    "reconstruction-morphometry": reconstruction_morphometry_table,
    "control": control_table,
    "soundness": soundness_table,
    "conditional": conditional_table,
    "ground-truth": ground_truth_table,
}


# ---------------------------------------------------------------------------------------------- pages
_MARKER = re.compile(r"(<!-- results:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.S)


def replace_marked_sections(text: str, sections: dict[str, str]) -> str:
    """Replace the body between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` for each NAME."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in sections:
            return match.group(0)
        return f"{match.group(1)}{sections[name].rstrip()}\n{match.group(4)}"

    return _MARKER.sub(substitute, text)


def marker_names(text: str) -> list[str]:
    """The NAME of every marked section of ``text``, in order."""
    return [match.group("name") for match in _MARKER.finditer(text)]


def pages(repo: Path) -> list[Path]:
    """The pages whose marked sections the command renders: ``README.md`` and every ``docs/**/*.md``."""
    candidates = [repo / "README.md", *sorted((repo / "docs").rglob("*.md"))]
    return [page for page in candidates if page.is_file()]


def build_sections(out: Path) -> tuple[Summary, dict[str, str]]:
    """The summary of ``<out>/runs`` and every table section (results and benchmarks), by marker name."""
    from genvae.results.speed import speed_tables

    summary = aggregate(out / "runs")
    sections = {name: build(summary) for name, build in TABLES.items()}
    sections.update(speed_tables(out / "bench"))
    return summary, sections


def page_sections(
    page: Path, repo: Path, sections: dict[str, str], figures: dict[str, list[tuple[str, str]]]
) -> dict[str, str]:
    """``sections`` plus the figure groups, their images linked relative to ``page``."""
    from genvae.results.figures import figure_sections

    base = Path(os.path.relpath(repo / "docs" / "figures", page.parent)).as_posix()
    return {**sections, **figure_sections(figures, base)}


def render_all(out: Path, data: Path | None, repo: Path) -> None:
    """Write ``summary.csv`` and ``tables/*.md`` under ``out``; when ``out`` is the repository's ``results``,
    also the docs figures and the marked sections of every page of :func:`pages`."""
    from genvae.results.figures import render_figures

    summary, sections = build_sections(out)
    atomic_write_bytes(out / "summary.csv", summary.to_csv().encode())
    for name, body in sections.items():
        atomic_write_bytes(out / "tables" / f"{name}.md", (body.rstrip() + "\n").encode())
    if out.resolve() == (repo / "results").resolve():
        figures = render_figures(out / "runs", repo / "docs" / "figures")
        for page in pages(repo):
            text = page.read_text()
            updated = replace_marked_sections(text, page_sections(page, repo, sections, figures))
            if updated != text:
                atomic_write_bytes(page, updated.encode())
    print(f"results: {len(summary.rows)} metric rows -> {out / 'summary.csv'}; tables -> {out / 'tables'}")

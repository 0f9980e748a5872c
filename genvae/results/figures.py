"""The figures of the README and the docs pages, from the result folders: test-time figures of seed 0 and
codebook usage over training.

Figures logged by ``genvae test`` (PNG under the run's log dir, copied by the runner into
``results/runs/<experiment>/seed<k>/figures/``) are copied to ``docs/figures/<experiment>_<key>.png``; the
VQ-VAE's codebook usage per epoch (``fit_metrics.csv`` of each seed) is drawn as one line per seed.
"""

from __future__ import annotations

import csv
from pathlib import Path

from genvae.utils.atomic import atomic_write_bytes
from genvae.utils.images import figure_to_array, png_bytes

__all__ = ["README_FIGURES", "codebook_usage_figure", "figure_groups", "figure_sections", "render_figures"]

# figure groups (marker name) -> (experiment, figure key under figures/, caption); seed 0 of each
README_FIGURES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "figures-latent": (
        ("arvae", "test_traversal_grid", "AR-VAE traversal: one regularized dim per column, −3σ to +3σ"),
        ("arvae", "test_traversal_attributes", "AR-VAE: attribute measured along each regularized dim"),
        ("arvae", "test_interpolation", "AR-VAE interpolation t·z0 + (1 − t)·z7 between a 0 and a 7"),
    ),
    "figures-control": (
        ("arvae", "test_control_grid_thickness", "AR-VAE edits of thickness in px, measured value per cell"),
        ("arvae", "test_control_grid_slant", "AR-VAE edits of slant in rad, measured value per cell"),
        ("betavae", "test_control_grid_thickness", "β-VAE edits of thickness in px, measured value per cell"),
    ),
    "figures-vqvae": (
        ("vqvae", "codebook_usage", "VQ-VAE codebook usage on the validation set after each epoch"),
        ("vqvae", "test_reconstructions", "VQ-VAE reconstructions (inputs above outputs)"),
    ),
    "figures-samples": (
        ("vae", "test_samples", "VAE samples"),
        ("vqvae_prior", "test_samples", "VQ-VAE + transformer prior samples"),
        ("vae", "test_reconstructions", "VAE reconstructions (inputs above outputs)"),
    ),
    "figures-morphometry": (
        ("vqvae_prior", "test_morpho_distributions", "Attributes of VQ-VAE + prior samples vs test images"),
        ("arvae", "test_morpho_distributions", "Attributes of AR-VAE samples vs test images"),
    ),
}


def figure_groups(runs: Path) -> dict[str, list[tuple[str, str]]]:
    """Each figure group's ``(caption, file name under docs/figures)`` pairs whose seed-0 source exists."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for group, figures in README_FIGURES.items():
        groups[group] = [
            (caption, f"{experiment}_{key}.png")
            for experiment, key, caption in figures
            if (runs / experiment / "seed0" / "figures" / f"{key}.png").is_file()
        ]
    return groups


def figure_sections(groups: dict[str, list[tuple[str, str]]], base: str) -> dict[str, str]:
    """The Markdown of each figure group, images linked as ``<base>/<file>`` (``base``: the figures folder
    relative to the page that shows them: ``docs/figures`` from the README, ``figures`` from a docs page)."""
    return {
        group: "\n".join(f"![{caption}]({base}/{name})" for caption, name in items)
        if items
        else "_no figure from the runs yet_"
        for group, items in groups.items()
    }


def render_figures(runs: Path, docs: Path) -> dict[str, list[tuple[str, str]]]:
    """Draw the codebook-usage figure, copy the figures of seed 0 into ``docs`` and return
    :func:`figure_groups` (existing files only)."""
    usage = codebook_usage_figure(sorted((runs / "vqvae").glob("seed*/fit_metrics.csv")))
    if usage is not None:
        atomic_write_bytes(runs / "vqvae" / "seed0" / "figures" / "codebook_usage.png", png_bytes(usage))
    groups = figure_groups(runs)
    for figures in README_FIGURES.values():
        for experiment, key, _ in figures:
            source = runs / experiment / "seed0" / "figures" / f"{key}.png"
            if source.is_file():
                atomic_write_bytes(docs / f"{experiment}_{key}.png", source.read_bytes())
    return groups


def _epoch_series(path: Path, key: str) -> tuple[list[float], list[float]]:
    epochs, values = [], []
    with path.open() as handle:
        for row in csv.DictReader(handle):
            if row.get(key) not in (None, ""):
                epochs.append(float(row["epoch"]) + 1)
                values.append(float(row[key]))
    return epochs, values


def codebook_usage_figure(files: list[Path]):  # noqa: ANN201 - numpy array or None
    """Share of the codebook used on the validation set after each epoch, one line per seed."""
    series = [(f.parent.name, *_epoch_series(f, "val/usage")) for f in files]
    series = [s for s in series if s[1]]
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(4.5, 3.0))
    for seed, epochs, values in series:
        axes.plot(epochs, [100 * v for v in values], marker="o", label=seed)
    axes.set_xlabel("epoch")
    axes.set_ylabel("codes used on validation (%)")
    axes.set_ylim(0, 102)
    axes.set_title("VQ-VAE codebook usage during training")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure_to_array(figure)

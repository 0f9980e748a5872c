"""The README's figures, from the result folders: test-time figures of seed 0 and codebook usage over training.

Figures logged by ``genvae test`` (PNG under the run's log dir, copied by the runner into
``results/runs/<experiment>/seed<k>/figures/``) are copied to ``docs/figures/<experiment>_<key>.png``; the
VQ-VAE's codebook usage per epoch (``fit_metrics.csv`` of each seed) is drawn as one line per seed.
"""

from __future__ import annotations

import csv
from pathlib import Path

from genvae.utils.atomic import atomic_write_bytes
from genvae.utils.images import figure_to_array, png_bytes

__all__ = ["README_FIGURES", "codebook_usage_figure", "render_figures"]

# (experiment, figure key under figures/) shown in the README
README_FIGURES: tuple[tuple[str, str], ...] = (
    ("arvae", "test_traversal_grid"),
    ("arvae", "test_traversal_attributes"),
    ("arvae", "test_interpolation"),
    ("arvae", "test_control_grid_thickness"),
    ("arvae", "test_control_grid_slant"),
    ("betavae", "test_control_grid_thickness"),
    ("vae", "test_samples"),
    ("vae", "test_reconstructions"),
    ("vqvae", "test_reconstructions"),
    ("vqvae_prior", "test_samples"),
    ("vqvae_prior", "test_morpho_distributions"),
    ("arvae", "test_morpho_distributions"),
)


def render_figures(runs: Path, docs: Path) -> list[Path]:
    """Copy :data:`README_FIGURES` of seed 0 and draw the codebook usage; return the files written."""
    written = []
    for experiment, key in README_FIGURES:
        source = runs / experiment / "seed0" / "figures" / f"{key}.png"
        if source.is_file():
            target = docs / f"{experiment}_{key}.png"
            atomic_write_bytes(target, source.read_bytes())
            written.append(target)
    usage = codebook_usage_figure(sorted((runs / "vqvae").glob("seed*/fit_metrics.csv")))
    if usage is not None:
        target = docs / "vqvae_codebook_usage.png"
        atomic_write_bytes(target, png_bytes(usage))
        written.append(target)
    return written


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

"""Export the Morpho-MNIST attributes of a dataset split as CSV.

    python -m genvae.data.export --root data/mnist --split test --out t10k_morpho.csv

Columns: ``index,label,<the six attributes in ATTRIBUTE_NAMES order>``. Uses the datamodule's cache.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from genvae.data.attributes import ATTRIBUTE_NAMES
from genvae.data.datamodule import MNISTDataModule
from genvae.errors import ConfigError
from genvae.utils.atomic import atomic_write_bytes


def export_attributes_csv(
    root: str, split: str, out: str, dataset: str = "mnist", cache_dir: str | None = None
) -> int:
    """Write the attributes of ``split`` (``train`` or ``test``) to ``out``; returns the number of rows."""
    datamodule = MNISTDataModule(root=root, dataset=dataset, download=False, cache_dir=cache_dir)
    tensors = datamodule.load_split(split)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["index", "label", *ATTRIBUTE_NAMES])
    for i, (label, values) in enumerate(
        zip(tensors["label"].tolist(), tensors["attributes"].tolist(), strict=True)
    ):
        writer.writerow([i, label, *(f"{v:.6g}" for v in values)])
    atomic_write_bytes(Path(out), text.getvalue().encode())
    return len(tensors["label"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m genvae.data.export",
        description=f"{__doc__.splitlines()[0]} Explained in docs/data.md.",
    )
    parser.add_argument("--root", required=True, help="folder with the raw IDX files")
    parser.add_argument("--split", choices=["train", "test"], default="test")
    parser.add_argument("--dataset", choices=["mnist", "fashion_mnist"], default="mnist")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", required=True, help="CSV file to write")
    args = parser.parse_args(argv)
    try:
        rows = export_attributes_csv(args.root, args.split, args.out, args.dataset, args.cache_dir)
    except ConfigError as err:
        print(f"genvae: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {rows} rows to {args.out}")


if __name__ == "__main__":
    main()

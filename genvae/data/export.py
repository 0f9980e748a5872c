"""Export the Morpho-MNIST attributes of a dataset split as CSV, or dSprites in its official npz layout.

    python -m genvae.data.export --root data/mnist --split test --out t10k_morpho.csv
    python -m genvae.data.export --dataset dsprites --root data/dsprites --out dsprites.npz

CSV columns: ``index,label,<the six attributes in ATTRIBUTE_NAMES order>``; uses the datamodule's cache.
dSprites: ``imgs`` uint8 ``[737280, 64, 64]``, ``latents_values`` float64 ``[737280, 6]`` (the constant
colour first) and ``latents_classes`` int64, the layout of DeepMind's
``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``, from that file in ``--root`` or the procedural set
(generated into the cache first when needed, :mod:`genvae.data.dsprites`).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np

from genvae.data.attributes import ATTRIBUTE_NAMES
from genvae.data.datamodule import MNISTDataModule
from genvae.data.dsprites import load_dsprites, official_arrays
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


def export_dsprites_npz(root: str, out: str, cache_dir: str | None = None) -> str:
    """Write dSprites (the official npz in ``root``, else the procedural set) in the official layout to
    ``out``, compressed and atomically; returns its source, ``official`` or ``procedural``."""
    data = load_dsprites(root, cache_dir)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **official_arrays(data))
    atomic_write_bytes(Path(out), buffer.getbuffer())
    return data.source


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m genvae.data.export",
        description=f"{__doc__.splitlines()[0]} Explained in docs/data.md.",
    )
    parser.add_argument(
        "--root", required=True, help="folder with the raw IDX files (dSprites: its npz or cache)"
    )
    parser.add_argument("--split", choices=["train", "test"], default="test", help="MNIST family only")
    parser.add_argument("--dataset", choices=["mnist", "fashion_mnist", "dsprites"], default="mnist")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", required=True, help="CSV file to write (dSprites: the .npz)")
    args = parser.parse_args(argv)
    try:
        if args.dataset == "dsprites":
            source = export_dsprites_npz(args.root, args.out, args.cache_dir)
            print(f"wrote the {source} dSprites (737,280 images) to {args.out}")
            return
        rows = export_attributes_csv(args.root, args.split, args.out, args.dataset, args.cache_dir)
    except ConfigError as err:
        print(f"genvae: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {rows} rows to {args.out}")


if __name__ == "__main__":
    main()

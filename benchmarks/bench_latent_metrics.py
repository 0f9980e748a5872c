"""Time the latent metrics per mutual-information protocol against the AR-VAE reference code, and compare.

    python benchmarks/bench_latent_metrics.py [--n 10000] [--dims 16] [--data path/to/mnist]
    python benchmarks/bench_latent_metrics.py --checkpoint path/to/last.ckpt --model arvae --data path/to/mnist

Synthetic mode: ``--n`` x ``--dims`` latents (random, and six noisy attribute copies plus noise dims) of six
Morpho-MNIST-like attribute columns, or with ``--data`` of the measured attributes of the 10k test images
(``MNISTDataModule(source="train")``, the standard split). Checkpoint mode: the model's posterior-mean
latents of those test images and their measured attributes. Every
metric is computed by genvae under each protocol and by the reference (github.com/ashispati/ar-vae
``utils/evaluation.py``, scikit-learn's ``mutual_info_regression``, as ``tests/test_metrics.py``
reproduces it), each timed once (wall clock and process CPU time: on a machine shared with other jobs
the CPU time is the fairer measure); the records, with the thread count and load average, go to
``results/bench/latent-metrics-<date>.json`` (or ``--json``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from genvae.metrics import disentanglement_metrics
from genvae.metrics.mutual_information import PROTOCOLS
from genvae.utils.machine import benchmark_stamp, write_benchmark_record

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.test_metrics import morpho_like_attributes, reference_metrics  # noqa: E402

KEYS = ("interpretability", "mig", "modularity", "sap", "spearman")


def test_attributes(data: str) -> torch.Tensor:
    """The measured Morpho-MNIST attributes ``[N, 6]`` of the test images (standard split), finite rows."""
    from genvae.data import MNISTDataModule

    datamodule = MNISTDataModule(root=data, source="train", download=False, data_on_device=False)
    datamodule.prepare_data()
    datamodule.setup("test")
    attributes = datamodule.splits["test"]["attributes"].double()
    return attributes[attributes.isfinite().all(1)]


def synthetic(attributes: torch.Tensor, dims: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    n = len(attributes)
    g = torch.Generator().manual_seed(2)
    standard = (attributes - attributes.mean(0)) / attributes.std(0)
    noise = torch.randn(n, dims - 6, generator=g, dtype=torch.float64)
    noisy = torch.cat([standard + 0.5 * torch.randn(n, 6, generator=g, dtype=torch.float64), noise], 1)
    return {
        "random": (torch.randn(n, dims, generator=g, dtype=torch.float64), attributes),
        "noisy": (noisy, attributes),
    }


@torch.no_grad()
def checkpoint_latents(checkpoint: Path, model: str, data: str) -> tuple[torch.Tensor, torch.Tensor]:
    from genvae.data import MNISTDataModule
    from genvae.models import ARVAE, VAE

    module = {"arvae": ARVAE, "vae": VAE}[model].load_from_checkpoint(checkpoint, map_location="cpu").eval()
    datamodule = MNISTDataModule(root=data, source="train", download=False, data_on_device=False)
    datamodule.prepare_data()
    datamodule.setup("test")
    latents, attributes = [], []
    for batch in datamodule.test_dataloader():
        latents.append(module.encode(batch["image"].float()).double())
        attributes.append(batch["attributes"].double())
    latents, attributes = torch.cat(latents), torch.cat(attributes)
    finite = attributes.isfinite().all(1) & latents.isfinite().all(1)
    return latents[finite], attributes[finite]


def main() -> None:
    parser = argparse.ArgumentParser(description=f"{__doc__.splitlines()[0]} Explained in docs/speed.md.")
    parser.add_argument("--n", type=int, default=10000, help="synthetic examples")
    parser.add_argument("--dims", type=int, default=16, help="synthetic latent dims (>= 6)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a VAE-family checkpoint instead")
    parser.add_argument("--model", choices=["arvae", "vae"], default="arvae", help="the checkpoint's class")
    parser.add_argument(
        "--data", default=None, help="MNIST folder: real test attributes (and checkpoint mode)"
    )
    parser.add_argument("--no-reference", action="store_true", help="skip the scikit-learn reference")
    parser.add_argument("--json", type=Path, default=None, help="output file (default: results/bench/...)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    if args.checkpoint is not None:
        cases = {args.checkpoint.name: checkpoint_latents(args.checkpoint, args.model, args.data)}
        source = f"{args.model} checkpoint latents, measured test attributes"
    elif args.data is not None:
        cases = synthetic(test_attributes(args.data), args.dims)
        source = "synthetic latents, measured test attributes"
    else:
        cases = synthetic(morpho_like_attributes(args.n, seed=1), args.dims)
        source = "synthetic latents, synthetic attributes"
    names = ("thickness", "slant", "length", "area", "width", "height")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()}")
    records = []
    for case, (latents, attributes) in cases.items():
        record: dict[str, object] = {"case": case, "shape": list(latents.shape)}
        for protocol in PROTOCOLS:
            start, cpu = time.perf_counter(), time.process_time()
            results = disentanglement_metrics(latents, attributes, names, protocol=protocol)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            record[protocol] = {"seconds": seconds, "cpu_seconds": cpu, **{k: results[k] for k in KEYS}}
        if not args.no_reference:
            start, cpu = time.perf_counter(), time.process_time()
            reference = reference_metrics(latents.numpy(), attributes.numpy())
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            record["reference"] = {"seconds": seconds, "cpu_seconds": cpu, **{k: reference[k] for k in KEYS}}
            ksg = disentanglement_metrics(latents, attributes, names, protocol="ksg")
            compared = [k for k in reference if not k.startswith("interpretability_dim/")]
            record["max_abs_difference_ksg_vs_reference"] = max(abs(ksg[k] - reference[k]) for k in compared)
        records.append(record)
        for method in (*PROTOCOLS, "reference"):
            if method in record:
                row = record[method]
                scores = "  ".join(f"{k} {row[k]:.4f}" for k in KEYS)
                times = f"{row['seconds']:6.2f} s ({row['cpu_seconds']:6.2f} s CPU)"
                print(f"{case:>10} {list(latents.shape)} {method:>9}: {times}  {scores}")
        difference = record.get("max_abs_difference_ksg_vs_reference")
        if difference is not None:
            print(f"{case:>10} max |ksg - reference| over every metric: {difference:.2e}")
    payload = {
        **benchmark_stamp(load_before),
        "command": " ".join(sys.argv),
        "source": source,
        "records": records,
    }
    write_benchmark_record(payload, REPO / "results" / "bench", "latent-metrics", path=args.json)


if __name__ == "__main__":
    main()

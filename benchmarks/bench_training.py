"""Time conv-VAE training three ways in one run: genvae, a plain PyTorch loop, Lightning with a DataLoader.

    python benchmarks/bench_training.py --data ../shared/data/mnist [--steps 300] [--repeats 3] \\
        [--device cpu] [--compile] [--channels-last] [--workers 0] [--json out.json]

Every way trains the model of ``experiments/vae.yaml`` (``genvae.models.VAE``, conv backbone with channels
[32, 64], latent 16, Bernoulli decoder, Adam lr 2e-3) with batch 64 on the 9,000-image training split of the
t10k set (``MNISTDataModule(source="test")``), from the same seed, with the same number of threads, for
``--warmup`` untimed optimizer steps followed by ``--steps`` timed ones:

- ``genvae``: ``L.Trainer`` (no logger, checkpointing, progress bar, model summary or validation) on
  ``genvae.data.MNISTDataModule(attributes=False)``, whose loader gathers whole batches from one tensor.
- ``plain``: a hand-written loop on the same images held as one float tensor: a random permutation per
  epoch, batches by ``index_select``, ``model.losses(batch)["loss"]``, ``backward``, the optimizer from
  ``model.configure_optimizers()``. No logging, no hooks: the floor the other two are measured against.
- ``dataloader``: the same ``L.Trainer`` on the standard per-item path: ``torchvision.datasets.MNIST``'s
  own ``__getitem__`` (uint8 array -> PIL image -> ``ToTensor()``) over the same images, through
  ``DataLoader(batch_size=64, shuffle=True, drop_last=True, num_workers=--workers)``.

All three drop the last partial batch of an epoch, so every timed step trains on 64 images. The timed
window runs from the end of step ``warmup`` to the end of step ``warmup + steps`` and includes fetching the
batches and epoch boundaries. The repeats interleave the ways (genvae, plain, dataloader, genvae, ...) so
background load hits them alike; the table shows the best (highest images/s) of the repeats, and the JSON
also keeps every repeat and the median. A last line times each input path alone (``--steps`` batches
fetched, no model): the share of a training step that the input costs.

``--compile`` compiles the encoder/decoder networks of every way in place
(:func:`genvae.callbacks.speed.compile_networks`, the ``SpeedUp(compile=True)`` callback in the Lightning
ways); ``--channels-last`` converts model and images to ``torch.channels_last`` (``SpeedUp(channels_last=
True)``). If ``torch.compile`` does not work on this machine, the reason is printed and the run goes on
uncompiled.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torchvision
from torch import Tensor
from torch.utils.data import DataLoader, default_collate
from torchvision.datasets.vision import VisionDataset
from torchvision.transforms import ToTensor

from genvae.callbacks.speed import SpeedUp, batch_to_channels_last, compile_networks, to_channels_last
from genvae.data import MNISTDataModule
from genvae.models import VAE
from genvae.utils.machine import benchmark_stamp, write_benchmark_record

REPO = Path(__file__).resolve().parents[1]

BATCH_SIZE = 64
WAYS = ("genvae", "plain", "dataloader")


def build_model() -> VAE:
    """The conv VAE of ``experiments/vae.yaml``."""
    return VAE(
        backbone="conv",
        backbone_kwargs={"channels": [32, 64]},
        latent_dim=16,
        beta=1.0,
        likelihood="bernoulli",
        lr=2e-3,
    )


def datamodule(root: str) -> MNISTDataModule:
    return MNISTDataModule(
        root=root, source="test", batch_size=BATCH_SIZE, download=False, attributes=False, data_on_device=True
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(L.Callback):
    """Wall time from the end of optimizer step ``warmup`` to the end of step ``warmup + steps``."""

    def __init__(self, warmup: int, steps: int, device: torch.device) -> None:
        self.warmup, self.steps, self.device = warmup, steps, device
        self.start: float | None = None
        self.seconds: float | None = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.warmup:
            synchronize(self.device)
            self.start = time.perf_counter()
        elif trainer.global_step == self.warmup + self.steps and self.start is not None:
            synchronize(self.device)
            self.seconds = time.perf_counter() - self.start


class InMemoryMNIST(torchvision.datasets.MNIST):
    """``torchvision.datasets.MNIST`` over images already read: its own per-item ``__getitem__``.

    torchvision's constructor wants the raw files of both splits under ``root/MNIST/raw``; only the
    reading is replaced, the item path (``Image.fromarray`` then ``ToTensor()``) is torchvision's.
    """

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        VisionDataset.__init__(self, root=None, transform=ToTensor())
        self.train = True
        self.data, self.targets = images, labels


def dict_collate(items: list[tuple[Tensor, int]]) -> dict[str, Tensor]:
    """torchvision's ``(image, label)`` items -> the dict batch genvae models take."""
    images, labels = default_collate(items)
    return {"image": images, "label": labels}


def make_trainer(args: argparse.Namespace, timer: StepTimer, compiled: bool) -> L.Trainer:
    callbacks: list[L.Callback] = [timer]
    if compiled or args.channels_last:
        callbacks.append(SpeedUp(compile=compiled, channels_last=args.channels_last))
    return L.Trainer(
        max_steps=args.warmup + args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        accelerator="cuda" if args.device.type == "cuda" else "cpu",
        devices=1,
        callbacks=callbacks,
    )


def run_genvae(args: argparse.Namespace, data: dict[str, Tensor], compiled: bool) -> float:
    L.seed_everything(args.seed, verbose=False)
    timer = StepTimer(args.warmup, args.steps, args.device)
    make_trainer(args, timer, compiled).fit(build_model(), datamodule=datamodule(args.data))
    assert timer.seconds is not None, "the genvae run ended before the last timed step"
    return timer.seconds


def per_item_loader(args: argparse.Namespace, data: dict[str, Tensor]) -> DataLoader:
    """The standard path: torchvision MNIST items through a shuffling DataLoader."""
    return DataLoader(
        InMemoryMNIST(data["image"][:, 0], data["label"]),
        batch_size=BATCH_SIZE,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        pin_memory=args.device.type == "cuda",
        collate_fn=dict_collate,
    )


def run_dataloader(args: argparse.Namespace, data: dict[str, Tensor], compiled: bool) -> float:
    L.seed_everything(args.seed, verbose=False)
    timer = StepTimer(args.warmup, args.steps, args.device)
    make_trainer(args, timer, compiled).fit(build_model(), train_dataloaders=per_item_loader(args, data))
    assert timer.seconds is not None, "the dataloader run ended before the last timed step"
    return timer.seconds


def input_only_seconds(args: argparse.Namespace, data: dict[str, Tensor]) -> dict[str, float]:
    """Seconds to fetch ``--steps`` batches (images on the device) from each input path, with no model."""
    dm = datamodule(args.data)
    dm.setup("fit")
    dm.splits["train"] = {k: v.to(args.device) for k, v in dm.splits["train"].items()}
    loaders = {"genvae": dm.train_dataloader(), "dataloader": per_item_loader(args, data)}
    seconds = {}
    for name, loader in loaders.items():
        synchronize(args.device)
        start, fetched = time.perf_counter(), 0
        while fetched < args.steps:
            for batch in loader:
                batch["image"].to(args.device, non_blocking=True)
                fetched += 1
                if fetched == args.steps:
                    break
        synchronize(args.device)
        seconds[name] = time.perf_counter() - start
    return seconds


def run_plain(args: argparse.Namespace, data: dict[str, Tensor], compiled: bool) -> float:
    L.seed_everything(args.seed, verbose=False)
    device = args.device
    images = data["image"].to(device).float().div_(255.0)
    model = build_model().to(device).train()
    if args.channels_last:
        to_channels_last(model)
    if compiled:
        compile_networks(model)
    optimizer = model.configure_optimizers()
    per_epoch = len(images) // BATCH_SIZE
    order = torch.randperm(len(images), device=device)
    start = 0.0
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            synchronize(device)
            start = time.perf_counter()
        b = step % per_epoch
        if b == 0 and step > 0:
            order = torch.randperm(len(images), device=device)
        batch = {"image": images.index_select(0, order[b * BATCH_SIZE : (b + 1) * BATCH_SIZE])}
        if args.channels_last:
            batch_to_channels_last(batch)
        loss = model.losses(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(device)
    return time.perf_counter() - start


RUNNERS: dict[str, Callable[[argparse.Namespace, dict[str, Tensor], bool], float]] = {
    "genvae": run_genvae,
    "plain": run_plain,
    "dataloader": run_dataloader,
}


def compile_works(device: torch.device) -> str | None:
    """None when ``torch.compile`` compiles and runs a small network here, else the reason it does not."""
    try:
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU()).to(device)
        net.compile()
        net(torch.rand(2, 1, 8, 8, device=device)).sum().backward()
    except Exception as err:  # inductor fails in many ways (no compiler, no headers, no triton)
        return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with t10k-images/labels-idx*-ubyte(.gz)")
    parser.add_argument("--steps", type=int, default=300, help="timed optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="untimed optimizer steps before them")
    parser.add_argument("--repeats", type=int, default=3, help="runs per way; the best is reported")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--workers", type=int, default=0, help="num_workers of the DataLoader way")
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks of every way")
    parser.add_argument("--channels-last", action="store_true", help="channels_last model and images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="output file (default: results/bench/...)")
    parser.add_argument("--no-json", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 1 or args.repeats < 1:
        parser.error("--steps, --warmup and --repeats must be >= 1")
    args.device = torch.device(args.device)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*Please use `ModelCheckpoint` instead.*")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    load_before = os.getloadavg()
    dm = datamodule(args.data)
    dm.setup("fit")
    data = {key: dm.splits["train"][key] for key in ("image", "label")}
    n_images = len(data["image"])
    if args.warmup + args.steps > 0 and n_images < BATCH_SIZE:
        raise SystemExit(f"bench_training: {n_images} training images, fewer than one batch of {BATCH_SIZE}")

    compiled = args.compile
    compile_note = None
    if compiled:
        compile_note = compile_works(args.device)
        if compile_note is not None:
            print(f"torch.compile does not work here ({compile_note}); running uncompiled")
            compiled = False
    switches = [name for name, on in (("compile", compiled), ("channels_last", args.channels_last)) if on]
    print(
        f"torch {torch.__version__}, lightning {L.__version__}, {torch.get_num_threads()} threads, "
        f"device {args.device}, {n_images} training images, batch {BATCH_SIZE}, {args.warmup} warm-up + "
        f"{args.steps} timed steps, {args.repeats} repeats, workers {args.workers}, "
        f"switches: {', '.join(switches) or 'none'}"
    )

    seconds: dict[str, list[float]] = {way: [] for way in WAYS}
    for _ in range(args.repeats):
        for way in WAYS:
            seconds[way].append(RUNNERS[way](args, data, compiled))
    images = args.steps * BATCH_SIZE
    rates = {way: [images / s for s in seconds[way]] for way in WAYS}
    input_rates = {name: images / s for name, s in input_only_seconds(args, data).items()}
    best = {way: max(r) for way, r in rates.items()}
    ratios = {
        "genvae/plain": best["genvae"] / best["plain"],
        "genvae/dataloader": best["genvae"] / best["dataloader"],
    }

    print(f"\n{'way':<11} {'images/s':>10} {'ms/step':>9}   (best of {args.repeats}; all repeats: images/s)")
    for way in WAYS:
        every = " ".join(f"{r:.0f}" for r in rates[way])
        print(f"{way:<11} {best[way]:>10.0f} {1000 * BATCH_SIZE / best[way]:>9.2f}   {every}")
    print(
        f"\ngenvae / plain      = {ratios['genvae/plain']:.2f}x   (target >= 0.9x)\n"
        f"genvae / dataloader = {ratios['genvae/dataloader']:.2f}x   (target >= 2x)"
    )
    print(
        f"\ninput path alone ({args.steps} batches, no model): "
        + ", ".join(
            f"{name} {rate:.0f} images/s ({1000 * BATCH_SIZE / rate:.2f} ms/batch)"
            for name, rate in input_rates.items()
        )
    )

    result = {
        **benchmark_stamp(load_before),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "device": str(args.device),
        "threads": torch.get_num_threads(),
        "batch_size": BATCH_SIZE,
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "workers": args.workers,
        "compile": compiled,
        "compile_failure": compile_note,
        "channels_last": args.channels_last,
        "statistic": "best of repeats",
        "images_per_s": best,
        "median_images_per_s": {way: statistics.median(r) for way, r in rates.items()},
        "all_images_per_s": rates,
        "ratios": ratios,
        "input_only_images_per_s": input_rates,
    }
    if not args.no_json:
        write_benchmark_record(result, REPO / "results" / "bench", "training", args.device.type, args.json)
    return result


if __name__ == "__main__":
    main()

"""Shared fixtures: tiny IDX datasets written by the tests, and the real t10k set when it is present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from genvae.data.idx import write_idx

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"
MORPHO_REFERENCE = REPO.parent / "shared" / "data" / "morpho_t10k_first500.csv"

os.environ.setdefault("WANDB_MODE", "disabled")


def fake_digits(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` 28x28 uint8 images of filled rectangles (a stroke-like blob per image) and labels 0-9."""
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    top = torch.randint(3, 10, (n,), generator=g)
    left = torch.randint(5, 14, (n,), generator=g)
    height = torch.randint(10, 16, (n,), generator=g)
    width = torch.randint(3, 9, (n,), generator=g)
    rows = torch.arange(28).view(1, 28, 1)
    cols = torch.arange(28).view(1, 1, 28)
    mask = (
        (rows >= top.view(-1, 1, 1))
        & (rows < (top + height).view(-1, 1, 1))
        & (cols >= left.view(-1, 1, 1))
        & (cols < (left + width).view(-1, 1, 1))
    )
    images[mask] = 255
    labels = torch.randint(0, 10, (n,), generator=g, dtype=torch.uint8)
    return images, labels


def write_causal_targets(path: Path, n: int, seed: int) -> Path:
    """A causal Morpho-MNIST target CSV (``index,thickness,intensity``) of ``n`` rows drawn with ``seed``."""
    from genvae.data.causal import sample_targets

    thickness, intensity = sample_targets(n, seed)
    lines = ["index,thickness,intensity"]
    lines += [
        f"{i},{t:.6f},{v:.4f}"
        for i, (t, v) in enumerate(zip(thickness.tolist(), intensity.tolist(), strict=True))
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_fake_mnist(root: Path, n_train: int = 200, n_test: int = 100, gz: bool = True) -> Path:
    """Write fake MNIST IDX files under ``root``, with causal Morpho-MNIST targets for them, and return it."""
    suffix = ".gz" if gz else ""
    for split, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        if n == 0:
            continue
        images, labels = fake_digits(n, seed)
        write_idx(root / f"{split}-images-idx3-ubyte{suffix}", images)
        write_idx(root / f"{split}-labels-idx1-ubyte{suffix}", labels)
        write_causal_targets(root / f"{split}-morpho.csv", n, seed)
    return root


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with fake train (200) and t10k (100) IDX files."""
    return write_fake_mnist(tmp_path_factory.mktemp("tiny_mnist"))


@pytest.fixture(scope="session")
def shared_mnist() -> Path:
    """The real MNIST t10k files from ../shared, or skip."""
    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("real MNIST t10k files not present in ../shared/data/mnist")
    return SHARED_MNIST


@pytest.fixture(autouse=True)
def _ieee_subnormals_between_tests():
    """``genvae`` runs flush subnormal floats to zero for the whole process (``--flush_denormal``, on by
    default); put PyTorch's default back after each test, so that no test depends on the one before."""
    yield
    torch.set_flush_denormal(False)


def fit_smoke(data_root: Path, run_dir: Path, *extra: str) -> None:
    """``genvae fit`` of experiments/smoke.yaml on ``data_root`` in ``run_dir``, no progress bar, with the
    ``extra`` command-line arguments."""
    from genvae.cli import main

    main(
        [
            "fit",
            "--config",
            str(REPO / "experiments" / "smoke.yaml"),
            "--data.init_args.root",
            str(data_root),
            "--trainer.default_root_dir",
            str(run_dir),
            "--trainer.enable_progress_bar",
            "false",
            *extra,
        ]
    )

"""IDX reading, the in-memory loader and the MNIST datamodule."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest
import torch

from genvae.data import MNISTDataModule, TensorBatchLoader
from genvae.data.idx import read_idx, write_idx
from genvae.errors import ConfigError

from .conftest import fake_digits, write_fake_mnist


def test_idx_round_trip_plain_and_gz(tmp_path: Path) -> None:
    images, _ = fake_digits(5, 0)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        write_idx(tmp_path / name, images)
        torch.testing.assert_close(read_idx(tmp_path / name), images)


def test_idx_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad-idx3-ubyte"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ConfigError, match="bad-idx3-ubyte: not an IDX file"):
        read_idx(bad)
    images, _ = fake_digits(3, 0)
    write_idx(tmp_path / "t-idx3-ubyte", images)
    truncated = tmp_path / "t-idx3-ubyte"
    truncated.write_bytes(truncated.read_bytes()[:-10])
    with pytest.raises(ConfigError, match="t-idx3-ubyte: truncated"):
        read_idx(truncated)
    broken_gz = tmp_path / "c-idx3-ubyte.gz"
    broken_gz.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 20)[:-8])
    with pytest.raises(ConfigError, match="c-idx3-ubyte.gz"):
        read_idx(broken_gz)


def test_loader_batches_are_float_dicts_and_cover_everything_once() -> None:
    images, labels = fake_digits(10, 0)
    loader = TensorBatchLoader({"image": images.unsqueeze(1), "label": labels.long()}, batch_size=4)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    assert batches[0]["image"].dtype == torch.float32 and batches[0]["image"].max() <= 1.0
    assert batches[0]["image"].shape == (4, 1, 28, 28)
    torch.testing.assert_close(torch.cat([b["index"] for b in batches]), torch.arange(10))


def test_loader_shuffle_is_seeded_per_epoch_and_sharded_across_ranks() -> None:
    tensors = {"image": torch.zeros(20, 1, 2, 2, dtype=torch.uint8), "label": torch.arange(20)}

    def order(epoch: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        loader = TensorBatchLoader(
            tensors, 3, shuffle=True, drop_last=True, seed=7, rank=rank, world_size=world
        )
        loader.sampler.set_epoch(epoch)
        return torch.cat([b["label"] for b in loader])

    assert torch.equal(order(0), order(0))
    assert not torch.equal(order(0), order(1))
    assert len(order(0)) == len(set(order(0).tolist())) == 18  # 6 full batches, no repeats
    assert not torch.equal(order(0), torch.sort(order(0)).values)  # actually shuffled
    shards = [order(0, r, 2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 9  # 10 each, 3 full batches of 3
    assert not set(shards[0].tolist()) & set(shards[1].tolist())


def test_eval_shards_cover_everything_without_repeats() -> None:
    tensors = {"image": torch.zeros(11, 1, 2, 2, dtype=torch.uint8), "label": torch.arange(11)}
    seen = [b["label"] for r in range(3) for b in TensorBatchLoader(tensors, 2, rank=r, world_size=3)]
    assert sorted(torch.cat(seen).tolist()) == list(range(11))


def test_datamodule_standard_split(tiny_mnist: Path) -> None:
    dm = MNISTDataModule(root=str(tiny_mnist), val_fraction=0.25, batch_size=16)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.resolved_source() == "train"
    assert {k: len(v["label"]) for k, v in dm.splits.items()} == {"train": 150, "val": 50, "test": 100}
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (16, 1, 28, 28) and batch["label"].dtype == torch.long
    assert len(dm.train_dataloader()) == 150 // 16
    assert len(dm.val_dataloader()) == 1  # eval_batch_size 1000 holds all 50


def test_split_is_seeded(tiny_mnist: Path) -> None:
    def val_labels(seed: int) -> torch.Tensor:
        dm = MNISTDataModule(root=str(tiny_mnist), split_seed=seed)
        dm.setup()
        return dm.splits["val"]["image"].flatten(1).float().sum(1)

    assert torch.equal(val_labels(0), val_labels(0))
    assert not torch.equal(val_labels(0), val_labels(1))


def test_test_only_source_splits_t10k(tmp_path: Path) -> None:
    root = write_fake_mnist(tmp_path, n_train=0, n_test=100, gz=False)
    dm = MNISTDataModule(root=str(root), download=False)
    assert dm.resolved_source() == "test"
    with pytest.warns(UserWarning, match="training images not found"):
        dm.setup()
    assert {k: len(v["label"]) for k, v in dm.splits.items()} == {"train": 90, "val": 10, "test": 10}
    assert dm.splits["val"] is dm.splits["test"]


def test_torchvision_layout_is_found(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path / "FashionMNIST" / "raw", n_train=40, n_test=20)
    dm = MNISTDataModule(root=str(tmp_path), dataset="fashion_mnist", download=False)
    dm.setup()
    assert len(dm.splits["test"]["label"]) == 20


def test_missing_files_give_a_clear_error(tmp_path: Path) -> None:
    dm = MNISTDataModule(root=str(tmp_path), download=False)
    with pytest.raises(ConfigError, match="train-images-idx3-ubyte.*not found.*download=true"):
        dm.prepare_data()
    with pytest.raises(ConfigError, match="t10k-images-idx3-ubyte"):
        MNISTDataModule(root=str(tmp_path), source="test", download=False).setup()


def test_label_count_mismatch_is_reported(tmp_path: Path) -> None:
    images, labels = fake_digits(10, 0)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:7])
    with pytest.raises(ConfigError, match="7 labels for 10 images"):
        MNISTDataModule(root=str(tmp_path), source="test").setup()


def test_labels_outside_the_classes_are_reported(tmp_path: Path) -> None:
    images, labels = fake_digits(10, 0)
    labels[3] = 12  # uint8 in the IDX file: a negative label cannot be written
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    with pytest.raises(ConfigError, match=r"t10k-labels-idx1-ubyte: labels must be classes in \[0, 10\)"):
        MNISTDataModule(root=str(tmp_path), source="test").setup()


def test_real_t10k(shared_mnist: Path) -> None:
    digest = hashlib.md5((shared_mnist / "t10k-images-idx3-ubyte.gz").read_bytes()).hexdigest()
    assert digest == "9fb629c4189551a2d022fa330f9573f3"
    dm = MNISTDataModule(root=str(shared_mnist), source="test", attributes=False)
    dm.setup()
    assert {k: len(v["label"]) for k, v in dm.splits.items()} == {"train": 9000, "val": 1000, "test": 1000}
    assert dm.splits["train"]["image"].dtype == torch.uint8
    counts = torch.bincount(dm.splits["train"]["label"], minlength=10)
    assert counts.min() > 700  # every digit is represented
    images = read_idx(shared_mnist / "t10k-images-idx3-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.float().mean().item() == pytest.approx(33.79, abs=0.1)

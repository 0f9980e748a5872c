"""MNIST, FashionMNIST or causal Morpho-MNIST as one in-memory uint8 tensor, served by :class:`TensorBatchLoader`."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn
from tqdm import tqdm

from genvae.data.attributes import (
    ALGORITHM_VERSION,
    ATTRIBUTE_NAMES,
    CPU_CHUNK,
    EXTRA_ATTRIBUTE_NAMES,
    GPU_CHUNK,
    morpho_attributes,
)
from genvae.data.causal import (
    CAUSAL_VERSION,
    generate_causal_images,
    read_targets,
    sample_targets,
    target_file,
)
from genvae.data.generated import ImageCache, generate_in_blocks
from genvae.data.idx import read_idx
from genvae.data.loader import TensorBatchLoader
from genvae.data.perturb import PERTURBATIONS, apply_perturbations, median_intensity
from genvae.errors import ConfigError
from genvae.utils.atomic import atomic_write_bytes

Split = Literal["train", "test"]

_FILE_STEMS: dict[Split, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# torchvision class name (also its download folder: <root>/<name>/raw) per dataset
_TORCHVISION_NAME = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "morpho_thickness_intensity": "MNIST"}
CAUSAL_DATASET = "morpho_thickness_intensity"  # made from the MNIST digits (genvae.data.causal)
PERTURBATION_VERSION = "global-perturbation-1"  # part of the perturbed-image cache key


def attribute_checksum(values: torch.Tensor) -> str:
    """SHA-256 of an attribute tensor's float32 bytes: stored beside the values, checked on every read."""
    return hashlib.sha256(values.detach().cpu().float().contiguous().numpy().tobytes()).hexdigest()


def attributes_with_progress(images: torch.Tensor, description: str) -> torch.Tensor:
    """:func:`morpho_attributes` of ``images`` (on their device, returned on CPU), with a progress bar.

    The images go through in blocks (several attribute chunks each, so the CPU thread pool stays full)
    and a tqdm bar on rank 0 shows the count and the rate in images per second.
    """
    block = CPU_CHUNK * max(1, torch.get_num_threads()) * 8 if images.device.type == "cpu" else GPU_CHUNK
    parts = []
    with tqdm(
        total=len(images), desc=description, unit="img", disable=rank_zero_only.rank != 0, leave=True
    ) as bar:
        for start in range(0, len(images), block):
            parts.append(morpho_attributes(images[start : start + block]).cpu())
            bar.update(len(parts[-1]))
    return torch.cat(parts) if parts else torch.zeros(0, len(ATTRIBUTE_NAMES))


class MNISTDataModule(L.LightningDataModule):
    """MNIST or FashionMNIST, held whole as one uint8 tensor (on the accelerator when it fits).

    Args:
        root: folder holding the raw IDX files (``.gz`` or not), directly or in torchvision's
            ``<root>/MNIST/raw`` layout; downloads go there too.
        dataset: ``mnist``, ``fashion_mnist``, or ``morpho_thickness_intensity``: the causal Morpho-MNIST of
            Pawlowski et al. 2020 (:mod:`genvae.data.causal`), generated from the MNIST files under ``root``
            at preparation and cached; its batches also carry ``thickness`` and ``intensity``, the targets
            each digit was set to (the attributes are measured on the generated images), and
            ``source_image``, the MNIST digit it was made from (for ground-truth counterfactuals).
        causal_targets: folder of the released targets ``train-morpho.csv`` and ``t10k-morpho.csv``
            (``index,thickness,intensity``) of ``morpho_thickness_intensity``; default ``root``, or
            ``<root>/../morpho_causal`` when the CSVs are there.
        causal_seed: instead of the released targets, draw new ones from the causal model with this seed
            (the train split with generator seed ``2 * causal_seed``, the test split ``2 * causal_seed + 1``).
        causal_invert: with ``causal_seed``, the inverted mechanism (intensity falls with thickness).
        perturbation: the global-perturbation MNIST of Castro et al. 2019: each digit plain, thinned,
            thickened, swollen or fractured (:func:`genvae.data.perturb.apply_perturbations`), drawn with
            these probabilities (keys from ``plain, thin, thicken, swell, fracture``; missing keys 0; they
            must sum to 1), generated at preparation and cached; batches carry ``perturbation``, the index
            of each digit's perturbation in that order (``perturbation_names``). MNIST only.
        perturbation_seed: seed of the perturbation draws (the train split with generator seed
            ``2 * perturbation_seed``, the test split ``2 * perturbation_seed + 1``).
        source: where training examples come from. ``train``: the 60k training set, split into
            train/val by ``val_fraction``; the t10k set is the test set. ``test``: only the t10k set is on
            disk; a seeded split of it gives train/val and the val part doubles as the test set.
            ``auto``: ``train`` when the training files are present (or can be downloaded), ``test``
            when only the t10k files are present (with a warning).
        val_fraction: fraction of the training source held out for validation.
        batch_size: training batch size (per device).
        eval_batch_size: batch size for validation, test and predict.
        split_seed: seed of the train/val split (independent of ``seed_everything``).
        download: fetch missing files with torchvision (needs internet).
        data_on_device: move the whole dataset to the GPU when it uses less than a quarter of free memory.
        attributes: compute the six Morpho-MNIST attributes of every image at preparation (cached on disk)
            and yield them as ``batch["attributes"]`` ``[B, 6]`` in the order of ``attribute_names`` (``[B, 7]``
            for ``morpho_thickness_intensity``: the measured intensity, grey levels, is the seventh).
        cache_dir: folder of the attribute cache; default ``root``, or ``~/.cache/genvae`` (or
            ``$XDG_CACHE_HOME/genvae``) when ``root`` is not writable.
    """

    def __init__(
        self,
        root: str = "data",
        dataset: Literal["mnist", "fashion_mnist", "morpho_thickness_intensity"] = "mnist",
        source: Literal["auto", "train", "test"] = "auto",
        val_fraction: float = 0.1,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        split_seed: int = 0,
        download: bool = True,
        data_on_device: bool = True,
        attributes: bool = True,
        cache_dir: str | None = None,
        causal_targets: str | None = None,
        causal_seed: int | None = None,
        causal_invert: bool = False,
        perturbation: dict[str, float] | None = None,
        perturbation_seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
        if batch_size < 1 or eval_batch_size < 1:
            raise ConfigError("data.batch_size and data.eval_batch_size must be positive")
        if causal_seed is not None and causal_seed < 0:
            raise ConfigError(f"data.causal_seed must be a non-negative integer, got {causal_seed}")
        if causal_invert and causal_seed is None:
            raise ConfigError("data.causal_invert applies to sampled targets: set data.causal_seed too")
        self.perturbation = None if perturbation is None else self._perturbation_probabilities(perturbation)
        if perturbation is not None and dataset != "mnist":
            raise ConfigError(f"data.perturbation applies to dataset mnist, not {dataset}")
        if perturbation_seed < 0:
            raise ConfigError(
                f"data.perturbation_seed must be a non-negative integer, got {perturbation_seed}"
            )
        self.perturbation_seed = perturbation_seed
        self.perturbation_names: tuple[str, ...] = PERTURBATIONS
        self.causal_targets = causal_targets
        self.causal_seed = causal_seed
        self.causal_invert = causal_invert
        self.root = Path(root)
        self.dataset = dataset
        self.source = source
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.split_seed = split_seed
        self.download = download
        self.data_on_device = data_on_device
        self.attributes = attributes
        self.cache_dir = cache_dir
        # the causal dataset varies intensity: a seventh attribute, after the six
        self.attribute_names: tuple[str, ...] = ATTRIBUTE_NAMES + (
            EXTRA_ATTRIBUTE_NAMES if dataset == CAUSAL_DATASET else ()
        )
        self.image_shape: tuple[int, int, int] = (1, 28, 28)
        self.num_classes = 10
        self.splits: dict[str, dict[str, torch.Tensor]] = {}
        self._raw_splits: dict[Split, dict[str, torch.Tensor]] = {}  # prepare_data and setup share reads
        self._generated_paths: dict[Split, Path] = {}

    # ---------------------------------------------------------------- files
    def _search_dirs(self) -> list[Path]:
        return [self.root, self.root / _TORCHVISION_NAME[self.dataset] / "raw"]

    def find_file(self, stem: str) -> Path | None:
        """Path of the IDX file ``stem`` (plain or ``.gz``) under ``root``, or None."""
        for folder in self._search_dirs():
            for name in (stem, f"{stem}.gz"):
                if (folder / name).is_file():
                    return folder / name
        return None

    def _has_split(self, split: Split) -> bool:
        return all(self.find_file(stem) is not None for stem in _FILE_STEMS[split])

    def _missing_error(self, split: Split) -> ConfigError:
        missing = next(stem for stem in _FILE_STEMS[split] if self.find_file(stem) is None)
        where = " or ".join(str(d) for d in self._search_dirs())
        return ConfigError(
            f"{self.dataset}: file {missing}[.gz] not found in {where}; set data.init_args.download=true "
            f"with internet access, or copy the raw IDX files into data.init_args.root={self.root}"
        )

    def resolved_source(self) -> Split:
        """The training source actually used (resolves ``auto``)."""
        if self.source != "auto":
            return self.source
        if self._has_split("train") or (self.download and not self._has_split("test")):
            return "train"
        if self._has_split("test"):
            return "test"
        raise self._missing_error("train")

    def _download(self, split: Split) -> None:
        import torchvision

        dataset_cls = getattr(torchvision.datasets, _TORCHVISION_NAME[self.dataset])
        try:
            dataset_cls(str(self.root), train=split == "train", download=True)
        except Exception as err:  # network errors come in many types
            raise ConfigError(
                f"{self.dataset}: download of the {split} split into {self.root} failed ({err}); "
                "copy the raw IDX files there or use data.init_args.source=test"
            ) from None

    def _needed_splits(self) -> list[Split]:
        return ["train", "test"] if self.resolved_source() == "train" else ["test"]

    def prepare_data(self) -> None:
        """Download missing files and build the attribute caches (once, on rank 0)."""
        for split in self._needed_splits():
            if not self._has_split(split):
                if not self.download:
                    raise self._missing_error(split)
                self._download(split)
            self.load_split(split)  # reads the files and builds the attribute cache

    # ---------------------------------------------------------------- attribute cache
    def _cache_folder(self) -> Path:
        if self.cache_dir is not None:
            return Path(self.cache_dir)
        if os.access(self.root, os.W_OK):
            return self.root
        return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "genvae"

    def attribute_cache_path(self, split: Split, images: torch.Tensor) -> Path:
        """Cache file of a split, keyed by a hash of its images and the attribute code version."""
        digest = hashlib.sha1(images.numpy().tobytes())
        digest.update(ALGORITHM_VERSION.encode())
        return self._cache_folder() / f"{self.dataset}-{split}.morpho-{digest.hexdigest()[:16]}.pt"

    def _read_attribute_cache(self, path: Path, n_images: int) -> torch.Tensor | None:
        """The attributes stored in ``path`` if the file is whole and current, else None (with a warning).

        The file holds the values with the SHA-256 of their bytes (:func:`attribute_checksum`); values whose
        bytes no longer match (a damaged file) are not trusted.
        """
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
            values = cached["attributes"]
            current = cached["version"] == ALGORITHM_VERSION and values.shape == (
                n_images,
                len(ATTRIBUTE_NAMES),
            )
            if current and cached.get("sha256") == attribute_checksum(values):
                return values
            if not current:
                cause = "written by another attribute code"
            elif "sha256" not in cached:
                cause = "has no checksum (written by an older genvae)"
            else:
                cause = "content does not match its checksum"
        except Exception as err:  # a truncated or foreign file (torch's own message is a paragraph)
            cause = f"unreadable (truncated or not a genvae cache: {type(err).__name__})"
        rank_zero_warn(f"{path}: attribute cache {cause}; recomputing")
        return None

    def split_attributes(self, split: Split, images: torch.Tensor) -> torch.Tensor:
        """Attributes ``[N, 6]`` of a raw split: read from the verified cache, or computed and cached atomically."""
        path = self.attribute_cache_path(split, images)
        if path.is_file():
            values = self._read_attribute_cache(path, len(images))
            if values is not None:
                return values
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        values = attributes_with_progress(
            images.to(device), f"{self.dataset} {split}: Morpho-MNIST attributes"
        )
        buffer = io.BytesIO()
        payload = {
            "version": ALGORITHM_VERSION,
            "names": list(ATTRIBUTE_NAMES),
            "attributes": values,
            "sha256": attribute_checksum(values),
        }
        torch.save(payload, buffer)
        try:
            atomic_write_bytes(path, buffer.getvalue())
        except OSError as err:
            raise ConfigError(
                f"{path}: cannot write the attribute cache ({err}); set data.init_args.cache_dir"
            ) from None
        rank_zero_info(f"{self.dataset} {split}: attributes of {len(images)} images cached in {path}")
        return values

    # ---------------------------------------------------------------- tensors
    def load_split(self, split: Split) -> dict[str, torch.Tensor]:
        """Images ``[N, 1, 28, 28]`` uint8, labels ``[N]`` int64 (and attributes) of a raw split, validated."""
        if split in self._raw_splits:
            return self._raw_splits[split]
        if not self._has_split(split):
            raise self._missing_error(split)
        image_path, label_path = (self.find_file(stem) for stem in _FILE_STEMS[split])
        images, labels = read_idx(image_path), read_idx(label_path)
        if images.dtype != torch.uint8 or images.shape[1:] != self.image_shape[1:]:
            raise ConfigError(
                f"{image_path}: expected uint8 images of shape [N, 28, 28], got {list(images.shape)}"
            )
        if labels.shape != images.shape[:1]:
            raise ConfigError(f"{label_path}: {len(labels)} labels for {len(images)} images in {image_path}")
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < self.num_classes:
            raise ConfigError(f"{label_path}: labels must be classes in [0, {self.num_classes})")
        tensors = {"label": labels.long()}
        generated_in = None
        if self.dataset == CAUSAL_DATASET:
            source = images
            thickness, intensity = self._causal_targets(split, len(images))
            images, generated_in = self._generated_images(
                split,
                images,
                CAUSAL_VERSION,
                (thickness, intensity),
                lambda source: generate_causal_images(
                    source, thickness, intensity, f"{self.dataset} {split}: setting thickness, intensity"
                ),
            )
            # the MNIST digits they were made from: the ground truth of counterfactuals (genvae.data.causal)
            tensors.update(
                thickness=thickness, intensity=intensity, source_image=source.unsqueeze(1).contiguous()
            )
        elif self.perturbation is not None:
            kinds, generator = self._perturbation_kinds(split, len(images))
            seed = torch.tensor([self.perturbation_seed])
            images, generated_in = self._generated_images(
                split,
                images,
                PERTURBATION_VERSION,
                (kinds, seed),
                lambda source: generate_in_blocks(
                    lambda x, k: apply_perturbations(x, k, generator),
                    source,
                    kinds,
                    description=f"{self.dataset} {split}: global perturbations",
                ),
            )
            tensors["perturbation"] = kinds
        tensors["image"] = images.unsqueeze(1).contiguous()
        if self.attributes:
            tensors["attributes"] = self.split_attributes(split, images)
            if "intensity" in self.attribute_names:
                measured = median_intensity(images).float().unsqueeze(1)
                tensors["attributes"] = torch.cat([tensors["attributes"], measured], dim=1)
        if generated_in is not None:
            self._report_generation(split, tensors, generated_in)
        self._raw_splits[split] = tensors
        return tensors

    # ---------------------------------------------------------------- causal Morpho-MNIST
    def _causal_targets(self, split: Split, n_images: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Thickness and intensity targets ``[N]`` of a split: sampled (``causal_seed``) or read from the CSV."""
        if self.causal_seed is not None:
            seed = 2 * self.causal_seed + (split == "test")
            return sample_targets(n_images, seed, invert=self.causal_invert)
        return read_targets(target_file(self._causal_target_folder(split), split), n_images)

    def _causal_target_folder(self, split: Split) -> Path:
        """``causal_targets``; else ``root``, or ``<root>/../morpho_causal`` (a data folder holding ``mnist/``
        and ``morpho_causal/`` side by side) when only that one has the split's CSV."""
        if self.causal_targets is not None:
            return Path(self.causal_targets)
        sibling = self.root.parent / "morpho_causal"
        if not target_file(self.root, split).is_file() and target_file(sibling, split).is_file():
            return sibling
        return self.root

    def _generated_images(
        self, split: Split, source: torch.Tensor, version: str, keys: tuple[torch.Tensor, ...], make
    ) -> tuple[torch.Tensor, float | None]:
        """A generated split from the verified cache, or ``make(source on the device)``, cached atomically."""
        stem = f"{self.dataset}-{split}" if self.perturbation is None else f"{self.dataset}-perturbed-{split}"
        cache = ImageCache(self._cache_folder(), stem, version, source, *keys)
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        self._generated_paths[split] = cache.path
        return cache.read_or_make(lambda: make(source.to(device)))

    # ---------------------------------------------------------------- global perturbations
    @staticmethod
    def _perturbation_probabilities(probabilities: dict[str, float]) -> torch.Tensor:
        unknown = sorted(set(probabilities) - set(PERTURBATIONS))
        if unknown:
            raise ConfigError(
                f"data.perturbation: unknown perturbations {unknown}; choose from {list(PERTURBATIONS)}"
            )
        values = torch.tensor(
            [float(probabilities.get(name, 0.0)) for name in PERTURBATIONS], dtype=torch.float64
        )
        if (
            not bool(torch.isfinite(values).all())
            or bool((values < 0).any())
            or abs(float(values.sum()) - 1) > 1e-6
        ):
            raise ConfigError(
                f"data.perturbation: probabilities must be finite, non-negative and sum to 1, got {probabilities}"
            )
        return values

    def _perturbation_kinds(self, split: Split, n_images: int) -> tuple[torch.Tensor, torch.Generator]:
        """Each image's perturbation (index into :data:`PERTURBATIONS`) and the generator of its locations."""
        generator = torch.Generator().manual_seed(2 * self.perturbation_seed + (split == "test"))
        kinds = torch.multinomial(self.perturbation, n_images, replacement=True, generator=generator)
        return kinds, generator

    def _report_generation(self, split: Split, tensors: dict[str, torch.Tensor], seconds: float) -> None:
        """One line: images generated and the time; for the causal dataset, how far their measured thickness
        and intensity are from the targets."""
        n = len(tensors["label"])
        parts = [f"{n} images generated in {seconds:.1f} s ({n / max(seconds, 1e-9):.0f} img/s)"]
        if "thickness" in tensors and "attributes" in tensors:
            thickness = tensors["attributes"][:, ATTRIBUTE_NAMES.index("thickness")]
            parts.append(
                f"|measured - target| thickness {(thickness - tensors['thickness']).abs().nanmean():.3f} px"
            )
        if "intensity" in tensors:
            # measured intensity: the attributes' seventh column when computed, else measured here
            attributes = tensors.get("attributes")
            measured = (
                attributes[:, self.attribute_names.index("intensity")]
                if attributes is not None
                else median_intensity(tensors["image"]).float()
            )
            error = (measured - tensors["intensity"]).abs().mean()
            parts.append(f"intensity {error:.2f} grey levels")
        if "perturbation" in tensors:
            counts = torch.bincount(tensors["perturbation"], minlength=len(PERTURBATIONS)).tolist()
            parts.append(" ".join(f"{name} {c}" for name, c in zip(PERTURBATIONS, counts, strict=True)))
        rank_zero_info(
            f"{self.dataset} {split}: {', '.join(parts)}; cached in {self._generated_paths[split]}"
        )

    def _split_train_val(self, tensors: dict[str, torch.Tensor]) -> tuple[dict, dict]:
        n = len(tensors["label"])
        n_val = max(1, round(n * self.val_fraction))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        val_idx, train_idx = order[:n_val].sort().values, order[n_val:].sort().values
        take = lambda idx: {k: v[idx] for k, v in tensors.items()}  # noqa: E731
        return take(train_idx), take(val_idx)

    def setup(self, stage: str | None = None) -> None:
        """Load the splits once; later calls (one per stage) reuse them."""
        if self.splits:
            return
        source = self.resolved_source()
        if source == "train":
            train, val = self._split_train_val(self.load_split("train"))
            test = self.load_split("test")
        else:
            if self.source == "auto":
                rank_zero_warn(
                    f"{self.dataset}: training images not found under {self.root}; training on a seeded "
                    f"{1 - self.val_fraction:.0%}/{self.val_fraction:.0%} split of the t10k set (val = test)"
                )
            train, val = self._split_train_val(self.load_split("test"))
            test = val
        self.splits = {"train": train, "val": val, "test": test}
        self._raw_splits.clear()  # the splits above hold what is needed
        self._move_to_device()
        sizes = ", ".join(f"{k} {len(v['label'])}" for k, v in self.splits.items())
        rank_zero_info(f"{self.dataset} ({source} source): {sizes}")

    def _move_to_device(self) -> None:
        trainer = self.trainer
        if not self.data_on_device or trainer is None:
            return
        device = trainer.strategy.root_device
        if device.type != "cuda":
            return
        nbytes = sum(t.numel() * t.element_size() for split in self.splits.values() for t in split.values())
        free, _ = torch.cuda.mem_get_info(device)
        if nbytes < free / 4:
            self.splits = {name: {k: v.to(device) for k, v in s.items()} for name, s in self.splits.items()}

    # ---------------------------------------------------------------- loaders
    def _loader(self, split: str, train: bool) -> TensorBatchLoader:
        if not self.splits:
            self.setup()
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return TensorBatchLoader(
            self.splits[split],
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=train,
            seed=torch.initial_seed() % 2**31,  # set by seed_everything, equal on every rank
            rank=rank,
            world_size=world,
        )

    def train_dataloader(self) -> TensorBatchLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> TensorBatchLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> TensorBatchLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> TensorBatchLoader:
        return self._loader("test", train=False)

"""Sample-quality metrics on classifier features: FID and k-NN precision / recall.

Both compare a set of real images with a set of generated ones in the feature space of a frozen network
(the penultimate layer of :class:`genvae.models.Classifier`, see :class:`ClassifierFeatures`):

- FID (Heusel et al. 2017): the Frechet distance between Gaussians fitted to the two feature sets,
  computed by torchmetrics' ``FrechetInceptionDistance`` with a custom feature module (this path needs no
  torch-fidelity and no Inception weights).
- Precision / recall (Kynkaanniemi et al. 2019): each set's manifold is the union of balls around its
  points with radius the distance to the k-th nearest neighbour in the same set. Precision is the
  fraction of generated points inside the real manifold (are samples realistic?), recall the fraction of
  real points inside the generated manifold (is the data covered?).

:class:`SampleQualityMetric` extracts features once per image and gathers them across DDP ranks.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.utilities import dim_zero_cat

__all__ = [
    "ClassifierFeatures",
    "SampleQualityMetric",
    "frechet_distance",
    "knn_radii",
    "manifold_coverage",
    "precision_recall",
]


class ClassifierFeatures(nn.Module):
    """Frozen ``network.features(images)`` as float32 ``[B, num_features]``; stays in eval mode.

    Args:
        network: a module with a ``features(x)`` method and a ``feature_dim`` attribute (a ``Classifier``).
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network.eval().requires_grad_(False)
        self.num_features = int(network.feature_dim)  # read by torchmetrics' FID

    def train(self, mode: bool = True) -> ClassifierFeatures:
        return super().train(False)  # dropout / batch norm never switch to training behaviour

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        return self.network.features(images.float()).float()


class _Passthrough(nn.Module):
    """Identity "feature extractor": lets torchmetrics' FID take features computed elsewhere."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def frechet_distance(real: Tensor, fake: Tensor, chunk_size: int = 4096) -> Tensor:
    """FID between feature sets ``real`` ``[N, D]`` and ``fake`` ``[M, D]`` (float64 statistics)."""
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"expected [N, D] and [M, D] features, got {list(real.shape)} and {list(fake.shape)}"
        )
    fid = FrechetInceptionDistance(feature=_Passthrough(real.shape[1])).to(real.device)
    for features, is_real in ((real, True), (fake, False)):
        for chunk in features.split(chunk_size):
            fid.update(chunk, real=is_real)
    return fid.compute().double()


def knn_radii(points: Tensor, k: int, chunk_size: int = 1024) -> Tensor:
    """Distance of each point ``[N, D]`` to its k-th nearest neighbour among the others, ``[N]``."""
    if not 1 <= k < len(points):
        raise ValueError(f"k must be in [1, {len(points) - 1}] for {len(points)} points, got {k}")
    radii = [
        torch.cdist(chunk, points).topk(k + 1, dim=1, largest=False).values[:, k]  # column 0 is the point
        for chunk in points.split(chunk_size)
    ]
    return torch.cat(radii)


def manifold_coverage(queries: Tensor, points: Tensor, radii: Tensor, chunk_size: int = 1024) -> Tensor:
    """Fraction of ``queries`` inside at least one ball (``points``, ``radii``)."""
    inside = [
        (torch.cdist(chunk, points) <= radii.unsqueeze(0)).any(dim=1) for chunk in queries.split(chunk_size)
    ]
    return torch.cat(inside).float().mean()


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[Tensor, Tensor]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of ``fake`` features against ``real``.

    The k-NN radii depend on the set size, so the larger set is cut to the size of the smaller one (its
    first rows) as the paper prescribes equal sizes.
    """
    n = min(len(real), len(fake))
    real, fake = real[:n].float(), fake[:n].float()
    precision = manifold_coverage(fake, real, knn_radii(real, k))
    recall = manifold_coverage(real, fake, knn_radii(fake, k))
    return precision, recall


class SampleQualityMetric(Metric):
    """FID, precision and recall of generated images against real ones, in the features of ``extractor``.

    ``update(images, real=...)`` extracts features batch by batch; ``compute()`` gathers them from every
    rank and returns ``{"fid", "precision", "recall"}``.

    Args:
        extractor: image -> feature module, e.g. :class:`ClassifierFeatures`.
        k: neighbourhood size of the precision / recall manifolds (3 in the paper).
    """

    full_state_update = False

    def __init__(self, extractor: nn.Module, k: int = 3, **kwargs: object) -> None:
        super().__init__(**kwargs)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.extractor = extractor
        self.k = k
        self.add_state("real_features", default=[], dist_reduce_fx="cat")
        self.add_state("fake_features", default=[], dist_reduce_fx="cat")

    def update(self, images: Tensor, real: bool) -> None:
        features = self.extractor(images)
        (self.real_features if real else self.fake_features).append(features)

    def compute(self) -> dict[str, Tensor]:
        if not self.real_features or not self.fake_features:
            raise RuntimeError("SampleQualityMetric needs both real and generated images")
        real, fake = dim_zero_cat(self.real_features), dim_zero_cat(self.fake_features)
        if min(len(real), len(fake)) <= self.k:
            raise RuntimeError(
                f"need more than k={self.k} real and generated images, got {len(real)}, {len(fake)}"
            )
        precision, recall = precision_recall(real, fake, self.k)
        return {"fid": frechet_distance(real, fake), "precision": precision, "recall": recall}

    def real_count(self) -> int:
        """Real images seen on this rank so far."""
        return sum(len(f) for f in self.real_features)

"""Latent-space metrics on synthetic latents whose answer is known, and their building blocks by hand."""

from __future__ import annotations

import math

import pytest
import torch

from genvae.metrics import (
    disentanglement_metrics,
    interpretability,
    mig,
    modularity,
    reconstruction_accuracy,
    sap,
    spearman_score,
)
from genvae.metrics.disentanglement import (
    _student_t_quantile,
    discretize,
    entropy,
    mutual_information,
    r2_matrix,
    rank,
    spearman_matrix,
)

NAMES = ("thickness", "slant", "length", "area", "width", "height")
SCALES = torch.tensor([0.8, 0.25, 8.0, 60.0, 3.0, 2.5])  # physical units, very different scales
OFFSETS = torch.tensor([2.5, 0.0, 20.0, 150.0, 9.0, 18.0])
PERMUTATION = [3, 0, 5, 1, 4, 2]  # latent k carries attribute PERMUTATION[k]


def attributes_in_units(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g) * SCALES + OFFSETS


def latents_of(attributes: torch.Tensor, noise: float, extra_dims: int = 0, seed: int = 1) -> torch.Tensor:
    """Standardised attributes in permuted order plus Gaussian noise, then ``extra_dims`` pure-noise dims."""
    g = torch.Generator().manual_seed(seed)
    a = attributes[:, PERMUTATION]
    z = (a - a.mean(0)) / a.std(0) + noise * torch.randn(a.shape, generator=g)
    return torch.cat([z, torch.randn(len(z), extra_dims, generator=g)], dim=1)


def test_perfect_latents_score_near_one() -> None:
    a = attributes_in_units(2000)
    z = latents_of(a, noise=0.01)
    dims, r2 = interpretability(z, a)
    assert dims.tolist() == [PERMUTATION.index(k) for k in range(6)]
    assert r2.min() > 0.999
    assert spearman_score(z, a) > 0.999
    assert sap(z, a) > 0.99
    assert mig(z, a) > 0.8
    assert modularity(z, a) > 0.95


def test_random_latents_score_near_zero() -> None:
    a = attributes_in_units(2000)
    z = torch.randn(2000, 16, generator=torch.Generator().manual_seed(5))
    assert interpretability(z, a)[1].mean() < 0.01
    assert spearman_score(z, a) < 0.05
    assert sap(z, a) < 0.01
    assert mig(z, a) < 0.03


def test_noise_dims_do_not_change_the_attribute_metrics() -> None:
    a = attributes_in_units(2000)
    z = latents_of(a, noise=0.05, extra_dims=10)
    results = disentanglement_metrics(z, a, NAMES)
    assert results["interpretability"] > 0.99 and results["spearman"] > 0.99 and results["sap"] > 0.99
    assert [results[f"interpretability_dim/{name}"] for name in NAMES] == [
        PERMUTATION.index(k) for k in range(6)
    ]
    # modularity averages over latent dims: the 10 noise dims spread their (small, biased) MI evenly
    assert results["modularity"] < disentanglement_metrics(latents_of(a, noise=0.05), a, NAMES)["modularity"]


def test_duplicated_dim_keeps_interpretability_but_has_no_gap() -> None:
    a = attributes_in_units(1000)[:, :1]
    z = (a - a.mean()) / a.std()
    z = torch.cat([z, 2 * z + 1], dim=1)  # two dims carry the same information
    assert interpretability(z, a)[1].item() == pytest.approx(1.0)
    assert spearman_score(z, a).item() == pytest.approx(1.0)
    assert mig(z, a).item() == pytest.approx(0.0, abs=1e-9)
    assert sap(z, a).item() == pytest.approx(0.0, abs=1e-9)


def test_dim_informative_about_two_attributes_has_zero_modularity() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 4, (4000, 1), generator=g).double()
    attributes = torch.cat([a, a * 10 - 3], dim=1)  # two attributes, one underlying factor
    assert modularity(a, attributes).item() == pytest.approx(0.0, abs=1e-9)
    assert modularity(a, torch.cat([a, torch.randn(4000, 1, generator=g)], dim=1)).item() > 0.9


def test_metrics_do_not_care_about_units() -> None:
    a = attributes_in_units(1500)
    z = latents_of(a, noise=1.0, extra_dims=4)  # a middling latent space, far from the 0 and 1 limits
    base = disentanglement_metrics(z, a, NAMES)
    rescaled = disentanglement_metrics(-3.0 * z + 7.0, a * torch.tensor([25.4, 57.3, 1, 0.01, 2, 3]), NAMES)
    assert 0.2 < base["interpretability"] < 0.8
    for key, value in base.items():
        assert rescaled[key] == pytest.approx(value, abs=2e-3), key


def test_rows_with_nan_attributes_are_left_out() -> None:
    a = attributes_in_units(500)
    z = latents_of(a, noise=0.3)
    with_nan = torch.cat([a, torch.full((3, 6), float("nan"))])
    padded_z = torch.cat([z, torch.randn(3, 6)])
    assert disentanglement_metrics(padded_z, with_nan, NAMES) == pytest.approx(
        disentanglement_metrics(z, a, NAMES)
    )


def test_bad_shapes_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="latents"):
        mig(torch.zeros(10, 2), torch.zeros(9, 2))
    with pytest.raises(ValueError, match="names"):
        disentanglement_metrics(torch.randn(10, 2), torch.randn(10, 3), NAMES)


# ------------------------------------------------------------------ building blocks by hand
def test_discretize_is_equal_mass_and_keeps_ties_together() -> None:
    values = torch.arange(100.0).unsqueeze(1)
    bins = discretize(values, 20)
    assert torch.bincount(bins[:, 0]).tolist() == [5] * 20
    ties = torch.tensor([[0.0, 1.0], [0.0, 3.0], [0.0, 3.0], [1.0, 3.0]])
    assert discretize(ties, 2).T.tolist() == [[0, 0, 0, 1], [0, 1, 1, 1]]
    assert torch.equal(discretize(-values, 20), 19 - bins)


def test_mutual_information_and_entropy_by_hand() -> None:
    # x uniform on {0, 1}; y = x on half the data and 1 - x on the other quarter pairs
    x = torch.tensor([0, 0, 1, 1, 0, 1, 0, 1]).unsqueeze(1)
    y = torch.tensor([0, 0, 1, 1, 1, 0, 0, 1]).unsqueeze(1)
    # joint: p(0,0)=3/8, p(1,1)=3/8, p(0,1)=p(1,0)=1/8, marginals 1/2
    expected = 2 * (3 / 8) * math.log((3 / 8) / (1 / 4)) + 2 * (1 / 8) * math.log((1 / 8) / (1 / 4))
    assert mutual_information(x, y, bins=2).item() == pytest.approx(expected)
    assert mutual_information(x, x, bins=2).item() == pytest.approx(math.log(2))
    assert entropy(torch.tensor([[0, 1, 2, 2]]).T, bins=3).item() == pytest.approx(
        -(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5))
    )


def test_r2_is_the_squared_pearson_correlation() -> None:
    g = torch.Generator().manual_seed(3)
    z = torch.randn(50, 3, generator=g)
    a = torch.randn(50, 2, generator=g) + z[:, :2]
    pearson = torch.corrcoef(torch.cat([z, a], dim=1).T.double())[:3, 3:]
    assert torch.allclose(r2_matrix(z, a), pearson.pow(2))
    constant = torch.cat([z[:, :1], torch.ones(50, 1)], dim=1)
    assert r2_matrix(constant, a)[1].tolist() == [0.0, 0.0]


def test_rank_and_spearman_match_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(4)
    z = torch.randint(0, 6, (40, 3), generator=g).double()  # many ties
    a = (z[:, :2] + torch.randint(0, 4, (40, 2), generator=g)).double()
    expected_ranks = torch.stack([torch.from_numpy(stats.rankdata(z[:, k].numpy())) for k in range(3)], 1)
    assert torch.allclose(rank(z), expected_ranks)
    expected = torch.zeros(3, 2, dtype=torch.float64)
    for d in range(3):
        for k in range(2):
            rho, p = stats.spearmanr(z[:, d].numpy(), a[:, k].numpy())
            expected[d, k] = abs(rho) if p <= 0.05 else 0.0
    assert torch.allclose(spearman_matrix(z, a), expected)
    assert (expected == 0).any() and (expected > 0).any()  # both branches were exercised


def test_student_t_quantile() -> None:
    assert _student_t_quantile(0.975, 10) == pytest.approx(2.228139, abs=1e-4)
    assert _student_t_quantile(0.975, 998) == pytest.approx(1.962344, abs=1e-6)


def test_reconstruction_accuracy_by_hand() -> None:
    image = torch.tensor([[0.0, 1.0, 0.6, 0.2], [1.0, 1.0, 1.0, 1.0]]).view(2, 1, 2, 2)
    reconstruction = torch.tensor([[0.1, 0.9, 0.4, 0.7], [0.6, 0.2, 0.51, 0.5]]).view(2, 1, 2, 2)
    assert reconstruction_accuracy(reconstruction, image).tolist() == [0.5, 0.5]

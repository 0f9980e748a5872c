"""Latent-space metrics on synthetic latents whose answer is known, their building blocks by hand, and the
agreement of every mutual-information protocol with the code it follows (scikit-learn as ar-vae calls it,
disentanglement_lib's histogram binning)."""

from __future__ import annotations

import math

import numpy as np
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
from genvae.metrics.mutual_information import (
    PROTOCOLS,
    histogram_discretize,
    ksg_mutual_information,
    ksg_paired,
    mutual_information_matrix,
    standardize_and_jitter,
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


def ksg_mig_of_gaussian_copy(noise: float, n: int) -> float:
    """MIG under "ksg" of dims ``a + noise * e`` (Gaussian a, e of unit std), no other dim informative.

    MI = 0.5 ln(1 + 1 / noise^2) (Gaussian channel) over :func:`ksg_self_information`.
    """
    return 0.5 * math.log(1 + 1 / noise**2) / ksg_self_information(n)


def ksg_self_information(n: int) -> float:
    """KSG MI (k = 3) of a continuous variable with a jittered copy of itself: psi(N) - psi(4).

    Both copies have the same 3 nearest neighbours; the 3rd sets eps in one coordinate and is a hair
    closer in the other, so n_x + n_y = 2 + 2 + 1 and psi(N) + psi(3) - psi(3) - psi(4) remains.
    """
    digamma = torch.special.digamma
    return (
        digamma(torch.tensor(float(n), dtype=torch.float64)) - digamma(torch.tensor(4.0, dtype=torch.float64))
    ).item()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_perfect_latents_score_near_one(protocol: str) -> None:
    a = attributes_in_units(2000)
    z = latents_of(a, noise=0.01)
    dims, r2 = interpretability(z, a, protocol=protocol)
    assert dims.tolist() == [PERMUTATION.index(k) for k in range(6)]
    assert r2.min() > 0.999
    assert spearman_score(z, a, protocol=protocol) > 0.999
    assert sap(z, a, protocol=protocol) > 0.99
    assert modularity(z, a, protocol=protocol) > 0.95
    # "ksg": H(a) is the k-NN self-MI, psi(N) - psi(4) = 6.3 nats here, and MI(z; a) ~ 4.6 nats (see
    # test_ksg_mig_is_the_gaussian_channel_ratio); 20 bins: a copy carries the whole binned entropy
    assert mig(z, a, protocol=protocol) > (0.6 if protocol == "ksg" else 0.8)


@pytest.mark.parametrize("noise", [0.1, 0.3])
def test_ksg_mig_is_the_gaussian_channel_ratio(noise: float) -> None:
    a = attributes_in_units(2000)
    expected = ksg_mig_of_gaussian_copy(noise, 2000)
    assert mig(latents_of(a, noise=noise), a, protocol="ksg").item() == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_random_latents_score_near_zero(protocol: str) -> None:
    a = attributes_in_units(2000)
    z = torch.randn(2000, 16, generator=torch.Generator().manual_seed(5))
    assert interpretability(z, a, protocol=protocol)[1].mean() < 0.01
    assert spearman_score(z, a) < 0.05
    assert sap(z, a) < 0.01
    assert mig(z, a, protocol=protocol) < 0.03


def test_ksg_modularity_of_random_latents_is_high() -> None:
    # the reference's modularity of a random latent space: each dim's near-zero MI is uneven over attributes
    a = attributes_in_units(2000)
    z = torch.randn(2000, 16, generator=torch.Generator().manual_seed(5))
    assert 0.7 < modularity(z, a, protocol="ksg") < 1.0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_noise_dims_do_not_change_the_attribute_metrics(protocol: str) -> None:
    a = attributes_in_units(2000)
    z = latents_of(a, noise=0.05, extra_dims=10)
    results = disentanglement_metrics(z, a, NAMES, protocol=protocol)
    assert results["interpretability"] > 0.99 and results["spearman"] > 0.99 and results["sap"] > 0.99
    assert [results[f"interpretability_dim/{name}"] for name in NAMES] == [
        PERMUTATION.index(k) for k in range(6)
    ]
    # modularity averages over latent dims: the 10 noise dims spread their small MI over the attributes
    # (evenly for the binned estimators' bias, unevenly but still below a clean dim's ~1 for "ksg")
    clean = disentanglement_metrics(latents_of(a, noise=0.05), a, NAMES, protocol=protocol)
    assert results["modularity"] < clean["modularity"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_duplicated_dim_keeps_interpretability_but_has_no_gap(protocol: str) -> None:
    a = attributes_in_units(1000)[:, :1]
    z = (a - a.mean()) / a.std()
    z = torch.cat([z, 2 * z + 1], dim=1)  # two dims carry the same information
    assert interpretability(z, a, protocol=protocol)[1].item() == pytest.approx(1.0)
    assert spearman_score(z, a).item() == pytest.approx(1.0)
    assert mig(z, a, protocol=protocol).item() == pytest.approx(0.0, abs=1e-9)
    assert sap(z, a).item() == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_dim_informative_about_two_attributes_has_zero_modularity(protocol: str) -> None:
    g = torch.Generator().manual_seed(0)
    # binned protocols: a discrete factor; "ksg" (continuous variables): a Gaussian one
    a = (
        torch.randint(0, 4, (4000, 1), generator=g)
        if protocol != "ksg"
        else torch.randn(4000, 1, generator=g)
    )
    a = a.double()
    attributes = torch.cat([a, a * 10 - 3], dim=1)  # two attributes, one underlying factor
    assert modularity(a, attributes, protocol=protocol).item() == pytest.approx(0.0, abs=1e-9)
    independent = torch.cat([a, torch.randn(4000, 1, generator=g)], dim=1)
    assert modularity(a, independent, protocol=protocol).item() > 0.9


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_metrics_do_not_care_about_units(protocol: str) -> None:
    a = attributes_in_units(1500)
    z = latents_of(a, noise=1.0, extra_dims=4)  # a middling latent space, far from the 0 and 1 limits
    base = disentanglement_metrics(z, a, NAMES, protocol=protocol)
    scale = torch.tensor([25.4, 57.3, 1, 0.01, 2, 3])
    rescaled = disentanglement_metrics(-3.0 * z + 7.0, a * scale, NAMES, protocol=protocol)
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
    with pytest.raises(ValueError, match="protocol must be one of"):
        disentanglement_metrics(torch.randn(10, 6), torch.randn(10, 6), NAMES, protocol="binned")


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


# ------------------------------------------------------------------ agreement with the reference code
def morpho_like_attributes(n: int, seed: int) -> torch.Tensor:
    """Six Morpho-MNIST-like columns ``[N, 6]``: skewed, correlated, area in 1/16 px^2 steps (ties)."""
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(n, 6, generator=g, dtype=torch.float64)
    thickness = 2.5 * torch.exp(0.3 * f[:, 0])
    slant = 0.25 * f[:, 1]
    length = 40.0 + 8.0 * f[:, 2]
    area = torch.round(16 * (thickness * length * (1 + 0.1 * f[:, 3]))) / 16
    width = 12.0 + 3.0 * f[:, 4] + 4 * slant
    height = 19.0 + 0.6 * f[:, 5] + 0.01 * length
    return torch.stack([thickness, slant, length, area, width, height], dim=1)


def encoding(kind: str, attributes: torch.Tensor, seed: int) -> torch.Tensor:
    """10-dim latents of the attributes: ``clean``, ``noisy``, ``entangled`` (rotated) or ``random``."""
    g = torch.Generator().manual_seed(seed)
    n = len(attributes)
    standard = (attributes - attributes.mean(0)) / attributes.std(0)
    extra = torch.randn(n, 4, generator=g, dtype=torch.float64)
    if kind == "random":
        return torch.randn(n, 10, generator=g, dtype=torch.float64)
    if kind == "entangled":
        rotation = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))[0]
        core = standard @ rotation + 0.1 * torch.randn(n, 6, generator=g, dtype=torch.float64)
    else:
        noise = {"clean": 0.05, "noisy": 0.7}[kind]
        core = standard[:, PERMUTATION] + noise * torch.randn(n, 6, generator=g, dtype=torch.float64)
    return torch.cat([core, extra], dim=1)


def reference_metrics(latents: np.ndarray, attributes: np.ndarray, seed: int = 0) -> dict[str, float]:
    """The AR-VAE evaluation (github.com/ashispati/ar-vae, utils/evaluation.py), with a seeded sklearn.

    ``continuous_mutual_info``: ``mutual_info_regression(latents, a)`` per attribute; ``continuous_entropy``:
    ``mutual_info_regression(a[:, None], a)``; MIG, modularity, interpretability, SAP and the Spearman
    score as ``compute_mig``, ``_modularity``, ``compute_interpretability_metric``, ``compute_sap_score``
    and ``compute_correlation_score`` compute them.
    """
    feature_selection = pytest.importorskip("sklearn.feature_selection")
    linear_model = pytest.importorskip("sklearn.linear_model")
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.RandomState(seed)
    num_codes, num_attributes = latents.shape[1], attributes.shape[1]
    m = np.zeros([num_codes, num_attributes])
    for i in range(num_attributes):
        m[:, i] = feature_selection.mutual_info_regression(latents, attributes[:, i], random_state=rng)
    h = np.array(
        [
            feature_selection.mutual_info_regression(
                attributes[:, j : j + 1], attributes[:, j], random_state=rng
            )[0]
            for j in range(num_attributes)
        ]
    )
    sorted_m = np.sort(m, axis=0)[::-1]
    results = {"mig": float(np.mean((sorted_m[0, :] - sorted_m[1, :]) / h))}
    squared_mi = np.square(m)
    max_squared_mi = np.max(squared_mi, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        modularity_score = 1.0 - (np.sum(squared_mi, axis=1) - max_squared_mi) / (
            max_squared_mi * (num_attributes - 1.0)
        )
    modularity_score[max_squared_mi == 0.0] = 0.0
    results["modularity"] = float(np.mean(modularity_score))
    scores = []
    for i, name in enumerate(NAMES):
        dim = int(np.argmax(m[:, i]))
        x = latents[:, dim : dim + 1]
        score = linear_model.LinearRegression().fit(x, attributes[:, i]).score(x, attributes[:, i])
        results[f"interpretability/{name}"] = float(score)
        results[f"interpretability_dim/{name}"] = float(dim)
        scores.append(score)
    results["interpretability"] = float(np.mean(scores))
    sap_matrix = np.zeros([num_codes, num_attributes])
    corr = np.zeros([num_codes, num_attributes])
    for i in range(num_codes):
        for j in range(num_attributes):
            cov = np.cov(latents[:, i], attributes[:, j], ddof=1)
            sap_matrix[i, j] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1]) if cov[0, 0] > 1e-12 else 0.0
            rho, p = stats.spearmanr(latents[:, i], attributes[:, j])
            corr[i, j] = abs(rho) if p <= 0.05 else 0.0
    sorted_sap = np.sort(sap_matrix, axis=0)
    results["sap"] = float(np.mean(sorted_sap[-1, :] - sorted_sap[-2, :]))
    results["spearman"] = float(np.mean(np.max(corr, axis=0)))
    return results


@pytest.mark.parametrize("n", [1000, 5000])
@pytest.mark.parametrize("kind", ["clean", "noisy", "entangled", "random"])
def test_ksg_protocol_agrees_with_the_reference_code(kind: str, n: int) -> None:
    attributes = morpho_like_attributes(n, seed=n)
    latents = encoding(kind, attributes, seed=n + 1)
    expected = reference_metrics(latents.numpy(), attributes.numpy())
    results = disentanglement_metrics(latents, attributes, NAMES, protocol="ksg")
    assert results.keys() == expected.keys()
    for key, value in expected.items():
        if key.startswith("interpretability_dim/"):
            continue  # the score on the chosen dim is compared; near-equal MIs may pick either dim
        assert results[key] == pytest.approx(value, abs=0.02), key


def test_ksg_is_scikit_learns_estimator_on_the_same_points() -> None:
    mutual_info = pytest.importorskip("sklearn.feature_selection._mutual_info")
    g = torch.Generator().manual_seed(7)
    n = 3000
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    y = torch.cat(
        [
            x[:, :1] + 0.1 * torch.randn(n, 1, generator=g, dtype=torch.float64),  # dependent
            torch.randn(n, 1, generator=g, dtype=torch.float64),  # independent
            x[:, 2:3].pow(2),  # non-monotone
            torch.round(4 * x[:, 3:4]) / 4,  # ties, to be jittered
            torch.exp(3 * x[:, 4:5]),  # heavy tail: widely varying neighbour distances
        ],
        dim=1,
    )
    generator = torch.Generator().manual_seed(0)
    x, y = standardize_and_jitter(x, generator), standardize_and_jitter(y, generator)
    expected = [mutual_info._compute_mi_cc(x[:, p].numpy(), y[:, p].numpy(), 3) for p in range(5)]
    assert ksg_paired(x, y).tolist() == pytest.approx(expected, abs=1e-12)


def test_ksg_entropy_is_the_estimators_self_information() -> None:
    feature_selection = pytest.importorskip("sklearn.feature_selection")
    attributes = morpho_like_attributes(2000, seed=3)
    mi, h = ksg_mutual_information(attributes[:, :2], attributes)
    expected = [
        feature_selection.mutual_info_regression(
            attributes[:, j : j + 1].numpy(), attributes[:, j].numpy(), random_state=0
        )[0]
        for j in range(6)
    ]
    assert h.tolist() == pytest.approx(expected, abs=0.01)
    assert h[0].item() == pytest.approx(ksg_self_information(2000), abs=1e-9)  # thickness: no ties
    assert mi.diagonal().tolist() == pytest.approx(h[:2].tolist(), abs=0.01)


def numpy_histogram_discretize(target: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """disentanglement_lib ``utils._histogram_discretize`` on columns (it takes rows), 0-based labels."""
    return np.stack(
        [np.digitize(column, np.histogram(column, num_bins)[1][:-1]) - 1 for column in target.T], axis=1
    )


def test_histogram_protocol_is_disentanglement_libs() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    attributes = morpho_like_attributes(3000, seed=5)
    latents = encoding("noisy", attributes, seed=6)
    latents[:, -1] = 2.0  # a constant (collapsed) dim: numpy's histogram takes the range min -/+ 0.5
    z_bins, a_bins = (
        numpy_histogram_discretize(latents.numpy()),
        numpy_histogram_discretize(attributes.numpy()),
    )
    assert histogram_discretize(latents).tolist() == z_bins.tolist()
    assert histogram_discretize(attributes).tolist() == a_bins.tolist()
    mi, h = mutual_information_matrix(latents, attributes, protocol="histogram")
    expected = [[metrics.mutual_info_score(a_bins[:, j], z_bins[:, i]) for j in range(6)] for i in range(10)]
    assert mi.numpy() == pytest.approx(np.array(expected), abs=1e-9)
    expected_h = [metrics.mutual_info_score(a_bins[:, j], a_bins[:, j]) for j in range(6)]
    assert h.tolist() == pytest.approx(expected_h, abs=1e-9)

"""Mutual information estimators for latent metrics: k-NN (KSG), quantile-binned and histogram plug-in.

Each estimator gives ``MI [D, A]`` between every latent column and every attribute column and the
attribute "entropies" ``H [A]`` that normalise MIG, in nats, as one of three published conventions
(:data:`PROTOCOLS`); :func:`mutual_information_matrix` picks one by name.

- ``"ksg"`` -- the AR-VAE evaluation (Pati & Lerch 2020, github.com/ashispati/ar-vae
  ``utils/evaluation.py``, ``continuous_mutual_info`` / ``continuous_entropy``), which calls
  scikit-learn's ``mutual_info_regression`` (``sklearn/feature_selection/_mutual_info.py``,
  ``_estimate_mi`` and ``_compute_mi_cc``): every column is divided by its standard deviation (ddof 0; a
  constant column is left as is), ``1e-10 * max(1, mean |column|)`` times Gaussian noise is added to
  break ties, and the Kraskov-Stoegbauer-Grassberger estimator (Kraskov et al. 2004, algorithm 1, k = 3)
  ``psi(N) + psi(k) - <psi(n_x + 1)> - <psi(n_y + 1)>`` is clipped at 0, with ``eps_i`` the max-norm
  distance of point ``i`` to its k-th neighbour in the joint space and ``n_x`` (``n_y``) the number of
  other points strictly closer than ``eps_i`` in ``x`` (``y``). ``H(a)`` is that estimator's MI of the
  attribute with a second, independently jittered copy of itself (``mutual_info_regression(a, a)``):
  ``psi(N) - psi(k + 1)`` for a continuous attribute (7.95 nats at N = 10,000; the jitter puts the k-th
  neighbour a hair inside the radius in one of the two copies), less where ties make it discrete. Here
  the same estimator is computed exactly, vectorised over all column pairs and device-generic: the k-th
  neighbour by a search in strips of the x-sorted points that widens until a bound proves it complete
  (:func:`_kth_neighbour_distance`), the counts by binary search with the float comparisons
  scikit-learn's KD-tree makes. The jitter comes from a seeded torch generator, so results are
  deterministic (scikit-learn's default draws fresh noise on every call).
- ``"quantile"`` -- every column in ``bins`` equal-mass bins (:func:`discretize`), plug-in MI of the
  discretised pair and plug-in entropy of the discretised attribute: invariant to monotone rescaling,
  biased upwards by about ``(bins - 1)^2 / (2N)`` nats.
- ``"histogram"`` -- disentanglement_lib (Locatello et al. 2019, ``evaluation/metrics/utils.py``,
  ``_histogram_discretize`` and ``discrete_mutual_info`` / ``discrete_entropy``): every column in
  ``bins`` equal-width bins between its min and max (``np.digitize`` on ``np.histogram``'s edges), MI and
  entropy by ``sklearn.metrics.mutual_info_score`` on the bin labels (plug-in, nats). Here the attributes
  are discretised the same way (disentanglement_lib's ground-truth factors are already discrete).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, get_args

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_BINS",
    "DEFAULT_NEIGHBOURS",
    "PROTOCOLS",
    "Protocol",
    "check_protocol",
    "discretize",
    "entropy",
    "histogram_discretize",
    "ksg_mutual_information",
    "ksg_paired",
    "mutual_information",
    "mutual_information_matrix",
    "one_cpu_thread",
    "rank",
    "standardize_and_jitter",
]

Protocol = Literal["ksg", "quantile", "histogram"]
PROTOCOLS: tuple[str, ...] = get_args(Protocol)
DEFAULT_BINS = 20
DEFAULT_NEIGHBOURS = 3
_JITTER = 1e-10
_BLOCK = 1 << 16  # elements of one [queries, window] block of the neighbour search


def check_protocol(protocol: str) -> str:
    """``protocol`` if it is one of :data:`PROTOCOLS`, else a ValueError naming the allowed values."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
    return protocol


# ------------------------------------------------------------------ plug-in estimators of bin labels
def rank(values: Tensor) -> Tensor:
    """Ranks ``1..N`` of every column of ``values [N, K]``, ties given their average rank (as scipy)."""
    n, k = values.shape
    sorted_values, order = values.sort(dim=0)
    new_group = torch.ones_like(sorted_values, dtype=torch.bool)
    new_group[1:] = sorted_values[1:] != sorted_values[:-1]
    group = new_group.long().cumsum(0) - 1 + torch.arange(k, device=values.device) * n  # unique per column
    position = torch.arange(1, n + 1, dtype=torch.float64, device=values.device).expand(k, n).T
    total = torch.zeros(n * k, dtype=torch.float64, device=values.device).index_add_(
        0, group.flatten(), position.flatten()
    )
    size = torch.bincount(group.flatten(), minlength=n * k).double()
    average = (total / size.clamp(min=1))[group]
    return torch.empty_like(average).scatter_(0, order, average)


def discretize(values: Tensor, bins: int = DEFAULT_BINS) -> Tensor:
    """Equal-mass bin index ``[N, K]`` (int64 in ``0..bins-1``) of every column of ``values [N, K]``.

    The bin of a value is ``floor((rank - 1) * bins / N)`` with tied values given their average rank,
    so equal values share a bin and a strictly monotone rescaling does not change the bins.
    """
    n = len(values)
    return ((rank(values) - 1) * bins / n).floor().long().clamp(0, bins - 1)


def histogram_discretize(values: Tensor, bins: int = DEFAULT_BINS) -> Tensor:
    """Equal-width bin index ``[N, K]`` (int64 in ``0..bins-1``) of every column, as disentanglement_lib.

    ``np.digitize(v, np.histogram(v, bins)[1][:-1]) - 1``: edges ``min + i * (max - min) / bins``
    (numpy's ``linspace``; ``min -/+ 0.5`` for a constant column), the maximum in the last bin.
    """
    values = values.double()
    low, high = values.min(dim=0).values, values.max(dim=0).values
    constant = low == high
    low, high = torch.where(constant, low - 0.5, low), torch.where(constant, high + 0.5, high)
    steps = torch.arange(bins + 1, dtype=torch.float64, device=values.device).unsqueeze(1)
    edges = steps * ((high - low) / bins) + low  # [bins + 1, K]
    edges[-1] = high
    index = torch.searchsorted(edges[:-1].T.contiguous(), values.T.contiguous(), right=True) - 1
    return index.T.clamp(0, bins - 1)


def _joint_counts(x: Tensor, y: Tensor, bins: int) -> Tensor:
    """Contingency tables ``[K, L, bins, bins]`` of every column pair of bin indices ``x [N, K]``, ``y [N, L]``."""
    n, k = x.shape
    cells = (x.unsqueeze(2) * bins + y.unsqueeze(1)).reshape(n, -1)  # [N, K*L] cell of each pair
    offsets = torch.arange(cells.shape[1], device=x.device) * bins * bins
    counts = torch.bincount((cells + offsets).flatten(), minlength=cells.shape[1] * bins * bins)
    return counts.view(k, y.shape[1], bins, bins).double()


def mutual_information(x: Tensor, y: Tensor, bins: int = DEFAULT_BINS) -> Tensor:
    """Plug-in mutual information ``[K, L]`` (nats) between the bin indices of columns of ``x`` and ``y``."""
    joint = _joint_counts(x, y, bins)
    joint = joint / joint.sum(dim=(2, 3), keepdim=True)
    px, py = joint.sum(dim=3, keepdim=True), joint.sum(dim=2, keepdim=True)
    ratio = joint / (px * py)
    return torch.where(joint > 0, joint * ratio.log(), torch.zeros_like(joint)).sum(dim=(2, 3)).clamp(min=0)


def entropy(x: Tensor, bins: int = DEFAULT_BINS) -> Tensor:
    """Entropy ``[K]`` (nats) of the bin indices ``x [N, K]``."""
    counts = torch.zeros(x.shape[1], bins, dtype=torch.float64, device=x.device)
    p = counts.scatter_add_(1, x.T, torch.ones_like(x.T, dtype=torch.float64)) / len(x)
    return -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(dim=1)


# ------------------------------------------------------------------ KSG (k-nearest-neighbour) estimator
def standardize_and_jitter(values: Tensor, generator: torch.Generator) -> Tensor:
    """scikit-learn's preprocessing of continuous columns before the KSG estimate (float64 ``[N, K]``).

    ``scale(with_mean=False)`` (divide by the ddof-0 std, constant columns unchanged), then add
    ``1e-10 * max(1, mean |column|) * N(0, 1)`` noise drawn on the CPU from ``generator``.
    """
    values = values.double()
    std = values.std(dim=0, correction=0)
    values = values / torch.where(std > 0, std, torch.ones_like(std))
    noise = torch.randn(values.shape, generator=generator, dtype=torch.float64).to(values.device)
    return values + _JITTER * values.abs().mean(dim=0).clamp(min=1) * noise


def _ranks(values: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted rows of ``values [P, N]`` and each entry's 0-based position in its sorted row (ties by order)."""
    ordered, order = values.sort(dim=1, stable=True)
    positions = torch.arange(values.shape[1], device=values.device).expand_as(order)
    return ordered, torch.empty_like(order).scatter_(1, order, positions)


def _adjacent_strip_positions(strip: Tensor, rank_y: Tensor, own_rank: Tensor, m: int, strips: int) -> Tensor:
    """Where each point's y would go ``[2, P, N]`` in the strip below (0) and above (1) its own.

    One sort for all points: each point joins the pair of strips (own, next) and (previous, own), ranked
    by y in the union; its rank in the union minus its rank ``own_rank`` in its own strip is its position
    in the other strip (ranks of y are distinct, so this counts the other strip's points below it). A
    missing strip (below the first, above the last) gives 0.
    """
    p, n = strip.shape
    device = strip.device
    sizes = torch.full((strips + 2,), m, device=device)
    sizes[0], sizes[-1], sizes[-2] = 0, 0, n - (strips - 1) * m  # no strip -1 or S; the last is short
    group_start = torch.cat([sizes.new_zeros(1), (sizes[:-1] + sizes[1:]).cumsum(0)])  # pair (s-1, s) at s
    row = torch.arange(p, device=device).unsqueeze(1)
    group = torch.cat([strip, strip + 1], dim=1)  # pair index of (previous, own) and of (own, next)
    keys = ((row * (strips + 1) + group) * n + rank_y.repeat(1, 2)).view(-1)
    order = keys.sort().indices
    union_rank = torch.empty_like(keys).scatter_(0, order, torch.arange(len(keys), device=device))
    union_rank = union_rank.view(p, 2 * n) - (row * 2 * n + group_start[group])
    return (union_rank - own_rank.repeat(1, 2)).view(p, 2, n).transpose(0, 1)


class _Strips:
    """The points of each row ``x, y [P, N]`` cut into strips of ``m`` consecutive points in x order, each
    strip sorted by y, laid out with ``pad`` slots of +inf before and after every strip and one all-pad
    strip before the first and after the last: a window of up to ``pad`` slots either side of any position
    in a strip (or a missing neighbour strip) reads +inf instead of another strip's points."""

    def __init__(
        self, x: Tensor, y: Tensor, k: int, pad: int, xs: Tensor, rank_x: Tensor, rank_y: Tensor
    ) -> None:
        p, n = x.shape
        device = x.device
        self.p, self.n, self.pad = p, n, pad
        self.m = m = min(n, max(k + 1, round((k * n) ** 0.5)))
        self.strips = strips = -(-n // m)
        self.region = m + 2 * pad
        self.row_size = (strips + 2) * self.region
        self.xs = xs.reshape(-1)
        self.strip = (rank_x // m).reshape(-1)  # [P * N] per point
        row = torch.arange(p, device=device).unsqueeze(1)
        # rank of each point's y inside its strip, from one sort of (row, strip, rank of y)
        key = (row * strips + rank_x // m) * n + rank_y
        key_sorted, order = key.view(-1).sort()
        slot = torch.empty_like(order).scatter_(0, order, torch.arange(p * n, device=device)).view(p, n)
        self.position = (slot - row * n - (rank_x // m) * m).reshape(-1)  # [P * N] rank in the strip
        self.adjacent = _adjacent_strip_positions(rank_x // m, rank_y, self.position.view(p, n), m, strips)
        self.adjacent = self.adjacent.reshape(2, -1)
        self.row_of = torch.arange(p * n, device=device) // n
        self.start_of_point = self.row_of * self.row_size + (self.strip + 1) * self.region + pad
        self.padded_x = torch.full((p * self.row_size,), float("inf"), dtype=x.dtype, device=device)
        self.padded_y = self.padded_x.clone()
        self.padded_x[self.start_of_point + self.position] = x.reshape(-1)
        self.padded_y[self.start_of_point + self.position] = y.reshape(-1)
        self.x, self.y = x.reshape(-1), y.reshape(-1)
        self.rank_y = rank_y.reshape(-1)
        self.key_sorted = key_sorted
        self.length = torch.full((strips + 2,), m, device=device)
        self.length[0], self.length[-1], self.length[-2] = 0, 0, n - (strips - 1) * m  # by strip + 1

    def window_starts(self, points: Tensor, reach: int) -> tuple[Tensor, Tensor]:
        """Strips searched ``[B, T]`` (own - reach .. own + reach, clamped to -1 .. S) and the padded index
        of the first slot at or above each point's y in each of them (the strip start for a missing one)."""
        own = self.strip[points]
        steps = torch.arange(-reach, reach + 1, device=points.device)
        target = (own.unsqueeze(1) + steps).clamp(-1, self.strips)
        if reach == 1:
            at = torch.stack([self.adjacent[0][points], self.position[points], self.adjacent[1][points]], 1)
        else:
            row = self.row_of[points].unsqueeze(1)
            real = target.clamp(0, self.strips - 1)
            keys = (row * self.strips + real) * self.n + self.rank_y[points].unsqueeze(1)
            at = torch.searchsorted(self.key_sorted, keys) - row * self.n - real * self.m
            at = torch.where((target >= 0) & (target < self.strips), at, torch.zeros_like(at))
        start = self.row_of[points].unsqueeze(1) * self.row_size + (target + 1) * self.region + self.pad
        return target, start + at

    def x_gaps(self, points: Tensor, reach: int) -> Tensor:
        """Smallest x-distance ``[B]`` from each point to a strip farther than ``reach`` (inf if none)."""
        own, qx = self.strip[points], self.x[points]
        row_start = self.row_of[points] * self.n
        left, right = own - reach, own + reach + 1
        inf = torch.full_like(qx, float("inf"))
        left_x = self.xs[(row_start + left * self.m - 1).clamp(min=0)]
        right_x = self.xs[(row_start + right * self.m).clamp(max=self.p * self.n - 1)]
        gap = torch.where(left > 0, qx - left_x, inf)
        return torch.minimum(gap, torch.where(right * self.m < self.n, right_x - qx, inf))


def _search(strips: _Strips, points: Tensor, reach: int, width: int, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """k-th neighbour distance ``[B]`` among the ``2 * width`` slots around y in ``2 * reach + 1`` strips,
    and whether the x-gap and the y-gap bounds fail to prove it exact (``[B]`` bool each)."""
    target, at = strips.window_starts(points, reach)
    inf = float("inf")
    if width <= strips.pad:  # the padded layout: no bounds to check, missing slots read +inf
        slots = at.unsqueeze(2) + torch.arange(-width, width, device=points.device)
        flat = slots.view(-1)
        x, y = strips.padded_x.index_select(0, flat), strips.padded_y.index_select(0, flat)
        dx = (x.view(slots.shape) - strips.x[points].view(-1, 1, 1)).abs()
        dy = (y.view(slots.shape) - strips.y[points].view(-1, 1, 1)).abs()
        distance = torch.maximum(dx, dy)
        distance[:, reach, width] = inf  # the point itself, at its own position in its own strip
        low, high = dy[:, :, 0], dy[:, :, -1]
    else:  # wider than the padding: mask slots outside each strip
        offsets = torch.arange(-width, width, device=points.device)
        position = at - (strips.row_of[points].unsqueeze(1) * strips.row_size + (target + 1) * strips.region)
        position = position - strips.pad  # rank in the strip of the first slot at or above y
        length = strips.length[target + 1].unsqueeze(2)
        index = position.unsqueeze(2) + offsets
        inside = (index >= 0) & (index < length)
        slots = (at.unsqueeze(2) + offsets).clamp(0, len(strips.padded_x) - 1)
        flat = slots.view(-1)
        x, y = strips.padded_x.index_select(0, flat), strips.padded_y.index_select(0, flat)
        dx = (x.view(slots.shape) - strips.x[points].view(-1, 1, 1)).abs()
        dy = (y.view(slots.shape) - strips.y[points].view(-1, 1, 1)).abs()
        self_slot = (offsets == 0).view(1, 1, -1) & (
            torch.arange(len(target[0]), device=points.device) == reach
        ).view(1, -1, 1)
        distance = torch.where(inside & ~self_slot, torch.maximum(dx, dy), torch.full_like(dx, inf))
        low = torch.where(
            inside[:, :, 0] & (index[:, :, 0] > 0), dy[:, :, 0], torch.full_like(dy[:, :, 0], inf)
        )
        high_ok = inside[:, :, -1] & (index[:, :, -1] < length[:, :, 0] - 1)
        high = torch.where(high_ok, dy[:, :, -1], torch.full_like(dy[:, :, -1], inf))
    eps = distance.flatten(1).topk(k, dim=1, largest=False).values[:, -1]
    y_gap = torch.minimum(low, high).min(dim=1).values
    return eps, eps > strips.x_gaps(points, reach), eps > y_gap


def _kth_neighbour_distance(
    x: Tensor, y: Tensor, k: int, xs: Tensor, rank_x: Tensor, rank_y: Tensor
) -> Tensor:
    """Max-norm distance ``[P, N]`` of each point ``(x, y)`` of a row to its k-th nearest other point.

    Exact, by a search that widens until it provably holds the neighbours. The points of a row are cut
    into strips of ``m ~ sqrt(k N)`` consecutive points in x order and kept sorted by y inside each strip
    (:class:`_Strips`). A point looks at the ``w`` points below and above its y in each of the
    ``2 r + 1`` strips around its own. The k-th smallest distance ``eps`` among them is the true one when
    every point left out is at least ``eps`` away: those of farther strips by their x-gap to the nearest
    outside strip edge, those of a searched strip by the y-gap to the window's end. Where the x-gap bound
    fails ``r`` doubles, where the y-gap bound fails ``w`` doubles, and the point searches again; with
    every strip whole nothing is left out. Independent coordinates need about ``3 * 2w`` candidates per
    point instead of the ``~sqrt(k N)`` of a search along x alone. ``xs, rank_x`` and ``rank_y`` are the
    sorted rows of ``x`` and the ranks of ``x`` and ``y`` (:func:`_ranks`).
    """
    p, n = x.shape
    first_width = 2 * k  # the padded first round: 3 strips x 12 slots
    strips = _Strips(x, y, k, first_width, xs, rank_x, rank_y)
    radius = torch.empty(p * n, dtype=x.dtype, device=x.device)
    queue = {(1, first_width): torch.arange(p * n, device=x.device)}
    while queue:
        (reach, width), pending = queue.popitem()
        for block in pending.split(max(1, _BLOCK // ((2 * reach + 1) * 2 * width))):
            eps, x_fail, y_fail = _search(strips, block, reach, width, k)
            done = ~(x_fail | y_fail)
            radius[block[done]] = eps[done]
            for grow_reach, grow_width in ((True, False), (False, True), (True, True)):
                chosen = (x_fail == grow_reach) & (y_fail == grow_width) & ~done
                if chosen.any():
                    state = (
                        min(2 * reach, strips.strips) if grow_reach else reach,
                        min(2 * width, strips.m) if grow_width else width,
                    )
                    queue[state] = (
                        torch.cat([queue[state], block[chosen]]) if state in queue else block[chosen]
                    )
    return radius.view(p, n)


@contextmanager
def one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run torch CPU ops on one intra-op thread inside the block, then restore the thread count.

    The KSG search is thousands of cache-sized ops and the other latent metrics are small ones: on the
    2-core development machine, shared with other jobs, two OpenMP threads per op made them 5-20x slower
    than one (their barriers wait on busy cores).
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _count_closer(sorted_values: Tensor, values: Tensor, radius: Tensor) -> Tensor:
    """Per row, how many entries ``v`` of ``sorted_values [P, N]`` have ``|v - values| < radius``.

    The comparisons are the float ones scikit-learn's KD-tree makes (``|v - u| <= nextafter(r, 0)``):
    ``searchsorted`` on ``values -/+ radius`` gives the boundaries up to rounding, and each is then moved
    until the exact test holds on its inside and fails on its outside (the test is monotone along a row).
    """
    n = sorted_values.shape[1]

    def at(index: Tensor) -> Tensor:
        return sorted_values.gather(1, index.clamp(0, n - 1))

    upper = torch.searchsorted(sorted_values, values + radius)  # first index with v - u >= r (approx.)
    lower = torch.searchsorted(sorted_values, values - radius, right=True)  # first with u - v < r (approx.)
    while True:
        grow = (upper < n) & (at(upper) - values < radius)
        shrink = (upper > 0) & (at(upper - 1) - values >= radius)
        if not (grow.any() or shrink.any()):
            break
        upper = upper + grow.long() - shrink.long()
    while True:
        grow = (lower > 0) & (values - at(lower - 1) < radius)
        shrink = (lower < n) & (values - at(lower) >= radius)
        if not (grow.any() or shrink.any()):
            break
        lower = lower - grow.long() + shrink.long()
    return upper - lower


def ksg_paired(x: Tensor, y: Tensor, k: int = DEFAULT_NEIGHBOURS) -> Tensor:
    """KSG mutual information ``[P]`` (nats, clipped at 0) of column ``p`` of ``x [N, P]`` with that of ``y``.

    The columns are used as given (see :func:`standardize_and_jitter` for scikit-learn's preprocessing);
    Kraskov et al. 2004, algorithm 1, as scikit-learn's ``_compute_mi_cc``.
    """
    x, y = x.double().T.contiguous(), y.double().T.contiguous()  # [P, N]
    n = x.shape[1]
    if x.shape != y.shape or n <= k:
        raise ValueError(
            f"need x and y of one shape [N, P] with N > k = {k}, got {list(x.shape)} {list(y.shape)}"
        )
    with one_cpu_thread(x.device):
        (xs, rank_x), (ys, rank_y) = _ranks(x), _ranks(y)
        radius = _kth_neighbour_distance(x, y, k, xs, rank_x, rank_y)
        n_x = (_count_closer(xs, x, radius) - 1).double()  # the point itself is at distance 0
        n_y = (_count_closer(ys, y, radius) - 1).double()
    digamma = torch.special.digamma
    constant = digamma(torch.tensor(float(n), dtype=torch.float64)) + digamma(
        torch.tensor(float(k), dtype=torch.float64)
    )
    mi = constant.to(x.device) - digamma(n_x + 1.0).mean(1) - digamma(n_y + 1.0).mean(1)
    return mi.clamp(min=0)


def ksg_mutual_information(
    latents: Tensor, attributes: Tensor, k: int = DEFAULT_NEIGHBOURS, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """AR-VAE's ``continuous_mutual_info`` ``[D, A]`` and ``continuous_entropy`` ``[A]`` (nats), vectorised.

    Latents and attributes are standardised and jittered once each (as one ``mutual_info_regression``
    call does per attribute); the entropy pairs each attribute with a second, independently jittered copy.
    """
    generator = torch.Generator().manual_seed(seed)
    z = standardize_and_jitter(latents, generator)
    a = standardize_and_jitter(attributes, generator)
    a_copy = standardize_and_jitter(attributes, generator)
    d, num_attributes = z.shape[1], a.shape[1]
    x = torch.cat([z.repeat_interleave(num_attributes, dim=1), a_copy], dim=1)
    y = torch.cat([a.repeat(1, d), a], dim=1)
    mi = ksg_paired(x, y, k)
    return mi[: d * num_attributes].view(d, num_attributes), mi[d * num_attributes :]


# ------------------------------------------------------------------ dispatch
def mutual_information_matrix(
    latents: Tensor, attributes: Tensor, protocol: Protocol = "ksg", bins: int = DEFAULT_BINS
) -> tuple[Tensor, Tensor]:
    """``MI [D, A]`` of latents ``[N, D]`` with attributes ``[N, A]`` and ``H [A]``, in nats, by ``protocol``.

    ``bins`` is used by the binned protocols only.
    """
    check_protocol(protocol)
    if protocol == "ksg":
        return ksg_mutual_information(latents, attributes)
    discretise = discretize if protocol == "quantile" else histogram_discretize
    a_bins = discretise(attributes, bins)
    return mutual_information(discretise(latents, bins), a_bins, bins), entropy(a_bins, bins)

"""Morpho-MNIST morphometrics (Castro et al. 2019) of batches of digit images, in vectorised torch.

``morpho_attributes(images)`` returns ``[B, 6]`` float32 in the fixed order of :data:`ATTRIBUTE_NAMES`:
thickness, slant, length, area, width, height (lengths in pixels at 28x28 scale, area in pixels^2,
slant in radians). It follows the released "original MNIST" morphometrics with scale s = 4:

1. Upscale 28 -> 112 with cubic interpolation (mirror boundary), clip to the input range, blur with a
   Gaussian of sigma 4/3 (symmetric boundary, truncated at 4 sigma), take ``floor(255 * value)``. All
   of it is linear but the clip, so it is a few matrix products over the whole chunk of images.
2. Binarise at ``min + 0.5 * (max - min)``; area = foreground pixels / s^2.
3. Medial axis: the exact Euclidean distance transform of the foreground, then pixels are visited in
   ascending (distance, cornerness) order and removed unless that changes the 8-connected topology of
   their 3x3 neighbourhood or they are an end point. Pixels of equal key in the same (row, col) parity
   class never neighbour each other, so each such group is removed in one parallel step: this is exactly
   the sequential algorithm with ties broken by parity class instead of at random.
   length = sum over 8-adjacent skeleton pairs of 1 or sqrt(2), / s; thickness = 2 * mean distance at
   skeleton pixels / s.
4. Image moments of the greyscale upscaled image: slant = arctan(-mu11 / mu02); width and height are the
   extents of the sheared (by mu11 / mu02 about the centroid row) horizontal and the vertical mass
   distributions between their 1% and 99% quantiles, / s.

Works on CPU and GPU, on uint8 images (0..255) and on float images in [0, 1] such as decoder outputs.
A blank image (max == min) gets NaN attributes.

Layout: a chunk of B upscaled images is held rows-major, ``[H, B, W]`` (row r of every image side by
side), and padded into one large binary image of H + 2 rows of B * (W + 2) pixels in which every digit
is framed by background; steps 2-3 work on the flat indices of its foreground pixels, so one image's
pixels never neighbour another's. On CPU, chunks are cache-sized and run on a thread pool.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

ATTRIBUTE_NAMES: tuple[str, ...] = ("thickness", "slant", "length", "area", "width", "height")
# attributes measured only where the data varies them, after the six in a batch's ``attributes``: the
# intensity of the causal Morpho-MNIST (:func:`genvae.data.perturb.median_intensity`, grey levels)
EXTRA_ATTRIBUTE_NAMES: tuple[str, ...] = ("intensity",)
ALL_ATTRIBUTE_NAMES: tuple[str, ...] = ATTRIBUTE_NAMES + EXTRA_ATTRIBUTE_NAMES  # columns of all_attributes
ALGORITHM_VERSION = "morpho-torch-1"  # part of the attribute cache key; bump when results change

Interpolation = Literal["catmull_rom", "bspline"]
SCALE = 4
BOUND_FRACTION = 0.02  # width/height between the 1% and 99% quantiles
_BLUR_BLOCK = 16  # output rows per block of the banded blur (11 taps: 26 inputs each)
CPU_CHUNK = 128  # images per chunk on CPU: fastest of 32-512 on the 2-core machine (t10k and dilated digits)
GPU_CHUNK = 4096  # images per chunk on GPU: bounds memory

# 3x3 neighbourhood offsets in row-major bit order: bit k of the pattern code is offset k
_OFFSETS = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)]
_RING = [offset for offset in _OFFSETS if offset != (0, 0)]  # the 8 neighbours; bit k of a ring code
# ring indices of the right, down-left, down and down-right neighbours: each 8-adjacent pair once
_FORWARD = [_RING.index(offset) for offset in ((0, 1), (1, -1), (1, 0), (1, 1))]
_REMOVED, _KEPT, _UNDECIDED = 0, 1, 2


# ------------------------------------------------------------------ linear upscaling operators
def _mirror(index: int, n: int) -> int:
    """Mirror (``d c b | a b c d | c b a``) boundary extension of an index."""
    period = 2 * (n - 1)
    index = abs(index) % period
    return period - index if index >= n else index


def _symmetric(index: int, n: int) -> int:
    """Half-sample symmetric (``b a | a b c d | d c``) boundary extension of an index."""
    period = 2 * n
    index = index % period
    return period - 1 - index if index >= n else index


def _catmull_rom(t: float) -> list[float]:
    """Weights of the taps at offsets -1, 0, 1, 2 for fractional position ``t`` (Keys a = -0.5)."""
    return [
        0.5 * (-t + 2 * t**2 - t**3),
        1 + 0.5 * (-5 * t**2 + 3 * t**3),
        0.5 * (t + 4 * t**2 - 3 * t**3),
        0.5 * (-(t**2) + t**3),
    ]


def _bspline(t: float) -> list[float]:
    """Cubic B-spline basis values at offsets -1, 0, 1, 2 for fractional position ``t``."""

    def beta(x: float) -> float:
        x = abs(x)
        return 2 / 3 - x**2 + x**3 / 2 if x < 1 else ((2 - x) ** 3 / 6 if x < 2 else 0.0)

    return [beta(t + 1), beta(t), beta(t - 1), beta(t - 2)]


def _resample_operator(n_in: int, n_out: int, interpolation: Interpolation) -> Tensor:
    """float64 ``[n_out, n_in]``: cubic resampling with pixel centres aligned, as ``skimage.transform.resize``.

    Output pixel o reads input position ``(o + 0.5) * n_in / n_out - 0.5`` (mirror boundary); the B-spline
    interpolates the spline coefficients of the input (its prefilter), Catmull-Rom the samples.
    """
    operator = torch.zeros(n_out, n_in, dtype=torch.float64)
    weights_fn = _catmull_rom if interpolation == "catmull_rom" else _bspline
    for o in range(n_out):
        x = (o + 0.5) * n_in / n_out - 0.5
        i0 = math.floor(x)
        for k, w in zip(range(i0 - 1, i0 + 3), weights_fn(x - i0), strict=True):
            operator[o, _mirror(k, n_in)] += w
    if interpolation == "bspline":  # interpolate the spline coefficients, not the samples
        sampled = torch.zeros(n_in, n_in, dtype=torch.float64)
        for i in range(n_in):
            for k, w in ((i - 1, 1 / 6), (i, 4 / 6), (i + 1, 1 / 6)):
                sampled[i, _mirror(k, n_in)] += w
        operator = operator @ torch.linalg.inv(sampled)
    return operator


def _gaussian_operator(n: int, sigma: float) -> Tensor:
    """float64 ``[n, n]``: Gaussian blur (half-sample symmetric boundary, truncated at 4 sigma)."""
    radius = int(4.0 * sigma + 0.5)
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / sigma) ** 2)
    taps /= taps.sum()
    blur = torch.zeros(n, n, dtype=torch.float64)
    for o in range(n):
        for k, w in zip(range(o - radius, o + radius + 1), taps.tolist(), strict=True):
            blur[o, _symmetric(k, n)] += w
    return blur


@functools.lru_cache(maxsize=8)
def upscale_operators(size: int, scale: int, interpolation: Interpolation) -> tuple[Tensor, Tensor]:
    """``(U, G)`` float64: cubic upscaling ``[size*scale, size]`` and Gaussian blur ``[size*scale]^2``.

    Together, ``skimage.transform.pyramid_expand(x, upscale=scale, order=3)`` (sigma ``2 * scale / 6``).
    """
    out = size * scale
    return _resample_operator(size, out, interpolation), _gaussian_operator(out, 2 * scale / 6)


@functools.lru_cache(maxsize=8)
def downscale_operator(size: int, scale: int, interpolation: Interpolation) -> Tensor:
    """float64 ``[size, size*scale]``: ``skimage.transform.pyramid_reduce(x, downscale=scale, order=3)``.

    The Gaussian blur of sigma ``2 * scale / 6`` at high resolution, then cubic resampling to ``size``
    (Morpho-MNIST's ``ImageMorphology.downscale``, before its ``uint8`` cast); both linear, so one matrix.
    """
    big = size * scale
    return _resample_operator(big, size, interpolation) @ _gaussian_operator(big, 2 * scale / 6)


@functools.lru_cache(maxsize=8)
def _blur_blocks(size: int, scale: int, block: int) -> tuple[tuple[int, int, int, int, Tensor], ...]:
    """The banded blur operator cut into row blocks: ``(out_lo, out_hi, in_lo, in_hi, G[out, in])``."""
    _, blur = upscale_operators(size, scale, "catmull_rom")
    blocks = []
    for lo in range(0, len(blur), block):
        hi = min(lo + block, len(blur))
        support = torch.nonzero(blur[lo:hi].abs().sum(0)).squeeze(1)
        in_lo, in_hi = int(support[0]), int(support[-1]) + 1
        blocks.append((lo, hi, in_lo, in_hi, blur[lo:hi, in_lo:in_hi].contiguous()))
    return tuple(blocks)


@functools.lru_cache(maxsize=16)
def _device_operators(
    size: int, scale: int, interpolation: Interpolation, device: torch.device
) -> tuple[Tensor, tuple[tuple[int, int, int, int, Tensor], ...]]:
    """float32 on ``device``: the upscaling operator and the blocks of the banded blur."""
    upscale, blur = upscale_operators(size, scale, interpolation)
    blocks = tuple(
        (lo, hi, in_lo, in_hi, g.to(device=device, dtype=torch.float32))
        for lo, hi, in_lo, in_hi, g in _blur_blocks(size, scale, _BLUR_BLOCK)
    )
    return upscale.to(device=device, dtype=torch.float32), blocks


def upscale_images(
    images: Tensor, scale: int = SCALE, interpolation: Interpolation = "catmull_rom"
) -> Tensor:
    """``floor(255 * blur(clip(cubic_upscale(x))))`` of images in [0, 1], ``[B, H, W] -> [B, sH, sW]``.

    Returns a view of :func:`_upscale_rows_major`'s ``[sH, B, sW]`` result.
    """
    return _upscale_rows_major(images, scale, interpolation).transpose(0, 1)


def _upscale_rows_major(images: Tensor, scale: int, interpolation: Interpolation) -> Tensor:
    """:func:`upscale_images` in the layout ``[sH, B, sW]``: row r of every image, side by side.

    Separable and batched over the images as a few large matrix products: the row operators multiply
    ``[rows, images * columns]`` from the left (the banded blur one block of output rows at a time), the
    column operators multiply ``[rows * images, columns]`` from the right.
    """
    b, h, w = images.shape
    if h != w:
        raise ValueError(f"upscale_images expects square images, got {h}x{w}")
    n = h * scale
    up, blur_blocks = _device_operators(w, scale, interpolation, images.device)
    wide = images.transpose(0, 1).reshape(h * b, w) @ up.T  # [H * B, sW]
    resized = (up @ wide.view(h, b * n)).view(n, b, n)  # [sH, B, sW]
    low, high = images.amin(dim=(1, 2)), images.amax(dim=(1, 2))
    if bool((low == low[0]).all() and (high == high[0]).all()):  # the usual case: one range for all
        resized = torch.clamp_(resized, float(low[0]), float(high[0])).view(n, b * n)
    else:
        resized = torch.clamp_(resized, low.view(1, b, 1), high.view(1, b, 1)).view(n, b * n)
    blurred = torch.empty_like(resized)
    for lo, hi, in_lo, in_hi, g in blur_blocks:  # along rows
        torch.mm(g, resized[in_lo:in_hi], out=blurred[lo:hi])
    # along columns, one block of output columns at a time, times 255; + 1e-4 so that values that are
    # integers up to rounding floor to them
    rows = blurred.view(n * b, n)
    scaled = torch.cat([rows[:, in_lo:in_hi] @ (255.0 * g.T) for _, _, in_lo, in_hi, g in blur_blocks], dim=1)
    return scaled.add_(1e-4).floor_().view(n, b, n)


# ------------------------------------------------------------------ medial axis lookup tables
def _count_components(pattern: list[list[bool]]) -> int:
    """Number of 8-connected foreground components in a 3x3 pattern."""
    seen: set[tuple[int, int]] = set()
    count = 0
    for r in range(3):
        for c in range(3):
            if pattern[r][c] and (r, c) not in seen:
                count += 1
                stack = [(r, c)]
                seen.add((r, c))
                while stack:
                    y, x = stack.pop()
                    for dy, dx in _OFFSETS:
                        ny, nx = y + dy, x + dx
                        if 0 <= ny < 3 and 0 <= nx < 3 and pattern[ny][nx] and (ny, nx) not in seen:
                            seen.add((ny, nx))
                            stack.append((ny, nx))
    return count


@functools.lru_cache(maxsize=1)
def _keep_table() -> Tensor:
    """For each 3x3 code: keep the centre pixel (it is a topological junction or an end point)."""
    keep = torch.zeros(512, dtype=torch.bool)
    for code in range(512):
        pattern = [[bool(code >> (3 * r + c) & 1) for c in range(3)] for r in range(3)]
        if not pattern[1][1]:
            continue
        without = [row[:] for row in pattern]
        without[1][1] = False
        changes_topology = _count_components(pattern) != _count_components(without)
        keep[code] = changes_topology or bin(code).count("1") < 3
    return keep


@functools.lru_cache(maxsize=1)
def _fate_table() -> Tensor:
    """int8 ``[256 * 256]``: fate of a pixel whose present neighbours are ``P`` plus a subset of ``U``.

    Indexed by ``P * 256 + U`` (disjoint ring codes): removed (0) or kept (1) if the keep table says so
    for every subset of the undecided neighbours ``U``, else undecided (2).
    """
    ring_to_code = torch.tensor([1 << (k if k < 4 else k + 1) for k in range(8)])
    codes = torch.arange(256)
    full_code = 16 + ((codes.unsqueeze(1) >> torch.arange(8)) & 1).mul(ring_to_code).sum(1)
    keep = _keep_table()[full_code]  # by ring code of the present neighbours, centre present
    any_keep = torch.zeros(256, 256, dtype=torch.bool)  # [P, U]
    all_keep = torch.zeros(256, 256, dtype=torch.bool)
    any_keep[:, 0] = all_keep[:, 0] = keep
    for undecided in range(1, 256):
        bit = undecided & -undecided  # subsets without this neighbour, and with it (present)
        rest = undecided ^ bit
        any_keep[:, undecided] = any_keep[:, rest] | any_keep[codes | bit, rest]
        all_keep[:, undecided] = all_keep[:, rest] & all_keep[codes | bit, rest]
    fate = torch.where(all_keep, _KEPT, torch.where(any_keep, _UNDECIDED, _REMOVED))
    return fate.to(torch.int8).flatten()


# ------------------------------------------------------------------ measurement
def _interp(q: float, xp: Tensor) -> Tensor:
    """Batched ``np.interp(q, xp[b], arange(n))`` for non-decreasing rows ``xp`` ``[B, n]``."""
    n = xp.shape[1]
    right = torch.searchsorted(xp, torch.full((len(xp), 1), q, dtype=xp.dtype, device=xp.device), right=True)
    j = (right - 1).clamp(0, n - 2)
    x0, x1 = xp.gather(1, j), xp.gather(1, j + 1)
    frac = ((q - x0) / (x1 - x0).clamp_min(1e-12)).clamp(0.0, 1.0)
    value = j.to(xp.dtype) + frac
    value = torch.where(right == 0, torch.zeros_like(value), value)
    return torch.where(right >= n, torch.full_like(value, n - 1), value).squeeze(1)


def _shape_measures(hires: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Slant, width and height (at hires scale) from the moments of greyscale images ``[H, B, W]``.

    ``hires`` holds integers 0..255 (rows major, as :func:`_upscale_rows_major` returns them), so the
    float32 sums below are exact; the moments are float64.
    """
    h, b, w = hires.shape
    device = hires.device
    x32 = torch.arange(w, dtype=torch.float32, device=device)
    x = x32.double()
    y = torch.arange(h, dtype=torch.float64, device=device)
    row_mass = hires.sum(2).T.double()  # [B, H]
    col_mass = hires.sum(0).double()  # [B, W]
    row_x = (hires @ x32).T.double()  # [B, H]: sum over x of x * img
    m00 = row_mass.sum(1).clamp_min(1e-12)  # blank images: NaN-masked by the caller
    mx, my = (col_mass @ x) / m00, (row_mass @ y) / m00
    mu02 = (row_mass @ y.square()) / m00 - my.square()
    mu11 = (row_x @ y) / m00 - mx * my
    shear = torch.nan_to_num(mu11 / mu02, nan=0.0, posinf=0.0, neginf=0.0)
    slant = torch.atan(-shear)

    # horizontal cdf at t: mass with x + 0.5 < t + shear * (y - y_mid), i.e. x <= t - k_y where
    # k_y = floor(0.5 - shear * (y - y_mid)) + 1 is an integer shift per row
    k = (torch.floor(0.5 - shear.unsqueeze(1) * (y - my.unsqueeze(1))) + 1).to(torch.int32)  # [B, H]
    # so hcdf[t] = mass of the pixels whose shifted column x + k_y is <= t: a histogram of the shifted
    # columns (those left of 0 in bin 0, those right of the image in an extra bin W), then a cumsum
    columns = torch.arange(w, dtype=torch.int32, device=device)
    shifted = (columns + k.T.contiguous().unsqueeze(2)).clamp_(0, w)  # [H, B, W]
    shifted += torch.arange(0, b * (w + 1), w + 1, dtype=torch.int32, device=device).view(1, b, 1)
    histogram = torch.zeros(b * (w + 1), dtype=hires.dtype, device=device)
    histogram.index_add_(0, shifted.view(-1), hires.reshape(-1))
    hcdf = histogram.view(b, w + 1)[:, :w].cumsum(1).double() / m00.unsqueeze(1)
    vcdf = torch.cat([torch.zeros_like(row_mass[:, :1]), row_mass.cumsum(1)[:, :-1]], 1) / m00.unsqueeze(1)
    half = BOUND_FRACTION / 2
    width = _interp(1 - half, hcdf) - _interp(half, hcdf)
    height = _interp(1 - half, vcdf) - _interp(half, vcdf)
    return slant, width, height


def _take(values: Tensor, index: Tensor) -> Tensor:
    """``values[index]`` for a 1-D ``values`` and an index of any shape (index_select: faster on CPU)."""
    return values.index_select(0, index.flatten()).view(index.shape)


def _row_distance(fg: Tensor) -> Tensor:
    """Distance along its row from each foreground pixel to the nearest background pixel.

    ``fg`` are the sorted flat indices of foreground pixels of zero-bordered images, so a horizontal run of
    foreground pixels is a run of consecutive indices and never wraps to the next row.
    """
    n = len(fg)
    starts = torch.ones(n, dtype=torch.bool, device=fg.device)
    starts[1:] = fg[1:] != fg[:-1] + 1
    run = torch.cumsum(starts, 0, dtype=torch.int32) - 1
    start_pos = torch.nonzero(starts).squeeze(1).to(torch.int32)
    run_end = torch.cat([start_pos[1:], start_pos.new_full((1,), n)])
    position = torch.arange(n, dtype=torch.int32, device=fg.device)
    return torch.minimum(position - _take(start_pos, run) + 1, _take(run_end, run) - position)


@functools.lru_cache(maxsize=16)
def _ring_offsets(row_stride: int, device: torch.device) -> Tensor:
    """int32 ``[8]``: flat index offsets of the 8 neighbours (order of :data:`_RING`)."""
    return torch.tensor([dr * row_stride + dc for dr, dc in _RING], dtype=torch.int32, device=device)


def _ring_neighbours(fg: Tensor, size: int, row_stride: int) -> Tensor:
    """``[N, 8]`` int32: index into ``fg`` of each 8-neighbour (order of :data:`_RING`), N if background.

    ``fg`` are flat indices into an image of ``size`` pixels, rows ``row_stride`` apart, framed by
    background: never on the frame, so every neighbour's flat index is in range.
    """
    n = len(fg)
    rank = torch.full((size,), n, dtype=torch.int32, device=fg.device)
    rank.index_copy_(0, fg, torch.arange(n, dtype=torch.int32, device=fg.device))
    return _take(rank, fg.to(torch.int32).unsqueeze(1) + _ring_offsets(row_stride, fg.device))


def _squared_distance(row_dist: Tensor, fg: Tensor, size: int, row_stride: int) -> Tensor:
    """Exact squared Euclidean distance to the background: min over s of s^2 + g(row +- s)^2.

    ``row_dist`` is g at the foreground pixels ``fg`` (flat indices into an image of ``size`` pixels, rows
    ``row_stride`` apart, framed by background); g^2 is spread on that image (0 on the background) and
    read s rows up and down, for growing s, as long as s^2 can still beat a pixel's best value. The frame
    keeps every read in range: a pixel r rows below the top has best <= r^2 once s reaches r.
    """
    best = row_dist.square()
    g2 = best.new_zeros(size).index_copy_(0, fg, best)
    active = torch.nonzero(best > 1).squeeze(1)
    position = fg.index_select(0, active).to(torch.int32)
    current = best.index_select(0, active)
    s = 1
    while len(active):
        shift = s * row_stride
        nearest = torch.minimum(_take(g2, position - shift), _take(g2, position + shift))
        current = torch.minimum(current, nearest + s * s)
        best.index_copy_(0, active, current)
        s += 1
        going_on = torch.nonzero(current > s * s).squeeze(1)
        active, current = active.index_select(0, going_on), current.index_select(0, going_on)
        position = position.index_select(0, going_on)
    return best


_LOW_BITS = 0x0101010101010101  # bit 0 of each of 8 bytes
_GATHER_BITS = 0x0102040810204080  # times a word of 0/1 bytes: byte k lands on bit 56 + k, no carries


def _byte_word(flags: Tensor) -> Tensor:
    """``[N, 8]`` bool or uint8 0/1 -> ``[N]`` int64 words whose byte k is ``flags[:, k]``."""
    return flags.contiguous().view(torch.uint8).view(torch.int64).squeeze(1)


def _pack_bits(word: Tensor) -> Tensor:
    """int64 words of 0/1 bytes -> int64 8-bit codes with bit k = byte k."""
    return ((word * _GATHER_BITS) >> 56) & 0xFF


def _medial_axis(fg: Tensor, d2: Tensor, neighbours: Tensor, row_stride: int) -> Tensor:
    """Which foreground pixels are on the medial axis (bool ``[N]``).

    The sequential algorithm visits pixels by ascending key (distance, cornerness, parity class) and keeps
    a pixel iff the keep table says so for its neighbourhood at that moment: the neighbours with a larger
    key (not yet visited, so present) and the smaller-key neighbours that were kept. So a pixel's fate is
    decided once the fates of its smaller-key neighbours are known well enough: :func:`_fate_table` gives
    it from the neighbours known to be present and those still undecided, and the undecided pixels are
    re-examined until none is left. Every round decides at least the smallest undecided pixel of each
    image, and in practice halves their number. The result is exactly that of the sequential algorithm.

    Neighbourhood flags travel as int64 words of eight 0/1 bytes (one per ring neighbour), so masking
    them is one ``&`` and packing them into a table index one multiply (:func:`_pack_bits`).
    """
    n = len(fg)
    present = _byte_word(neighbours < n)
    background_count = 8 - (((present * _LOW_BITS) >> 56) & 0xFF)  # cornerness: bytes summed in the top one
    fg32 = fg.to(torch.int32)
    parity = (fg32 // row_stride % 2) * 2 + fg32 % 2  # row_stride is even: fg % 2 is the column parity
    key = (d2 * 10 + background_count.to(torch.int32)) * 4 + parity  # distinct between 8-neighbours
    neighbour_key = _take(torch.cat([key, key.new_full((1,), torch.iinfo(torch.int32).max)]), neighbours)
    smaller = _byte_word(neighbour_key < key.unsqueeze(1))  # the background is never smaller
    larger_code = _pack_bits(present ^ smaller) * 256  # larger neighbours: present whatever happens
    table = _fate_table().to(fg.device)
    fate = torch.cat([_take(table, larger_code + _pack_bits(smaller)), table.new_zeros(1)])  # fate[n]: bg
    pending = torch.nonzero(fate == _UNDECIDED).squeeze(1)
    # the pending pixels' neighbours and codes, compacted with them round after round
    around_index = neighbours.index_select(0, pending)
    smaller_around, larger_code = smaller.index_select(0, pending), larger_code.index_select(0, pending)
    while len(pending):
        around = _byte_word(_take(fate, around_index))  # bytes 0, 1 or 2
        kept = _pack_bits(around & smaller_around)
        undecided = _pack_bits((around >> 1) & smaller_around)
        decided = _take(table, larger_code + kept * 256 + undecided)
        fate.index_copy_(0, pending, decided)
        still = torch.nonzero(decided == _UNDECIDED).squeeze(1)
        pending, around_index = pending.index_select(0, still), around_index.index_select(0, still)
        smaller_around, larger_code = (
            smaller_around.index_select(0, still),
            larger_code.index_select(0, still),
        )
    return fate[:n] == _KEPT


def map_chunks(fn: Callable[..., Tensor], *tensors: Tensor, chunk_size: int | None = None) -> Tensor:
    """``torch.cat([fn(*chunk) for chunk in zip(*(t.split(chunk_size) for t in tensors))])``, on CPU threads.

    The tensors are split along dim 0 (same length). ``chunk_size`` defaults to :data:`CPU_CHUNK` on CPU and
    :data:`GPU_CHUNK` on GPU. On CPU the chunks are sized to stay in cache and run concurrently on
    ``torch.get_num_threads()`` threads, each with one intra-op thread: most of the work in this module and
    in :mod:`genvae.data.perturb` is gathers and short element-wise passes that torch does not spread over
    cores by itself.
    """
    on_cpu = tensors[0].device.type == "cpu"
    chunk_size = chunk_size or (CPU_CHUNK if on_cpu else GPU_CHUNK)
    chunks = list(zip(*(t.split(chunk_size) for t in tensors), strict=True))
    if not on_cpu:
        return torch.cat([fn(*chunk) for chunk in chunks])
    workers = min(torch.get_num_threads(), len(chunks))
    intra_op_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # also for one chunk: its many short passes lose to thread hand-offs
    try:
        if workers == 1:
            return torch.cat([fn(*chunk) for chunk in chunks])
        with ThreadPoolExecutor(workers, thread_name_prefix="morpho") as pool:
            return torch.cat(list(pool.map(lambda chunk: fn(*chunk), chunks)))
    finally:
        torch.set_num_threads(intra_op_threads)


def morpho_columns(attributes: Tensor) -> Tensor:
    """The :data:`ATTRIBUTE_NAMES` columns ``[N, 6]`` of a batch's attributes, which may carry extra
    columns after them (:data:`EXTRA_ATTRIBUTE_NAMES`)."""
    return attributes[:, : len(ATTRIBUTE_NAMES)]


def single_channel(images: Tensor, caller: str) -> Tensor:
    """``[B, H, W]`` view of ``[B, H, W]`` or ``[B, 1, H, W]`` images; ValueError otherwise."""
    if images.dim() == 4:
        if images.shape[1] != 1:
            raise ValueError(f"{caller} expects single-channel images, got shape {list(images.shape)}")
        images = images[:, 0]
    if images.dim() != 3:
        raise ValueError(f"{caller} expects [B, H, W] or [B, 1, H, W], got {list(images.shape)}")
    return images


def _grey_levels(images: Tensor) -> Tensor:
    flat = single_channel(images, "intensity")
    return flat.double() if flat.dtype == torch.uint8 else 255.0 * flat.double().clamp(0.0, 1.0)


def median_intensity(images: Tensor) -> Tensor:
    """Median grey level (0..255) of the pixels at or above half of each image's range, float64 ``[N]``.

    DeepSCM's ``get_intensity`` (``create_synth_thickness_intensity_data.py``; ``np.median``: the mean of the
    two middle values for an even count): the intensity of the causal Morpho-MNIST dataset. uint8 images are
    read as grey levels, float images as 255 * x.
    """
    grey = _grey_levels(images).flatten(1)
    if len(grey) == 0:
        return grey.new_zeros(0)
    low, high = grey.amin(1, keepdim=True), grey.amax(1, keepdim=True)
    mask = grey >= low + 0.5 * (high - low)
    ordered = grey.masked_fill(~mask, math.inf).sort(1).values
    count = mask.sum(1, keepdim=True)
    return 0.5 * (ordered.gather(1, (count - 1) // 2) + ordered.gather(1, count // 2)).squeeze(1)


def all_attributes(images: Tensor) -> Tensor:
    """``[B, 7]``: :func:`morpho_attributes` and :func:`median_intensity` (order ``ATTRIBUTE_NAMES +
    EXTRA_ATTRIBUTE_NAMES``), for consumers that measure any attribute a model may be tied to."""
    six = morpho_attributes(images)
    return torch.cat([six, median_intensity(images).to(six).unsqueeze(1)], dim=1)


def morpho_attributes(
    images: Tensor, interpolation: Interpolation = "catmull_rom", chunk_size: int | None = None
) -> Tensor:
    """Morpho-MNIST attributes ``[B, 6]`` (order :data:`ATTRIBUTE_NAMES`) of ``[B, (1,) H, W]`` images.

    uint8 images are read as 0..255, float images as [0, 1]. Runs on the images' device in chunks of
    ``chunk_size`` images (default :data:`CPU_CHUNK` on CPU, :data:`GPU_CHUNK` on GPU), concurrently on CPU
    (:func:`map_chunks`).
    """
    images = single_channel(images, "morpho_attributes")
    if len(images) == 0:
        return torch.zeros(0, len(ATTRIBUTE_NAMES), device=images.device)
    return map_chunks(lambda chunk: _attributes_of_chunk(chunk, interpolation), images, chunk_size=chunk_size)


def unit_range(images: Tensor) -> Tensor:
    """float32 images in [0, 1]: uint8 read as 0..255, float clamped."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float().clamp(0.0, 1.0)


@dataclass
class HiresMorphology:
    """Morpho-MNIST's ``ImageMorphology`` of a chunk of B images, at high resolution ``scale``.

    Images are held rows-major (``[H, B, W]``, :func:`upscale_images`'s layout); the foreground pixels are
    flat indices into the padded layout ``[H + 2, B, W + 2]`` in which every image is framed by background.
    """

    hires: Tensor  # [H, B, W] float: floor(255 * upscaled image), integers 0..255
    binary: Tensor  # [H, B, W] bool: hires >= low + 0.5 * (high - low)
    low: Tensor  # [B] minimum of hires
    high: Tensor  # [B] maximum of hires
    fg: Tensor  # [N] int64 flat indices of the foreground in the padded layout
    neighbours: Tensor  # [N, 8] int32 index into fg of each 8-neighbour, N if background
    d2: Tensor  # [N] int32 squared Euclidean distance of each foreground pixel to the background
    on_skeleton: Tensor  # [N] bool: on the medial axis
    scale: int

    @property
    def image_width(self) -> int:
        return self.binary.shape[2] + 2

    @property
    def row_stride(self) -> int:
        return self.binary.shape[1] * self.image_width

    def image_of(self, flat: Tensor) -> Tensor:
        """Image index of padded-layout flat indices."""
        return flat % self.row_stride // self.image_width

    def row_col(self, flat: Tensor) -> tuple[Tensor, Tensor]:
        """Row and column (in the unpadded ``H x W`` image) of padded-layout flat indices."""
        return flat // self.row_stride - 1, flat % self.row_stride % self.image_width - 1

    def mean_thickness(self) -> Tensor:
        """``[B]`` 2 * mean distance at skeleton pixels / scale, in pixels of the input (NaN when blank)."""
        skeleton = torch.nonzero(self.on_skeleton).squeeze(1)
        image_of = self.image_of(self.fg.index_select(0, skeleton))
        b = self.binary.shape[1]
        skeleton_distance = self.d2.index_select(0, skeleton).float().sqrt()
        thick_sum = torch.zeros(b, device=self.fg.device).index_add_(0, image_of, skeleton_distance)
        skel_count = torch.bincount(image_of, minlength=b).float()
        return 2.0 * thick_sum / skel_count / float(self.scale)


def hires_morphology(
    images: Tensor, scale: int = SCALE, interpolation: Interpolation = "catmull_rom"
) -> HiresMorphology:
    """:class:`HiresMorphology` of ``[B, H, W]`` float images in [0, 1] (one chunk, on their device)."""
    hires = _upscale_rows_major(images, scale, interpolation)  # [H, B, W]
    h, b, w = hires.shape
    low = hires.amin(dim=(0, 2))
    high = hires.amax(dim=(0, 2))
    binary = hires >= (low + 0.5 * (high - low)).view(1, b, 1)
    # one large image: the rows of the images side by side, each framed by background
    padded = torch.nn.functional.pad(binary, (1, 1, 0, 0, 1, 1)).flatten()
    row_stride = b * (w + 2)
    fg = torch.nonzero(padded).squeeze(1)
    neighbours = _ring_neighbours(fg, len(padded), row_stride)
    d2 = _squared_distance(_row_distance(fg), fg, len(padded), row_stride)
    on_skeleton = _medial_axis(fg, d2, neighbours, row_stride)
    return HiresMorphology(hires, binary, low, high, fg, neighbours, d2, on_skeleton, scale)


def _attributes_of_chunk(images: Tensor, interpolation: Interpolation) -> Tensor:
    """:func:`morpho_attributes` of one chunk ``[B, H, W]``, all in one pass."""
    morph = hires_morphology(unit_range(images), SCALE, interpolation)
    b = morph.binary.shape[1]
    slant, width, height = _shape_measures(morph.hires)
    area = morph.binary.view(torch.uint8).sum(2, dtype=torch.int32).sum(0).float()

    fg, on_skeleton = morph.fg, morph.on_skeleton
    skeleton = torch.nonzero(on_skeleton).squeeze(1)
    image_of = morph.image_of(fg.index_select(0, skeleton))
    sqrt2 = math.sqrt(2.0)
    weights = torch.tensor([1.0, sqrt2, 1.0, sqrt2], device=fg.device)  # steps of the _FORWARD links
    links = morph.neighbours.index_select(0, skeleton).index_select(
        1, torch.tensor(_FORWARD, device=fg.device)
    )
    linked = _take(torch.cat([on_skeleton, on_skeleton.new_zeros(1)]), links)
    length = torch.zeros(b, device=fg.device).index_add_(0, image_of, linked.float() @ weights)
    thickness = morph.mean_thickness()

    s = float(SCALE)
    result = torch.stack(
        [thickness, slant.float(), length / s, area / s**2, width.float() / s, height.float() / s], dim=1
    )
    blank = morph.high == morph.low
    return result.masked_fill(blank.unsqueeze(1), float("nan"))

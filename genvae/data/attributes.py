"""Morpho-MNIST morphometrics (Castro et al. 2019) of batches of digit images, in vectorised torch.

``morpho_attributes(images)`` returns ``[B, 6]`` float32 in the fixed order of :data:`ATTRIBUTE_NAMES`:
thickness, slant, length, area, width, height (lengths in pixels at 28x28 scale, area in pixels^2,
slant in radians). It follows the released "original MNIST" morphometrics with scale s = 4:

1. Upscale 28 -> 112 with cubic interpolation (mirror boundary), clip to the input range, blur with a
   Gaussian of sigma 4/3 (symmetric boundary, truncated at 4 sigma), take ``floor(255 * value)``. All
   of it is linear but the clip, so it is four small matrix products per image.
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
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch
from torch import Tensor

ATTRIBUTE_NAMES: tuple[str, ...] = ("thickness", "slant", "length", "area", "width", "height")
ALGORITHM_VERSION = "morpho-torch-1"  # part of the attribute cache key; bump when results change

Interpolation = Literal["catmull_rom", "bspline"]
SCALE = 4
BOUND_FRACTION = 0.02  # width/height between the 1% and 99% quantiles

# 3x3 neighbourhood offsets in row-major bit order: bit k of the pattern code is offset k
_OFFSETS = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)]


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


@functools.lru_cache(maxsize=8)
def upscale_operators(size: int, scale: int, interpolation: Interpolation) -> tuple[Tensor, Tensor]:
    """``(U, G)`` float64: cubic upscaling ``[size*scale, size]`` and Gaussian blur ``[size*scale]^2``."""
    out = size * scale
    upscale = torch.zeros(out, size, dtype=torch.float64)
    weights_fn = _catmull_rom if interpolation == "catmull_rom" else _bspline
    for o in range(out):
        x = (o + 0.5) / scale - 0.5  # pixel centres aligned, as skimage.transform.resize
        i0 = math.floor(x)
        for k, w in zip(range(i0 - 1, i0 + 3), weights_fn(x - i0), strict=True):
            upscale[o, _mirror(k, size)] += w
    if interpolation == "bspline":  # interpolate the spline coefficients, not the samples
        sampled = torch.zeros(size, size, dtype=torch.float64)
        for i in range(size):
            for k, w in ((i - 1, 1 / 6), (i, 4 / 6), (i + 1, 1 / 6)):
                sampled[i, _mirror(k, size)] += w
        upscale = upscale @ torch.linalg.inv(sampled)
    sigma = 2 * scale / 6
    radius = int(4.0 * sigma + 0.5)
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / sigma) ** 2)
    taps /= taps.sum()
    blur = torch.zeros(out, out, dtype=torch.float64)
    for o in range(out):
        for k, w in zip(range(o - radius, o + radius + 1), taps.tolist(), strict=True):
            blur[o, _symmetric(k, out)] += w
    return upscale, blur


def upscale_images(
    images: Tensor, scale: int = SCALE, interpolation: Interpolation = "catmull_rom"
) -> Tensor:
    """``floor(255 * blur(clip(cubic_upscale(x))))`` of images in [0, 1], ``[B, H, W] -> [B, sH, sW]``."""
    up, blur = (
        m.to(device=images.device, dtype=torch.float32)
        for m in upscale_operators(images.shape[-1], scale, interpolation)
    )
    low = images.amin(dim=(1, 2), keepdim=True)
    high = images.amax(dim=(1, 2), keepdim=True)
    resized = torch.maximum(torch.minimum(up @ images @ up.T, high), low)
    return torch.floor(255.0 * (blur @ resized @ blur.T) + 1e-4).clamp_(0, 255)


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
    """Slant, width and height (at hires scale) from the moments of greyscale images ``[B, H, W]``.

    ``hires`` holds integers 0..255, so the float32 sums below are exact; the moments are float64.
    """
    b, h, w = hires.shape
    device = hires.device
    x32 = torch.arange(w, dtype=torch.float32, device=device)
    x = x32.double()
    y = torch.arange(h, dtype=torch.float64, device=device)
    row_mass = hires.sum(2).double()  # [B, H]
    col_mass = hires.sum(1).double()  # [B, W]
    row_x = (hires @ x32).double()  # [B, H]: sum over x of x * img
    m00 = row_mass.sum(1).clamp_min(1e-12)  # blank images: NaN-masked by the caller
    mx, my = (col_mass @ x) / m00, (row_mass @ y) / m00
    mu02 = (row_mass @ y.square()) / m00 - my.square()
    mu11 = (row_x @ y) / m00 - mx * my
    shear = torch.nan_to_num(mu11 / mu02, nan=0.0, posinf=0.0, neginf=0.0)
    slant = torch.atan(-shear)

    # horizontal cdf at t: mass with x + 0.5 < t + shear * (y - y_mid), i.e. x <= t - k_y where
    # k_y = floor(0.5 - shear * (y - y_mid)) + 1 is an integer shift per row
    k = (torch.floor(0.5 - shear.unsqueeze(1) * (y - my.unsqueeze(1))) + 1).long()  # [B, H]
    row_cdf = hires.cumsum(2)  # [B, H, W], inclusive; padded: W zeros left, W row totals right
    padded = torch.cat([torch.zeros_like(row_cdf), row_cdf, row_cdf[:, :, -1:].expand(b, h, w)], 2)
    windows = padded.unfold(2, w, 1)  # [B, H, 2W + 1, W]: window s holds padded[s : s + W]
    start = (w - k).clamp(0, 2 * w).view(b, h, 1, 1).expand(b, h, 1, w)
    gathered = windows.gather(2, start).squeeze(2)  # [B, H, W]: row_cdf[t - k_y], 0 left, total right
    hcdf = gathered.sum(1).double() / m00.unsqueeze(1)
    vcdf = torch.cat([torch.zeros_like(row_mass[:, :1]), row_mass.cumsum(1)[:, :-1]], 1) / m00.unsqueeze(1)
    half = BOUND_FRACTION / 2
    width = _interp(1 - half, hcdf) - _interp(half, hcdf)
    height = _interp(1 - half, vcdf) - _interp(half, vcdf)
    return slant, width, height


def _row_distance(fg: Tensor) -> Tensor:
    """Distance along its row from each foreground pixel to the nearest background pixel.

    ``fg`` are the sorted flat indices of foreground pixels of zero-bordered images, so a horizontal run of
    foreground pixels is a run of consecutive indices and never wraps to the next row.
    """
    n = len(fg)
    starts = torch.ones(n, dtype=torch.bool, device=fg.device)
    starts[1:] = fg[1:] != fg[:-1] + 1
    run = torch.cumsum(starts, 0) - 1
    start_pos = torch.nonzero(starts).squeeze(1)
    run_length = torch.diff(start_pos, append=torch.tensor([n], device=fg.device))
    position = torch.arange(n, device=fg.device) - start_pos[run]
    return torch.minimum(position + 1, run_length[run] - position).to(torch.int32)


def _squared_distance(padded: Tensor, fg: Tensor, row_dist: Tensor, row_stride: int) -> Tensor:
    """Exact squared Euclidean distance to the background: min over s of s^2 + g(row +- s)^2."""
    g2 = torch.zeros(padded.numel(), dtype=torch.int32, device=fg.device)
    g2[fg] = row_dist.square()
    best = row_dist.square()
    active = torch.nonzero(best > 1).squeeze(1)
    s = 1
    while len(active):
        p = fg[active]
        shift = s * row_stride
        candidate = torch.minimum(g2[p - shift], g2[p + shift]) + s * s
        best[active] = torch.minimum(best[active], candidate)
        s += 1
        active = active[best[active] > s * s]
    return best


def _medial_axis(padded: Tensor, fg: Tensor, d2: Tensor, row_stride: int) -> Tensor:
    """Remove non-skeleton pixels from ``padded`` (flat uint8, in place); returns which of ``fg`` remain."""
    offsets = [dr * row_stride + dc for dr, dc in _OFFSETS]
    keep_table = _keep_table().to(fg.device)

    def neighbourhood_code(pixels: Tensor) -> Tensor:
        code = torch.zeros(len(pixels), dtype=torch.int32, device=pixels.device)
        for bit, offset in enumerate(offsets):
            code |= padded[pixels + offset].to(torch.int32) << bit
        return code

    foreground_neighbours = torch.stack([padded[fg + off] for off in offsets]).sum(0, dtype=torch.int32)
    cornerness = 9 - foreground_neighbours  # on the original image
    row, col = (fg // row_stride), (fg % row_stride)
    parity = (row % 2) * 2 + (col % 2)
    key = (d2 * 10 + cornerness) * 4 + parity
    order = torch.argsort(key)
    fg_sorted = fg[order]
    _, counts = torch.unique_consecutive(key[order], return_counts=True)
    start = 0
    for count in counts.tolist():
        group = fg_sorted[start : start + count]
        start += count
        padded[group[~keep_table[neighbourhood_code(group)]]] = 0
    return padded[fg] == 1


def morpho_attributes(
    images: Tensor, interpolation: Interpolation = "catmull_rom", chunk_size: int = 4096
) -> Tensor:
    """Morpho-MNIST attributes ``[B, 6]`` (order :data:`ATTRIBUTE_NAMES`) of ``[B, (1,) H, W]`` images.

    uint8 images are read as 0..255, float images as [0, 1]. Runs on the images' device, in chunks of
    ``chunk_size`` images to bound memory.
    """
    if images.dim() == 4:
        if images.shape[1] != 1:
            raise ValueError(
                f"morpho_attributes expects single-channel images, got shape {list(images.shape)}"
            )
        images = images[:, 0]
    if images.dim() != 3:
        raise ValueError(f"morpho_attributes expects [B, H, W] or [B, 1, H, W], got {list(images.shape)}")
    if len(images) == 0:
        return torch.zeros(0, len(ATTRIBUTE_NAMES), device=images.device)
    if len(images) > chunk_size:
        return torch.cat([morpho_attributes(c, interpolation, chunk_size) for c in images.split(chunk_size)])
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float().clamp(0.0, 1.0)
    hires = upscale_images(x, SCALE, interpolation)
    b, h, w = hires.shape
    slant, width, height = _shape_measures(hires)

    low = hires.amin(dim=(1, 2), keepdim=True)
    high = hires.amax(dim=(1, 2), keepdim=True)
    binary = hires >= low + 0.5 * (high - low)
    area = binary.sum(dim=(1, 2)).float()

    padded = torch.nn.functional.pad(binary, (1, 1, 1, 1)).to(torch.uint8).flatten()
    row_stride, image_stride = w + 2, (h + 2) * (w + 2)
    fg = torch.nonzero(padded).squeeze(1)
    d2 = _squared_distance(padded, fg, _row_distance(fg), row_stride)
    on_skeleton = _medial_axis(padded, fg, d2, row_stride)
    skeleton = fg[on_skeleton]

    image_of = skeleton // image_stride
    sqrt2 = math.sqrt(2.0)
    pair_weights = ((1, 1.0), (row_stride - 1, sqrt2), (row_stride, 1.0), (row_stride + 1, sqrt2))
    links = sum(padded[skeleton + off].float() * wgt for off, wgt in pair_weights)
    length = torch.zeros(b, device=fg.device).index_add_(0, image_of, links)
    skeleton_distance = d2[on_skeleton].float().sqrt()
    thick_sum = torch.zeros(b, device=fg.device).index_add_(0, image_of, skeleton_distance)
    skel_count = torch.bincount(image_of, minlength=b).float()
    thickness = 2.0 * thick_sum / skel_count

    s = float(SCALE)
    result = torch.stack(
        [thickness / s, slant.float(), length / s, area / s**2, width.float() / s, height.float() / s], dim=1
    )
    blank = (high == low).flatten()
    return result.masked_fill(blank.unsqueeze(1), float("nan"))

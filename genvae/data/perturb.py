"""Morpho-MNIST perturbations (Castro et al. 2019) and the causal Morpho-MNIST transforms (Pawlowski et al.
2020), batched in torch on CPU or GPU.

Every function takes a batch of digits, uint8 ``[N, 28, 28]`` / ``[N, 1, 28, 28]`` (0..255) or float in
[0, 1], and returns the same shape and kind; per-image parameters are a number or a tensor ``[N]``.

- :func:`thin`, :func:`thicken` follow ``morphomnist/perturb.py`` (``Thinning``, ``Thickening``): the
  binarised high-resolution digit of ``ImageMorphology`` at scale 4 (:func:`genvae.data.attributes.
  hires_morphology`, the measurement pipeline's upscaling and threshold), eroded / dilated by
  ``morphology.disk(r)``, ``r = int(amount * scale * mean_thickness / 2)``, then ``ImageMorphology.downscale``
  (``pyramid_reduce(order=3)``, :func:`genvae.data.attributes.downscale_operator`, with the cubic kernel the
  measurements use, and ``uint8`` by truncation). Erosion and dilation by a disk are thresholds of the exact
  Euclidean distance transform: a pixel survives erosion iff its squared distance to the background
  exceeds r^2 (the measurement pipeline's transform of the foreground), and joins the dilation iff its
  squared distance to the foreground is at most r^2 (the same two passes on the dense background, bounded
  by r). :func:`plain` is the binarised digit downscaled, the unperturbed images of Castro's datasets, and
  :func:`apply_perturbations` makes their global-perturbation dataset (released settings).
- :func:`swell` follows ``Swelling``: at a skeleton pixel drawn uniformly, the inverse radial map
  ``centre + (d / R)^(strength - 1) * offset`` for ``d < R = radius * sqrt(mean_thickness) / 2 * scale``,
  sampled bilinearly with zeros outside (``skimage.transform.warp`` order 1).
- :func:`fracture` follows ``Fracture``: ``num`` locations drawn uniformly from the skeleton after erasing
  disks of radius ``int(prune * scale)`` around its tips (1 neighbour) and then its forks (3 neighbours),
  falling back to the whole skeleton when nothing is left; at each, a line perpendicular to the local
  skeleton orientation (second moments of the skeleton in a ``2 * 2 * scale + 1`` window), of half length
  ``distance + 0.5 * scale``, stamped with a disk of radius ``ceil((thickness * scale - 1) / 2)``.
- :func:`set_thickness` follows DeepSCM's ``transforms.SetThickness`` as used by
  ``create_synth_thickness_intensity_data.py``: the digit is dilated (target above its mean thickness) or
  eroded (below) by half the difference, then downscaled. :func:`set_intensity` follows that script's
  intensity step: multiply so that the median of the pixels at or above half of the image's range equals
  the target (grey levels 0..255), clip to 0..255, truncate to ``uint8``.

Where this differs from the references:

- Random locations come from a ``torch.Generator`` (one uniform draw per location, made for the whole batch
  before it is split into chunks, so results do not depend on chunking or device), not ``np.random``. The
  skeleton is the measurement pipeline's deterministic medial axis (scikit-image breaks ties at random).
- :func:`set_thickness` works at the measurement scale 4, not DeepSCM's 16 (16x the pixels: the 70,000-image
  dataset would not fit in minutes on a CPU), and replaces DeepSCM's quantised radius
  ``int(16 * |delta| / 2)`` and its smoothed 16x-supersampled disk by an anti-aliased threshold of the same
  exact distance transform: a pixel at distance ``d`` from the other phase gets coverage
  ``clamp(rho - d + 1, 0, 1)`` under dilation by ``rho = scale * |delta| / 2`` (a background pixel's centre
  lies about ``d - 0.5`` outside the digit's edge) and ``clamp(d - rho, 0, 1)`` under erosion. That
  moves the edge continuously with the target, so no rounding of the radius; the mean thickness is the
  scale-4 measure (:func:`genvae.data.attributes.morpho_attributes`'s thickness), the one the targets are
  checked with.
- Fracture lines are rasterised by rounding (``r0 + round(k * dr / n)``), which is Bresenham's line up to
  ties; stamps falling outside the image are dropped (the reference pads by the brush radius only).
- Float images come back as the clipped downscaled values in [0, 1], not truncated to 1/255 steps; uint8
  images are truncated as the references do, after adding 1e-6 so that values that are integers up to
  float64 rounding keep their value. A blank image (max == min) is returned unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812

from genvae.data.attributes import (
    HiresMorphology,
    _grey_levels,
    downscale_operator,
    hires_morphology,
    map_chunks,
    median_intensity,
    single_channel,
    unit_range,
)

__all__ = [
    "PERTURBATIONS",
    "apply_perturbations",
    "dilated",
    "downscale",
    "eroded",
    "fracture",
    "median_intensity",
    "per_image",
    "plain",
    "set_intensity",
    "set_thickness",
    "swell",
    "thicken",
    "thin",
]

SCALE = 4  # Morpho-MNIST's perturbations use ImageMorphology(image, scale=4)
MAX_THICKNESS = 12.0  # px: set_thickness targets above this are refused (the dilation radius bounds the work)
MAX_THICKEN = 3.0  # thicken amounts above this are refused (4x the stroke)
_ANGLE_WINDOW = 2  # px at 28x28: half size of the window of the skeleton orientation (Fracture._ANGLE_WINDOW)
_FRACTURE_EXTENSION = 0.5  # px beyond the stroke (Fracture._FRAC_EXTENSION)
# Castro et al.'s released global perturbations: plain, thinning .7, thickening 1, swelling (3, 7), 3 fractures
PERTURBATIONS: tuple[str, ...] = ("plain", "thin", "thicken", "swell", "fracture")


# ------------------------------------------------------------------ input / output
def per_image(
    value: float | Tensor, n: int, name: str, low: float = -math.inf, high: float = math.inf
) -> Tensor:
    """float64 ``[n]`` from a number or an ``[n]`` tensor, finite and in ``[low, high]``; ValueError otherwise."""
    values = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
    if values.dim() == 0:
        values = values.expand(n)
    if values.shape != (n,):
        raise ValueError(f"{name}: expected a number or a tensor of shape [{n}], got {list(values.shape)}")
    bad = ~torch.isfinite(values) | (values < low) | (values > high)
    if bool(bad.any()):
        first = int(torch.nonzero(bad)[0])
        raise ValueError(
            f"{name}: {float(values[first])} (image {first}) is not a finite number in [{low}, {high}]"
        )
    return values.contiguous()


def _apply(images: Tensor, chunk_fn: Callable[..., Tensor], *params: Tensor, caller: str) -> Tensor:
    """Run ``chunk_fn(x [B, H, W] float in [0, 1], *params chunk) -> [B, H, W] float64 in [0, 1]`` over
    chunks (:func:`map_chunks`) and return the images' kind and shape; blank images come back unchanged."""
    flat = single_channel(images, caller)
    if len(flat) == 0:
        return images.clone()
    x = unit_range(flat)
    params = tuple(p.to(x.device) for p in params)
    out = map_chunks(chunk_fn, x, *params)
    blank = (x.amax(dim=(1, 2)) == x.amin(dim=(1, 2))).view(-1, 1, 1)
    if images.dtype == torch.uint8:
        result = torch.where(blank, flat, (255.0 * out + 1e-6).floor().clamp(0, 255).to(torch.uint8))
    else:
        result = torch.where(blank, flat, out.to(flat.dtype))
    return result.view(images.shape)


def downscale(hires: Tensor, scale: int = SCALE) -> Tensor:
    """``pyramid_reduce(x, downscale=scale, order=3)`` of ``[B, sH, sW]`` images, clipped to [0, 1] (float64).

    Morpho-MNIST's ``ImageMorphology.downscale`` before its ``uint8`` cast.
    """
    size = hires.shape[-1] // scale
    d = downscale_operator(size, scale, "catmull_rom").to(hires.device)
    return (d @ hires.double() @ d.T).clamp_(0.0, 1.0)


def _dense(morph: HiresMorphology, values: Tensor, fill: float | int = 0) -> Tensor:
    """``[B, H, W]`` image of per-foreground-pixel ``values`` (``fill`` on the background)."""
    h, b, w = morph.binary.shape
    padded = values.new_full(((h + 2) * b * (w + 2),), fill).index_copy_(0, morph.fg, values)
    return padded.view(h + 2, b, w + 2)[1:-1, :, 1:-1].transpose(0, 1)


def _background_d2(binary: Tensor, cap: int) -> Tensor:
    """``[B, H, W]`` int16 squared distance of each pixel to the nearest foreground pixel of ``binary``
    ``[B, H, W]``: exact where it is at most ``cap^2``, above ``cap^2`` elsewhere (0 on the foreground).

    The two passes of the measurement pipeline's exact transform (:func:`genvae.data.attributes.
    _squared_distance`): the distance g along the row, then ``min_s s^2 + g(row + s)^2``; here on the dense
    images, because the background is most of them, and bounded by ``cap``: g is found by looking ``cap``
    columns left and right, and the column scan stops at ``cap`` rows.
    """
    b, h, w = binary.shape
    far = cap + 1
    padded = F.pad(binary, (far, far))
    g = torch.full((b, h, w), far, dtype=torch.int16, device=binary.device)
    for k in range(far - 1, -1, -1):  # nearest last
        g.masked_fill_(padded[:, :, far - k : far - k + w] | padded[:, :, far + k : far + k + w], k)
    g2 = F.pad(g * g, (0, 0, cap, cap), value=far * far)  # rows beyond the image: no foreground
    best = g2[:, cap : cap + h].clone()
    for step in range(1, cap + 1):
        nearest = torch.minimum(g2[:, cap - step : cap - step + h], g2[:, cap + step : cap + step + h])
        torch.minimum(best, nearest.add_(step * step), out=best)
    return best


def _radius(morph: HiresMorphology, factor: Tensor) -> Tensor:
    """``int(factor * scale * mean_thickness / 2)`` per image (0 for blank images), int64 ``[B]``."""
    radius = (factor * morph.scale * morph.mean_thickness().double() / 2.0).nan_to_num(0.0)
    return radius.floor().long()


# ------------------------------------------------------------------ thinning / thickening
def eroded(morph: HiresMorphology, radius: Tensor) -> Tensor:
    """``[B, H, W]`` bool: the binary digits eroded by ``disk(radius[b])`` (pixels farther than the radius
    from the background; ``morphology.erosion(binary_image, disk(r))``)."""
    r2 = radius.square().index_select(0, morph.image_of(morph.fg))
    return _dense(morph, morph.d2.long() > r2)


def dilated(binary: Tensor, radius: Tensor) -> Tensor:
    """``[B, H, W]`` bool: ``binary`` ``[B, H, W]`` dilated by ``disk(radius[b])`` (pixels within the radius of
    the foreground; ``morphology.dilation(binary_image, disk(r))``)."""
    cap = int(radius.max()) if len(radius) else 0
    if cap == 0:
        return binary.clone()
    return _background_d2(binary, cap).long() <= radius.square().view(-1, 1, 1)


def _plain_chunk(x: Tensor) -> Tensor:
    return downscale(hires_morphology(x, SCALE).binary.transpose(0, 1).double())


def _thin_chunk(x: Tensor, amount: Tensor) -> Tensor:
    morph = hires_morphology(x, SCALE)
    return downscale(eroded(morph, _radius(morph, amount)).double())


def _thicken_chunk(x: Tensor, amount: Tensor) -> Tensor:
    morph = hires_morphology(x, SCALE)
    return downscale(dilated(morph.binary.transpose(0, 1), _radius(morph, amount)).double())


def plain(images: Tensor) -> Tensor:
    """The binarised high-resolution digit, downscaled: Castro's unperturbed "plain" images."""
    return _apply(images, _plain_chunk, caller="plain")


def thin(images: Tensor, amount: float | Tensor = 0.7) -> Tensor:
    """Erode each digit by a disk of radius ``int(amount * 4 * mean_thickness / 2)`` (Castro's ``Thinning``).

    The stroke loses about ``amount`` times its mean thickness (``amount`` in [0, 1); the released global
    dataset uses 0.7).
    """
    n = len(images)
    return _apply(images, _thin_chunk, per_image(amount, n, "amount", 0.0, 0.999), caller="thin")


def thicken(images: Tensor, amount: float | Tensor = 1.0) -> Tensor:
    """Dilate each digit by a disk of radius ``int(amount * 4 * mean_thickness / 2)`` (Castro's ``Thickening``).

    The stroke gains about ``amount`` times its mean thickness (``amount`` in [0, 3]; released: 1.0).
    """
    n = len(images)
    return _apply(images, _thicken_chunk, per_image(amount, n, "amount", 0.0, MAX_THICKEN), caller="thicken")


# ------------------------------------------------------------------ set thickness / intensity
def _set_thickness_chunk(x: Tensor, target: Tensor) -> Tensor:
    morph = hires_morphology(x, SCALE)
    delta = (target - morph.mean_thickness().double()).nan_to_num(0.0)
    rho = SCALE * delta.abs() / 2.0  # hi-res pixels
    binary = morph.binary.transpose(0, 1)
    out = binary.float()
    rho = rho.float()
    cap = rho.ceil().long() + 1  # coverage needs the distances below rho + 1
    for low, high in ((0, 4), (4, 8), (8, 1 << 30)):  # the column scan's length is the group's largest cap
        grow = (delta > 0) & (cap > low) & (cap <= high)
        if bool(grow.any()):
            d2 = _background_d2(binary[grow], int(cap[grow].max()))
            index = torch.nonzero(grow).squeeze(1)
            cover = (rho[index].view(-1, 1, 1) - d2.float().sqrt() + 1.0).clamp_(0.0, 1.0)
            out.index_copy_(0, index, torch.maximum(out.index_select(0, index), cover))
    shrink = delta < 0
    if bool(shrink.any()):
        index = torch.nonzero(shrink).squeeze(1)
        distance = _dense(morph, morph.d2.float().sqrt()).index_select(0, index)
        out.index_copy_(0, index, (distance - rho[index].view(-1, 1, 1)).clamp_(0.0, 1.0))
    return downscale(out)


def set_thickness(images: Tensor, target: float | Tensor) -> Tensor:
    """Each digit dilated or eroded so that its mean thickness becomes ``target`` px (DeepSCM's
    ``SetThickness``, anti-aliased at scale 4: see the module docstring). ``target`` in (0, 12]."""
    n = len(images)
    targets = per_image(target, n, "thickness target", 1e-3, MAX_THICKNESS)
    return _apply(images, _set_thickness_chunk, targets, caller="set_thickness")


def set_intensity(images: Tensor, target: float | Tensor) -> Tensor:
    """Scale each image so that :func:`median_intensity` becomes ``target`` grey levels (0..255), clipped to
    0..255 (DeepSCM's intensity step; uint8 truncated as its ``uint8`` array assignment does)."""
    n = len(images)
    targets = per_image(target, n, "intensity target", 0.0, 255.0).to(images.device)
    grey = _grey_levels(images)
    median = median_intensity(images)
    blank = (grey.amax(dim=(1, 2)) == grey.amin(dim=(1, 2))) | (median <= 0)
    factor = torch.where(blank, torch.ones_like(median), targets / median.clamp_min(1e-12))
    scaled = (grey * factor.view(-1, 1, 1)).clamp_(0.0, 255.0)
    if images.dtype == torch.uint8:
        return scaled.floor().to(torch.uint8).view(images.shape)
    return (scaled / 255.0).to(images.dtype).view(images.shape)


# ------------------------------------------------------------------ skeleton locations
def _skeleton_image(morph: HiresMorphology) -> Tensor:
    """``[B, H, W]`` bool medial axis."""
    return _dense(morph, morph.on_skeleton)


def _sample_pixels(mask: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For each image b and draw ``u[b, k]`` in [0, 1): a pixel of ``mask[b]`` chosen uniformly.

    Returns ``(image, row, col, valid)`` ``[B, K]``; ``valid`` is False where ``mask[b]`` is empty.
    """
    b = len(mask)
    image, row, col = torch.nonzero(mask, as_tuple=True)  # sorted by image, then row-major
    count = torch.bincount(image, minlength=b)
    start = count.cumsum(0) - count
    pick = start.unsqueeze(1) + (u * count.unsqueeze(1)).long().clamp_max(
        (count - 1).clamp_min(0).unsqueeze(1)
    )
    valid = (count > 0).unsqueeze(1).expand_as(pick)
    pick = pick.clamp_max(max(len(image) - 1, 0))
    if len(image) == 0:
        zeros = torch.zeros_like(pick)
        return zeros, zeros, zeros, valid
    return image[pick], row[pick], col[pick], valid


def _disk_offsets(radius: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Row and column offsets of ``skimage.morphology.disk(radius)``: ``dr^2 + dc^2 <= radius^2``."""
    r = torch.arange(-radius, radius + 1, device=device)
    dr, dc = torch.meshgrid(r, r, indexing="ij")
    inside = dr.square() + dc.square() <= radius * radius
    return dr[inside], dc[inside]


def _clear_disks(mask: Tensor, image: Tensor, row: Tensor, col: Tensor, radius: int) -> Tensor:
    """``mask`` ``[B, H, W]`` with the disks of ``radius`` around the given pixels set False (in place)."""
    _, h, w = mask.shape
    dr, dc = _disk_offsets(radius, mask.device)
    rows, cols = row.reshape(-1, 1) + dr, col.reshape(-1, 1) + dc
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    images = image.reshape(-1, 1).expand_as(rows)
    mask[images[inside], rows[inside], cols[inside]] = False
    return mask


def _neighbour_count(mask: Tensor) -> Tensor:
    """Number of 8-neighbours in ``mask`` ``[B, H, W]`` of each pixel of ``mask`` (0 elsewhere)."""
    kernel = torch.ones(1, 1, 3, 3, device=mask.device)
    kernel[0, 0, 1, 1] = 0
    count = F.conv2d(mask.unsqueeze(1).float(), kernel, padding=1).squeeze(1).round().long()
    return count * mask


# ------------------------------------------------------------------ swelling
def _swell_chunk(x: Tensor, strength: Tensor, radius: Tensor, u: Tensor) -> Tensor:
    morph = hires_morphology(x, SCALE)
    binary = morph.binary.transpose(0, 1).double()  # [B, H, W]
    b, h, w = binary.shape
    image, row, col, valid = _sample_pixels(_skeleton_image(morph), u.unsqueeze(1))
    cy, cx = row[:, 0].double().view(b, 1, 1), col[:, 0].double().view(b, 1, 1)
    big_r = (radius * morph.mean_thickness().double().nan_to_num(1.0).sqrt() / 2.0 * SCALE).view(b, 1, 1)
    ys = torch.arange(h, dtype=torch.float64, device=x.device).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.float64, device=x.device).view(1, 1, w)
    oy, ox = ys - cy, xs - cx
    distance = torch.hypot(oy, ox)
    weight = (distance / big_r).pow(strength.view(b, 1, 1) - 1.0)
    weight = torch.where((distance > big_r) | ~valid[:, :1].view(b, 1, 1), torch.ones_like(weight), weight)
    sy, sx = cy + weight * oy, cx + weight * ox  # where each output pixel reads the input
    grid = torch.stack([2.0 * sx / (w - 1) - 1.0, 2.0 * sy / (h - 1) - 1.0], dim=-1)
    warped = F.grid_sample(
        binary.unsqueeze(1), grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return downscale(warped.squeeze(1))


def swell(
    images: Tensor,
    strength: float | Tensor = 3.0,
    radius: float | Tensor = 7.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Swell each digit around a skeleton pixel drawn at random (Castro's ``Swelling``; released: 3, 7).

    ``strength`` >= 1 (1: no change); ``radius`` > 0 in units of ``sqrt(mean_thickness) / 2`` px.
    """
    n = len(images)
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return _apply(
        images,
        _swell_chunk,
        per_image(strength, n, "strength", 1.0, 20.0),
        per_image(radius, n, "radius", 1e-3, 100.0),
        u,
        caller="swell",
    )


# ------------------------------------------------------------------ fractures
def _line_points(p0: Tensor, p1: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Pixels of the segments ``p0 -> p1`` (``[K, 2]`` int64 row, col): ``(row, col, valid)`` ``[K, L]``."""
    delta = p1 - p0
    n = delta.abs().amax(1)
    steps = int(n.max()) + 1 if len(n) else 1
    k = torch.arange(steps, device=p0.device).view(1, -1)
    t = k.double() / n.clamp_min(1).double().view(-1, 1)
    rows = p0[:, :1] + torch.round(t * delta[:, :1].double()).long()
    cols = p0[:, 1:] + torch.round(t * delta[:, 1:].double()).long()
    return rows, cols, k <= n.view(-1, 1)


def _fracture_chunk(x: Tensor, num: Tensor, thickness: Tensor, prune: Tensor, u: Tensor) -> Tensor:
    morph = hires_morphology(x, SCALE)
    binary = morph.binary.transpose(0, 1).clone()  # [B, H, W]
    b = len(binary)
    skeleton = _skeleton_image(morph)
    candidates = skeleton.clone()
    prune_radius = int(float(prune[0]) * SCALE) if b else 0
    for fork_count in (1, 3):  # tips, then forks of what is left
        tips = torch.nonzero((_neighbour_count(candidates) == fork_count) & candidates, as_tuple=True)
        _clear_disks(candidates, *tips, prune_radius)
    empty = ~candidates.flatten(1).any(1)
    candidates[empty] = skeleton[empty]  # over-pruned: sample the whole skeleton
    image, row, col, valid = _sample_pixels(candidates, u)
    used = torch.arange(u.shape[1], device=x.device).view(1, -1) < num.view(-1, 1)
    keep = (valid & used).flatten()
    image, row, col = image.flatten()[keep], row.flatten()[keep], col.flatten()[keep]
    if len(image):
        # local orientation: second moments of the skeleton in a window around the location
        half = _ANGLE_WINDOW * SCALE
        padded = F.pad(skeleton, (half, half, half, half)).double()
        offsets = torch.arange(2 * half + 1, device=x.device)
        window = padded[
            image.view(-1, 1, 1), row.view(-1, 1, 1) + offsets.view(1, -1, 1), col.view(-1, 1, 1) + offsets
        ]
        coords = offsets.double()
        m00 = window.sum((1, 2))
        mx = (window.sum(1) @ coords) / m00
        my = (window.sum(2) @ coords) / m00
        u20 = (window.sum(1) @ coords.square()) / m00 - mx.square()
        u02 = (window.sum(2) @ coords.square()) / m00 - my.square()
        u11 = ((window * coords.view(1, -1, 1) * coords.view(1, 1, -1)).sum((1, 2))) / m00 - mx * my
        angle = 0.5 * torch.atan2(2.0 * u11, u20 - u02) + math.pi / 2.0  # perpendicular to the stroke
        distance = _dense(morph, morph.d2.double().sqrt())[image, row, col]
        length = distance + _FRACTURE_EXTENSION * SCALE
        centre = torch.stack([row, col], 1).double()
        normal = length.view(-1, 1) * torch.stack([torch.sin(angle), torch.cos(angle)], 1)
        p0, p1 = torch.trunc(centre + normal).long(), torch.trunc(centre - normal).long()
        rows, cols, on_line = _line_points(p0, p1)
        images = image.view(-1, 1).expand_as(rows)
        brush = math.ceil((float(thickness[0]) * SCALE - 1.0) / 2.0)
        _clear_disks(binary, images[on_line], rows[on_line], cols[on_line], brush)
    return downscale(binary.double())


def fracture(
    images: Tensor,
    num: int | Tensor = 3,
    thickness: float = 1.5,
    prune: float = 2.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Cut ``num`` fractures of ``thickness`` px across each digit's stroke (Castro's ``Fracture``; released:
    3 fractures of 1.5 px, tips and forks pruned by 2 px). ``num`` per image in 0..10."""
    n = len(images)
    counts = per_image(num, n, "num", 0, 10)
    if bool((counts != counts.round()).any()):
        raise ValueError(
            f"num: expected whole numbers of fractures, got {counts[counts != counts.round()][0]}"
        )
    per_image(thickness, 1, "thickness", 0.1, 10.0)
    per_image(prune, 1, "prune", 0.0, 10.0)
    most = int(counts.max()) if n else 0
    u = torch.rand(n, max(most, 1), generator=generator, dtype=torch.float64)
    return _apply(
        images,
        _fracture_chunk,
        counts.long(),
        torch.full((n,), float(thickness), dtype=torch.float64),
        torch.full((n,), float(prune), dtype=torch.float64),
        u,
        caller="fracture",
    )


# ------------------------------------------------------------------ the global perturbation dataset
def apply_perturbations(images: Tensor, kinds: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Each image perturbed as ``PERTURBATIONS[kinds[i]]`` with Castro et al.'s released settings: plain
    (the binarised digit, downscaled), thinned 0.7, thickened 1.0, swollen (3, 7), 3 fractures.

    The swelling, then the fracture locations are drawn from ``generator`` (one draw per image of each).
    """
    kinds = kinds.to(images.device)
    out = images.clone()
    calls = {
        "plain": plain,
        "thin": lambda x: thin(x, 0.7),
        "thicken": lambda x: thicken(x, 1.0),
        "swell": lambda x: swell(x, 3.0, 7.0, generator=generator),
        "fracture": lambda x: fracture(x, 3, generator=generator),
    }
    for kind, name in enumerate(PERTURBATIONS):
        index = torch.nonzero(kinds == kind).squeeze(1)
        if len(index):
            out[index] = calls[name](images[index])
    return out

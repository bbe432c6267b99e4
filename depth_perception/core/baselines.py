"""Classical depth completion: the baselines every learned model is compared against.

Two tasks:

- *hole filling* (a dense sensor image with missing pixels): :func:`fill_nearest`,
  :func:`fill_inpaint` (OpenCV Telea / Navier-Stokes) and :func:`fill_ipbasic` (morphological,
  after Ku et al. 2018, "In Defense of Classical Image Processing: Fast Depth Completion on the
  CPU"), reachable by name through :data:`FILL_METHODS` / :func:`fill_holes`;
- *sparse upsampling* (a few hundred LiDAR returns projected into a camera image):
  :func:`joint_bilateral_upsample`, guided by the colour image.

Every function takes depth in metres with NaN / 0 / inf / negatives as invalid (integer images
are millimetres, see :func:`~depth_perception.core.depth.sanitize_depth`), returns a new float32
metre array, and keeps every valid input pixel bit-exact: a baseline fills holes, it does not
smooth sensor data. The output holds NaN only where nothing can be filled, i.e. everywhere when
the input has no valid pixel at all.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import cv2
import numpy as np

from depth_perception.core.depth import sanitize_depth

__all__ = [
    "FILL_METHODS",
    "fill_holes",
    "fill_inpaint",
    "fill_ipbasic",
    "fill_nearest",
    "joint_bilateral_upsample",
]


def _prepare(depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sanitized float32 copy of ``depth`` and its valid mask."""
    d = sanitize_depth(depth)
    if d.ndim != 2:
        raise ValueError(f"expected an (H, W) depth image, got shape {d.shape}")
    return d, np.isfinite(d)


# --------------------------------------------------------------------------------------------
# Nearest neighbour
# --------------------------------------------------------------------------------------------


def fill_nearest(depth: np.ndarray) -> np.ndarray:
    """Give each invalid pixel the depth of its nearest valid pixel.

    "Nearest" is Euclidean as approximated by OpenCV's 5x5 distance-transform mask (exact for
    all but near-ties). One pass of ``cv2.distanceTransformWithLabels``: every valid pixel is a
    seed with its own label, and every other pixel receives the label of its nearest seed.
    """
    d, valid = _prepare(depth)
    if valid.all() or not valid.any():
        return d
    # distanceTransform measures the distance to the nearest *zero* pixel: zeros = seeds.
    seeds_are_zero = (~valid).astype(np.uint8)
    _, labels = cv2.distanceTransformWithLabels(
        seeds_are_zero, cv2.DIST_L2, cv2.DIST_MASK_5, labelType=cv2.DIST_LABEL_PIXEL
    )
    # Label -> depth lookup table; independent of the order in which OpenCV numbers the seeds.
    lut = np.zeros(int(labels.max()) + 1, dtype=np.float32)
    lut[labels[valid]] = d[valid]
    out = lut[labels]
    out[valid] = d[valid]
    return out


# --------------------------------------------------------------------------------------------
# OpenCV inpainting
# --------------------------------------------------------------------------------------------

_INPAINT_FLAGS = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
_INPAINT_RANGE = 10000.0


def _masked_area_downsample(
    d: np.ndarray, valid: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Average only the valid pixels into a smaller image; returns (image, known mask).

    A low-res pixel counts as known when most of its footprint was valid, so holes survive
    the downsampling and are inpainted there rather than averaged away with zeros.
    """
    weight = cv2.resize(valid.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    total = cv2.resize(np.where(valid, d, 0.0), size, interpolation=cv2.INTER_AREA)
    known = weight >= 0.5
    small = np.zeros_like(total)
    np.divide(total, weight, out=small, where=known)
    return small, known


def fill_inpaint(
    depth: np.ndarray, method: str = "telea", radius: float = 5.0, max_side: int = 320
) -> np.ndarray:
    """Fill holes with OpenCV's inpainting (``method`` "telea" or "ns").

    cv2.inpaint is slow on large images, so when the longer side exceeds ``max_side`` the
    depth is first reduced (averaging valid pixels only), inpainted there, and the result is
    upsampled; only the hole pixels take upsampled values. ``radius`` is the inpainting
    neighbourhood in full-resolution pixels (scaled with the image, at least 1).
    """
    if method not in _INPAINT_FLAGS:
        raise ValueError(f"unknown inpaint method {method!r}; choose from {sorted(_INPAINT_FLAGS)}")
    d, valid = _prepare(depth)
    if valid.all() or not valid.any():
        return d
    h, w = d.shape
    # Map the measured range to [0, _INPAINT_RANGE]: the result then does not depend on units,
    # and OpenCV's Telea has absolute constants tuned for 0..255 intensities that visibly bias
    # fills of small float values (metres in [0, 1] came out tens of percent off).
    lo = float(d[valid].min())
    span = max(float(d[valid].max()) - lo, 1e-6) / _INPAINT_RANGE
    norm = np.where(valid, (d - lo) / np.float32(span), 0.0).astype(np.float32)

    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        work, known = _masked_area_downsample(norm, valid, size)
    else:
        work, known = norm, valid
    holes = (~known).astype(np.uint8)
    filled = cv2.inpaint(work, holes, max(1.0, radius * scale), _INPAINT_FLAGS[method])
    if scale < 1.0:
        filled = cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR)

    out = d.copy()
    out[~valid] = filled[~valid] * np.float32(span) + np.float32(lo)
    return out


# --------------------------------------------------------------------------------------------
# IP-Basic style morphological completion
# --------------------------------------------------------------------------------------------


def _diamond(size: int) -> np.ndarray:
    r = size // 2
    i, j = np.mgrid[-r : r + 1, -r : r + 1]
    return (np.abs(i) + np.abs(j) <= r).astype(np.uint8)


_DIAMOND_5 = _diamond(5)
_FULL_5 = np.ones((5, 5), np.uint8)
_FULL_7 = np.ones((7, 7), np.uint8)
_FULL_31 = np.ones((31, 31), np.uint8)


def _fill_empty(inv: np.ndarray, kernel: np.ndarray) -> None:
    """Give still-empty (0) pixels the dilation of their neighbourhood, in place."""
    empty = inv <= 0
    if empty.any():
        inv[empty] = cv2.dilate(inv, kernel)[empty]


def _extend_top(inv: np.ndarray) -> None:
    """Copy each column's topmost value up to row 0 (sensors often miss the top rows)."""
    filled = inv > 0
    has_value = filled.any(axis=0)
    top = np.argmax(filled, axis=0)  # first filled row per column
    cols = np.arange(inv.shape[1])
    above = (np.arange(inv.shape[0])[:, None] < top[None, :]) & has_value[None, :]
    np.copyto(inv, np.broadcast_to(inv[top, cols][None, :], inv.shape), where=above)


def _smooth_filled(inv: np.ndarray, blurred: np.ndarray) -> None:
    """Take ``blurred`` where both it and ``inv`` hold a value, in place."""
    take = (inv > 0) & (blurred > 0)
    inv[take] = blurred[take]


def fill_ipbasic(
    depth: np.ndarray,
    max_depth: float | None = None,
    extrapolate_top: bool = True,
    blur: str = "bilateral",
) -> np.ndarray:
    """IP-Basic style morphological hole filling (Ku et al. 2018, "fill_in_fast").

    Depth is inverted (``max_depth - d``) so that grey dilation, which takes the maximum,
    prefers the *nearer* surface at depth discontinuities, the way foreground occludes
    background. Then: 5x5 diamond dilation, 5x5 closing of small gaps, 7x7 dilation into what
    is still empty, optional extension of each column's top value upwards, 31x31 dilation for
    large holes, and a 5x5 median plus a bilateral (or Gaussian, ``blur="gaussian"``) blur to
    remove the blocky artefacts; then back to depth.

    ``max_depth`` must exceed the scene's depths (default: 1 m beyond the farthest valid
    pixel); valid pixels at or beyond it keep their values but do not seed the fill. Measured
    pixels keep their exact input values, and anything the morphology leaves empty (e.g. a
    region wider than the largest kernel) takes its nearest filled neighbour.
    """
    if blur not in ("bilateral", "gaussian"):
        raise ValueError(f"blur must be 'bilateral' or 'gaussian', got {blur!r}")
    d, valid = _prepare(depth)
    if valid.all() or not valid.any():
        return d
    if max_depth is None:
        max_depth = float(d[valid].max()) + 1.0
    max_depth = np.float32(max_depth)

    seeds = valid & (d < max_depth)
    inv = np.zeros_like(d)  # 0 = empty
    inv[seeds] = max_depth - d[seeds]

    inv = cv2.dilate(inv, _DIAMOND_5)
    inv = cv2.morphologyEx(inv, cv2.MORPH_CLOSE, _FULL_5)
    _fill_empty(inv, _FULL_7)
    if extrapolate_top:
        _extend_top(inv)
    _fill_empty(inv, _FULL_31)

    _smooth_filled(inv, cv2.medianBlur(inv, 5))
    if blur == "bilateral":
        # sigma_color in metres: edges of more than a few metres are not smoothed across.
        _smooth_filled(inv, cv2.bilateralFilter(inv, 5, 1.5, 2.0))
    else:
        _smooth_filled(inv, cv2.GaussianBlur(inv, (5, 5), 0))

    out = np.where(inv > 0, max_depth - inv, np.float32(np.nan)).astype(np.float32)
    out[valid] = d[valid]
    if np.isnan(out).any():
        out = fill_nearest(out)
    return out


# --------------------------------------------------------------------------------------------
# Joint bilateral upsampling of sparse depth
# --------------------------------------------------------------------------------------------


def _sq_dist(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (N, K) between rows of ``x`` (N, C) and ``centres``."""
    d2 = (x * x).sum(1)[:, None] - 2.0 * (x @ centres.T) + (centres * centres).sum(1)[None, :]
    return np.maximum(d2, 0.0)


def _palette(colours: np.ndarray, k: int, iters: int = 10, n_sample: int = 4096) -> np.ndarray:
    """A k-colour palette of the guide image by k-means (k-means++ seeding, fixed RNG seed)."""
    rng = np.random.default_rng(0)  # deterministic: same image, same palette, same output
    if colours.shape[0] > n_sample:
        colours = colours[rng.choice(colours.shape[0], n_sample, replace=False)]
    centres = [colours[rng.integers(colours.shape[0])]]
    for _ in range(1, k):
        d2 = _sq_dist(colours, np.asarray(centres)).min(1)
        total = d2.sum()
        if total <= 0:  # fewer distinct colours than k
            break
        centres.append(colours[rng.choice(colours.shape[0], p=d2 / total)])
    centres = np.asarray(centres, dtype=np.float32)
    for _ in range(iters):
        assign = _sq_dist(colours, centres).argmin(1)
        counts = np.bincount(assign, minlength=len(centres)).astype(np.float32)
        for c in range(colours.shape[1]):
            sums = np.bincount(assign, weights=colours[:, c], minlength=len(centres))
            # Empty clusters keep their old centre.
            np.divide(sums, counts, out=centres[:, c], where=counts > 0, casting="unsafe")
    return centres


def _splat_blur_slice(
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    shape: tuple[int, int],
    sigma: float,
) -> np.ndarray:
    """Gaussian-weighted sums of sparse per-layer ``values`` (n, L) at every pixel -> (H, W, L).

    Sums of ``exp(-r^2 / 2 sigma^2) * value`` over samples at distance r, computed on a grid
    ``sigma / 2`` pixels coarse (splat the samples into cells, blur, bilinear upsample), so the
    cost barely grows with sigma.
    """
    h, w = shape
    n_layers = values.shape[1]
    f = max(1, int(sigma // 2))
    gh, gw = -(-h // f), -(-w // f)
    cell = (rows // f) * gw + (cols // f)
    index = (cell[:, None] * n_layers + np.arange(n_layers)[None, :]).ravel()
    grid = np.bincount(index, weights=values.ravel(), minlength=gh * gw * n_layers)
    grid = grid.reshape(gh, gw, n_layers).astype(np.float32)
    sigma_grid = sigma / f
    grid = cv2.GaussianBlur(grid, (0, 0), sigma_grid, borderType=cv2.BORDER_REFLECT)
    # GaussianBlur normalizes its kernel to sum 1; undo that so the result is a sum of weights
    # with peak 1 per sample, i.e. an "effective number of samples".
    grid *= np.float32(2.0 * np.pi * sigma_grid**2)
    # Upsample by exactly f and crop, so cell centres land where the splat put them.
    up = cv2.resize(grid, (gw * f, gh * f), interpolation=cv2.INTER_LINEAR)
    return up.reshape(gh * f, gw * f, n_layers)[:h, :w]


def joint_bilateral_upsample(
    sparse_depth: np.ndarray,
    guide_rgb: np.ndarray,
    sigma_spatial: float = 8.0,
    sigma_color: float = 20.0,
    n_colors: int = 12,
    min_weight: float = 1.0,
) -> np.ndarray:
    """Densify sparse depth with a colour-guided (joint bilateral) normalized convolution.

    At pixel p the estimate is ``sum_q G_s(p - q) G_c(I_p - I_q) d_q / sum_q G_s G_c`` over the
    valid samples q, so depth is interpolated from samples that are near *and* of similar
    colour, and does not bleed across colour edges the way nearest-neighbour filling does.

    Vectorized approximation (in the spirit of Durand & Dorsey's fast bilateral filter): the
    guide's colours are summarized by an ``n_colors`` k-means palette; each sample is splatted
    into one layer per palette colour with its colour weight, every layer is blurred spatially
    on a coarse grid, and each pixel reads the layers back weighted by its own similarity to
    the palette colours.

    Coverage: the spatial sigma doubles from ``sigma_spatial`` until it spans the image. Each
    pixel takes the finest scale where it has about ``min_weight`` effective same-coloured
    samples, blended smoothly with coarser scales where it has fewer, so every pixel gets a
    value even from ~100 samples. ``sigma_color`` is in 0..255 colour units.
    """
    d, valid = _prepare(sparse_depth)
    guide = np.asarray(guide_rgb)
    if guide.ndim == 2:
        guide = guide[..., None]
    if guide.ndim != 3 or guide.shape[:2] != d.shape:
        raise ValueError(
            f"guide image {guide.shape} does not match depth {d.shape} (need (H, W[, C]))"
        )
    if valid.all() or not valid.any():
        return d
    h, w = d.shape
    colours = guide.reshape(h * w, -1).astype(np.float32)
    palette = _palette(colours, n_colors)
    inv_two_sigma2 = np.float32(1.0 / (2.0 * sigma_color**2))

    # Soft assignment of every pixel to the palette, normalized to sum to 1 (the nearest
    # colour is subtracted first so the exponentials cannot all underflow).
    d2 = _sq_dist(colours, palette)
    d2 -= d2.min(1, keepdims=True)
    assign = np.exp(-d2 * inv_two_sigma2)
    assign /= assign.sum(1, keepdims=True)
    assign = assign.reshape(h, w, -1)

    rows, cols = np.nonzero(valid)
    z = d[valid]
    # Colour weight of each sample for each palette layer; the small floor keeps a pixel whose
    # colour no sample shares from ending with zero weight (it then falls back to the
    # spatially nearest samples at the coarsest scale).
    g = np.exp(-_sq_dist(colours[valid.ravel()], palette) * inv_two_sigma2) + np.float32(1e-4)
    gz = g * z[:, None]

    out = np.zeros((h, w), np.float32)
    remaining = np.ones((h, w), np.float32)  # share of each pixel not yet decided
    sigma = float(sigma_spatial)
    while True:
        last = sigma >= max(h, w)
        num = np.einsum("hwk,hwk->hw", assign, _splat_blur_slice(rows, cols, gz, (h, w), sigma))
        den = np.einsum("hwk,hwk->hw", assign, _splat_blur_slice(rows, cols, g, (h, w), sigma))
        est = np.zeros_like(num)
        np.divide(num, den, out=est, where=den > 0)
        conf = (den > 0).astype(np.float32) if last else np.clip(den / min_weight, 0.0, 1.0)
        share = remaining * conf
        out += share * est
        remaining -= share
        if last:
            break
        sigma *= 2.0

    done = remaining < 1.0
    np.divide(out, 1.0 - remaining, out=out, where=done)
    out[~done] = np.nan
    out[valid] = d[valid]
    return out


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

FILL_METHODS: dict[str, Callable[..., np.ndarray]] = {
    "nearest": fill_nearest,
    "inpaint_telea": partial(fill_inpaint, method="telea"),
    "inpaint_ns": partial(fill_inpaint, method="ns"),
    "ipbasic": fill_ipbasic,
}


def fill_holes(depth: np.ndarray, method: str, **kwargs) -> np.ndarray:
    """Fill the holes of ``depth`` with the named method from :data:`FILL_METHODS`."""
    try:
        fill = FILL_METHODS[method]
    except KeyError:
        raise ValueError(
            f"unknown fill method {method!r}; choose from {', '.join(sorted(FILL_METHODS))}"
        ) from None
    return fill(depth, **kwargs)

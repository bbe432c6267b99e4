"""From FocusDepth's relative target depth to what a grasp planner consumes (numpy / open3d).

FocusDepth predicts *relative* disparity (Depth Anything V2 style). A planner needs metres, so
:func:`metric_from_relative` fits ``1 / depth = a * rel + b`` against a reference depth of the
same frame (the sensor's valid pixels, or a completed depth from LingBot / the MetricAnything
teacher). Then, per target: :func:`target_cloud` (points in the camera's optical frame),
:func:`target_geometry` (centroid, oriented box, point count), and, for evaluation,
:func:`geometry_errors` (centroid, extent and Chamfer errors in millimetres).

Choices (none of this is in the FocusDepth paper, which stops at relative depth):

- **Fit space and residual.** The fit is linear in disparity (the relative output is affine in
  true disparity), over the pixels where the reference is valid (finite, > 0) and the relative
  value finite. Residuals are *relative* to the reference disparity,
  ``(a rel + b) / (1 / ref) - 1``, i.e. about the relative depth error, so one threshold
  (``threshold = 0.05``: 5 %) means the same at 0.5 m and at 5 m; the least squares therefore
  weight each pixel by ``1 / disparity^2``.
- **Pixel weights** ``(fg, band, rest) = (10, 3, 1)`` by default: target pixels count ten times,
  the rest of the boundary band of ``metrics.region_masks`` (r = 10 px, mostly the surface the
  target stands on) three times. The background is not dropped: an object spans a small range
  of disparity, so its own pixels pin the offset at the target but barely constrain the scale.
- **Robust estimator.** RANSAC then IRLS: ``ransac_hypotheses`` two-pixel hypotheses (pixels
  drawn with probability proportional to their weight, hypotheses with ``a <= 0`` dropped),
  scored by the total weight of pixels within ``threshold``; from the best, ``iterations``
  rounds of weighted least squares with Tukey biweights ``(1 - (r / threshold)^2)^2`` (0
  beyond the threshold, so gross outliers such as flying pixels or a wrong completion have no
  pull at all, which Huber weights would not give). Deterministic for a given ``seed``.
- **Orientation.** An affine-invariant output has a sign its training loss leaves free (a
  least-squares fit absorbs a negative scale): Depth Anything's weights predict disparity, but
  a DA2 trained from scratch here came out inverted (larger = farther; whole-image correlation
  with 1 / depth about -0.93). The sign is therefore taken from the *whole image* (the
  unweighted covariance of ``rel`` with the reference disparity over all usable pixels) and
  the robust fit runs on the oriented values, so its "scale > 0" check still catches a target
  whose weighted fit disagrees with its own image.
- **Refusals.** Fewer than ``min_pixels`` usable reference pixels, no spread in the relative
  values or a final scale of the other sign than the whole image's raise ``ValueError`` (a
  planner should not get a depth from a fit that could not be made); a poor but possible fit
  is reported in :class:`FitInfo`.
- **Oriented box.** ``method="minimal"`` (default): open3d's minimum-volume oriented box
  (``get_minimal_oriented_bounding_box``); for a planar cloud (a face seen straight on, where
  qhull fails) the minimum-area rectangle in the plane (``cv2.minAreaRect``) with zero
  thickness. ``method="pca"``: the box along the principal axes of all points. PCA is the
  classic choice but is undefined for shapes with equal principal moments, e.g. a cube or a
  square face (any axes are principal, so the box is arbitrary and not tight), which is why it
  is not the default. Both return axes as the columns of a right-handed rotation, ordered by
  decreasing extent.
- **Errors.** Centroid error: distance between the two clouds' centroids; extent error: mean
  absolute difference of the sorted box extents; Chamfer: the mean of the two directed mean
  nearest-neighbour distances, ``(mean_a d(a, B) + mean_b d(b, A)) / 2``; all in mm. The
  ground truth should be the same kind of cloud (the target's ground-truth depth back-projected
  through the same mask) unless a full-surface comparison is wanted.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import open3d as o3d

from depth_perception.core.camera import Intrinsics
from depth_perception.core.metrics import region_masks, valid_depth

#: Per-pixel weights of the fit on (target, rest of the boundary band, everything else).
DEFAULT_WEIGHTS = (10.0, 3.0, 1.0)
#: Inlier threshold / Tukey cutoff on the relative residual (~ relative depth error).
DEFAULT_THRESHOLD = 0.05
BOX_METHODS = ("minimal", "pca")


@dataclass(frozen=True)
class FitInfo:
    """How the scale-and-shift fit went. Residuals are relative (``~`` relative depth error)."""

    scale: float
    shift: float
    n_pixels: int  # usable reference pixels
    n_target: int  # of which on the target
    n_inliers: int  # |relative residual| < threshold under the final fit
    inlier_ratio: float
    target_inlier_ratio: float  # NaN when no target pixel has a reference
    residual: float  # RMS relative residual of the inliers
    iterations: int  # IRLS rounds run


def _wls(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float] | None:
    """Weighted least squares ``min sum w (a x + b - y)^2`` (centred), None if degenerate."""
    sw = w.sum()
    if sw <= 0:
        return None
    mx, my = np.dot(w, x) / sw, np.dot(w, y) / sw
    xc = x - mx
    var = np.dot(w, xc * xc)
    if var <= 1e-300 or np.count_nonzero(w) < 2:
        return None
    a = float(np.dot(w, xc * (y - my)) / var)
    return a, float(my - a * mx)


def _ransac(
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    threshold: float,
    hypotheses: int,
    max_eval: int,
    rng: np.random.Generator,
) -> tuple[float, float] | None:
    """Best two-pixel hypothesis by total weight of pixels within ``threshold``."""
    n = x.size
    pairs = rng.choice(n, size=(hypotheses, 2), p=w / w.sum())
    x1, x2 = x[pairs[:, 0]], x[pairs[:, 1]]
    y1, y2 = y[pairs[:, 0]], y[pairs[:, 1]]
    dx = x1 - x2
    ok = np.abs(dx) > 1e-12 * np.maximum(np.abs(x1), 1.0)
    a = np.divide(y1 - y2, dx, out=np.zeros_like(dx), where=ok)
    ok &= a > 0
    if not ok.any():
        return None
    a, b = a[ok], (y1 - a * x1)[ok]
    idx = rng.choice(n, size=max_eval, replace=False) if n > max_eval else np.arange(n)
    xs, ys, ws = x[idx], y[idx], w[idx]
    scores = np.empty(a.size)
    for s in range(0, a.size, 64):  # bounded memory: 64 x max_eval residuals at a time
        rel = (a[s : s + 64, None] * xs + b[s : s + 64, None]) / ys - 1.0
        scores[s : s + 64] = (np.abs(rel) < threshold) @ ws
    best = int(np.argmax(scores))
    return float(a[best]), float(b[best])


def metric_from_relative(
    rel_disparity: np.ndarray,
    reference_depth: np.ndarray,
    target_mask: np.ndarray,
    r: int = 10,
    weights: tuple[float, float, float] = DEFAULT_WEIGHTS,
    iterations: int = 10,
    threshold: float = DEFAULT_THRESHOLD,
    ransac_hypotheses: int = 256,
    min_pixels: int = 100,
    max_eval: int = 20_000,
    seed: int = 0,
) -> tuple[np.ndarray, FitInfo]:
    """Metric depth (H, W) float32 ``1 / (a * rel + b)`` from relative disparity, fitted
    robustly to ``reference_depth`` (metres, invalid = non-finite or <= 0) with pixel weights
    favouring ``target_mask`` and its boundary band (module notes). NaN where the aligned
    disparity is not positive or ``rel`` is not finite."""
    rel = np.asarray(rel_disparity, dtype=np.float64)
    ref = np.asarray(reference_depth, dtype=np.float64)
    mask = np.asarray(target_mask, dtype=bool)
    if not rel.shape == ref.shape == mask.shape or rel.ndim != 2:
        raise ValueError(f"shapes differ or are not 2-D: {rel.shape}, {ref.shape}, {mask.shape}")
    if len(weights) != 3 or min(weights) < 0:
        raise ValueError(f"weights must be three non-negative numbers, got {weights}")
    if not threshold > 0:
        raise ValueError("threshold must be > 0")
    used = valid_depth(ref) & np.isfinite(rel)
    n = int(np.count_nonzero(used))
    if n < max(min_pixels, 2):
        raise ValueError(
            f"too few reference pixels to fit scale and shift: {n} valid, {min_pixels} needed"
        )
    band = region_masks(mask, r)["boundary"]
    pixel_w = np.where(mask, weights[0], np.where(band, weights[1], weights[2]))
    x, y, w = rel[used], 1.0 / ref[used], pixel_w[used]
    if np.ptp(x) == 0:
        raise ValueError("the relative disparity is constant over the reference pixels")
    if not w.sum() > 0:
        raise ValueError("no reference pixel has a positive weight")
    on_target = mask[used]
    # The output's orientation, from the whole image (module notes): fit on sign * rel.
    sign = -1.0 if np.dot(x - x.mean(), y - y.mean()) < 0 else 1.0
    x = sign * x

    rng = np.random.default_rng(seed)
    fit = _ransac(x, y, w, threshold, ransac_hypotheses, max_eval, rng)
    if fit is None:
        fit = _wls(x, y, w / (y * y))
    if fit is None:
        raise ValueError("scale-and-shift fit is degenerate")
    a, b = fit
    rounds = 0
    while rounds < iterations:
        rounds += 1
        u = ((a * x + b) / y - 1.0) / threshold
        tukey = np.where(np.abs(u) < 1.0, (1.0 - u * u) ** 2, 0.0)
        new = _wls(x, y, w * tukey / (y * y))
        if new is None:
            break
        done = abs(new[0] - a) <= 1e-12 * abs(a) and abs(new[1] - b) <= 1e-12 * max(abs(b), 1e-12)
        a, b = new
        if done:
            break
    if not a > 0:
        raise ValueError(
            f"fitted scale {sign * a:.3g} has the other sign than the whole image's: relative "
            "and reference disagree at the target"
        )

    resid = (a * x + b) / y - 1.0
    inl = np.abs(resid) < threshold
    n_target = int(np.count_nonzero(on_target))
    a = sign * a  # the scale of rel itself
    info = FitInfo(
        scale=a,
        shift=b,
        n_pixels=n,
        n_target=n_target,
        n_inliers=int(np.count_nonzero(inl)),
        inlier_ratio=float(np.mean(inl)),
        target_inlier_ratio=float(np.mean(inl[on_target])) if n_target else float("nan"),
        residual=float(np.sqrt(np.mean(resid[inl] ** 2))) if inl.any() else float("nan"),
        iterations=rounds,
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        disp = a * rel + b
        depth = np.where(disp > 0, 1.0 / disp, np.nan)
    return np.where(valid_depth(depth), depth, np.nan).astype(np.float32), info


def target_cloud(depth: np.ndarray, mask: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """(N, 3) float32 points of the mask's pixels with valid depth, in the optical frame
    (x right, y down, z forward; ``Intrinsics.backproject``), in row-major pixel order."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != np.shape(depth):
        raise ValueError(f"mask {mask.shape} and depth {np.shape(depth)} differ")
    points = intrinsics.backproject(depth)
    return points[mask & valid_depth(depth)].astype(np.float32)


@dataclass(frozen=True)
class TargetGeometry:
    """What a planner reads about one target (metres, optical frame). ``box_rotation``'s
    columns are the box axes, by decreasing ``box_extent`` (full side lengths)."""

    centroid: np.ndarray  # (3,)
    box_center: np.ndarray  # (3,)
    box_rotation: np.ndarray  # (3, 3), right-handed
    box_extent: np.ndarray  # (3,)
    n_points: int


def _pca_box(p: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q = p - c
    _, vecs = np.linalg.eigh(q.T @ q)
    proj = q @ vecs
    lo, hi = proj.min(axis=0), proj.max(axis=0)
    return c + vecs @ ((lo + hi) / 2), vecs, hi - lo


def _planar_box(p: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-area rectangle in the cloud's plane (PCA normal), thickness along the normal."""
    q = p - c
    _, vecs = np.linalg.eigh(q.T @ q)
    normal, e1, e2 = vecs[:, 0], vecs[:, 2], vecs[:, 1]
    plane = np.stack([e1, e2], axis=1)
    rect = cv2.minAreaRect((q @ plane).astype(np.float32))
    (rcx, rcy), _, _ = rect
    corners = cv2.boxPoints(rect).astype(np.float64)
    sides = [corners[1] - corners[0], corners[2] - corners[1]]
    lengths = [float(np.hypot(*s)) for s in sides]
    if lengths[0] > 0:
        d0 = sides[0] / lengths[0]
    elif lengths[1] > 0:
        d0 = np.array([sides[1][1], -sides[1][0]]) / lengths[1]
    else:
        d0 = np.array([1.0, 0.0])
    d1 = np.array([-d0[1], d0[0]])
    axes = np.stack([plane @ d0, plane @ d1, normal], axis=1)
    t = q @ normal
    center = c + plane @ np.array([rcx, rcy]) + normal * (t.min() + t.max()) / 2
    return center, axes, np.array([lengths[0], lengths[1], float(np.ptp(t))])


def _minimal_box(p: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q = p - c
    s = np.linalg.svd(q, compute_uv=False) if len(p) >= 3 else np.zeros(3)
    if len(p) < 4 or s[2] <= 1e-9 * s[0]:
        return _planar_box(p, c)
    try:
        box = o3d.geometry.PointCloud(
            o3d.utility.Vector3dVector(p)
        ).get_minimal_oriented_bounding_box()
    except RuntimeError:  # qhull: degenerate although not flat to 1e-9
        return _planar_box(p, c)
    return np.asarray(box.center), np.asarray(box.R), np.asarray(box.extent)


def target_geometry(points: np.ndarray, method: str = "minimal") -> TargetGeometry:
    """Centroid, oriented box and count of a target cloud (N, 3); non-finite rows are dropped.
    ``method``: ``"minimal"`` (minimum-volume box) or ``"pca"`` (module notes)."""
    if method not in BOX_METHODS:
        raise ValueError(f"method must be one of {BOX_METHODS}, not {method!r}")
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    p = p[np.isfinite(p).all(axis=1)]
    if len(p) == 0:
        raise ValueError("the target cloud has no finite point")
    c = p.mean(axis=0)
    center, rot, extent = (_minimal_box if method == "minimal" else _pca_box)(p, c)
    order = np.argsort(-extent, kind="stable")
    rot, extent = rot[:, order].copy(), extent[order]
    if np.linalg.det(rot) < 0:
        rot[:, 2] *= -1.0
    return TargetGeometry(c, np.asarray(center, dtype=np.float64), rot, extent, len(p))


def _nearest_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact distance from each point of ``a`` to its nearest point of ``b`` (float64).

    The neighbour is found with the ``|a|^2 + |b|^2 - 2 a.b`` expansion in chunks (BLAS speed,
    bounded memory); the distance is then recomputed from the coordinates, so it is exact."""
    shift = b.mean(axis=0)
    a, b = a - shift, b - shift
    b2 = np.einsum("ij,ij->i", b, b)
    rows = max(1, (1 << 22) // len(b))
    out = np.empty(len(a))
    for s in range(0, len(a), rows):
        chunk = a[s : s + rows]
        d2 = b2[None, :] - 2.0 * chunk @ b.T
        nn = np.argmin(d2, axis=1)
        out[s : s + rows] = np.linalg.norm(chunk - b[nn], axis=1)
    return out


def _cloud(points: np.ndarray, name: str) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    p = p[np.isfinite(p).all(axis=1)]
    if len(p) == 0:
        raise ValueError(f"{name} has no finite point")
    return p


def chamfer_mm(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Chamfer distance in mm between clouds in metres: the mean of the two directed
    mean nearest-neighbour distances."""
    a, b = _cloud(a, "first cloud"), _cloud(b, "second cloud")
    return 500.0 * float(_nearest_distances(a, b).mean() + _nearest_distances(b, a).mean())


def geometry_errors(
    pred_points: np.ndarray, gt_points: np.ndarray, method: str = "minimal"
) -> dict[str, float]:
    """``{"centroid_mm", "extent_mm", "chamfer_mm"}`` of a predicted target cloud against the
    ground-truth target surface (module notes)."""
    pred, gt = _cloud(pred_points, "prediction"), _cloud(gt_points, "ground truth")
    gp, gg = target_geometry(pred, method), target_geometry(gt, method)
    return {
        "centroid_mm": 1000.0 * float(np.linalg.norm(gp.centroid - gg.centroid)),
        "extent_mm": 1000.0 * float(np.mean(np.abs(gp.box_extent - gg.box_extent))),
        "chamfer_mm": chamfer_mm(pred, gt),
    }

"""Depth evaluation metrics: dense errors, alignment, contour F1, region and sparse scores.

Conventions (shared with the rest of the package):
- ``pred`` and ``gt`` are float32 depth in metres, shape (H, W); a pixel is *valid* when it is
  finite and > 0, so NaN / 0 / negative / inf all mean "no depth there";
- ``mask`` arguments are boolean (H, W) arrays that further restrict where a metric is evaluated;
- metric depth is scored as is; relative (affine-invariant) depth must be aligned first with
  :func:`align_scale_shift` / :func:`apply_scale_shift` or :func:`align_median_scale` — no function
  here rescales silently, apart from ``region_metrics(..., align=True)`` which says so.

All arithmetic runs in float64 so that tiny test arrays reproduce hand-computed numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np

DELTA_BASE = 1.25

# Depth Pro (apple/ml-depth-pro, eval/boundary_metrics.py, SI_boundary_F1) evaluates ratio
# thresholds linspace(1.05, 1.25, 10) and weights each F1 by its ratio threshold.
# Here thresholds are written as percentages t, i.e. ratio = 1 + t / 100.
DEPTHPRO_BOUNDARY_THRESHOLDS: tuple[float, ...] = tuple(float(t) for t in np.linspace(5, 25, 10))

REGIONS = ("foreground", "boundary", "global")


def valid_depth(depth: np.ndarray) -> np.ndarray:
    """Boolean map of pixels holding a usable depth: finite and strictly positive."""
    depth = np.asarray(depth)
    with np.errstate(invalid="ignore"):
        return np.isfinite(depth) & (depth > 0)


def _as_f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _check_shapes(*arrays: np.ndarray | None) -> None:
    shapes = {np.shape(a) for a in arrays if a is not None}
    if len(shapes) > 1:
        raise ValueError(f"shape mismatch: {sorted(shapes)}")


@dataclass(frozen=True)
class DepthMetrics:
    """Standard monocular-depth error metrics over the evaluated pixels.

    ``n_valid`` counts pixels where both gt and pred are valid (and inside the mask);
    ``pred_coverage`` is ``n_valid`` divided by the number of gt-valid pixels in the mask, so a
    method that refuses to predict is not rewarded by being scored on fewer, easier pixels.
    Every error is NaN when ``n_valid == 0``.
    """

    abs_rel: float
    sq_rel: float
    rmse: float
    rmse_log: float
    mae: float
    log10: float
    delta1: float
    delta2: float
    delta3: float
    n_valid: int
    pred_coverage: float

    @classmethod
    def empty(cls, pred_coverage: float = math.nan) -> DepthMetrics:
        nan = math.nan
        return cls(nan, nan, nan, nan, nan, nan, nan, nan, nan, 0, pred_coverage)

    def as_dict(self) -> dict[str, float]:
        return {k: (int(v) if k == "n_valid" else float(v)) for k, v in asdict(self).items()}


def _metrics_from_values(p: np.ndarray, g: np.ndarray, n_gt: int) -> DepthMetrics:
    """Metrics of matched 1-D float64 arrays of valid predictions ``p`` and ground truth ``g``."""
    coverage = p.size / n_gt if n_gt > 0 else math.nan
    if p.size == 0:
        return DepthMetrics.empty(coverage)
    diff = p - g
    log_diff = np.log(p) - np.log(g)
    ratio = np.maximum(p / g, g / p)
    return DepthMetrics(
        abs_rel=float(np.mean(np.abs(diff) / g)),
        sq_rel=float(np.mean(diff**2 / g)),
        rmse=float(np.sqrt(np.mean(diff**2))),
        rmse_log=float(np.sqrt(np.mean(log_diff**2))),
        mae=float(np.mean(np.abs(diff))),
        log10=float(np.mean(np.abs(log_diff)) / math.log(10.0)),  # |log10 p - log10 g|
        delta1=float(np.mean(ratio < DELTA_BASE)),
        delta2=float(np.mean(ratio < DELTA_BASE**2)),
        delta3=float(np.mean(ratio < DELTA_BASE**3)),
        n_valid=int(p.size),
        pred_coverage=float(coverage),
    )


def depth_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    min_depth: float | None = None,
    max_depth: float | None = None,
) -> DepthMetrics:
    """Metric-depth errors of ``pred`` against ``gt`` where gt (and pred) are valid.

    ``min_depth`` / ``max_depth`` (metres) restrict the *ground truth* range that is scored,
    the usual evaluation cap (e.g. 10 m indoors), without looking at the prediction.
    """
    _check_shapes(pred, gt, mask)
    pred, gt = _as_f64(pred), _as_f64(gt)
    gt_ok = valid_depth(gt)
    if mask is not None:
        gt_ok &= np.asarray(mask, dtype=bool)
    if min_depth is not None:
        gt_ok &= gt >= min_depth
    if max_depth is not None:
        gt_ok &= gt <= max_depth
    both = gt_ok & valid_depth(pred)
    return _metrics_from_values(pred[both], gt[both], int(np.count_nonzero(gt_ok)))


# --------------------------------------------------------------------------- alignment


def align_scale_shift(
    pred: np.ndarray,
    gt: np.ndarray,
    mask: np.ndarray | None = None,
    space: str = "depth",
) -> tuple[float, float]:
    """Least-squares ``(scale, shift)`` that maps a relative prediction onto ``gt``.

    - ``space="depth"``: ``pred`` is affine-invariant depth; minimises
      ``sum (scale * pred + shift - gt)^2`` and the aligned depth is ``scale * pred + shift``.
    - ``space="disparity"``: ``pred`` is affine-invariant *inverse* depth (MiDaS / Depth Anything
      style); minimises ``sum (scale * pred + shift - 1 / gt)^2`` and the aligned depth is
      ``1 / (scale * pred + shift)``. To fit a depth prediction in disparity space pass ``1/pred``.

    Only pixels with valid gt, finite pred (relative values may be zero or negative) and inside
    ``mask`` take part. Use :func:`apply_scale_shift` to get the aligned depth.
    """
    if space not in ("depth", "disparity"):
        raise ValueError(f"space must be 'depth' or 'disparity', not {space!r}")
    _check_shapes(pred, gt, mask)
    pred, gt = _as_f64(pred), _as_f64(gt)
    ok = valid_depth(gt) & np.isfinite(pred)
    if mask is not None:
        ok &= np.asarray(mask, dtype=bool)
    x = pred[ok]
    y = gt[ok] if space == "depth" else 1.0 / gt[ok]
    if x.size < 2 or np.ptp(x) == 0:
        raise ValueError("scale-shift alignment needs at least two distinct valid pred values")
    # Closed-form 2x2 normal equations on centred data: better conditioned than lstsq on [x, 1]
    # when depth values are large compared with their spread.
    mx, my = x.mean(), y.mean()
    xc = x - mx
    scale = float(np.dot(xc, y - my) / np.dot(xc, xc))
    shift = float(my - scale * mx)
    return scale, shift


def apply_scale_shift(
    pred: np.ndarray, scale: float, shift: float, space: str = "depth"
) -> np.ndarray:
    """Aligned float32 depth from a relative prediction (see :func:`align_scale_shift`).

    Non-positive aligned depth / disparity becomes NaN (invalid), as does non-finite input.
    """
    pred = _as_f64(pred)
    with np.errstate(divide="ignore", invalid="ignore"):
        if space == "depth":
            depth = scale * pred + shift
        elif space == "disparity":
            disp = scale * pred + shift
            depth = np.where(disp > 0, 1.0 / disp, np.nan)
        else:
            raise ValueError(f"space must be 'depth' or 'disparity', not {space!r}")
    return np.where(valid_depth(depth), depth, np.nan).astype(np.float32)


def align_median_scale(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Scale ``median(gt) / median(pred)`` over pixels where both are valid (scale-only models)."""
    _check_shapes(pred, gt, mask)
    pred, gt = _as_f64(pred), _as_f64(gt)
    ok = valid_depth(gt) & valid_depth(pred)
    if mask is not None:
        ok &= np.asarray(mask, dtype=bool)
    if not ok.any():
        raise ValueError("median scale alignment needs at least one pixel valid in both maps")
    return float(np.median(gt[ok]) / np.median(pred[ok]))


# --------------------------------------------------------------------------- boundary F1


def _step_ratios(depth: np.ndarray) -> tuple[np.ndarray, ...]:
    """The four directed neighbour ratios far/near (NaN where a pixel is invalid).

    Horizontal pairs (H, W-1): left/right and right/left; vertical pairs (H-1, W): top/bottom
    and bottom/top. Computed once per map so that many thresholds cost only comparisons.
    """
    d = _as_f64(depth)
    d = np.where(valid_depth(d), d, np.nan)
    left, right = d[:, :-1], d[:, 1:]
    top, bottom = d[:-1, :], d[1:, :]
    with np.errstate(invalid="ignore"):
        return (left / right, top / bottom, right / left, bottom / top)


def occluding_contours(depth: np.ndarray, t: float) -> tuple[np.ndarray, ...]:
    """The four directed occluding-contour maps of Depth Pro, for threshold ``t`` percent.

    Only 4-neighbour pairs are compared: each pixel with its right neighbour (horizontal pairs,
    maps of shape (H, W-1)) and with the neighbour below (vertical pairs, shape (H-1, W)).
    A pair is a contour when the depth ratio far/near exceeds ``1 + t/100``; the direction of
    the step is kept, giving four maps::

        (left farther, above farther, right farther, below farther)

    Depth Pro compares inverse depths, whose ratio is the reciprocal of ours, so its four maps are
    ours in a different order — the averaged scores are identical. A pair touching an invalid
    pixel is never a contour (NaN comparisons are False); Depth Pro instead clips depth at 1e-6.
    """
    return _contours_from_ratios(_step_ratios(depth), t)


def _contours_from_ratios(ratios: tuple[np.ndarray, ...], t: float) -> tuple[np.ndarray, ...]:
    threshold = 1.0 + t / 100.0
    with np.errstate(invalid="ignore"):
        return tuple(r > threshold for r in ratios)


def _precision_recall(
    pred: np.ndarray, gt: np.ndarray, thresholds: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Depth Pro precision and recall at each threshold (percent), as arrays.

    Only pairs above the smallest threshold in either map can count at any threshold: keep
    those (a few percent of an image), then every threshold is a cheap comparison.
    """
    _check_shapes(pred, gt)
    ratios = 1.0 + np.asarray(thresholds, dtype=np.float64) / 100.0
    lowest = ratios.min()
    precision = np.zeros_like(ratios)
    recall = np.zeros_like(ratios)
    for p, g in zip(_step_ratios(pred), _step_ratios(gt), strict=True):
        with np.errstate(invalid="ignore"):
            keep = (p > lowest) | (g > lowest)
            p, g = p[keep][:, None], g[keep][:, None]
            p_on, g_on = p > ratios, g > ratios  # (pairs, thresholds)
        hits = np.count_nonzero(p_on & g_on, axis=0)
        precision += 0.25 * hits / np.maximum(np.count_nonzero(p_on, axis=0), 1)
        recall += 0.25 * hits / np.maximum(np.count_nonzero(g_on, axis=0), 1)
    return precision, recall


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    denom = precision + recall
    return np.where(denom > 0, 2.0 * precision * recall / np.where(denom > 0, denom, 1.0), 0.0)


def boundary_precision_recall(pred: np.ndarray, gt: np.ndarray, t: float) -> tuple[float, float]:
    """Depth Pro boundary precision and recall at threshold ``t`` percent.

    Per direction ``k``: precision_k = |P_k & G_k| / max(|P_k|, 1), recall_k = |P_k & G_k| /
    max(|G_k|, 1); both are then averaged over the four directions with weight 1/4 each. As in
    Depth Pro, a direction with no contours contributes 0, so even identical maps only reach 1.0
    when the scene has steps in all four directions (e.g. a near object on a far background).
    """
    precision, recall = _precision_recall(pred, gt, [t])
    return float(precision[0]), float(recall[0])


def boundary_f1(pred: np.ndarray, gt: np.ndarray, t: float) -> float:
    """Depth Pro occluding-contour F1 at threshold ``t`` percent (0 when P + R == 0)."""
    return float(_f1(*_precision_recall(pred, gt, [t]))[0])


def boundary_f1_avg(
    pred: np.ndarray,
    gt: np.ndarray,
    thresholds: Sequence[float] = DEPTHPRO_BOUNDARY_THRESHOLDS,
    weighted: bool = True,
) -> float:
    """F1 averaged over ``thresholds`` (percent), Depth Pro's scale-invariant boundary F1.

    With ``weighted=True`` (Depth Pro) each F1 is weighted by its *ratio* threshold
    ``1 + t/100`` normalised to sum 1, i.e. slightly more weight on the larger steps;
    ``weighted=False`` gives the plain mean.
    """
    ts = np.asarray(thresholds, dtype=np.float64)
    f1 = _f1(*_precision_recall(pred, gt, ts))
    weights = 1.0 + ts / 100.0 if weighted else np.ones_like(ts)
    return float(np.sum(f1 * weights) / np.sum(weights))


# --------------------------------------------------------------------------- region metrics


def region_masks(mask: np.ndarray, r: int = 10) -> dict[str, np.ndarray]:
    """FocusDepth regions of one target instance ``mask`` (validity not applied yet).

    ``foreground`` is the mask itself, ``boundary`` the band ``dilate(mask) - erode(mask)`` with a
    circular structuring element, the pixels with ``dx^2 + dy^2 <= r^2`` (so the band reaches r
    pixels to each side of the contour in every direction), and ``global`` the whole image.
    cv2.MORPH_ELLIPSE is not used on purpose: its rasterisation is not symmetric (for r = 10 it
    holds offset (dy, dx) = (5, 9) but not (9, 5)). OpenCV's default border handling means a
    mask touching the image edge is not eroded there.
    """
    m = np.asarray(mask, dtype=bool)
    if r < 1:
        raise ValueError("band radius r must be >= 1 pixel")
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    kernel = (dx * dx + dy * dy <= r * r).astype(np.uint8)
    m8 = m.astype(np.uint8)
    band = cv2.dilate(m8, kernel).astype(bool) & ~cv2.erode(m8, kernel).astype(bool)
    return {"foreground": m, "boundary": band, "global": np.ones_like(m)}


def region_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    mask: np.ndarray,
    r: int = 10,
    align: bool = False,
    space: str = "depth",
) -> dict[str, DepthMetrics]:
    """Per-region metrics (``foreground``, ``boundary``, ``global``) for one target mask.

    With ``align=True`` the prediction is first fitted to gt with a single scale and shift over
    the *whole* image (in ``space``, see :func:`align_scale_shift`), as done for relative-depth
    models; the regions then score the aligned depth.
    """
    _check_shapes(pred, gt, mask)
    if align:
        scale, shift = align_scale_shift(pred, gt, space=space)
        pred = apply_scale_shift(pred, scale, shift, space=space)
    return {name: depth_metrics(pred, gt, region) for name, region in region_masks(mask, r).items()}


def aggregate_targets(
    per_target: Iterable[Mapping[str, DepthMetrics | Mapping[str, float]]],
) -> dict[str, dict[str, dict[str, float]]]:
    """Median and quartiles of per-target region metrics.

    Input: one ``{region: DepthMetrics or {metric: value}}`` per target (what
    :func:`region_metrics` returns). Output: ``{region: {metric: {"median", "q25", "q75", "n"}}}``
    where NaN values (a target with an empty region) are left out and ``n`` counts the rest.
    """
    values: dict[str, dict[str, list[float]]] = {}
    for target in per_target:
        for region, metrics in target.items():
            d = metrics.as_dict() if isinstance(metrics, DepthMetrics) else dict(metrics)
            for name, v in d.items():
                values.setdefault(region, {}).setdefault(name, []).append(float(v))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for region, by_metric in values.items():
        out[region] = {}
        for name, vs in by_metric.items():
            a = np.asarray(vs, dtype=np.float64)
            a = a[np.isfinite(a)]
            if a.size:
                q25, med, q75 = np.percentile(a, [25, 50, 75])
            else:
                q25 = med = q75 = math.nan
            out[region][name] = {
                "median": float(med),
                "q25": float(q25),
                "q75": float(q75),
                "n": int(a.size),
            }
    return out


# --------------------------------------------------------------------------- sparse / coverage


def sparse_delta1(
    pred_values: np.ndarray | Sequence[float],
    gt_values: np.ndarray | Sequence[float],
    threshold: float = DELTA_BASE,
) -> float:
    """DepthLM-style accuracy at query points: fraction with ``max(p/g, g/p) < threshold``.

    Points without valid gt are dropped; a missing / invalid prediction at a valid-gt point
    counts as a miss (a model that answers nothing must not score well).
    """
    p = _as_f64(pred_values).ravel()
    g = _as_f64(gt_values).ravel()
    _check_shapes(p, g)
    keep = valid_depth(g)
    p, g = p[keep], g[keep]
    if g.size == 0:
        return math.nan
    ok = valid_depth(p)
    hit = np.zeros(g.shape, dtype=bool)
    hit[ok] = np.maximum(p[ok] / g[ok], g[ok] / p[ok]) < threshold
    return float(np.mean(hit))


def coverage(pred: np.ndarray, region: np.ndarray | None = None) -> float:
    """Fraction of ``region`` pixels (default: all) where ``pred`` holds a valid depth."""
    ok = valid_depth(pred)
    if region is not None:
        _check_shapes(pred, region)
        region = np.asarray(region, dtype=bool)
        n = np.count_nonzero(region)
        return float(np.count_nonzero(ok & region) / n) if n else math.nan
    return float(ok.mean()) if ok.size else math.nan


# --------------------------------------------------------------------------- range-capped (radar)

#: Ground-truth ranges of the radar protocol (MetricAnything Table 2, as the radar-camera depth
#: works on nuScenes score): errors over ground truth within 0-50, 0-70 and 0-80 m.
RADAR_RANGE_CAPS_M: tuple[float, ...] = (50.0, 70.0, 80.0)


def range_metric_name(metric: str, cap_m: float) -> str:
    """Summary key of a range-capped error, e.g. ``mae_mm_0-50m``."""
    return f"{metric}_mm_0-{cap_m:g}m"


def range_capped_errors(
    pred: np.ndarray,
    gt: np.ndarray,
    caps_m: Sequence[float] = RADAR_RANGE_CAPS_M,
    mask: np.ndarray | None = None,
) -> dict[str, float]:
    """MAE and RMSE in millimetres over the pixels whose ground truth lies in (0, cap] metres,
    for each cap: ``{"mae_mm_0-50m": ..., "rmse_mm_0-50m": ..., ...}``.

    As :func:`depth_metrics` with ``max_depth=cap``: pixels without a valid prediction are left
    out (:func:`coverage` says how many), NaN when no pixel is scored. One frame's values; a
    run reports their mean over frames.
    """
    out: dict[str, float] = {}
    for cap in caps_m:
        m = depth_metrics(pred, gt, mask, max_depth=float(cap))
        out[range_metric_name("mae", cap)] = m.mae * 1000.0
        out[range_metric_name("rmse", cap)] = m.rmse * 1000.0
    return out


# --------------------------------------------------------------------------- by depth range

#: Edges of the depth ranges of MetricAnything's Table 14 (AbsRel over 0-10, 10-20, 20-30,
#: 30-40, 40-50 and > 50 m of ground truth).
TABLE14_BINS_M: tuple[float, ...] = (0.0, 10.0, 20.0, 30.0, 40.0, 50.0)


def depth_bin_names(edges_m: Sequence[float]) -> list[str]:
    """Summary keys of :func:`binned_abs_rel`: ``abs_rel_0-10m`` ... ``abs_rel_>50m``."""
    edges = [float(e) for e in edges_m]
    names = [f"abs_rel_{lo:g}-{hi:g}m" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    return [*names, f"abs_rel_>{edges[-1]:g}m"] if edges else []


def binned_abs_rel(
    pred: np.ndarray, gt: np.ndarray, edges_m: Sequence[float] = TABLE14_BINS_M
) -> dict[str, float]:
    """AbsRel over the pixels whose ground truth lies in each range ``[e_i, e_i+1)`` and, last,
    ``[e_n, inf)``: ``{"abs_rel_0-10m": ..., ..., "abs_rel_>50m": ...}``. As
    :func:`depth_metrics`, pixels without a valid prediction are left out; NaN for a range
    with no scored pixel. Edges must increase."""
    edges = [float(e) for e in edges_m]
    if any(b <= a for a, b in zip(edges[:-1], edges[1:], strict=True)):
        raise ValueError(f"depth bin edges must increase, got {edges}")
    g = _as_f64(gt)
    uppers = [*edges[1:], math.inf]
    return {
        name: depth_metrics(pred, gt, (g >= lo) & (g < hi)).abs_rel
        for name, lo, hi in zip(depth_bin_names(edges), edges, uppers, strict=True)
    }


def hidden_pixel_metrics(
    pred: np.ndarray, gt_raw: np.ndarray, hidden_mask: np.ndarray
) -> DepthMetrics:
    """Hide-and-seek score on a real capture: metrics only on raw pixels we hid from the model.

    ``gt_raw`` is the sensor depth *before* hiding; the pixels of ``hidden_mask`` that were valid
    there are the only ones with a trustworthy answer the model could not simply copy.
    """
    hidden = np.asarray(hidden_mask, dtype=bool) & valid_depth(gt_raw)
    return depth_metrics(pred, gt_raw, hidden)


def hide_blocks(
    raw_depth: np.ndarray,
    rng: np.random.Generator,
    fraction: float = 0.1,
    block: tuple[int, int] = (24, 24),
    max_blocks: int = 100_000,
) -> tuple[np.ndarray, np.ndarray]:
    """Hide rectangular blocks of *valid* raw depth for hide-and-seek evaluation.

    Blocks of ``block = (height, width)`` pixels are centred on randomly chosen still-visible
    valid pixels (so every block hides something) until at least ``fraction`` of the valid pixels
    are hidden; the last block may overshoot by less than one block area. Returns
    ``(masked_depth, hidden_mask)``: float32 depth with hidden and originally-invalid pixels NaN,
    and the boolean map of hidden pixels, which are all valid in ``raw_depth``.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError("fraction must be in [0, 1]")
    depth = np.asarray(raw_depth, dtype=np.float32)
    valid = valid_depth(depth)
    h, w = valid.shape
    bh, bw = int(block[0]), int(block[1])
    target = math.ceil(fraction * np.count_nonzero(valid))
    covered = np.zeros_like(valid)
    hidden_count = 0
    # One Python iteration per block (tens per image), each a vectorised slice update.
    for _ in range(max_blocks):
        if hidden_count >= target:
            break
        candidates = np.flatnonzero(valid & ~covered)
        if candidates.size == 0:
            break
        v, u = divmod(int(rng.choice(candidates)), w)
        v0, u0 = max(v - bh // 2, 0), max(u - bw // 2, 0)
        v1, u1 = min(v0 + bh, h), min(u0 + bw, w)
        newly = valid[v0:v1, u0:u1] & ~covered[v0:v1, u0:u1]
        covered[v0:v1, u0:u1] = True
        hidden_count += int(np.count_nonzero(newly))
    hidden = covered & valid
    masked = np.where(valid & ~hidden, depth, np.float32(np.nan)).astype(np.float32)
    return masked, hidden

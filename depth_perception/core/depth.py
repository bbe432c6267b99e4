"""Depth units, encodings and validity.

One convention everywhere in the core: depth is a float32 (H, W) array in metres and NaN marks
an invalid pixel. Sensors and ROS disagree on "invalid" (0 in 16UC1, 0/NaN/inf in 32FC1, and
some drivers emit negative values), so every entry point funnels through :func:`valid_mask`:
a pixel is valid iff it is finite and strictly positive.

16UC1 depth (millimetres, as REP-118 and depth_image_proc use) is converted by
:func:`depth_from_mm` / :func:`depth_to_mm`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MM_PER_M = 1000.0
#: Largest depth a 16UC1 image can hold, in metres (65535 mm).
MAX_MM_DEPTH_M = np.iinfo(np.uint16).max / MM_PER_M


def valid_mask(depth: np.ndarray) -> np.ndarray:
    """Boolean mask of valid pixels: finite and > 0."""
    depth = np.asarray(depth)
    if np.issubdtype(depth.dtype, np.integer):
        return depth > 0
    return np.isfinite(depth) & (depth > 0)


def valid_ratio(depth: np.ndarray) -> float:
    """Fraction of valid pixels in ``depth`` (0.0 for an empty array)."""
    depth = np.asarray(depth)
    if depth.size == 0:
        return 0.0
    return float(np.count_nonzero(valid_mask(depth))) / depth.size


def depth_from_mm(depth_mm: np.ndarray) -> np.ndarray:
    """16UC1-style integer millimetres -> float32 metres; 0 (and negatives) -> NaN."""
    depth_mm = np.asarray(depth_mm)
    if not np.issubdtype(depth_mm.dtype, np.integer):
        raise ValueError(
            f"depth_from_mm expects an integer (millimetre) image, got {depth_mm.dtype}"
        )
    # Dividing (not multiplying by 0.001) gives the float32 nearest to the exact value, so
    # depth_to_mm(depth_from_mm(x)) == x for every uint16.
    depth_m = depth_mm.astype(np.float32) / np.float32(MM_PER_M)
    depth_m[depth_mm <= 0] = np.nan
    return depth_m


def depth_to_mm(depth_m: np.ndarray) -> np.ndarray:
    """Float metres -> uint16 millimetres, rounded to the nearest millimetre.

    0 means "no measurement" in 16UC1, so invalid pixels (NaN, inf, <= 0) become 0. Depths that
    do not fit in a uint16 (beyond 65.535 m, after rounding) also become 0: clamping them to
    65535 would publish a fake measurement, while 0 honestly says "no data here". Depths below
    0.5 mm round to 0 and are therefore invalid too.
    """
    depth_m = np.asarray(depth_m)
    # float64 so that x * 1000 does not pick up float32 rounding before np.rint.
    mm = np.rint(depth_m.astype(np.float64) * MM_PER_M)
    keep = np.isfinite(mm) & (mm > 0) & (mm <= np.iinfo(np.uint16).max)
    out = np.zeros(depth_m.shape, dtype=np.uint16)
    out[keep] = mm[keep].astype(np.uint16)
    return out


def sanitize_depth(depth: np.ndarray) -> np.ndarray:
    """Any depth image -> a new float32 metre array with NaN at every invalid pixel.

    Integer images are taken as millimetres (the 16UC1 convention); float images as metres.
    """
    depth = np.asarray(depth)
    if np.issubdtype(depth.dtype, np.integer):
        return depth_from_mm(depth)
    out = depth.astype(np.float32, copy=True)
    # Only the invalid pixels that are not NaN yet are written: a scattered write over every
    # hole (a quarter of a VGA frame) costs ~1 ms, checking the few zeros / negatives / infs
    # that need it ~0.1 ms, and a decoded image's holes are NaN already.
    with np.errstate(invalid="ignore"):
        fix = ~((out > 0) & (out < np.inf)) & ~np.isnan(out)
    if fix.any():
        out[fix] = np.nan
    return out


@dataclass(frozen=True)
class HoleStats:
    """How much of a depth image is missing, and in what kind of holes."""

    valid_ratio: float
    n_holes: int  # 8-connected components of invalid pixels
    largest_hole_px: int
    mean_hole_px: float  # 0.0 when there are no holes


def hole_stats(depth: np.ndarray) -> HoleStats:
    """Summarise the invalid regions of ``depth`` (8-connectivity, image border not special)."""
    invalid = (~valid_mask(depth)).astype(np.uint8)
    if invalid.ndim != 2:
        raise ValueError(f"hole_stats expects an (H, W) depth image, got shape {invalid.shape}")
    n_labels, _, stats, _ = cv2.connectedComponentsWithStats(invalid, connectivity=8)
    # Label 0 is the background, i.e. the valid pixels.
    areas = stats[1:n_labels, cv2.CC_STAT_AREA]
    return HoleStats(
        valid_ratio=valid_ratio(depth),
        n_holes=int(areas.size),
        largest_hole_px=int(areas.max()) if areas.size else 0,
        mean_hole_px=float(areas.mean()) if areas.size else 0.0,
    )

"""Sparse metric depth prompts for prompt-conditioned depth models (e.g. MetricAnything).

A *prompt* is a sparse depth map aligned with the RGB image: float32 metres, NaN where no
measurement exists. These helpers turn 3D points (LiDAR, SfM, radar) into such maps and
derive the prompt variants used by the evaluation protocols (LiDAR-like scan lines, 100
extreme points, 8x / 16x downsampled depth).

Prompts from real sensors (what the nodes and the evaluation build for a frame): a LiDAR or
radar cloud in its own frame is moved into the camera's optical frame by a 4x4 extrinsic and
projected with a z-buffer (:func:`cloud_prompt`; points behind the camera, outside the image or
non-finite are dropped and counted in :class:`ProjectionCounts`); the RGB-D sensor's valid
depth is a prompt as it is; several sources merge with the nearest depth winning a pixel.

Points are projected with the pinhole model of :class:`Intrinsics` (no distortion), the exact
inverse of :meth:`Intrinsics.backproject`, so a back-projected depth map projects back onto
itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from depth_perception.core.camera import Intrinsics
from depth_perception.core.depth import sanitize_depth, valid_mask


def _as_depth(depth: np.ndarray) -> np.ndarray:
    """float32 metre copy of a (H, W) depth map with NaN at every invalid pixel."""
    depth = sanitize_depth(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth.shape}")
    return depth


def transform_points(points: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Apply the 4x4 rigid transform ``T`` to points (..., 3): ``p' = R p + t``.

    Computed in float64; the result keeps float32 when the input is float32 (so large
    clouds stay compact) and is float64 otherwise. NaN points stay NaN.
    """
    points = np.asarray(points)
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"T must be 4x4, got {T.shape}")
    if points.shape[-1] != 3:
        raise ValueError(f"points must be (..., 3), got {points.shape}")
    out = points.astype(np.float64) @ T[:3, :3].T + T[:3, 3]
    return out.astype(np.result_type(points.dtype, np.float32))


#: Where a prompt can come from: a LiDAR or radar point cloud projected into the camera, or the
#: RGB-D sensor's own depth (its valid pixels). Any combination: the nearest depth wins a pixel.
PROMPT_SOURCES = ("lidar", "radar", "sensor_depth")
#: The point-cloud sources among them (each needs its sensor -> camera transform).
CLOUD_SOURCES = ("lidar", "radar")
#: A scan serves camera frames whose stamps are at most this many seconds from its own (a
#: 10 Hz LiDAR's newest scan is up to 0.1 s old, plus transport); the nodes' default.
DEFAULT_MAX_PROMPT_AGE = 0.25


@dataclass
class ProjectionCounts:
    """What became of the points of one cloud projected into the image.

    ``points`` = ``non_finite`` + ``behind`` + ``outside`` + ``in_image``; of the points in the
    image, ``pixels`` won their pixel (the rest were hidden behind a nearer point).
    """

    points: int = 0  # points given
    non_finite: int = 0  # a NaN / inf coordinate (e.g. no return of that beam)
    behind: int = 0  # z <= 0 in the camera's optical frame
    outside: int = 0  # projected outside the image
    in_image: int = 0  # landed on a pixel
    pixels: int = 0  # pixels of the prompt they gave (z-buffer winners)

    @property
    def discarded(self) -> int:
        return self.non_finite + self.behind + self.outside


def project_points(points_cam: np.ndarray, intr: Intrinsics) -> tuple[np.ndarray, ProjectionCounts]:
    """Project points in the camera optical frame into a sparse depth map (H, W) float32.

    Each point lands in the pixel whose centre is nearest to its projection. Points behind
    the camera (z <= 0), non-finite points and points falling outside the image are dropped
    and counted. When several points share a pixel the nearest one wins (a z-buffer), as a
    real sensor would only see the front surface. Pixels without a point are NaN.
    """
    pts = np.asarray(points_cam, dtype=np.float64).reshape(-1, 3)
    counts = ProjectionCounts(points=int(pts.shape[0]))
    out = np.full((intr.height, intr.width), np.nan, dtype=np.float32)
    finite = np.isfinite(pts).all(axis=1)
    in_front = finite & (pts[:, 2] > 0)
    counts.non_finite = int(pts.shape[0] - np.count_nonzero(finite))
    counts.behind = int(np.count_nonzero(finite) - np.count_nonzero(in_front))
    pts = pts[in_front]
    if pts.shape[0] == 0:
        return out, counts
    uv, z = intr.project(pts)
    u = np.rint(uv[:, 0])
    v = np.rint(uv[:, 1])
    inside = (u >= 0) & (u < intr.width) & (v >= 0) & (v < intr.height)
    counts.in_image = int(np.count_nonzero(inside))
    counts.outside = int(pts.shape[0] - counts.in_image)
    flat = v[inside].astype(np.int64) * intr.width + u[inside].astype(np.int64)
    z = z[inside]
    # Sort by pixel, then by depth: the first entry of every pixel group is its nearest point.
    order = np.lexsort((z, flat))
    first_pixels, first = np.unique(flat[order], return_index=True)
    out.reshape(-1)[first_pixels] = z[order][first].astype(np.float32)
    counts.pixels = int(first_pixels.size)
    return out, counts


def points_to_sparse_depth(points_cam: np.ndarray, intr: Intrinsics) -> np.ndarray:
    """:func:`project_points` without the counts."""
    return project_points(points_cam, intr)[0]


def cloud_xyz(cloud: np.ndarray) -> np.ndarray:
    """(N, 3) float64 x, y, z of a point cloud: a structured array with x, y, z fields (any
    layout, as a PointCloud2 decodes) or an (N, 3) array. NaN points are kept (and counted by
    :func:`project_points`). A cloud without x, y or z raises ValueError naming its fields."""
    cloud = np.asarray(cloud)
    names = cloud.dtype.names
    if names is None:
        if cloud.ndim < 1 or cloud.shape[-1] != 3:
            raise ValueError(f"a point cloud needs x, y, z: got an array of shape {cloud.shape}")
        return cloud.reshape(-1, 3).astype(np.float64)
    missing = [c for c in "xyz" if c not in names]
    if missing:
        raise ValueError(
            f"the point cloud has no {', '.join(missing)} field(s); its fields are {list(names)}"
        )
    flat = cloud.reshape(-1)
    for c in "xyz":
        if flat.dtype[c].shape != ():
            raise ValueError(f"the point cloud's {c} field is not a scalar ({flat.dtype[c]})")
    return np.stack([flat["x"], flat["y"], flat["z"]], axis=-1).astype(np.float64)


def cloud_prompt(
    cloud: np.ndarray, camera_T_sensor: np.ndarray, intr: Intrinsics
) -> tuple[np.ndarray, ProjectionCounts]:
    """A LiDAR / radar cloud in its own frame -> (sparse depth in the camera, counts).

    ``camera_T_sensor`` (4x4) maps the sensor's points into the camera's optical frame
    (``Calibration.transform(camera_frame, sensor_frame)``)."""
    return project_points(transform_points(cloud_xyz(cloud), camera_T_sensor), intr)


def sensor_depth_prompt(depth: np.ndarray) -> np.ndarray:
    """The RGB-D sensor's depth as a prompt: its valid pixels, NaN elsewhere."""
    return _as_depth(depth)


def merge_prompts(prompts: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Several prompts of one image as one: the nearest depth wins each pixel (a z-buffer over
    every source, the same as projecting all their points at once); NaN where none has one."""
    out = np.full(shape, np.nan, dtype=np.float32)
    for prompt in prompts:
        if prompt.shape != shape:
            raise ValueError(f"prompt of shape {prompt.shape} for an image of shape {shape}")
        out = np.fmin(out, prompt)
    return out


def sample_prompt_points(
    sparse_depth: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` distinct valid pixels uniformly at random from a (sparse) depth map.

    Returns ``(uv, z)``: uv (k, 2) int64 pixel coordinates (u = column, v = row) and z (k,)
    float32 depths, with k = min(n, number of valid pixels). Ordered by flat pixel index so
    the result does not depend on the order the draw happened in.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    depth = _as_depth(sparse_depth)
    flat = np.flatnonzero(valid_mask(depth))
    k = min(int(n), flat.size)
    chosen = np.sort(rng.choice(flat, size=k, replace=False))
    v, u = np.divmod(chosen, depth.shape[1])
    uv = np.stack([u, v], axis=1).astype(np.int64)
    return uv, depth.reshape(-1)[chosen]


def extreme_prompt(depth: np.ndarray, rng: np.random.Generator, n: int = 100) -> np.ndarray:
    """Keep ``n`` random valid pixels of ``depth`` (all of them if fewer), NaN elsewhere.

    The "extreme" sparsity protocol: a handful of metric anchors, e.g. 100 points.
    """
    depth = _as_depth(depth)
    uv, z = sample_prompt_points(depth, n, rng)
    out = np.full_like(depth, np.nan)
    out[uv[:, 1], uv[:, 0]] = z
    return out


def lidar_like_prompt(
    depth: np.ndarray,
    rng: np.random.Generator,
    n_lines: int = 16,
    col_step: int = 1,
) -> np.ndarray:
    """Keep the valid pixels on ``n_lines`` horizontal scan lines, NaN elsewhere.

    Mimics a spinning LiDAR projected into the image: evenly spaced rows (the beams) with a
    random common phase, so repeated draws do not always hit the same rows. ``col_step > 1``
    thins each line horizontally (coarser azimuth resolution), also with a random phase.
    """
    depth = _as_depth(depth)
    h, w = depth.shape
    if n_lines < 1 or col_step < 1:
        raise ValueError("n_lines and col_step must be >= 1")
    n_lines = min(int(n_lines), h)
    spacing = h / n_lines
    rows = np.floor(rng.uniform(0.0, spacing) + spacing * np.arange(n_lines)).astype(np.int64)
    rows = np.clip(rows, 0, h - 1)
    cols = np.arange(int(rng.integers(0, col_step)), w, col_step)
    out = np.full_like(depth, np.nan)
    out[np.ix_(rows, cols)] = depth[np.ix_(rows, cols)]
    return out


def downsampled_prompt(depth: np.ndarray, factor: int, reduce: str = "mean") -> np.ndarray:
    """Low-resolution depth, one value per ``factor`` x ``factor`` cell (e.g. 8x / 16x).

    NaN-aware: a cell holds the mean (or median) of its *valid* pixels and is NaN only if it
    has none, like a low-resolution ToF/LiDAR depth map. Sizes that are not multiples of
    ``factor`` get a partial last row/column of cells (ceil division). Returns the low-res map
    of shape (ceil(H / factor), ceil(W / factor)).
    """
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    if reduce not in ("mean", "median"):
        raise ValueError(f"reduce must be 'mean' or 'median', got {reduce!r}")
    depth = _as_depth(depth)
    h, w = depth.shape
    hc, wc = -(-h // factor), -(-w // factor)
    padded = np.full((hc * factor, wc * factor), np.nan, dtype=np.float32)
    padded[:h, :w] = depth
    # (hc, f, wc, f) -> (hc, wc, f*f): every cell's pixels on the last axis.
    cells = padded.reshape(hc, factor, wc, factor).transpose(0, 2, 1, 3).reshape(hc, wc, -1)
    valid = ~np.isnan(cells)
    count = valid.sum(axis=-1)
    out = np.full((hc, wc), np.nan, dtype=np.float32)
    has = count > 0
    if reduce == "mean":
        total = np.where(valid, cells, 0.0).sum(axis=-1, dtype=np.float64)
        out[has] = (total[has] / count[has]).astype(np.float32)
    else:
        out[has] = np.nanmedian(cells[has], axis=-1).astype(np.float32)
    return out

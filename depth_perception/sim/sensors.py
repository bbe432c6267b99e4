"""Sensor models for the simulator: RGB-D camera, evaluation corruptions, LiDAR and radar.

Every model is a ``@dataclass`` config plus a pure function that takes an explicit
``np.random.Generator``: the same inputs and seed always give the same measurement, and each
physical effect can be switched off in the config (so tests can isolate one effect).

- :func:`simulate_rgbd` turns a rendered ground-truth view into the raw depth of a consumer
  active-stereo / structured-light camera, with the holes LingBot-Depth learns to fill
  (glass, mirrors, grazing angles, projector shadows, range limits, edge speckle) and
  depth-dependent noise and disparity quantization.
- :func:`corrupt_depth` / :func:`sparse_sfm_points` implement the depth-completion
  evaluation inputs (block-wise masking + noise at four levels; sparse SfM-like points).
- :func:`simulate_lidar` / :func:`simulate_radar` cast rays into a :class:`Scene` and return
  point clouds in the sensor frame (x forward, y left, z up, as Velodyne/Ouster and radar
  drivers publish) as numpy structured arrays.

Depth convention: float32 metres, NaN = invalid. Material codes follow
``sim.scenes.MATERIALS``: 0 diffuse, 1 specular, 2 transparent, 255 no hit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

from depth_perception.core.camera import Intrinsics
from depth_perception.core.depth import sanitize_depth, valid_mask

if TYPE_CHECKING:
    from depth_perception.sim.render import RenderedView

# Material codes of the per-pixel / per-instance maps (index into sim.scenes.MATERIALS).
DIFFUSE, SPECULAR, TRANSPARENT = 0, 1, 2
NO_HIT = 255


class RaycastScene(Protocol):
    """What the LiDAR / radar models need from a scene (``sim.scenes.Scene`` provides it):
    ``raycast`` returning hits with ``t``, ``instance_id`` and ``normal``, and the
    per-instance material code table ``material_of_id``."""

    material_of_id: np.ndarray

    def raycast(self, origins: np.ndarray, directions: np.ndarray): ...


# --------------------------------------------------------------------------------------------
# RGB-D camera (active stereo / structured light)
# --------------------------------------------------------------------------------------------


@dataclass
class RGBDSensorConfig:
    """A consumer structured-light / active-stereo depth camera (Kinect, RealSense, Orbbec).

    Defaults are Kinect-like: 7.5 cm projector baseline, 8 sub-pixel disparity steps and the
    axial noise model sigma(z) = a + b (z - c)^2 of Nguyen et al. (2012).
    """

    # Projector position along the camera's +x axis (m). Negative puts it on the left.
    baseline_m: float = 0.075
    min_depth_m: float = 0.3
    max_depth_m: float = 6.0
    range_limits: bool = True
    # Axial (z) noise sigma(z) = noise_a + noise_b * (z - noise_c)^2, in metres.
    noise: bool = True
    noise_a: float = 0.0012
    noise_b: float = 0.0019
    noise_c: float = 0.4
    # Disparity f*B/z is rounded to 1/subpixel_steps px; 0 disables quantization.
    subpixel_steps: int = 8
    # Pixels the projector cannot light (occluded from the projector) get no depth.
    shadows: bool = True
    shadow_tolerance_px: float = 0.25
    # Glass returns no pattern at all; mirrors/metal mostly saturate or reflect it away.
    transparent_invalid: bool = True
    specular_dropout: float = 0.85
    specular_noise_scale: float = 3.0
    # Surfaces seen at more than this angle from their normal lose the pattern; None = off.
    grazing_max_angle_deg: float | None = 78.0
    # Random speckle dropouts near depth discontinuities (matching windows straddle them).
    edge_dropout_prob: float = 0.3
    edge_jump_rel: float = 0.05
    edge_width_px: int = 1

    def sigma(self, z: np.ndarray | float) -> np.ndarray:
        """Axial noise standard deviation (m) at depth ``z`` (m)."""
        z = np.asarray(z, dtype=np.float64)
        return self.noise_a + self.noise_b * (z - self.noise_c) ** 2


def projector_shadow_mask(
    depth: np.ndarray, fx: float, baseline_m: float, tolerance_px: float = 0.25
) -> np.ndarray:
    """Pixels visible to the camera but hidden from a projector ``baseline_m`` along +x.

    In a rectified pair a point at column u with disparity d = fx*B/z lies on projector
    column p(u) = u - d. Its projector ray crosses the camera rows at columns > u (the
    projector is on the right), and a surface there blocks the ray iff it covers a smaller
    projector column. Pixel u' covers the surface patch of columns [u' - 1/2, u' + 1/2],
    i.e. projector columns from p(u') - 1/2, so u is shadowed iff
    min over u' > u of p(u') - 1/2 < p(u) (minus a small tolerance). That is one reverse
    cumulative minimum per row, exact and free of z-buffer gaps. A foreground object at z_fg
    in front of a background at z_bg thus casts a shadow of width fx*B*(1/z_fg - 1/z_bg) px
    on its left side (right side for a negative baseline).
    """
    z = sanitize_depth(depth)
    if baseline_m < 0:
        # Mirror the image so the projector is on the right, then mirror the answer back.
        return projector_shadow_mask(z[:, ::-1], fx, -baseline_m, tolerance_px)[:, ::-1]
    valid = valid_mask(z)
    u = np.arange(z.shape[1], dtype=np.float64)
    p = np.where(valid, u - fx * baseline_m / np.where(valid, z, 1.0), np.inf)
    # suffix_min[:, i] = min(p[:, i+1:]), +inf at the last column.
    suffix_min = np.full_like(p, np.inf)
    suffix_min[:, :-1] = np.minimum.accumulate(p[:, :0:-1], axis=1)[:, ::-1]
    return valid & (suffix_min - 0.5 < p - tolerance_px)


def depth_edges(depth: np.ndarray, jump_rel: float) -> np.ndarray:
    """Pixels next to a depth discontinuity (relative jump > ``jump_rel``) or a hole edge."""
    z = sanitize_depth(depth)
    valid = valid_mask(z)
    edges = np.zeros(z.shape, dtype=bool)
    for axis in (0, 1):
        a = np.swapaxes(z, 0, axis)
        va = np.swapaxes(valid, 0, axis)
        with np.errstate(invalid="ignore"):
            jump = np.abs(a[1:] - a[:-1]) > jump_rel * np.fmin(a[1:], a[:-1])
        # A valid pixel beside an invalid one is an edge too (silhouettes against no-hit).
        jump |= va[1:] != va[:-1]
        e = np.swapaxes(edges, 0, axis)
        e[1:] |= jump
        e[:-1] |= jump
    return edges & valid


def _view_cosine(normal_cam: np.ndarray, intr: Intrinsics) -> np.ndarray:
    """|cos| of the angle between each pixel's viewing ray and the surface normal."""
    u, v = intr.pixel_grid()
    rays = np.stack(
        [(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones_like(u)], axis=-1
    ).astype(np.float64)
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    n = np.asarray(normal_cam, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # zero normals (no hit) -> NaN
        n = n / np.linalg.norm(n, axis=-1, keepdims=True)
    return np.abs(np.sum(rays * n, axis=-1))


def degrade_depth(
    depth: np.ndarray,
    intr: Intrinsics,
    cfg: RGBDSensorConfig,
    rng: np.random.Generator,
    material: np.ndarray | None = None,
    normal_cam: np.ndarray | None = None,
) -> np.ndarray:
    """Ground-truth depth (H, W) -> raw sensor depth float32 (NaN = hole).

    ``material`` (H, W) uint8 codes and ``normal_cam`` (H, W, 3) optical-frame normals are
    optional: without them every pixel is diffuse and no grazing-angle dropout is applied.
    Holes come from the *true* geometry (what the sensor physically cannot see); noise and
    quantization are then applied to the surviving pixels.
    """
    z = sanitize_depth(depth).astype(np.float64)
    if z.shape != (intr.height, intr.width):
        raise ValueError(f"depth {z.shape} does not match intrinsics {intr.width}x{intr.height}")
    holes = ~valid_mask(z)
    z = np.where(holes, np.nan, z)
    specular = np.zeros(z.shape, dtype=bool)

    if cfg.range_limits:
        with np.errstate(invalid="ignore"):
            holes |= (z < cfg.min_depth_m) | (z > cfg.max_depth_m)
    if cfg.shadows and cfg.baseline_m != 0:
        holes |= projector_shadow_mask(z, intr.fx, cfg.baseline_m, cfg.shadow_tolerance_px)
    if material is not None:
        material = np.asarray(material)
        specular = material == SPECULAR
        if cfg.transparent_invalid:
            holes |= material == TRANSPARENT
        holes |= specular & (rng.random(z.shape) < cfg.specular_dropout)
    if normal_cam is not None and cfg.grazing_max_angle_deg is not None:
        cos = _view_cosine(normal_cam, intr)
        with np.errstate(invalid="ignore"):
            holes |= cos < np.cos(np.radians(cfg.grazing_max_angle_deg))
    if cfg.edge_dropout_prob > 0:
        edges = depth_edges(z, cfg.edge_jump_rel)
        if cfg.edge_width_px > 1:
            kernel = np.ones((cfg.edge_width_px, cfg.edge_width_px), np.uint8)
            edges = cv2.dilate(edges.astype(np.uint8), kernel).astype(bool)
        holes |= edges & (rng.random(z.shape) < cfg.edge_dropout_prob)

    measured = z
    if cfg.noise:
        sigma = cfg.sigma(z) * np.where(specular, cfg.specular_noise_scale, 1.0)
        measured = z + sigma * rng.standard_normal(z.shape)
    if cfg.subpixel_steps > 0 and cfg.baseline_m != 0:
        fb = intr.fx * abs(cfg.baseline_m)
        with np.errstate(divide="ignore", invalid="ignore"):
            disparity = np.rint(fb / measured * cfg.subpixel_steps) / cfg.subpixel_steps
            measured = np.where(disparity > 0, fb / disparity, np.nan)
    with np.errstate(invalid="ignore"):
        holes |= ~(measured > 0)
    return np.where(holes, np.nan, measured).astype(np.float32)


def simulate_rgbd(
    view: RenderedView, cfg: RGBDSensorConfig, rng: np.random.Generator
) -> np.ndarray:
    """Raw depth (H, W) float32, NaN = hole, of an RGB-D camera looking at ``view``.

    ``view`` is a :class:`sim.render.RenderedView` (any object with ``depth``,
    ``intrinsics`` and optionally ``material`` / ``normal_cam`` works). Convert to 16UC1 with
    :func:`core.depth.depth_to_mm`.
    """
    return degrade_depth(
        view.depth,
        view.intrinsics,
        cfg,
        rng,
        material=getattr(view, "material", None),
        normal_cam=getattr(view, "normal_cam", None),
    )


# --------------------------------------------------------------------------------------------
# Depth-completion evaluation protocol (LingBot-Depth style)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorruptionLevel:
    """One difficulty level of the block-masking + noise corruption."""

    # Fraction of the image area covered by removed rectangles.
    block_fraction: float
    # Rectangle sides are drawn uniformly in [block_min, block_max] * min(H, W).
    block_min: float
    block_max: float
    # Multiplicative Gaussian depth noise: z * (1 + noise_rel * N(0, 1)).
    noise_rel: float
    # Extra isolated pixel dropouts outside the blocks.
    pixel_dropout: float


# The LingBot-Depth report names the levels (easy/medium/hard/extreme: block-wise masking plus
# noise, growing with level) but its exact numbers could not be found, so these are our own.
# block_max**2 (the largest block, as a share of the image) stays below the gap between
# consecutive block fractions, which keeps the levels strictly monotone in hole fraction.
CORRUPTION_LEVELS: dict[str, CorruptionLevel] = {
    "easy": CorruptionLevel(0.10, 0.05, 0.15, noise_rel=0.005, pixel_dropout=0.0),
    "medium": CorruptionLevel(0.30, 0.05, 0.20, noise_rel=0.01, pixel_dropout=0.01),
    "hard": CorruptionLevel(0.50, 0.05, 0.25, noise_rel=0.02, pixel_dropout=0.03),
    "extreme": CorruptionLevel(0.75, 0.05, 0.30, noise_rel=0.04, pixel_dropout=0.05),
}


def block_mask(
    shape: tuple[int, int],
    fraction: float,
    side_range: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Boolean mask of random rectangles covering at least ``fraction`` of the image.

    Rectangles are added one at a time (a loop over blocks, not pixels) until the covered
    area reaches ``fraction``; the overshoot is at most one rectangle.
    """
    h, w = shape
    mask = np.zeros(shape, dtype=bool)
    target = int(np.ceil(fraction * h * w))
    short = min(h, w)
    covered = 0
    while covered < target:
        bh, bw = np.maximum(1, np.rint(rng.uniform(*side_range, size=2) * short)).astype(int)
        bh, bw = min(bh, h), min(bw, w)
        y0 = int(rng.integers(0, h - bh + 1))
        x0 = int(rng.integers(0, w - bw + 1))
        block = mask[y0 : y0 + bh, x0 : x0 + bw]
        covered += int(block.size - np.count_nonzero(block))
        block[:] = True
    return mask


def corrupt_depth(depth: np.ndarray, level: str, rng: np.random.Generator) -> np.ndarray:
    """Evaluation corruption of a (clean) depth map at ``level`` in :data:`CORRUPTION_LEVELS`.

    Removes random rectangles and isolated pixels and adds relative Gaussian noise; existing
    holes stay holes. Returns float32 metres, NaN = hole.
    """
    if level not in CORRUPTION_LEVELS:
        raise ValueError(f"unknown level {level!r}; choose from {list(CORRUPTION_LEVELS)}")
    lv = CORRUPTION_LEVELS[level]
    z = sanitize_depth(depth)
    holes = ~valid_mask(z)
    holes |= block_mask(z.shape, lv.block_fraction, (lv.block_min, lv.block_max), rng)
    holes |= rng.random(z.shape) < lv.pixel_dropout
    noisy = z * (1.0 + lv.noise_rel * rng.standard_normal(z.shape)).astype(np.float32)
    with np.errstate(invalid="ignore"):
        holes |= ~(noisy > 0)
    return np.where(holes, np.float32(np.nan), noisy).astype(np.float32)


def _gumbel_top_k(weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``k`` draws without replacement with probability proportional to weights.

    Gumbel-top-k: the k largest log(w) + Gumbel noise are a weighted sample without
    replacement, in one vectorized pass (no sequential renormalisation).
    """
    keys = np.log(weights) - np.log(-np.log(rng.random(weights.shape)))
    k = min(k, weights.size)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    return np.argpartition(-keys, k - 1)[:k]


def sparse_sfm_points(
    depth: np.ndarray,
    rgb: np.ndarray,
    rng: np.random.Generator,
    n: int = 1000,
    noise_rel: float = 0.01,
    texture_floor: float = 0.02,
) -> np.ndarray:
    """Sparse SfM-like depth: ``n`` points biased toward textured pixels, NaN elsewhere.

    Structure-from-motion only triangulates features it can match, i.e. corners and texture,
    so pixels are drawn (without replacement) with probability proportional to the Shi-Tomasi
    corner response of the RGB image plus a small ``texture_floor`` (a few points still land
    on flat areas). Depths get relative Gaussian noise ``noise_rel`` (triangulation error).
    """
    z = sanitize_depth(depth)
    rgb = np.asarray(rgb)
    if rgb.shape[:2] != z.shape:
        raise ValueError(f"rgb {rgb.shape[:2]} and depth {z.shape} differ in size")
    gray = cv2.cvtColor(rgb.astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    response = np.maximum(cv2.cornerMinEigenVal(gray, blockSize=3, ksize=3), 0.0)
    response /= max(float(response.max()), 1e-12)
    flat = np.flatnonzero(valid_mask(z))
    weights = response.reshape(-1)[flat].astype(np.float64) + texture_floor
    chosen = flat[_gumbel_top_k(weights, n, rng)]
    out = np.full(z.shape, np.nan, dtype=np.float32)
    values = z.reshape(-1)[chosen] * (1.0 + noise_rel * rng.standard_normal(chosen.size))
    out.reshape(-1)[chosen] = values.astype(np.float32)
    return out


# --------------------------------------------------------------------------------------------
# LiDAR and radar
# --------------------------------------------------------------------------------------------

LIDAR_DTYPE = np.dtype(
    [("x", np.float32), ("y", np.float32), ("z", np.float32), ("intensity", np.float32),
     ("ring", np.uint16)]
)  # fmt: skip
RADAR_DTYPE = np.dtype(
    [("x", np.float32), ("y", np.float32), ("z", np.float32), ("rcs", np.float32)]
)


def _hit_materials(scene: RaycastScene, instance_id: np.ndarray) -> np.ndarray:
    """Material code of every hit (NO_HIT where instance_id is 0)."""
    table = np.asarray(scene.material_of_id, dtype=np.uint8)
    ids = np.asarray(instance_id, dtype=np.int64)
    out = np.full(ids.shape, NO_HIT, dtype=np.uint8)
    hit = ids > 0
    out[hit] = table[ids[hit]]
    return out


def _cast_through_glass(
    scene: RaycastScene, origins: np.ndarray, dirs: np.ndarray, max_hits: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cast rays; rays hitting glass continue behind it (up to ``max_hits`` glass surfaces;
    a pane has two: front and back).

    Returns total range (inf = no return), world normal and material of the final hit.
    Re-casts only the rays that hit glass, so the bulk is one vectorized raycast.
    """
    hits = scene.raycast(origins, dirs)
    rng_m = np.asarray(hits.t, dtype=np.float64).copy()
    normal = np.asarray(hits.normal, dtype=np.float64).copy()
    material = _hit_materials(scene, hits.instance_id)
    eps = 1e-4  # start just behind the pane so the ray does not hit it again
    for _ in range(max_hits):
        glass = np.flatnonzero(material == TRANSPARENT)
        if glass.size == 0:
            break
        start = origins[glass] + dirs[glass] * (rng_m[glass] + eps)[:, None]
        again = scene.raycast(start, dirs[glass])
        rng_m[glass] += eps + np.asarray(again.t, dtype=np.float64)
        normal[glass] = again.normal
        material[glass] = _hit_materials(scene, again.instance_id)
    # Still on glass after max_hits surfaces: no return.
    rng_m[material == TRANSPARENT] = np.inf
    return rng_m, normal, material


@dataclass
class LidarConfig:
    """A spinning multi-beam LiDAR (Velodyne/Ouster style), full 360 deg sweep."""

    n_beams: int = 32
    vfov_deg: tuple[float, float] = (-15.0, 15.0)  # lowest and highest beam elevation
    horizontal_res_deg: float = 0.4
    min_range_m: float = 0.3
    max_range_m: float = 100.0
    range_noise_sigma_m: float = 0.02
    dropout_prob: float = 0.01
    # Intensity = 255 * reflectivity * |cos(incidence)|, Velodyne's 0..255 scale.
    diffuse_reflectivity: float = 0.6
    specular_reflectivity: float = 0.1
    # Mirrors/metal bounce most pulses away: only this share come back.
    specular_return_prob: float = 0.3
    # Glass surfaces a pulse may pass through (a pane has two) before it is given up.
    max_transparent_hits: int = 6

    def elevations_deg(self) -> np.ndarray:
        """Beam elevations (deg), ring 0 = lowest beam as the Velodyne driver numbers them."""
        return np.linspace(self.vfov_deg[0], self.vfov_deg[1], self.n_beams)

    def azimuths_deg(self) -> np.ndarray:
        """Column azimuths (deg), 0 = +x (forward), counter-clockwise toward +y (left)."""
        n_cols = int(round(360.0 / self.horizontal_res_deg))
        return np.arange(n_cols) * (360.0 / n_cols)


def _spherical_dirs(azimuth_rad: np.ndarray, elevation_rad: np.ndarray) -> np.ndarray:
    """Unit vectors in a sensor frame with x forward, y left, z up."""
    ce = np.cos(elevation_rad)
    return np.stack(
        [ce * np.cos(azimuth_rad), ce * np.sin(azimuth_rad), np.sin(elevation_rad)], axis=-1
    )


def simulate_lidar(
    scene: RaycastScene, world_T_lidar: np.ndarray, cfg: LidarConfig, rng: np.random.Generator
) -> np.ndarray:
    """One LiDAR sweep -> structured array (x, y, z, intensity float32; ring uint16).

    Points are in the LiDAR frame (x forward, y left, z up), ordered by azimuth column and,
    within a column, by ring. Misses, out-of-range returns and dropped pulses are omitted.
    Glass is transparent to the pulse (it is re-cast behind the pane); specular surfaces
    return only ``specular_return_prob`` of the pulses, with low intensity.
    """
    T = np.asarray(world_T_lidar, dtype=np.float64)
    el = np.radians(cfg.elevations_deg())
    az = np.radians(cfg.azimuths_deg())
    az_grid, el_grid = np.meshgrid(az, el, indexing="ij")  # (n_cols, n_beams)
    ring = np.broadcast_to(np.arange(cfg.n_beams, dtype=np.uint16), az_grid.shape).reshape(-1)
    dirs_l = _spherical_dirs(az_grid, el_grid).reshape(-1, 3)
    dirs_w = dirs_l @ T[:3, :3].T
    origins = np.broadcast_to(T[:3, 3], dirs_w.shape)

    r, normal, material = _cast_through_glass(scene, origins, dirs_w, cfg.max_transparent_hits)
    cos = np.abs(np.sum(normal * dirs_w, axis=1))
    reflect = np.where(material == SPECULAR, cfg.specular_reflectivity, cfg.diffuse_reflectivity)

    # Random draws are made for every ray regardless of the config, so changing one effect
    # (e.g. the noise sigma) does not reshuffle which pulses are dropped.
    u_drop = rng.random(r.shape)
    u_spec = rng.random(r.shape)
    noise = rng.standard_normal(r.shape)

    keep = np.isfinite(r) & (r >= cfg.min_range_m) & (r <= cfg.max_range_m)
    keep &= u_drop >= cfg.dropout_prob
    keep &= ~((material == SPECULAR) & (u_spec >= cfg.specular_return_prob))
    measured = r + cfg.range_noise_sigma_m * noise
    keep &= measured > 0

    pts = dirs_l[keep] * measured[keep, None]
    out = np.empty(int(keep.sum()), dtype=LIDAR_DTYPE)
    out["x"], out["y"], out["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    out["intensity"] = np.clip(255.0 * reflect[keep] * cos[keep], 0.0, 255.0)
    out["ring"] = ring[keep]
    return out


@dataclass
class RadarConfig:
    """An automotive mmWave radar: very sparse, noisy in angle, slightly range-biased."""

    hfov_deg: float = 100.0
    vfov_deg: tuple[float, float] = (-10.0, 10.0)
    # Resolution cells probed (one ray each); far fewer detections are reported.
    n_azimuth: int = 64
    n_elevation: int = 6
    min_range_m: float = 0.5
    max_range_m: float = 60.0
    max_detections: int = 40
    range_sigma_m: float = 0.10
    range_bias_m: float = 0.05  # multipath / group delay: returns read slightly long
    azimuth_sigma_deg: float = 1.5
    elevation_sigma_deg: float = 4.0
    rcs_sigma_db: float = 2.0
    # Relative radar cross-section per material: metal (specular) reflects mmWave strongly,
    # glass weakly (it stops the ray here, unlike the LiDAR).
    material_rcs: dict[int, float] = field(
        default_factory=lambda: {DIFFUSE: 1.0, SPECULAR: 8.0, TRANSPARENT: 0.3}
    )


def simulate_radar(
    scene: RaycastScene, world_T_radar: np.ndarray, cfg: RadarConfig, rng: np.random.Generator
) -> np.ndarray:
    """One radar frame -> structured array (x, y, z, rcs float32) in the radar frame.

    A coarse grid of resolution cells is probed with one ray each; up to
    ``max_detections`` hits are reported, drawn without replacement with probability
    proportional to their echo strength (material RCS * |cos incidence|), so strong
    reflectors dominate. Each detection then gets range noise plus bias and strong azimuth /
    elevation noise in spherical coordinates. ``rcs`` is in dB (relative).
    """
    T = np.asarray(world_T_radar, dtype=np.float64)
    half = np.radians(cfg.hfov_deg) / 2.0
    az = np.linspace(-half, half, cfg.n_azimuth)
    el = np.radians(np.linspace(cfg.vfov_deg[0], cfg.vfov_deg[1], cfg.n_elevation))
    az_grid, el_grid = np.meshgrid(az, el, indexing="ij")
    az_flat, el_flat = az_grid.reshape(-1), el_grid.reshape(-1)
    dirs_l = _spherical_dirs(az_flat, el_flat)
    dirs_w = dirs_l @ T[:3, :3].T
    hits = scene.raycast(np.broadcast_to(T[:3, 3], dirs_w.shape), dirs_w)
    r = np.asarray(hits.t, dtype=np.float64)
    material = _hit_materials(scene, hits.instance_id)
    cos = np.abs(np.sum(np.asarray(hits.normal, dtype=np.float64) * dirs_w, axis=1))
    rcs_table = np.zeros(256)
    for code, value in cfg.material_rcs.items():
        rcs_table[code] = value
    strength = rcs_table[material] * cos

    hit = np.flatnonzero(
        np.isfinite(r) & (r >= cfg.min_range_m) & (r <= cfg.max_range_m) & (strength > 0)
    )
    picked = hit[_gumbel_top_k(strength[hit], cfg.max_detections, rng)]
    picked.sort()  # report in scan order, independent of the draw order
    # Draw all noise terms at once and always, so the sigmas do not change the selection.
    noise = rng.standard_normal((4, picked.size))
    r_m = r[picked] + cfg.range_bias_m + cfg.range_sigma_m * noise[0]
    az_m = az_flat[picked] + np.radians(cfg.azimuth_sigma_deg) * noise[1]
    el_m = el_flat[picked] + np.radians(cfg.elevation_sigma_deg) * noise[2]
    pts = _spherical_dirs(az_m, el_m) * r_m[:, None]
    out = np.empty(picked.size, dtype=RADAR_DTYPE)
    out["x"], out["y"], out["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    out["rcs"] = 10.0 * np.log10(strength[picked]) + cfg.rcs_sigma_db * noise[3]
    return out

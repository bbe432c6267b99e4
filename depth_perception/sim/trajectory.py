"""Smooth camera trajectories through the procedural scenes, like recorded bags.

- ``orbit`` (tabletop): a wrist camera circling the table 0.4-1.0 m above it, looking down at a
  slowly drifting point on the table;
- ``sweep`` (tabletop): the wrist camera follows an irregular, rising and falling Catmull-Rom
  spline around the table (0.45-0.95 m above it), looking at a drifting point on the table;
- ``walk`` (room): a person-height (1.2-1.7 m) camera walks a Catmull-Rom spline looping
  through the free middle of the room, heading along the path with a slow pan and tilt;
- ``drive`` (street): a car-mounted camera 1.5 m up moves forward along its lane.

Positions advance by a near-constant arc length per frame (``speed``, metres per frame), so
consecutive frames are close; orientations change slowly (low-pass headings, sinusoids).
"""

from __future__ import annotations

import numpy as np

from depth_perception.sim.render import CameraPose
from depth_perception.sim.scenes import Scene

__all__ = ["CameraPose", "TRAJECTORY_KINDS", "catmull_rom", "make_trajectory"]

TRAJECTORY_KINDS = {"tabletop": ("orbit", "sweep"), "room": ("walk",), "street": ("drive",)}
DEFAULT_SPEED = {"orbit": 0.008, "sweep": 0.008, "walk": 0.03, "drive": 0.5}  # m per frame


def catmull_rom(points: np.ndarray, samples_per_segment: int = 128) -> np.ndarray:
    """Uniform Catmull-Rom curve (C1) through ``points`` (M, D), densely sampled.

    The end tangents come from mirrored phantom points, so the curve starts and ends at the
    first and last points.
    """
    p = np.asarray(points, dtype=np.float64)
    if len(p) < 2:
        return p.copy()
    p = np.concatenate([2 * p[:1] - p[1:2], p, 2 * p[-1:] - p[-2:-1]])
    t = np.linspace(0.0, 1.0, samples_per_segment, endpoint=False)[:, None]
    t2, t3 = t * t, t * t * t
    segs = []
    for i in range(1, len(p) - 2):  # loop over a handful of waypoints, not samples
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        segs.append(
            0.5
            * (
                2 * p1
                + (p2 - p0) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                + (3 * p1 - p0 - 3 * p2 + p3) * t3
            )
        )
    segs.append(p[-2][None, :])
    return np.concatenate(segs)


def _arc_length(curve: np.ndarray) -> np.ndarray:
    return np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))]


def _resample(curve: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Points of a dense polyline at arc lengths ``s``."""
    arc = _arc_length(curve)
    return np.stack([np.interp(s, arc, curve[:, k]) for k in range(curve.shape[1])], axis=1)


def _smooth_curve(curve: np.ndarray, sigma_m: float, ds: float = 0.005) -> np.ndarray:
    """Round off the corners of a polyline: resample every ``ds`` metres, low-pass with a
    Gaussian of ``sigma_m`` metres (Catmull-Rom through close, sharply turning waypoints can
    cusp; a recorded camera path never does)."""
    arc = _arc_length(curve)
    if arc[-1] <= ds:
        return curve
    even = _resample(curve, np.arange(0.0, arc[-1], ds))
    return _gaussian_smooth(even, sigma_m / ds)


def _gaussian_smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Low-pass a (N, ...) sequence along axis 0 (edges padded by repetition)."""
    if sigma <= 0 or len(x) < 2:
        return x
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    xp = np.concatenate([np.repeat(x[:1], r, axis=0), x, np.repeat(x[-1:], r, axis=0)])
    flat = xp.reshape(len(xp), -1)
    out = np.stack([np.convolve(flat[:, j], k, mode="valid") for j in range(flat.shape[1])], 1)
    return out.reshape(x.shape)


def _slow_wave(rng: np.random.Generator, n: int, amplitude, period_frames) -> np.ndarray:
    """A random-phase sinusoid over ``n`` frames: smooth variation for heights, pans, radii."""
    a = rng.uniform(*amplitude)
    period = rng.uniform(*period_frames)
    return a * np.sin(2 * np.pi * np.arange(n) / period + rng.uniform(0, 2 * np.pi))


def make_trajectory(
    scene: Scene,
    n_frames: int,
    rng: np.random.Generator | int,
    kind: str | None = None,
    speed: float | None = None,
) -> list[CameraPose]:
    """A smooth sequence of ``n_frames`` camera poses through ``scene`` (deterministic per rng).

    ``kind`` defaults to the scene's natural motion (tabletop: orbit, room: walk, street:
    drive); ``speed`` is the camera's travel per frame in metres (default per kind).
    """
    rng = np.random.default_rng(rng)
    allowed = TRAJECTORY_KINDS.get(scene.kind, ())
    kind = kind or (allowed[0] if allowed else None)
    if kind not in allowed:
        raise ValueError(f"trajectory {kind!r} not available for a {scene.kind!r} scene {allowed}")
    if n_frames < 1:
        raise ValueError("n_frames must be >= 1")
    speed = DEFAULT_SPEED[kind] * rng.uniform(0.7, 1.3) if speed is None else float(speed)
    eyes, targets = {"orbit": _orbit, "sweep": _sweep, "walk": _walk, "drive": _drive}[kind](
        scene, n_frames, rng, speed
    )
    return [CameraPose.look_at(e, t) for e, t in zip(eyes, targets, strict=True)]


def _orbit(scene: Scene, n: int, rng, speed: float):
    cx, cy, top = scene.meta["table_center"]
    r0 = rng.uniform(0.3, 0.45)
    radius = r0 + _slow_wave(rng, n, (0.0, 0.06), (150, 400))
    height = top + np.clip(
        rng.uniform(0.5, 0.85) + _slow_wave(rng, n, (0.0, 0.12), (150, 400)), 0.4, 1.0
    )
    phi = rng.uniform(0, 2 * np.pi) + rng.choice([-1.0, 1.0]) * speed / r0 * np.arange(n)
    radial = np.stack([np.cos(phi), np.sin(phi)], axis=1)
    eyes = np.column_stack([[cx, cy] + radius[:, None] * radial, height])
    # The look-at point drifts around the table centre in the orbit's own frame, so the view
    # never turns vertical (>= ~9 deg off) and the roll follows the orbit smoothly.
    along = _slow_wave(rng, n, (0.0, 0.08), (200, 500))[:, None]
    across = _slow_wave(rng, n, (0.0, 0.1), (200, 500))[:, None]
    tangent = np.stack([-radial[:, 1], radial[:, 0]], axis=1)
    targets = np.column_stack([[cx, cy] + along * radial + across * tangent, np.full(n, top)])
    return eyes, targets


def _sweep(scene: Scene, n: int, rng, speed: float):
    cx, cy, top = scene.meta["table_center"]
    # an irregular, rising and falling spline around the table instead of a circle
    half = np.array([0.55, 0.55])
    wp = _loop_waypoints(rng, np.array([cx, cy]), half, speed * n, (0.45, 1.0))
    heights = top + rng.uniform(0.45, 0.95, len(wp))
    curve = _smooth_curve(catmull_rom(np.column_stack([wp, heights])), 0.05)
    eyes = _resample(curve, np.minimum(np.arange(n) * speed, _arc_length(curve)[-1]))
    eyes[:, 2] = np.clip(eyes[:, 2], top + 0.4, top + 1.0)  # spline overshoot stays in range
    radial = eyes[:, :2] - [cx, cy]
    radial /= np.maximum(np.linalg.norm(radial, axis=1, keepdims=True), 1e-9)
    tangent = np.stack([-radial[:, 1], radial[:, 0]], axis=1)
    along = _slow_wave(rng, n, (0.0, 0.08), (200, 500))[:, None]
    across = _slow_wave(rng, n, (0.0, 0.1), (200, 500))[:, None]
    targets = np.column_stack([[cx, cy] + along * radial + across * tangent, np.full(n, top)])
    return eyes, targets


def _loop_waypoints(rng, centre: np.ndarray, half: np.ndarray, length: float, radii):
    """2-D waypoints circling ``centre`` inside the ellipse ``half`` at jittered angles and
    radii (fractions ``radii`` of ``half``): a path of at least ``length`` metres that keeps
    turning one way, so its spline has no hairpins."""
    k_per_loop = int(rng.integers(5, 9))
    turn = rng.choice([-1.0, 1.0]) * 2 * np.pi / k_per_loop
    loop_len = 2 * np.pi * np.mean(radii) * half.mean()
    m = int(np.ceil(length / loop_len * k_per_loop)) + 4
    theta = rng.uniform(0, 2 * np.pi) + turn * (np.arange(m) + rng.uniform(-0.2, 0.2, m))
    radius = rng.uniform(radii[0], radii[1], m)[:, None]
    return centre + half * radius * np.stack([np.cos(theta), np.sin(theta)], axis=1)


def _walk(scene: Scene, n: int, rng, speed: float):
    (x0, y0), (x1, y1) = scene.meta["free_min"], scene.meta["free_max"]
    z0, z1 = scene.meta["eye_z"]
    # Waypoints circle the free area's centre, so the walk loops through the room without
    # hairpins; the spline is then rounded off.
    inset = 0.25  # Catmull-Rom may overshoot its control polygon a little
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    half = np.maximum(np.array([(x1 - x0) / 2, (y1 - y0) / 2]) - inset, 0.1)
    wp = _loop_waypoints(rng, centre, half, speed * n, (0.7, 1.0))
    curve = _smooth_curve(catmull_rom(wp), 0.2)
    arc = _arc_length(curve)
    s = np.minimum(np.arange(n) * speed, arc[-1])
    eyes = _resample(curve, s)
    # heading = low-passed path tangent, plus a slow look-around pan and tilt
    tangent = np.gradient(curve, axis=0)
    tangent = np.stack([np.interp(s, arc, tangent[:, k]) for k in range(2)], axis=1)
    eyes = np.column_stack([eyes, np.zeros(n)])
    yaw = np.unwrap(np.arctan2(tangent[:, 1], tangent[:, 0]))
    yaw = _gaussian_smooth(yaw, 30.0) + np.radians(_slow_wave(rng, n, (5, 25), (200, 500)))
    pitch = np.radians(-8.0 + _slow_wave(rng, n, (0, 6), (200, 500)))
    eyes[:, 2] = np.clip(
        rng.uniform(z0 + 0.1, z1 - 0.1) + _slow_wave(rng, n, (0.0, 0.08), (100, 300)), z0, z1
    )
    look = np.stack([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)], 1)
    return eyes, eyes + 2.0 * look


def _drive(scene: Scene, n: int, rng, speed: float):
    road0, road1 = scene.meta["road_x"]
    lane_y, height = scene.meta["lane_y"], scene.meta["camera_height"]
    length = road1 - road0
    speed = min(speed, 0.9 * length / max(n, 1))  # stay on the road for the whole sequence
    start = road0 + rng.uniform(0.0, length - speed * n)
    x = start + speed * np.arange(n)
    amp, wavelength, phase = rng.uniform(0.05, 0.3), rng.uniform(40, 80), rng.uniform(0, 2 * np.pi)
    y = lane_y + amp * np.sin(2 * np.pi * x / wavelength + phase)  # gentle in-lane weaving
    dy = amp * 2 * np.pi / wavelength * np.cos(2 * np.pi * x / wavelength + phase)
    z = height + 0.01 * np.sin(2 * np.pi * x / 7.0)  # suspension bob
    eyes = np.stack([x, y, z], axis=1)
    heading = np.stack([np.ones(n), dy, np.zeros(n)], axis=1)
    heading /= np.linalg.norm(heading, axis=1, keepdims=True)
    targets = eyes + 15.0 * heading - np.array([0.0, 0.0, 0.8])  # pitched ~3 deg down
    return eyes, targets

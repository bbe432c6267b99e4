"""Render a :class:`~depth_perception.sim.scenes.Scene` through a pinhole camera.

One ray per pixel centre, cast with Embree. The outputs are exact ground truth:

- ``depth``: optical-axis z of the first surface (glass included), float32 metres, NaN = miss;
- ``instance`` / ``material``: per-pixel labels of that surface;
- ``normal_cam``: its normal in the camera's optical frame;
- ``rgb``: a shaded image with the cues a depth model can learn from: Lambertian light with
  cast shadows, hemispheric ambient, procedural textures, Blinn-Phong highlights, one mirror
  bounce on specular surfaces, one transmission ray through glass (so the RGB shows what is
  behind the glass while the depth is the glass) and seeded sensor noise.

Cameras use the ROS optical frame (x right, y down, z forward); ``CameraPose.world_T_cam``
maps optical-frame points into the world (z up).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from depth_perception.core.camera import Intrinsics
from depth_perception.sim.scenes import MATERIALS, NO_HIT_MATERIAL, Scene, Trace

RESOLUTIONS = ((320, 240), (480, 360), (640, 480))
HFOV_RANGE_DEG = (55.0, 90.0)

_DIFFUSE, _SPECULAR, _TRANSPARENT = (MATERIALS.index(m) for m in MATERIALS)
_GAMMA = 1.0 / 2.2
_EPS = 1e-3  # metres: secondary rays start this far off the surface (no self-hits)


@dataclass
class CameraPose:
    """Camera pose ``world_T_cam`` (4x4): optical-frame point -> world point."""

    world_T_cam: np.ndarray

    def __post_init__(self) -> None:
        self.world_T_cam = np.asarray(self.world_T_cam, dtype=np.float64).reshape(4, 4)

    @property
    def rotation(self) -> np.ndarray:
        """world_R_cam (3x3): columns are the camera's x (right), y (down), z (forward)."""
        return self.world_T_cam[:3, :3]

    @property
    def position(self) -> np.ndarray:
        return self.world_T_cam[:3, 3]

    @property
    def cam_T_world(self) -> np.ndarray:
        R, t = self.rotation, self.position
        out = np.eye(4)
        out[:3, :3] = R.T
        out[:3, 3] = -R.T @ t
        return out

    def to_camera(self, points_world: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> optical-frame points (N, 3)."""
        p = np.asarray(points_world, dtype=np.float64).reshape(-1, 3)
        return (p - self.position) @ self.rotation

    @staticmethod
    def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> CameraPose:
        """Camera at ``eye`` looking at ``target`` with image-up as close to ``up`` as possible."""
        eye = np.asarray(eye, dtype=np.float64)
        z = np.asarray(target, dtype=np.float64) - eye
        if np.linalg.norm(z) < 1e-12:
            raise ValueError("eye and target coincide")
        z /= np.linalg.norm(z)
        up = np.asarray(up, dtype=np.float64)
        x = np.cross(z, up)
        if np.linalg.norm(x) < 1e-9:  # looking along `up`: any roll is valid, pick a stable one
            alt = np.array([0.0, 1.0, 0.0]) if abs(up[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
            x = np.cross(z, alt)
        x /= np.linalg.norm(x)
        y = np.cross(z, x)  # image down
        T = np.eye(4)
        T[:3, :3] = np.stack([x, y, z], axis=1)
        T[:3, 3] = eye
        return CameraPose(T)


@dataclass(eq=False)
class RenderedView:
    """Everything one camera sees of a scene, pixel-aligned."""

    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 optical-axis depth, NaN where no hit
    instance: np.ndarray  # (H, W) int32, 0 = no object
    material: np.ndarray  # (H, W) uint8 codes of MATERIALS, 255 where no hit
    normal_cam: np.ndarray  # (H, W, 3) float32 unit normals in the optical frame, 0 where no hit
    intrinsics: Intrinsics
    pose: CameraPose

    def boxes(self, min_pixels: int = 1) -> dict[int, tuple[int, int, int, int]]:
        """instance_id -> (x0, y0, w, h) box of its visible pixels (inclusive extent)."""
        flat = self.instance.ravel()
        idx = np.flatnonzero(flat > 0)
        if not len(idx):
            return {}
        ids = flat[idx]
        order = np.argsort(ids, kind="stable")
        ids, idx = ids[order], idx[order]
        ys, xs = np.divmod(idx, self.instance.shape[1])
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        counts = np.diff(np.r_[starts, len(ids)])
        x0, x1 = np.minimum.reduceat(xs, starts), np.maximum.reduceat(xs, starts)
        y0, y1 = np.minimum.reduceat(ys, starts), np.maximum.reduceat(ys, starts)
        return {
            int(ids[s]): (int(a), int(b), int(c - a + 1), int(d - b + 1))
            for s, a, b, c, d, n in zip(starts, x0, y0, x1, y1, counts, strict=True)
            if n >= min_pixels
        }


def random_intrinsics(
    rng: np.random.Generator, width: int | None = None, height: int | None = None
) -> Intrinsics:
    """Random pinhole intrinsics: a common resolution, 55-90 deg horizontal FOV, square-ish
    pixels and a principal point jittered around the image centre (as real calibrations are)."""
    if width is None and height is None:
        width, height = RESOLUTIONS[int(rng.integers(len(RESOLUTIONS)))]
    elif height is None:
        height = int(round(width * 3 / 4))
    elif width is None:
        width = int(round(height * 4 / 3))
    hfov = np.radians(rng.uniform(*HFOV_RANGE_DEG))
    fx = width / 2.0 / np.tan(hfov / 2.0)
    fy = fx * rng.uniform(0.995, 1.005)
    cx = (width - 1) / 2.0 + np.clip(rng.normal(0.0, 0.015 * width), -0.05 * width, 0.05 * width)
    cy = (height - 1) / 2.0 + np.clip(
        rng.normal(0.0, 0.015 * height), -0.05 * height, 0.05 * height
    )
    return Intrinsics(
        width=int(width),
        height=int(height),
        fx=float(fx),
        fy=float(fy),
        cx=float(cx),
        cy=float(cy),
        D=(0.0,) * 5,
        frame_id="camera_optical_frame",
    )


def camera_rays(intr: Intrinsics) -> np.ndarray:
    """Optical-frame ray directions (H*W, 3) float64 through pixel centres, scaled to z = 1.

    With lens distortion the pixel is first undistorted (OpenCV's models), so the rendered
    image is what a camera with those ``D`` coefficients records.
    """
    u = np.arange(intr.width, dtype=np.float64)
    v = np.arange(intr.height, dtype=np.float64)
    uu, vv = np.meshgrid(u, v)
    if intr.is_distorted:
        pts = np.stack([uu.ravel(), vv.ravel()], axis=1).reshape(-1, 1, 2)
        D = np.asarray(intr.D, dtype=np.float64)
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-10)
        if intr.distortion_model == "equidistant":
            und = cv2.fisheye.undistortPoints(pts, intr.K, D, criteria=crit)
        else:
            und = cv2.undistortPoints(pts, intr.K, D, criteria=crit)
        xn, yn = und[:, 0, 0], und[:, 0, 1]
    else:
        xn = ((uu - intr.cx) / intr.fx).ravel()
        yn = ((vv - intr.cy) / intr.fy).ravel()
    return np.stack([xn, yn, np.ones_like(xn)], axis=1)


def render_view(
    scene: Scene, intr: Intrinsics, pose: CameraPose, seed: int = 0, noise: float = 0.01
) -> RenderedView:
    """Render ``scene`` seen by a camera ``intr`` at ``pose``; ``seed`` drives image noise."""
    h, w = intr.height, intr.width
    rays_cam = camera_rays(intr)
    dirs = rays_cam @ pose.rotation.T  # z-component 1 in the optical frame ...
    tr = scene.trace(pose.position, dirs)  # ... so tr.s is the optical-axis depth

    depth = np.where(tr.hit, tr.s, np.nan).astype(np.float32)
    instance = tr.instance
    material = np.where(tr.hit, scene.material_of_id[instance], NO_HIT_MATERIAL).astype(np.uint8)
    normal_cam = (tr.normal @ pose.rotation).astype(np.float32)

    linear = _radiance(scene, tr)
    rgb = np.clip(linear, 0.0, 1.0) ** _GAMMA
    if noise > 0:
        rng = np.random.default_rng(seed)
        rgb = rgb + noise * rng.standard_normal(rgb.shape)
    rgb = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return RenderedView(
        rgb=rgb.reshape(h, w, 3),
        depth=depth.reshape(h, w),
        instance=instance.reshape(h, w),
        material=material.reshape(h, w),
        normal_cam=normal_cam.reshape(h, w, 3),
        intrinsics=intr,
        pose=pose,
    )


# ------------------------------------------------------------------------------ shading
def _radiance(scene: Scene, tr: Trace) -> np.ndarray:
    """Linear RGB (N, 3) along traced primary rays, with one reflection/transmission bounce."""
    out = scene.sky_color(tr.dirs)
    hit = np.flatnonzero(tr.hit)
    if not len(hit):
        return out
    inst = tr.instance[hit]
    mat = scene.material_of_id[inst]
    albedo = scene.albedo(tr.points[hit], tr.triangle[hit])
    diffuse, spec = _direct_light(scene, tr, hit, inst, mat, shadows=True)
    col = albedo * diffuse + spec

    spec_m = mat == _SPECULAR
    if spec_m.any():  # metal / mirror: mix in what the mirrored ray sees, tinted by the metal
        i = hit[spec_m]
        n, d = tr.normal[i], tr.dirs[i]
        refl = d - 2.0 * np.einsum("ij,ij->i", d, n)[:, None] * n
        k = scene.reflectivity_of_id[inst[spec_m]][:, None]
        seen = _secondary(scene, tr.points[i] + tr.geo_normal[i] * _EPS, refl, opaque_only=False)
        col[spec_m] = (1 - k) * albedo[spec_m] * diffuse[spec_m] + k * albedo[spec_m] * seen
        col[spec_m] += spec[spec_m]

    glass = mat == _TRANSPARENT
    if glass.any():  # glass: tinted view of the opaque scene behind, plus a faint surface term
        i = hit[glass]
        d = tr.dirs[i]
        behind = _secondary(scene, tr.points[i] + d * _EPS, d, opaque_only=True)
        col[glass] = 0.85 * albedo[glass] * behind + 0.1 * albedo[glass] * diffuse[glass]
        col[glass] += spec[glass]
    out[hit] = col
    return out


def _secondary(scene: Scene, origins: np.ndarray, dirs: np.ndarray, opaque_only: bool):
    """Colour seen along secondary rays: local shading only (no further bounces)."""
    tr = scene.trace(origins, dirs, opaque_only=opaque_only)
    out = scene.sky_color(tr.dirs)
    hit = np.flatnonzero(tr.hit)
    if len(hit):
        inst = tr.instance[hit]
        mat = scene.material_of_id[inst]
        albedo = scene.albedo(tr.points[hit], tr.triangle[hit])
        diffuse, spec = _direct_light(scene, tr, hit, inst, mat, shadows=True)
        out[hit] = albedo * diffuse + spec
    return out


def _direct_light(scene: Scene, tr: Trace, idx, inst, mat, shadows: bool):
    """Irradiance factor (M, 3) for the albedo and additive highlight (M, 3) at hits ``idx``."""
    p, n, v = tr.points[idx], tr.normal[idx], -tr.dirs[idx]
    # hemispheric ambient: surfaces facing up get more sky/ceiling bounce light
    diffuse = scene.ambient[None, :] * (0.75 + 0.25 * n[:, 2:3])
    spec = np.zeros_like(diffuse)
    glossy = mat != _DIFFUSE
    strength = np.where(mat == _TRANSPARENT, 1.0, 0.6)[glossy][:, None]
    shininess = scene.shininess_of_id[inst[glossy]][:, None]
    start = p + tr.geo_normal[idx] * _EPS
    for light in scene.lights:
        if light.kind == "directional":
            to_l = np.broadcast_to(_unit(light.vector), p.shape)
            dist = np.full(len(p), np.inf)
            power = np.full(len(p), light.intensity)
        else:
            rel = np.asarray(light.vector, dtype=np.float64) - p
            dist = np.linalg.norm(rel, axis=1)
            to_l = rel / np.maximum(dist, 1e-9)[:, None]
            power = light.intensity / (dist**2 + light.soft_radius**2)
            if light.spot_axis is not None:
                lobe = np.clip(-(to_l @ _unit(light.spot_axis)), 0.0, 1.0)
                power = power * lobe**light.spot_exponent
        ndl = np.einsum("ij,ij->i", n, to_l)
        lit = ndl > 0
        if shadows and light.shadows and lit.any():
            j = np.flatnonzero(lit)
            lit[j] = ~scene.occluded(start[j], to_l[j], dist[j] - 2 * _EPS)
        e = np.where(lit, ndl * power, 0.0)
        diffuse += e[:, None] * np.asarray(light.color)[None, :]
        if glossy.any():
            half = to_l[glossy] + v[glossy]
            half /= np.maximum(np.linalg.norm(half, axis=1, keepdims=True), 1e-12)
            ndh = np.clip(np.einsum("ij,ij->i", n[glossy], half), 0.0, 1.0)[:, None]
            gate = (lit[glossy] * power[glossy])[:, None]
            spec[glossy] += strength * ndh**shininess * gate * np.asarray(light.color)[None, :]
    return diffuse, spec


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)

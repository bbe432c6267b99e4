"""Procedural 3D worlds with exact ray casting: rooms, tabletop clutter and streets.

No public data set can be downloaded, so these scenes are the project's ground truth. Every
object is an open3d primitive (box, cylinder, sphere, torus, cone) placed in the world frame
(z up, metres), tagged with a class name, an instance id and a material:

- ``diffuse``: Lambertian, textured;
- ``specular``: metal or mirror, shows highlights and (part) reflections of the scene;
- ``transparent``: glass; the depth ground truth is the glass surface although the colour
  shows what lies behind it, which is exactly where depth sensors and models fail.

Appearance is a property of the scene (not of a camera), so textures are computed from the
world hit point and stay consistent across views. Ray casting uses open3d's Embree wrapper
(``RaycastingScene``); the hit distance is then re-solved in float64 against the hit
triangle's plane so that the depth of a plane is exact to float precision.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field, fields

import numpy as np
import open3d as o3d

MATERIALS = ("diffuse", "specular", "transparent")
TEXTURES = ("plain", "checker", "stripes", "noise", "wood", "bricks")
SCENE_KINDS = ("room", "tabletop", "street")
NO_HIT_MATERIAL = 255  # material code of pixels/rays that hit nothing

Color = tuple[float, float, float]

_INVALID_ID = np.iinfo(np.uint32).max  # open3d's geometry id for a miss
_CREASE_DEG = 35.0  # edges sharper than this stay sharp when smoothing normals


@dataclass(eq=False)
class SceneObject:
    """One labelled object: a triangle mesh in world coordinates plus its appearance."""

    name: str
    class_name: str
    instance_id: int
    material: str
    color: Color
    texture: str
    mesh: o3d.geometry.TriangleMesh
    color2: Color | None = None  # second texture colour; None = a darker shade of the base
    texture_scale: float = 0.1  # metres per texture period
    texture_axis: Color = (1.0, 0.0, 0.0)  # direction of stripes / wood grain / brick rows
    shininess: float = 40.0  # Blinn-Phong exponent of the highlight (specular, transparent)
    reflectivity: float = 0.0  # fraction of a specular surface's colour that is reflection
    tri_colors: np.ndarray | None = None  # (F, 3) per-triangle albedo of multi-part objects

    def __post_init__(self) -> None:
        if self.material not in MATERIALS:
            raise ValueError(f"{self.name}: material {self.material!r} not in {MATERIALS}")
        if self.texture not in TEXTURES:
            raise ValueError(f"{self.name}: texture {self.texture!r} not in {TEXTURES}")
        if self.instance_id < 1:
            raise ValueError(f"{self.name}: instance_id must be >= 1 (0 means no object)")
        n_tri = len(self.mesh.triangles)
        if self.tri_colors is not None and np.shape(self.tri_colors) != (n_tri, 3):
            raise ValueError(f"{self.name}: tri_colors must be ({n_tri}, 3)")

    @property
    def material_code(self) -> int:
        return MATERIALS.index(self.material)


@dataclass(eq=False)
class RayHits:
    """First hits of a batch of rays (float32, as a sensor model consumes them)."""

    t: np.ndarray  # (N,) distance along the unit ray; inf where no hit
    instance_id: np.ndarray  # (N,) int32, 0 where no hit
    normal: np.ndarray  # (N, 3) world unit normals facing the ray; 0 where no hit
    points: np.ndarray  # (N, 3) world hit points; NaN where no hit
    triangle: np.ndarray | None = None  # (N,) int64 scene triangle index; -1 where no hit

    @property
    def hit(self) -> np.ndarray:
        return np.isfinite(self.t)


@dataclass(eq=False)
class Trace:
    """Full float64 result of :meth:`Scene.trace` (what the renderer needs)."""

    hit: np.ndarray  # (N,) bool
    triangle: np.ndarray  # (N,) int64, -1 where no hit
    s: np.ndarray  # (N,) parameter along the given (not necessarily unit) directions; inf = miss
    t: np.ndarray  # (N,) metric distance; inf where no hit
    points: np.ndarray  # (N, 3); NaN where no hit
    normal: np.ndarray  # (N, 3) smooth shading normal facing the ray; 0 where no hit
    geo_normal: np.ndarray  # (N, 3) flat triangle normal facing the ray; 0 where no hit
    instance: np.ndarray  # (N,) int32, 0 where no hit
    dirs: np.ndarray  # (N, 3) unit ray directions


@dataclass(frozen=True)
class Light:
    """A point light (``vector`` = position) or a sun (``vector`` = direction to the light)."""

    kind: str  # "point" | "directional"
    vector: Color
    color: Color = (1.0, 1.0, 1.0)
    intensity: float = 1.0  # sun: irradiance; point: I in I / (d^2 + soft_radius^2)
    shadows: bool = True
    soft_radius: float = 0.5  # point falloff is I / (d^2 + r^2): no singularity near the bulb
    spot_axis: Color | None = None  # emission lobe axis of a fixture (e.g. a ceiling lamp)
    spot_exponent: float = 1.0  # emission falls off as cos(angle to spot_axis) ** exponent


class Scene:
    """A static world: labelled objects, lights, sky; answers ray queries exactly."""

    def __init__(
        self,
        kind: str,
        objects: list[SceneObject],
        lights: tuple[Light, ...] | list[Light] = (),
        ambient: Color = (0.2, 0.2, 0.2),
        sky: tuple[Color, Color] = ((0.45, 0.62, 0.95), (0.85, 0.9, 0.97)),
        meta: dict | None = None,
    ) -> None:
        if not objects:
            raise ValueError("a scene needs at least one object")
        ids = [o.instance_id for o in objects]
        names = [o.name for o in objects]
        if len(set(ids)) != len(ids) or len(set(names)) != len(names):
            raise ValueError("object names and instance ids must be unique")
        self.kind = kind
        self.objects = list(objects)
        self.lights = tuple(lights)
        self.ambient = np.asarray(ambient, dtype=np.float64)
        self.sky = (np.asarray(sky[0], np.float64), np.asarray(sky[1], np.float64))
        self.meta = dict(meta or {})
        self._by_id = {o.instance_id: o for o in self.objects}
        self._build_geometry()
        self._build_tables()
        self._raycasters: tuple | None = None  # built lazily: Embree scenes do not pickle

    # ----------------------------------------------------------------- construction
    def _build_geometry(self) -> None:
        verts, tris, inst, colors = [], [], [], []
        offset = 0
        for obj in self.objects:
            v = np.asarray(obj.mesh.vertices, dtype=np.float64)
            f = np.asarray(obj.mesh.triangles, dtype=np.int64)
            verts.append(v)
            tris.append(f + offset)
            inst.append(np.full(len(f), obj.instance_id, dtype=np.int32))
            c = obj.tri_colors if obj.tri_colors is not None else np.tile(obj.color, (len(f), 1))
            colors.append(np.asarray(c, dtype=np.float64))
            offset += len(v)
        V = np.concatenate(verts)
        T = np.concatenate(tris)
        fn = np.cross(V[T[:, 1]] - V[T[:, 0]], V[T[:, 2]] - V[T[:, 0]])
        area2 = np.linalg.norm(fn, axis=1)
        keep = area2 > 1e-14  # degenerate triangles have no plane to refine against
        T, fn, area2 = T[keep], fn[keep], area2[keep]
        self._V = V
        self._T = T
        self._tri_instance = np.concatenate(inst)[keep]
        self._tri_color = np.concatenate(colors)[keep]
        self._tri_p0 = V[T[:, 0]]
        self._tri_n = fn / area2[:, None]
        self._corner_n = _corner_normals(V, T, fn).astype(np.float32)

    def _build_tables(self) -> None:
        k = max(self._by_id) + 1
        self.material_of_id = np.full(k, NO_HIT_MATERIAL, dtype=np.uint8)
        self.texture_of_id = np.zeros(k, dtype=np.int8)
        self.texture_scale_of_id = np.ones(k)
        self.texture_axis_of_id = np.tile([1.0, 0.0, 0.0], (k, 1))
        self.center_of_id = np.zeros((k, 3))
        self.color2_of_id = np.full((k, 3), np.nan)
        self.shininess_of_id = np.ones(k)
        self.reflectivity_of_id = np.zeros(k)
        for o in self.objects:
            i = o.instance_id
            self.material_of_id[i] = o.material_code
            self.texture_of_id[i] = TEXTURES.index(o.texture)
            self.texture_scale_of_id[i] = o.texture_scale
            axis = np.asarray(o.texture_axis, dtype=np.float64)
            self.texture_axis_of_id[i] = axis / np.linalg.norm(axis)
            self.center_of_id[i] = np.asarray(o.mesh.get_axis_aligned_bounding_box().get_center())
            if o.color2 is not None:
                self.color2_of_id[i] = o.color2
            self.shininess_of_id[i] = o.shininess
            self.reflectivity_of_id[i] = np.clip(o.reflectivity, 0.0, 1.0)
        self._opaque_tris = np.flatnonzero(
            self.material_of_id[self._tri_instance] != MATERIALS.index("transparent")
        )

    def _casters(self) -> tuple:
        if self._raycasters is None:
            verts = o3d.core.Tensor(self._V.astype(np.float32))
            full = o3d.t.geometry.RaycastingScene()
            full.add_triangles(verts, o3d.core.Tensor(self._T.astype(np.uint32)))
            opaque = None
            if len(self._opaque_tris):
                opaque = o3d.t.geometry.RaycastingScene()
                tris = self._T[self._opaque_tris].astype(np.uint32)
                opaque.add_triangles(verts, o3d.core.Tensor(tris))
            self._raycasters = (full, opaque)
        return self._raycasters

    def __getstate__(self) -> dict:
        # open3d objects do not pickle (DataLoader workers need that): store plain arrays and
        # rebuild the meshes on load; the Embree scenes are rebuilt lazily on the first query
        state = self.__dict__.copy()
        state["_raycasters"] = None
        state["objects"] = [
            (
                {f.name: getattr(o, f.name) for f in fields(o) if f.name != "mesh"},
                np.asarray(o.mesh.vertices).copy(),
                np.asarray(o.mesh.triangles).copy(),
            )
            for o in self.objects
        ]
        del state["_by_id"]
        return state

    def __setstate__(self, state: dict) -> None:
        objects = []
        for kw, v, f in state["objects"]:
            mesh = o3d.geometry.TriangleMesh(
                o3d.utility.Vector3dVector(v), o3d.utility.Vector3iVector(f)
            )
            objects.append(SceneObject(mesh=mesh, **kw))
        state["objects"] = objects
        self.__dict__.update(state)
        self._by_id = {o.instance_id: o for o in objects}

    # ----------------------------------------------------------------------- queries
    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(min_xyz, max_xyz) of all geometry in the world frame."""
        return self._V.min(axis=0), self._V.max(axis=0)

    @property
    def num_triangles(self) -> int:
        return len(self._T)

    def object_by_id(self, instance_id: int) -> SceneObject:
        try:
            return self._by_id[int(instance_id)]
        except KeyError:
            raise KeyError(f"no object with instance id {instance_id}") from None

    def objects_of_class(self, class_name: str) -> list[SceneObject]:
        return [o for o in self.objects if o.class_name == class_name]

    def raycast(self, origins: np.ndarray, directions: np.ndarray) -> RayHits:
        """First hits of rays (N, 3) in the world frame; ``directions`` are unit vectors.

        ``origins`` may be a single (3,) point shared by all rays.
        """
        tr = self.trace(origins, directions)
        return RayHits(
            t=tr.t.astype(np.float32),
            instance_id=tr.instance,
            normal=tr.normal.astype(np.float32),
            points=tr.points.astype(np.float32),
            triangle=tr.triangle,
        )

    def trace(
        self, origins: np.ndarray, directions: np.ndarray, opaque_only: bool = False
    ) -> Trace:
        """First hits of rays ``origins + s * directions`` (directions need not be unit).

        ``opaque_only`` ignores glass: what a ray sees through transparent objects.
        The hit parameter is solved in float64 on the hit triangle's plane, so for a camera
        ray ``(x, y, 1)`` rotated into the world, ``s`` is the optical-axis depth exactly.
        """
        d = np.asarray(directions, dtype=np.float64).reshape(-1, 3)
        o = np.asarray(origins, dtype=np.float64).reshape(-1, 3)
        if len(o) not in (1, len(d)):
            raise ValueError(f"{len(o)} origins for {len(d)} directions")
        n = len(d)
        norm = np.linalg.norm(d, axis=1)
        du = d / np.where(norm > 0, norm, 1.0)[:, None]

        tri = np.full(n, -1, dtype=np.int64)
        full, opaque = self._casters()
        caster = opaque if opaque_only else full
        idx = np.zeros(0, dtype=np.int64)
        if caster is not None and n:
            rays = np.empty((n, 6), dtype=np.float32)
            rays[:, :3] = o
            rays[:, 3:] = du
            ans = caster.cast_rays(o3d.core.Tensor(rays))
            idx = np.flatnonzero(ans["geometry_ids"].numpy() != _INVALID_ID)
            prim = ans["primitive_ids"].numpy()[idx].astype(np.int64)
            tri[idx] = self._opaque_tris[prim] if opaque_only else prim
            t_emb = ans["t_hit"].numpy()[idx].astype(np.float64)
            bary = ans["primitive_uvs"].numpy()[idx]
        else:
            t_emb, bary = np.zeros(0), np.zeros((0, 2), dtype=np.float32)
        hit = tri >= 0

        # Re-solve the distance in float64 on the triangle's plane: Embree works in float32.
        th = tri[idx]
        dh, duh = d[idx], du[idx]
        oh = o if len(o) == 1 else o[idx]
        nrm = self._tri_n[th]
        den = np.einsum("ij,ij->i", nrm, dh)
        num = np.einsum("ij,ij->i", nrm, self._tri_p0[th] - oh)
        with np.errstate(divide="ignore", invalid="ignore"):
            s_ref = num / den
        nh = norm[idx]
        s_emb = t_emb / nh
        # keep Embree's answer on grazing hits, where the plane solve is ill-conditioned
        good = np.isfinite(s_ref) & (np.abs(s_ref - s_emb) * nh <= 1e-3 + 1e-4 * t_emb)
        s_hit = np.where(good, s_ref, s_emb)

        s = np.full(n, np.inf)
        s[idx] = s_hit
        t = s * norm
        points = np.full((n, 3), np.nan)
        points[idx] = oh + s_hit[:, None] * dh

        # Normals facing the incoming ray; smooth (barycentric) normals for shading.
        facing = np.where(np.einsum("ij,ij->i", nrm, duh) > 0, -1.0, 1.0)[:, None]
        geo = nrm * facing
        w = np.empty((len(idx), 3), dtype=np.float32)
        w[:, 0] = 1.0 - bary[:, 0] - bary[:, 1]
        w[:, 1:] = bary
        sm = np.einsum("ij,ijk->ik", w, self._corner_n[th]).astype(np.float64) * facing
        sm /= np.maximum(np.linalg.norm(sm, axis=1, keepdims=True), 1e-12)
        # at silhouettes of smooth objects the interpolated normal can face away: use the flat one
        away = np.einsum("ij,ij->i", sm, duh) >= 0
        sm[away] = geo[away]
        normal = np.zeros((n, 3))
        normal[idx] = sm
        geo_normal = np.zeros((n, 3))
        geo_normal[idx] = geo
        instance = np.zeros(n, dtype=np.int32)
        instance[idx] = self._tri_instance[th]
        return Trace(hit, tri, s, t, points, normal, geo_normal, instance, du)

    def occluded(self, origins: np.ndarray, directions: np.ndarray, max_dist) -> np.ndarray:
        """True where an opaque surface lies within ``max_dist`` along the unit rays.

        Glass casts no shadow, which is the usual simplification in rasterised renderers too.
        """
        d = np.asarray(directions, dtype=np.float64).reshape(-1, 3)
        _, opaque = self._casters()
        if opaque is None or not len(d):
            return np.zeros(len(d), dtype=bool)
        rays = np.empty((len(d), 6), dtype=np.float32)
        rays[:, :3] = np.asarray(origins, dtype=np.float64).reshape(-1, 3)
        rays[:, 3:] = d
        t_hit = opaque.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()
        return t_hit < np.asarray(max_dist)

    # -------------------------------------------------------------------- appearance
    def albedo(self, points: np.ndarray, triangle: np.ndarray) -> np.ndarray:
        """Linear RGB albedo (N, 3) of hit ``points`` on ``triangle`` (procedural textures)."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        triangle = np.asarray(triangle, dtype=np.int64)
        base = self._tri_color[triangle]
        inst = self._tri_instance[triangle]
        second = self.color2_of_id[inst]
        second = np.where(np.isnan(second), base * 0.55, second)
        out = base.copy()
        codes = self.texture_of_id[inst]
        for code in np.unique(codes):
            if TEXTURES[code] == "plain":
                continue
            m = codes == code
            i = inst[m]
            w = _pattern(
                TEXTURES[code],
                points[m],
                self.texture_scale_of_id[i],
                self.texture_axis_of_id[i],
                self.center_of_id[i],
                i.astype(np.uint32) + np.uint32((int(self.meta.get("seed", 0)) * 7919) % 2**32),
            )
            out[m] = base[m] + (second[m] - base[m]) * w[:, None]
        return out

    def sky_color(self, directions: np.ndarray) -> np.ndarray:
        """Linear RGB (N, 3) seen along unit world directions that hit nothing."""
        dz = np.asarray(directions, dtype=np.float64).reshape(-1, 3)[:, 2]
        up = np.clip(dz, 0.0, 1.0)[:, None] ** 0.6
        zenith, horizon = self.sky
        col = horizon + (zenith - horizon) * up
        return np.where(dz[:, None] < 0, horizon * 0.7, col)


# --------------------------------------------------------------------- mesh utilities
def _corner_normals(V: np.ndarray, T: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Per-corner normals (F, 3, 3): area-weighted average of the faces around each vertex
    whose normals are within ``_CREASE_DEG`` of the corner's face (smooth spheres, sharp boxes).

    Vertices are welded by position first so that duplicated seam vertices still smooth.
    """
    _, weld = np.unique(np.round(V / 1e-7).astype(np.int64), axis=0, return_inverse=True)
    vert = weld.reshape(-1)[T].reshape(-1)  # (3F,) welded vertex of each corner
    face = np.repeat(np.arange(len(T)), 3)
    fu = fn / np.linalg.norm(fn, axis=1, keepdims=True)

    order = np.argsort(vert, kind="stable")
    sv = vert[order]
    new_group = np.r_[True, sv[1:] != sv[:-1]]
    starts = np.flatnonzero(new_group)
    counts = np.diff(np.r_[starts, len(sv)])
    gid = np.cumsum(new_group) - 1
    cnt = counts[gid]  # group size of each sorted corner
    # all (corner, neighbour-corner) pairs sharing a vertex, built without Python loops
    a = np.repeat(np.arange(len(sv)), cnt)
    offs = np.arange(len(a)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    b = np.repeat(starts[gid], cnt) + offs
    fa, fb = face[order[a]], face[order[b]]
    keep = np.einsum("ij,ij->i", fu[fa], fu[fb]) >= np.cos(np.radians(_CREASE_DEG))
    target = order[a][keep]
    acc = np.stack(
        [np.bincount(target, weights=fn[fb[keep], k], minlength=len(vert)) for k in range(3)],
        axis=1,
    )
    length = np.linalg.norm(acc, axis=1, keepdims=True)
    acc = np.where(length > 0, acc / np.maximum(length, 1e-300), fu[face])
    return acc.reshape(-1, 3, 3)


def _rotation_z_to(axis) -> np.ndarray:
    """Rotation taking +z onto the unit ``axis`` (Rodrigues)."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    z = np.array([0.0, 0.0, 1.0])
    v = np.cross(z, a)
    c = float(z @ a)
    if np.linalg.norm(v) < 1e-12:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def _rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _place(mesh: o3d.geometry.TriangleMesh, R=None, t=(0.0, 0.0, 0.0)):
    """Apply ``x -> R x + t`` to a mesh's vertices (in place) and return it."""
    v = np.asarray(mesh.vertices)
    if R is not None:
        v = v @ np.asarray(R).T
    mesh.vertices = o3d.utility.Vector3dVector(v + np.asarray(t, dtype=np.float64))
    return mesh


def box(size, center, yaw: float = 0.0) -> o3d.geometry.TriangleMesh:
    """Box of ``size`` (sx, sy, sz) centred at ``center``, rotated by ``yaw`` about z."""
    size = np.asarray(size, dtype=np.float64)
    m = o3d.geometry.TriangleMesh.create_box(*size)
    _place(m, t=-size / 2)
    return _place(m, _rot_z(yaw), center)


def box_between(lo, hi) -> o3d.geometry.TriangleMesh:
    """Axis-aligned box spanning the corners ``lo`` and ``hi`` (any order)."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    return box(np.abs(hi - lo), (lo + hi) / 2)


def cylinder(radius, height, base, axis=(0, 0, 1), resolution=24) -> o3d.geometry.TriangleMesh:
    """Closed cylinder standing on ``base`` along ``axis``."""
    m = o3d.geometry.TriangleMesh.create_cylinder(radius, height, resolution=resolution, split=1)
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    return _place(m, _rotation_z_to(axis), np.asarray(base, np.float64) + axis * height / 2)


def sphere(radius, center, resolution=16) -> o3d.geometry.TriangleMesh:
    m = o3d.geometry.TriangleMesh.create_sphere(radius, resolution=resolution)
    return _place(m, t=center)


def cone(radius, height, base, axis=(0, 0, 1), resolution=24) -> o3d.geometry.TriangleMesh:
    m = o3d.geometry.TriangleMesh.create_cone(radius, height, resolution=resolution)
    return _place(m, _rotation_z_to(axis), base)


def torus(ring_radius, tube_radius, center, axis=(0, 0, 1)) -> o3d.geometry.TriangleMesh:
    m = o3d.geometry.TriangleMesh.create_torus(ring_radius, tube_radius, 24, 12)
    return _place(m, _rotation_z_to(axis), center)


def _merge(parts) -> tuple[o3d.geometry.TriangleMesh, np.ndarray | None]:
    """Merge ``[mesh, ...]`` or ``[(mesh, rgb), ...]`` into one mesh (+ per-triangle colours)."""
    mesh = o3d.geometry.TriangleMesh()
    colors = []
    for p in parts:
        m, c = p if isinstance(p, tuple) else (p, None)
        mesh += m
        colors.append((len(m.triangles), c))
    if all(c is None for _, c in colors):
        return mesh, None
    return mesh, np.concatenate([np.tile(c, (k, 1)) for k, c in colors])


# ------------------------------------------------------------------ procedural textures
def _hash01(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Integer lattice -> uniform [0, 1) (a murmur-style mix; uint32 wrap-around is intended)."""
    h = ix.astype(np.int64).astype(np.uint32) * np.uint32(0x8DA6B343)
    h ^= iy.astype(np.int64).astype(np.uint32) * np.uint32(0xD8163841)
    h ^= iz.astype(np.int64).astype(np.uint32) * np.uint32(0xCB1AB31F)
    h ^= seed.astype(np.uint32) * np.uint32(0x9E3779B1)
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x2C1B3C6D)
    h ^= h >> np.uint32(12)
    h *= np.uint32(0x297A2D39)
    h ^= h >> np.uint32(15)
    return h * (1.0 / 4294967296.0)


def value_noise(p: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Smooth 3-D value noise in [0, 1] at points (N, 3) (lattice spacing 1)."""
    i = np.floor(p)
    f = p - i
    w = f * f * (3.0 - 2.0 * f)  # smoothstep: C1 across lattice cells
    i = i.astype(np.int64)
    out = np.zeros(len(p))
    for dx in (0, 1):
        wx = w[:, 0] if dx else 1.0 - w[:, 0]
        for dy in (0, 1):
            wy = w[:, 1] if dy else 1.0 - w[:, 1]
            for dz in (0, 1):
                wz = w[:, 2] if dz else 1.0 - w[:, 2]
                h = _hash01(i[:, 0] + dx, i[:, 1] + dy, i[:, 2] + dz, seed)
                out += wx * wy * wz * h
    return out


def _fbm(p: np.ndarray, seed: np.ndarray, octaves: int = 3) -> np.ndarray:
    out, amp, total = np.zeros(len(p)), 1.0, 0.0
    for k in range(octaves):
        out += amp * value_noise(p * (2.0**k), seed + np.uint32(k * 101))
        total += amp
        amp *= 0.5
    return out / total


def _pattern(name, p, scale, axis, center, seed) -> np.ndarray:
    """Texture weight in [0, 1] (0 = base colour, 1 = second colour) at world points."""
    q = p / scale[:, None]
    if name == "checker":
        # offset so that faces lying exactly on a cell boundary do not flicker
        c = np.floor(q + 0.2371).astype(np.int64).sum(axis=1)
        return (c % 2).astype(np.float64)
    if name == "stripes":
        return (np.mod(np.einsum("ij,ij->i", q, axis) + 0.13, 1.0) < 0.5).astype(np.float64)
    if name == "noise":
        return _fbm(q, seed)
    if name == "wood":
        rel = (p - center) / scale[:, None]
        along = np.einsum("ij,ij->i", rel, axis)
        radial = np.linalg.norm(rel - along[:, None] * axis, axis=1)
        rings = radial * 4.0 + 1.5 * _fbm(q * np.array([0.5, 0.5, 0.5]), seed)
        return 0.7 * (0.5 + 0.5 * np.sin(2 * np.pi * rings)) ** 3 + 0.2 * _fbm(q * 4.0, seed)
    if name == "bricks":
        up = np.where(np.abs(axis[:, 2:3]) < 0.9, [0.0, 0.0, 1.0], [0.0, 1.0, 0.0])
        u = np.einsum("ij,ij->i", q, axis)
        w = np.einsum("ij,ij->i", q, up) * 2.5  # bricks are ~2.5x wider than tall
        row = np.floor(w)
        u = u + 0.5 * (row % 2)
        col = np.floor(u)
        fu, fw = u - col, w - row
        mortar = (fu < 0.06) | (fw < 0.12)
        shade = 0.25 * _hash01(col, row, np.zeros_like(row), seed)
        return np.where(mortar, 1.0, shade)
    return np.zeros(len(p))


# ---------------------------------------------------------------------------- building
def _hsv(rng: np.random.Generator, h=(0.0, 1.0), s=(0.3, 0.8), v=(0.4, 0.9)) -> Color:
    return tuple(
        float(c)
        for c in colorsys.hsv_to_rgb(rng.uniform(*h) % 1.0, rng.uniform(*s), rng.uniform(*v))
    )


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


_WOODS = ((0.55, 0.35, 0.2), (0.7, 0.5, 0.3), (0.42, 0.27, 0.16), (0.78, 0.62, 0.42))
_WALLS = ((0.85, 0.82, 0.75), (0.72, 0.78, 0.84), (0.9, 0.88, 0.85), (0.7, 0.76, 0.64))
_GLASS = (0.85, 0.95, 0.93)
_METAL = (0.75, 0.76, 0.78)


@dataclass
class _Builder:
    """Hands out unique names and instance ids while a scene is assembled."""

    rng: np.random.Generator
    objects: list[SceneObject] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def add(
        self,
        class_name: str,
        parts,
        material="diffuse",
        color=(0.7, 0.7, 0.7),
        texture="plain",
        **appearance,
    ) -> SceneObject:
        parts = parts if isinstance(parts, list) else [parts]
        mesh, tri_colors = _merge(parts)
        k = self.counts.get(class_name, 0) + 1
        self.counts[class_name] = k
        obj = SceneObject(
            name=f"{class_name}_{k}",
            class_name=class_name,
            instance_id=len(self.objects) + 1,
            material=material,
            color=tuple(float(c) for c in color),
            texture=texture,
            mesh=mesh,
            tri_colors=tri_colors,
            **appearance,
        )
        self.objects.append(obj)
        return obj


def _place_on_surface(rng, placed, radius, x_range, y_range, tries=40):
    """Rejection-sample a footprint centre that does not overlap the ``placed`` circles."""
    for _ in range(tries):
        x = rng.uniform(x_range[0] + radius, x_range[1] - radius)
        y = rng.uniform(y_range[0] + radius, y_range[1] - radius)
        if all(np.hypot(x - px, y - py) >= radius + pr + 0.01 for px, py, pr in placed):
            placed.append((x, y, radius))
            return x, y
    return None


def _tabletop_item(b: _Builder, rng, kind: str, x: float, y: float, z: float) -> None:
    """Add one graspable object of ``kind`` standing on the surface at height ``z``."""
    yaw = rng.uniform(0, 2 * np.pi)
    tex = _pick(rng, ("plain", "checker", "stripes", "noise"))
    scale = rng.uniform(0.015, 0.04)
    if kind == "box":
        s = rng.uniform([0.04, 0.04, 0.04], [0.14, 0.12, 0.16])
        b.add(
            "box",
            box(s, (x, y, z + s[2] / 2), yaw),
            color=_hsv(rng),
            texture=tex,
            texture_scale=scale,
        )
    elif kind == "book":
        s = rng.uniform([0.14, 0.1, 0.02], [0.24, 0.17, 0.05])
        b.add(
            "book",
            box(s, (x, y, z + s[2] / 2), yaw),
            color=_hsv(rng),
            texture="stripes",
            texture_scale=rng.uniform(0.01, 0.03),
            texture_axis=(0, 0, 1),
        )
    elif kind in ("can", "metal_can"):
        r, h = rng.uniform(0.028, 0.04), rng.uniform(0.09, 0.13)
        metal = kind == "metal_can"
        b.add(
            "can",
            cylinder(r, h, (x, y, z)),
            "specular" if metal else "diffuse",
            _METAL if metal else _hsv(rng),
            "plain" if metal else "stripes",
            texture_scale=0.03,
            texture_axis=(0, 0, 1),
            reflectivity=0.5 if metal else 0.0,
            shininess=80.0,
        )
    elif kind == "mug":
        r, h = rng.uniform(0.035, 0.05), rng.uniform(0.08, 0.11)
        side = np.array([np.cos(yaw), np.sin(yaw), 0.0])
        handle_axis = np.array([-np.sin(yaw), np.cos(yaw), 0.0])  # ring plane holds z and side
        handle = torus(h * 0.3, 0.008, (x, y, z + h / 2) + side * (r + 0.005), handle_axis)
        b.add(
            "mug",
            [cylinder(r, h, (x, y, z)), handle],
            color=_hsv(rng, v=(0.6, 0.95)),
            texture=_pick(rng, ("plain", "stripes", "checker")),
            texture_scale=0.03,
        )
    elif kind in ("ball", "metal_ball"):
        r = rng.uniform(0.03, 0.06)
        metal = kind == "metal_ball"
        b.add(
            "ball",
            sphere(r, (x, y, z + r)),
            "specular" if metal else "diffuse",
            _METAL if metal else _hsv(rng),
            "plain" if metal else tex,
            texture_scale=scale,
            reflectivity=0.6 if metal else 0.0,
            shininess=100.0,
        )
    elif kind in ("bottle", "glass_bottle", "metal_bottle"):
        r, h = rng.uniform(0.03, 0.042), rng.uniform(0.14, 0.2)
        parts = [
            cylinder(r, h, (x, y, z)),
            cone(r, r * 1.2, (x, y, z + h)),
            cylinder(r * 0.35, 0.06, (x, y, z + h + r * 0.8)),
        ]
        if kind == "glass_bottle":
            b.add(
                "bottle",
                parts,
                "transparent",
                _hsv(rng, s=(0.05, 0.3), v=(0.85, 1.0)),
                shininess=120.0,
            )
        elif kind == "metal_bottle":
            b.add("bottle", parts, "specular", _METAL, reflectivity=0.45, shininess=90.0)
        else:
            b.add("bottle", parts, color=_hsv(rng), texture="plain")
    elif kind == "glass":
        r, h = rng.uniform(0.03, 0.04), rng.uniform(0.08, 0.12)
        b.add("glass", cylinder(r, h, (x, y, z)), "transparent", _GLASS, shininess=120.0)
    else:
        raise ValueError(f"unknown tabletop item {kind!r}")


_FOOTPRINT = {
    "box": 0.1,
    "book": 0.15,
    "can": 0.04,
    "metal_can": 0.04,
    "mug": 0.075,
    "ball": 0.06,
    "metal_ball": 0.06,
    "bottle": 0.045,
    "glass_bottle": 0.045,
    "metal_bottle": 0.045,
    "glass": 0.04,
}


def _build_tabletop(rng: np.random.Generator, n_objects: int | None = None) -> Scene:
    b = _Builder(rng)
    sx, sy = rng.uniform(0.9, 1.6), rng.uniform(0.6, 1.0)
    top = rng.uniform(0.7, 0.8)
    b.add(
        "floor",
        box((10, 10, 0.05), (0, 0, -0.025)),
        color=_pick(rng, _WOODS),
        texture=_pick(rng, ("wood", "checker")),
        texture_scale=rng.uniform(0.3, 0.6),
    )
    wall_y = sy / 2 + rng.uniform(1.0, 2.0)
    b.add(
        "wall",
        box((10, 0.1, 3.0), (0, wall_y + 0.05, 1.5)),
        color=_pick(rng, _WALLS),
        texture=_pick(rng, ("plain", "noise", "bricks")),
        texture_scale=0.3,
    )
    if rng.random() < 0.5:
        wall_x = -(sx / 2 + rng.uniform(1.2, 2.0))
        b.add(
            "wall",
            box((0.1, 10, 3.0), (wall_x - 0.05, 0, 1.5)),
            color=_pick(rng, _WALLS),
            texture="noise",
            texture_scale=0.5,
            texture_axis=(0, 1, 0),
        )
    wood = _pick(rng, _WOODS)
    legs = [
        (box((0.05, 0.05, top - 0.04), (px, py, (top - 0.04) / 2)), (0.2, 0.2, 0.22))
        for px in (-sx / 2 + 0.06, sx / 2 - 0.06)
        for py in (-sy / 2 + 0.06, sy / 2 - 0.06)
    ]
    b.add(
        "table",
        [(box((sx, sy, 0.04), (0, 0, top - 0.02)), wood), *legs],
        color=wood,
        texture=_pick(rng, ("wood", "plain", "noise")),
        texture_scale=0.25,
    )

    n = int(rng.integers(4, 13)) if n_objects is None else int(n_objects)
    # always some glass and some metal: the hard cases for depth sensing and models
    kinds = [_pick(rng, ("glass_bottle", "glass")), _pick(rng, ("metal_can", "metal_bottle"))]
    others = (
        "box",
        "box",
        "book",
        "can",
        "mug",
        "mug",
        "ball",
        "metal_ball",
        "bottle",
        "glass_bottle",
        "glass",
    )
    kinds += [_pick(rng, others) for _ in range(max(n - 2, 0))]
    kinds = kinds[:n]
    placed: list = []
    margin = 0.04
    for kind in kinds:
        spot = _place_on_surface(
            rng,
            placed,
            _FOOTPRINT[kind],
            (-sx / 2 + margin, sx / 2 - margin),
            (-sy / 2 + margin, sy / 2 - margin),
        )
        if spot is not None:
            _tabletop_item(b, rng, kind, spot[0], spot[1], top)

    lx, ly = rng.uniform(-0.4, 0.4, 2)
    lz = top + rng.uniform(1.5, 2.1)
    lights = [
        Light("point", (lx, ly, lz), (1.0, 0.97, 0.9), intensity=1.1 * ((lz - top) ** 2 + 0.25)),
        Light(
            "directional",
            tuple(_unit(rng.uniform([-1, -1, 0.4], [1, 0, 1]))),
            (0.9, 0.95, 1.0),
            intensity=0.25,
            shadows=False,
        ),
    ]
    meta = {"table_center": (0.0, 0.0, top), "table_size": (sx, sy), "table_top_z": top}
    return Scene("tabletop", b.objects, lights, ambient=(0.16, 0.16, 0.17), meta=meta)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


@dataclass
class _Wall:
    """A room wall: ``start + s * tangent`` along it, ``inward`` into the room."""

    start: np.ndarray
    tangent: np.ndarray
    inward: np.ndarray
    length: float
    used: list = field(default_factory=list)  # occupied (s0, s1) intervals

    def local_box(self, s0, s1, d0, d1, z0, z1) -> o3d.geometry.TriangleMesh:
        """Box spanning [s0, s1] along the wall, [d0, d1] into the room, [z0, z1] up."""
        a = self.start + self.tangent * s0 + self.inward * d0
        c = self.start + self.tangent * s1 + self.inward * d1
        return box_between((a[0], a[1], z0), (c[0], c[1], z1))

    def footprint(self, s0, s1, d0, d1) -> tuple[tuple[float, float], tuple[float, float]]:
        """World (x range, y range) of the local footprint [s0, s1] x [d0, d1]."""
        a = self.start + self.tangent * s0 + self.inward * d0
        c = self.start + self.tangent * s1 + self.inward * d1
        return (min(a[0], c[0]), max(a[0], c[0])), (min(a[1], c[1]), max(a[1], c[1]))

    def free_slot(self, rng, width, tries=30) -> float | None:
        for _ in range(tries):
            if self.length - width - 0.2 <= 0.1:
                return None
            s0 = rng.uniform(0.1, self.length - width - 0.1)
            if all(s0 + width + 0.1 <= a or s0 >= b + 0.1 for a, b in self.used):
                self.used.append((s0, s0 + width))
                return s0
        return None


def _build_room(rng: np.random.Generator) -> Scene:
    b = _Builder(rng)
    W, D, H = rng.uniform(4.0, 7.0), rng.uniform(4.0, 6.0), rng.uniform(2.5, 3.0)
    th = 0.1
    b.add(
        "floor",
        box_between((-th, -th, -th), (W + th, D + th, 0)),
        color=_pick(rng, _WOODS),
        texture=_pick(rng, ("wood", "checker")),
        texture_scale=rng.uniform(0.4, 0.8),
    )
    b.add("ceiling", box_between((-th, -th, H), (W + th, D + th, H + th)), color=(0.9, 0.9, 0.88))
    walls = [
        _Wall(np.array([0.0, 0.0, 0.0]), np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]), W),
        _Wall(np.array([W, D, 0.0]), np.array([-1.0, 0.0, 0.0]), np.array([0.0, -1.0, 0.0]), W),
        _Wall(np.array([0.0, D, 0.0]), np.array([0.0, -1.0, 0.0]), np.array([1.0, 0.0, 0.0]), D),
        _Wall(np.array([W, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]), np.array([-1.0, 0.0, 0.0]), D),
    ]
    window_wall, mirror_wall = rng.choice(4, size=2, replace=False)
    wall_color = _pick(rng, _WALLS)
    wall_tex = _pick(rng, ("plain", "noise", "bricks"))
    for i, w in enumerate(walls):
        pieces = []
        ext = (-th, w.length + th)  # walls overlap at the corners: no light leaks
        if i == window_wall:
            ww, wh, sill = rng.uniform(1.0, 1.6), rng.uniform(1.0, 1.3), rng.uniform(0.8, 1.0)
            a = rng.uniform(0.4, w.length - ww - 0.4)
            w.used.append((a, a + ww))
            pieces += [
                w.local_box(ext[0], a, -th, 0, 0, H),
                w.local_box(a + ww, ext[1], -th, 0, 0, H),
                w.local_box(a, a + ww, -th, 0, 0, sill),
                w.local_box(a, a + ww, -th, 0, sill + wh, H),
            ]
            glass = w.local_box(a, a + ww, -th / 2 - 0.006, -th / 2 + 0.006, sill, sill + wh)
            b.add("window", glass, "transparent", _GLASS, shininess=150.0)
        else:
            pieces.append(w.local_box(ext[0], ext[1], -th, 0, 0, H))
        b.add(
            "wall",
            pieces,
            color=wall_color,
            texture=wall_tex,
            texture_scale=0.3,
            texture_axis=tuple(w.tangent),
        )

    mw, mh = rng.uniform(0.6, 1.0), rng.uniform(1.0, 1.5)
    wall = walls[mirror_wall]
    s0 = wall.free_slot(rng, mw)
    if s0 is not None:
        z0 = rng.uniform(0.4, max(0.45, H - mh - 0.3))
        b.add(
            "mirror",
            wall.local_box(s0, s0 + mw, 0, 0.02, z0, z0 + mh),
            "specular",
            (0.92, 0.93, 0.95),
            reflectivity=0.9,
            shininess=300.0,
        )

    if rng.random() < 0.6:  # a metal floor lamp in a corner; furniture keeps clear of it
        px, py = _pick(
            rng, ((0.35, 0.35), (W - 0.35, 0.35), (0.35, D - 0.35), (W - 0.35, D - 0.35))
        )
        for w in walls:
            rel = np.array([px, py, 0.0]) - w.start
            if rel @ w.inward < 1.0:
                s_lamp = rel @ w.tangent
                w.used.append((s_lamp - 0.35, s_lamp + 0.35))
        b.add(
            "lamp",
            [
                cylinder(0.15, 0.03, (px, py, 0)),
                cylinder(0.02, 1.5, (px, py, 0.03)),
                cone(0.22, 0.3, (px, py, 1.45)),
            ],
            "specular",
            _METAL,
            reflectivity=0.35,
            shininess=70.0,
        )
    surfaces = []  # tops where small objects stand
    for _ in range(int(rng.integers(3, 6))):
        top = _room_furniture(b, rng, walls[int(rng.integers(4))], _pick(rng, _FURNITURE))
        if top is not None:
            surfaces.append(top)

    if rng.random() < 0.7:  # coffee table in the middle, sometimes with a glass top
        cx, cy = W / 2 + rng.uniform(-0.4, 0.4), D / 2 + rng.uniform(-0.4, 0.4)
        tw, tdp, tz = rng.uniform(0.8, 1.2), rng.uniform(0.5, 0.7), rng.uniform(0.4, 0.5)
        legs = [
            box((0.04, 0.04, tz), (cx + px, cy + py, tz / 2))
            for px in (-tw / 2 + 0.05, tw / 2 - 0.05)
            for py in (-tdp / 2 + 0.05, tdp / 2 - 0.05)
        ]
        top = box((tw, tdp, 0.02), (cx, cy, tz + 0.01))
        surfaces.append(((cx - tw / 2, cx + tw / 2), (cy - tdp / 2, cy + tdp / 2), tz + 0.02))
        if rng.random() < 0.5:
            b.add("table", legs, "specular", _METAL, reflectivity=0.3, shininess=60.0)
            b.add("table", top, "transparent", _GLASS, shininess=150.0)
        else:
            b.add(
                "table", [*legs, top], color=_pick(rng, _WOODS), texture="wood", texture_scale=0.3
            )
        b.add(
            "rug",
            box((tw + 1.0, tdp + 1.0, 0.006), (cx, cy, 0.003)),
            color=_hsv(rng),
            texture=_pick(rng, ("stripes", "checker")),
            texture_scale=0.25,
        )
    for xr, yr, z in surfaces:  # clutter: mugs, books, bottles (some glass, some metal)
        placed: list = []
        for _ in range(int(rng.integers(1, 4))):
            kind = _pick(rng, _ROOM_CLUTTER)
            spot = _place_on_surface(rng, placed, _FOOTPRINT[kind], xr, yr)
            if spot is not None:
                _tabletop_item(b, rng, kind, spot[0], spot[1], z)

    lx, ly = W / 2 + rng.uniform(-0.5, 0.5), D / 2 + rng.uniform(-0.5, 0.5)
    lights = [
        Light(
            "point",
            (lx, ly, H - 0.3),
            (1.0, 0.95, 0.85),
            intensity=1.0 * ((H - 0.3) ** 2 + 0.25),
            spot_axis=(0.0, 0.0, -1.0),  # a ceiling fixture: the ceiling itself stays dim
        ),
        Light(
            "point",
            (rng.uniform(0.5, W - 0.5), rng.uniform(0.5, D - 0.5), H - 0.5),
            (0.85, 0.9, 1.0),
            intensity=0.7,
            shadows=False,
            soft_radius=1.0,
        ),
    ]
    margin = 1.0
    meta = {
        "room_min": (0.0, 0.0, 0.0),
        "room_max": (W, D, H),
        "free_min": (margin, margin),  # walkable area away from furniture along the walls
        "free_max": (W - margin, D - margin),
        "eye_z": (1.2, 1.7),
    }
    return Scene(
        "room",
        b.objects,
        lights,
        ambient=(0.2, 0.2, 0.21),
        sky=((0.55, 0.7, 0.98), (0.95, 0.96, 1.0)),
        meta=meta,
    )


_FURNITURE = ("cabinet", "shelf", "sofa", "desk")
_ROOM_CLUTTER = ("book", "mug", "bottle", "glass_bottle", "glass", "box", "metal_can", "ball")


def _room_furniture(b: _Builder, rng, wall: _Wall, kind: str):
    """Furniture standing against ``wall`` (depth < 0.9 m: the walkable centre stays free).

    Returns the free top surface ``(x range, y range, z)`` of desks and low cabinets (where
    clutter goes), else None.
    """
    widths = {"cabinet": (0.6, 1.4), "shelf": (0.6, 1.2), "sofa": (1.6, 2.2), "desk": (1.0, 1.6)}
    w = rng.uniform(*widths[kind])
    s0 = wall.free_slot(rng, w)
    if s0 is None:
        return None
    s1 = s0 + w
    wood = _pick(rng, _WOODS)
    if kind == "cabinet":
        h, dp = rng.uniform(0.8, 2.0), rng.uniform(0.4, 0.6)
        b.add(
            "cabinet",
            wall.local_box(s0, s1, 0, dp, 0, h),
            color=wood,
            texture="wood",
            texture_scale=0.4,
            texture_axis=(0, 0, 1),
        )
        if h < 1.3:
            return (*wall.footprint(s0, s1, 0, dp), h)
    elif kind == "shelf":
        h, dp, t = rng.uniform(1.2, 2.0), rng.uniform(0.3, 0.4), 0.03
        n_boards = int(rng.integers(3, 6))
        zs = np.linspace(0.05, h - t, n_boards)
        parts = [
            wall.local_box(s0, s0 + t, 0, dp, 0, h),
            wall.local_box(s1 - t, s1, 0, dp, 0, h),
            wall.local_box(s0, s1, 0, 0.02, 0, h),
        ]
        parts += [wall.local_box(s0, s1, 0, dp, z, z + t) for z in zs]
        b.add(
            "shelf",
            parts,
            color=wood,
            texture="wood",
            texture_scale=0.3,
            texture_axis=tuple(wall.tangent),
        )
        for z in zs[:-1]:  # a row of books on most boards
            if rng.random() < 0.3:
                continue
            s = s0 + t + 0.02
            s_end = s + (s1 - s0 - 2 * t) * rng.uniform(0.3, 0.9)  # part-filled boards
            while s < min(s_end, s1 - t - 0.06):
                bw, bh = rng.uniform(0.02, 0.05), rng.uniform(0.15, min(0.3, zs[1] - zs[0] - 0.04))
                b.add(
                    "book",
                    wall.local_box(s, s + bw, 0.03, dp - 0.03, z + t, z + t + bh),
                    color=_hsv(rng),
                    texture="stripes",
                    texture_scale=0.05,
                    texture_axis=(0, 0, 1),
                )
                s += bw + rng.uniform(0.0, 0.02)
    elif kind == "sofa":
        col = _hsv(rng, s=(0.2, 0.6), v=(0.3, 0.7))
        parts = [
            wall.local_box(s0, s1, 0.2, 0.9, 0, 0.45),
            wall.local_box(s0, s1, 0, 0.2, 0, 0.85),
            wall.local_box(s0, s0 + 0.2, 0.2, 0.9, 0.45, 0.62),
            wall.local_box(s1 - 0.2, s1, 0.2, 0.9, 0.45, 0.62),
        ]
        b.add("sofa", parts, color=col, texture="noise", texture_scale=0.05)
    elif kind == "desk":
        dp, h = rng.uniform(0.6, 0.8), 0.75
        parts = [wall.local_box(s0, s1, 0, dp, h - 0.03, h)]
        parts += [
            wall.local_box(a, a + 0.05, c, c + 0.05, 0, h - 0.03)
            for a in (s0 + 0.03, s1 - 0.08)
            for c in (0.03, dp - 0.08)
        ]
        b.add("desk", parts, color=wood, texture="wood", texture_scale=0.3)
        m = s0 + w / 2
        b.add(
            "monitor",
            [
                wall.local_box(m - 0.3, m + 0.3, 0.15, 0.18, h + 0.12, h + 0.5),
                wall.local_box(m - 0.03, m + 0.03, 0.18, 0.2, h, h + 0.12),
            ],
            "specular",
            (0.08, 0.08, 0.1),
            reflectivity=0.25,
            shininess=120.0,
        )
        return (*wall.footprint(s0, s1, 0.25, dp), h)  # in front of the monitor
    return None


def _car(b: _Builder, rng, x: float, y: float, yaw: float) -> None:
    """A car as a box composition: painted body + roof + pillars, glass cabin, four wheels."""
    length, width = rng.uniform(3.8, 4.6), rng.uniform(1.7, 1.9)
    R = _rot_z(yaw)
    pos = np.array([x, y, 0.0])

    def part(size, center):
        return box(size, pos + R @ np.asarray(center, np.float64), yaw)

    cab_len, cab_x = length * rng.uniform(0.45, 0.55), rng.uniform(-0.35, -0.1)
    paint = _hsv(rng, s=(0.0, 0.8), v=(0.15, 0.9))
    body = [
        part((length, width, 0.65), (0, 0, 0.62)),
        part((cab_len + 0.05, width * 0.94, 0.06), (cab_x, 0, 1.42)),
    ]
    body += [
        part((0.08, 0.08, 0.48), (cab_x + sx * cab_len / 2, sy * width * 0.44, 1.18))
        for sx in (-1, 1)
        for sy in (-1, 1)
    ]
    wheels = [
        (
            cylinder(
                0.32,
                0.22,
                pos + R @ np.array([wx * length * 0.32, wy * (width / 2 - 0.15), 0.32]),
                R @ np.array([0.0, wy, 0.0]),
            ),
            (0.05, 0.05, 0.05),
        )
        for wx in (-1, 1)
        for wy in (-1, 1)
    ]
    b.add(
        "car",
        [(m, paint) for m in body] + wheels,
        "specular",
        paint,
        reflectivity=0.2,
        shininess=80.0,
    )
    b.add(
        "car_window",
        part((cab_len, width * 0.9, 0.48), (cab_x, 0, 1.18)),
        "transparent",
        (0.55, 0.62, 0.66),
        shininess=150.0,
    )


def _build_street(rng: np.random.Generator) -> Scene:
    b = _Builder(rng)
    L = rng.uniform(80.0, 140.0)  # drivable length along +x
    lane = rng.uniform(3.0, 3.6)
    park = 2.3  # a parking lane on each side keeps parked cars off the ego lane
    half = lane + park
    walk = rng.uniform(2.0, 3.5)
    x0, x1 = -30.0, L + 40.0
    b.add(
        "ground",
        box_between((x0 - 20, -80, -0.3), (x1 + 20, 80, -0.02)),
        color=(0.3, 0.42, 0.2),
        texture="noise",
        texture_scale=0.8,
    )
    b.add(
        "road",
        box_between((x0, -half, -0.2), (x1, half, 0.0)),
        color=(0.2, 0.2, 0.21),
        texture="noise",
        texture_scale=0.4,
        color2=(0.3, 0.3, 0.31),
    )
    dashes = [box_between((x, -0.07, 0.0), (x + 3.0, 0.07, 0.004)) for x in np.arange(x0, x1, 6.0)]
    lines = [box_between((x0, s * lane - 0.07, 0), (x1, s * lane + 0.07, 0.004)) for s in (-1, 1)]
    b.add("lane_marking", dashes + lines, color=(0.92, 0.92, 0.88))
    for s in (-1, 1):
        b.add(
            "sidewalk",
            box_between((x0, s * half, -0.2), (x1, s * (half + walk), 0.15)),
            color=(0.62, 0.6, 0.58),
            texture="checker",
            texture_scale=0.6,
        )

    for s in (-1, 1):  # building blocks on both sides, facades facing the road
        x = x0
        while x < x1:
            w, dp, h = rng.uniform(8, 20), rng.uniform(8, 15), rng.uniform(6, 25)
            y_front = s * (half + walk + rng.uniform(0.0, 2.0))
            b.add(
                "building",
                box_between((x, y_front, 0), (x + w, y_front + s * dp, h)),
                color=_hsv(rng, s=(0.1, 0.5), v=(0.45, 0.85)),
                texture=_pick(rng, ("bricks", "plain", "noise")),
                texture_scale=0.35,
            )
            wins = [
                box_between((wx, y_front - s * 0.05, wz), (wx + 1.2, y_front + s * 0.02, wz + 1.5))
                for wz in np.arange(1.2, h - 1.8, 3.0)
                for wx in np.arange(x + 1.0, x + w - 1.5, 2.6)
            ]
            if wins:
                b.add("window", wins, "transparent", (0.55, 0.65, 0.7), shininess=200.0)
            x += w + rng.uniform(0.0, 3.0)
    for xe in (x0 - 12, x1 + 2):  # blocks closing both ends of the street
        b.add(
            "building",
            box_between((xe, -60, 0), (xe + 10, 60, rng.uniform(12, 25))),
            color=_hsv(rng, s=(0.1, 0.4), v=(0.5, 0.8)),
            texture="bricks",
            texture_scale=0.35,
            texture_axis=(0, 1, 0),
        )

    # parked cars on both parking lanes, a few oncoming cars; the ego lane (-y) stays clear
    taken: dict[float, list] = {}
    for _ in range(int(rng.integers(3, 9))):
        lane_y = _pick(rng, (-(lane + park / 2), lane + park / 2, lane / 2))
        for _try in range(20):
            cx = rng.uniform(0.0, L)
            if all(abs(cx - o) > 6.0 for o in taken.get(lane_y, [])):
                taken.setdefault(lane_y, []).append(cx)
                yaw = (np.pi if lane_y == lane / 2 else 0.0) + rng.normal(0, 0.03)
                _car(b, rng, cx, lane_y, yaw)
                break

    spacing = rng.uniform(20, 30)
    for s in (-1, 1):
        for px in np.arange(x0 + rng.uniform(0, spacing), x1, spacing):
            py = s * (half + 0.5)
            b.add(
                "pole",
                [
                    cylinder(0.08, 6.0, (px, py, 0.15)),
                    box((0.1, 1.5, 0.1), (px, py - s * 0.7, 6.1)),
                    box((0.3, 0.5, 0.15), (px, py - s * 1.4, 6.0)),
                ],
                "specular",
                _METAL,
                reflectivity=0.25,
                shininess=60.0,
            )
            tx, ty = px + spacing / 2, s * (half + walk - 0.8)
            th, cr = rng.uniform(2.0, 3.5), rng.uniform(1.2, 2.0)
            b.add(
                "tree",
                [
                    (cylinder(rng.uniform(0.12, 0.2), th, (tx, ty, 0.15)), (0.35, 0.25, 0.15)),
                    (sphere(cr, (tx, ty, th + cr * 0.8)), _hsv(rng, (0.22, 0.35), v=(0.3, 0.6))),
                ],
                texture="noise",
                texture_scale=0.3,
            )

    elev, azim = np.radians(rng.uniform(30, 65)), rng.uniform(0, 2 * np.pi)
    sun = (np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev))
    lights = [Light("directional", sun, (1.0, 0.96, 0.88), intensity=1.6)]
    meta = {
        "road_x": (0.0, L),
        "lane_width": lane,
        "road_half_width": half,
        "lane_y": -lane / 2,
        "camera_height": 1.5,
    }
    return Scene("street", b.objects, lights, ambient=(0.24, 0.27, 0.33), meta=meta)


def make_scene(kind: str, seed: int, **kw) -> Scene:
    """A procedural scene of ``kind`` ("room" | "tabletop" | "street"), deterministic for a seed.

    Keyword options: tabletop ``n_objects`` (default: random 4-12).
    """
    rng = np.random.default_rng(seed)
    if kind == "tabletop":
        scene = _build_tabletop(rng, **kw)
    elif kind == "room":
        scene = _build_room(rng, **kw)
    elif kind == "street":
        scene = _build_street(rng, **kw)
    else:
        raise ValueError(f"unknown scene kind {kind!r}; expected one of {SCENE_KINDS}")
    scene.meta["seed"] = int(seed)
    return scene

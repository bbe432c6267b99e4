"""Synthetic world: procedural scenes, exact rendering, cameras and trajectories."""

import pickle

import cv2
import numpy as np
import open3d as o3d
import pytest

from depth_perception.core.camera import Intrinsics
from depth_perception.sim.render import (
    RESOLUTIONS,
    CameraPose,
    camera_rays,
    random_intrinsics,
    render_view,
)
from depth_perception.sim.scenes import (
    MATERIALS,
    Light,
    Scene,
    SceneObject,
    box,
    make_scene,
)
from depth_perception.sim.trajectory import DEFAULT_SPEED, TRAJECTORY_KINDS, make_trajectory

SMALL = Intrinsics(width=160, height=120, fx=110.0, fy=110.0, cx=79.5, cy=59.5)


@pytest.fixture(scope="module")
def scenes() -> dict[str, Scene]:
    return {kind: make_scene(kind, seed=7) for kind in ("tabletop", "room", "street")}


def _obj(name, iid, mesh, material="diffuse", color=(0.6, 0.6, 0.6), texture="plain", **kw):
    return SceneObject(name, name.split("_")[0], iid, material, color, texture, mesh, **kw)


def _wall_scene(d: float, yaw: float = 0.0, extra=()) -> Scene:
    """A 40 m x 40 m slab whose front face passes through (d, 0, 0) with normal
    (-cos yaw, -sin yaw, 0): the face is the plane x' = 0 of the slab, rotated about z."""
    slab = o3d.geometry.TriangleMesh.create_box(0.2, 40.0, 40.0)
    slab.translate((0.0, -20.0, -20.0))
    R = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    slab.rotate(R, center=(0.0, 0.0, 0.0))
    slab.translate((d, 0.0, 0.0))
    objects = [_obj("wall_1", 1, slab, texture="checker", texture_scale=0.5)]
    objects += list(extra)
    # a sun from the side: its glint on glass would fall outside the test cameras' view
    lights = [Light("directional", (-0.5, 0.8, 0.3), intensity=1.5, shadows=False)]
    return Scene("room", objects, lights)


# ------------------------------------------------------------------------------ depth
def test_fronto_parallel_wall_depth_is_exact_and_z_not_ray_length():
    d = 2.5
    scene = _wall_scene(d)
    pose = CameraPose.look_at((0, 0, 0), (1, 0, 0))
    view = render_view(scene, SMALL, pose)
    assert np.isfinite(view.depth).all()
    # depth is re-solved in float64 on the triangle plane: exact, not just close
    assert (view.depth == np.float32(d)).all()
    assert (view.instance == 1).all() and (view.material == 0).all()
    # the wall faces the camera: normal is -z in the optical frame
    np.testing.assert_allclose(
        view.normal_cam, np.broadcast_to([0, 0, -1], (120, 160, 3)), atol=1e-6
    )

    # corner pixel (0, 0): ray length is longer than the optical-axis depth by |(xn, yn, 1)|
    xn, yn = (0 - SMALL.cx) / SMALL.fx, (0 - SMALL.cy) / SMALL.fy
    direction = pose.rotation @ np.array([xn, yn, 1.0])
    hits = scene.raycast(pose.position, direction / np.linalg.norm(direction))
    ray_length = d * np.sqrt(1 + xn**2 + yn**2)
    assert hits.t[0] == pytest.approx(ray_length, rel=1e-6)
    assert view.depth[0, 0] == pytest.approx(d, rel=1e-7)
    assert hits.t[0] > view.depth[0, 0] * 1.3  # the corner ray is 35 % longer than its depth
    np.testing.assert_allclose(
        hits.points[0],
        pose.position + ray_length * direction / np.linalg.norm(direction),
        atol=1e-5,
    )


def test_oblique_plane_depth_matches_hand_computation():
    d, yaw = 3.0, np.radians(35.0)
    view = render_view(_wall_scene(d, yaw), SMALL, CameraPose.look_at((0, 0, 0), (1, 0, 0)))
    # Camera looks along world +x, optical x = world -y. The face is the plane through (d,0,0)
    # with normal (cos, sin, 0): cos*(Z - d) - sin*X = 0 with X = xn*Z  ->  Z = d cos/(cos - xn sin)
    u = np.arange(SMALL.width)
    xn = (u - SMALL.cx) / SMALL.fx
    expected = d * np.cos(yaw) / (np.cos(yaw) - xn * np.sin(yaw))
    np.testing.assert_allclose(view.depth, np.broadcast_to(expected, (120, 160)), rtol=1e-6)
    # depth varies along u only (the plane is vertical), and grows towards the receding side
    assert view.depth[0, -1] > view.depth[0, 0]


def test_depth_and_labels_match_open3d_pinhole_reference(scenes):
    """Independent check with open3d's own pinhole rays (which put pixel centres at u + 0.5)."""
    scene = scenes["tabletop"]
    top = scene.meta["table_top_z"]
    intr = random_intrinsics(np.random.default_rng(3), 160, 120)
    pose = CameraPose.look_at((0.35, -0.45, top + 0.7), (0.0, 0.0, top))
    view = render_view(scene, intr, pose)

    ref = o3d.t.geometry.RaycastingScene()
    for obj in scene.objects:
        ref.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(obj.mesh))
    K = intr.K.copy()
    K[:2, 2] += 0.5
    rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
        o3d.core.Tensor(K), o3d.core.Tensor(pose.cam_T_world), intr.width, intr.height
    )
    ans = ref.cast_rays(rays)
    z_ref = ans["t_hit"].numpy() * (rays.numpy()[..., 3:] @ pose.rotation)[..., 2]
    geometry = ans["geometry_ids"].numpy().astype(np.int64)
    ids = np.array([o.instance_id for o in scene.objects] + [0])
    inst_ref = ids[np.minimum(geometry, len(scene.objects))]

    assert np.array_equal(np.isfinite(z_ref), np.isfinite(view.depth))
    ok = np.isfinite(z_ref)
    np.testing.assert_allclose(view.depth[ok], z_ref[ok], rtol=1e-5, atol=1e-6)
    assert np.mean(view.instance == inst_ref) > 0.999


def test_distorted_camera_depth_is_consistent_with_opencv_projection():
    intr = Intrinsics(160, 120, 100.0, 100.0, 81.0, 58.0, D=(-0.25, 0.08, 0.001, -0.0005, 0.0))
    d, yaw = 3.0, np.radians(25.0)
    view = render_view(_wall_scene(d, yaw), intr, CameraPose.look_at((0, 0, 0), (1, 0, 0)))
    rays = camera_rays(intr).reshape(120, 160, 3)
    v, u = np.mgrid[0:120:17, 0:160:23]
    pts = rays[v, u] * view.depth[v, u][..., None].astype(np.float64)
    # every back-projected point lies on the plane ...
    n = np.array([-np.sin(yaw), 0.0, np.cos(yaw)])  # plane normal in the optical frame
    np.testing.assert_allclose(pts.reshape(-1, 3) @ n, d * np.cos(yaw), rtol=1e-5)
    # ... and OpenCV's forward distortion model maps it back onto its own pixel
    uv, _ = cv2.projectPoints(
        pts.reshape(-1, 3), np.zeros(3), np.zeros(3), intr.K, np.array(intr.D)
    )
    np.testing.assert_allclose(uv.reshape(-1, 2), np.stack([u, v], -1).reshape(-1, 2), atol=1e-3)


# ------------------------------------------------------------------------- labels, boxes
def test_box_matches_projected_vertices():
    cube = box((0.4, 0.3, 0.5), (3.0, 0.4, -0.2), yaw=0.5)
    scene = _wall_scene(8.0, extra=[_obj("box_1", 2, cube, color=(0.8, 0.2, 0.2))])
    pose = CameraPose.look_at((0, 0, 0), (1, 0, 0))
    view = render_view(scene, SMALL, pose)
    uv, _ = SMALL.project(pose.to_camera(np.asarray(cube.vertices)))
    # a convex object covers exactly the pixel centres inside its projected outline
    expected = np.array(
        [
            np.ceil(uv[:, 0].min()),
            np.ceil(uv[:, 1].min()),
            np.floor(uv[:, 0].max()),
            np.floor(uv[:, 1].max()),
        ]
    )
    x0, y0, w, h = view.boxes()[2]
    np.testing.assert_allclose([x0, y0, x0 + w - 1, y0 + h - 1], expected, atol=1)
    assert w > 10 and h > 10
    assert set(view.boxes()) == {1, 2}


def test_instance_and_material_maps_agree_with_scene(scenes):
    scene = scenes["tabletop"]
    top = scene.meta["table_top_z"]
    intr = Intrinsics(200, 150, 90.0, 90.0, 99.5, 74.5)  # wide view of the whole table
    view = render_view(scene, intr, CameraPose.look_at((0.0, -0.5, top + 1.4), (0.0, 0.0, top)))
    assert np.array_equal(view.material, scene.material_of_id[view.instance])
    for iid in np.unique(view.instance[view.instance > 0]):
        obj = scene.object_by_id(iid)
        assert (view.material[view.instance == iid] == MATERIALS.index(obj.material)).all()
    # the tabletop generator always places glass and metal; here they are in view
    assert (view.material == 2).any() and (view.material == 1).any()
    assert np.isfinite(view.depth[view.material == 2]).all()
    # boxes() against a plain per-id computation
    boxes = view.boxes()
    assert set(boxes) == set(np.unique(view.instance[view.instance > 0]).tolist())
    for iid, (x0, y0, w, h) in boxes.items():
        ys, xs = np.nonzero(view.instance == iid)
        assert (x0, y0, w, h) == (xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1)
    # no hit = no label
    miss = ~np.isfinite(view.depth)
    assert (view.instance[miss] == 0).all() and (view.material[miss] == 255).all()


def test_glass_depth_is_the_glass_but_rgb_shows_the_background():
    glass = box((0.01, 1.2, 1.2), (1.5, 0.0, 0.0))
    pane = _obj("window_1", 2, glass, "transparent", (0.9, 0.95, 0.95), shininess=150.0)
    pose = CameraPose.look_at((0, 0, 0), (1, 0, 0))
    bare = render_view(_wall_scene(3.0), SMALL, pose, noise=0.0)
    view = render_view(_wall_scene(3.0, extra=[pane]), SMALL, pose, noise=0.0)
    m = view.instance == 2
    assert m.sum() > 1000
    assert (view.material[m] == 2).all()
    np.testing.assert_allclose(view.depth[m], 1.5 - 0.005, rtol=1e-6)  # front face of the pane
    assert (bare.depth[m] == np.float32(3.0)).all()
    # the checker wall stays visible through the glass: same pattern, a little washed out
    a = view.rgb[m].astype(np.float64).mean(axis=1)
    b = bare.rgb[m].astype(np.float64).mean(axis=1)
    assert np.corrcoef(a, b)[0, 1] > 0.95
    assert 0.5 * b.std() < a.std() < b.std()
    assert not np.array_equal(view.rgb[m], bare.rgb[m])


def test_mirror_reflects_what_is_behind_the_camera():
    mirror = _obj(
        "mirror_1",
        2,
        box((0.02, 2.0, 2.0), (2.0, 0.0, 0.0)),
        "specular",
        (0.95, 0.95, 0.95),
        reflectivity=0.9,
        shininess=300.0,
    )
    red = _obj("wall_1", 1, box((0.1, 10.0, 10.0), (-3.0, 0.0, 0.0)), color=(0.9, 0.05, 0.05))
    lights = [Light("point", (-1.0, 0.0, 0.0), intensity=4.0, shadows=False)]
    scene = Scene("room", [red, mirror], lights)
    view = render_view(scene, SMALL, CameraPose.look_at((0, 0, 0), (1, 0, 0)), noise=0.0)
    m = view.instance == 2
    assert m.any() and (view.material[m] == 1).all()
    rgb = np.median(view.rgb[m].astype(np.float64), axis=0)
    assert rgb[0] > 2 * rgb[1] and rgb[0] > 2 * rgb[2]  # the red wall, seen in the mirror
    # the same grey-white object as a diffuse surface is not red
    matte = Scene("room", [red, _obj("board_2", 2, mirror.mesh, color=(0.95, 0.95, 0.95))], lights)
    grey = render_view(matte, SMALL, CameraPose.look_at((0, 0, 0), (1, 0, 0)), noise=0.0)
    rgb = np.median(grey.rgb[m].astype(np.float64), axis=0)
    assert abs(rgb[0] - rgb[1]) < 5


def test_raycast_misses_and_dtypes():
    scene = _wall_scene(2.0)
    dirs = np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    hits = scene.raycast(np.zeros(3), dirs)
    assert hits.t.dtype == np.float32 and hits.instance_id.dtype == np.int32
    assert hits.t[0] == pytest.approx(2.0) and hits.instance_id[0] == 1
    np.testing.assert_allclose(hits.normal[0], [-1.0, 0.0, 0.0], atol=1e-7)
    assert np.isinf(hits.t[1]) and hits.instance_id[1] == 0
    assert np.isnan(hits.points[1]).all() and (hits.normal[1] == 0).all()


# ---------------------------------------------------------------------- determinism
def test_scenes_are_deterministic_per_seed():
    a, b, c = make_scene("tabletop", 11), make_scene("tabletop", 11), make_scene("tabletop", 12)
    assert [o.name for o in a.objects] == [o.name for o in b.objects]
    assert np.array_equal(a._V, b._V) and np.array_equal(a._T, b._T)
    assert a._V.shape != c._V.shape or not np.array_equal(a._V, c._V)

    pose = CameraPose.look_at((0.3, -0.4, 1.5), (0.0, 0.0, a.meta["table_top_z"]))
    va, vb = render_view(a, SMALL, pose, seed=1), render_view(b, SMALL, pose, seed=1)
    for field in ("rgb", "depth", "instance", "material", "normal_cam"):
        assert np.array_equal(getattr(va, field), getattr(vb, field), equal_nan=field != "rgb")
    # the render seed only changes sensor noise; another scene changes everything
    vn = render_view(a, SMALL, pose, seed=2)
    assert not np.array_equal(va.rgb, vn.rgb)
    assert np.array_equal(va.depth, vn.depth, equal_nan=True)
    vc = render_view(c, SMALL, pose, seed=1)
    assert not np.array_equal(va.depth, vc.depth, equal_nan=True)

    ta = make_trajectory(a, 20, np.random.default_rng(5))
    tb = make_trajectory(b, 20, np.random.default_rng(5))
    tc = make_trajectory(a, 20, np.random.default_rng(6))
    assert all(np.array_equal(p.world_T_cam, q.world_T_cam) for p, q in zip(ta, tb, strict=True))
    assert not np.allclose(ta[0].world_T_cam, tc[0].world_T_cam)


def test_scene_survives_pickling(scenes):
    scene = scenes["room"]
    clone = pickle.loads(pickle.dumps(scene))
    W, D, H = scene.meta["room_max"]
    dirs = np.random.default_rng(0).normal(size=(200, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    h1, h2 = scene.raycast((W / 2, D / 2, 1.4), dirs), clone.raycast((W / 2, D / 2, 1.4), dirs)
    assert np.array_equal(h1.t, h2.t) and np.array_equal(h1.instance_id, h2.instance_id)
    assert [o.name for o in clone.objects] == [o.name for o in scene.objects]


# ------------------------------------------------------------------ cameras, scenes
def test_random_intrinsics_ranges():
    rng = np.random.default_rng(0)
    for _ in range(50):
        intr = random_intrinsics(rng)
        assert (intr.width, intr.height) in RESOLUTIONS
        hfov = np.degrees(2 * np.arctan(intr.width / 2 / intr.fx))
        assert 55.0 <= hfov <= 90.0
        assert abs(intr.fy / intr.fx - 1) < 0.01
        assert abs(intr.cx - (intr.width - 1) / 2) <= 0.05 * intr.width
        assert abs(intr.cy - (intr.height - 1) / 2) <= 0.05 * intr.height
        assert not intr.is_distorted
    assert random_intrinsics(rng, width=400).size == (400, 300)


def test_look_at_builds_an_optical_frame():
    pose = CameraPose.look_at((1.0, 2.0, 1.5), (4.0, 2.0, 1.5))
    # looking along world +x with z up: image right = world -y, image down = world -z
    np.testing.assert_allclose(pose.rotation, [[0, 0, 1], [-1, 0, 0], [0, -1, 0]], atol=1e-12)
    target = np.array([[3.0, 1.0, 0.5]])
    uv, z = SMALL.project(pose.to_camera(target))
    assert z[0] == pytest.approx(2.0)
    assert uv[0, 0] > SMALL.cx and uv[0, 1] > SMALL.cy  # right of and below the centre
    down = CameraPose.look_at((0, 0, 2), (0, 0, 0))  # degenerate up: still a rotation
    np.testing.assert_allclose(down.rotation.T @ down.rotation, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(down.rotation[:, 2], [0, 0, -1], atol=1e-12)


@pytest.mark.parametrize("kind", ["tabletop", "room", "street"])
def test_each_kind_renders_mostly_valid_depth(scenes, kind):
    scene = scenes[kind]
    pose = make_trajectory(scene, 3, np.random.default_rng(1))[0]
    view = render_view(scene, SMALL, pose)
    valid = np.isfinite(view.depth)
    assert valid.mean() > 0.5
    assert (view.depth[valid] > 0.1).all()
    assert view.rgb.dtype == np.uint8 and view.rgb.shape == (120, 160, 3)
    assert view.rgb.std() > 10  # shading/texture, not a flat image
    np.testing.assert_allclose(np.linalg.norm(view.normal_cam[valid], axis=1), 1.0, atol=1e-5)
    # normals face the camera: n . (ray direction) < 0
    rays = camera_rays(SMALL).reshape(120, 160, 3)
    assert (np.einsum("ijk,ijk->ij", view.normal_cam, rays)[valid] < 1e-6).all()
    # each kind has its characteristic structure
    classes = {scene.object_by_id(i).class_name for i in np.unique(view.instance) if i}
    assert classes & {"table", "floor", "wall", "road", "sidewalk", "building", "ceiling"}
    assert len(scene.objects) >= 5


# ----------------------------------------------------------------------- trajectories
@pytest.mark.parametrize(
    "kind,motion", [(k, m) for k, motions in TRAJECTORY_KINDS.items() for m in motions]
)
def test_trajectories_are_smooth_and_at_plausible_heights(scenes, kind, motion):
    scene = scenes[kind]
    poses = make_trajectory(scene, 80, np.random.default_rng(2), motion)
    assert len(poses) == 80
    P = np.array([p.position for p in poses])
    R = np.array([p.rotation for p in poses])
    np.testing.assert_allclose(
        np.einsum("nji,njk->nik", R, R), np.broadcast_to(np.eye(3), R.shape), atol=1e-9
    )
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-9)

    step = np.linalg.norm(np.diff(P, axis=0), axis=1)
    assert step.max() <= 1.35 * DEFAULT_SPEED[motion]
    assert step.min() > 0  # it moves every frame
    # no kinks: the step vector changes much less than its own length between frames
    assert np.linalg.norm(np.diff(P, 2, axis=0), axis=1).max() < 0.5 * step.max()
    rel = np.einsum("nji,njk->nik", R[:-1], R[1:])
    angle = np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert angle.max() < 3.0

    if kind == "tabletop":
        above = P[:, 2] - scene.meta["table_top_z"]
        assert (above >= 0.4 - 1e-9).all() and (above <= 1.0 + 1e-9).all()
        assert (R[:, 2, 2] < -0.3).all()  # looking down at the table
    elif kind == "room":
        assert (P[:, 2] >= 1.2).all() and (P[:, 2] <= 1.7).all()
        lo, hi = scene.meta["free_min"], scene.meta["free_max"]
        assert (P[:, :2] >= lo).all() and (P[:, :2] <= hi).all()
    else:
        np.testing.assert_allclose(P[:, 2], 1.5, atol=0.02)
        assert (np.diff(P[:, 0]) > 0).all()  # driving forward along the road
        assert (R[:, 0, 2] > 0.99).all()  # optical axis ~ world +x

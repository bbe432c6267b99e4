"""Tests for depth_perception.sim.sensors (RGB-D, corruption protocol, LiDAR, radar)."""

from dataclasses import dataclass, replace

import numpy as np
import pytest

from depth_perception.core.camera import Intrinsics
from depth_perception.sim.sensors import (
    CORRUPTION_LEVELS,
    DIFFUSE,
    SPECULAR,
    TRANSPARENT,
    LidarConfig,
    RadarConfig,
    RGBDSensorConfig,
    corrupt_depth,
    degrade_depth,
    projector_shadow_mask,
    simulate_lidar,
    simulate_radar,
    simulate_rgbd,
    sparse_sfm_points,
)

# Every RGB-D effect off: each test switches on the one it measures.
NO_EFFECTS = RGBDSensorConfig(
    range_limits=False,
    noise=False,
    subpixel_steps=0,
    shadows=False,
    transparent_invalid=False,
    specular_dropout=0.0,
    grazing_max_angle_deg=None,
    edge_dropout_prob=0.0,
)


def _intr(w: int, h: int, f: float = 200.0) -> Intrinsics:
    return Intrinsics(width=w, height=h, fx=f, fy=f, cx=(w - 1) / 2, cy=(h - 1) / 2)


def _fronto_normals(h: int, w: int) -> np.ndarray:
    n = np.zeros((h, w, 3), dtype=np.float32)
    n[..., 2] = -1.0  # facing the camera
    return n


@dataclass
class FakeView:
    """The RenderedView fields simulate_rgbd reads, built by hand."""

    depth: np.ndarray
    material: np.ndarray
    normal_cam: np.ndarray
    intrinsics: Intrinsics


def _material_view(rng: np.random.Generator) -> FakeView:
    h, w = 60, 80
    # A gently slanted plane plus noise: no discontinuities, so no shadows or edge speckle.
    depth = np.tile(np.linspace(1.5, 2.5, w, dtype=np.float32), (h, 1))
    depth += rng.uniform(0.0, 0.01, (h, w)).astype(np.float32)
    material = np.full((h, w), DIFFUSE, dtype=np.uint8)
    material[:, :30] = SPECULAR
    material[:, 50:] = TRANSPARENT
    return FakeView(depth, material, _fronto_normals(h, w), _intr(w, h))


# ------------------------------------------------------------------------------ RGB-D camera


def test_rgbd_is_deterministic_per_seed():
    view = _material_view(np.random.default_rng(0))
    cfg = RGBDSensorConfig()
    a = simulate_rgbd(view, cfg, np.random.default_rng(7))
    b = simulate_rgbd(view, cfg, np.random.default_rng(7))
    c = simulate_rgbd(view, cfg, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.shape == view.depth.shape
    assert not np.array_equal(a, c, equal_nan=True)


def test_transparent_never_valid_and_specular_mostly_invalid():
    view = _material_view(np.random.default_rng(1))
    out = simulate_rgbd(view, RGBDSensorConfig(edge_dropout_prob=0.0), np.random.default_rng(0))
    transparent = view.material == TRANSPARENT
    specular = view.material == SPECULAR
    diffuse = view.material == DIFFUSE
    assert np.isnan(out[transparent]).all()
    spec_valid = np.isfinite(out[specular]).mean()
    assert 0.05 < spec_valid < 0.25  # 85 % dropped, the rest survives
    assert np.isfinite(out[diffuse]).all()
    # Surviving specular pixels are noisier than diffuse ones (3x sigma by default).
    cfg = replace(NO_EFFECTS, noise=True, specular_dropout=0.0)
    noisy = simulate_rgbd(view, cfg, np.random.default_rng(2))
    err = noisy - view.depth
    assert np.std(err[specular]) > 2.0 * np.std(err[diffuse])


def test_noise_std_grows_with_depth_and_matches_sigma():
    cfg = replace(NO_EFFECTS, noise=True)
    intr = _intr(200, 150)
    stds = []
    for z in (1.0, 2.0, 4.0):
        depth = np.full((150, 200), z, dtype=np.float32)
        out = degrade_depth(depth, intr, cfg, np.random.default_rng(3))
        std = float(np.std(out.astype(np.float64) - z))
        # 30k samples: the sample std is within a few percent of sigma(z).
        assert std == pytest.approx(float(cfg.sigma(z)), rel=0.05)
        stds.append(std)
    assert stds[0] < stds[1] < stds[2]
    # Kinect model by hand: 0.0012 + 0.0019 (z - 0.4)^2.
    assert float(cfg.sigma(2.0)) == pytest.approx(0.0012 + 0.0019 * 1.6**2)


def test_disparity_quantization_gives_discrete_levels():
    cfg = replace(NO_EFFECTS, subpixel_steps=8)
    h, w = 40, 300
    intr = _intr(w, h)
    depth = np.tile(np.linspace(1.0, 3.0, w, dtype=np.float32), (h, 1))
    out = degrade_depth(depth, intr, cfg, np.random.default_rng(0))
    fb = intr.fx * cfg.baseline_m  # 15 px*m
    # Every output depth is f*B / (k / 8) for an integer k ...
    steps = fb / out.astype(np.float64) * 8
    np.testing.assert_allclose(steps, np.rint(steps), atol=1e-3)
    # ... namely the nearest one to the true disparity, so the error is at most half a step.
    half_step = depth.astype(np.float64) ** 2 / fb / 16
    assert np.all(np.abs(out - depth) <= half_step * 1.001 + 1e-6)
    levels = np.unique(out)
    expected = np.unique(np.rint(fb / depth.astype(np.float64) * 8))
    assert levels.size == expected.size  # k from 40 (z=3) to 120 (z=1): 81 levels
    assert levels.size == 81


def test_projector_shadow_on_left_of_box_with_expected_width():
    h, w = 20, 120
    intr = _intr(w, h)
    z_bg, z_fg = 3.0, 1.0
    depth = np.full((h, w), z_bg, dtype=np.float32)
    depth[:, 60:80] = z_fg  # a box in front of a wall
    cfg = replace(NO_EFFECTS, shadows=True)  # projector 7.5 cm to the right (+x)
    out = degrade_depth(depth, intr, cfg, np.random.default_rng(0))
    holes = np.isnan(out)
    assert (holes == holes[0]).all()  # same on every row
    cols = np.flatnonzero(holes[0])
    expected_width = intr.fx * cfg.baseline_m * (1 / z_fg - 1 / z_bg)  # 10 px
    assert cols.size == round(expected_width)
    assert cols.max() == 59  # shadow ends at the box's left edge ...
    assert np.isfinite(out[:, 60:]).all()  # ... the box and its right side are lit
    # A projector on the left mirrors the shadow to the right side of the box.
    left = degrade_depth(depth, intr, replace(cfg, baseline_m=-0.075), np.random.default_rng(0))
    cols_l = np.flatnonzero(np.isnan(left[0]))
    assert cols_l.min() == 80 and cols_l.size == round(expected_width)


def test_shadow_mask_ignores_smooth_surfaces():
    # A slanted plane visible to both camera and projector casts no shadow on itself.
    depth = np.tile(np.linspace(1.0, 2.0, 100, dtype=np.float32), (10, 1))
    assert not projector_shadow_mask(depth, 200.0, 0.075).any()


def test_range_limits():
    cfg = replace(NO_EFFECTS, range_limits=True, min_depth_m=0.5, max_depth_m=4.0)
    depth = np.array([[0.2, 0.5, 1.0, 3.9, 4.1, 10.0]], dtype=np.float32)
    out = degrade_depth(depth, _intr(6, 1), cfg, np.random.default_rng(0))
    np.testing.assert_array_equal(np.isnan(out[0]), [True, False, False, False, True, True])
    np.testing.assert_array_equal(out[0, 1:4], depth[0, 1:4])


def test_grazing_angle_dropout():
    h, w = 10, 10
    normals = _fronto_normals(h, w)
    tilt = np.radians(85.0)  # 85 deg from the optical axis: beyond the 78 deg default
    normals[:, :5] = [np.sin(tilt), 0.0, -np.cos(tilt)]
    view = FakeView(
        np.full((h, w), 2.0, np.float32), np.zeros((h, w), np.uint8), normals, _intr(w, h)
    )
    cfg = replace(NO_EFFECTS, grazing_max_angle_deg=78.0)
    out = simulate_rgbd(view, cfg, np.random.default_rng(0))
    assert np.isnan(out[:, :5]).all() and np.isfinite(out[:, 5:]).all()


def test_edge_speckle_only_near_discontinuities():
    h, w = 50, 50
    depth = np.full((h, w), 2.0, dtype=np.float32)
    depth[:, 25:] = 1.0
    cfg = replace(NO_EFFECTS, edge_dropout_prob=0.5)
    out = degrade_depth(depth, _intr(w, h), cfg, np.random.default_rng(0))
    holes = np.isnan(out)
    assert not holes[:, :24].any() and not holes[:, 26:].any()
    assert 0.3 < holes[:, 24:26].mean() < 0.7


def test_invalid_input_stays_invalid():
    depth = np.array([[0.0, -1.0, np.nan, np.inf, 1.0]], dtype=np.float32)
    out = degrade_depth(depth, _intr(5, 1), NO_EFFECTS, np.random.default_rng(0))
    np.testing.assert_array_equal(np.isnan(out[0]), [True, True, True, True, False])


# ----------------------------------------------------------------- corruption protocol, SfM


def test_corruption_levels_monotone_in_holes_and_noise():
    rng = np.random.default_rng(0)
    depth = rng.uniform(1.0, 5.0, (120, 160)).astype(np.float32)
    holes, noise = [], []
    for level in ("easy", "medium", "hard", "extreme"):
        out = corrupt_depth(depth, level, np.random.default_rng(1))
        hole = np.isnan(out)
        holes.append(hole.mean())
        noise.append(np.std(out[~hole] / depth[~hole] - 1.0))
        assert hole.mean() >= CORRUPTION_LEVELS[level].block_fraction
    assert holes == sorted(holes) and len(set(holes)) == 4
    assert noise == sorted(noise)
    assert noise[-1] == pytest.approx(CORRUPTION_LEVELS["extreme"].noise_rel, rel=0.1)


def test_corruption_removes_blocks_and_keeps_existing_holes():
    depth = np.full((100, 100), 2.0, dtype=np.float32)
    depth[:10, :10] = np.nan
    out = corrupt_depth(depth, "easy", np.random.default_rng(2))
    assert np.isnan(out[:10, :10]).all()
    # "easy" has no isolated dropouts: every hole belongs to a rectangle at least 5 px wide.
    holes = np.isnan(out)
    holes[:10, :10] = False
    rows_with_holes = holes.any(axis=1)
    assert holes[rows_with_holes].sum(axis=1).min() >= 5
    np.testing.assert_array_equal(out, corrupt_depth(depth, "easy", np.random.default_rng(2)))
    with pytest.raises(ValueError):
        corrupt_depth(depth, "impossible", np.random.default_rng(0))


def test_sparse_sfm_points_prefer_texture():
    h, w = 80, 120
    depth = np.full((h, w), 2.0, dtype=np.float32)
    rgb = np.full((h, w, 3), 128, dtype=np.uint8)
    yy, xx = np.mgrid[:h, : w // 2]
    rgb[:, : w // 2] = (((yy // 4 + xx // 4) % 2) * 255)[..., None]  # checkerboard half
    out = sparse_sfm_points(depth, rgb, np.random.default_rng(0), n=500)
    valid = np.isfinite(out)
    assert valid.sum() == 500
    assert valid[:, : w // 2].sum() > 0.85 * 500
    rel = out[valid] / 2.0 - 1.0
    assert np.std(rel) == pytest.approx(0.01, rel=0.2)
    np.testing.assert_array_equal(
        out, sparse_sfm_points(depth, rgb, np.random.default_rng(0), n=500)
    )


# ---------------------------------------------------------------------------- LiDAR / radar


@dataclass
class FakeHits:
    t: np.ndarray
    instance_id: np.ndarray
    normal: np.ndarray
    points: np.ndarray


class PlaneScene:
    """Infinite planes n.p = d, one instance each: an analytic stand-in for sim.scenes.Scene."""

    def __init__(self, planes: list[tuple[tuple[float, float, float], float, int]]):
        self.normals = np.array([p[0] for p in planes], dtype=np.float64)
        self.offsets = np.array([p[1] for p in planes], dtype=np.float64)
        self.material_of_id = np.array([255] + [p[2] for p in planes], dtype=np.uint8)

    def raycast(self, origins, directions):
        o = np.asarray(origins, dtype=np.float64)
        d = np.asarray(directions, dtype=np.float64)
        denom = d @ self.normals.T
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (self.offsets - o @ self.normals.T) / denom
        t = np.where(np.isfinite(t) & (t > 0), t, np.inf)
        k = np.argmin(t, axis=1)
        tmin = t[np.arange(len(t)), k]
        hit = np.isfinite(tmin)
        normal = np.where(hit[:, None], self.normals[k], 0.0)
        pts = np.where(hit[:, None], o + d * tmin[:, None], np.nan)
        return FakeHits(
            tmin.astype(np.float32),
            np.where(hit, k + 1, 0).astype(np.int32),
            normal.astype(np.float32),
            pts.astype(np.float32),
        )


def _pose(yaw_deg: float = 0.0, t=(0.0, 0.0, 0.0)) -> np.ndarray:
    a = np.radians(yaw_deg)
    T = np.eye(4)
    T[:3, :3] = [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
    T[:3, 3] = t
    return T


GROUND_AND_WALL = PlaneScene([((0, 0, 1), 0.0, DIFFUSE), ((1, 0, 0), 8.0, DIFFUSE)])
LIDAR_POSE = _pose(t=(0.0, 0.0, 1.5))


def _to_world(cloud: np.ndarray, T: np.ndarray) -> np.ndarray:
    pts = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=1).astype(np.float64)
    return pts @ T[:3, :3].T + T[:3, 3]


def test_lidar_deterministic_and_structured():
    cfg = LidarConfig(n_beams=16, horizontal_res_deg=2.0)
    a = simulate_lidar(GROUND_AND_WALL, LIDAR_POSE, cfg, np.random.default_rng(0))
    b = simulate_lidar(GROUND_AND_WALL, LIDAR_POSE, cfg, np.random.default_rng(0))
    c = simulate_lidar(GROUND_AND_WALL, LIDAR_POSE, cfg, np.random.default_rng(1))
    assert a.dtype.names == ("x", "y", "z", "intensity", "ring")
    assert a.dtype["x"] == np.float32 and a.dtype["ring"] == np.uint16
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a["x"][:100], c["x"][:100])


def test_lidar_points_on_surfaces_rings_and_elevations():
    cfg = LidarConfig(n_beams=16, vfov_deg=(-15.0, 15.0), horizontal_res_deg=1.0)
    cloud = simulate_lidar(GROUND_AND_WALL, LIDAR_POSE, cfg, np.random.default_rng(0))
    world = _to_world(cloud, LIDAR_POSE)
    dist = np.minimum(np.abs(world[:, 2]), np.abs(world[:, 0] - 8.0))
    assert dist.max() < 5 * cfg.range_noise_sigma_m
    assert np.std(dist) < 2 * cfg.range_noise_sigma_m
    assert cloud["ring"].max() < 16
    elev = np.degrees(np.arctan2(cloud["z"], np.hypot(cloud["x"], cloud["y"])))
    np.testing.assert_allclose(elev, cfg.elevations_deg()[cloud["ring"]], atol=1e-3)
    np.testing.assert_allclose(cfg.elevations_deg()[[0, -1]], [-15.0, 15.0])
    # Noise-free: exactly on the planes.
    clean = simulate_lidar(
        GROUND_AND_WALL, LIDAR_POSE, replace(cfg, range_noise_sigma_m=0.0), np.random.default_rng(0)
    )
    cw = _to_world(clean, LIDAR_POSE)
    assert np.minimum(np.abs(cw[:, 2]), np.abs(cw[:, 0] - 8.0)).max() < 1e-4


def test_lidar_point_count_is_beams_times_columns_times_hit_fraction():
    cfg = LidarConfig(n_beams=32, horizontal_res_deg=0.5, max_range_m=50.0, dropout_prob=0.0)
    el = np.radians(cfg.elevations_deg())
    az = np.radians(cfg.azimuths_deg())
    E, A = np.meshgrid(el, az)
    # Analytic ranges: ground (z = -1.5 in the LiDAR frame) and wall x = 8.
    with np.errstate(divide="ignore"):
        r_ground = np.where(E < 0, 1.5 / np.sin(-E), np.inf)
        r_wall = np.where(np.cos(A) > 0, 8.0 / (np.cos(E) * np.cos(A)), np.inf)
    r = np.minimum(r_ground, r_wall)
    hit_fraction = np.mean((r >= cfg.min_range_m) & (r <= cfg.max_range_m))
    n_rays = 32 * 720
    cloud = simulate_lidar(GROUND_AND_WALL, LIDAR_POSE, cfg, np.random.default_rng(0))
    assert abs(cloud.size - n_rays * hit_fraction) <= 5  # only noise at the range limit
    dropped = simulate_lidar(
        GROUND_AND_WALL, LIDAR_POSE, replace(cfg, dropout_prob=0.2), np.random.default_rng(0)
    )
    expected = n_rays * hit_fraction * 0.8
    assert abs(dropped.size - expected) < 4 * np.sqrt(expected * 0.2)


def test_lidar_frame_is_x_forward_y_left_z_up():
    # LiDAR yawed +90 deg: its x axis is world +y. A wall at world y = 6 is 6 m ahead.
    scene = PlaneScene([((0, 1, 0), 6.0, DIFFUSE)])
    T = _pose(90.0, (1.0, 0.0, 0.0))
    cfg = LidarConfig(n_beams=8, horizontal_res_deg=1.0, range_noise_sigma_m=0.0)
    cloud = simulate_lidar(scene, T, cfg, np.random.default_rng(0))
    ahead = (np.abs(cloud["y"]) < 0.05) & (np.abs(cloud["z"]) < 0.3)
    assert ahead.any()
    np.testing.assert_allclose(cloud["x"][ahead], 6.0, atol=0.02)
    assert (cloud["x"] > 0).all()  # nothing behind: the wall is only in front
    # 45 deg to the left (+y) lands left of the forward axis.
    left = np.degrees(np.arctan2(cloud["y"], cloud["x"]))
    assert left.max() > 80 and left.min() < -80


def test_lidar_sees_through_glass_and_specular_is_weak():
    glass = PlaneScene([((1, 0, 0), 4.0, TRANSPARENT), ((1, 0, 0), 8.0, DIFFUSE)])
    cfg = LidarConfig(n_beams=8, vfov_deg=(-5.0, 5.0), horizontal_res_deg=1.0, dropout_prob=0.0)
    cfg = replace(cfg, range_noise_sigma_m=0.0)
    cloud = simulate_lidar(glass, np.eye(4), cfg, np.random.default_rng(0))
    np.testing.assert_allclose(cloud["x"], 8.0, atol=1e-3)  # all behind the pane
    # Head-on diffuse return: 255 * reflectivity * cos(incidence).
    head_on = np.argmin(np.hypot(cloud["y"], cloud["z"]))
    cos = 8.0 / np.linalg.norm([cloud["x"][head_on], cloud["y"][head_on], cloud["z"][head_on]])
    assert cloud["intensity"][head_on] == pytest.approx(255 * cfg.diffuse_reflectivity * cos)

    diffuse_wall = PlaneScene([((1, 0, 0), 8.0, DIFFUSE)])
    mirror_wall = PlaneScene([((1, 0, 0), 8.0, SPECULAR)])
    n_diffuse = simulate_lidar(diffuse_wall, np.eye(4), cfg, np.random.default_rng(0))
    mirror = simulate_lidar(mirror_wall, np.eye(4), cfg, np.random.default_rng(0))
    ratio = mirror.size / n_diffuse.size
    assert ratio == pytest.approx(cfg.specular_return_prob, abs=0.06)

    def front(c):  # within 30 deg of the wall normal
        return c["intensity"][np.abs(np.arctan2(c["y"], c["x"])) < np.radians(30)]

    assert front(mirror).max() < front(n_diffuse).min()


RADAR_WALL = PlaneScene([((1, 0, 0), 20.0, DIFFUSE)])


def test_radar_sparse_noisy_and_range_biased():
    cfg = RadarConfig()
    a = simulate_radar(RADAR_WALL, np.eye(4), cfg, np.random.default_rng(0))
    assert a.dtype.names == ("x", "y", "z", "rcs")
    assert 10 <= a.size <= cfg.max_detections
    np.testing.assert_array_equal(
        a, simulate_radar(RADAR_WALL, np.eye(4), cfg, np.random.default_rng(0))
    )
    assert (a["x"] > 0).all()  # x forward

    clean_cfg = replace(
        cfg, range_sigma_m=0.0, range_bias_m=0.0, azimuth_sigma_deg=0.0,
        elevation_sigma_deg=0.0, rcs_sigma_db=0.0,
    )  # fmt: skip
    clean = simulate_radar(RADAR_WALL, np.eye(4), clean_cfg, np.random.default_rng(0))
    np.testing.assert_allclose(clean["x"], 20.0, atol=1e-4)  # noise-free: on the wall

    # Same seed, same detections: compare noisy and clean point by point.
    big = replace(cfg, max_detections=300)
    noisy = simulate_radar(RADAR_WALL, np.eye(4), big, np.random.default_rng(1))
    ref = simulate_radar(
        RADAR_WALL, np.eye(4), replace(clean_cfg, max_detections=300), np.random.default_rng(1)
    )

    def spherical(c):
        r = np.sqrt(c["x"].astype(float) ** 2 + c["y"] ** 2 + c["z"] ** 2)
        return r, np.degrees(np.arctan2(c["y"], c["x"])), np.degrees(np.arcsin(c["z"] / r))

    r_n, az_n, el_n = spherical(noisy)
    r_c, az_c, el_c = spherical(ref)
    assert np.std(az_n - az_c) == pytest.approx(cfg.azimuth_sigma_deg, rel=0.25)
    assert np.std(el_n - el_c) == pytest.approx(cfg.elevation_sigma_deg, rel=0.25)
    assert np.mean(r_n - r_c) == pytest.approx(cfg.range_bias_m, abs=0.03)
    assert np.std(r_n - r_c) == pytest.approx(cfg.range_sigma_m, rel=0.25)
    # Angular noise puts points well off the wall, unlike a LiDAR.
    assert np.std(noisy["x"] - 20.0) > 0.1


def test_radar_metal_has_higher_rcs():
    # mmWave reflects off metal (specular) far more strongly than off diffuse surfaces.
    cfg = RadarConfig()
    d = simulate_radar(RADAR_WALL, np.eye(4), cfg, np.random.default_rng(0))
    metal = PlaneScene([((1, 0, 0), 20.0, SPECULAR)])
    m = simulate_radar(metal, np.eye(4), cfg, np.random.default_rng(0))
    assert np.median(m["rcs"]) - np.median(d["rcs"]) == pytest.approx(10 * np.log10(8.0), abs=1.5)


# ------------------------------------------------------- integration with the real simulator


def test_material_codes_match_scenes():
    from depth_perception.sim.scenes import MATERIALS, NO_HIT_MATERIAL
    from depth_perception.sim.sensors import NO_HIT

    assert (MATERIALS.index("diffuse"), MATERIALS.index("specular")) == (DIFFUSE, SPECULAR)
    assert MATERIALS.index("transparent") == TRANSPARENT and NO_HIT_MATERIAL == NO_HIT


def test_rgbd_on_rendered_tabletop():
    from depth_perception.core.depth import depth_to_mm
    from depth_perception.sim.render import CameraPose, render_view
    from depth_perception.sim.scenes import make_scene

    scene = make_scene("tabletop", 0)
    top = scene.meta["table_center"]
    pose = CameraPose.look_at((0.0, -0.9, 1.3), top)
    view = render_view(scene, _intr(160, 120, 120.0), pose)
    mat = view.material
    assert (mat == SPECULAR).any() and (mat == TRANSPARENT).any()  # the scene tests all paths

    cfg = RGBDSensorConfig()
    raw = simulate_rgbd(view, cfg, np.random.default_rng(0))
    np.testing.assert_array_equal(raw, simulate_rgbd(view, cfg, np.random.default_rng(0)))
    assert np.isnan(raw[mat == TRANSPARENT]).all()
    assert np.isfinite(raw[mat == SPECULAR]).mean() < 0.3
    assert np.isfinite(raw[mat == DIFFUSE]).mean() > 0.85
    ok = np.isfinite(raw)
    rel = np.abs(raw[ok] - view.depth[ok]) / view.depth[ok]
    assert np.median(rel) < 0.01  # noisy but metric
    mm = depth_to_mm(raw)
    np.testing.assert_array_equal(mm == 0, ~ok)


def test_lidar_and_radar_on_street_scene():
    from depth_perception.sim.scenes import make_scene

    scene = make_scene("street", 0)
    T = _pose(0.0, (10.0, scene.meta["lane_y"], 1.8))
    cfg = LidarConfig(n_beams=16, horizontal_res_deg=1.0, range_noise_sigma_m=0.0)
    cloud = simulate_lidar(scene, T, cfg, np.random.default_rng(0))
    assert cloud.size > 0.5 * 16 * 360
    # Every return lies on an opaque surface: re-trace its direction ignoring glass.
    pts = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=1).astype(np.float64)
    rng_m = np.linalg.norm(pts, axis=1)
    dirs = (pts / rng_m[:, None]) @ T[:3, :3].T
    tr = scene.trace(T[:3, 3], dirs, opaque_only=True)
    np.testing.assert_allclose(tr.t, rng_m, rtol=1e-4, atol=1e-3)

    radar = simulate_radar(scene, T, RadarConfig(), np.random.default_rng(0))
    assert 5 <= radar.size <= RadarConfig().max_detections
    assert (radar["x"] > 0).all()

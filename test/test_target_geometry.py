"""Tests for depth_perception.core.target_geometry (metric target depth, cloud, box, errors)."""

import numpy as np
import open3d as o3d
import pytest
import transforms3d

from depth_perception.core.camera import Intrinsics
from depth_perception.core.target_geometry import (
    chamfer_mm,
    geometry_errors,
    metric_from_relative,
    target_cloud,
    target_geometry,
)

# 200 x 200 pixels, f = 400 px: one pixel is 2.5 mm wide at 1 m. cx, cy off the pixel grid so
# no ray of the renderer below is exactly parallel to a face.
INTR = Intrinsics(width=200, height=200, fx=400.0, fy=400.0, cx=99.7, cy=100.3)


def _scene(h: int = 60, w: int = 80):
    """True depth: a slanted background plane and a nearer 20 x 20 px box (the target)."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    depth = 2.0 + 0.01 * u + 0.02 * v
    mask = (u >= 30) & (u < 50) & (v >= 20) & (v < 40)
    depth = np.where(mask, 0.8 + 0.002 * u - 0.001 * v, depth)
    return depth, mask


def _relative(disparity: np.ndarray, a: float = 0.8, b: float = 0.05) -> np.ndarray:
    """The relative disparity ``rel`` with ``disparity = a * rel + b``."""
    return (disparity - b) / a


def _render_box(intr: Intrinsics, center, rot, extent) -> np.ndarray:
    """Depth image (H, W) of a box (centre, rotation box->camera, full extents), ray-cast with
    the slab method; NaN where a ray misses it."""
    u, v = intr.pixel_grid()
    rays = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones_like(u)], axis=-1)
    rays = rays.astype(np.float64) @ np.asarray(rot)  # each ray in the box frame (R^T d)
    origin = np.asarray(rot).T @ -np.asarray(center, dtype=np.float64)
    half = np.asarray(extent, dtype=np.float64) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-half - origin) / rays, (half - origin) / rays
    near = np.minimum(t1, t2).max(axis=-1)
    far = np.maximum(t1, t2).min(axis=-1)
    return np.where((near <= far) & (near > 0), near, np.nan)  # ray z = 1, so t is the depth


def _cuboid_surface(extent, step: float = 0.01) -> np.ndarray:
    """Grid points on the surface of an axis-aligned box centred at 0, symmetric about its
    three planes (so every principal axis is a box axis)."""
    h = np.asarray(extent) / 2
    axes = [np.linspace(-h[i], h[i], int(round(2 * h[i] / step)) + 1) for i in range(3)]
    g = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return g[np.isclose(np.abs(g), h).any(axis=1)]


def _match_axes(r_est: np.ndarray, r_true: np.ndarray) -> np.ndarray:
    """|R_est^T R_true|: a permutation matrix when the axes agree up to order and sign."""
    return np.abs(r_est.T @ r_true)


# --------------------------------------------------------------------------------- metric fit


def test_fit_recovers_exact_relation_despite_30_percent_gross_outliers():
    depth, mask = _scene()
    rel = _relative(1.0 / depth)
    rng = np.random.default_rng(0)
    reference = depth.copy()
    outside = np.flatnonzero(~mask)
    bad = rng.choice(outside, size=int(0.3 * outside.size), replace=False)
    factor = rng.uniform(1.3, 3.0, bad.size)
    reference.flat[bad] *= np.where(rng.random(bad.size) < 0.5, factor, 1.0 / factor)
    holes = rng.choice(outside, size=200, replace=False)
    reference.flat[holes] = np.where(np.arange(200) % 2, np.nan, 0.0)  # invalid, not used
    metric, info = metric_from_relative(rel, reference, mask)
    assert info.scale == pytest.approx(0.8, rel=1e-9)
    assert info.shift == pytest.approx(0.05, rel=1e-9)
    np.testing.assert_allclose(metric, depth, rtol=1e-6)
    # 200 holes are not used; the outliers that are not holes are used but not inliers.
    n_bad_used = np.count_nonzero(~np.isin(bad, holes))
    assert info.n_pixels == depth.size - 200
    assert info.n_inliers == info.n_pixels - n_bad_used
    assert info.target_inlier_ratio == 1.0 and info.n_target == mask.sum()
    assert info.residual == pytest.approx(0.0, abs=1e-9)
    assert metric.dtype == np.float32


def test_an_inverted_output_gets_the_same_depth_and_a_target_against_its_image_is_refused():
    """The sign of an affine-invariant output is free (module notes): an inverted one (larger =
    farther) gives the same metric depth with a negative scale; a target whose own relation
    has the other sign than the whole image's is refused."""
    depth, mask = _scene()
    rel = _relative(1.0 / depth)
    metric, info = metric_from_relative(rel, depth, mask)
    inverted, info_inv = metric_from_relative(2.0 - 3.0 * rel, depth, mask)
    np.testing.assert_allclose(inverted, metric, rtol=1e-6)
    assert info_inv.scale == pytest.approx(-info.scale / 3.0, rel=1e-9)
    assert info_inv.shift == pytest.approx(info.shift + 2.0 * info.scale / 3.0, rel=1e-9)
    # The target's disparity runs the other way than the image's; all weight on the target.
    against = np.where(mask, 4.0 - rel, rel)
    with pytest.raises(ValueError, match="other sign than the whole image"):
        metric_from_relative(against, depth, mask, weights=(1.0, 0.0, 0.0), min_pixels=10)


def test_weights_pull_the_fit_toward_the_target():
    depth, mask = _scene()
    # The relative prediction of the target is 15 % too near against the background's relation:
    # no single affine map fits both; pixel weights decide which one wins.
    disparity = np.where(mask, 1.15, 1.0) / depth
    rel = _relative(disparity)
    uniform, info_u = metric_from_relative(rel, depth, mask, weights=(1.0, 1.0, 1.0))
    focused, info_f = metric_from_relative(rel, depth, mask, weights=(20.0, 1.0, 1.0))
    # Uniform: the background (92 % of pixels) wins, the target comes out 1/1.15 of its depth.
    np.testing.assert_allclose(uniform[~mask], depth[~mask], rtol=1e-6)
    np.testing.assert_allclose(uniform[mask], depth[mask] / 1.15, rtol=1e-6)
    assert info_u.target_inlier_ratio == 0.0
    # Target pixels 20x: 400 * 20 > 4400 * 1, the fit follows the target. It is not exactly the
    # target's relation: background pixels that line up within 5 % of it stay inliers and pull
    # a little (Tukey weights), so the target's depth is right to 0.5 % instead of 13 % off.
    assert np.abs(focused[mask] / depth[mask] - 1).max() < 0.005
    assert info_f.target_inlier_ratio == 1.0


def test_default_weights_reduce_the_target_error_when_both_relations_are_inliers():
    depth, mask = _scene()
    disparity = np.where(mask, 1.02, 1.0) / depth  # 2 %: within the 5 % threshold everywhere
    rel = _relative(disparity)
    uniform, _ = metric_from_relative(rel, depth, mask, weights=(1.0, 1.0, 1.0))
    focused, info = metric_from_relative(rel, depth, mask)
    err_u = np.abs(uniform[mask] / depth[mask] - 1).mean()
    err_f = np.abs(focused[mask] / depth[mask] - 1).mean()
    assert info.inlier_ratio == 1.0
    assert err_f < 0.5 * err_u


def test_fit_refuses_too_few_reference_pixels_and_constant_input():
    depth, mask = _scene()
    rel = _relative(1.0 / depth)
    sparse = np.full_like(depth, np.nan)
    sparse.flat[:50] = depth.flat[:50]
    with pytest.raises(ValueError, match="too few reference pixels.*50 valid, 100 needed"):
        metric_from_relative(rel, sparse, mask)
    assert metric_from_relative(rel, sparse, mask, min_pixels=20)[1].n_pixels == 50
    with pytest.raises(ValueError, match="constant"):
        metric_from_relative(np.ones_like(rel), depth, mask)
    with pytest.raises(ValueError, match="shapes"):
        metric_from_relative(rel[:-1], depth, mask)


def test_metric_depth_is_nan_where_the_aligned_disparity_is_not_positive():
    depth, mask = _scene()
    rel = _relative(1.0 / depth)
    rel[0, :3] = [-10.0, np.nan, _relative(0.0)]  # disparity < 0, unknown, exactly 0
    metric, _ = metric_from_relative(rel, depth, mask)
    assert np.isnan(metric[0, :3]).all() and np.isfinite(metric[0, 3:]).all()


# --------------------------------------------------------------------------------- cloud, box


def test_target_cloud_hand_values():
    intr = Intrinsics(width=3, height=2, fx=2.0, fy=4.0, cx=1.0, cy=0.5)
    depth = np.array([[2.0, np.nan, 4.0], [1.0, 3.0, 0.0]], dtype=np.float32)
    mask = np.array([[True, True, True], [False, True, True]])
    # (u, v, z) -> ((u - 1) z / 2, (v - 0.5) z / 4, z): (0,0,2), (2,0,4), (1,1,3); NaN, 0 and
    # the unmasked pixel are left out.
    expected = [[-1.0, -0.25, 2.0], [2.0, -0.5, 4.0], [0.0, 0.375, 3.0]]
    cloud = target_cloud(depth, mask, intr)
    assert cloud.dtype == np.float32
    np.testing.assert_allclose(cloud, expected)


def test_face_on_cube_centroid_and_extents():
    center, side = np.array([0.05, -0.02, 1.0]), 0.2
    depth = _render_box(INTR, center, np.eye(3), [side] * 3)
    cloud = target_cloud(depth, np.isfinite(depth), INTR)  # only the front face is visible
    footprint = 0.9 / INTR.fx  # 2.25 mm between samples on the face at z = 0.9
    geo = target_geometry(cloud)
    assert geo.n_points == np.isfinite(depth).sum()
    np.testing.assert_allclose(geo.centroid, [0.05, -0.02, 0.9], atol=footprint / 2)
    np.testing.assert_allclose(geo.box_center, [0.05, -0.02, 0.9], atol=footprint / 2)
    assert np.all(geo.box_extent[:2] <= side) and np.all(geo.box_extent[:2] > side - footprint)
    assert geo.box_extent[2] == pytest.approx(0.0, abs=1e-6)  # a plane has no thickness
    np.testing.assert_allclose(_match_axes(geo.box_rotation, np.eye(3)).max(axis=0), 1, atol=1e-6)
    assert np.linalg.det(geo.box_rotation) == pytest.approx(1.0)


def test_rotated_cube_gives_its_rotation_extent_and_centre():
    rot = transforms3d.euler.euler2mat(0.5, 0.6, 0.3)  # a corner towards the camera
    center, side = np.array([0.02, 0.01, 1.0]), 0.2
    depth = _render_box(INTR, center, rot, [side] * 3)
    cloud = target_cloud(depth, np.isfinite(depth), INTR)
    geo = target_geometry(cloud)
    footprint = 1.0 / INTR.fx
    # Three faces visible: the minimum-volume box of the visible surface is the cube itself.
    np.testing.assert_allclose(geo.box_extent, side, atol=footprint)
    np.testing.assert_allclose(geo.box_center, center, atol=footprint)
    match = _match_axes(geo.box_rotation, rot)  # cube symmetry: axes up to order and sign
    np.testing.assert_allclose(np.sort(match, axis=1)[:, -1], 1.0, atol=2e-3)
    assert np.linalg.det(geo.box_rotation) == pytest.approx(1.0)


@pytest.mark.parametrize("euler", [(0.0, 0.0, 0.0), (0.3, -0.5, 0.8)])
def test_pca_box_agrees_with_open3d_oriented_box(euler):
    extent = np.array([0.3, 0.2, 0.1])
    rot = transforms3d.euler.euler2mat(*euler)
    center = np.array([0.1, -0.2, 1.2])
    points = _cuboid_surface(extent) @ rot.T + center
    pca = target_geometry(points, method="pca")
    minimal = target_geometry(points, method="minimal")
    o3d_box = o3d.geometry.PointCloud(
        o3d.utility.Vector3dVector(points)
    ).get_oriented_bounding_box()
    o3d_order = np.argsort(-np.asarray(o3d_box.extent))
    for geo in (pca, minimal):
        np.testing.assert_allclose(geo.box_extent, extent, atol=1e-9)
        np.testing.assert_allclose(geo.box_center, center, atol=1e-9)
        np.testing.assert_allclose(geo.centroid, center, atol=1e-9)
        np.testing.assert_allclose(_match_axes(geo.box_rotation, rot), np.eye(3), atol=1e-7)
        # open3d (PCA of the convex hull's vertices) agrees to its own round-off.
        np.testing.assert_allclose(geo.box_extent, np.asarray(o3d_box.extent)[o3d_order], atol=1e-7)
        np.testing.assert_allclose(geo.box_center, o3d_box.center, atol=1e-7)
        axes_o3d = np.asarray(o3d_box.R)[:, o3d_order]
        np.testing.assert_allclose(_match_axes(geo.box_rotation, axes_o3d), np.eye(3), atol=1e-7)


def test_target_geometry_rejects_empty_clouds_and_drops_nan_rows():
    with pytest.raises(ValueError, match="no finite point"):
        target_geometry(np.full((3, 3), np.nan))
    geo = target_geometry(np.array([[1.0, 2.0, 3.0], [np.nan, 0.0, 0.0]]))
    assert geo.n_points == 1 and np.allclose(geo.centroid, [1, 2, 3]) and not geo.box_extent.any()
    with pytest.raises(ValueError, match="method"):
        target_geometry(np.zeros((1, 3)), method="aabb")


# --------------------------------------------------------------------------------- errors


def test_chamfer_hand_values():
    a = np.array([[0.0, 0.0, 0.0]])
    b = np.array([[0.0, 0.0, 0.003], [0.0, 0.0, 0.005]])
    # a -> b: 3 mm; b -> a: (3 + 5) / 2 = 4 mm; symmetric mean (3 + 4) / 2 = 3.5 mm.
    assert chamfer_mm(a, b) == pytest.approx(3.5)
    assert chamfer_mm(b, a) == pytest.approx(3.5)
    assert chamfer_mm(b, b) == 0.0


def test_chamfer_matches_brute_force_and_open3d():
    rng = np.random.default_rng(2)
    a = rng.normal([0.0, 0.0, 1.0], 0.05, (300, 3))
    b = rng.normal([0.01, 0.0, 1.0], 0.05, (200, 3))
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))  # full distance matrix
    brute = 500.0 * (d.min(axis=1).mean() + d.min(axis=0).mean())
    assert chamfer_mm(a, b) == pytest.approx(brute, rel=1e-12)
    # Larger clouds (several chunks) against open3d's KD-tree distances.
    a = rng.uniform(-0.1, 0.1, (3000, 3)) + [0, 0, 1.0]
    b = rng.uniform(-0.1, 0.1, (6000, 3)) + [0, 0, 1.0]
    pa = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(a))
    pb = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(b))
    ref = 500.0 * (
        np.mean(pa.compute_point_cloud_distance(pb)) + np.mean(pb.compute_point_cloud_distance(pa))
    )
    assert chamfer_mm(a, b) == pytest.approx(ref, rel=1e-9)


def test_geometry_errors_hand_values():
    gt = _cuboid_surface([0.3, 0.2, 0.1], step=0.02) + [0.0, 0.0, 1.0]
    # Translation by 3 mm along z: centroid 3 mm, same box; each point's nearest neighbour is
    # its own copy (grid step 20 mm) -> Chamfer 3 mm.
    err = geometry_errors(gt + [0.0, 0.0, 0.003], gt)
    assert err["centroid_mm"] == pytest.approx(3.0)
    assert err["extent_mm"] == pytest.approx(0.0, abs=1e-9)
    assert err["chamfer_mm"] == pytest.approx(3.0)
    # Scaling by 1.01 about the centroid: extents +3, +2, +1 mm -> mean 2 mm; centroid 0.
    c = gt.mean(axis=0)
    err = geometry_errors((gt - c) * 1.01 + c, gt, method="pca")
    assert err["centroid_mm"] == pytest.approx(0.0, abs=1e-9)
    assert err["extent_mm"] == pytest.approx(2.0)


def test_relative_to_planner_pipeline_is_exact_on_exact_input():
    # Relative disparity of a rendered rotated box on a wall, made metric against a sensor
    # depth with holes, then the target cloud against the ground-truth cloud.
    rot = transforms3d.euler.euler2mat(0.2, 0.7, 0.1)
    box = _render_box(INTR, [0.0, 0.0, 0.8], rot, [0.15, 0.1, 0.08])
    mask = np.isfinite(box)
    v, u = np.mgrid[0 : INTR.height, 0 : INTR.width]
    truth = np.where(mask, box, 1.5 + 0.002 * u)
    sensor = np.where((u % 7 == 0) & ~mask, np.nan, truth)
    metric, _ = metric_from_relative(_relative(1.0 / truth, 3.0, -0.1), sensor, mask)
    pred_cloud = target_cloud(metric, mask, INTR)
    gt_cloud = target_cloud(truth, mask, INTR)
    err = geometry_errors(pred_cloud, gt_cloud)
    assert max(err.values()) < 1e-3  # under a micrometre

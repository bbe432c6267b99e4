"""Tests for depth_perception.core.prompts (sparse metric depth prompts)."""

import numpy as np
import open3d as o3d
import pytest

from depth_perception.core.camera import Intrinsics
from depth_perception.core.prompts import (
    downsampled_prompt,
    extreme_prompt,
    lidar_like_prompt,
    points_to_sparse_depth,
    sample_prompt_points,
    transform_points,
)

SMALL = Intrinsics(width=4, height=3, fx=2.0, fy=2.0, cx=1.0, cy=1.0)


def _random_depth(rng: np.random.Generator, h: int = 30, w: int = 40) -> np.ndarray:
    depth = rng.uniform(0.5, 5.0, (h, w)).astype(np.float32)
    depth[rng.random((h, w)) < 0.2] = np.nan
    return depth


def test_transform_points_hand_example():
    # 90 deg about z, then translate by (1, 2, 3): (1, 0, 0) -> (0, 1, 0) + t.
    T = np.eye(4)
    T[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    T[:3, 3] = [1, 2, 3]
    pts = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [np.nan, 0.0, 0.0]])
    out = transform_points(pts, T)
    np.testing.assert_allclose(out[:2], [[1.0, 3.0, 3.0], [1.0, 2.0, 4.0]])
    assert np.isnan(out[2]).all()
    assert out.dtype == np.float64
    assert transform_points(pts.astype(np.float32), T).dtype == np.float32
    back = transform_points(out[:2], np.linalg.inv(T))
    np.testing.assert_allclose(back, pts[:2], atol=1e-12)


def test_zbuffer_keeps_nearest_point():
    # Three points on the optical axis all land on the principal point (u=1, v=1).
    pts = np.array([[0.0, 0.0, 2.0], [0.0, 0.0, 1.0], [0.0, 0.0, 3.0], [1.0, 0.0, 2.0]])
    out = points_to_sparse_depth(pts, SMALL)
    expected = np.full((3, 4), np.nan, dtype=np.float32)
    expected[1, 1] = 1.0
    expected[1, 2] = 2.0  # u = 2 * 1 / 2 + 1
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.float32
    # The winner does not depend on the order the points come in.
    np.testing.assert_array_equal(points_to_sparse_depth(pts[::-1], SMALL), expected)


def test_points_behind_camera_or_outside_dropped():
    pts = np.array(
        [
            [0.0, 0.0, -1.0],  # behind
            [0.0, 0.0, 0.0],  # on the camera centre
            [10.0, 0.0, 1.0],  # u = 21, outside
            [0.0, -1.0, 1.0],  # v = -1, outside
            [np.nan, 0.0, 1.0],
        ]
    )
    assert np.isnan(points_to_sparse_depth(pts, SMALL)).all()
    assert np.isnan(points_to_sparse_depth(np.empty((0, 3)), SMALL)).all()


def test_backproject_project_round_trip_is_exact():
    rng = np.random.default_rng(3)
    intr = Intrinsics(width=40, height=30, fx=35.0, fy=36.0, cx=19.3, cy=14.7)
    depth = _random_depth(rng)
    pts = intr.backproject(depth).reshape(-1, 3)
    out = points_to_sparse_depth(pts[np.isfinite(pts[:, 2])], intr)
    np.testing.assert_array_equal(out, depth)


def test_projection_matches_open3d():
    rng = np.random.default_rng(4)
    intr = Intrinsics(width=40, height=30, fx=35.0, fy=36.0, cx=19.3, cy=14.7)
    n = 600
    pts = np.stack(
        [rng.uniform(-1, 1, n), rng.uniform(-1, 1, n), rng.uniform(0.5, 3, n)], axis=1
    ).astype(np.float32)
    ours = points_to_sparse_depth(pts, intr)
    pcd = o3d.t.geometry.PointCloud(o3d.core.Tensor(pts))
    img = pcd.project_to_depth_image(
        intr.width, intr.height, o3d.core.Tensor(intr.K), depth_scale=1.0, depth_max=10.0
    )
    ref = img.as_tensor().numpy().squeeze()
    ref = np.where(ref > 0, ref, np.nan)
    assert np.isfinite(ours).sum() > 200  # collisions happen: the z-buffer matters here
    np.testing.assert_array_equal(ours, ref)


def test_extreme_prompt_has_exactly_n_valid_pixels():
    rng = np.random.default_rng(5)
    depth = _random_depth(rng)
    out = extreme_prompt(depth, np.random.default_rng(0))
    valid = np.isfinite(out)
    assert valid.sum() == 100
    np.testing.assert_array_equal(out[valid], depth[valid])  # values are untouched
    np.testing.assert_array_equal(out, extreme_prompt(depth, np.random.default_rng(0)))
    assert not np.array_equal(np.isfinite(extreme_prompt(depth, np.random.default_rng(1))), valid)
    # Fewer valid pixels than asked: all of them.
    tiny = np.full((5, 5), np.nan, dtype=np.float32)
    tiny[1, 2], tiny[3, 4] = 1.5, 2.5
    np.testing.assert_array_equal(extreme_prompt(tiny, rng), tiny)


def test_sample_prompt_points_consistent_with_map():
    rng = np.random.default_rng(6)
    depth = _random_depth(rng)
    depth[0, 0] = 0.0  # zero counts as invalid
    uv, z = sample_prompt_points(depth, 50, rng)
    assert uv.shape == (50, 2) and z.shape == (50,)
    np.testing.assert_array_equal(z, depth[uv[:, 1], uv[:, 0]])
    assert len({(int(u), int(v)) for u, v in uv}) == 50
    assert np.isfinite(z).all() and (z > 0).all()


def test_downsampled_prompt_hand_computed_means():
    depth = np.array(
        [
            [1.0, 2.0, 5.0, np.nan],
            [3.0, np.nan, 0.0, np.nan],
            [np.nan, np.nan, 4.0, 4.0],
            [np.nan, np.nan, 4.0, 7.0],
        ],
        dtype=np.float32,
    )
    out = downsampled_prompt(depth, 2)
    expected = np.array([[2.0, 5.0], [np.nan, 4.75]], dtype=np.float32)
    np.testing.assert_allclose(out, expected)
    assert out.dtype == np.float32
    med = downsampled_prompt(depth, 2, reduce="median")
    np.testing.assert_allclose(med, [[2.0, 5.0], [np.nan, 4.0]])


def test_downsampled_prompt_factor_8_and_partial_cells():
    rng = np.random.default_rng(7)
    depth = _random_depth(rng, 20, 36)  # not multiples of 8
    out = downsampled_prompt(depth, 8)
    assert out.shape == (3, 5)
    np.testing.assert_allclose(out[0, 0], np.nanmean(depth[:8, :8]), rtol=1e-6)
    np.testing.assert_allclose(out[2, 4], np.nanmean(depth[16:, 32:]), rtol=1e-6)


def test_lidar_like_prompt_keeps_whole_scan_lines():
    rng = np.random.default_rng(8)
    depth = rng.uniform(1.0, 4.0, (64, 48)).astype(np.float32)
    out = lidar_like_prompt(depth, np.random.default_rng(0), n_lines=8)
    rows = np.flatnonzero(np.isfinite(out).any(axis=1))
    assert rows.size == 8
    np.testing.assert_array_equal(np.diff(rows), 8)  # evenly spaced beams
    np.testing.assert_array_equal(out[rows], depth[rows])
    thinned = lidar_like_prompt(depth, np.random.default_rng(0), n_lines=8, col_step=4)
    assert np.isfinite(thinned).sum() == 8 * 12


def test_invalid_arguments_rejected():
    depth = np.ones((8, 8), dtype=np.float32)
    with pytest.raises(ValueError):
        downsampled_prompt(depth, 0)
    with pytest.raises(ValueError):
        downsampled_prompt(depth, 2, reduce="max")
    with pytest.raises(ValueError):
        transform_points(np.zeros((2, 3)), np.eye(3))
    with pytest.raises(ValueError):
        extreme_prompt(np.ones((2, 2, 2), dtype=np.float32), np.random.default_rng(0))

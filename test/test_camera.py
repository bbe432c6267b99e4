"""Intrinsics: K round trip, resize/crop bookkeeping, back-projection and projection."""

from dataclasses import replace

import cv2
import numpy as np
import pytest

from depth_perception.core.camera import Intrinsics

INTR = Intrinsics(640, 480, 500.0, 510.0, 315.2, 243.7, frame_id="cam_optical")
# A tilted plane n . X = DIST in the optical frame, facing the camera.
NORMAL = np.array([0.35, -0.2, 1.0]) / np.linalg.norm([0.35, -0.2, 1.0])
DIST = 2.0


def render_plane(intr: Intrinsics) -> np.ndarray:
    """Exact depth of the plane at every pixel centre: z = DIST / (n . ray)."""
    u, v = intr.pixel_grid()
    rays = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones_like(u)], -1)
    return (DIST / (rays.astype(np.float64) @ NORMAL)).astype(np.float32)


def plane_residual(intr: Intrinsics, depth: np.ndarray) -> np.ndarray:
    points = intr.backproject(depth).reshape(-1, 3).astype(np.float64)
    return np.abs(points @ NORMAL - DIST)


def test_from_K_round_trip():
    K = np.array([[500.0, 0.0, 315.2], [0.0, 510.0, 243.7], [0.0, 0.0, 1.0]])
    intr = Intrinsics.from_K(K.ravel().tolist(), 640, 480, D=np.array([0.1, -0.2, 0, 0, 0.01]))
    assert (intr.fx, intr.fy, intr.cx, intr.cy) == (500.0, 510.0, 315.2, 243.7)
    assert intr.size == (640, 480)
    assert intr.D == (0.1, -0.2, 0.0, 0.0, 0.01)
    assert all(type(d) is float for d in intr.D)
    assert intr.is_distorted
    np.testing.assert_array_equal(intr.K, K)
    assert Intrinsics.from_K(intr.K, 640, 480, D=intr.D) == intr
    assert not Intrinsics.from_K(K, 640, 480).is_distorted


@pytest.mark.parametrize("size", [(320, 240), (400, 300), (213, 160)])
def test_scaled_matches_cv2_resize(size):
    depth = render_plane(INTR)
    assert plane_residual(INTR, depth).max() < 1e-5
    small = cv2.resize(depth, size, interpolation=cv2.INTER_LINEAR)
    scaled = INTR.scaled(*size)
    assert scaled.size == size
    np.testing.assert_allclose(scaled.fx, INTR.fx * size[0] / 640)
    np.testing.assert_allclose(scaled.fy, INTR.fy * size[1] / 480)
    # Every resized pixel, back-projected with the scaled intrinsics, lies on the plane.
    assert plane_residual(scaled, small).max() < 1e-5
    # The half-pixel term in cx/cy is what makes this hold: scaling cx, cy like fx, fy
    # misplaces the points by far more than the tolerance above.
    naive = replace(scaled, cx=INTR.cx * size[0] / 640, cy=INTR.cy * size[1] / 480)
    assert plane_residual(naive, small).max() > 1e-4


def test_cropped_matches_array_slice():
    depth = render_plane(INTR)
    x0, y0, w, h = 100, 50, 200, 120
    crop = INTR.cropped(x0, y0, w, h)
    assert crop.size == (w, h)
    assert (crop.fx, crop.fy) == (INTR.fx, INTR.fy)
    assert (crop.cx, crop.cy) == pytest.approx((215.2, 193.7))
    full = INTR.backproject(depth)
    np.testing.assert_allclose(
        crop.backproject(depth[y0 : y0 + h, x0 : x0 + w]), full[y0 : y0 + h, x0 : x0 + w], atol=1e-6
    )


def test_backproject_hand_computed_and_invalid():
    intr = Intrinsics(4, 3, 2.0, 4.0, 1.5, 1.0)
    depth = np.full((3, 4), 2.0, np.float32)
    depth[0, 0], depth[0, 1], depth[1, 0], depth[1, 1] = 0.0, np.nan, -1.0, np.inf
    pts = intr.backproject(depth)
    assert pts.shape == (3, 4, 3) and pts.dtype == np.float32
    # u=3, v=2, z=2: x = (3 - 1.5) * 2 / 2 = 1.5, y = (2 - 1) * 2 / 4 = 0.5
    np.testing.assert_allclose(pts[2, 3], [1.5, 0.5, 2.0])
    # u=0, v=2: x = -1.5 * 2 / 2 = -1.5
    np.testing.assert_allclose(pts[2, 0], [-1.5, 0.5, 2.0])
    invalid = np.zeros((3, 4), bool)
    invalid[:2, :2] = True
    np.testing.assert_array_equal(np.isnan(pts).all(-1), invalid)
    np.testing.assert_array_equal(np.isnan(pts).any(-1), invalid)


def test_backproject_project_round_trip():
    depth = render_plane(INTR)
    depth[::7, ::5] = np.nan
    pts = INTR.backproject(depth).reshape(-1, 3)
    uv, z = INTR.project(pts)
    u, v = INTR.pixel_grid()
    ok = np.isfinite(depth.ravel())
    np.testing.assert_allclose(uv[ok, 0], u.ravel()[ok], atol=1e-3)
    np.testing.assert_allclose(uv[ok, 1], v.ravel()[ok], atol=1e-3)
    np.testing.assert_allclose(z[ok], depth.ravel()[ok], rtol=1e-6)
    assert np.isnan(uv[~ok]).all()


def test_project_behind_camera_is_nan():
    uv, z = INTR.project(np.array([[0.0, 0.0, -1.0], [0.0, 0.0, 0.0], [0.5, -0.2, 2.0]]))
    assert np.isnan(uv[:2]).all()
    np.testing.assert_allclose(uv[2], [500 * 0.25 + 315.2, 510 * -0.1 + 243.7])
    np.testing.assert_array_equal(z, [-1.0, 0.0, 2.0])


def test_backproject_size_mismatch():
    with pytest.raises(ValueError, match="640x480"):
        INTR.backproject(np.ones((640, 480), np.float32))  # transposed

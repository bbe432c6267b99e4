"""Point-cloud buffers: geometry against open3d, PointCloud2 byte layout, rgb packing."""

import numpy as np
import open3d as o3d
import pytest

from depth_perception.core.camera import Intrinsics
from depth_perception.core.cloud import (
    XYZ_DTYPE,
    XYZRGB_DTYPE,
    depth_to_xyz,
    depth_to_xyzrgb,
    pack_rgb,
    unpack_rgb,
    valid_points,
)
from depth_perception.core.depth import depth_from_mm

INTR = Intrinsics(80, 60, 61.3, 58.9, 38.2, 31.7)


@pytest.fixture
def scene():
    """uint16 mm depth with holes (0) and a matching random RGB image."""
    rng = np.random.default_rng(7)
    mm = rng.integers(300, 9000, size=(INTR.height, INTR.width)).astype(np.uint16)
    mm[rng.random(mm.shape) < 0.15] = 0
    mm[10:20, 30:45] = 0
    rgb = rng.integers(0, 256, size=(INTR.height, INTR.width, 3), dtype=np.uint8)
    return mm, rgb


def o3d_intrinsic(intr: Intrinsics) -> o3d.camera.PinholeCameraIntrinsic:
    return o3d.camera.PinholeCameraIntrinsic(
        intr.width, intr.height, intr.fx, intr.fy, intr.cx, intr.cy
    )


def xyz_of(points: np.ndarray) -> np.ndarray:
    return np.stack([points["x"], points["y"], points["z"]], -1)


def test_dtypes_match_depth_image_proc_layout():
    assert XYZ_DTYPE.itemsize == 16
    assert XYZRGB_DTYPE.itemsize == 32
    assert [XYZ_DTYPE.fields[n][1] for n in "xyz"] == [0, 4, 8]
    assert [XYZRGB_DTYPE.fields[n][1] for n in ("x", "y", "z", "rgb")] == [0, 4, 8, 16]
    for dt in (XYZ_DTYPE, XYZRGB_DTYPE):
        assert all(f[0] == np.dtype("<f4") for f in dt.fields.values())


def test_xyz_matches_open3d(scene):
    mm, _ = scene
    cloud = depth_to_xyz(depth_from_mm(mm), INTR)
    assert cloud.dtype == XYZ_DTYPE and cloud.shape == (INTR.height, INTR.width)

    ref = o3d.geometry.PointCloud.create_from_depth_image(
        o3d.geometry.Image(mm), o3d_intrinsic(INTR), depth_scale=1000.0, depth_trunc=1e6
    )
    ref_points = np.asarray(ref.points)
    # open3d drops invalid pixels and keeps the rest in row-major order, like valid_points.
    ours = xyz_of(valid_points(cloud))
    assert ours.shape == ref_points.shape == (np.count_nonzero(mm), 3)
    np.testing.assert_allclose(ours, ref_points, rtol=2e-6, atol=1e-6)
    # Organized cloud: NaN exactly at the invalid pixels, in all three coordinates.
    for axis in "xyz":
        np.testing.assert_array_equal(np.isnan(cloud[axis]), mm == 0)


def test_xyzrgb_matches_open3d(scene):
    mm, rgb = scene
    cloud = depth_to_xyzrgb(depth_from_mm(mm), rgb, INTR)
    assert cloud.dtype == XYZRGB_DTYPE and cloud.shape == (INTR.height, INTR.width)

    rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
        o3d.geometry.Image(rgb),
        o3d.geometry.Image(mm),
        depth_scale=1000.0,
        depth_trunc=1e6,
        convert_rgb_to_intensity=False,
    )
    ref = o3d.geometry.PointCloud.create_from_rgbd_image(rgbd, o3d_intrinsic(INTR))
    pts = valid_points(cloud)
    np.testing.assert_allclose(xyz_of(pts), np.asarray(ref.points), rtol=2e-6, atol=1e-6)
    ref_rgb = np.rint(np.asarray(ref.colors) * 255.0).astype(np.uint8)
    np.testing.assert_array_equal(unpack_rgb(pts["rgb"]), ref_rgb)
    # Colour is kept for invalid points too (organized cloud), like depth_image_proc.
    np.testing.assert_array_equal(unpack_rgb(cloud["rgb"]), rgb)


def test_hand_computed_point_and_bytes():
    intr = Intrinsics(3, 2, 100.0, 200.0, 1.0, 0.5)
    depth = np.array([[np.nan, 0.0, 2.0], [1.0, -3.0, 4.0]], np.float32)
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 2] = (10, 20, 30)
    cloud = depth_to_xyzrgb(depth, rgb, intr)
    # pixel (u=2, v=0), z=2: x = (2 - 1) * 2 / 100 = 0.02, y = (0 - 0.5) * 2 / 200 = -0.005
    p = cloud[0, 2]
    np.testing.assert_allclose([p["x"], p["y"], p["z"]], [0.02, -0.005, 2.0], rtol=1e-6)
    raw = np.frombuffer(cloud.tobytes(), np.uint8).reshape(2, 3, 32)
    np.testing.assert_array_equal(
        raw[0, 2, 0:12], np.array([0.02, -0.005, 2.0], "<f4").view(np.uint8)
    )
    np.testing.assert_array_equal(raw[0, 2, 16:20], [30, 20, 10, 0])  # B, G, R, 0
    # As the uint32 PCL / depth_image_proc compute: 0x00RRGGBB.
    assert raw[0, 2, 16:20].view("<u4")[0] == (10 << 16) | (20 << 8) | 30
    # Padding is zeroed so identical inputs give identical messages.
    assert not raw[..., 12:16].any() and not raw[..., 20:32].any()
    assert len(memoryview(cloud).cast("B")) == 2 * 3 * 32
    # Invalid depth (NaN, 0, negative) -> NaN point.
    invalid = np.isnan(cloud["z"])
    np.testing.assert_array_equal(invalid, [[True, True, False], [False, True, False]])
    assert np.isnan(cloud["x"][invalid]).all() and np.isnan(cloud["y"][invalid]).all()

    xyz = depth_to_xyz(depth, intr)
    assert len(xyz.tobytes()) == 2 * 3 * 16
    np.testing.assert_array_equal(xyz_of(valid_points(xyz)), xyz_of(valid_points(cloud)))


def test_pack_unpack_rgb():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    packed = pack_rgb(rgb)
    assert packed.dtype == np.float32 and packed.shape == (5, 7)
    as_u32 = packed.view("<u4")
    expected = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8)
    np.testing.assert_array_equal(as_u32, expected | rgb[..., 2])
    np.testing.assert_array_equal(unpack_rgb(packed), rgb)
    single = pack_rgb(np.array([255, 0, 1], np.uint8))
    assert single.shape == () and np.array(single).view("<u4") == 0x00FF0001
    # Extreme colours never produce a NaN bit pattern (top byte is 0).
    assert np.isfinite(pack_rgb(np.full((1, 3), 255, np.uint8))).all()


def test_valid_points_unorganized():
    cloud = np.zeros(4, XYZ_DTYPE)
    cloud["z"] = [1.0, np.nan, 2.0, 3.0]
    cloud["x"][3] = np.inf
    out = valid_points(cloud)
    assert out.dtype == XYZ_DTYPE
    np.testing.assert_array_equal(out["z"], [1.0, 2.0])


def test_size_mismatch_errors():
    depth = np.ones((60, 80), np.float32)
    with pytest.raises(ValueError, match="80x60"):
        depth_to_xyzrgb(depth, np.zeros((60, 81, 3), np.uint8), INTR)
    with pytest.raises(ValueError, match="RGB"):
        depth_to_xyzrgb(depth, np.zeros((60, 80), np.uint8), INTR)
    with pytest.raises(ValueError, match="uint8"):
        depth_to_xyzrgb(depth, np.zeros((60, 80, 3), np.float32), INTR)
    with pytest.raises(ValueError):
        depth_to_xyz(np.ones((80, 60), np.float32), INTR)

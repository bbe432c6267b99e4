"""Depth registration into the colour camera (core.registration), checked against hand-computed
cases, open3d's point-cloud projection and the real RealSense D435 recording."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from depth_perception.core.camera import Intrinsics
from depth_perception.core.registration import register_depth, registration_needed
from depth_perception.io.calibration import invert_transform, quaternion_to_matrix

ROOT = Path(__file__).resolve().parent.parent
D435_BAG = (
    ROOT.parent / "shared" / "data" / "real_bags" / "realsense_d435_single_depth_color_640x480.bag"
)
needs_d435 = pytest.mark.skipif(
    not D435_BAG.is_file(), reason=f"the real RealSense D435 recording is not at {D435_BAG}"
)

# A RealSense D435's two imagers (the values of the recording above, rounded).
DEPTH_K = Intrinsics(640, 480, fx=390.43, fy=390.43, cx=331.39, cy=242.19, frame_id="depth")
COLOUR_K = Intrinsics(640, 480, fx=613.20, fy=613.42, cx=319.94, cy=239.18, frame_id="colour")
D435_T = quaternion_to_matrix([0.0143, 0.0006, 0.0006], [-5.3e-5, 0.00646, 0.00515, 0.99997])


def _translation(x: float = 0.0, y: float = 0.0, z: float = 0.0) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = (x, y, z)
    return T


def _scene(intr: Intrinsics, seed: int = 0) -> np.ndarray:
    """A tilted wall at 1.2-2.5 m with a box at 0.7 m and 8 % holes (NaN)."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0 : intr.height, 0 : intr.width]
    depth = (1.2 + 1.3 * u / intr.width + 0.2 * v / intr.height).astype(np.float32)
    depth[intr.height // 3 : intr.height // 2, intr.width // 4 : intr.width // 2] = 0.7
    depth[rng.random(depth.shape) < 0.08] = np.nan
    return depth


# ---------------------------------------------------------------------------------------------
# Hand-computed cases
# ---------------------------------------------------------------------------------------------


def test_identity_extrinsic_and_equal_intrinsics_return_the_input():
    depth = _scene(DEPTH_K)
    depth[0, 0], depth[0, 1], depth[0, 2], depth[0, 3] = 0.0, -1.0, np.inf, -np.inf
    out = register_depth(depth, DEPTH_K, DEPTH_K, np.eye(4))
    assert out.dtype == np.float32 and out.shape == depth.shape
    expected = np.where(np.isfinite(depth) & (depth > 0), depth, np.nan)
    np.testing.assert_array_equal(out, expected)  # bit-exact, NaN exactly where invalid


def test_pure_translation_shifts_by_focal_times_baseline_over_depth():
    intr = Intrinsics(40, 30, fx=100.0, fy=100.0, cx=19.5, cy=14.5)
    depth = np.full((30, 40), np.nan, np.float32)
    depth[10, 12] = 1.0
    out = register_depth(depth, intr, intr, _translation(x=0.05))
    shift = 100.0 * 0.05 / 1.0  # fx * baseline / z = 5 px to the right
    expected = np.full_like(depth, np.nan)
    expected[10, 12 + int(shift)] = 1.0
    np.testing.assert_array_equal(out, expected)
    # the same point 2.5 m away moves 100 * 0.05 / 2.5 = 2 px
    depth[10, 12] = 2.5
    out = register_depth(depth, intr, intr, _translation(x=0.05))
    assert out[10, 14] == np.float32(2.5) and np.count_nonzero(np.isfinite(out)) == 1
    # a colour camera 0.5 m ahead sees it at z = 2.0 m: x = (12 - 19.5) * 2.5 / 100 = -0.1875,
    # y = (10 - 14.5) * 2.5 / 100 = -0.1125, so u = 100 * x / 2 + 19.5 = 10.125 and
    # v = 100 * y / 2 + 14.5 = 8.875 (its 1.25 px footprint covers only that pixel's centre)
    out = register_depth(depth, intr, intr, _translation(z=-0.5))
    assert out[9, 10] == np.float32(2.0) and np.count_nonzero(np.isfinite(out)) == 1


def test_magnifying_colour_camera_is_filled_without_holes():
    # The colour camera is the depth camera at twice the resolution (Intrinsics.scaled): every
    # depth pixel covers exactly a 2x2 block of colour pixels, so registration is nearest-
    # neighbour upsampling. One projected point per depth pixel would fill only a quarter.
    depth = _scene(Intrinsics(32, 24, 30.0, 30.0, 15.5, 11.5))
    d = Intrinsics(32, 24, 30.0, 30.0, 15.5, 11.5)
    c = d.scaled(64, 48)
    out = register_depth(depth, d, c, np.eye(4))
    np.testing.assert_array_equal(out, np.repeat(np.repeat(depth, 2, axis=0), 2, axis=1))


def test_nearest_depth_wins_where_two_pixels_land_on_one():
    intr = Intrinsics(40, 30, fx=100.0, fy=100.0, cx=19.5, cy=14.5)
    depth = np.full((30, 40), np.nan, np.float32)
    depth[10, 10] = 1.0  # moves 100 * 0.05 / 1 = 5 px -> column 15
    depth[10, 14] = 5.0  # moves 1 px -> column 15 as well, behind the first
    out = register_depth(depth, intr, intr, _translation(x=0.05))
    assert out[10, 15] == np.float32(1.0)
    assert np.count_nonzero(np.isfinite(out)) == 1
    depth[10, 10] = np.nan
    assert register_depth(depth, intr, intr, _translation(x=0.05))[10, 15] == np.float32(5.0)


def test_points_behind_the_colour_camera_are_dropped():
    intr = Intrinsics(40, 30, fx=100.0, fy=100.0, cx=19.5, cy=14.5)
    depth = np.full((30, 40), 1.0, np.float32)
    depth[:, 20:] = 3.0
    # colour camera 2 m ahead of the depth camera: the 1 m half is behind it
    out = register_depth(depth, intr, intr, _translation(z=-2.0))
    assert np.all(np.isnan(out) | (out == np.float32(1.0)))
    assert np.nanmin(out) == np.float32(1.0)  # only the 3 m half, now at 1 m
    assert np.all(np.isnan(register_depth(depth, intr, intr, _translation(z=-5.0))))


def test_points_outside_the_colour_image_are_dropped():
    intr = Intrinsics(40, 30, fx=100.0, fy=100.0, cx=19.5, cy=14.5)
    depth = np.full((30, 40), 1.0, np.float32)
    out = register_depth(depth, intr, intr, _translation(x=0.1))  # 10 px to the right
    assert np.all(np.isnan(out[:, :10])) and np.all(out[:, 10:] == np.float32(1.0))


def test_distorted_or_mismatched_input_is_refused():
    depth = _scene(DEPTH_K)
    distorted = Intrinsics(640, 480, 613.2, 613.4, 319.9, 239.2, D=(0.09, -0.18, 0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="registration expects rectified images"):
        register_depth(depth, DEPTH_K, distorted, D435_T)
    with pytest.raises(ValueError, match="depth camera .* rectified"):
        register_depth(depth, distorted, COLOUR_K, D435_T)
    with pytest.raises(ValueError, match="640x480"):
        register_depth(depth[:, :320], DEPTH_K, COLOUR_K, D435_T)
    with pytest.raises(ValueError, match="4x4"):
        register_depth(depth, DEPTH_K, COLOUR_K, np.eye(3))
    with pytest.raises(ValueError, match="rotation"):
        register_depth(depth, DEPTH_K, COLOUR_K, np.diag([2.0, 1.0, 1.0, 1.0]))


def test_runs_well_under_a_second_at_640x480():
    depth = _scene(DEPTH_K)
    register_depth(depth, DEPTH_K, COLOUR_K, D435_T)  # warm-up
    start = time.perf_counter()
    out = register_depth(depth, DEPTH_K, COLOUR_K, D435_T)
    assert time.perf_counter() - start < 0.5
    assert np.isfinite(out).mean() > 0.85


# ---------------------------------------------------------------------------------------------
# Against open3d: point cloud from the depth image, transformed, z-buffered single-pixel projection
# ---------------------------------------------------------------------------------------------


def _open3d_registration(depth: np.ndarray, d: Intrinsics, c: Intrinsics, T: np.ndarray):
    import open3d as o3d  # installed by the bootstrap (requirements-ml.txt)

    far = 1000.0
    image = o3d.t.geometry.Image(np.ascontiguousarray(np.nan_to_num(depth, nan=0.0)))
    cloud = o3d.t.geometry.PointCloud.create_from_depth_image(
        image, o3d.core.Tensor(d.K), depth_scale=1.0, depth_max=far
    )
    cloud.transform(o3d.core.Tensor(T))
    projected = cloud.project_to_depth_image(
        c.width, c.height, o3d.core.Tensor(c.K), depth_scale=1.0, depth_max=far
    )
    out = np.asarray(projected.as_tensor().numpy(), dtype=np.float32).reshape(c.height, c.width)
    return np.where(out > 0, out, np.nan)


@pytest.mark.parametrize(
    "transform",
    [
        D435_T,
        # a larger rig: 6 cm baseline, 4 deg yaw, 2 deg pitch, 1 deg roll
        quaternion_to_matrix([-0.06, 0.01, 0.005], [0.0087, 0.0349, 0.0175, 0.9992]),
    ],
    ids=["d435", "wide_rig"],
)
def test_agrees_with_open3d_projection(transform):
    depth = _scene(DEPTH_K, seed=3)
    ours = register_depth(depth, DEPTH_K, COLOUR_K, transform)
    theirs = _open3d_registration(depth, DEPTH_K, COLOUR_K, transform)
    filled = np.isfinite(theirs)
    assert filled.mean() > 0.3  # open3d leaves the magnification holes
    # every pixel open3d fills, we fill too (our footprint contains the centre's pixel)...
    assert np.all(np.isfinite(ours[filled]))
    # ...with the same depth, or a nearer one another depth pixel's footprint brought (z-buffer)
    assert np.all(ours[filled] <= theirs[filled] + 1e-4)
    same = np.abs(ours[filled] - theirs[filled]) < 1e-4
    assert same.mean() > 0.95, same.mean()
    # and the footprints close the holes a single point per depth pixel leaves
    assert np.isfinite(ours).sum() > 1.5 * filled.sum()


# ---------------------------------------------------------------------------------------------
# registration_needed
# ---------------------------------------------------------------------------------------------


def test_registration_needed_names_the_same_size_different_intrinsics_trap():
    reason = registration_needed(DEPTH_K, COLOUR_K, D435_T)
    assert reason is not None
    assert "fx 390.4 \u2260 colour fx 613.2" in reason and "same 640x480 size" in reason
    assert "not registered" in reason
    assert registration_needed(DEPTH_K, COLOUR_K) == reason  # extrinsic unknown: same finding


def test_registration_needed_other_differences():
    small = DEPTH_K.scaled(320, 240)
    assert "320x240" in registration_needed(small, COLOUR_K) and "640x480" in (
        registration_needed(small, COLOUR_K)
    )
    shifted = Intrinsics(640, 480, 613.20, 613.42, 321.0, 239.18, frame_id="colour")
    assert "cx 321.0" in registration_needed(shifted, COLOUR_K)
    reason = registration_needed(COLOUR_K, COLOUR_K, D435_T)
    assert "extrinsic is not identity" in reason and "14.3 mm" in reason
    other_frame = Intrinsics(640, 480, 613.20, 613.42, 319.94, 239.18, frame_id="depth")
    assert "frame 'depth'" in registration_needed(other_frame, COLOUR_K)


def test_registration_needed_is_none_for_registered_depth():
    assert registration_needed(COLOUR_K, COLOUR_K) is None
    nearly = Intrinsics(640, 480, 613.2004, 613.42, 319.94, 239.1804, frame_id="colour")
    assert registration_needed(nearly, COLOUR_K) is None  # within 1e-3 px
    other_frame = Intrinsics(640, 480, 613.20, 613.42, 319.94, 239.18, frame_id="aligned")
    assert registration_needed(other_frame, COLOUR_K, np.eye(4)) is None  # identity: registered


# ---------------------------------------------------------------------------------------------
# The real RealSense D435 recording (SDK bag: depth and colour from different imagers)
# ---------------------------------------------------------------------------------------------


def _read_d435() -> dict:
    from rosbags.highlevel import AnyReader

    wanted = {
        "/device_0/sensor_0/Depth_0/image/data": "depth",
        "/device_0/sensor_1/Color_0/image/data": "colour",
        "/device_0/sensor_0/Depth_0/info/camera_info": "depth_info",
        "/device_0/sensor_1/Color_0/info/camera_info": "colour_info",
        "/device_0/sensor_1/Color_0/tf/0": "colour_tf",
    }
    found: dict = {}
    with AnyReader([D435_BAG]) as reader:
        connections = [c for c in reader.connections if c.topic in wanted]
        for conn, _, raw in reader.messages(connections=connections):
            found.setdefault(wanted[conn.topic], reader.deserialize(raw, conn.msgtype))
    assert set(found) == set(wanted.values()), (
        f"missing in the bag: {set(wanted.values()) - set(found)}"
    )
    return found


def _ros1_intrinsics(info) -> Intrinsics:  # ROS 1 field names (K, D) as the SDK writes them
    return Intrinsics.from_K(np.asarray(info.K).reshape(3, 3), info.width, info.height, D=info.D)


@pytest.fixture(scope="module")
def d435():
    if not D435_BAG.is_file():
        pytest.skip(f"the real RealSense D435 recording is not at {D435_BAG}")
    msgs = _read_d435()
    image = msgs["depth"]
    assert image.encoding == "mono16" and not image.is_bigendian
    depth_mm = np.frombuffer(image.data, np.uint16).reshape(image.height, image.step // 2)
    depth = np.where(depth_mm > 0, depth_mm / np.float32(1000.0), np.nan).astype(np.float32)
    tf = msgs["colour_tf"]
    T = quaternion_to_matrix(
        [tf.translation.x, tf.translation.y, tf.translation.z],
        [tf.rotation.x, tf.rotation.y, tf.rotation.z, tf.rotation.w],
    )
    colour = msgs["colour"]
    rgb = np.frombuffer(colour.data, np.uint8).reshape(colour.height, colour.width, 3)
    d, c = _ros1_intrinsics(msgs["depth_info"]), _ros1_intrinsics(msgs["colour_info"])
    return depth, d, c, T, rgb


@needs_d435
def test_d435_depth_is_detected_as_unregistered(d435):
    _, d, c, T, _ = d435
    reason = registration_needed(d, c, T)
    assert reason is not None and "same 640x480 size" in reason, reason


@needs_d435
def test_d435_registered_pixels_hold_the_moved_and_projected_points(d435):
    depth, d, c, T, _ = d435
    registered = register_depth(depth, d, c, T)
    before, after = np.isfinite(depth).mean(), np.isfinite(registered).mean()
    print(f"D435 valid ratio: raw depth {before:.3f}, registered {after:.3f}")
    assert before > 0.9 and after > 0.9

    # Independent reference for 5000 sampled depth pixels: back-project with the depth K, move
    # with R, t, project with the colour K, written out here rather than through the module.
    rng = np.random.default_rng(0)
    rows, cols = np.nonzero(np.isfinite(depth))
    pick = rng.choice(rows.size, 5000, replace=False)
    v, u = rows[pick].astype(np.float64), cols[pick].astype(np.float64)
    z = depth[rows[pick], cols[pick]].astype(np.float64)
    Kd, Kc = d.K, c.K
    p = np.stack([(u - Kd[0, 2]) * z / Kd[0, 0], (v - Kd[1, 2]) * z / Kd[1, 1], z])
    q = T[:3, :3] @ p + T[:3, 3:4]
    uc = np.floor(Kc[0, 0] * q[0] / q[2] + Kc[0, 2] + 0.5).astype(int)
    vc = np.floor(Kc[1, 1] * q[1] / q[2] + Kc[1, 2] + 0.5).astype(int)
    inside = (uc >= 0) & (uc < c.width) & (vc >= 0) & (vc < c.height)
    assert inside.mean() > 0.3  # the colour camera's field of view is the narrower one
    held = registered[vc[inside], uc[inside]]
    z_colour = q[2][inside]
    assert np.all(np.isfinite(held))
    assert np.all(held <= z_colour + 1e-4)  # that depth, or a nearer surface in front of it
    exact = np.abs(held - z_colour) < 1e-4
    assert exact.mean() > 0.9, exact.mean()
    # The registration moved depth by pixels: the raw depth at the same pixels disagrees.
    raw = depth[vc[inside], uc[inside]]
    assert np.nanmean(np.abs(raw - z_colour) < 1e-4) < 0.2


@needs_d435
def test_d435_registered_depth_edges_lie_on_colour_edges(d435):
    """The extrinsic's direction (p_colour = T p_depth) checked by the picture: depth
    discontinuities of the registered depth fall on the colour image's edges; the raw depth's
    and the wrongly inverted extrinsic's do not."""
    depth, d, c, T, rgb = d435
    colour_edges = cv2.Canny(rgb, 50, 150) > 0
    distance = cv2.distanceTransform((~colour_edges).astype(np.uint8), cv2.DIST_L2, 3)

    def edge_distance(registered: np.ndarray) -> float:
        filled = np.nan_to_num(registered, nan=0.0)
        gradient = np.hypot(
            cv2.Sobel(filled, cv2.CV_32F, 1, 0), cv2.Sobel(filled, cv2.CV_32F, 0, 1)
        )
        valid = cv2.erode(np.isfinite(registered).astype(np.uint8), np.ones((5, 5))) > 0
        steps = (gradient > 0.3) & valid  # depth steps of > ~4 cm per pixel, away from holes
        assert steps.sum() > 20
        return float(distance[steps].mean())

    right = edge_distance(register_depth(depth, d, c, T))
    inverted = edge_distance(register_depth(depth, d, c, invert_transform(T)))
    raw = edge_distance(depth)
    assert right < 3.0 and right < inverted / 3 and right < raw / 3, (right, inverted, raw)

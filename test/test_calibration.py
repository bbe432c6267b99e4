"""Calibration YAML: round trip, transform chaining and the checks that catch bad files."""

from pathlib import Path

import numpy as np
import open3d as o3d
import pytest
import yaml

from depth_perception.core.camera import Intrinsics
from depth_perception.io.calibration import (
    Calibration,
    Extrinsic,
    invert_transform,
    load_calibration,
    matrix_to_quaternion,
    quaternion_to_matrix,
    save_calibration,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "calibration" / "example_rgbd_lidar.yaml"
# camera_link (x fwd, y left, z up) -> optical (x right, y down, z fwd), written out by hand.
Q_OPTICAL = (-0.5, 0.5, -0.5, 0.5)  # the same rotation as a quaternion (x, y, z, w)
LINK_T_OPTICAL = np.array(
    [[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)


def _rot_y(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def _calibration() -> Calibration:
    color = Intrinsics.from_K(
        [[525.5, 0.0, 319.25], [0.0, 524.75, 241.125], [0.0, 0.0, 1.0]],
        640,
        480,
        D=[0.11, -0.27, 0.001, -0.002, 0.09],
        frame_id="camera_color_optical_frame",
    )
    fisheye = Intrinsics.from_K(
        [[280.0, 0.0, 400.5], [0.0, 280.0, 300.5], [0.0, 0.0, 1.0]],
        800,
        600,
        D=[0.01, -0.002, 0.0003, 0.0],
        distortion_model="equidistant",
        frame_id="fisheye_optical_frame",
    )
    T_cam = np.eye(4)
    T_cam[:3, :3] = _rot_y(10.0)
    T_cam[:3, 3] = [0.2, -0.05, 0.4]
    T_lidar = np.eye(4)
    T_lidar[:3, :3] = o3d.geometry.get_rotation_matrix_from_xyz([0.01, -0.02, 0.7])
    T_lidar[:3, 3] = [-0.1, 0.0, 0.6]
    return Calibration(
        cameras={"color": color, "fisheye": fisheye},
        extrinsics=[
            Extrinsic.from_matrix("base_link", "camera_link", T_cam),
            Extrinsic("camera_link", "camera_color_optical_frame", (0, 0, 0), Q_OPTICAL),
            Extrinsic.from_matrix("base_link", "lidar_link", T_lidar),
            Extrinsic("camera_link", "fisheye_optical_frame", (0.0, 0.03, 0.0), Q_OPTICAL),
        ],
    )


def test_round_trip_is_exact(tmp_path):
    cal = _calibration()
    path = save_calibration(cal, tmp_path / "rig.yaml")
    back = load_calibration(path)
    assert back.cameras == cal.cameras  # Intrinsics compare field by field, D and model included
    assert back.extrinsics == cal.extrinsics
    # A second save writes the same text (the format is stable).
    assert save_calibration(back, tmp_path / "again.yaml").read_text() == path.read_text()


def test_saved_file_layout(tmp_path):
    path = save_calibration(_calibration(), tmp_path / "rig.yaml")
    data = yaml.safe_load(path.read_text())
    assert data["version"] == 1
    cam = data["cameras"][0]
    assert cam["name"] == "color" and cam["frame_id"] == "camera_color_optical_frame"
    assert cam["K"] == [[525.5, 0.0, 319.25], [0.0, 524.75, 241.125], [0.0, 0.0, 1.0]]
    assert cam["D"] == [0.11, -0.27, 0.001, -0.002, 0.09]
    opt = data["extrinsics"][1]
    assert opt["rotation"] == [-0.5, 0.5, -0.5, 0.5]
    np.testing.assert_array_equal(opt["matrix"], LINK_T_OPTICAL)


def test_quaternion_conversion_matches_open3d():
    rng = np.random.default_rng(3)
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)  # (x, y, z, w)
        T = quaternion_to_matrix(np.zeros(3), q)
        # open3d takes (w, x, y, z).
        R = o3d.geometry.get_rotation_matrix_from_quaternion([q[3], q[0], q[1], q[2]])
        np.testing.assert_allclose(T[:3, :3], R, atol=1e-12)
        t, q2 = matrix_to_quaternion(T)
        assert q2[3] >= 0
        np.testing.assert_allclose(q2, q if q[3] >= 0 else -q, atol=1e-12)


def test_known_quaternions():
    # 90 deg about z: x -> y.
    s = np.sqrt(0.5)
    T = quaternion_to_matrix([1.0, 2.0, 3.0], [0.0, 0.0, s, s])
    np.testing.assert_allclose(T @ [1, 0, 0, 1], [1.0, 3.0, 3.0, 1.0], atol=1e-12)
    t, q = matrix_to_quaternion(LINK_T_OPTICAL)
    np.testing.assert_allclose(q, [-0.5, 0.5, -0.5, 0.5], atol=1e-15)
    np.testing.assert_array_equal(t, 0.0)


def test_transform_chains_through_the_tree():
    cal = _calibration()
    base_T_cam = cal.extrinsics[0].matrix
    base_T_lidar = cal.extrinsics[2].matrix
    base_T_opt = cal.transform("base_link", "camera_color_optical_frame")
    np.testing.assert_allclose(base_T_opt, base_T_cam @ LINK_T_OPTICAL, atol=1e-12)
    # The optical z axis (viewing direction) is camera_link's x axis, pitched 10 deg down.
    a = np.radians(10.0)
    np.testing.assert_allclose(base_T_opt[:3, 2], [np.cos(a), 0.0, -np.sin(a)], atol=1e-12)
    # Backwards along the edge = inverse; across branches = through the common parent.
    opt_T_base = cal.transform("camera_color_optical_frame", "base_link")
    np.testing.assert_allclose(opt_T_base, np.linalg.inv(base_T_opt), atol=1e-12)
    opt_T_lidar = cal.transform("camera_color_optical_frame", "lidar_link")
    np.testing.assert_allclose(opt_T_lidar, np.linalg.inv(base_T_opt) @ base_T_lidar, atol=1e-12)
    # Two sibling optical frames: 3 cm apart along camera_link +y = optical -x.
    opt_T_fish = cal.transform("camera_color_optical_frame", "fisheye_optical_frame")
    expected = np.eye(4)
    expected[0, 3] = -0.03
    np.testing.assert_allclose(opt_T_fish, expected, atol=1e-12)
    np.testing.assert_array_equal(cal.transform("lidar_link", "lidar_link"), np.eye(4))


def test_invert_transform():
    T = quaternion_to_matrix([0.3, -1.0, 2.0], [0.1, 0.2, 0.3, 0.9])
    np.testing.assert_allclose(invert_transform(T) @ T, np.eye(4), atol=1e-12)


def test_example_file():
    cal = load_calibration(EXAMPLE)
    assert sorted(cal.cameras) == ["color", "depth"]
    color = cal.camera("color")
    assert (color.width, color.height) == (640, 480)
    assert (color.fx, color.fy, color.cx, color.cy) == (615.42, 615.77, 323.18, 238.64)
    assert color.frame_id == "camera_color_optical_frame"
    assert color.D == (0.0921, -0.1813, 0.0004, -0.0007, 0.0)
    assert cal.frames == {
        "base_link", "camera_link", "camera_color_optical_frame", "camera_depth_optical_frame",
        "lidar_link", "radar_link",
    }  # fmt: skip
    # Colour optical origin: camera_link origin + its +y axis (pitched about y, so unchanged).
    T = cal.transform("base_link", "camera_color_optical_frame")
    np.testing.assert_allclose(T[:3, 3], [0.12, 0.015, 0.31], atol=1e-9)
    a = np.radians(8.0)
    np.testing.assert_allclose(T[:3, 2], [np.cos(a), 0.0, -np.sin(a)], atol=1e-8)
    # LiDAR rotation: roll 0.3, pitch -0.8, yaw 1.5 deg (Rz Ry Rx).
    R = o3d.geometry.get_rotation_matrix_from_zyx(np.radians([1.5, -0.8, 0.3]))
    np.testing.assert_allclose(cal.transform("base_link", "lidar_link")[:3, :3], R, atol=1e-8)


def _write(tmp_path, extrinsics) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "cameras": [], "extrinsics": extrinsics}))
    return path


def test_matrix_only_entry_and_normalisation(tmp_path):
    M = [[0, -1, 0, 1.0], [1, 0, 0, 2.0], [0, 0, 1, 3.0], [0, 0, 0, 1]]
    e = {"parent": "a", "child": "b", "translation": [0, 0, 0], "rotation": [0, 0, 0, 1.002]}
    cal = load_calibration(_write(tmp_path, [{"parent": "b", "child": "c", "matrix": M}, e]))
    np.testing.assert_allclose(cal.transform("b", "c"), M, atol=1e-12)
    np.testing.assert_allclose(cal.extrinsics[0].rotation, [0, 0, np.sqrt(0.5), np.sqrt(0.5)])
    assert cal.extrinsics[1].rotation == (0.0, 0.0, 0.0, 1.0)  # normalised
    np.testing.assert_allclose(cal.transform("a", "c"), M, atol=1e-12)


def _edge(parent: str, child: str, **kw) -> dict:
    return {
        "parent": parent,
        "child": child,
        "translation": [0, 0, 0],
        "rotation": [0, 0, 0, 1],
    } | kw


SHIFTED = [[1, 0, 0, 0.5], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]


@pytest.mark.parametrize(
    "extrinsics, message",
    [
        ([_edge("a", "b", matrix=SHIFTED)], "disagrees"),
        ([_edge("a", "b", rotation=[0, 0, 0, 2])], "not 1"),
        ([_edge("a", "b"), _edge("c", "b")], "two parents"),
        ([_edge("a", "b"), _edge("b", "a")], "cycle"),
        ([{"parent": "a", "child": "b"}], "translation"),
    ],
)
def test_bad_files_are_rejected(tmp_path, extrinsics, message):
    with pytest.raises(ValueError, match=message):
        load_calibration(_write(tmp_path, extrinsics))


def test_unknown_and_unconnected_frames():
    cal = Calibration(
        extrinsics=[
            Extrinsic("a", "b", (1, 0, 0), (0, 0, 0, 1)),
            Extrinsic("c", "d", (0, 1, 0), (0, 0, 0, 1)),
        ]
    )
    with pytest.raises(KeyError, match="not connected"):
        cal.transform("a", "d")
    with pytest.raises(KeyError, match="not in the calibration"):
        cal.transform("a", "zzz")
    with pytest.raises(KeyError, match="no camera"):
        cal.camera("color")


def test_wrong_version_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("version: 2\ncameras: []\n")
    with pytest.raises(ValueError, match="version"):
        load_calibration(path)

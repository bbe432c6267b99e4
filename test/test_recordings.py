"""Users' own recordings: topic roles, real driver layouts and formats, registration, pairing.

Two sources: the real RealSense D435 recording in ../shared/data/real_bags (tests skip with the
reason when it is absent) and variants the tests write with rosbags from synthetic frames
(test/recording_variants.py): each variant must read back to the same depth as the raw original.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from recording_variants import (
    REALSENSE_ROS2,
    REALSENSE_ROS2_RAW_DEPTH,
    synthetic_frames,
    write_variant,
)

from depth_perception.cli import main as cli
from depth_perception.core.camera import Intrinsics
from depth_perception.io.calibration import Calibration, Extrinsic, quaternion_to_matrix
from depth_perception.io.recording import (
    PairingStats,
    RecordingError,
    bag_info,
    plan_recording,
    read_rgbd_frames,
)
from depth_perception.io.topics import parse_overrides, resolve_topics
from depth_perception.ros.conversions import inverse_depth_quantisation
from training.extract import ExtractConfig, extract, find_bags
from training.extract import main as extract_main

ROOT = Path(__file__).resolve().parent.parent
D435 = ROOT.parent / "shared/data/real_bags/realsense_d435_single_depth_color_640x480.bag"
needs_d435 = pytest.mark.skipif(
    not D435.is_file(), reason=f"the real RealSense D435 recording is not at {D435}"
)
MS = 1_000_000

IMG, C, CI, PC = (
    "sensor_msgs/msg/Image",
    "sensor_msgs/msg/CompressedImage",
    "sensor_msgs/msg/CameraInfo",
    "sensor_msgs/msg/PointCloud2",
)


# --- roles ------------------------------------------------------------------------------------

LAYOUTS = {
    "RealSense ROS wrapper": (
        [("/camera/camera/color/image_raw", IMG), ("/camera/camera/color/image_raw/compressed", C),
         ("/camera/camera/color/camera_info", CI), ("/camera/camera/depth/image_rect_raw", IMG),
         ("/camera/camera/depth/image_rect_raw/compressedDepth", C),
         ("/camera/camera/depth/camera_info", CI),
         ("/camera/camera/aligned_depth_to_color/image_raw", IMG),
         ("/camera/camera/aligned_depth_to_color/camera_info", CI),
         ("/camera/camera/infra1/image_rect_raw", IMG), ("/camera/camera/depth/color/points", PC),
         ("/camera/camera/extrinsics/depth_to_color", "realsense2_camera_msgs/msg/Extrinsics")],
        {"rgb": "/camera/camera/color/image_raw",
         "rgb_info": "/camera/camera/color/camera_info",
         "depth": "/camera/camera/aligned_depth_to_color/image_raw",
         "depth_info": "/camera/camera/aligned_depth_to_color/camera_info",
         "extrinsic": "/camera/camera/extrinsics/depth_to_color"},
    ),
    "RealSense SDK recording": (
        [("/device_0/sensor_0/Depth_0/image/data", IMG),
         ("/device_0/sensor_1/Color_0/image/data", IMG),
         ("/device_0/sensor_0/Depth_0/info/camera_info", CI),
         ("/device_0/sensor_1/Color_0/info/camera_info", CI),
         ("/device_0/sensor_0/Depth_0/tf/0", "geometry_msgs/msg/Transform"),
         ("/device_0/sensor_1/Color_0/tf/0", "geometry_msgs/msg/Transform")],
        {"rgb": "/device_0/sensor_1/Color_0/image/data",
         "rgb_info": "/device_0/sensor_1/Color_0/info/camera_info",
         "depth": "/device_0/sensor_0/Depth_0/image/data",
         "depth_info": "/device_0/sensor_0/Depth_0/info/camera_info",
         "extrinsic": "/device_0/sensor_1/Color_0/tf/0"},
    ),
    "Azure Kinect ROS driver": (
        [("/rgb/image_raw", IMG), ("/rgb/camera_info", CI), ("/depth/image_raw", IMG),
         ("/depth/camera_info", CI), ("/depth_to_rgb/image_raw", IMG),
         ("/depth_to_rgb/camera_info", CI), ("/ir/image_raw", IMG), ("/points2", PC)],
        {"rgb": "/rgb/image_raw", "rgb_info": "/rgb/camera_info",
         "depth": "/depth_to_rgb/image_raw", "depth_info": "/depth_to_rgb/camera_info"},
    ),
    "ZED ROS wrapper": (
        [("/zed/zed_node/rgb/image_rect_color", IMG), ("/zed/zed_node/rgb/camera_info", CI),
         ("/zed/zed_node/rgb_raw/image_raw_color", IMG),
         ("/zed/zed_node/depth/depth_registered", IMG), ("/zed/zed_node/depth/camera_info", CI),
         ("/zed/zed_node/confidence/confidence_map", IMG),
         ("/zed/zed_node/right/image_rect_color", IMG),
         ("/zed/zed_node/point_cloud/cloud_registered", PC)],
        {"rgb": "/zed/zed_node/rgb/image_rect_color", "rgb_info": "/zed/zed_node/rgb/camera_info",
         "depth": "/zed/zed_node/depth/depth_registered",
         "depth_info": "/zed/zed_node/depth/camera_info"},
    ),
    "OAK-D (depthai ROS driver)": (
        [("/oak/rgb/image_raw", IMG), ("/oak/rgb/camera_info", CI), ("/oak/stereo/image_raw", IMG),
         ("/oak/stereo/camera_info", CI)],
        {"rgb": "/oak/rgb/image_raw", "rgb_info": "/oak/rgb/camera_info",
         "depth": "/oak/stereo/image_raw", "depth_info": "/oak/stereo/camera_info"},
    ),
    "Orbbec / generic camera driver": (
        [("/camera/color/image_raw", IMG), ("/camera/color/camera_info", CI),
         ("/camera/depth/image_raw", IMG), ("/camera/depth/camera_info", CI),
         ("/camera/depth/points", PC), ("/camera/ir/image_raw", IMG)],
        {"rgb": "/camera/color/image_raw", "rgb_info": "/camera/color/camera_info",
         "depth": "/camera/depth/image_raw", "depth_info": "/camera/depth/camera_info"},
    ),
    "depth_perception": (
        [("/camera/rgb/image_rect_color", IMG), ("/camera/rgb/camera_info", CI),
         ("/camera/depth_registered/image_rect", IMG), ("/camera/depth_registered/camera_info", CI),
         ("/lidar/points", PC), ("/radar/points", PC), ("/tf_static", "tf2_msgs/msg/TFMessage"),
         ("/targets", "depth_perception_msgs/msg/TargetPromptArray"),
         ("/ground_truth/depth", IMG), ("/ground_truth/instances", IMG),
         ("/camera/depth_completed/image", IMG), ("/camera/depth_completed/points", PC)],
        {"rgb": "/camera/rgb/image_rect_color", "rgb_info": "/camera/rgb/camera_info",
         "depth": "/camera/depth_registered/image_rect",
         "depth_info": "/camera/depth_registered/camera_info", "lidar": "/lidar/points",
         "radar": "/radar/points", "tf_static": "/tf_static", "targets": "/targets",
         "gt_depth": "/ground_truth/depth", "gt_instances": "/ground_truth/instances"},
    ),
}  # fmt: skip


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_roles_of_common_driver_layouts(layout):
    topics, expected = LAYOUTS[layout]
    roles = resolve_topics(topics)
    assert roles.topics == expected
    assert roles.layout == layout


def test_compressed_only_streams_and_overrides():
    topics = [
        ("/cam/color/image_raw/compressed", C),
        ("/cam/color/camera_info", CI),
        ("/cam/depth/image_rect_raw/compressedDepth", C),
        ("/cam/depth/camera_info", CI),
        ("/cam/depth/image_rect_raw/theora", "theora_image_transport/msg/Packet"),
    ]
    roles = resolve_topics(topics)
    assert roles.topics["rgb"] == "/cam/color/image_raw/compressed"
    assert roles.transports == {"rgb": "compressed", "depth": "compressedDepth"}
    assert roles.topics["depth_info"] == "/cam/depth/camera_info"  # below the base topic
    over = resolve_topics(topics, parse_overrides(["rgb_info=/cam/depth/camera_info"]))
    assert over.topics["rgb_info"] == "/cam/depth/camera_info"
    assert over.how["rgb_info"] == "override"
    with pytest.raises(ValueError, match="no such topic"):
        resolve_topics(topics, {"depth": "/nope"})
    with pytest.raises(ValueError, match="unknown role"):
        parse_overrides(["dept=/cam/depth"])
    with pytest.raises(ValueError, match="ROLE=TOPIC"):
        parse_overrides(["/cam/depth"])


# --- the real RealSense D435 recording ------------------------------------------------------


@needs_d435
def test_d435_roles_registration_and_pairing_without_options():
    info = bag_info(D435)
    assert info["storage"] == "ros1" and info["layout"] == "RealSense SDK recording"
    assert info["roles"]["rgb"] == "/device_0/sensor_1/Color_0/image/data"
    assert info["roles"]["depth"] == "/device_0/sensor_0/Depth_0/image/data"
    assert info["roles"]["extrinsic"] == "/device_0/sensor_1/Color_0/tf/0"
    assert "not registered" in info["registration"] and "390.4" in info["registration"]
    # Colour and the nearest depth image are 101.6 ms apart: the default slop (20 ms) says so.
    assert info["frames"] == 0
    assert "101.6 ms apart" in info["why_no_frames"] and "--slop 0.12" in info["why_no_frames"]
    wide = bag_info(D435, slop_ns=120 * MS)
    assert wide["frames"] == 1
    assert wide["pairing"]["max_gap_ms"] == pytest.approx(101.566)
    assert wide["pairing"]["depth_unpaired"] == 1 and wide["pairing"]["colour_unpaired"] == 0


@needs_d435
def test_d435_depth_is_registered_into_the_colour_camera():
    """A registered pixel's depth is where an independent numpy projection of the original
    depth pixel lands (nearest point wins, so never deeper than the point)."""
    from rosbags.highlevel import AnyReader

    from depth_perception.ros.conversions import depth_image_to_metres

    stats = PairingStats()
    (frame,) = read_rgbd_frames(D435, slop_ns=120 * MS, stats=stats)
    assert frame.extra["registered"]
    assert frame.extra["stamps"]["depth"] - frame.stamp_ns == 101_566_000
    assert frame.rgb.shape == (480, 640, 3) and frame.intrinsics.fx == pytest.approx(613.2, abs=0.1)

    with AnyReader([D435]) as r:
        msgs = {}
        for c, _, raw in r.messages():
            if c.topic.endswith(("Depth_0/image/data", "camera_info", "Color_0/tf/0")):
                msgs.setdefault(c.topic, r.deserialize(raw, c.msgtype))
    depth = depth_image_to_metres(msgs["/device_0/sensor_0/Depth_0/image/data"])
    Kd = msgs["/device_0/sensor_0/Depth_0/info/camera_info"].K.reshape(3, 3)
    Kc = msgs["/device_0/sensor_1/Color_0/info/camera_info"].K.reshape(3, 3)
    tf = msgs["/device_0/sensor_1/Color_0/tf/0"]
    t, q = tf.translation, tf.rotation
    T = quaternion_to_matrix([t.x, t.y, t.z], [q.x, q.y, q.z, q.w])

    v, u = np.nonzero(np.isfinite(depth))
    pick = np.random.default_rng(0).choice(len(u), 3000, replace=False)
    u, v = u[pick], v[pick]
    z = depth[v, u].astype(np.float64)
    p = np.stack([(u - Kd[0, 2]) * z / Kd[0, 0], (v - Kd[1, 2]) * z / Kd[1, 1], z])
    pc = T[:3, :3] @ p + T[:3, 3:4]
    uc = np.floor(Kc[0, 0] * pc[0] / pc[2] + Kc[0, 2] + 0.5).astype(int)
    vc = np.floor(Kc[1, 1] * pc[1] / pc[2] + Kc[1, 2] + 0.5).astype(int)
    inside = (uc >= 0) & (uc < 640) & (vc >= 0) & (vc < 480)
    got = frame.depth[vc[inside], uc[inside]]
    want = pc[2][inside]
    assert np.isfinite(got).all()
    assert (got <= want + 1e-3).all()  # z-buffer: a nearer point may cover it, never a farther
    assert np.mean(np.abs(got - want) < 2e-3) > 0.9


@needs_d435
def test_d435_eval_bag_hide_and_seek_and_extract(tmp_path, capsys):
    out = tmp_path / "eval"
    code = cli(["eval-bag", str(D435), "--hide-and-seek", "--slop", "0.12", "--mode", "offline",
                "--pipeline", "nearest", "--pipeline", "ipbasic", "--out", str(out)])  # fmt: skip
    assert code == 0
    for name in ("nearest", "ipbasic"):
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["frames"] == 1
        assert 0 < summary["metrics"]["rmse"]["mean"] < 0.5  # metres, on hidden real pixels
    # Without a wide enough slop: no frames, said why, non-zero exit.
    assert cli(["eval-bag", str(D435), "--hide-and-seek", "--out", str(tmp_path / "x")]) == 2
    assert "101.6 ms apart" in capsys.readouterr().err

    shards = tmp_path / "shards"
    assert extract_main([str(D435), "--out", str(shards), "--slop", "0.12", "--no-progress"]) == 0
    (done,) = shards.glob("*.done")
    record = json.loads(done.read_text())
    assert record["frames"] == 1 and "not registered" in record["registration"]
    with tarfile.open(next(shards.glob("*.tar"))) as tar:
        names = tar.getnames()
    assert any(n.endswith(".depth.png") or "depth" in n for n in names)
    # A directory holding the .bag file is searched for it; without the slop it fails loudly.
    assert find_bags([D435.parent])[0][0] == D435
    assert extract_main([str(D435.parent), "--out", str(tmp_path / "s2"), "--no-progress"]) == 1


def test_extract_refuses_to_succeed_on_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    out = ["--out", str(tmp_path / "o"), "--no-progress"]
    assert extract_main([str(tmp_path / "empty"), *out]) == 1
    assert extract_main([str(tmp_path / "nope"), *out]) == 2


# --- variants written here ------------------------------------------------------------------

COLOUR = Intrinsics(64, 48, 60.0, 60.0, 31.5, 23.5, frame_id="camera_color_optical_frame")


def _quantised(depth: np.ndarray) -> np.ndarray:
    """What a 16UC1 millimetre image holds: depth rounded to whole millimetres."""
    return np.where(np.isfinite(depth), np.round(depth * 1000) / 1000, np.nan).astype(np.float32)


@pytest.mark.parametrize(
    "colour,depth,storage",
    [("raw", "raw", "sqlite3"), ("jpeg", "16UC1", "mcap"), ("png", "32FC1", "sqlite3"),
     ("raw", "raw", "ros1"), ("jpeg", "16UC1", "ros1"), ("png", "32FC1", "ros1")],
)  # fmt: skip
def test_variants_read_back_to_the_raw_depth(tmp_path, colour, depth, storage):
    frames = synthetic_frames()
    path = write_variant(tmp_path / "rec", frames, COLOUR, colour=colour, depth=depth,
                         storage=storage, info_once_at_zero=storage == "ros1")  # fmt: skip
    info = bag_info(path)
    assert info["roles"]["rgb"].startswith(REALSENSE_ROS2["rgb"])
    assert info["roles"]["depth"].startswith(REALSENSE_ROS2["depth"])
    assert info["frames"] == len(frames) and info["registration"] is None
    back = list(read_rgbd_frames(path))
    assert [f.stamp_ns for f in back] == [f.stamp_ns for f in frames]
    for f, b in zip(frames, back, strict=True):
        assert b.intrinsics.K.tolist() == COLOUR.K.tolist()
        want = _quantised(f.depth)
        np.testing.assert_array_equal(np.isnan(b.depth), np.isnan(want))
        if depth == "32FC1":  # inverse-depth quantisation: d <= d' < d + d^2 / (A - d)
            quant_a, _ = inverse_depth_quantisation()
            ok = np.isfinite(want)
            err = b.depth[ok] - want[ok]
            bound = want[ok] ** 2 / (quant_a - want[ok]) + 1e-4
            assert (err >= -1e-4).all() and (err < bound).all()
        else:
            np.testing.assert_array_equal(b.depth, want)  # lossless at 1 mm
        if colour == "jpeg":
            assert np.abs(b.rgb.astype(int) - f.rgb).mean() < 3  # JPEG, quality 95
        else:
            np.testing.assert_array_equal(b.rgb, f.rgb)


def test_camera_info_once_at_stamp_zero_serves_every_frame(tmp_path):
    frames = synthetic_frames(4)
    path = write_variant(tmp_path / "rec", frames, COLOUR, info_once_at_zero=True)
    plan = plan_recording(path)
    assert plan.latched_info and len(plan.colour_infos) == 1 and plan.colour_infos[0][0] == 0
    assert len(list(read_rgbd_frames(path))) == 4


def test_slower_depth_pairs_by_nearest_stamp_with_statistics(tmp_path):
    frames = synthetic_frames(6)
    # Depth with every other colour image, 7 ms late (a 2:1 rate ratio as 30 / 15 Hz).
    path = write_variant(tmp_path / "rec", frames, COLOUR, depth_every=2, depth_offset_ns=7 * MS)
    stats = PairingStats()
    back = list(read_rgbd_frames(path, stats=stats))
    assert [f.stamp_ns for f in back] == [f.stamp_ns for f in frames[::2]]
    assert stats.pairs == 3 and stats.colour_unpaired == 3 and stats.depth_unpaired == 0
    assert stats.max_gap_ns == 7 * MS
    narrow = PairingStats()
    assert list(read_rgbd_frames(path, slop_ns=5 * MS, stats=narrow)) == []
    assert "7.0 ms apart" in narrow.why_none()


def test_depth_of_another_camera_is_registered_with_tf_static_or_a_calibration(tmp_path):
    """The wrapper's raw depth: another camera (other intrinsics, frame 2 cm to the left)."""
    depth_intr = Intrinsics(64, 48, 40.0, 40.0, 32.0, 24.0, frame_id="camera_depth_optical_frame")
    # A fronto-parallel wall at 2 m: after registration it is still at 2 m, shifted.
    frames = synthetic_frames(2)
    for f in frames:
        f.depth[:] = 2.0
    link = Extrinsic(COLOUR.frame_id, depth_intr.frame_id, (0.02, 0.0, 0.0), (0, 0, 0, 1))
    kw = {"topics": REALSENSE_ROS2_RAW_DEPTH, "depth_intr": depth_intr}

    bare = write_variant(tmp_path / "bare", frames, COLOUR, **kw)
    with pytest.raises(RecordingError, match="--calibration"):
        plan_recording(bare)
    assert "fx 40 ≠ colour fx 60" in bag_info(bare)["why_no_frames"].replace(".0", "")

    with_tf = write_variant(tmp_path / "tf", frames, COLOUR, tf_static=[link], **kw)
    for path, cal in ((with_tf, None), (bare, Calibration(extrinsics=[link]))):
        back = list(read_rgbd_frames(path, calibration=cal))
        assert len(back) == 2 and all(b.extra["registered"] for b in back)
        d = back[0].depth
        assert np.nanmax(np.abs(d - 2.0)) < 1e-6
        # Depth fx 40 < colour fx 60: the depth camera sees more; the wall fills the colour
        # image except the strip the 2 cm baseline hides (fx * 0.02 / 2 = 0.6 px).
        assert np.isfinite(d).mean() > 0.95


def test_training_extract_reads_ros1_and_compressed_recordings(tmp_path):
    frames = synthetic_frames(3)
    root = tmp_path / "bags"
    root.mkdir()
    write_variant(root / "a", frames, COLOUR, colour="jpeg", depth="16UC1", storage="ros1")
    write_variant(root / "b", frames, COLOUR, colour="png", depth="32FC1", storage="mcap")
    report = extract([root], ExtractConfig(out=tmp_path / "shards", shard_size=4, progress=False))
    assert sorted(report.done) == ["a_bag", "b"] and report.frames == 6 and not report.failed


@needs_d435
def test_bag_info_prints_roles_and_why_no_frames(capsys):
    assert cli(["bag-info", str(D435)]) == 0
    out = capsys.readouterr().out
    assert "layout:    RealSense SDK recording" in out
    assert "depth        /device_0/sensor_0/Depth_0/image/data" in out and "6.0 Hz" in out
    assert "registered into the colour camera with /device_0/sensor_1/Color_0/tf/0" in out
    assert "frames:    0" in out and "--slop 0.12" in out
    assert cli(["bag-info", str(D435), "--slop", "0.12", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["frames"] == 1 and len(info["topics"]) == 70  # every topic of the bag
    assert cli(["bag-info", str(D435), "--topic", "depth=/nope"]) == 2
    assert "depth=/nope: no such topic" in capsys.readouterr().err

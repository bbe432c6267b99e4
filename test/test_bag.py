"""rosbag2 round trips: simulated sequences and hand-made frames, sqlite3 and MCAP.

The bags are checked three ways: our reader gives back what was generated; the raw bytes of
every topic deserialize with rclpy (what ``ros2 bag play`` would publish); the stored type
definitions and hashes equal the ones rosidl generated for the compiled message packages.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from ament_index_python.packages import get_package_share_directory
from builtin_interfaces.msg import Time
from depth_perception_msgs.msg import TargetPromptArray
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.interfaces import MessageDefinitionFormat
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

from depth_perception.core.camera import Intrinsics
from depth_perception.io.bag import (
    BAG_VERSION,
    BagReadError,
    BagTopics,
    bag_typestore,
    canonical_cdr,
    targets_to_msg,
    verify_mcap_chunks,
    verify_mcap_data_section,
    verify_mcap_summary,
    write_frames_bag,
    write_sim_bag,
)
from depth_perception.io.calibration import Calibration, load_calibration
from depth_perception.io.frames import RGBDFrame, Target
from depth_perception.io.recording import bag_info, read_rgbd_frames, read_tf_static
from depth_perception.ros.conversions import (
    depth_image_to_metres,
    intrinsics_to_camera_info,
    metres_to_depth_image,
    numpy_to_image,
)
from depth_perception.sim.sensors import LIDAR_DTYPE, LidarConfig
from depth_perception.sim.sequence import (
    CAMERA_LINK_T_OPTICAL,
    SequenceConfig,
    generate_sequence,
    sequence_calibration,
)

STORAGES = ("sqlite3", "mcap")
TARGETS_TYPE = "depth_perception_msgs/msg/TargetPromptArray"
RCLPY_TYPES = {
    "sensor_msgs/msg/Image": Image,
    "sensor_msgs/msg/CameraInfo": CameraInfo,
    "sensor_msgs/msg/PointCloud2": PointCloud2,
    "depth_perception_msgs/msg/TargetPromptArray": TargetPromptArray,
}


def _config(seed: int = 7) -> SequenceConfig:
    # Small and fast: 3 frames at 96x72, a coarse LiDAR, radar on.
    return SequenceConfig(
        scene_kind="tabletop",
        seed=seed,
        n_frames=3,
        fps=15.0,
        width=96,
        height=72,
        lidar_config=LidarConfig(n_beams=16, horizontal_res_deg=1.0),
        radar=True,
    )


@pytest.fixture(scope="module")
def sim():
    cfg = _config()
    return cfg, list(generate_sequence(cfg))


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    return {
        s: write_sim_bag(root / f"sim_{s}", _config(), storage=s, progress=False) for s in STORAGES
    }


def _raw_messages(path: Path) -> list[tuple[str, str, int, bytes]]:
    """(topic, type, bag time, bytes) of every message, in bag order."""
    with Reader(path) as reader:
        return [(c.topic, c.msgtype, t, bytes(raw)) for c, t, raw in reader.messages()]


def test_summary_and_info(bags, sim):
    cfg, frames = sim
    period = round(1e9 / 15.0)
    for storage, summary in bags.items():
        assert summary.n_frames == 3 and summary.storage == storage
        assert summary.start_ns == cfg.start_ns
        assert summary.end_ns == cfg.start_ns + 2 * period
        info = bag_info(summary.path)
        assert info["storage"] == storage and info["version"] == BAG_VERSION
        assert info["duration_ns"] == 2 * period
        t = BagTopics()
        expected = {
            t.rgb: ("sensor_msgs/msg/Image", 3),
            t.rgb_info: ("sensor_msgs/msg/CameraInfo", 3),
            t.depth: ("sensor_msgs/msg/Image", 3),
            t.depth_info: ("sensor_msgs/msg/CameraInfo", 3),
            t.lidar: ("sensor_msgs/msg/PointCloud2", 3),
            t.radar: ("sensor_msgs/msg/PointCloud2", 3),
            t.targets: ("depth_perception_msgs/msg/TargetPromptArray", 3),
            t.gt_depth: ("sensor_msgs/msg/Image", 3),
            t.gt_instances: ("sensor_msgs/msg/Image", 3),
            t.tf_static: ("tf2_msgs/msg/TFMessage", 1),
        }
        got = {name: (v["type"], v["count"]) for name, v in info["topics"].items()}
        assert got == expected
        assert info["message_count"] == 28
        assert summary.message_counts == {k: v[1] for k, v in expected.items()}


@pytest.mark.parametrize("storage", STORAGES)
def test_frames_round_trip(bags, sim, storage):
    cfg, generated = sim
    back = list(read_rgbd_frames(bags[storage].path))
    assert len(back) == len(generated)
    for f, g in zip(back, generated, strict=True):
        assert f.stamp_ns == g.stamp_ns
        assert f.intrinsics == g.intrinsics  # all fields exact, frame_id included
        assert f.frame_id == "camera_color_optical_frame"
        np.testing.assert_array_equal(f.rgb, g.view.rgb)
        # Raw depth went through 16UC1: same holes, values within half a millimetre.
        np.testing.assert_array_equal(np.isnan(f.depth), np.isnan(g.raw_depth))
        ok = ~np.isnan(g.raw_depth)
        assert ok.mean() > 0.5
        assert np.max(np.abs(f.depth[ok] - g.raw_depth[ok])) <= 0.0005 + 1e-7
        # Ground truth went through 32FC1: bit exact.
        np.testing.assert_array_equal(f.gt_depth, g.view.depth)
        assert f.instance.dtype == np.int32
        np.testing.assert_array_equal(f.instance, g.view.instance)
        assert f.extra["targets"] == g.targets and len(g.targets) > 0
        lidar = f.extra["lidar"]
        assert lidar.dtype.names == LIDAR_DTYPE.names
        assert [lidar.dtype[n] for n in lidar.dtype.names] == [
            LIDAR_DTYPE[n] for n in LIDAR_DTYPE.names
        ]
        assert len(lidar) > 100
        for name in LIDAR_DTYPE.names:
            np.testing.assert_array_equal(lidar[name], g.lidar[name])
        assert f.extra["lidar_frame_id"] == "lidar_link"
        np.testing.assert_array_equal(f.extra["radar"], g.radar)
        assert f.extra["radar_frame_id"] == "radar_link"
        assert set(f.extra["stamps"].values()) == {g.stamp_ns}


@pytest.mark.parametrize("storage", STORAGES)
def test_rclpy_deserializes_every_message(bags, sim, storage):
    _, generated = sim
    by_stamp = {g.stamp_ns: g for g in generated}
    t = BagTopics()
    seen: dict[str, int] = {}
    for topic, msgtype, bag_ns, raw in _raw_messages(bags[storage].path):
        if msgtype not in RCLPY_TYPES:
            assert msgtype == "tf2_msgs/msg/TFMessage"  # no rclpy wheel for tf2_msgs here
            continue
        msg = deserialize_message(raw, RCLPY_TYPES[msgtype])
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        assert stamp == bag_ns
        g = by_stamp[stamp]
        seen[topic] = seen.get(topic, 0) + 1
        if topic == t.rgb:
            assert (msg.encoding, msg.height, msg.width, msg.step) == ("rgb8", 72, 96, 96 * 3)
            assert msg.header.frame_id == "camera_color_optical_frame"
            np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8), g.view.rgb.ravel())
        elif topic == t.depth:
            assert msg.encoding == "16UC1"
            mm = np.frombuffer(msg.data, np.uint16).reshape(72, 96)
            expected = np.where(np.isnan(g.raw_depth), 0, np.rint(g.raw_depth * 1000.0))
            np.testing.assert_array_equal(mm, expected)
        elif topic in (t.rgb_info, t.depth_info):
            np.testing.assert_array_equal(np.asarray(msg.k).reshape(3, 3), g.intrinsics.K)
            assert (msg.width, msg.height) == (96, 72)
        elif topic == t.gt_depth:
            assert msg.encoding == "32FC1"
            np.testing.assert_array_equal(depth_image_to_metres(msg), g.view.depth)
        elif topic == t.gt_instances:
            assert msg.encoding == "16UC1"
            ids = np.frombuffer(msg.data, np.uint16).reshape(72, 96)
            np.testing.assert_array_equal(ids, g.view.instance)
        elif topic == t.lidar:
            assert [f.name for f in msg.fields] == ["x", "y", "z", "intensity", "ring"]
            assert [f.datatype for f in msg.fields] == [7, 7, 7, 7, 4]  # FLOAT32, UINT16
            assert msg.header.frame_id == "lidar_link" and msg.width == len(g.lidar)
        elif topic == t.radar:
            assert msg.header.frame_id == "radar_link" and msg.width == len(g.radar)
        elif topic == t.targets:
            assert [p.text for p in msg.targets] == [x.text for x in g.targets]
            assert [p.target_id for p in msg.targets] == [x.target_id for x in g.targets]
            boxes = [
                (p.box.x_offset, p.box.y_offset, p.box.width, p.box.height) for p in msg.targets
            ]
            assert boxes == [x.box for x in g.targets]
            assert all(p.header.frame_id == "camera_color_optical_frame" for p in msg.targets)
    assert set(seen.values()) == {3} and len(seen) == 9


def _rosidl_hash(package: str, name: str) -> str:
    """The RIHS01 hash rosidl generated when the package was built (from its .json file)."""
    try:
        share = Path(get_package_share_directory(package))
    except (OSError, LookupError):  # no AMENT_PREFIX_PATH: ROS wheels in this venv
        share = Path(sys.prefix) / "share" / package
    path = share / "msg" / f"{name}.json"
    return json.loads(path.read_text())["type_hashes"][0]["hash_string"]


@pytest.mark.parametrize("storage", STORAGES)
def test_bag_carries_type_definitions(bags, storage):
    with Reader(bags[storage].path) as reader:
        conns = {c.topic: c for c in reader.connections}
    targets = conns["/targets"]
    assert targets.msgtype == "depth_perception_msgs/msg/TargetPromptArray"
    assert targets.msgdef.format == MessageDefinitionFormat.MSG
    text = targets.msgdef.data
    assert text.startswith("std_msgs/Header header\ndepth_perception_msgs/TargetPrompt[] targets")
    assert "MSG: depth_perception_msgs/TargetPrompt\n" in text
    assert "sensor_msgs/RegionOfInterest box" in text and "float32 score" in text
    assert targets.digest == _rosidl_hash("depth_perception_msgs", "TargetPromptArray")
    assert conns["/camera/rgb/image_rect_color"].digest == _rosidl_hash("sensor_msgs", "Image")
    assert conns["/lidar/points"].digest == _rosidl_hash("sensor_msgs", "PointCloud2")
    # /tf_static is latched (transient local) so late subscribers still get the rig.
    qos = conns["/tf_static"].ext.offered_qos_profiles
    assert [q.durability.name for q in qos] == ["TRANSIENT_LOCAL"]


def test_same_seed_same_bytes(tmp_path, bags):
    again = write_sim_bag(tmp_path / "again", _config(), storage="sqlite3", progress=False)
    other = write_sim_bag(tmp_path / "other", _config(seed=8), storage="sqlite3", progress=False)
    ref = _raw_messages(bags["sqlite3"].path)
    assert _raw_messages(again.path) == ref
    # MCAP holds the very same serialized messages.
    assert sorted(_raw_messages(bags["mcap"].path)) == sorted(ref)
    # Another seed is another scene: every colour image differs.
    rgb_topic = BagTopics().rgb
    ref_rgb = [m[3] for m in ref if m[0] == rgb_topic]
    other_rgb = [m[3] for m in _raw_messages(other.path) if m[0] == rgb_topic]
    assert len(ref_rgb) == len(other_rgb) == 3
    assert all(a != b for a, b in zip(ref_rgb, other_rgb, strict=True))


def test_canonical_cdr_keeps_values():
    """Zeroing rclpy's padding bytes leaves a message rclpy decodes to the same values."""
    intr = Intrinsics(640, 480, 500.5, 501.25, 319.5, 239.5, D=(0.1, -0.2, 0.0, 0.0, 0.05))
    info = intrinsics_to_camera_info(intr, _stamped(123_456_789_000, "cam"))
    targets = targets_to_msg(
        [Target(3, "red mug", (10, 20, 30, 40), 0.75), Target(9, "", (0, 0, 0, 0), 0.0)],
        _stamped(5, "cam"),
    )
    for msg, msgtype in ((info, "sensor_msgs/msg/CameraInfo"), (targets, TARGETS_TYPE)):
        data = canonical_cdr(serialize_message(msg), msgtype)
        assert deserialize_message(data, type(msg)) == msg
        assert canonical_cdr(data, msgtype) == data


def test_sparse_topics_do_not_hold_frames_back(tmp_path):
    """Targets on the first frame only: every frame still comes out, the rest without targets."""
    frames = [_frame(1_000_000_000 + i * 50_000_000, 1.0 + i) for i in range(4)]
    frames[0].extra["targets"] = [Target(1, "box", (1, 2, 3, 2))]
    write_frames_bag(tmp_path / "b", frames, storage="sqlite3")
    back = list(read_rgbd_frames(tmp_path / "b", wait_ns=60_000_000))
    assert [f.stamp_ns for f in back] == [f.stamp_ns for f in frames]
    assert back[0].extra["targets"] == [Target(1, "box", (1, 2, 3, 2), 1.0)]
    assert all("targets" not in f.extra for f in back[1:])


def test_tf_static_and_calibration_file(bags, sim):
    cfg, generated = sim
    path = bags["mcap"].path
    cal_file = load_calibration(path / "calibration.yaml")
    expected = sequence_calibration(cfg)
    assert cal_file.cameras == expected.cameras
    assert cal_file.cameras["color"] == generated[0].intrinsics
    assert cal_file.extrinsics == expected.extrinsics
    tf = Calibration(extrinsics=read_tf_static(path))
    assert {(e.parent, e.child) for e in tf.extrinsics} == {
        ("base_link", "camera_link"),
        ("camera_link", "camera_color_optical_frame"),
        ("base_link", "lidar_link"),
        ("base_link", "radar_link"),
    }
    base_T_opt = tf.transform("base_link", "camera_color_optical_frame")
    # Hand-built: camera_link 5 cm forward, 10 cm up; optical z = camera x, optical x = -camera y.
    by_hand = np.eye(4)
    by_hand[:3, 3] = [0.05, 0.0, 0.10]
    np.testing.assert_allclose(base_T_opt, by_hand @ CAMERA_LINK_T_OPTICAL, atol=1e-12)
    np.testing.assert_allclose(base_T_opt[:3, :3] @ [0, 0, 1], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(base_T_opt[:3, :3] @ [1, 0, 0], [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(
        tf.transform("lidar_link", "camera_color_optical_frame"),
        cal_file.transform("lidar_link", "camera_color_optical_frame"),
        atol=1e-12,
    )


def test_lidar_agrees_with_depth_through_the_extrinsics(bags):
    """LiDAR points moved into the camera with /tf_static land on the ground-truth depth."""
    path = bags["sqlite3"].path
    cal = Calibration(extrinsics=read_tf_static(path))
    opt_T_lidar = cal.transform("camera_color_optical_frame", "lidar_link")
    n_checked = 0
    for f in read_rgbd_frames(path):
        pts = np.stack([f.extra["lidar"][c] for c in "xyz"], axis=1).astype(np.float64)
        cam = pts @ opt_T_lidar[:3, :3].T + opt_T_lidar[:3, 3]
        uv, z = f.intrinsics.project(cam)
        u, v = np.rint(uv[:, 0]), np.rint(uv[:, 1])
        inside = (
            (z > 0) & (u >= 0) & (u < f.intrinsics.width) & (v >= 0) & (v < f.intrinsics.height)
        )
        gt = f.gt_depth[v[inside].astype(int), u[inside].astype(int)]
        ok = np.isfinite(gt)
        err = np.abs(z[inside][ok] - gt[ok])
        # Range noise is 2 cm; edges and pixel rounding add outliers, so look at the median.
        assert ok.sum() > 20
        assert np.median(err) < 0.03
        n_checked += 1
    assert n_checked == 3


def _frame(stamp_ns: int, value_m: float, size=(8, 6)) -> RGBDFrame:
    w, h = size
    intr = Intrinsics(w, h, 10.0, 10.0, 3.5, 2.5, frame_id="cam_optical")
    rgb = np.full((h, w, 3), int(value_m * 10) % 256, np.uint8)
    return RGBDFrame(stamp_ns, rgb, np.full((h, w), value_m, np.float32), intr)


def test_write_frames_bag_custom_namespace(tmp_path):
    topics = BagTopics.under("/wrist_cam")
    assert topics.rgb == "/wrist_cam/rgb/image_rect_color"
    assert topics.depth_info == "/wrist_cam/depth_registered/camera_info"
    assert topics.lidar == "/lidar/points"
    frames = [_frame(5_000_000_000 + i * 100_000_000, 1.0 + i) for i in range(3)]
    write_frames_bag(tmp_path / "b", frames, topics=topics, storage="mcap", depth_encoding="32FC1")
    assert not (tmp_path / "b" / "calibration.yaml").exists()
    # Found by role without naming a topic, and the same when the topics are named.
    back = list(read_rgbd_frames(tmp_path / "b"))
    named = list(
        read_rgbd_frames(tmp_path / "b", topics={"rgb": topics.rgb, "depth": topics.depth})
    )
    assert [f.stamp_ns for f in back] == [f.stamp_ns for f in named] == [f.stamp_ns for f in frames]
    for a, b in zip(frames, back, strict=True):
        np.testing.assert_array_equal(b.depth, a.depth)
        np.testing.assert_array_equal(b.rgb, a.rgb)
        assert b.intrinsics == a.intrinsics


def _stamped(ns: int, frame_id: str = "cam_optical") -> Header:
    return Header(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9), frame_id=frame_id)


def test_nearest_stamp_pairing_for_driver_bags(tmp_path):
    """Colour and depth stamped a few ms apart (as real drivers do) pair to the nearest."""
    intr = Intrinsics(8, 6, 10.0, 10.0, 3.5, 2.5, frame_id="cam_optical")
    ms = 1_000_000
    t0 = 10 * 10**9
    rgb_stamps = [t0, t0 + 33 * ms, t0 + 66 * ms, t0 + 200 * ms]
    # Depth: 4 ms late, 3 ms early, 2 ms late, and 50 ms after the last colour image.
    depth_stamps = [(t0 + 4 * ms, 1.0), (t0 + 30 * ms, 2.0), (t0 + 68 * ms, 3.0)]
    depth_stamps.append((t0 + 250 * ms, 4.0))
    msgs = []
    for s in rgb_stamps:
        rgb = np.full((6, 8, 3), s // ms % 256, np.uint8)
        img = numpy_to_image(rgb, "rgb8", _stamped(s))
        msgs.append(("/camera/rgb/image_rect_color", "sensor_msgs/msg/Image", s, img))
    for s, value in depth_stamps:
        d = metres_to_depth_image(np.full((6, 8), value, np.float32), _stamped(s), "16UC1")
        msgs.append(("/camera/depth_registered/image_rect", "sensor_msgs/msg/Image", s, d))
        # Drivers publish camera_info with each depth image (no colour camera_info here).
        info = intrinsics_to_camera_info(intr, _stamped(s))
        msgs.append(("/camera/depth_registered/camera_info", "sensor_msgs/msg/CameraInfo", s, info))
    path = tmp_path / "driver"
    with Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3) as w:
        conns = {}
        # Bag (receive) time order, as a recorder writes them.
        for topic, msgtype, s, m in sorted(msgs, key=lambda x: x[2]):
            if topic not in conns:
                conns[topic] = w.add_connection(topic, msgtype, typestore=bag_typestore())
            w.write(conns[topic], s + 2 * ms, serialize_message(m))
    frames = list(read_rgbd_frames(path, slop_ns=10 * ms))
    # Colour 0..2 pair with depth 1.0 / 2.0 / 3.0; colour 3 has no depth within 10 ms.
    assert [f.stamp_ns for f in frames] == rgb_stamps[:3]
    assert [float(f.depth[0, 0]) for f in frames] == [1.0, 2.0, 3.0]
    assert [f.extra["stamps"]["depth"] for f in frames] == [s for s, _ in depth_stamps[:3]]
    assert all(f.intrinsics == intr for f in frames)  # from the depth camera_info
    assert all(f.rgb[0, 0, 0] == f.stamp_ns // ms % 256 for f in frames)
    # With 60 ms of slop the last colour image reaches the depth 50 ms after it; depth images
    # are used once, so colour 2 still gets the 68 ms one and not a repeat.
    wide = list(read_rgbd_frames(path, slop_ns=60 * ms))
    assert [float(f.depth[0, 0]) for f in wide] == [1.0, 2.0, 3.0, 4.0]
    assert wide[3].stamp_ns == rgb_stamps[3]


# --- bad data ----------------------------------------------------------------------------------


def test_mcap_bags_carry_crcs_and_a_flipped_chunk_byte_is_named(tmp_path):
    from bag_damage import flip_chunk_byte, mcap_chunks, tiny_bag

    bag = tiny_bag(tmp_path / "m", "mcap")
    file, chunks = mcap_chunks(bag)
    assert len(chunks) >= 2 and all(c.crc != 0 for c in chunks)  # sealed by our writer
    verify_mcap_summary(file)
    verify_mcap_chunks(file)
    verify_mcap_data_section(file)
    clean = list(read_rgbd_frames(bag))
    assert len(clean) == 6

    file, bad = flip_chunk_byte(bag, 1)
    before = [f for f in clean if f.stamp_ns < bad.message_start_ns]
    read = []
    with pytest.raises(BagReadError, match=rf"{file}: MCAP chunk at byte offset {bad.offset}"):
        for frame in read_rgbd_frames(bag):
            read.append(frame)
    # Everything before the bad chunk came through intact.
    assert 0 < len(read) == len(before)
    for a, b in zip(read, before, strict=True):
        np.testing.assert_array_equal(a.depth, b.depth)


def test_mcap_summary_and_data_section_crcs(tmp_path):
    from bag_damage import flip_byte, mcap_chunks, tiny_bag

    bag = tiny_bag(tmp_path / "m", "mcap", frames=2)
    file, _ = mcap_chunks(bag)
    size = file.stat().st_size
    flip_byte(file, size - 8 - 29 - 40)  # inside the summary section, before the footer
    with pytest.raises(BagReadError, match=rf"{file}: MCAP summary section: CRC mismatch"):
        bag_info(bag)

    bag = tiny_bag(tmp_path / "d", "mcap", frames=2)
    file, chunks = mcap_chunks(bag)
    # The first record after the chunk: a message index (no CRC of its own).
    flip_byte(file, chunks[-1].data_at + chunks[-1].data_size + 12)
    with pytest.raises(BagReadError, match=rf"{file}: MCAP data section: CRC mismatch"):
        list(read_rgbd_frames(bag))


def test_corrupt_sqlite_record_names_bag_topic_and_time(tmp_path):
    from bag_damage import RGB_TOPIC, garble_sqlite_message, tiny_bag

    bag = tiny_bag(tmp_path / "s", frames=4)
    garble_sqlite_message(bag, 2)
    read = []
    with pytest.raises(BagReadError, match=rf"{bag}: cannot decode the {RGB_TOPIC} message"):
        for frame in read_rgbd_frames(bag):
            read.append(frame)
    assert len(read) == 2


def test_unreadable_bags(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such bag"):
        bag_info(tmp_path / "nothing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "metadata.yaml").write_text("\x00 not: [yaml")
    with pytest.raises(BagReadError, match=rf"{tmp_path / 'junk'}: not a readable rosbag"):
        list(read_rgbd_frames(tmp_path / "junk"))

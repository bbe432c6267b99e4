"""Static transforms without tf2_ros: our buffer, /tf_static messages, the tf2_msgs interface."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import TransformStamped
from rclpy.executors import SingleThreadedExecutor
from rosbags.typesys import Stores, get_typestore

from depth_perception.io.calibration import (
    Calibration,
    Extrinsic,
    StaticTransforms,
    load_calibration,
)
from depth_perception.paths import REPO_ROOT
from depth_perception.ros.tf_static import (
    TF_STATIC_TOPIC,
    TFMessage,
    TfStaticListener,
    extrinsics_to_tf_message,
    tf_static_qos,
    transform_to_extrinsic,
)

EXAMPLE = REPO_ROOT / "calibration" / "example_rgbd_lidar.yaml"


def test_buffer_lookups_equal_the_calibration_tree():
    cal = load_calibration(EXAMPLE)
    buffer = StaticTransforms.from_calibration(cal, "calibration_file example")
    for target, source in [
        ("camera_color_optical_frame", "lidar_link"),
        ("camera_color_optical_frame", "radar_link"),
        ("lidar_link", "camera_depth_optical_frame"),
    ]:
        np.testing.assert_array_equal(buffer.lookup(target, source), cal.transform(target, source))
    assert len(buffer) == len(cal.extrinsics) and buffer.frames == cal.frames
    with pytest.raises(KeyError, match=r"no transform from 'velodyne' to 'base_link' in "):
        buffer.lookup("base_link", "velodyne")


def test_buffer_replaces_a_childs_transform_and_refuses_cycles():
    buffer = StaticTransforms()
    with pytest.raises(KeyError, match="frames known: none yet"):
        buffer.lookup("cam", "lidar")
    a = Extrinsic("base", "lidar", (1.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))
    assert buffer.set_transform(Extrinsic("base", "cam", (0.0, 0.0, 1.0), (0.0, 0.0, 0.0, 1.0)))
    assert buffer.set_transform(a)
    assert not buffer.set_transform(a)  # the same again: nothing changes
    np.testing.assert_allclose(buffer.lookup("cam", "lidar")[:3, 3], [1.0, 0.0, -1.0])
    # A newer transform of the same child replaces the old one (tf2's /tf_static semantics).
    buffer.set_transform(Extrinsic("base", "lidar", (2.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0)))
    np.testing.assert_allclose(buffer.lookup("cam", "lidar")[:3, 3], [2.0, 0.0, -1.0])
    with pytest.raises(ValueError, match="cycle"):
        buffer.set_transform(Extrinsic("lidar", "base", (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0)))
    np.testing.assert_allclose(buffer.lookup("cam", "lidar")[:3, 3], [2.0, 0.0, -1.0])


def test_tf_messages_round_trip_and_bad_transforms_are_named():
    cal = load_calibration(EXAMPLE)
    msg = extrinsics_to_tf_message(cal.extrinsics, 1_500_000_000_123)
    assert [t.child_frame_id for t in msg.transforms] == [e.child for e in cal.extrinsics]
    assert msg.transforms[0].header.stamp.sec == 1500 and msg.transforms[0].header.stamp.nanosec
    assert [transform_to_extrinsic(t) for t in msg.transforms] == cal.extrinsics

    def bad(parent="base", child="lidar", q=(0.0, 0.0, 0.0, 1.0), x=0.0):
        t = TransformStamped()
        t.header.frame_id, t.child_frame_id = parent, child
        t.transform.translation.x = x
        r = t.transform.rotation
        r.x, r.y, r.z, r.w = q
        return t

    for t, text in [
        (bad(parent=""), "empty frame id"),
        (bad(child="base"), "its own parent"),
        (bad(q=(0.0, 0.0, 0.0, 0.0)), "length 0.0000"),
        (bad(x=float("nan")), "non-finite"),
    ]:
        with pytest.raises(ValueError, match=text):
            transform_to_extrinsic(t)


def test_our_tf2_msgs_is_upstreams_type():
    """The TFMessage the bootstrap builds where no ROS install provides one has upstream's DDS
    type: the same RIHS01 type hash as rosbags' independent copy of upstream's definition."""
    import tf2_msgs

    share = REPO_ROOT / ".venv" / "share" / "tf2_msgs" / "msg" / "TFMessage.json"
    if not share.is_file():  # a ROS install's real tf2_msgs: nothing of ours to check
        pytest.skip(f"tf2_msgs from {tf2_msgs.__file__}, not built here")
    ours = json.loads(share.read_text())["type_hashes"][0]
    store = get_typestore(Stores.LATEST)
    assert ours["type_name"] == "tf2_msgs/msg/TFMessage"
    assert ours["hash_string"] == store.hash_rihs01("tf2_msgs/msg/TFMessage")
    assert TFMessage.__module__.startswith("tf2_msgs.msg")


def test_a_late_listener_gets_the_latched_tf_static_over_dds():
    """static_transform_publisher sends once, transient local: a node started later still
    receives it. A bad transform in the same message is reported and skipped."""
    cal = load_calibration(EXAMPLE)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    publisher = rclpy.create_node("tf_static_pub", context=ctx)
    listener_node = rclpy.create_node("tf_static_sub", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(publisher)
    executor.add_node(listener_node)
    try:
        msg = extrinsics_to_tf_message(cal.extrinsics, 10**9)
        broken = TransformStamped()
        broken.header.frame_id, broken.child_frame_id = "base_link", "broken_link"
        broken.transform.rotation.w = 0.0  # a zero quaternion (the default is the identity)
        msg.transforms.append(broken)
        pub = publisher.create_publisher(TFMessage, TF_STATIC_TOPIC, tf_static_qos())
        pub.publish(msg)
        executor.spin_once(timeout_sec=0.1)
        buffer, errors = StaticTransforms(), []
        TfStaticListener(listener_node, buffer, errors.append)  # subscribes after the publish
        end = time.monotonic() + 10.0
        while time.monotonic() < end and len(buffer) < len(cal.extrinsics):
            executor.spin_once(timeout_sec=0.05)
        assert len(buffer) == len(cal.extrinsics)
        np.testing.assert_array_equal(
            buffer.lookup("camera_color_optical_frame", "lidar_link"),
            Calibration(extrinsics=cal.extrinsics).transform(
                "camera_color_optical_frame", "lidar_link"
            ),
        )
        assert len(errors) == 1 and "broken_link" in errors[0] and "/tf_static" in errors[0]
    finally:
        executor.shutdown()
        publisher.destroy_node()
        listener_node.destroy_node()
        rclpy.shutdown(context=ctx)

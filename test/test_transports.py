"""image_transport's compressed transports over real DDS, as a robot sends its camera to an
offboard GPU: a depth_fill_node process fed `compressed` colour (JPEG / PNG) and `compressedDepth`
depth under a remapped colour topic, publishing its depth as `compressedDepth` too."""

from __future__ import annotations

import array
from dataclasses import dataclass

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from node_harness import Collector, by_stamp, make_frame, running_node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage
from std_msgs.msg import Header

from depth_perception.core.baselines import fill_nearest
from depth_perception.paths import config_file
from depth_perception.ros.completion_node import NodeStartupError
from depth_perception.ros.conversions import (
    depth_image_to_metres,
    intrinsics_to_camera_info,
    inverse_depth_quantisation,
    metres_to_compressed_depth,
    ns_to_stamp,
    rgb_to_compressed_image,
)
from depth_perception.ros.launcher import NodeProcess
from depth_perception.ros.nodes.depth_fill_node import DepthFillNode
from depth_perception.ros.qos import reliable_qos

NAMESPACE = "/transport_test"
PARAMETERS = {
    "rgb_transport": "compressed",
    "depth_transport": "compressedDepth",
    "publish_compressed_depth": True,
    "diagnostics_period": 0.1,
    "max_input_pixels": 10_000,  # the 64 x 48 test frames fit; 80 kB of compressed data at most
}
# The driver's own colour topic name: the compressed subscription must follow the remapping.
REMAPPINGS = {"rgb/image_rect_color": "color/image_raw"}
ERROR = DiagnosticStatus.ERROR[0]


@dataclass
class Offboard:
    node: NodeProcess
    collector: Collector
    compressed_out: list  # depth_completed/image/compressedDepth
    publishers: tuple  # camera_info, colour, depth (in the order a driver publishes them)
    log: object
    stamp: int = 1_700_000_000_000_000_000

    def next_stamp(self) -> int:
        self.stamp += 33_000_000
        return self.stamp

    def publish(self, info, rgb, depth) -> None:
        for pub, msg in zip(self.publishers, (info, rgb, depth), strict=True):
            pub.publish(msg)

    def complete(self, info, rgb, depth, stamp: int, timeout: float = 15.0):
        """Publish one frame and wait for its depth_completed/image (None if none came)."""
        msgs = self.collector.msgs["depth_completed/image"]
        self.publish(info, rgb, depth)
        # One re-send: the first frame can be lost while DDS still matches the other direction.
        for attempt in (timeout / 3, timeout):
            if self.collector.spin_until(lambda: by_stamp(msgs, stamp) is not None, attempt):
                return by_stamp(msgs, stamp)
            self.publish(info, rgb, depth)
        return None


@pytest.fixture(scope="module")
def offboard(tmp_path_factory):
    log = tmp_path_factory.mktemp("transports") / "node.log"
    node = NodeProcess(
        "depth_fill_node",
        params_file=config_file("depth_fill.yaml"),
        namespace=NAMESPACE,
        parameters=PARAMETERS,
        remappings=REMAPPINGS,
        log_path=log,
    ).start()
    collector = Collector(NAMESPACE)
    compressed_out: list = []
    collector.node.create_subscription(
        CompressedImage,
        "depth_completed/image/compressedDepth",
        compressed_out.append,
        reliable_qos(depth=50),
    )
    qos = reliable_qos(depth=10)
    publishers = (
        collector.node.create_publisher(CameraInfo, "rgb/camera_info", qos),
        collector.node.create_publisher(CompressedImage, "color/image_raw/compressed", qos),
        collector.node.create_publisher(
            CompressedImage, "depth_registered/image_rect/compressedDepth", qos
        ),
    )
    try:
        subscribed = collector.spin_until(
            lambda: all(p.get_subscription_count() > 0 for p in publishers), 20.0
        )
        assert subscribed, log.read_text()
        outputs = ("depth_completed/image", "depth_completed/image/compressedDepth")
        assert collector.wait_for_publishers(outputs), log.read_text()
        yield Offboard(node, collector, compressed_out, publishers, log)
    finally:
        collector.close()
        code = node.stop()
    assert code == 0, log.read_text()


def _header(stamp_ns: int, frame_id: str) -> Header:
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


def test_the_node_subscribes_the_transport_topics_of_the_remapped_inputs(offboard):
    topics = dict(
        offboard.collector.node.get_subscriber_names_and_types_by_node("depth_fill_node", NAMESPACE)
    )
    assert topics[f"{NAMESPACE}/color/image_raw/compressed"] == ["sensor_msgs/msg/CompressedImage"]
    assert topics[f"{NAMESPACE}/depth_registered/image_rect/compressedDepth"] == [
        "sensor_msgs/msg/CompressedImage"
    ]
    assert topics[f"{NAMESPACE}/rgb/camera_info"] == ["sensor_msgs/msg/CameraInfo"]
    assert f"{NAMESPACE}/rgb/image_rect_color" not in topics
    assert f"{NAMESPACE}/color/image_raw" not in topics  # not the raw topic as well


def test_compressed_inputs_complete_exactly_like_raw_and_the_compressed_output_decodes(
    offboard, tmp_path
):
    frame = make_frame(0)
    stamp = frame.stamp_ns
    header = _header(stamp, frame.frame_id)
    out = offboard.complete(
        intrinsics_to_camera_info(frame.intrinsics, header),
        rgb_to_compressed_image(frame.rgb, header, format="jpeg"),
        metres_to_compressed_depth(frame.depth, header, "16UC1"),  # lossless at mm
        stamp,
    )
    assert out is not None, offboard.log.read_text()
    completed = depth_image_to_metres(out)

    # The same frame over raw transport (rgb8 + 16UC1 Image), through a default node.
    with running_node(
        "depth_fill_node", "depth_fill.yaml", "/transport_raw", tmp_path / "raw.log"
    ) as (
        _,
        client,
        _,
    ):
        (raw,) = client.run([frame], timeout_s=20.0)
    assert raw.depth is not None
    np.testing.assert_array_equal(completed, raw.depth)  # bit-identical
    measured = np.isfinite(frame.depth)
    np.testing.assert_array_equal(completed[measured], frame.depth[measured])

    # depth_completed/image/compressedDepth: the same depth, inverse-depth quantised (32FC1).
    assert offboard.collector.spin_until(lambda: by_stamp(offboard.compressed_out, stamp))
    packed = by_stamp(offboard.compressed_out, stamp)
    assert packed.format == "32FC1; compressedDepth png"
    assert packed.header.frame_id == out.header.frame_id == frame.frame_id
    decoded = depth_image_to_metres(packed)
    # Every depth here is within (0.152 m, 10 m): representable, so valid exactly where the
    # 32FC1 output is; then 0 <= d' - d < d^2 / (A - d) (see test_conversions), A = 10100.
    quant_a, _ = inverse_depth_quantisation(10.0, 100.0)
    np.testing.assert_array_equal(np.isfinite(decoded), np.isfinite(completed))
    valid = np.isfinite(completed)
    d = completed[valid].astype(np.float64)
    err = decoded[valid] - d
    assert (err >= -1e-6 * d).all()
    assert (err < d**2 / (quant_a - d) + 1e-6 * d).all()
    # ... and it is exactly what our encoder (compressed_depth_image_transport's) makes of it.
    np.testing.assert_array_equal(
        decoded, depth_image_to_metres(metres_to_compressed_depth(completed, None, "32FC1"))
    )


def test_32fc1_compressed_depth_and_png_colour_inputs(offboard):
    frame = make_frame(1)
    stamp = offboard.next_stamp()
    header = _header(stamp, frame.frame_id)
    depth_msg = metres_to_compressed_depth(frame.depth, header, "32FC1")
    out = offboard.complete(
        intrinsics_to_camera_info(frame.intrinsics, header),
        rgb_to_compressed_image(frame.rgb, header, format="png"),
        depth_msg,
        stamp,
    )
    assert out is not None, offboard.log.read_text()
    # The node decodes with the same function: the fill of exactly that decoded depth.
    np.testing.assert_array_equal(
        depth_image_to_metres(out), fill_nearest(depth_image_to_metres(depth_msg))
    )


def _corrupt_jpeg(frame, header):
    msg = rgb_to_compressed_image(frame.rgb, header, format="jpeg")
    msg.data = msg.data[: len(msg.data) // 2]
    return msg


def _corrupt_depth(frame, header):
    msg = metres_to_compressed_depth(frame.depth, header, "16UC1")
    msg.data = msg.data[: len(msg.data) - 40]
    return msg


def _h264_colour(frame, header):
    msg = rgb_to_compressed_image(frame.rgb, header, format="jpeg")
    msg.format = "h264"
    return msg


def _huge_depth(frame, header):
    # 120 x 100 = 12000 pixels > max_input_pixels: read from the PNG header, never decoded.
    return metres_to_compressed_depth(np.zeros((100, 120), np.float32), header, "16UC1")


def _too_many_bytes(frame, header):
    msg = rgb_to_compressed_image(frame.rgb, header, format="jpeg")
    msg.data = msg.data + array.array("B", bytes(80_001 - len(msg.data)))
    return msg


BAD_INPUTS = [
    ("colour", _corrupt_jpeg, "corrupt or truncated"),
    ("depth", _corrupt_depth, "corrupt or truncated"),
    ("colour", _h264_colour, "unsupported CompressedImage format 'h264'"),
    ("depth", _huge_depth, "120x100 = 12000 pixels, more than max_input_pixels"),
    ("colour", _too_many_bytes, "has 80001 bytes, more than 80000"),
]


@pytest.mark.parametrize(
    "kind,make,says", BAD_INPUTS, ids=[m.__name__[1:] for _, m, _ in BAD_INPUTS]
)
def test_a_corrupt_compressed_image_is_dropped_and_the_next_frame_served(
    offboard, kind, make, says
):
    frame = make_frame(2)
    bad_stamp = offboard.next_stamp()
    header = _header(bad_stamp, frame.frame_id)
    info = intrinsics_to_camera_info(frame.intrinsics, header)
    rgb = rgb_to_compressed_image(frame.rgb, header, format="jpeg")
    depth = metres_to_compressed_depth(frame.depth, header, "16UC1")
    if kind == "colour":
        rgb = make(frame, header)
    else:
        depth = make(frame, header)
    diagnostics = offboard.collector.msgs["/diagnostics"]
    since = len(diagnostics)
    offboard.publish(info, rgb, depth)

    def reported() -> DiagnosticStatus | None:
        for diag in diagnostics[since:]:
            for status in diag.status:
                keys = {kv.key for kv in status.values}
                if status.level[0] == ERROR and says in status.message and f"errors_{kind}" in keys:
                    return status
        return None

    assert offboard.collector.spin_until(lambda: reported() is not None, 10.0), [
        s.message for a in diagnostics[since:] for s in a.status
    ]
    # Served: the next good frame is completed as usual.
    good = make_frame(3)
    stamp = offboard.next_stamp()
    header = _header(stamp, good.frame_id)
    out = offboard.complete(
        intrinsics_to_camera_info(good.intrinsics, header),
        rgb_to_compressed_image(good.rgb, header, format="jpeg"),
        metres_to_compressed_depth(good.depth, header, "16UC1"),
        stamp,
    )
    assert out is not None, offboard.log.read_text()
    np.testing.assert_array_equal(depth_image_to_metres(out), fill_nearest(good.depth))
    offboard.collector.spin_until(lambda: False, 0.2)  # anything still on its way
    for topic in ("depth_completed/image", "depth_completed/points"):
        assert by_stamp(offboard.collector.msgs[topic], bad_stamp) is None, topic
    assert by_stamp(offboard.compressed_out, bad_stamp) is None
    assert offboard.node.alive()


@pytest.mark.parametrize(
    "name,value,says",
    [
        ("rgb_transport", "theora", "rgb_transport is 'theora': choose one of raw, compressed"),
        ("depth_transport", "compressed_depth", "raw, compressed, compressedDepth"),
        ("rgb_transport", "compressedDepth", "rgb_transport is 'compressedDepth'"),
        ("compressed_depth_max", 0.0, "compressed_depth_max 0.0"),
    ],
)
def test_an_unknown_transport_stops_the_node_at_start_up(name, value, says):
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(NodeStartupError, match=says):
            DepthFillNode(context=context, parameter_overrides=[Parameter(name, value=value)])
    finally:
        rclpy.shutdown(context=context)

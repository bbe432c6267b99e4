"""depth_fill_node end to end over real DDS: the console script launched like `ros2 run`."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus
from node_harness import INTR, H, W, by_stamp, make_frame, running_node
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import Header

from depth_perception.core.baselines import fill_nearest
from depth_perception.core.camera import Intrinsics
from depth_perception.core.depth import depth_to_mm
from depth_perception.engines.base import CompletionEngine, CompletionResult
from depth_perception.io.frames import RGBDFrame
from depth_perception.ros.conversions import (
    depth_image_to_metres,
    intrinsics_to_camera_info,
    numpy_to_image,
    pointcloud2_to_array,
)
from depth_perception.ros.qos import reliable_qos
from depth_perception.ros.replay import ReplayClient


@pytest.fixture(scope="module")
def fill_node(tmp_path_factory):
    log = tmp_path_factory.mktemp("node") / "node.log"
    namespace = f"/fill_test_{id(object()) % 100000}"
    parameters = {"publish_depth_mm": True, "diagnostics_period": 0.2}
    with running_node("depth_fill_node", "depth_fill.yaml", namespace, log, parameters) as (
        node,
        client,
        collector,
    ):
        yield node, client, collector, log


def test_every_output_published_with_encodings_frames_and_stamps(fill_node):
    node, client, collector, log = fill_node
    frame = make_frame(0)
    results = list(client.run([frame], timeout_s=20.0))
    assert results[0].depth is not None, log.read_text()
    stamp = frame.stamp_ns
    assert collector.spin_until(
        lambda: all(
            by_stamp(collector.msgs[t], stamp) is not None
            for t in (
                "depth_completed/image",
                "depth_completed/image_mm",
                "depth_completed/points",
                "depth_completed/camera_info",
                "depth_completed/status",
            )
        )
    )
    expected = fill_nearest(frame.depth)

    depth_msg = by_stamp(collector.msgs["depth_completed/image"], stamp)
    assert depth_msg.encoding == "32FC1"
    assert depth_msg.header.frame_id == "cam_color_optical_frame"
    np.testing.assert_array_equal(depth_image_to_metres(depth_msg), expected)

    mm_msg = by_stamp(collector.msgs["depth_completed/image_mm"], stamp)
    assert mm_msg.encoding == "16UC1"
    np.testing.assert_array_equal(
        np.frombuffer(bytes(mm_msg.data), np.uint16).reshape(H, W), depth_to_mm(expected)
    )

    cloud = by_stamp(collector.msgs["depth_completed/points"], stamp)
    assert (cloud.height, cloud.width, cloud.point_step, cloud.is_dense) == (H, W, 32, False)
    assert [(f.name, f.offset) for f in cloud.fields] == [("x", 0), ("y", 4), ("z", 8), ("rgb", 16)]
    pts = pointcloud2_to_array(cloud)
    v, u = np.mgrid[0:H, 0:W]
    np.testing.assert_allclose(pts["z"], expected, rtol=1e-6)
    np.testing.assert_allclose(pts["x"], (u - INTR.cx) * expected / INTR.fx, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pts["y"], (v - INTR.cy) * expected / INTR.fy, rtol=1e-5, atol=1e-6)
    raw = np.frombuffer(bytes(cloud.data), np.uint8).reshape(H, W, 32)
    np.testing.assert_array_equal(raw[..., 16:19], frame.rgb[..., ::-1])  # B, G, R

    info = by_stamp(collector.msgs["depth_completed/camera_info"], stamp)
    np.testing.assert_allclose(np.asarray(info.k).reshape(3, 3), INTR.K)

    status = by_stamp(collector.msgs["depth_completed/status"], stamp)
    assert status.model_id == "classical/nearest"
    assert status.input_valid_ratio == pytest.approx(np.isfinite(frame.depth).mean(), abs=1e-6)
    assert status.output_valid_ratio == pytest.approx(1.0)
    assert status.frames_processed >= 1


def _diagnostic_statuses(collector):
    return [
        s
        for arr in collector.msgs["/diagnostics"]
        for s in arr.status
        if "depth_fill_node" in s.name
    ]


def test_bad_input_is_reported_and_the_node_keeps_working(fill_node):
    node, client, collector, log = fill_node
    header = Header(stamp=Time(sec=42, nanosec=0), frame_id="cam_color_optical_frame")
    bad_depth = numpy_to_image(np.zeros((H, W, 3), np.uint8), "bgr8", header)  # not a depth
    client.publish_messages(
        numpy_to_image(np.zeros((H, W, 3), np.uint8), "rgb8", header),
        bad_depth,
        intrinsics_to_camera_info(INTR, header),
    )
    assert collector.spin_until(
        lambda: any(s.level == DiagnosticStatus.ERROR for s in _diagnostic_statuses(collector)),
        timeout=15.0,
    )
    error = next(s for s in _diagnostic_statuses(collector) if s.level == DiagnosticStatus.ERROR)
    assert "bgr8" in error.message
    assert node.alive()
    # The next good frame is still completed.
    frame = make_frame(5)
    results = list(client.run([frame], timeout_s=20.0))
    assert results[0].depth is not None
    np.testing.assert_array_equal(results[0].depth, fill_nearest(frame.depth))


class _GatedEngine(CompletionEngine):
    """An engine that holds its first frame until released: a model slower than the camera."""

    model_id = "test/gated"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()

    def complete(self, rgb, depth, intrinsics):
        self.started.set()
        self.release.wait(20.0)
        return CompletionResult(depth=fill_nearest(depth))


def test_slow_engine_processes_newest_frame_and_counts_skipped():
    from depth_perception.ros.nodes.depth_fill_node import DepthFillNode

    engine = _GatedEngine()

    class GatedNode(DepthFillNode):
        def make_engine(self):
            return engine

    namespace = "/gated_test"
    rclpy.init()
    node = GatedNode(namespace=namespace)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    client = ReplayClient(namespace)
    try:
        assert client.wait_for_node(20.0)
        frames = [make_frame(i) for i in range(6)]
        # SensorData QoS is best effort: under load the node's side of discovery can lag the
        # publisher's and drop the first set, so it is re-sent until the engine has it (a
        # duplicate that is matched too is skipped like any other, as counted below).
        for _ in range(5):
            client.publish(frames[0])
            if engine.started.wait(3.0):
                break
        assert engine.started.is_set()
        for f in frames[1:]:
            client.publish(f)
            client.spin_for(0.05)
        # Every set is delivered and synchronized while the engine is still busy.
        end = time.monotonic() + 15.0
        while node._sync.stats().matched < 6 and time.monotonic() < end:
            client.spin_for(0.05)
        matched = node._sync.stats().matched
        assert matched >= 6
        engine.release.set()
        last = frames[-1].stamp_ns
        end = time.monotonic() + 15.0
        while time.monotonic() < end and last not in client._status_out:
            client.executor.spin_once(timeout_sec=0.02)
        status = client._status_out[last]  # the newest frame is always processed
        assert status.frames_processed == 2
        assert status.frames_skipped == matched - 2
    finally:
        engine.release.set()
        client.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown()


def _call(client_node_ctx, request, timeout=10.0):
    client, srv = client_node_ctx
    future = srv.call_async(request)
    end = time.monotonic() + timeout
    while time.monotonic() < end and not future.done():
        client.executor.spin_once(timeout_sec=0.02)
    assert future.done(), "depth_query did not answer"
    return future.result()


def test_depth_query_service_round_trip(fill_node):
    from depth_perception_msgs.msg import Pixel
    from depth_perception_msgs.srv import DepthQuery

    node, client, collector, log = fill_node
    frame = make_frame(7)
    (result,) = list(client.run([frame], timeout_s=20.0))
    assert result.depth is not None
    srv = client.node.create_client(DepthQuery, "depth_query")
    assert srv.wait_for_service(timeout_sec=10.0)
    ctx = (client, srv)

    req = DepthQuery.Request()
    req.stamp = Time(sec=frame.stamp_ns // 10**9, nanosec=frame.stamp_ns % 10**9)
    req.pixels = [Pixel(u=30.0, v=20.0), Pixel(u=3.4, v=40.6), Pixel(u=-5.0, v=2.0)]
    resp = _call(ctx, req)
    assert resp.success, resp.message
    assert resp.header.frame_id == "cam_color_optical_frame"
    expected = fill_nearest(frame.depth)
    assert resp.depth[0] == pytest.approx(expected[20, 30])  # inside the box: 1 m
    assert resp.depth[1] == pytest.approx(expected[41, 3])  # nearest pixel centre
    assert np.isnan(resp.depth[2])  # outside the image
    p = resp.points[0]
    z = expected[20, 30]
    assert (p.x, p.y, p.z) == pytest.approx(
        ((30 - INTR.cx) * z / INTR.fx, (20 - INTR.cy) * z / INTR.fy, z), rel=1e-6
    )

    req.stamp = Time(sec=1, nanosec=0)  # never published
    resp = _call(ctx, req)
    assert not resp.success and "no completed frame" in resp.message

    req.stamp = Time()  # newest frame, with a question this node cannot answer
    req.question = "How far is the mug?"
    resp = _call(ctx, req)
    assert not resp.success and "does not answer questions" in resp.message
    assert len(resp.depth) == 3


def test_custom_messages_round_trip_over_dds():
    from depth_perception_msgs.msg import TargetPrompt, TargetPromptArray

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("prompt_round_trip", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    got: list[TargetPromptArray] = []
    node.create_subscription(TargetPromptArray, "targets_rt", got.append, reliable_qos(10))
    pub = node.create_publisher(TargetPromptArray, "targets_rt", reliable_qos(10))
    msg = TargetPromptArray()
    msg.header.frame_id = "camera_color_optical_frame"
    msg.header.stamp = Time(sec=12, nanosec=34)
    target = TargetPrompt(target_id=7, text="red mug", score=0.75)
    target.header = msg.header
    target.box.x_offset, target.box.y_offset, target.box.width, target.box.height = 10, 20, 30, 40
    msg.targets = [target, TargetPrompt(target_id=8, text="bottle")]
    try:
        end = time.monotonic() + 10.0
        while not got and time.monotonic() < end:
            pub.publish(msg)
            executor.spin_once(timeout_sec=0.1)
        assert got, "no TargetPromptArray came back"
        back = got[0]
        assert back.header.stamp.sec == 12 and back.header.stamp.nanosec == 34
        assert [t.target_id for t in back.targets] == [7, 8]
        assert back.targets[0].text == "red mug"
        assert back.targets[0].score == pytest.approx(0.75)
        box = back.targets[0].box
        assert (box.x_offset, box.y_offset, box.width, box.height) == (10, 20, 30, 40)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)


def test_camera_sized_frames_cross_processes_without_loss(fill_node):
    """640x480 colour + depth from another process reach a SensorData-QoS subscriber.

    Guards the Fast DDS profile env.sh installs (config/fastdds_large_images.xml): with the
    built-in transports nearly every such frame is lost between processes.
    """
    node, client, collector, log = fill_node
    intr = Intrinsics(640, 480, fx=525.0, fy=525.0, cx=319.5, cy=239.5, frame_id="cam_optical")
    rng = np.random.default_rng(3)
    frames = []
    for i in range(3):
        depth = np.where(rng.random((480, 640)) < 0.2, np.nan, 1.5).astype(np.float32)
        rgb = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
        frames.append(RGBDFrame(2_000_000_000 + i * 10**8, rgb, depth, intr))
    results = list(client.run(frames, timeout_s=30.0))
    assert all(r.depth is not None for r in results), log.read_text()
    # A lost frame would only have come back through the re-send after timeout_s / 3.
    assert all(r.round_trip_ms < 10_000 for r in results)
    np.testing.assert_array_equal(results[-1].depth, np.full((480, 640), 1.5, np.float32))

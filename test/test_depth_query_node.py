"""depth_query_node over real DDS: DepthQuery round trips through the DepthLM node (a tiny
random Qwen2.5-VL, and one whose every answer parses, test/tiny_depthlm.py) equal the offline
engine's for the same frame and pixels; stamp 0 is the newest frame; an unknown stamp, no frame
yet, no pixels, pixels outside the image or at its border and unparsable answers say why; the
sparse-cloud mode publishes the engine's points."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus
from node_harness import INTR, Collector, by_stamp, make_frame, running_node, status_value, statuses
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from tiny_depthlm import ANSWER_M, build_fixed_answer_qwen

from depth_perception.engines.depthlm import (
    DepthLMEngine,
    DepthLMEngineConfig,
    default_depthlm_path,
)
from depth_perception.models.depthlm import build_tiny_qwen
from depth_perception.ros.conversions import (
    intrinsics_to_camera_info,
    ns_to_stamp,
    numpy_to_image,
    pointcloud2_to_array,
)
from depth_perception.ros.nodes.depth_query_node import CLOUD_TOPIC, query_grid

NAME = "depth_query_node"
TOKENS = 8
GRID = 12


class Camera(Collector):
    """A colour camera stand-in (colour + camera_info) that also collects the sparse cloud."""

    def __init__(self, namespace: str) -> None:
        super().__init__(namespace, {CLOUD_TOPIC: PointCloud2}, ready=(CLOUD_TOPIC,))
        qos = qos_profile_sensor_data
        self.pub_rgb = self.node.create_publisher(Image, "rgb/image_rect_color", qos)
        self.pub_info = self.node.create_publisher(CameraInfo, "rgb/camera_info", qos)
        self.inputs = [self.pub_rgb, self.pub_info]

    def publish(self, frame) -> None:
        header = Header(stamp=ns_to_stamp(frame.stamp_ns), frame_id=INTR.frame_id)
        self.pub_info.publish(intrinsics_to_camera_info(frame.intrinsics, header))
        self.pub_rgb.publish(numpy_to_image(frame.rgb, "rgb8", header))

    def query(self, stamp_ns: int, pixels, question: str = "", timeout: float = 30.0):
        from depth_perception_msgs.msg import Pixel
        from depth_perception_msgs.srv import DepthQuery

        client = self.node.create_client(DepthQuery, "depth_query")
        assert client.wait_for_service(timeout_sec=timeout)
        req = DepthQuery.Request()
        req.stamp = Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
        req.pixels = [Pixel(u=float(u), v=float(v)) for u, v in pixels]
        req.question = question
        future = client.call_async(req)
        end = time.monotonic() + timeout
        while time.monotonic() < end and not future.done():
            self.executor.spin_once(timeout_sec=0.02)
        assert future.done(), "depth_query did not answer"
        self.node.destroy_client(client)
        return future.result()

    def feed(self, frame, timeout: float = 30.0) -> None:
        """Publish ``frame`` until its sparse cloud comes back (the node has kept it)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.publish(frame)
            if self.spin_until(lambda: by_stamp(self.msgs[CLOUD_TOPIC], frame.stamp_ns), 10.0):
                return
        raise AssertionError(f"no sparse cloud for frame {frame.stamp_ns}")


def _engine(model_dir) -> DepthLMEngine:
    return DepthLMEngine(DepthLMEngineConfig(str(model_dir), device="cpu", max_new_tokens=TOKENS))


def _params(model_dir) -> dict:
    return {
        "checkpoint": str(model_dir),
        "device": "cpu",
        "max_new_tokens": TOKENS,
        "sparse_cloud.enabled": True,
        "sparse_cloud.every_n_frames": 1,
        "sparse_cloud.pixels": GRID,
        "diagnostics_period": 0.2,
    }


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("depthlm_node")
    return build_tiny_qwen(root / "random", f_uni=100.0), build_fixed_answer_qwen(root / "fixed")


PIXELS = [(32.0, 24.0), (20.0, 30.0), (1.0, 1.0), (64.0, 10.0), (float("nan"), 5.0)]


def test_queries_over_dds_equal_the_offline_engine(models, tmp_path):
    random_model, _ = models
    engine = _engine(random_model)
    a, b = make_frame(0), make_frame(1)
    log = tmp_path / "node.log"
    camera = Camera("/dlm")
    with running_node(
        NAME, "depth_query.yaml", "/dlm", log, _params(random_model), collector=camera
    ) as (node, _, _):
        graph = camera.node
        assert graph.count_subscribers("/dlm/rgb/image_rect_color") == 1
        assert graph.count_subscribers("/dlm/depth_registered/image_rect") == 0
        assert graph.count_publishers("/dlm/depth_completed/image") == 0  # no dense depth
        # No frame yet: a clear failure, the node keeps running.
        early = camera.query(0, PIXELS[:1])
        assert not early.success and "none yet" in early.message
        camera.feed(a)
        camera.feed(b)
        # Frame a by its stamp: exactly the offline engine's answers for the same pixels.
        res = camera.query(a.stamp_ns, PIXELS)
        assert res.success, res.message
        assert res.header.stamp.sec * 10**9 + res.header.stamp.nanosec == a.stamp_ns
        assert res.header.frame_id == INTR.frame_id
        offline = engine.query(a.rgb, a.intrinsics, PIXELS[:2])
        assert list(res.answers[:2]) == offline.text
        assert list(res.answers[2:]) == ["", "", ""]
        for i in range(2):
            ok = offline.status[i] == "ok"
            assert math.isnan(res.depth[i]) != ok
            if ok:
                assert res.depth[i] == pytest.approx(float(offline.z_m[i]))
            else:
                assert "the answer did not parse" in res.message
        # border, outside and NaN pixels: NaN and the reason, by pixel
        for i in (2, 3, 4):
            assert math.isnan(res.depth[i]) and math.isnan(res.answer_metres[i])
            assert math.isnan(res.points[i].x)
        assert "pixel 2 (1, 1): too close to the image border for the marker" in res.message
        assert "pixel 3 (64, 10): outside the 64x48 image" in res.message
        assert "pixel 4 (nan, 5): outside" in res.message
        # stamp 0 is the newest frame (b), answered from b's image
        newest = camera.query(0, PIXELS[:2])
        assert newest.header.stamp.sec * 10**9 + newest.header.stamp.nanosec == b.stamp_ns
        assert list(newest.answers) == engine.query(b.rgb, b.intrinsics, PIXELS[:2]).text
        # a free question about each pixel: the model's text for that pixel, marked
        question = "What is under the red arrow?"
        free = camera.query(b.stamp_ns, PIXELS[:1], question)
        assert free.success and list(free.answers) == [
            engine.ask(b.rgb, b.intrinsics, PIXELS[0], question).text
        ]
        # unknown stamp, no pixels: success false with the reason; the node keeps serving
        unknown = camera.query(b.stamp_ns + 1, PIXELS[:1])
        assert not unknown.success
        assert f"no frame with stamp {b.stamp_ns + 1} ns; have 2 from {a.stamp_ns}" in (
            unknown.message
        )
        empty = camera.query(0, [])
        assert not empty.success and empty.message == "no pixels given"
        assert camera.query(0, PIXELS[:1]).success
        # /diagnostics: the node reports its frames at OK with its counters
        assert camera.spin_until(lambda: bool(statuses(camera, NAME)))
        ok = [s for s in statuses(camera, NAME) if s.message == "answering pixel queries"]
        assert ok and ok[-1].level == DiagnosticStatus.OK, statuses(camera, NAME)
        assert status_value(ok[-1], "clouds_published") in ("1", "2")
        assert node.alive(), log.read_text()


def test_answered_points_and_the_sparse_cloud(models, tmp_path):
    _, fixed = models
    engine = _engine(fixed)
    frame = make_frame(2)
    log = tmp_path / "node.log"
    camera = Camera("/dlm_fixed")
    with running_node(
        NAME, "depth_query.yaml", "/dlm_fixed", log, _params(fixed), collector=camera
    ) as (node, _, _):
        camera.feed(frame)
        res = camera.query(0, PIXELS[:2])
        assert res.success and res.message == "2 of 2 pixels answered", res.message
        assert list(res.answer_metres) == [ANSWER_M, ANSWER_M]
        # the point is the answered range along the unit ray; depth is its z
        u, v = PIXELS[1]
        xn, yn = (u - INTR.cx) / INTR.fx, (v - INTR.cy) / INTR.fy
        norm = math.sqrt(xn * xn + yn * yn + 1.0)
        p = res.points[1]
        assert (p.x, p.y, p.z) == pytest.approx(
            (ANSWER_M * xn / norm, ANSWER_M * yn / norm, ANSWER_M / norm), rel=1e-5
        )
        assert res.depth[1] == pytest.approx(ANSWER_M / norm, rel=1e-6)
        # the sparse cloud of the frame: the engine's points on the grid
        msg = by_stamp(camera.msgs[CLOUD_TOPIC], frame.stamp_ns)
        assert msg.header.frame_id == INTR.frame_id and msg.height == 1
        cloud = pointcloud2_to_array(msg).reshape(-1)
        assert [f.name for f in msg.fields] == ["x", "y", "z"]
        expected = engine.query(frame.rgb, frame.intrinsics, query_grid(64, 48, GRID))
        ok = expected.ok
        assert 0 < ok.sum() == cloud.size
        got = np.stack([cloud[c] for c in "xyz"], axis=1)
        np.testing.assert_allclose(got, expected.points[ok], rtol=1e-6)
        assert node.alive(), log.read_text()


def test_without_a_checkpoint_the_shipped_model_answers_or_the_node_says_why(tmp_path):
    """``checkpoint`` empty: the shipped models/depthlm_small answers as the offline engine
    does; in an install without it the node stops with one line naming the path."""
    if not default_depthlm_path().exists():
        from node_harness import failed_node_log

        text = failed_node_log(NAME, "/dlm_none", {}, tmp_path / "node.log", timeout=60)
        assert f"no DepthLM model at {default_depthlm_path()}" in text
        return
    params = {"device": "cpu", "diagnostics_period": 0.2, "sparse_cloud.enabled": True}
    params.update({"sparse_cloud.every_n_frames": 1, "sparse_cloud.pixels": GRID})
    frame = make_frame(0)
    camera = Camera("/dlm_default")
    log = tmp_path / "node.log"
    with running_node(NAME, "depth_query.yaml", "/dlm_default", log, params, collector=camera) as (
        node,
        _,
        _,
    ):
        camera.feed(frame)
        res = camera.query(frame.stamp_ns, PIXELS[:2])
        assert res.success, res.message
        engine = DepthLMEngine(DepthLMEngineConfig(str(default_depthlm_path()), device="cpu"))
        assert list(res.answers) == engine.query(frame.rgb, frame.intrinsics, PIXELS[:2]).text
        assert node.alive(), log.read_text()


def test_query_grid():
    grid = query_grid(64, 48, 12)
    assert grid.shape == (12, 2)  # 4 x 3 cells of the 4:3 image
    assert sorted(set(grid[:, 0])) == [8.0, 24.0, 40.0, 56.0]
    assert sorted(set(grid[:, 1])) == [8.0, 24.0, 40.0]

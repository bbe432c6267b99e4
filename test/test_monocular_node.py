"""monocular_depth_node over real DDS: a recorded bag's colour + camera_info -> the MetricAnything
student -> metric depth (and cloud, status, diagnostics, depth_query) equal to the offline
engine's; no depth topic subscribed; the constant-median baseline through the same node; a node
that cannot load its checkpoint says which in one line."""

from __future__ import annotations

import time

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus
from node_harness import assert_depths, by_stamp, ma_node_parameters, recorded_frames, running_node
from tiny_metric_anything import save_tiny_student

from depth_perception.engines.metric_anything import (
    MetricAnythingStudentConfig,
    MetricAnythingStudentEngine,
)
from depth_perception.eval.evaluate import pipeline_frames, run_offline
from depth_perception.eval.pipelines import get_pipeline
from depth_perception.models.checkpoints import weights_digest
from depth_perception.paths import config_file
from depth_perception.ros.conversions import pointcloud2_to_array
from depth_perception.ros.launcher import NodeProcess
from depth_perception.sim.sequence import SequenceConfig

NAME = "monocular_depth_node"


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """A small recorded tabletop bag, read back as eval-bag reads it."""
    cfg = SequenceConfig(scene_kind="tabletop", seed=5, n_frames=3, fps=10.0, width=80, height=60)
    return recorded_frames(tmp_path_factory.mktemp("bags") / "tabletop", cfg)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return save_tiny_student(tmp_path_factory.mktemp("ma") / "student")


def _query(client, stamp_ns, pixels, timeout=10.0):
    from depth_perception_msgs.msg import Pixel
    from depth_perception_msgs.srv import DepthQuery

    srv = client.node.create_client(DepthQuery, "depth_query")
    assert srv.wait_for_service(timeout_sec=timeout)
    req = DepthQuery.Request()
    req.stamp = Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    req.pixels = [Pixel(u=float(u), v=float(v)) for u, v in pixels]
    future = srv.call_async(req)
    end = time.monotonic() + timeout
    while time.monotonic() < end and not future.done():
        client.executor.spin_once(timeout_sec=0.02)
    assert future.done(), "depth_query did not answer"
    return future.result()


def test_colour_only_over_dds_equals_the_offline_student(frames, student, one_thread, tmp_path):
    pipeline = get_pipeline("ma_student", str(student))
    assert pipeline.executable == NAME and pipeline.roles == ("rgb", "rgb_info")
    engine = MetricAnythingStudentEngine(
        MetricAnythingStudentConfig(str(student), device="cpu", num_threads=one_thread)
    )
    fed = list(pipeline_frames(pipeline, frames))
    assert all(inputs.depth is None and inputs.prompt is None for _, inputs in fed)
    expected = [run_offline(engine, inputs).depth for _, inputs in fed]
    assert all(np.isfinite(e).all() for e in expected)
    log = tmp_path / "node.log"
    params = ma_node_parameters(pipeline, one_thread, diagnostics_period=0.2)
    with running_node(NAME, "monocular_depth.yaml", "/mono", log, params, roles=pipeline.roles) as (
        node,
        client,
        collector,
    ):
        graph = collector.node
        assert graph.count_subscribers("/mono/rgb/image_rect_color") == 1
        assert graph.count_subscribers("/mono/rgb/camera_info") == 1
        for topic in ("depth_registered/image_rect", "lidar/points", "radar/points"):
            assert graph.count_subscribers(f"/mono/{topic}") == 0, topic
        results = list(client.run(frames, timeout_s=60.0))
        assert_depths(results, expected, log)
        status = results[-1].status
        assert status.model_id == engine.model_id
        assert status.input_valid_ratio == 0.0  # no metric input: colour alone
        # The organized cloud: the depth back-projected with the camera's intrinsics.
        last = frames[-1]
        assert collector.spin_until(
            lambda: by_stamp(collector.msgs["depth_completed/points"], last.stamp_ns) is not None
        )
        cloud = pointcloud2_to_array(
            by_stamp(collector.msgs["depth_completed/points"], last.stamp_ns)
        )
        assert cloud.shape == expected[-1].shape
        np.testing.assert_allclose(cloud["z"], expected[-1], rtol=1e-6)
        v, u = 20, 30
        intr = last.intrinsics
        assert cloud["x"][v, u] == pytest.approx((u - intr.cx) * expected[-1][v, u] / intr.fx)
        # depth_query answers from the published depth.
        resp = _query(client, last.stamp_ns, [(u, v)])
        assert resp.success, resp.message
        assert resp.depth[0] == pytest.approx(expected[-1][v, u])

        # /diagnostics: the node reports, at OK.
        def statuses():
            return [s for a in collector.msgs["/diagnostics"] for s in a.status if NAME in s.name]

        # (Publications from before the first frame say STALE: wait for one after it.)
        def reported():
            return [s for s in statuses() if s.level != DiagnosticStatus.STALE]

        assert collector.spin_until(lambda: bool(reported())), [s.message for s in statuses()]
        assert reported()[-1].level == DiagnosticStatus.OK, [s.message for s in reported()]
        assert node.alive(), log.read_text()


def test_the_constant_median_baseline_through_the_same_node(frames, student, tmp_path):
    """constant_median over DDS: the training median (from the student's config.json, written
    by training/) everywhere, from monocular_depth_node's constant_depth parameter."""
    import json

    config = json.loads((student / "config.json").read_text())
    config["train_median_depth_m"] = 1.75
    directory = tmp_path / "student"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config))
    pipeline = get_pipeline("constant_median", str(directory))
    assert pipeline.node_parameters == {"constant_depth": 1.75}
    log = tmp_path / "node.log"
    with running_node(
        NAME, "monocular_depth.yaml", "/mono_c", log, pipeline.node_parameters, roles=pipeline.roles
    ) as (_, client, _collector):
        (res,) = list(client.run(frames[:1], timeout_s=30.0))
    assert res.depth is not None and (res.depth == np.float32(1.75)).all(), log.read_text()
    assert res.status.model_id == "constant/1.75m"
    assert "an evaluation baseline, not a model" in log.read_text()


def test_a_missing_checkpoint_stops_the_node_with_one_line(tmp_path):
    # (The shipped default student: test_ma_student.py.)
    missing = tmp_path / "nope" / "student_depthmap.pt"
    params = {"checkpoint": str(missing)}
    log = tmp_path / "node.log"
    node = NodeProcess(
        NAME, params_file=config_file("monocular_depth.yaml"), parameters=params, log_path=log
    ).start()
    node.process.wait(timeout=60)
    text = log.read_text()
    assert node.process.returncode == 1, text
    errors = [line for line in text.splitlines() if "[FATAL]" in line or "[ERROR]" in line]
    assert len(errors) == 1 and str(missing) in errors[0], text
    assert "Traceback" not in text


def test_the_student_as_the_teachers_prior_over_dds(frames, student, one_thread, tmp_path):
    """ma_teacher_lidar_student_prior: prompted_depth_node given prior:=ma_student:<dir> gives
    the offline engine's depth (the prior parameter reaches the node as a string)."""
    from tiny_metric_anything import save_tiny_teacher

    from depth_perception.engines.metric_anything import (
        MetricAnythingTeacherConfig,
        MetricAnythingTeacherEngine,
    )

    teacher = save_tiny_teacher(tmp_path / "teacher", prompt_std=1.0)
    pipeline = get_pipeline("ma_teacher_lidar_student_prior", str(student), teacher=str(teacher))
    assert pipeline.roles == ("rgb", "rgb_info", "lidar")
    engine = MetricAnythingTeacherEngine(
        MetricAnythingTeacherConfig(
            str(teacher), prior=f"ma_student:{student}", device="cpu", num_threads=one_thread
        )
    )
    fed = list(pipeline_frames(pipeline, frames))
    expected = [run_offline(engine, inputs).depth for _, inputs in fed]
    log = tmp_path / "node.log"
    params = ma_node_parameters(pipeline, one_thread)
    with running_node(
        "prompted_depth_node", "prompted_depth.yaml", "/ma_sp", log, params, roles=pipeline.roles
    ) as (_, client, _collector):
        results = list(client.run(frames, timeout_s=60.0))
    assert_depths(results, expected, log)
    assert results[-1].status.model_id == engine.model_id
    prior_id = f"+prior:metric-anything-student/student@{weights_digest(student)}"
    assert results[-1].status.model_id.endswith(prior_id)

"""prompted_depth_node over real DDS: a recorded bag's LiDAR + colour + camera_info (+ the
rig's /tf_static) -> the MetricAnything teacher -> dense depth equal to the offline engine's;
synthetic test-time prompts published as the depth reach the node exactly as offline."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from node_harness import (
    assert_depths,
    failed_node_log,
    ma_node_parameters,
    publish_images,
    recorded_frames,
    running_node,
    status_value,
    statuses,
    wait_output,
)
from std_msgs.msg import Header
from tiny_metric_anything import save_tiny_teacher

from depth_perception.engines.metric_anything import (
    MetricAnythingTeacherConfig,
    MetricAnythingTeacherEngine,
)
from depth_perception.eval.evaluate import pipeline_frames, run_offline
from depth_perception.eval.pipelines import get_pipeline
from depth_perception.ros.conversions import (
    array_to_pointcloud2,
    ns_to_stamp,
)
from depth_perception.ros.launcher import NodeProcess
from depth_perception.ros.replay import ReplayClient
from depth_perception.sim.sequence import SequenceConfig


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """A recorded street bag (colour, depth, camera_info, LiDAR, radar, /tf_static) read back
    as eval-bag reads it: each frame carries its scans and the bag's calibration."""
    cfg = SequenceConfig(
        scene_kind="street", seed=2, n_frames=3, fps=10.0, width=96, height=72, radar=True
    )
    return recorded_frames(tmp_path_factory.mktemp("bags") / "street", cfg, lidar=True)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return save_tiny_teacher(tmp_path_factory.mktemp("ma") / "teacher", prompt_std=1.0)


def test_lidar_prompt_over_dds_equals_the_offline_teacher(frames, teacher, one_thread, tmp_path):
    # The node's default: the output refitted to the LiDAR prompt.
    pipeline = get_pipeline("ma_teacher_lidar_aligned", checkpoint=str(teacher))
    assert pipeline.executable == "prompted_depth_node"
    assert pipeline.roles == ("rgb", "rgb_info", "lidar")
    assert pipeline.node_parameters["output_alignment"] == "global"
    engine = MetricAnythingTeacherEngine(
        MetricAnythingTeacherConfig(
            checkpoint=str(teacher),
            device="cpu",
            num_threads=one_thread,
            output_alignment="global",
        )
    )
    fed = pipeline_frames(pipeline, frames)
    expected = [run_offline(engine, inputs).depth for _, inputs in fed]
    assert all(np.isfinite(e).all() for e in expected)
    log = tmp_path / "node.log"
    params = ma_node_parameters(pipeline, one_thread, diagnostics_period=0.2)
    name = "prompted_depth_node"
    with running_node(
        name, "prompted_depth.yaml", "/ma_lidar", log, params, roles=pipeline.roles
    ) as (node, client, collector):
        graph = collector.node
        assert graph.count_subscribers("/ma_lidar/depth_registered/image_rect") == 0
        assert graph.count_subscribers("/ma_lidar/lidar/points") == 1
        assert graph.count_subscribers("/ma_lidar/radar/points") == 0
        results = list(client.run(frames, timeout_s=60.0))
        assert_depths(results, expected, log)
        status = results[-1].status
        assert status.model_id == engine.model_id
        assert "lingbot-depth" in status.model_id  # the default prior
        assert 0 < status.input_valid_ratio < 0.5  # the sparse LiDAR prompt

        # A frame 2 s after the last scan: no fresh prompt. Counted, "no depth" with a WARN,
        # answered at once (the camera stream never waits for the LiDAR).
        last = frames[-1]
        late = last.stamp_ns + 2 * 10**9
        t0 = time.monotonic()
        publish_images(client, last, late)
        out = wait_output(collector, late, timeout=20.0)
        assert time.monotonic() - t0 < 10.0
        assert np.isnan(out).all()

        def counted():
            return [
                s
                for s in statuses(collector, name)
                if status_value(s, "frames_without_prompt") == "1"
            ]

        assert collector.spin_until(lambda: bool(counted()))
        warn = counted()[0]
        assert warn.level == DiagnosticStatus.WARN

        # A malformed scan (every point NaN): a named ERROR on /diagnostics, no depth, and the
        # node keeps serving.
        bad = frames[0].extra["lidar"].copy()
        bad["x"] = np.nan
        t_bad = late + 10**8
        header = Header(stamp=ns_to_stamp(t_bad), frame_id=frames[0].extra["lidar_frame_id"])
        client.publish_cloud("lidar", array_to_pointcloud2(bad, header))
        client.spin_for(0.05)
        publish_images(client, frames[0], t_bad)
        assert np.isnan(wait_output(collector, t_bad, timeout=20.0)).all()
        assert collector.spin_until(
            lambda: any(
                "have NaN" in s.message for s in statuses(collector, name, DiagnosticStatus.ERROR)
            )
        ), [s.message for s in statuses(collector, name)]
        assert node.alive(), log.read_text()
        again = replace(frames[1], stamp_ns=t_bad + 10**8)
        (res,) = client.run([again], timeout_s=30.0)
        np.testing.assert_array_equal(res.depth, expected[1])


def test_a_synthetic_prompt_reaches_the_node_as_offline(frames, tmp_path):
    """jbu_extreme: 100 ground-truth pixels, published as the depth image (32FC1: far street
    depth too) and taken by the node as its sensor_depth prompt, give the offline engine's
    depth exactly."""
    pipeline = get_pipeline("jbu_extreme")
    assert pipeline.roles == ("rgb", "rgb_info", "depth")
    assert pipeline.node_parameters["prompt_sources"] == ["sensor_depth"]
    assert pipeline.depth_encoding == "32FC1"
    # The street twice as deep: prompt points beyond the 65.535 m a 16UC1 image can carry.
    far = [replace(f, gt_depth=2.0 * f.gt_depth) for f in frames]
    fed = list(pipeline_frames(pipeline, far))
    engine = pipeline.make_engine()
    expected = [run_offline(engine, inputs).depth for _, inputs in fed]
    for frame, inputs in fed:
        np.testing.assert_array_equal(frame.depth, inputs.prompt)  # the prompt is the depth
        assert np.isfinite(inputs.prompt).sum() == 100
    assert max(np.nanmax(inputs.prompt) for _, inputs in fed) > 65.535  # beyond 16UC1
    log = tmp_path / "node.log"
    namespace = "/ma_down16"
    params = {**pipeline.node_parameters, "diagnostics_period": 0.2}
    node = NodeProcess(
        pipeline.executable,
        params_file=pipeline.params_path,
        namespace=namespace,
        parameters=params,
        log_path=log,
    )
    client = ReplayClient(namespace, roles=pipeline.roles, depth_encoding=pipeline.depth_encoding)
    with node, client:
        assert client.wait_for_node(30.0), log.read_text()
        results = list(client.run([frame for frame, _ in fed], timeout_s=20.0))
    assert_depths(results, expected, log)


def test_a_missing_checkpoint_stops_the_node_with_one_line(tmp_path):
    text = failed_node_log(
        "prompted_depth_node",
        "/ma_bad",
        {"checkpoint": "/nope/ma_teacher", "device": "cpu"},
        tmp_path / "node.log",
        60,
    )
    assert "MetricAnything teacher checkpoint /nope/ma_teacher does not exist" in text

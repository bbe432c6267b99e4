"""The node base subscribes to what the engine declares: depth_fill_node's ``jbu`` on a LiDAR
(and radar) prompt, over real DDS, fed from a recorded bag, against the offline engine."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from node_harness import (
    H,
    W,
    assert_depths,
    failed_node_log,
    make_frame,
    publish_images,
    recorded_frames,
    running_node,
    status_value,
    statuses,
    wait_output,
)
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from std_msgs.msg import Header

from depth_perception.engines.base import (
    PROMPT_INPUTS,
    CompletionResult,
    Engine,
    EngineInputs,
    FrameInputs,
)
from depth_perception.eval.evaluate import (
    FrameInputsBuilder,
    pipeline_frames,
    run_offline,
)
from depth_perception.eval.pipelines import get_pipeline
from depth_perception.io.calibration import save_calibration
from depth_perception.ros.conversions import (
    array_to_pointcloud2,
    ns_to_stamp,
)
from depth_perception.ros.nodes.depth_fill_node import DepthFillNode
from depth_perception.ros.replay import ReplayClient
from depth_perception.sim.sequence import SequenceConfig

NODE = "depth_fill_node"


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """A recorded bag (colour, depth, camera_info, LiDAR, radar, /tf_static, calibration.yaml),
    read back as eval-bag reads it: each frame carries its scans and the bag's calibration."""
    cfg = SequenceConfig(
        scene_kind="tabletop", seed=5, n_frames=4, fps=10.0, width=96, height=72, radar=True
    )
    return recorded_frames(tmp_path_factory.mktemp("bags") / "lidar_radar", cfg, lidar=True)


def _without_calibration(frame):
    return replace(frame, extra={k: v for k, v in frame.extra.items() if k != "calibration"})


def test_lidar_prompt_from_tf_static_equals_offline_and_stale_scans_never_block(frames, tmp_path):
    pipeline = get_pipeline("jbu_lidar")
    engine = pipeline.make_engine()
    fed = pipeline_frames(pipeline, frames)
    expected = [run_offline(engine, inputs).depth for _, inputs in fed]
    assert all(np.isfinite(e).mean() > 0.9 for e in expected)
    log = tmp_path / "node.log"
    params = {**pipeline.node_parameters, "diagnostics_period": 0.2}
    with running_node(
        "depth_fill_node", "depth_fill.yaml", "/prompt_tf", log, params, roles=pipeline.roles
    ) as (node, client, collector):
        # The node takes colour, camera_info and the LiDAR; no depth (jbu declares a prompt).
        graph = collector.node
        assert graph.count_subscribers("/prompt_tf/depth_registered/image_rect") == 0
        assert graph.count_subscribers("/prompt_tf/lidar/points") == 1
        assert graph.count_subscribers("/tf_static") >= 1

        # Before any /tf_static: the scan cannot be placed; said so, and the frame still goes.
        early = _without_calibration(replace(frames[0], stamp_ns=frames[0].stamp_ns - 10**9))
        (result,) = client.run([early], timeout_s=10.0)
        assert result.depth is not None and np.isnan(result.depth).all()
        assert collector.spin_until(lambda: statuses(collector, NODE, DiagnosticStatus.ERROR))
        error = statuses(collector, NODE, DiagnosticStatus.ERROR)[0]
        assert "no transform from 'lidar_link'" in error.message, error.message
        assert "frames known: none yet" in error.message

        # The bag's frames: scans + /tf_static from the recording -> exactly the offline engine.
        results = list(client.run(frames, timeout_s=20.0))
        assert_depths(results, expected, log)
        status = results[-1].status
        assert status.model_id == "classical/jbu"
        assert 0 < status.input_valid_ratio < 0.5  # the prompt is the sparse input

        # A frame 2 s after the last scan: no fresh prompt. Counted, published as "no depth"
        # with a WARN, and answered at once (the camera stream never waits for the LiDAR).
        last = frames[-1]
        late = last.stamp_ns + 2 * 10**9
        t0 = time.monotonic()
        publish_images(client, last, late)
        out = wait_output(collector, late)
        assert time.monotonic() - t0 < 5.0
        assert np.isnan(out).all()
        assert collector.spin_until(
            lambda: any(
                status_value(s, "frames_without_prompt") == "2" for s in statuses(collector, NODE)
            )  # the early frame and this one
        )
        warn = next(
            s for s in statuses(collector, NODE) if status_value(s, "frames_without_prompt") == "2"
        )
        assert warn.level == DiagnosticStatus.WARN
        assert "newest scan is 2.000 s older than the frame" in warn.message, warn.message

        # The next frame with its scan is completed again.
        again = replace(frames[1], stamp_ns=late + 10**8)
        (res,) = client.run([again], timeout_s=10.0)
        np.testing.assert_array_equal(res.depth, expected[1])
        ok = [
            s for s in statuses(collector, NODE) if status_value(s, "lidar_points_used") is not None
        ]
        assert int(status_value(ok[-1], "lidar_discarded_behind")) > 0  # a 360° scan, half behind
        assert node.alive()


def test_lidar_and_radar_with_a_calibration_file_and_malformed_clouds(frames, tmp_path):
    calibration = frames[0].extra["calibration"]
    cal_file = save_calibration(calibration, tmp_path / "rig.yaml")
    sources = ("lidar", "radar")
    build = FrameInputsBuilder(PROMPT_INPUTS, sources)
    expected = [
        run_offline(get_pipeline("jbu_lidar").make_engine(), build(f)).depth for f in frames
    ]
    params = {
        "method": "jbu",
        "prompt_sources": list(sources),
        "calibration_file": str(cal_file),
        "diagnostics_period": 0.2,
    }
    log = tmp_path / "node.log"
    roles = ("rgb", "rgb_info", "lidar", "radar")
    plain = [_without_calibration(f) for f in frames]  # nothing on /tf_static: the file only
    with running_node(
        "depth_fill_node", "depth_fill.yaml", "/prompt_cal", log, params, roles=roles
    ) as (node, client, collector):
        results = list(client.run(plain, timeout_s=20.0))
        for res, exp in zip(results, expected, strict=True):
            np.testing.assert_array_equal(res.depth, exp)
        assert "extrinsics from calibration_file" in log.read_text()

        frame = frames[0]
        stamp = frame.stamp_ns + 5 * 10**9
        good = frame.extra["lidar"]
        nan_cloud = good.copy()
        nan_cloud["x"] = np.nan
        no_z = np.zeros(10, [("x", "<f4"), ("y", "<f4"), ("intensity", "<f4")])
        cases = [
            ("empty", good[:0], "lidar_link", "the cloud is empty"),
            ("nan", nan_cloud, "lidar_link", f"all {len(good)} points have NaN"),
            ("no z", no_z, "lidar_link", "no z field(s); its fields are ['x', 'y', 'intensity']"),
            ("unknown frame", good, "velodyne", "no transform from 'velodyne'"),
            ("no frame_id", good, "", "the cloud has no header.frame_id"),
        ]
        for i, (name, cloud, frame_id, text) in enumerate(cases):
            t = stamp + i * 10**8
            header = Header(stamp=ns_to_stamp(t), frame_id=frame_id)
            client.publish_cloud("lidar", array_to_pointcloud2(cloud, header))
            client.spin_for(0.05)
            publish_images(client, frame, t)
            out = wait_output(collector, t)
            assert np.isnan(out).all(), name  # no usable source: "no depth", not a crash
            assert collector.spin_until(
                lambda text=text: any(
                    text in s.message for s in statuses(collector, NODE, DiagnosticStatus.ERROR)
                )
            ), (name, [s.message for s in statuses(collector, NODE)])
            assert node.alive(), log.read_text()
        error = next(s for s in statuses(collector, NODE) if "velodyne" in s.message)
        assert "lidar prompt (/prompt_cal/lidar/points)" in error.message
        assert "calibration_file" in error.message
        # Still serving: a good frame afterwards equals the offline engine.
        (res,) = client.run([replace(plain[2], stamp_ns=stamp + 10**9)], timeout_s=10.0)
        shifted = FrameInputsBuilder(PROMPT_INPUTS, sources)(frames[2])
        np.testing.assert_array_equal(
            res.depth, run_offline(get_pipeline("jbu_lidar").make_engine(), shifted).depth
        )


@pytest.mark.parametrize(
    "params, text",
    [
        ({"method": "jbu"}, "needs a prompt: set prompt_sources"),
        ({"method": "nearest", "prompt_sources": ["lidar"]}, "takes no prompt"),
        ({"method": "jbu", "prompt_sources": ["sonar"]}, "unknown ['sonar']"),
        (
            {"method": "jbu", "prompt_sources": ["lidar"], "calibration_file": "/nope.yaml"},
            "calibration_file /nope.yaml",
        ),
        ({"method": "jbu", "prompt_sources": ["lidar"], "max_prompt_age": 0.0}, "max_prompt_age"),
    ],
)
def test_prompt_parameters_that_cannot_work_stop_the_node_with_one_line(params, text, tmp_path):
    assert text in failed_node_log(NODE, "/bad_prompt", params, tmp_path / "node.log", 30)


class _PromptRecorder(Engine):
    """Records what it is given; depth = the prompt where it has one, 1 m elsewhere (7 m
    without any prompt)."""

    model_id = "test/prompt_recorder"

    def __init__(self, optional: bool) -> None:
        self.inputs = EngineInputs(colour=True, prompt=True, prompt_optional=optional)
        self.seen: list[FrameInputs] = []

    def run(self, frame: FrameInputs) -> CompletionResult:
        self.seen.append(frame)
        if frame.prompt is None:
            return CompletionResult(depth=np.full(frame.shape, 7.0, np.float32))
        return CompletionResult(depth=np.where(np.isfinite(frame.prompt), frame.prompt, 1.0))


@pytest.mark.parametrize("optional", [True, False])
def test_sensor_depth_prompt_and_the_policy_for_frames_without_a_prompt(optional):
    """prompt_sources: [sensor_depth] subscribes to the depth topic for the prompt only (the
    engine declares no depth); a frame whose depth has no valid pixel has no prompt: a
    prompt-optional engine runs without one, any other is not called and "no depth" goes out."""
    engine = _PromptRecorder(optional)

    class Node(DepthFillNode):
        def make_engine(self):
            return engine

    namespace = f"/prompt_policy_{int(optional)}"
    rclpy.init()
    node = Node(
        namespace=namespace,
        parameter_overrides=[
            Parameter("prompt_sources", Parameter.Type.STRING_ARRAY, ["sensor_depth"])
        ],
    )
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    client = ReplayClient(namespace)  # colour, depth, camera_info
    try:
        assert client.wait_for_node(20.0)
        assert node.roles == ("rgb", "rgb_info", "depth")
        frame = make_frame(0)
        blind = replace(make_frame(1), depth=np.full((H, W), np.nan, np.float32))
        first, second = client.run([frame, blind], timeout_s=15.0)
        # The prompt is the sensor depth as published (16UC1 mm), NaN where it had holes.
        np.testing.assert_array_equal(
            first.depth, np.where(np.isnan(frame.depth), 1.0, frame.depth)
        )
        got = engine.seen[0]
        assert got.depth is None and got.rgb is not None
        np.testing.assert_array_equal(got.prompt, frame.depth)
        assert got.prompt_report["sensor_depth_pixels"] == np.isfinite(frame.depth).sum()
        assert first.status.input_valid_ratio == pytest.approx(np.isfinite(frame.depth).mean())
        if optional:
            assert len(engine.seen) == 2 and engine.seen[1].prompt is None
            np.testing.assert_array_equal(second.depth, np.full((H, W), 7.0, np.float32))
        else:
            assert len(engine.seen) == 1
            assert np.isnan(second.depth).all()
        assert node._frames_without_prompt == 1
    finally:
        client.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown()

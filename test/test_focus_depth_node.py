"""focus_depth_node over real DDS: targets + colour + reference depth + camera_info -> the
refined depth, target geometry, target cloud, mask and markers equal to the offline
FocusDepthEngine's on the same inputs (one torch thread both sides: bit-identical); stale
targets, targets drawn on another frame and a zero-area box are named ERRORs on /diagnostics,
counted, and the node keeps serving."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from depth_perception_msgs.msg import TargetGeometryArray
from diagnostic_msgs.msg import DiagnosticStatus
from node_harness import (
    COMPLETION_OUTPUTS,
    Collector,
    assert_depths,
    by_stamp,
    failed_node_log,
    running_node,
    status_value,
    statuses,
)
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Header
from test_focusdepth_engine import CAR, INTR, make_frame, save_tiny_focusdepth
from visualization_msgs.msg import Marker, MarkerArray

from depth_perception.core.depth import depth_from_mm, depth_to_mm
from depth_perception.engines.base import FrameInputs, input_roles
from depth_perception.engines.focusdepth import (
    FOCUS_INPUTS,
    FocusDepthEngine,
    FocusDepthEngineConfig,
    default_focusdepth_path,
)
from depth_perception.io.bag import targets_to_msg
from depth_perception.io.frames import RGBDFrame, Target
from depth_perception.ros.conversions import (
    depth_image_to_metres,
    image_to_numpy,
    intrinsics_to_camera_info,
    metres_to_depth_image,
    ns_to_stamp,
    numpy_to_image,
    pointcloud2_to_array,
)
from depth_perception.ros.replay import ReplayClient

NAME = "focus_depth_node"
NS = "/focus"
TARGET_OUTPUTS = {
    "targets/geometry": TargetGeometryArray,
    "targets/cloud": PointCloud2,
    "targets/mask": Image,
    "targets/markers": MarkerArray,
}
T0 = 1_700_000_000_000_000_000


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_focusdepth(tmp_path_factory.mktemp("focusdepth"))


def _frames(engine) -> list[RGBDFrame]:
    """Two frames whose reference depth a 16UC1 camera can carry exactly (whole mm)."""
    out = []
    for i in range(2):
        rgb, reference = make_frame(engine, seed=10 + i)
        out.append(
            RGBDFrame(
                stamp_ns=T0 + i * 100_000_000,
                rgb=rgb,
                depth=depth_from_mm(depth_to_mm(reference)),
                intrinsics=INTR,
                extra={"targets": [CAR, Target(2, "person", (0, 0, 0, 0))]},
            )
        )
    return out


def _publish(client, frame, stamp_ns, targets_msg):
    """A targets message, then the frame's images at ``stamp_ns``."""
    header = Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame.frame_id)
    client.publish_targets(targets_msg)
    client.spin_for(0.05)
    client.publish_messages(
        numpy_to_image(frame.rgb, "rgb8", header),
        metres_to_depth_image(frame.depth, header, "16UC1"),
        intrinsics_to_camera_info(frame.intrinsics, header),
    )


def _wait(collector, topic, stamp_ns, timeout=20.0):
    assert collector.spin_until(
        lambda: by_stamp(collector.msgs[topic], stamp_ns) is not None, timeout
    ), f"nothing on {topic} for {stamp_ns}"
    return by_stamp(collector.msgs[topic], stamp_ns)


def _errors(collector, text):
    return [s for s in statuses(collector, NAME, DiagnosticStatus.ERROR) if text in s.message]


def test_targets_over_dds_equal_the_offline_engine(checkpoint, one_thread, tmp_path):
    engine = FocusDepthEngine(
        FocusDepthEngineConfig(str(checkpoint), device="cpu", num_threads=one_thread)
    )
    frames = _frames(engine)
    expected = [
        engine.run(FrameInputs(INTR, rgb=f.rgb, depth=f.depth, targets=f.extra["targets"]))
        for f in frames
    ]
    assert all(t.ok for r in expected for t in r.targets)
    roles = input_roles(FOCUS_INPUTS)
    assert roles == ("rgb", "rgb_info", "depth", "targets")
    params = {
        "checkpoint": str(checkpoint),
        "device": "cpu",
        "num_threads": one_thread,
        "diagnostics_period": 0.2,
        "max_target_age": 0.5,
    }
    log = tmp_path / "node.log"
    collector = Collector(NS, outputs={**COMPLETION_OUTPUTS, **TARGET_OUTPUTS})
    with running_node(NAME, "focus_depth.yaml", NS, log, params, collector=collector) as (
        node,
        _,
        collector,
    ):
        client = ReplayClient(NS, roles=roles)
        try:
            assert client.wait_for_node(20.0), log.read_text()
            graph = collector.node
            assert graph.count_subscribers(f"{NS}/targets") == 1
            results = list(client.run(frames, timeout_s=30.0))
            assert_depths(results, [r.depth for r in expected], log)
            for frame, exp in zip(frames, expected, strict=True):
                stamp = frame.stamp_ns
                geometry = _wait(collector, "targets/geometry", stamp)
                assert geometry.header.frame_id == INTR.frame_id
                assert [g.target_id for g in geometry.targets] == [1, 2]
                assert [g.text for g in geometry.targets] == ["car", "person"]
                for got, want in zip(geometry.targets, exp.targets, strict=True):
                    assert got.valid and got.error == ""
                    g = want.geometry
                    c, b = got.centroid, got.box_pose.position
                    assert [c.x, c.y, c.z] == g.centroid.tolist()
                    assert [b.x, b.y, b.z] == g.box_center.tolist()
                    size = got.box_size
                    assert [size.x, size.y, size.z] == g.box_extent.tolist()
                    assert got.point_count == g.n_points == len(want.points)
                    assert got.score == np.float32(want.score)
                    assert got.fit_scale == np.float32(want.fit.scale)
                cloud = pointcloud2_to_array(_wait(collector, "targets/cloud", stamp))
                points = np.concatenate([t.points for t in exp.targets])
                xyz = np.stack([cloud[c].ravel() for c in "xyz"], axis=1)
                np.testing.assert_array_equal(xyz, points)
                ids = np.concatenate([np.full(len(t.points), t.target_id) for t in exp.targets])
                np.testing.assert_array_equal(cloud["target_id"].ravel(), ids)
                mask = image_to_numpy(_wait(collector, "targets/mask", stamp))
                union = np.logical_or.reduce([t.mask for t in exp.targets])
                np.testing.assert_array_equal(mask, np.where(union, 255, 0))
                markers = _wait_markers(collector, stamp)
                kinds = [m.type for m in markers.markers[1:]]
                assert markers.markers[0].action == Marker.DELETEALL
                assert kinds == [Marker.CUBE, Marker.TEXT_VIEW_FACING] * 2

            # Stale targets (2 s older than the frame): dropped, counted, a named ERROR.
            last = frames[-1]
            t1 = last.stamp_ns + 10**9
            stale = targets_to_msg(
                [CAR], Header(stamp=ns_to_stamp(t1 - 2 * 10**9), frame_id=INTR.frame_id)
            )
            _publish(client, last, t1, stale)
            assert _wait(collector, "targets/geometry", t1).targets == []
            # no target left: the reference as it came (an absent prompt refines nothing)
            reference = depth_image_to_metres(_wait(collector, "depth_completed/image", t1))
            np.testing.assert_array_equal(reference, last.depth)
            assert collector.spin_until(lambda: bool(_errors(collector, "older than the frame")))
            assert status_value(_errors(collector, "older than")[-1], "targets_stale") == "1"

            # Drawn on another camera's frame: dropped, counted, a named ERROR.
            t2 = t1 + 10**8
            other = targets_to_msg(
                [CAR], Header(stamp=ns_to_stamp(t2), frame_id="other_camera_optical_frame")
            )
            _publish(client, last, t2, other)
            assert _wait(collector, "targets/geometry", t2).targets == []
            assert collector.spin_until(lambda: bool(_errors(collector, "drawn on frame")))
            error = _errors(collector, "drawn on frame")[-1]
            assert status_value(error, "targets_wrong_frame") == "1"

            # A zero-area box: echoed invalid with the reason, an ERROR; the depth is the
            # reference (nothing refined).
            t3 = t2 + 10**8
            zero = targets_to_msg(
                [Target(5, "", (5, 5, 0, 10))],
                Header(stamp=ns_to_stamp(t3), frame_id=INTR.frame_id),
            )
            _publish(client, last, t3, zero)
            (bad,) = _wait(collector, "targets/geometry", t3).targets
            assert bad.target_id == 5 and not bad.valid and "zero area" in bad.error
            assert collector.spin_until(lambda: bool(_errors(collector, "zero area")))
            depth = _wait(collector, "depth_completed/image", t3)
            np.testing.assert_array_equal(depth_image_to_metres(depth), last.depth)

            # Still serving: the first frame again, at a new stamp, as offline.
            assert node.alive(), log.read_text()
            again = replace(frames[0], stamp_ns=t3 + 10**8)
            (res,) = client.run([again], timeout_s=30.0)
            np.testing.assert_array_equal(res.depth, expected[0].depth)
        finally:
            client.close()


def _wait_markers(collector, stamp_ns, timeout=20.0):
    def found():
        return next(
            (
                m
                for m in collector.msgs["targets/markers"]
                if m.markers
                and m.markers[-1].header.stamp.sec * 10**9 + m.markers[-1].header.stamp.nanosec
                == stamp_ns
            ),
            None,
        )

    assert collector.spin_until(lambda: found() is not None, timeout)
    return found()


def test_a_node_without_its_model_says_why_in_one_line(tmp_path):
    missing = tmp_path / "nope"
    params = {"checkpoint": str(missing), "device": "cpu"}
    text = failed_node_log(NAME, "/focus_missing", params, tmp_path / "node.log", timeout=60)
    errors = [line for line in text.splitlines() if "[FATAL]" in line or "[ERROR]" in line]
    assert len(errors) == 1 and str(missing) in errors[0], text
    if not default_focusdepth_path().exists():
        text = failed_node_log(NAME, "/focus_default", {}, tmp_path / "default.log", timeout=60)
        assert "focusdepth_small" in text and text.count("cannot start") == 1, text

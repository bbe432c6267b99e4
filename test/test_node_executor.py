"""The executor every node spins with (``executor`` parameter, depth_perception.ros.spin):
both kinds serve frames and the depth_query service over real DDS, run their timers on /clock
under use_sim_time, shut down cleanly on SIGINT, and an unknown kind stops the node with one
error."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
import rclpy
from node_harness import failed_node_log, make_frame, running_node

from depth_perception.core.baselines import fill_nearest
from depth_perception.ros.spin import EXECUTORS, make_executor


def test_make_executor_kinds():
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.impl.implementation_singleton import rclpy_implementation  # Kilted: has it

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        events, kind = make_executor("events", context)
        assert kind == "events" and isinstance(events, rclpy_implementation.EventsExecutor)
        single, kind = make_executor("single_threaded", context)
        assert kind == "single_threaded" and isinstance(single, SingleThreadedExecutor)
    finally:
        rclpy.shutdown(context=context)


def test_events_falls_back_where_rclpy_has_no_events_executor(monkeypatch):
    from rclpy.executors import SingleThreadedExecutor

    monkeypatch.setitem(sys.modules, "rclpy.experimental", None)  # import fails, as on Jazzy
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        executor, kind = make_executor("events", context)
        assert kind == "single_threaded" and isinstance(executor, SingleThreadedExecutor)
    finally:
        rclpy.shutdown(context=context)


@pytest.mark.parametrize("kind", EXECUTORS)
def test_each_executor_serves_frames_and_the_query_service(kind, tmp_path):
    from depth_perception_msgs.msg import Pixel
    from depth_perception_msgs.srv import DepthQuery

    log = tmp_path / "node.log"
    namespace = f"/executor_{kind}"
    with running_node("depth_fill_node", "depth_fill.yaml", namespace, log, {"executor": kind}) as (
        _,
        client,
        _,
    ):
        frames = [make_frame(i) for i in range(3)]
        results = list(client.run(frames, timeout_s=20.0))
        for frame, result in zip(frames, results, strict=True):
            assert result.depth is not None, log.read_text()
            np.testing.assert_array_equal(result.depth, fill_nearest(frame.depth))
        srv = client.node.create_client(DepthQuery, "depth_query")
        assert srv.wait_for_service(timeout_sec=10.0)
        request = DepthQuery.Request(pixels=[Pixel(u=30.0, v=20.0), Pixel(u=3.0, v=41.0)])
        future = srv.call_async(request)  # stamp zero: the newest frame
        end = time.monotonic() + 10.0
        while time.monotonic() < end and not future.done():
            client.executor.spin_once(timeout_sec=0.02)
        assert future.done(), "depth_query did not answer"
        response = future.result()
        assert response.success, response.message
        expected = fill_nearest(frames[-1].depth)
        assert list(response.depth) == [expected[20, 30], expected[41, 3]]
    # running_node has stopped the node with SIGINT and checked its exit code 0
    assert f"executor: {kind}" in log.read_text()


def test_an_unknown_executor_stops_the_node_with_one_error(tmp_path):
    text = failed_node_log(
        "depth_fill_node", "/executor_bad", {"executor": "multi"}, tmp_path / "node.log", 60
    )
    errors = [line for line in text.splitlines() if "[FATAL]" in line or "[ERROR]" in line]
    assert len(errors) == 1 and "executor must be one of events, single_threaded" in errors[0]


@pytest.mark.parametrize("kind", EXECUTORS)
def test_timers_follow_sim_time_under_each_executor(kind, tmp_path):
    """use_sim_time (bag replay with /clock): the /diagnostics timer runs on /clock's time,
    stamps its messages with it, and stops while /clock stops."""
    from rosgraph_msgs.msg import Clock

    sim0 = 1000.0
    params = {"executor": kind, "use_sim_time": True, "diagnostics_period": 0.5}
    log = tmp_path / "node.log"
    with running_node("depth_fill_node", "depth_fill.yaml", f"/sim_{kind}", log, params) as (
        _,
        _,
        collector,
    ):
        clock = collector.node.create_publisher(Clock, "/clock", 10)
        assert collector.spin_until(lambda: clock.get_subscription_count() > 0, 10.0)

        def ours() -> list:
            return [
                m
                for m in collector.msgs["/diagnostics"]
                if m.status and m.status[0].name.startswith("depth_fill_node")
            ]

        def advance(seconds: float, start: float) -> float:
            sim, end = start, time.monotonic() + seconds
            while time.monotonic() < end:
                sim += 0.01
                msg = Clock()
                msg.clock.sec, msg.clock.nanosec = int(sim), int(round((sim % 1) * 1e9)) % 10**9
                clock.publish(msg)
                collector.executor.spin_once(timeout_sec=0.01)
            return sim

        assert not ours(), "a timer fired before /clock started"
        sim = advance(3.0, sim0)
        running = ours()
        assert len(running) >= 3, log.read_text()
        stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in running]
        assert all(sim0 <= s <= sim for s in stamps) and stamps == sorted(stamps)
        collector.spin_until(lambda: False, 2.0)  # /clock stopped: so do the timers
        assert len(ours()) <= len(running) + 1  # at most one already on its way

"""DiagnosticsReporter: status content, staleness, throttled error logs, and /diagnostics on DDS."""

from __future__ import annotations

import threading
import uuid

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, ReliabilityPolicy

from depth_perception.ros import diagnostics as diag
from depth_perception.ros.qos import latched_qos, qos_by_name, reliable_qos, sensor_data_qos


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class RecordingLogger:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict]] = []

    def error(self, msg, **kwargs):
        self.calls.append(("error", msg, kwargs))

    def warning(self, msg, **kwargs):
        self.calls.append(("warning", msg, kwargs))


def values_of(status) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def test_qos_profiles():
    sensor = sensor_data_qos(3)
    assert (sensor.depth, sensor.history) == (3, HistoryPolicy.KEEP_LAST)
    assert sensor.reliability == ReliabilityPolicy.BEST_EFFORT
    assert sensor.durability == DurabilityPolicy.VOLATILE
    reliable = reliable_qos()
    assert (reliable.depth, reliable.reliability) == (10, ReliabilityPolicy.RELIABLE)
    assert reliable.durability == DurabilityPolicy.VOLATILE
    latched = latched_qos()
    assert (latched.depth, latched.reliability) == (1, ReliabilityPolicy.RELIABLE)
    assert latched.durability == DurabilityPolicy.TRANSIENT_LOCAL
    assert qos_by_name("sensor_data", 7).depth == 7
    assert qos_by_name("latched") == latched
    with pytest.raises(ValueError, match="bogus"):
        qos_by_name("bogus")


def test_status_content_and_staleness(node):
    clock = FakeClock()
    reporter = diag.DiagnosticsReporter(
        node, "depth", "cam0", period_s=1.0, stale_after_periods=3, clock=clock
    )
    first = reporter.status()
    assert first.level == DiagnosticStatus.STALE  # nothing reported yet
    assert first.name == f"{node.get_name()}: depth"
    reporter.update(diag.WARN, "low fps", fps=12.345678, frames=42, model="lingbot")
    status = reporter.status()
    assert status.level == DiagnosticStatus.WARN and status.message == "low fps"
    assert status.hardware_id == "cam0"
    assert values_of(status) == {"fps": "12.3457", "frames": "42", "model": "lingbot"}
    clock.now += 3.0  # exactly 3 periods: still fresh
    assert reporter.status().level == DiagnosticStatus.WARN
    clock.now += 0.5
    stale = reporter.status()
    assert stale.level == DiagnosticStatus.STALE and "3.5 s" in stale.message
    assert values_of(stale)["frames"] == "42"  # last values kept for the operator
    reporter.publish()  # the WARN went out; an OK now replaces it
    reporter.update(DiagnosticStatus.OK, "back")  # bytes levels are accepted too
    assert reporter.status().level == DiagnosticStatus.OK
    assert diag.level_name(DiagnosticStatus.ERROR) == "ERROR"
    with pytest.raises(ValueError, match="level"):
        reporter.update(7, "bad")
    reporter.destroy()


def test_error_logs_throttled_per_kind(node, monkeypatch):
    logger = RecordingLogger()
    monkeypatch.setattr(node, "get_logger", lambda: logger)
    clock = FakeClock()
    reporter = diag.DiagnosticsReporter(node, "engine", "gpu0", log_throttle_s=2.5, clock=clock)
    reporter.error("inference failed", kind="engine", error="CUDA OOM")
    reporter.error("inference failed again", kind="engine")  # same kind within 2.5 s: throttled
    reporter.error("camera_info has a non-finite fx", kind="camera_info")  # another kind: logged
    reporter.warn("slow")
    assert [(lvl, msg) for lvl, msg, _ in logger.calls] == [
        ("error", "inference failed"),
        ("error", "camera_info has a non-finite fx"),
        ("warning", "slow"),
    ]
    clock.now += 2.6
    reporter.error("inference failed a third time", kind="engine")
    assert logger.calls[-1][1] == "inference failed a third time (1 more like it suppressed)"
    reporter.destroy()


def test_worst_status_is_published_before_it_is_replaced(node):
    reporter = diag.DiagnosticsReporter(node, "engine", "gpu0")
    reporter.error("bad frame", kind="input")
    reporter.ok("completing depth")  # the next good frame, before the timer published
    status = reporter.status()
    assert status.level == DiagnosticStatus.ERROR and status.message == "bad frame"
    reporter.publish()  # the error went out once; now the current status shows
    assert reporter.status().level == DiagnosticStatus.OK
    reporter.warn("slow")
    reporter.error("worse")
    reporter.warn("slow again")
    assert reporter.status().message == "worse"
    reporter.destroy()


class DiagnosticsListener:
    """Subscribes to /diagnostics and signals when a status satisfying ``predicate`` arrives."""

    def __init__(self, node: Node, name: str) -> None:
        self.name = name
        self.statuses: list[DiagnosticStatus] = []
        self.cond = threading.Condition()
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_array, reliable_qos(50))

    def _on_array(self, msg: DiagnosticArray) -> None:
        with self.cond:
            self.statuses.extend(s for s in msg.status if s.name == self.name)
            self.cond.notify_all()

    def wait_for(self, predicate, timeout: float = 10.0) -> DiagnosticStatus:
        with self.cond:
            found = self.cond.wait_for(
                lambda: next((s for s in self.statuses if predicate(s)), None), timeout
            )
        assert found is not None, f"no matching status; got {self.statuses}"
        return found


def test_diagnostics_over_dds(ros_context):
    tag = uuid.uuid4().hex[:8]
    reporter_node = Node(f"diag_pub_{tag}", context=ros_context)
    listener_node = Node(f"diag_sub_{tag}", context=ros_context)
    reporter = diag.DiagnosticsReporter(
        reporter_node, "pointcloud", "realsense_d435", period_s=0.1, stale_after_periods=2
    )
    listener = DiagnosticsListener(listener_node, f"diag_pub_{tag}: pointcloud")
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(reporter_node)
    executor.add_node(listener_node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        reporter.update(diag.OK, "publishing", fps=29.97, points=307200)
        ok = listener.wait_for(lambda s: s.level == DiagnosticStatus.OK)
        assert ok.message == "publishing" and ok.hardware_id == "realsense_d435"
        assert values_of(ok) == {"fps": "29.97", "points": "307200"}
        # No further updates: within a few periods the timer publishes STALE.
        stale = listener.wait_for(lambda s: s.level == DiagnosticStatus.STALE)
        assert stale.message.startswith("stale") and values_of(stale)["points"] == "307200"
        reporter.error("depth engine crashed", exit_code=-11)
        err = listener.wait_for(lambda s: s.level == DiagnosticStatus.ERROR)
        assert err.message == "depth engine crashed" and values_of(err) == {"exit_code": "-11"}
    finally:
        executor.shutdown()
        spinner.join(timeout=5.0)
        reporter.destroy()
        reporter_node.destroy_node()
        listener_node.destroy_node()

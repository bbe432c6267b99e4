"""A minimal ``diagnostic_updater`` replacement: one status per task on ``/diagnostics``.

``diagnostic_updater`` is not pip-installable; the nodes only need its core: periodically publish
a ``diagnostic_msgs/DiagnosticArray`` with a ``DiagnosticStatus`` named ``"<node name>: <task>"``
(the name format diagnostic_aggregator analyzers match on), a level, a message and key/values.
A status nobody refreshed for ``stale_after_periods`` periods is published as STALE, so a hung
pipeline shows up in rqt_robot_monitor instead of freezing on its last "OK".

A WARN or ERROR is published at least once even when a good frame reports OK before the next
period (the worst status since the last publication goes out), and log lines are throttled per
kind of problem, so one recurring error never hides a different one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from depth_perception.ros.qos import reliable_qos

__all__ = ["DiagnosticsReporter", "ERROR", "OK", "STALE", "WARN", "level_name"]

# Levels as ints (DiagnosticStatus stores them as a single byte).
OK, WARN, ERROR, STALE = 0, 1, 2, 3
_LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR", STALE: "STALE"}


def _level_int(level: int | bytes) -> int:
    value = level[0] if isinstance(level, bytes | bytearray) else int(level)
    if value not in _LEVEL_NAMES:
        raise ValueError(f"diagnostic level must be OK/WARN/ERROR/STALE (0..3), got {level!r}")
    return value


def level_name(level: int | bytes) -> str:
    return _LEVEL_NAMES[_level_int(level)]


def _format_value(value: Any) -> str:
    # Short, stable text for floats (rqt shows these); everything else as str().
    if isinstance(value, float | np.floating):
        return format(float(value), ".6g")
    return str(value)


class DiagnosticsReporter:
    """Publish one task's health on ``/diagnostics`` every ``period_s`` seconds.

    Call :meth:`update` (or :meth:`ok` / :meth:`warn` / :meth:`error`) whenever the task has news;
    the timer republishes the latest status, or STALE once ``stale_after_periods`` periods pass
    without an update. ``clock`` (monotonic seconds) is injectable for tests.
    """

    def __init__(
        self,
        node: Any,
        task_name: str,
        hardware_id: str,
        period_s: float = 1.0,
        stale_after_periods: int = 3,
        log_throttle_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._node = node
        self.name = f"{node.get_name()}: {task_name}"
        self.hardware_id = hardware_id
        self.period_s = float(period_s)
        self.stale_after_s = stale_after_periods * self.period_s
        self.log_throttle_s = float(log_throttle_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._level = STALE
        self._message = "no status reported yet"
        self._values: dict[str, str] = {}
        self._last_update: float | None = None
        # The worst WARN/ERROR since the last publication: (level, message, values).
        self._latched: tuple[int, str, dict[str, str]] | None = None
        self._last_logged: dict[str, float] = {}  # kind -> clock() of its last log line
        self._suppressed: dict[str, int] = {}  # kind -> lines throttled since then
        self._publisher = node.create_publisher(DiagnosticArray, "/diagnostics", reliable_qos(10))
        self._timer = node.create_timer(self.period_s, self.publish)

    def update(self, level: int | bytes, message: str, **values: Any) -> None:
        """Set the current level, message and key/values (replacing the previous ones)."""
        level = _level_int(level)
        with self._lock:
            self._level = level
            self._message = str(message)
            self._values = {k: _format_value(v) for k, v in values.items()}
            self._last_update = self._clock()
            if level in (WARN, ERROR) and (self._latched is None or level >= self._latched[0]):
                self._latched = (level, self._message, dict(self._values))

    def ok(self, message: str = "OK", **values: Any) -> None:
        self.update(OK, message, **values)

    def warn(self, message: str, kind: str = "warning", **values: Any) -> None:
        """WARN status + a log line throttled per ``kind``."""
        self.update(WARN, message, **values)
        line = self._throttled(kind, message)
        if line is not None:
            self._node.get_logger().warning(line)

    def error(self, message: str, kind: str = "error", **values: Any) -> None:
        """ERROR status + a log line throttled per ``kind`` (a failing loop does not flood the
        log, and a second, different problem is still logged)."""
        self.update(ERROR, message, **values)
        line = self._throttled(kind, message)
        if line is not None:
            self._node.get_logger().error(line)

    def _throttled(self, kind: str, message: str) -> str | None:
        """The line to log now for ``kind`` (None while throttled).

        Our own throttle: rclpy's is keyed by call site, so every kind would share one."""
        now = self._clock()
        with self._lock:
            last = self._last_logged.get(kind)
            if last is not None and now - last < self.log_throttle_s:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return None
            self._last_logged[kind] = now
            suppressed = self._suppressed.pop(kind, 0)
        return message + (f" ({suppressed} more like it suppressed)" if suppressed else "")

    def status(self) -> DiagnosticStatus:
        """The DiagnosticStatus that would be published now (STALE if not refreshed)."""
        with self._lock:
            level, message, values = self._level, self._message, dict(self._values)
            if self._latched is not None and self._latched[0] > level:
                level, message, values = self._latched
            age = None if self._last_update is None else self._clock() - self._last_update
        if age is not None and age > self.stale_after_s:
            level = STALE
            message = f"stale: no update for {age:.1f} s (last: {message})"
        return DiagnosticStatus(
            level=bytes([level]),
            name=self.name,
            message=message,
            hardware_id=self.hardware_id,
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )

    def publish(self) -> None:
        """Publish the current status now (the timer calls this every period)."""
        array = DiagnosticArray()
        array.header.stamp = self._node.get_clock().now().to_msg()
        array.status = [self.status()]
        with self._lock:
            self._latched = None
        self._publisher.publish(array)

    def destroy(self) -> None:
        self._node.destroy_timer(self._timer)
        self._node.destroy_publisher(self._publisher)

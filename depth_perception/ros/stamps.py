"""Header stamps that deserve a warning: zero, far in the future, repeated or going backwards.

None of them is dropped — a bag replayed in a loop or with ``use_sim_time`` legitimately jumps
back — but each is counted and named, so a driver with a broken clock is noticed before a
tracker fuses frames in the wrong order. Pure Python (no rclpy): the node passes its clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_NS = 1_000_000_000


@dataclass
class StampMonitor:
    """Counts suspicious stamps of one input stream; :meth:`check` names the problem."""

    future_tolerance_s: float = 10.0
    zero: int = 0
    future: int = 0
    duplicate: int = 0
    backwards: int = 0
    _last: int | None = field(default=None, repr=False)

    def check(self, stamp_ns: int, now_ns: int) -> str | None:
        """Problem with ``stamp_ns`` (None if fine). ``now_ns`` is the node's clock; 0 (a
        simulated clock that has not started) disables the future check. Zero and future stamps
        are not remembered as "the last stamp", so the next good frame is not called backwards."""
        if stamp_ns == 0:
            self.zero += 1
            return "zero header stamp (driver without a clock?)"
        ahead_s = (stamp_ns - now_ns) / _NS
        if now_ns > 0 and ahead_s > self.future_tolerance_s:
            self.future += 1
            return f"header stamp {ahead_s:.1f} s ahead of the node's clock"
        last, self._last = self._last, stamp_ns
        if last is None:
            return None
        if stamp_ns == last:
            self.duplicate += 1
            return "header stamp repeats the previous frame's"
        if stamp_ns < last:
            self.backwards += 1
            back_s = (last - stamp_ns) / _NS
            return f"header stamp went back {back_s:.3f} s (bag loop or clock reset?)"
        return None

    def counters(self) -> dict[str, int]:
        return {
            "stamps_zero": self.zero,
            "stamps_future": self.future,
            "stamps_duplicate": self.duplicate,
            "stamps_backwards": self.backwards,
        }

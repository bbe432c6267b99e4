"""Approximate-time synchronisation of several topics, with counters for diagnostics.

``message_filters`` is used when a ROS install provides it, else our compatible subset
(:mod:`depth_perception.ros.message_filters_compat`); :data:`SYNC_IMPLEMENTATION` says which.
:class:`SyncedSubscriptions` is what the nodes use: it wires the subscribers, the synchronizer
and the user callback, and counts what was received, matched and dropped per input.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

try:  # the real package when a ROS install provides it
    from message_filters import (  # type: ignore[import-not-found]
        ApproximateTimeSynchronizer,
        SimpleFilter,
        Subscriber,
        TimeSynchronizer,
    )

    SYNC_IMPLEMENTATION = "message_filters"
except ImportError:
    from depth_perception.ros.message_filters_compat import (
        ApproximateTimeSynchronizer,
        SimpleFilter,
        Subscriber,
        TimeSynchronizer,
    )

    SYNC_IMPLEMENTATION = "depth_perception.ros.message_filters_compat"

from depth_perception.ros.conversions import stamp_to_ns

__all__ = [
    "SYNC_IMPLEMENTATION",
    "ApproximateTimeSynchronizer",
    "SimpleFilter",
    "Subscriber",
    "SyncStats",
    "SyncedSubscriptions",
    "TimeSynchronizer",
]


@dataclass(frozen=True)
class SyncStats:
    """Counters of a :class:`SyncedSubscriptions`; tuples are per input, in input order."""

    received: tuple[int, ...]
    matched: int  # sets emitted to the callback
    queued: tuple[int, ...]  # messages still waiting in the synchronizer
    unmatched: tuple[int, ...]  # messages that left a queue without being emitted

    @property
    def total_unmatched(self) -> int:
        return sum(self.unmatched)

    @property
    def match_ratio(self) -> float:
        """matched sets / messages received on the busiest input (0.0 before any message)."""
        busiest = max(self.received, default=0)
        return self.matched / busiest if busiest else 0.0


class SyncedSubscriptions:
    """Subscribe to ``inputs`` and call ``callback(msg_1, ..., msg_N)`` with synchronized sets.

    ``slop`` None pairs exact stamps only (``TimeSynchronizer``: what drivers publishing depth
    aligned to colour with the colour's stamp need); a number pairs within that many seconds
    (``ApproximateTimeSynchronizer``).

    ``inputs`` is a list of ``(msg_type, topic)``. Receipt is counted through each input
    filter's own callback (registered before the synchronizer's, so a message is counted
    before it can be matched); matches through the synchronizer's output. The messages still
    queued are tracked by mirroring message_filters' documented queue rule (one entry per
    stamp, at most ``queue_size``, oldest stamp evicted) on our side, so the synchronizer's
    internals are never read.
    """

    def __init__(
        self,
        node: Any,
        inputs: Sequence[tuple[type, str]],
        qos: Any,
        queue_size: int,
        slop: float | None,
        callback: Callable[..., Any],
        callback_group: Any = None,
    ) -> None:
        if len(inputs) < 2:
            raise ValueError("SyncedSubscriptions needs at least two inputs")
        self._node = node
        self._callback = callback
        self._queue_size = int(queue_size)
        self._lock = threading.Lock()
        n = len(inputs)
        self._received = [0] * n
        self._matched = 0
        self._pending: list[set[int]] = [set() for _ in range(n)]
        kwargs = {} if callback_group is None else {"callback_group": callback_group}
        self.subscribers = [
            Subscriber(node, msg_type, topic, qos_profile=qos, **kwargs)
            for msg_type, topic in inputs
        ]
        for i, sub in enumerate(self.subscribers):
            sub.registerCallback(self._on_receive, i)
        self.synchronizer = (
            TimeSynchronizer(self.subscribers, queue_size)
            if slop is None
            else ApproximateTimeSynchronizer(self.subscribers, queue_size, slop)
        )
        self.synchronizer.registerCallback(self._on_match)

    @property
    def topics(self) -> list[str]:
        return [sub.topic for sub in self.subscribers]

    def _on_receive(self, msg: Any, index: int) -> None:
        with self._lock:
            self._received[index] += 1
            header = getattr(msg, "header", None)
            if header is None or not hasattr(header, "stamp"):
                return  # the synchronizer drops headerless messages: never queued
            pending = self._pending[index]
            pending.add(stamp_to_ns(header.stamp))  # a repeated stamp replaces the old entry
            while len(pending) > self._queue_size:
                pending.remove(min(pending))

    def _on_match(self, *msgs: Any) -> None:
        with self._lock:
            self._matched += 1
            for pending, msg in zip(self._pending, msgs, strict=True):
                pending.discard(stamp_to_ns(msg.header.stamp))
        self._callback(*msgs)

    def stats(self) -> SyncStats:
        with self._lock:
            received = tuple(self._received)
            queued = tuple(len(p) for p in self._pending)
            matched = self._matched
        unmatched = tuple(r - matched - q for r, q in zip(received, queued, strict=True))
        return SyncStats(received=received, matched=matched, queued=queued, unmatched=unmatched)

    def destroy(self) -> None:
        """Destroy the rclpy subscriptions (the node itself is left alone)."""
        for sub in self.subscribers:
            self._node.destroy_subscription(sub.sub)

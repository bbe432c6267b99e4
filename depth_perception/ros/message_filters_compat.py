"""A compatible subset of ROS 2's Python ``message_filters`` package.

``message_filters`` ships with ROS but not on PyPI, so this module provides the classes the
nodes need with the same names, constructor signatures and behaviour as ros2/message_filters:

- :class:`SimpleFilter`: ``registerCallback(cb, *args)`` / ``signalMessage(*msgs)``;
- :class:`Subscriber`: a SimpleFilter fed by an rclpy subscription;
- :class:`TimeSynchronizer`: emits sets of messages whose stamps are identical;
- :class:`ApproximateTimeSynchronizer`: emits sets whose stamps lie within ``slop`` seconds.

The approximate policy is the ROS 2 Python one (not the C++ "ApproximateTime" policy): each
input keeps a dict ``stamp -> msg`` of at most ``queue_size`` entries (the oldest stamp is
evicted; a repeated stamp replaces the earlier message). When a message arrives, every other
queue is searched for stamps within ``slop`` of it; combinations are tried closest-first
(``itertools.product`` over the per-queue candidates sorted by distance) and the first one whose
spread max - min is strictly below ``slop`` is emitted and removed from the queues.

Stamps are handled as integer nanoseconds read duck-typed from ``msg.header.stamp`` (``sec`` /
``nanosec`` fields, or an ``rclpy.time.Time``), so rosbags messages work too.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any

import rclpy.logging
from rclpy.clock import ROSClock
from rclpy.duration import Duration

from depth_perception.ros.conversions import stamp_to_ns

__all__ = [
    "ApproximateTimeSynchronizer",
    "SimpleFilter",
    "Subscriber",
    "TimeSynchronizer",
    "stamp_to_ns",
]


class SimpleFilter:
    """Base of every filter: keeps callbacks and calls them with each output."""

    def __init__(self) -> None:
        self.callbacks: dict[int, tuple[Callable[..., Any], tuple[Any, ...]]] = {}

    def registerCallback(self, cb: Callable[..., Any], *args: Any) -> int:  # noqa: N802 (ROS API)
        """Call ``cb(*msgs, *args)`` on every output; returns a connection id."""
        conn = len(self.callbacks)
        self.callbacks[conn] = (cb, args)
        return conn

    def signalMessage(self, *msg: Any) -> None:  # noqa: N802 (ROS API)
        """Pass ``msg`` to every registered callback, in registration order."""
        for cb, args in list(self.callbacks.values()):
            cb(*(msg + args))


class Subscriber(SimpleFilter):
    """rclpy subscription as a filter: ``Subscriber(node, msg_type, topic, qos_profile=10)``.

    Extra keyword arguments (``callback_group``, ...) go to ``node.create_subscription``, and
    unknown attributes are served by the underlying subscription, as in message_filters.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        SimpleFilter.__init__(self)
        self.node = args[0]
        self.topic = args[2]
        if len(args) < 4:  # qos may be given positionally, as for create_subscription
            kwargs.setdefault("qos_profile", 10)
        self.sub = self.node.create_subscription(*args[1:3], self.callback, *args[3:], **kwargs)

    def callback(self, msg: Any) -> None:
        self.signalMessage(msg)

    def getTopic(self) -> str:  # noqa: N802 (ROS API)
        return self.topic

    def __getattr__(self, key: str) -> Any:
        # Only reached for attributes not found normally; guard against recursion before
        # ``sub`` exists (e.g. during unpickling or a failed __init__).
        if key == "sub":
            raise AttributeError(key)
        return getattr(self.sub, key)


class TimeSynchronizer(SimpleFilter):
    """Emit ``callback(msg_1, ..., msg_N)`` when all N inputs hold a message with one stamp.

    Each input keeps at most ``queue_size`` messages (by stamp) while waiting for the others.
    """

    def __init__(self, fs: Sequence[SimpleFilter], queue_size: int) -> None:
        SimpleFilter.__init__(self)
        self.connectInput(fs)
        self.queue_size = queue_size
        self.lock = threading.Lock()

    def connectInput(self, fs: Sequence[SimpleFilter]) -> None:  # noqa: N802 (ROS API)
        self.queues: list[dict[int, Any]] = [{} for _ in fs]
        self.input_connections = [
            f.registerCallback(self.add, q, i_q)
            for i_q, (f, q) in enumerate(zip(fs, self.queues, strict=True))
        ]

    def _insert(self, my_queue: dict[int, Any], stamp_ns: int, msg: Any) -> None:
        """Store ``msg`` under its stamp and evict the oldest stamps beyond ``queue_size``."""
        my_queue[stamp_ns] = msg
        while len(my_queue) > self.queue_size:
            del my_queue[min(my_queue)]

    def add(self, msg: Any, my_queue: dict[int, Any], my_queue_index: int | None = None) -> None:
        with self.lock:
            self._insert(my_queue, stamp_to_ns(msg.header.stamp), msg)
            # Stamps present in every queue form complete sets; emit them oldest first.
            common = set.intersection(*(set(q) for q in self.queues))
            for t in sorted(common):
                msgs = [q[t] for q in self.queues]
                self.signalMessage(*msgs)
                for q in self.queues:
                    del q[t]


class ApproximateTimeSynchronizer(TimeSynchronizer):
    """Like :class:`TimeSynchronizer` but matches stamps that differ by less than ``slop`` s.

    ``allow_headerless`` stamps messages without a header with the current ROS time (arrival
    time); otherwise such messages are dropped with a warning, as in message_filters.
    """

    def __init__(
        self,
        fs: Sequence[SimpleFilter],
        queue_size: int,
        slop: float,
        allow_headerless: bool = False,
    ) -> None:
        TimeSynchronizer.__init__(self, fs, queue_size)
        self.slop = Duration(seconds=slop)  # public attribute of message_filters' class
        self.slop_ns = self.slop.nanoseconds
        self.allow_headerless = allow_headerless

    def add(self, msg: Any, my_queue: dict[int, Any], my_queue_index: int | None = None) -> None:
        if not hasattr(msg, "header") or not hasattr(msg.header, "stamp"):
            if not self.allow_headerless:
                rclpy.logging.get_logger("message_filters_approx").warning(
                    "can not use message filters for messages without timestamp information "
                    "when 'allow_headerless' is disabled",
                    throttle_duration_sec=5.0,
                )
                return
            stamp = ROSClock().now().nanoseconds
        else:
            stamp = stamp_to_ns(msg.header.stamp)

        with self.lock:
            self._insert(my_queue, stamp, msg)
            if my_queue_index is None:
                search = list(range(len(self.queues)))
            else:
                search = [i for i in range(len(self.queues)) if i != my_queue_index]
            # Per other queue: its stamps within slop of the new one, nearest first.
            candidates = []
            for i in search:
                near = [s for s in self.queues[i] if abs(s - stamp) <= self.slop_ns]
                if not near:
                    return  # some input has nothing close enough: wait for more messages
                near.sort(key=lambda s: abs(s - stamp))
                candidates.append(near)
            for combo in itertools.product(*candidates):
                stamps = list(combo)
                if my_queue_index is not None:
                    stamps.insert(my_queue_index, stamp)
                if max(stamps) - min(stamps) < self.slop_ns and all(
                    t in q for q, t in zip(self.queues, stamps, strict=True)
                ):
                    msgs = [q[t] for q, t in zip(self.queues, stamps, strict=True)]
                    self.signalMessage(*msgs)
                    for q, t in zip(self.queues, stamps, strict=True):
                        del q[t]
                    return  # at most one set per arrival, as in message_filters

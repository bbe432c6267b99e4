"""Conformance of the time synchronizers with ros2/message_filters' Python behaviour.

One suite, run against the implementation the nodes use (``depth_perception.ros.sync``: the real
message_filters when installed, else our compat module) and against the compat module itself.
Messages are fed through ``SimpleFilter.signalMessage`` as message_filters' own tests do; one
test at the end goes through real DDS.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import String

from depth_perception.ros import message_filters_compat, sync
from depth_perception.ros.qos import reliable_qos

IMPLEMENTATIONS = [
    pytest.param(sync, id=f"active[{sync.SYNC_IMPLEMENTATION}]"),
    pytest.param(message_filters_compat, id="compat"),
]


def stamped(t: float, label: str = "") -> Image:
    """An Image whose header carries stamp ``t`` seconds; frame_id labels it for asserts."""
    msg = Image()
    ns = round(t * 1e9)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 1_000_000_000)
    msg.header.frame_id = label or f"{t:g}"
    return msg


def t_of(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


class Rig:
    """N input filters -> synchronizer -> list of emitted label tuples."""

    def __init__(self, impl, n=2, queue_size=10, slop=None):
        self.inputs = [impl.SimpleFilter() for _ in range(n)]
        if slop is None:
            self.sync = impl.TimeSynchronizer(self.inputs, queue_size)
        else:
            self.sync = impl.ApproximateTimeSynchronizer(self.inputs, queue_size, slop)
        self.out: list[tuple[str, ...]] = []
        self.sync.registerCallback(
            lambda *msgs: self.out.append(tuple(m.header.frame_id for m in msgs))
        )

    def feed(self, i: int, t: float, label: str = "") -> None:
        self.inputs[i].signalMessage(stamped(t, label))


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request):
    return request.param


def test_simple_filter_passes_extra_args(impl):
    f = impl.SimpleFilter()
    seen = []
    f.registerCallback(lambda m, a, b: seen.append((m, a, b)), 1, "two")
    f.registerCallback(lambda m: seen.append(m))
    f.signalMessage("msg")
    assert seen == [("msg", 1, "two"), "msg"]


@pytest.mark.parametrize("slop", [None, 0.05], ids=["exact", "approx"])
def test_exact_stamps_match(impl, slop):
    rig = Rig(impl, slop=slop)
    rig.feed(0, 1.0, "a1")
    assert rig.out == []
    rig.feed(1, 1.0, "b1")
    assert rig.out == [("a1", "b1")]
    rig.feed(1, 1.0, "b1-again")  # the set was consumed: nothing left to pair with
    assert rig.out == [("a1", "b1")]


def test_time_synchronizer_needs_identical_stamps(impl):
    rig = Rig(impl)
    rig.feed(0, 1.0, "a")
    rig.feed(1, 1.000001, "b")
    assert rig.out == []


def test_match_within_slop(impl):
    rig = Rig(impl, slop=0.05)
    rig.feed(0, 1.0, "a")
    rig.feed(1, 1.03, "b")
    assert rig.out == [("a", "b")]


def test_no_match_beyond_slop(impl):
    rig = Rig(impl, slop=0.05)
    rig.feed(0, 1.0, "a")
    rig.feed(1, 1.06, "b")
    rig.feed(1, 0.94, "c")
    assert rig.out == []
    # message_filters requires the spread to be strictly below slop.
    rig.feed(1, 1.05, "d")
    assert rig.out == []


def test_closest_candidate_wins(impl):
    rig = Rig(impl, slop=0.05)
    rig.feed(0, 1.00, "a_far")
    rig.feed(0, 1.04, "a_near")
    rig.feed(1, 1.03, "b")
    assert rig.out == [("a_near", "b")]
    rig.feed(1, 1.01, "b2")  # a_far is still queued and pairs with the next one
    assert rig.out == [("a_near", "b"), ("a_far", "b2")]


ORDERS = {
    "a_then_b": [(0, 0.0), (0, 0.1), (0, 0.2), (1, 0.01), (1, 0.11), (1, 0.21)],
    "b_then_a": [(1, 0.01), (1, 0.11), (1, 0.21), (0, 0.0), (0, 0.1), (0, 0.2)],
    "interleaved": [(0, 0.0), (1, 0.11), (1, 0.01), (0, 0.2), (0, 0.1), (1, 0.21)],
}


@pytest.mark.parametrize("order", list(ORDERS))
def test_arrival_order_does_not_change_pairs(impl, order):
    rig = Rig(impl, slop=0.03)
    for i, t in ORDERS[order]:
        rig.feed(i, t)
    assert sorted(rig.out) == [("0", "0.01"), ("0.1", "0.11"), ("0.2", "0.21")]


def test_queue_size_evicts_oldest(impl):
    rig = Rig(impl, queue_size=2, slop=0.05)
    rig.feed(0, 0.0, "a0")
    rig.feed(0, 1.0, "a1")
    rig.feed(0, 2.0, "a2")  # queue of 2: a0 (oldest stamp) is evicted
    rig.feed(1, 0.0, "b0")
    assert rig.out == []
    rig.feed(1, 1.0, "b1")
    assert rig.out == [("a1", "b1")]


def test_exact_queue_size_evicts_oldest(impl):
    rig = Rig(impl, queue_size=1)
    rig.feed(0, 1.0, "a1")
    rig.feed(0, 2.0, "a2")
    rig.feed(1, 1.0, "b1")
    assert rig.out == []
    rig.feed(1, 2.0, "b2")
    assert rig.out == [("a2", "b2")]


def test_three_inputs(impl):
    rig = Rig(impl, n=3, slop=0.05)
    rig.feed(0, 1.00, "a")
    rig.feed(1, 1.02, "b")
    assert rig.out == []
    rig.feed(2, 1.04, "c")  # spread 0.04 < slop
    assert rig.out == [("a", "b", "c")]
    # Spread 0.08: "a" is beyond slop of the newest "c" and no set is emitted.
    rig.feed(0, 2.00, "a2")
    rig.feed(1, 2.04, "b2")
    rig.feed(2, 2.08, "c2")
    assert rig.out == [("a", "b", "c")]
    rig.feed(0, 2.06, "a3")  # now b2, c2, a3 span 0.04
    assert rig.out == [("a", "b", "c"), ("a3", "b2", "c2")]


def test_headerless_messages_are_dropped(impl):
    rig = Rig(impl, slop=0.05)
    rig.inputs[0].signalMessage(String(data="no header"))
    rig.feed(1, 1.0)
    assert rig.out == []


# ---------------------------------------------------------------------------------------------
# SyncedSubscriptions (counters) and real DDS
# ---------------------------------------------------------------------------------------------


def test_synced_subscriptions_counts_unmatched(node):
    pairs = []
    synced = sync.SyncedSubscriptions(
        node,
        [(Image, "/sync_count/a"), (Image, "/sync_count/b")],
        reliable_qos(),
        queue_size=2,
        slop=0.05,
        callback=lambda a, b: pairs.append((a.header.frame_id, b.header.frame_id)),
    )
    a, b = synced.subscribers
    for t in (0.0, 1.0, 2.0):  # a@0.0 is evicted by a@2.0
        a.signalMessage(stamped(t, f"a{t:g}"))
    b.signalMessage(stamped(1.01, "b1"))
    b.signalMessage(stamped(5.0, "b5"))
    stats = synced.stats()
    assert pairs == [("a1", "b1")]
    assert stats.received == (3, 2) and stats.matched == 1
    assert stats.queued == (1, 1)  # a@2.0 and b@5.0 wait
    assert stats.unmatched == (1, 0) and stats.total_unmatched == 1
    a.signalMessage(stamped(2.0, "a2-again"))  # same stamp replaces the queued a@2.0
    a.signalMessage(String(data="headerless"))  # dropped by the synchronizer
    stats = synced.stats()
    assert stats.received == (5, 2) and stats.queued == (1, 1) and stats.unmatched == (3, 0)
    assert stats.match_ratio == pytest.approx(1 / 5)
    if sync.SYNC_IMPLEMENTATION.endswith("compat"):
        # Our mirror of the queues agrees with the synchronizer's actual queues.
        assert tuple(len(q) for q in synced.synchronizer.queues) == stats.queued
    synced.destroy()


def test_synced_subscriptions_over_dds(ros_context):
    """Two publishers -> SyncedSubscriptions in a node spun by an executor thread."""
    tag = uuid.uuid4().hex[:8]
    sub_node = Node(f"sync_sub_{tag}", context=ros_context)
    pub_node = Node(f"sync_pub_{tag}", context=ros_context)
    topics = [f"/sync_dds_{tag}/depth", f"/sync_dds_{tag}/rgb"]
    received, done = [], threading.Event()

    def on_pair(depth, rgb):
        received.append((t_of(depth), t_of(rgb)))
        if len(received) >= 3:
            done.set()

    synced = sync.SyncedSubscriptions(
        sub_node, [(Image, t) for t in topics], reliable_qos(10), 10, 0.02, on_pair
    )
    pubs = [pub_node.create_publisher(Image, t, reliable_qos(10)) for t in topics]
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(sub_node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        deadline = time.monotonic() + 10.0
        while any(p.get_subscription_count() == 0 for p in pubs) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(p.get_subscription_count() > 0 for p in pubs), "discovery timed out"
        for k in range(3):
            t = 100.0 + k
            pubs[0].publish(stamped(t))
            pubs[1].publish(stamped(t + 0.005))  # within slop
        pubs[1].publish(stamped(200.0))  # never matched
        assert done.wait(timeout=max(0.1, deadline - time.monotonic())), received
        assert sorted(received) == [
            pytest.approx((100.0 + k, 100.005 + k), abs=1e-9) for k in range(3)
        ]
        stats_deadline = time.monotonic() + 5.0
        while synced.stats().received[1] < 4 and time.monotonic() < stats_deadline:
            time.sleep(0.02)
        stats = synced.stats()
        assert stats.matched == 3 and stats.received == (3, 4) and stats.queued == (0, 1)
    finally:
        executor.shutdown()
        spinner.join(timeout=5.0)
        synced.destroy()
        sub_node.destroy_node()
        pub_node.destroy_node()

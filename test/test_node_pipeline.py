"""The node base's two stages (``pipeline``): with it, the engine runs the next frame while the
previous frame is still being published; without it, never. Both keep every frame's outputs.

In process, no DDS: the synchronised callback is called directly and the engine and the
publishing hook (``publish_extras``, called in the second stage) wait on events, so what is
checked is the order of events, not a time."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import rclpy
from node_harness import INTR, make_frame
from rclpy.parameter import Parameter
from std_msgs.msg import Header

from depth_perception.engines.base import CompletionResult, Engine, FrameInputs
from depth_perception.ros.completion_node import DepthCompletionNode
from depth_perception.ros.conversions import intrinsics_to_camera_info, ns_to_stamp, numpy_to_image

WAIT = 10.0  # s: only reached when the order is wrong


class _GatedEngine(Engine):
    """Passes the depth through; records the stamps it ran and signals each start."""

    model_id = "gated"

    def __init__(self) -> None:
        self.started: list[int] = []
        self.started_event = threading.Event()

    def run(self, frame: FrameInputs) -> CompletionResult:
        self.started.append(frame.stamp_ns)
        self.started_event.set()
        return CompletionResult(depth=frame.depth.copy())


class _GatedNode(DepthCompletionNode):
    """``publish_extras`` (the second stage) holds the first frame until ``release`` is set."""

    def __init__(self, pipeline: bool, context) -> None:
        self.release = threading.Event()
        self.publishing = threading.Event()
        self.published: list[int] = []
        super().__init__(
            "pipeline_test",
            context=context,
            parameter_overrides=[Parameter("pipeline", value=pipeline)],
        )

    def make_engine(self) -> Engine:
        return _GatedEngine()

    def publish_extras(self, header, inputs, result, reason=""):
        self.publishing.set()
        if not self.published:
            assert self.release.wait(WAIT)
        self.published.append(inputs.stamp_ns)
        return {}


def _messages(i: int):
    frame = make_frame(i)
    header = Header(stamp=ns_to_stamp(frame.stamp_ns), frame_id=INTR.frame_id)
    return (
        numpy_to_image(frame.rgb, "rgb8", header),
        numpy_to_image(frame.depth, "32FC1", header),
        intrinsics_to_camera_info(INTR, header),
    ), frame.stamp_ns


@pytest.fixture
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.shutdown(context=ctx)


@pytest.mark.parametrize("pipeline", [True, False])
def test_the_engine_runs_the_next_frame_while_the_previous_one_is_published(context, pipeline):
    node = _GatedNode(pipeline, context)
    try:
        engine: _GatedEngine = node.engine
        first, first_ns = _messages(0)
        node._on_synced(*first)
        assert node.publishing.wait(WAIT)  # frame 0 is in the second stage, held there
        engine.started_event.clear()
        second, second_ns = _messages(1)
        node._on_synced(*second)
        # Pipelined, the engine takes frame 1 while frame 0 is held; serial, it cannot.
        ran_meanwhile = engine.started_event.wait(WAIT if pipeline else 1.0)
        assert ran_meanwhile == pipeline
        assert node.published == []
        node.release.set()
        deadline = time.monotonic() + WAIT
        while len(node.published) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert node.published == [first_ns, second_ns]  # in order, none lost
        assert engine.started == [first_ns, second_ns]
        assert node._processed == 2 and node._skipped == 0
        kept = node.history_entry(ns_to_stamp(second_ns))[0]
        np.testing.assert_array_equal(kept[1], make_frame(1).depth)
    finally:
        node.release.set()
        node.destroy_node()

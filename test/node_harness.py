"""Shared pieces of the node tests: a small synthetic frame, a recorded bag read back, a
subscriber to every output and a node process run with them, what a node says on /diagnostics,
and a node that must stop with one line."""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np
import rclpy
from depth_perception_msgs.msg import CompletionStatus
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

from depth_perception.core.camera import Intrinsics
from depth_perception.core.depth import depth_from_mm, depth_to_mm
from depth_perception.io.frames import RGBDFrame
from depth_perception.ros.conversions import (
    depth_image_to_metres,
    intrinsics_to_camera_info,
    ns_to_stamp,
    numpy_to_image,
)
from depth_perception.ros.qos import reliable_qos

#: A completion node's outputs (topic -> type), each collected by a default Collector.
COMPLETION_OUTPUTS = {
    "depth_completed/image": Image,
    "depth_completed/image_mm": Image,
    "depth_completed/points": PointCloud2,
    "depth_completed/camera_info": CameraInfo,
    "depth_completed/confidence": Image,
    "depth_completed/status": CompletionStatus,
}
#: The outputs a completion node publishes whatever its parameters: published = it is up.
COMPLETION_ALWAYS = (
    "depth_completed/image",
    "depth_completed/camera_info",
    "depth_completed/status",
)

W, H = 64, 48
INTR = Intrinsics(W, H, fx=50.0, fy=52.0, cx=31.5, cy=23.0, frame_id="cam_color_optical_frame")


def make_frame(i: int, seed: int = 0) -> RGBDFrame:
    """A wall at 2 m with a box at 1 m, 30 % random holes; sensor depth quantized to mm."""
    rng = np.random.default_rng(seed + i)
    gt = np.full((H, W), 2.0, np.float32)
    gt[15:30, 20:40] = 1.0
    raw = np.where(rng.random((H, W)) < 0.3, np.nan, gt).astype(np.float32)
    raw = depth_from_mm(depth_to_mm(raw))  # what a 16UC1 camera can say
    rgb = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    return RGBDFrame(
        stamp_ns=1_700_000_000_000_000_000 + i * 33_000_000,
        rgb=rgb,
        depth=raw,
        intrinsics=INTR,
        gt_depth=gt,
    )


class Collector:
    """Subscribes to every output of a node (a completion node's unless ``outputs`` names
    others) and /diagnostics, in its own context.

    ``ready``: the outputs whose publishers show that the node is up. Publishers a subclass
    adds to ``inputs`` (a driver's, feeding the node) must have the node subscribed too."""

    def __init__(
        self,
        namespace: str,
        outputs: dict[str, type] = COMPLETION_OUTPUTS,
        ready: tuple[str, ...] = COMPLETION_ALWAYS,
    ) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("collector", namespace=namespace, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.ready = ready
        self.inputs: list = []
        self.msgs: dict[str, list] = {}
        qos = reliable_qos(depth=50)
        for topic, kind in {**outputs, "/diagnostics": DiagnosticArray}.items():
            self.msgs[topic] = []
            self.node.create_subscription(kind, topic, self.msgs[topic].append, qos)

    def spin_until(self, predicate, timeout: float = 15.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.02)
        return predicate()

    def wait_for_publishers(self, topics: tuple[str, ...] | None = None, timeout: float = 20.0):
        """Until the outputs (``ready`` unless given) have publishers in the graph and the node
        subscribes to ``inputs``, then a short settle, so the first result published after
        this is not lost to unfinished endpoint matching. False if that never came."""
        names = [self.node.resolve_topic_name(t) for t in topics or self.ready]
        ok = self.spin_until(
            lambda: (
                all(self.node.count_publishers(n) > 0 for n in names)
                and all(p.get_subscription_count() > 0 for p in self.inputs)
            ),
            timeout,
        )
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.02)
        return ok

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def assert_depths(results, expected, log) -> None:
    """Every result has a depth, exactly the expected one (the node's log if one is missing)."""
    for res, exp in zip(results, expected, strict=True):
        assert res.depth is not None, log.read_text()
        np.testing.assert_array_equal(res.depth, exp)


def by_stamp(msgs, stamp_ns):
    """The message of ``msgs`` whose header stamp is ``stamp_ns`` (None if absent)."""
    for m in msgs:
        if m.header.stamp.sec * 10**9 + m.header.stamp.nanosec == stamp_ns:
            return m
    return None


@contextmanager
def running_node(
    executable: str,
    config: str,
    namespace: str,
    log,
    parameters=None,
    timeout=20.0,
    collector: Collector | None = None,
    roles: tuple[str, ...] | None = None,
):
    """A node process launched like `ros2 run` with the package's config, and on its namespace
    a Collector, connected; yields (node, client, collector).

    Without ``collector`` the node is a completion node: a Collector of its outputs and a
    ReplayClient feeding its inputs (the client; ``roles``: the streams it publishes, by default
    colour, depth and camera_info) are made. Another node brings a Collector of
    its own outputs, made beforehand (with publishers of its inputs in ``inputs``); client is
    then None. On exit everything is closed and the node must have shut down cleanly (exit
    code 0)."""
    from depth_perception.paths import config_file
    from depth_perception.ros.launcher import NodeProcess
    from depth_perception.ros.replay import ReplayClient

    node = NodeProcess(
        executable,
        params_file=config_file(config),
        namespace=namespace,
        parameters=parameters or {},
        log_path=log,
    ).start()
    if collector:
        client = None
    elif roles:
        client = ReplayClient(namespace, roles=roles)
    else:
        client = ReplayClient(namespace)
    collector = collector or Collector(namespace)
    try:
        assert client is None or client.wait_for_node(timeout), log.read_text()
        assert collector.wait_for_publishers(timeout=timeout), log.read_text()
        yield node, client, collector
    finally:
        if client is not None:
            client.close()
        collector.close()
        code = node.stop()
    assert code == 0, log.read_text()  # SIGINT -> clean shutdown


def recorded_frames(path, cfg, lidar: bool = False) -> list:
    """A simulated bag written to ``path`` from ``cfg``, read back as eval-bag reads it (with
    ``lidar``: each frame must carry its scans, and the bag's calibration)."""
    from depth_perception.eval.evaluate import chain_bags
    from depth_perception.io.bag import write_sim_bag

    write_sim_bag(path, cfg, progress=False)
    out = list(chain_bags([path]))
    if lidar:
        assert all(f.extra.get("lidar") is not None for f in out)
    return out


def statuses(collector, name, level=None):
    """The diagnostic statuses ``collector`` got from the node ``name`` (at ``level`` if given)."""
    return [
        s
        for arr in collector.msgs["/diagnostics"]
        for s in arr.status
        if name in s.name and (level is None or s.level == level)
    ]


def status_value(status, key):
    """The value under ``key`` in a diagnostic status (None if absent)."""
    return next((kv.value for kv in status.values if kv.key == key), None)


def publish_images(client, frame, stamp_ns):
    """Publish ``frame``'s colour and camera_info (no depth) at ``stamp_ns``."""
    header = Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame.frame_id)
    client.publish_messages(
        numpy_to_image(frame.rgb, "rgb8", header),
        None,
        intrinsics_to_camera_info(frame.intrinsics, header),
    )


def wait_output(collector, stamp_ns, timeout=15.0):
    """The completed depth (metres) published for ``stamp_ns``; fails if none comes."""
    assert collector.spin_until(
        lambda: by_stamp(collector.msgs["depth_completed/image"], stamp_ns) is not None, timeout
    ), f"no output for stamp {stamp_ns}"
    return depth_image_to_metres(by_stamp(collector.msgs["depth_completed/image"], stamp_ns))


def ma_node_parameters(pipeline, num_threads: int, **extra) -> dict:
    """A MetricAnything pipeline's node parameters, on the CPU with ``num_threads`` threads and
    an unbounded ``max_depth`` (a random network's depth is not bounded by the scene)."""
    return {
        **pipeline.node_parameters,
        "device": "cpu",
        "num_threads": num_threads,
        "max_depth": 1000.0,
        **extra,
    }


def failed_node_log(executable: str, namespace: str, parameters: dict, log, timeout: float):
    """Run a node whose parameters cannot work: it must exit with code 1 within ``timeout``
    and no traceback; returns its log."""
    from depth_perception.ros.launcher import NodeProcess

    node = NodeProcess(executable, namespace=namespace, parameters=parameters, log_path=log).start()
    try:
        node.process.wait(timeout=timeout)
    finally:
        node.stop()
    text = log.read_text()
    assert node.process.returncode == 1, text
    assert "Traceback" not in text
    return text

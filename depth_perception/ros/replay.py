"""Replay decoded frames to a depth node over DDS and collect what it publishes.

The client plays the sensor drivers, publishing the streams a pipeline takes (``roles``, from
:func:`depth_perception.engines.base.input_roles`; the same rule the node subscribes by):
colour (rgb8), registered depth (16UC1 mm, as RealSense / Orbbec drivers publish, or 32FC1
metres with ``depth_encoding``) and camera_info with one stamp per frame, under the node's
namespace; with ``lidar`` / ``radar``, the frame's scan (``frame.extra``, its own frame_id and
stamp) on ``lidar/points`` / ``radar/points`` just before the images, and the rig's
extrinsics (the frame's calibration) once on ``/tf_static`` (transient local, as
static_transform_publisher); with ``targets``, the frame's targets (``frame.extra["targets"]``,
the colour image's header) on ``targets`` just before the images. It collects
``depth_completed/image`` and ``depth_completed/status`` by stamp.

Two pacings:
- lockstep (``rate=None``): publish a frame, wait for its result, then the next one. The
  evaluation sees every frame, at whatever speed the pipeline manages.
- timed (``rate=r``): publish at the bag's stamps sped up r times without waiting, as a live camera
  would; frames the node skips (newest-frame policy) simply have no result.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import rclpy
from depth_perception_msgs.msg import CompletionStatus, TargetPromptArray
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

from depth_perception.core.prompts import CLOUD_SOURCES
from depth_perception.engines.base import RGBD_INPUTS, input_roles
from depth_perception.eval.pipelines import frame_cloud
from depth_perception.io.calibration import Calibration
from depth_perception.io.frames import RGBDFrame
from depth_perception.ros.completion_node import OUTPUT_PREFIX, ROLE_TOPICS
from depth_perception.ros.conversions import (
    array_to_pointcloud2,
    depth_image_to_metres,
    intrinsics_to_camera_info,
    metres_to_depth_image,
    ns_to_stamp,
    numpy_to_image,
    stamp_to_ns,
)
from depth_perception.ros.qos import reliable_qos


@dataclass
class ReplayResult:
    frame: RGBDFrame
    depth: np.ndarray | None  # published completed depth (m), None if nothing came back
    status: CompletionStatus | None
    round_trip_ms: float | None  # publish -> result received (lockstep pacing only)


#: What a completion node takes by default: colour, depth, camera_info.
RGBD_ROLES = input_roles(RGBD_INPUTS)
#: Spin this long after publishing a frame's scans, before its images: the node's newest scan
#: is then that frame's (clouds and images travel on separate topics, unsynchronised).
CLOUD_SETTLE_S = 0.03
#: ... and this long after a new ``/tf_static`` (once per calibration).
TF_SETTLE_S = 0.3


class ReplayClient:
    """A sensor-driver stand-in with its own rclpy context (safe beside other nodes in-process).

    ``roles``: the streams to publish (default colour, depth and camera_info); ``calibration``:
    the extrinsics to put on ``/tf_static`` for ``lidar`` / ``radar`` when a frame carries none
    of its own (``frame.extra["calibration"]``); ``depth_encoding``: ``16UC1`` (millimetres,
    as a camera driver) or ``32FC1`` (metres as given, e.g. a synthetic prompt beyond 65 m).
    """

    def __init__(
        self,
        namespace: str = "/camera",
        node_name: str = "depth_replay",
        roles: tuple[str, ...] = RGBD_ROLES,
        calibration: Calibration | None = None,
        depth_encoding: str = "16UC1",
    ) -> None:
        unknown = set(roles) - set(ROLE_TOPICS)
        if unknown:
            raise ValueError(f"ReplayClient cannot publish {sorted(unknown)}")
        if depth_encoding not in ("16UC1", "32FC1"):
            raise ValueError(f"depth_encoding {depth_encoding!r}: choose 16UC1 or 32FC1")
        self.depth_encoding = depth_encoding
        self.roles = tuple(roles)
        self.calibration = calibration
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(node_name, namespace=namespace, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        qos = reliable_qos(depth=10)
        kinds = {
            "rgb_info": CameraInfo,
            "targets": TargetPromptArray,
            **dict.fromkeys(CLOUD_SOURCES, PointCloud2),
        }
        self._pubs = {
            role: self.node.create_publisher(kinds.get(role, Image), ROLE_TOPICS[role], qos)
            for role in self.roles
        }
        self._pub_rgb = self._pubs.get("rgb")
        self._pub_depth = self._pubs.get("depth")
        self._pub_info = self._pubs.get("rgb_info")
        self._clouds = [r for r in self.roles if r in CLOUD_SOURCES]
        self._pub_tf = None
        self._tf_sent: list | None = None
        if self._clouds:
            from depth_perception.ros.tf_static import TF_STATIC_TOPIC, TFMessage, tf_static_qos

            self._pub_tf = self.node.create_publisher(TFMessage, TF_STATIC_TOPIC, tf_static_qos())
        self._depth_out: dict[int, Image] = {}
        self._status_out: dict[int, CompletionStatus] = {}
        self.node.create_subscription(
            Image, f"{OUTPUT_PREFIX}/image", self._on_depth, reliable_qos(depth=50)
        )
        self.node.create_subscription(
            CompletionStatus, f"{OUTPUT_PREFIX}/status", self._on_status, reliable_qos(depth=50)
        )

    def _on_depth(self, msg: Image) -> None:
        self._depth_out[stamp_to_ns(msg.header.stamp)] = msg

    def _on_status(self, msg: CompletionStatus) -> None:
        self._status_out[stamp_to_ns(msg.header.stamp)] = msg

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=min(0.01, max(0.0, end - time.monotonic())))

    def wait_for_node(self, timeout_s: float = 20.0) -> bool:
        """Wait until the node under test subscribes to our inputs and publishes its outputs."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            connected = all(p.get_subscription_count() > 0 for p in self._pubs.values())
            outputs = self.node.count_publishers(
                self.node.resolve_topic_name(f"{OUTPUT_PREFIX}/image")
            )
            if connected and outputs > 0:
                self.spin_for(0.3)  # let the reverse (output) matching settle too
                return True
            self.spin_for(0.05)
        return False

    def publish(self, frame: RGBDFrame) -> None:
        """The frame's streams (``roles``): its scans first (and ``/tf_static`` when its
        calibration is new), a short settle, then camera_info, colour and depth."""
        if self._clouds:
            self.publish_tf_static(frame.extra.get("calibration") or self.calibration, frame)
            sent = False
            for source in self._clouds:
                scan = frame_cloud(frame, source)
                if scan is not None:
                    cloud, frame_id, stamp_ns = scan
                    header = Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)
                    self._pubs[source].publish(array_to_pointcloud2(cloud, header))
                    sent = True
            if sent:
                self.spin_for(CLOUD_SETTLE_S)
        header = Header(stamp=ns_to_stamp(frame.stamp_ns), frame_id=frame.frame_id)
        if "targets" in self._pubs:  # not synchronised either: before the images, as scans
            from depth_perception.io.bag import targets_to_msg

            self._pubs["targets"].publish(targets_to_msg(frame.extra.get("targets") or [], header))
            self.spin_for(CLOUD_SETTLE_S)
        self.publish_messages(
            numpy_to_image(frame.rgb, "rgb8", header),
            metres_to_depth_image(frame.depth, header, self.depth_encoding)
            if self._pub_depth
            else None,
            intrinsics_to_camera_info(frame.intrinsics, header),
        )

    def publish_tf_static(self, calibration: Calibration | None, frame: RGBDFrame) -> None:
        """The calibration's extrinsics on ``/tf_static``, once per distinct set."""
        if calibration is None or self._pub_tf is None:
            return
        if self._tf_sent == calibration.extrinsics:
            return
        from depth_perception.ros.tf_static import extrinsics_to_tf_message

        self._pub_tf.publish(extrinsics_to_tf_message(calibration.extrinsics, frame.stamp_ns))
        self._tf_sent = list(calibration.extrinsics)
        self.spin_for(TF_SETTLE_S)

    def publish_messages(
        self, rgb: Image | None, depth: Image | None, info: CameraInfo | None
    ) -> None:
        """Publish ready-made input messages as a driver would (camera_info first); None
        leaves that input out, e.g. a colour image the driver dropped."""
        for pub, msg in ((self._pub_info, info), (self._pub_rgb, rgb), (self._pub_depth, depth)):
            if msg is not None:
                if pub is None:
                    raise ValueError("this ReplayClient does not publish that input")
                pub.publish(msg)

    def publish_targets(self, targets: TargetPromptArray) -> None:
        """A ready-made ``targets`` message (e.g. stale, or drawn on another frame)."""
        self._pubs["targets"].publish(targets)

    def publish_cloud(self, source: str, cloud: PointCloud2) -> None:
        """A ready-made ``lidar`` / ``radar`` cloud (e.g. a malformed one)."""
        self._pubs[source].publish(cloud)

    def _take(self, stamp_ns: int) -> tuple[np.ndarray | None, CompletionStatus | None]:
        msg = self._depth_out.pop(stamp_ns, None)
        depth = depth_image_to_metres(msg) if msg is not None else None
        return depth, self._status_out.pop(stamp_ns, None)

    def run(
        self,
        frames: Iterable[RGBDFrame],
        rate: float | None = None,
        timeout_s: float = 30.0,
    ) -> Iterator[ReplayResult]:
        if rate is None:
            yield from self._run_lockstep(frames, timeout_s)
        else:
            yield from self._run_timed(frames, rate, timeout_s)

    def _run_lockstep(
        self, frames: Iterable[RGBDFrame], timeout_s: float
    ) -> Iterator[ReplayResult]:
        for frame in frames:
            t0 = time.monotonic()
            self.publish(frame)
            end = t0 + timeout_s
            # One re-send if nothing came back after a third of the timeout: the first frame
            # after start-up can be lost while DDS is still matching the reverse direction.
            resend_at = t0 + timeout_s / 3
            while time.monotonic() < end and not (
                frame.stamp_ns in self._depth_out and frame.stamp_ns in self._status_out
            ):
                self.executor.spin_once(timeout_sec=0.005)
                if resend_at is not None and time.monotonic() > resend_at:
                    if frame.stamp_ns not in self._depth_out:
                        self.publish(frame)
                    resend_at = None
            received = frame.stamp_ns in self._depth_out
            round_trip = (time.monotonic() - t0) * 1e3 if received else None
            depth, status = self._take(frame.stamp_ns)
            yield ReplayResult(frame, depth, status, round_trip)

    def _run_timed(
        self, frames: Iterable[RGBDFrame], rate: float, timeout_s: float
    ) -> Iterator[ReplayResult]:
        sent: list[RGBDFrame] = []
        t_start = first_stamp = None
        for frame in frames:
            if t_start is None:
                t_start, first_stamp = time.monotonic(), frame.stamp_ns
            due = t_start + (frame.stamp_ns - first_stamp) * 1e-9 / rate
            while time.monotonic() < due:
                self.executor.spin_once(timeout_sec=max(0.0, min(0.005, due - time.monotonic())))
            self.publish(frame)
            sent.append(frame)
        # Results of the last frames may still be on their way.
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and sent and sent[-1].stamp_ns not in self._status_out:
            self.executor.spin_once(timeout_sec=0.01)
        self.spin_for(0.2)
        for frame in sent:
            depth, status = self._take(frame.stamp_ns)
            yield ReplayResult(frame, depth, status, None)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)

    def __enter__(self) -> ReplayClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

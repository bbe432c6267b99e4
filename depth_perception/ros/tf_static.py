"""``/tf_static`` without tf2_ros: its messages feed our own static-transform buffer.

tf2_ros is not installable here (no wheel), and the nodes only need *static* extrinsics (a
LiDAR or radar bolted to the robot beside the camera), so :class:`TfStaticListener` subscribes
to ``/tf_static`` (``tf2_msgs/msg/TFMessage``) with tf2's static-listener QoS (reliable,
transient local, keep last 100: a late subscriber still receives every latched message) and
puts each ``geometry_msgs/TransformStamped`` into a
:class:`depth_perception.io.calibration.StaticTransforms` — the same buffer a calibration file
fills. ``tf2_msgs`` is the ROS install's, or the TFMessage-only package the bootstrap builds
(``msg_compat/tf2_msgs``) where there is none.

A transform that cannot be used (empty or equal frame ids, non-finite values, a quaternion
far from unit length, a cycle) is skipped and reported through ``on_error``; the others of the
same message are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from geometry_msgs.msg import TransformStamped
from rclpy.node import Node
from tf2_msgs.msg import TFMessage

from depth_perception.io.calibration import Extrinsic, StaticTransforms
from depth_perception.ros.conversions import ns_to_stamp
from depth_perception.ros.qos import tf_static_qos

TF_STATIC_TOPIC = "/tf_static"


def transform_to_extrinsic(msg: Any) -> Extrinsic:
    """A ``TransformStamped`` (parent = header.frame_id, child = child_frame_id) -> Extrinsic;
    ValueError saying what is wrong with it."""
    parent, child = str(msg.header.frame_id), str(msg.child_frame_id)
    what = f"transform '{parent}' -> '{child}'"
    if not parent or not child:
        raise ValueError(f"{what}: empty frame id")
    if parent == child:
        raise ValueError(f"{what}: a frame cannot be its own parent")
    t, q = msg.transform.translation, msg.transform.rotation
    translation = np.array([t.x, t.y, t.z], dtype=np.float64)
    rotation = np.array([q.x, q.y, q.z, q.w], dtype=np.float64)
    if not (np.isfinite(translation).all() and np.isfinite(rotation).all()):
        raise ValueError(f"{what}: non-finite translation or rotation")
    norm = float(np.linalg.norm(rotation))
    if not 0.99 < norm < 1.01:
        raise ValueError(f"{what}: rotation quaternion has length {norm:.4f}, not 1")
    return Extrinsic(parent, child, tuple(translation), tuple(rotation))


def extrinsics_to_tf_message(extrinsics: Iterable[Extrinsic], stamp_ns: int) -> TFMessage:
    """What a static_transform_publisher would send for ``extrinsics``."""
    out = TFMessage()
    for e in extrinsics:
        msg = TransformStamped()
        msg.header.stamp = ns_to_stamp(stamp_ns)
        msg.header.frame_id = e.parent
        msg.child_frame_id = e.child
        tr = msg.transform.translation
        tr.x, tr.y, tr.z = e.translation
        rot = msg.transform.rotation
        rot.x, rot.y, rot.z, rot.w = e.rotation
        out.transforms.append(msg)
    return out


class TfStaticListener:
    """Fills ``buffer`` from ``/tf_static``; ``on_error(message)`` for each unusable transform."""

    def __init__(
        self, node: Node, buffer: StaticTransforms, on_error: Callable[[str], None]
    ) -> None:
        self.buffer = buffer
        self._on_error = on_error
        self._logger = node.get_logger()
        self.subscription = node.create_subscription(
            TFMessage, TF_STATIC_TOPIC, self._on_message, tf_static_qos()
        )

    def _on_message(self, msg: TFMessage) -> None:
        for transform in msg.transforms:
            try:
                extrinsic = transform_to_extrinsic(transform)
                if self.buffer.set_transform(extrinsic):
                    self._logger.info(
                        f"static transform {extrinsic.parent} -> {extrinsic.child} "
                        f"from {TF_STATIC_TOPIC}"
                    )
            except ValueError as exc:
                self._on_error(f"{TF_STATIC_TOPIC}: unusable transform skipped: {exc}")

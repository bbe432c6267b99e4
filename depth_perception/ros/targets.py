"""A node's targets: the prompts coming in (``targets``) and what it found going out.

In: ``targets`` (depth_perception_msgs/TargetPromptArray) from a detector or an operator. Not a
sync partner of the camera: like a LiDAR prompt (:mod:`depth_perception.ros.prompt_sources`)
the newest targets are kept, and a camera frame uses each target whose stamp is within
``max_target_age`` seconds of the frame's. A target older than that is dropped (it can never
become fresh again: frames only move forward) and counted; one newer than the frame by more
than that is skipped for this frame and kept. A target whose header frame_id is not the colour
image's (a box drawn on another camera's image) is dropped and counted. Each drop is a throttled
ERROR on /diagnostics naming the target.

Reliable QoS, depth 10, on purpose: targets are sparse events (a detector at a few Hz, a single
command from an operator or a planner), not a stream where the next message replaces a lost one;
losing one would leave an object unrefined until someone asks again. (A reliable subscription
matches reliable publishers only, rclpy's and rclcpp's default.)

Out (:class:`TargetOutputs`), every frame, header = the frame's (stamp, ``_optical`` frame):

- ``targets/geometry`` (TargetGeometryArray): one TargetGeometry per target given to the
  engine, in order, ids and texts echoed; ``valid`` false with ``error`` for one that failed;
- ``targets/cloud`` (PointCloud2, unorganized, fields x, y, z float32 + target_id uint32): the
  points of every processed target in one message. One topic whatever the ids, so a planner
  subscribes once and filters by ``target_id``, in step with the geometry (same stamp); one
  topic per id would create topics at run time that nobody can remap or subscribe to ahead;
- ``targets/mask`` (mono8): 255 where any processed target's mask is, 0 elsewhere (the union;
  which target a point belongs to is on the cloud; a value per id would cap ids at 255);
- ``targets/markers`` (visualization_msgs/MarkerArray): DELETEALL, then per processed target a
  CUBE (the oriented box) and a TEXT_VIEW_FACING label ("<id> <text> <score>") above it, with
  ``marker_lifetime`` so markers of a stopped node vanish.
"""

from __future__ import annotations

import colorsys
import threading
from dataclasses import dataclass, field

import numpy as np
from depth_perception_msgs.msg import (
    TargetGeometry,
    TargetGeometryArray,
    TargetPrompt,
    TargetPromptArray,
)
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from rclpy.duration import Duration
from rclpy.node import Node
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from depth_perception.engines.base import TargetResult
from depth_perception.io.frames import Target
from depth_perception.ros.conversions import array_to_pointcloud2, numpy_to_image, stamp_to_ns
from depth_perception.ros.qos import reliable_qos

TARGETS_TOPIC = "targets"
OUTPUT_PREFIX = "targets"
#: Default ``max_target_age`` (seconds).
DEFAULT_MAX_TARGET_AGE = 0.5
CLOUD_DTYPE = np.dtype(
    [("x", np.float32), ("y", np.float32), ("z", np.float32), ("target_id", np.uint32)]
)


# ---------------------------------------------------------------------------------------------
# In
# ---------------------------------------------------------------------------------------------


@dataclass
class TargetTake:
    """The targets a frame uses and what was dropped on the way."""

    targets: list[Target] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (kind, message)
    newer: int = 0  # skipped for this frame: drawn on a later image


def _target(msg: TargetPrompt) -> Target:
    box = msg.box
    return Target(
        target_id=int(msg.target_id),
        text=str(msg.text),
        box=(int(box.x_offset), int(box.y_offset), int(box.width), int(box.height)),
        score=float(msg.score),
    )


class TargetSource:
    """Subscribes to ``targets`` and hands each frame the fresh ones (module docstring)."""

    def __init__(self, node: Node, max_age_s: float, topic: str = TARGETS_TOPIC) -> None:
        self.max_age_s = float(max_age_s)
        self.topic = node.resolve_topic_name(topic)
        self._lock = threading.Lock()
        self._pending: list[tuple[TargetPrompt, int, str]] = []  # (target, stamp ns, frame)
        self.received = 0  # TargetPromptArray messages
        self.stale = 0  # targets dropped: older than max_target_age
        self.wrong_frame = 0  # targets dropped: not drawn on the colour image's frame
        node.create_subscription(TargetPromptArray, topic, self._on_targets, reliable_qos(10))

    def _on_targets(self, msg: TargetPromptArray) -> None:
        pending = []
        for t in msg.targets:
            # A target's own header, else the array's (the message says both are the image's).
            header = t.header if stamp_to_ns(t.header.stamp) or t.header.frame_id else msg.header
            pending.append((t, stamp_to_ns(header.stamp), str(header.frame_id)))
        with self._lock:
            self._pending = pending  # the newest array replaces the previous one
            self.received += 1

    def take(self, stamp_ns: int, frame_id: str) -> TargetTake:
        """The targets for a colour frame of ``stamp_ns`` in ``frame_id``; drops stale and
        wrong-frame ones (counted, each an error)."""
        out = TargetTake()
        keep = []
        with self._lock:
            for entry in self._pending:
                msg, target_ns, target_frame = entry
                age = (stamp_ns - target_ns) * 1e-9
                name = f"target {msg.target_id}" + (f" ({msg.text!r})" if msg.text else "")
                if target_frame != frame_id:
                    self.wrong_frame += 1
                    out.errors.append(
                        (
                            "target_frame",
                            f"{name} dropped: drawn on frame {target_frame!r}, not the colour "
                            f"image's {frame_id!r}",
                        )
                    )
                elif age > self.max_age_s:
                    self.stale += 1
                    out.errors.append(
                        (
                            "target_stale",
                            f"{name} dropped: {age:.3f} s older than the frame (max_target_age "
                            f"{self.max_age_s:g} s)",
                        )
                    )
                else:
                    keep.append(entry)
                    if age < -self.max_age_s:
                        out.newer += 1
                    else:
                        out.targets.append(_target(msg))
            self._pending = keep
        return out

    def counters(self) -> dict[str, int]:
        return {
            "target_messages": self.received,
            "targets_stale": self.stale,
            "targets_wrong_frame": self.wrong_frame,
        }


# ---------------------------------------------------------------------------------------------
# Out
# ---------------------------------------------------------------------------------------------


def rotation_to_quaternion(rotation: np.ndarray) -> Quaternion:
    """A proper rotation matrix -> unit quaternion (Shepperd's method, w >= 0)."""
    m = np.asarray(rotation, dtype=np.float64)
    trace = np.trace(m)
    if trace > 0:
        s = 2.0 * np.sqrt(1.0 + trace)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = [0.0] * 4
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    w, x, y, z = np.asarray(q) / np.linalg.norm(q) * (1.0 if q[0] >= 0 else -1.0)
    return Quaternion(x=float(x), y=float(y), z=float(z), w=float(w))


def target_geometry_msg(result: TargetResult, header) -> TargetGeometry:
    """One TargetResult -> TargetGeometry (``valid`` false, ``error`` set when it failed)."""
    msg = TargetGeometry(header=header, target_id=int(result.target_id), text=result.text)
    msg.score = float(result.score)
    msg.mask_pixels = int(np.count_nonzero(result.mask)) if result.mask is not None else 0
    if not result.ok:
        msg.valid, msg.error = False, str(result.error)
        return msg
    g, fit = result.geometry, result.fit
    msg.valid = True
    msg.centroid = Point(x=float(g.centroid[0]), y=float(g.centroid[1]), z=float(g.centroid[2]))
    centre = Point(x=float(g.box_center[0]), y=float(g.box_center[1]), z=float(g.box_center[2]))
    msg.box_pose = Pose(position=centre, orientation=rotation_to_quaternion(g.box_rotation))
    msg.box_size = Vector3(
        x=float(g.box_extent[0]), y=float(g.box_extent[1]), z=float(g.box_extent[2])
    )
    msg.point_count = int(g.n_points)
    msg.fit_scale, msg.fit_shift = float(fit.scale), float(fit.shift)
    msg.fit_pixels, msg.fit_target_pixels = int(fit.n_pixels), int(fit.n_target)
    msg.fit_inlier_ratio = float(fit.inlier_ratio)
    msg.fit_target_inlier_ratio = float(fit.target_inlier_ratio)
    msg.fit_residual = float(fit.residual)
    return msg


def target_cloud_msg(results: list[TargetResult], header) -> PointCloud2:
    """Every processed target's points with their target_id, one unorganized cloud."""
    parts = [r for r in results if r.ok]
    n = sum(len(r.points) for r in parts)
    cloud = np.empty(n, dtype=CLOUD_DTYPE)
    start = 0
    for r in parts:
        end = start + len(r.points)
        for i, c in enumerate("xyz"):
            cloud[c][start:end] = r.points[:, i]
        cloud["target_id"][start:end] = r.target_id
        start = end
    return array_to_pointcloud2(cloud, header, is_dense=True)


def target_mask_image(results: list[TargetResult], shape: tuple[int, int], header) -> Image:
    """mono8: 255 on the union of the processed targets' masks, 0 elsewhere."""
    mask = np.zeros(shape, dtype=np.uint8)
    for r in results:
        if r.ok:
            mask[r.mask] = 255
    return numpy_to_image(mask, "mono8", header)


def _colour(target_id: int) -> ColorRGBA:
    hue = (int(target_id) * 0.618033988749895) % 1.0  # golden-ratio hues: neighbours differ
    r, g, b = colorsys.hsv_to_rgb(hue, 0.8, 1.0)
    return ColorRGBA(r=r, g=g, b=b, a=0.5)


def target_markers(results: list[TargetResult], header, lifetime_s: float) -> MarkerArray:
    """DELETEALL, then a CUBE per processed target's oriented box and a text label above it
    (optical frame: y points down, so "above" is -y)."""
    lifetime = Duration(seconds=float(lifetime_s)).to_msg()
    markers = [Marker(header=header, action=Marker.DELETEALL)]
    for r in results:
        if not r.ok:
            continue
        g = r.geometry
        ident = int(r.target_id) & 0x7FFFFFFF  # Marker.id is int32
        colour = _colour(r.target_id)
        cube = Marker(header=header, ns="target_boxes", id=ident, type=Marker.CUBE)
        centre = Point(x=float(g.box_center[0]), y=float(g.box_center[1]), z=float(g.box_center[2]))
        cube.pose = Pose(position=centre, orientation=rotation_to_quaternion(g.box_rotation))
        size = np.maximum(g.box_extent, 1e-3)  # a flat box still shows
        cube.scale = Vector3(x=float(size[0]), y=float(size[1]), z=float(size[2]))
        cube.color, cube.lifetime = colour, lifetime
        label = Marker(header=header, ns="target_labels", id=ident, type=Marker.TEXT_VIEW_FACING)
        above = float(np.max(g.box_extent)) / 2 + 0.03
        label.pose.position = Point(x=centre.x, y=centre.y - above, z=centre.z)
        label.scale.z = 0.04  # text height, metres
        label.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        label.text = f"{r.target_id} {r.text} {r.score:.2f}".replace("  ", " ")
        label.lifetime = lifetime
        markers += [cube, label]
    return MarkerArray(markers=markers)


class TargetOutputs:
    """The publishers of ``targets/*`` (module docstring) and their per-frame publication."""

    def __init__(self, node: Node, lifetime_s: float, qos_depth: int = 5) -> None:
        qos = reliable_qos(qos_depth)
        self.lifetime_s = float(lifetime_s)
        self._geometry = node.create_publisher(
            TargetGeometryArray, f"{OUTPUT_PREFIX}/geometry", qos
        )
        self._cloud = node.create_publisher(PointCloud2, f"{OUTPUT_PREFIX}/cloud", qos)
        self._mask = node.create_publisher(Image, f"{OUTPUT_PREFIX}/mask", qos)
        self._markers = node.create_publisher(MarkerArray, f"{OUTPUT_PREFIX}/markers", qos)
        self.processed = 0  # targets with geometry
        self.failed: dict[str, int] = {}  # error kind -> targets

    def publish(
        self, header, shape: tuple[int, int], results: list[TargetResult]
    ) -> list[tuple[str, str]]:
        """Publish one frame's target outputs; the failed targets' (kind, message)."""
        errors = []
        for r in results:
            if r.ok:
                self.processed += 1
            else:
                kind = f"target_{r.error_kind or 'error'}"
                self.failed[kind] = self.failed.get(kind, 0) + 1
                errors.append((kind, str(r.error)))
        array = TargetGeometryArray(header=header)
        array.targets = [target_geometry_msg(r, header) for r in results]
        self._geometry.publish(array)
        self._cloud.publish(target_cloud_msg(results, header))
        self._mask.publish(target_mask_image(results, shape, header))
        self._markers.publish(target_markers(results, header, self.lifetime_s))
        return errors

    def counters(self) -> dict[str, int]:
        return {
            "targets_processed": self.processed,
            "target_errors": sum(self.failed.values()),
            **{f"errors_{k}": n for k, n in self.failed.items()},
        }

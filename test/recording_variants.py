"""Recordings as real drivers write them, written by the tests with ``rosbags`` from our frames:
driver topic layouts, ``compressed`` colour, ``compressedDepth`` depth, ROS 1 storage, camera_info
once at stamp 0, depth from another camera with its extrinsic on /tf_static.

Messages are built with our rclpy conversions (the encoders the node publishes with) and, for
ROS 1, copied field by field into the ROS 1 Noetic types (``K``/``D`` spellings, ``seq``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rclpy.serialization import serialize_message
from rosbags.rosbag1 import Writer as Ros1Writer
from rosbags.typesys import Stores, get_typestore

from depth_perception.core.camera import Intrinsics
from depth_perception.io.bag import _BagWriter, _header, canonical_cdr, tf_static_bytes
from depth_perception.io.calibration import Extrinsic
from depth_perception.ros.conversions import (
    intrinsics_to_camera_info,
    metres_to_compressed_depth,
    metres_to_depth_image,
    numpy_to_image,
    rgb_to_compressed_image,
)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
INFO = "sensor_msgs/msg/CameraInfo"

#: role -> topic of the RealSense ROS 2 wrapper (realsense2_camera 4.x, default namespace).
REALSENSE_ROS2 = {
    "rgb": "/camera/camera/color/image_raw",
    "rgb_info": "/camera/camera/color/camera_info",
    "depth": "/camera/camera/aligned_depth_to_color/image_raw",
    "depth_info": "/camera/camera/aligned_depth_to_color/camera_info",
}
#: The same wrapper's raw depth (its own camera, not registered to colour).
REALSENSE_ROS2_RAW_DEPTH = {
    **REALSENSE_ROS2,
    "depth": "/camera/camera/depth/image_rect_raw",
    "depth_info": "/camera/camera/depth/camera_info",
}


@dataclass
class Frame:
    stamp_ns: int
    rgb: np.ndarray
    depth: np.ndarray  # metres, NaN = hole, in the depth camera


def synthetic_frames(n: int = 3, w: int = 64, h: int = 48, seed: int = 0) -> list[Frame]:
    """Smooth colour (what JPEG keeps) and a slanted wall at 0.6-4 m (mm-exact values) with
    10 % holes."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        v, u = np.mgrid[0:h, 0:w]
        phase = rng.uniform(0, 2 * np.pi, 3)
        rgb = np.stack(
            [128 + 100 * np.sin(u / 9.0 + v / 13.0 * (c + 1) + phase[c]) for c in range(3)], -1
        ).astype(np.uint8)
        depth = (0.6 + 3.4 * (u + v) / (w + h) + 0.05 * i).astype(np.float32)
        depth = np.round(depth * 1000) / 1000
        depth[rng.random((h, w)) < 0.1] = np.nan
        out.append(Frame(1_000_000_000 + i * 100_000_000, rgb, depth.astype(np.float32)))
    return out


def colour_message(rgb: np.ndarray, header, colour: str):
    if colour == "raw":
        return IMAGE, numpy_to_image(rgb, "rgb8", header)
    return COMPRESSED, rgb_to_compressed_image(rgb, header, format=colour)


def depth_message(depth: np.ndarray, header, depth_format: str):
    """raw (16UC1 Image) | 16UC1 | 32FC1 (compressedDepth)."""
    if depth_format == "raw":
        return IMAGE, metres_to_depth_image(depth, header, "16UC1")
    return COMPRESSED, metres_to_compressed_depth(depth, header, encoding=depth_format)


def _topic(base: str, msgtype: str, suffix: str) -> str:
    return f"{base}/{suffix}" if msgtype == COMPRESSED else base


def write_variant(
    path: Path,
    frames: list[Frame],
    colour_intr: Intrinsics,
    *,
    topics: dict[str, str] = REALSENSE_ROS2,
    colour: str = "raw",  # raw | jpeg | png
    depth: str = "raw",  # raw | 16UC1 | 32FC1
    storage: str = "sqlite3",  # sqlite3 | mcap | ros1
    info_once_at_zero: bool = False,
    depth_intr: Intrinsics | None = None,  # another camera's depth (None: registered)
    depth_offset_ns: int = 0,  # depth stamped this much after colour
    depth_every: int = 1,  # a depth image with every n-th colour image
    tf_static: list[Extrinsic] | None = None,
) -> Path:
    """Write ``frames`` as a driver would; returns the recording's path."""
    depth_intr = depth_intr or colour_intr
    messages = []  # (bag time, topic, msgtype, rclpy message)
    for k, f in enumerate(frames):
        info_stamp = 0 if info_once_at_zero else f.stamp_ns
        hdr = _header(f.stamp_ns, colour_intr.frame_id)
        msgtype, msg = colour_message(f.rgb, hdr, colour)
        messages.append((f.stamp_ns, _topic(topics["rgb"], msgtype, "compressed"), msgtype, msg))
        if k % depth_every == 0:
            t = f.stamp_ns + depth_offset_ns
            msgtype, msg = depth_message(f.depth, _header(t, depth_intr.frame_id), depth)
            messages.append((t, _topic(topics["depth"], msgtype, "compressedDepth"), msgtype, msg))
        if not info_once_at_zero or k == 0:
            for role, intr in (("rgb_info", colour_intr), ("depth_info", depth_intr)):
                info = intrinsics_to_camera_info(intr, _header(info_stamp, intr.frame_id))
                messages.append((f.stamp_ns, topics[role], INFO, info))
    messages.sort(key=lambda m: m[0])
    if storage == "ros1":
        return _write_ros1(path, messages, tf_static)
    with _BagWriter(path, storage) as w:
        if tf_static:
            w.write("/tf_static", "tf2_msgs/msg/TFMessage", 1, tf_static_bytes(tf_static, 1))
        for t, topic, msgtype, msg in messages:
            w.write(topic, msgtype, t, canonical_cdr(serialize_message(msg), msgtype))
    return path


_NOETIC = get_typestore(Stores.ROS1_NOETIC)


def _ros1(msg, msgtype: str):
    """An rclpy message as the ROS 1 Noetic type (ROS 1 field spellings, a header seq)."""
    T = _NOETIC.types
    h = msg.header
    header = T["std_msgs/msg/Header"](
        seq=0,
        stamp=T["builtin_interfaces/msg/Time"](sec=h.stamp.sec, nanosec=h.stamp.nanosec),
        frame_id=h.frame_id,
    )
    data = np.frombuffer(bytes(msg.data), np.uint8) if hasattr(msg, "data") else None
    if msgtype == IMAGE:
        return T[IMAGE](header, msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step,
                        data)  # fmt: skip
    if msgtype == COMPRESSED:
        return T[COMPRESSED](header, msg.format, data)
    roi = T["sensor_msgs/msg/RegionOfInterest"](0, 0, 0, 0, False)
    return T[INFO](header, msg.height, msg.width, msg.distortion_model, np.array(msg.d),
                   np.array(msg.k), np.array(msg.r), np.array(msg.p), 0, 0, roi)  # fmt: skip


def _write_ros1(path: Path, messages: list, tf_static) -> Path:
    if tf_static:
        raise NotImplementedError("tf2_msgs/TFMessage is not in the Noetic store; use tf/tfMessage")
    path = path.with_suffix(".bag")
    conns = {}
    with Ros1Writer(path) as w:
        for t, topic, msgtype, msg in messages:
            if topic not in conns:
                conns[topic] = w.add_connection(topic, msgtype, typestore=_NOETIC)
            w.write(conns[topic], t, _NOETIC.serialize_ros1(_ros1(msg, msgtype), msgtype))
    return path

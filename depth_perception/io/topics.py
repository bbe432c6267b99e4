"""Topic roles: which topics of a recording are the colour image, the depth, their camera_infos,
LiDAR, radar, tf and ground truth — found by message type and by the topic layouts of the
common drivers, not by fixed names.

One resolver serves every verb that reads a recording (``bag-info``, ``eval-bag``, ``complete``,
``training.extract``, the demo). It looks at (topic, message type, count) only, so it works on
ROS 1 bags and rosbag2 (sqlite3, MCAP) alike, and explicit overrides (``--topic depth=/x``) win.

How a role is found, in order:

1. an override names the topic;
2. images (``sensor_msgs/Image`` or ``CompressedImage``) are split into colour and depth by the
   words in their names (``color``/``rgb``/``left`` vs ``depth``/``stereo``), skipping infrared,
   confidence, disparity and our own outputs; depth registered to colour (``aligned_depth_to_
   color``, ``depth_registered``, ``depth_to_rgb``) is preferred over the raw depth; a raw
   ``Image`` is preferred over the same stream's ``compressed`` / ``compressedDepth`` transport;
3. a camera_info belongs to the image whose topic lies under the info's own directory
   (``/a/color/camera_info`` -> ``/a/color/image_raw``; the RealSense SDK's
   ``.../Color_0/info/camera_info`` -> ``.../Color_0/image/data``);
4. point clouds named like a LiDAR / radar, ``tf2_msgs/TFMessage`` on ``/tf`` and
   ``/tf_static``, the depth->colour extrinsic the RealSense SDK and ROS wrapper record, our
   ``TargetPromptArray`` and ``/ground_truth/*`` images.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
CLOUD = "sensor_msgs/msg/PointCloud2"
TF = "tf2_msgs/msg/TFMessage"
TRANSFORM = "geometry_msgs/msg/Transform"
TARGETS = "depth_perception_msgs/msg/TargetPromptArray"
#: Extrinsics messages of the RealSense and Orbbec ROS wrappers (rotation: 9 floats, column-major).
EXTRINSICS_TYPES = ("realsense2_camera_msgs/msg/Extrinsics", "orbbec_camera_msgs/msg/Extrinsics")

#: role -> what it is (the order ``bag-info`` prints them in).
ROLES: dict[str, str] = {
    "rgb": "colour image",
    "rgb_info": "colour camera_info",
    "depth": "depth image",
    "depth_info": "depth camera_info",
    "lidar": "LiDAR point cloud",
    "radar": "radar point cloud",
    "tf_static": "static transforms",
    "tf": "transforms",
    "extrinsic": "depth->colour extrinsic",
    "targets": "target prompts",
    "gt_depth": "ground-truth depth",
    "gt_instances": "ground-truth instance ids",
}
IMAGE_ROLES = ("rgb", "depth", "gt_depth", "gt_instances")

# Recognisable layouts, for the user's information only (roles never depend on the label).
_LAYOUTS = (
    ("RealSense SDK recording", r"^/device_\d+/sensor_\d+/"),
    ("RealSense ROS wrapper", r"/aligned_depth_to_color/|/depth/image_rect_raw"),
    ("ZED ROS wrapper", r"/zed_node/"),
    ("OAK-D (depthai ROS driver)", r"/stereo/image_raw|^/oak/"),
    ("Azure Kinect ROS driver", r"/depth_to_rgb/|^(/[^/]+)?/rgb/image_raw"),
    ("depth_perception", r"/depth_registered/image_rect$"),
    ("Orbbec / generic camera driver", r"/depth/image_raw|/color/image_raw"),
)

_SPLIT = re.compile(r"[/_\-.]+")
_NOT_INPUT = {
    "ir", "infra", "infra1", "infra2", "infrared", "confidence", "disparity", "fisheye",
    "thermal", "mask", "normal", "normals", "seg", "segmentation", "right", "debug",
    "completed", "preview", "mono", "gray", "grey", "theora", "ffmpeg", "h264", "zstd",
}  # fmt: skip
_DEPTH_WORDS = {"depth", "stereo", "range"}
_COLOUR_WORDS = {"color", "colour", "rgb", "left", "bgr"}
_REGISTERED = ("aligned_depth_to_color", "depth_registered", "depth_to_rgb", "registered")
_GT_WORDS = {"ground", "groundtruth", "gt"}
_TRANSPORTS = {"compressed": "compressed", "compresseddepth": "compressedDepth"}


@dataclass(frozen=True)
class TopicInfo:
    topic: str
    msgtype: str
    count: int = 0


@dataclass
class TopicRoles:
    """What the resolver found: role -> topic, how, and the image transports."""

    topics: dict[str, str] = field(default_factory=dict)
    how: dict[str, str] = field(default_factory=dict)  # role -> "override" | "found"
    transports: dict[str, str] = field(default_factory=dict)  # image role -> raw | compressed...
    msgtypes: dict[str, str] = field(default_factory=dict)  # role -> message type
    layout: str = "unknown"
    #: The depth topic's name says it is registered to colour (None: the name does not say).
    depth_registered_by_name: bool | None = None
    notes: list[str] = field(default_factory=list)

    def get(self, role: str) -> str | None:
        return self.topics.get(role)

    def role_of(self) -> dict[str, str]:
        """topic -> role (one role per topic)."""
        return {topic: role for role, topic in self.topics.items()}

    def missing(self, required: Iterable[str] = ("rgb", "depth")) -> list[str]:
        out = [r for r in required if r not in self.topics]
        if "rgb_info" in required and "rgb_info" not in self.topics and "depth_info" in self.topics:
            out.remove("rgb_info")  # the depth's camera_info serves registered depth
        return out

    def describe(self) -> list[str]:
        """One line per resolved role, for ``bag-info``."""
        lines = []
        for role in ROLES:
            if role in self.topics:
                transport = self.transports.get(role)
                extra = f", {transport}" if transport and transport != "raw" else ""
                lines.append(
                    f"{role:13s} {self.topics[role]}  [{self.msgtypes.get(role, '?')}{extra}]"
                    f"{'  (override)' if self.how.get(role) == 'override' else ''}"
                )
        return lines


def _words(topic: str) -> set[str]:
    return {w.lower() for w in _SPLIT.split(topic) if w}


def transport_of(topic: str, msgtype: str) -> str:
    """raw | compressed | compressedDepth, from the type and image_transport's topic suffix."""
    if msgtype != COMPRESSED:
        return "raw"
    last = topic.rstrip("/").rsplit("/", 1)[-1].lower()
    if last == "compresseddepth":
        return "compressedDepth"
    return _TRANSPORTS.get(last, "compressed")


def _base(topic: str, msgtype: str) -> str:
    """The image_transport base topic (``/a/image_raw/compressed`` -> ``/a/image_raw``)."""
    if transport_of(topic, msgtype) != "raw" and topic.lower().rsplit("/", 1)[-1] in _TRANSPORTS:
        return topic.rsplit("/", 1)[0]
    return topic


def _image_kind(topic: str, msgtype: str) -> str | None:
    """rgb | depth | gt_depth | gt_instances | None for an image topic."""
    base = _base(topic, msgtype)
    words = _words(base)
    low = base.lower()
    if words & _GT_WORDS or "ground_truth" in low:
        if "instances" in words or "instance" in words:
            return "gt_instances"
        return "gt_depth" if "depth" in words else None
    if words & _NOT_INPUT:
        return None
    if words & _DEPTH_WORDS or any(w.startswith("depth") for w in words):
        return "depth"
    if words & _COLOUR_WORDS or any(w.startswith(("color", "colour")) for w in words):
        return "rgb"
    if low.endswith(("image_color", "image_rect_color")):
        return "rgb"
    return None


def _registered_by_name(topic: str) -> bool:
    low = topic.lower()
    return any(k in low for k in _REGISTERED)


def _image_rank(info: TopicInfo, kind: str) -> tuple:
    """Sort key, best first: registered depth, raw transport, rectified, most messages, name."""
    raw = transport_of(info.topic, info.msgtype) == "raw"
    rect = "rect" in info.topic.lower()
    registered = kind == "depth" and _registered_by_name(info.topic)
    return (not registered, not raw, not rect, -info.count, info.topic)


def _info_stem(topic: str) -> str:
    """Directory a camera_info describes: ``/a/color/camera_info`` -> ``/a/color``;
    ``/d/sensor_1/Color_0/info/camera_info`` -> ``/d/sensor_1/Color_0``."""
    stem = topic.rsplit("/", 1)[0]
    return stem[: -len("/info")] if stem.endswith("/info") else stem


def camera_info_for(image_topic: str, infos: Iterable[str]) -> str | None:
    """The camera_info topic of ``image_topic``: the one whose directory holds the image, with
    at most two path levels between them (nearest directory wins)."""
    best, best_len = None, -1
    for info in infos:
        stem = _info_stem(info)
        rest = image_topic[len(stem) + 1 :] if image_topic.startswith(stem + "/") else None
        if rest is None or rest.count("/") > 1:
            continue
        if len(stem) > best_len:
            best, best_len = info, len(stem)
    return best


def _cloud_kind(topic: str) -> str | None:
    words = _words(topic)
    low = topic.lower()
    if "radar" in low:
        return "radar"
    if words & {"depth", "completed", "camera", "zed", "stereo", "cloud_registered"}:
        return None  # a depth camera's own cloud (or ours), not a LiDAR
    lidar_words = ("lidar", "velodyne", "ouster", "os_cloud", "livox", "hesai", "rslidar", "scan")
    if any(w in low for w in lidar_words) or words & {"points", "points_raw", "cloud"}:
        return "lidar"
    return None


def _layout(topics: Iterable[str]) -> str:
    names = list(topics)
    for label, pattern in _LAYOUTS:
        rx = re.compile(pattern)
        if any(rx.search(t) for t in names):
            return label
    return "unknown"


def parse_overrides(specs: Iterable[str]) -> dict[str, str]:
    """``["depth=/my/depth", ...]`` -> ``{"depth": "/my/depth"}``; unknown roles are refused."""
    out: dict[str, str] = {}
    for spec in specs:
        role, sep, topic = spec.partition("=")
        role = role.strip()
        if not sep or not topic.strip():
            raise ValueError(f"--topic {spec!r}: expected ROLE=TOPIC, e.g. depth=/camera/depth")
        if role not in ROLES:
            raise ValueError(f"--topic {spec!r}: unknown role {role!r}; roles: {', '.join(ROLES)}")
        out[role] = topic.strip()
    return out


def resolve_topics(
    topics: Iterable[TopicInfo | tuple[str, str] | tuple[str, str, int]],
    overrides: Mapping[str, str] | None = None,
) -> TopicRoles:
    """Roles of a recording's topics (see the module docstring); ``overrides`` win.

    An override naming a topic the recording does not have is a ValueError that lists the
    recording's topics of the right kind.
    """
    infos = [t if isinstance(t, TopicInfo) else TopicInfo(*t) for t in topics]
    by_topic = {t.topic: t for t in infos}
    out = TopicRoles(layout=_layout(by_topic))

    def put(role: str, topic: str, how: str) -> None:
        out.topics[role] = topic
        out.how[role] = how
        out.msgtypes[role] = by_topic[topic].msgtype
        if role in IMAGE_ROLES:
            out.transports[role] = transport_of(topic, by_topic[topic].msgtype)

    for role, topic in (overrides or {}).items():
        if role not in ROLES:
            raise ValueError(f"unknown topic role {role!r}; roles: {', '.join(ROLES)}")
        if topic not in by_topic:
            close = sorted(t for t in by_topic if _words(t) & _words(topic)) or sorted(by_topic)
            raise ValueError(
                f"{role}={topic}: no such topic in the recording; it has {', '.join(close[:12])}"
                + (" ..." if len(close) > 12 else "")
            )
        put(role, topic, "override")

    images: dict[str, list[TopicInfo]] = {}
    for t in infos:
        if t.msgtype in (IMAGE, COMPRESSED):
            kind = _image_kind(t.topic, t.msgtype)
            if kind:
                images.setdefault(kind, []).append(t)
    for kind, candidates in images.items():
        if kind in out.topics:
            continue
        candidates.sort(key=lambda t: _image_rank(t, kind))
        put(kind, candidates[0].topic, "found")
        chosen = _base(candidates[0].topic, candidates[0].msgtype)
        others = sorted({_base(c.topic, c.msgtype) for c in candidates[1:]} - {chosen})
        if others and kind in ("rgb", "depth"):
            out.notes.append(
                f"{kind}: chose {candidates[0].topic} over {', '.join(others)} "
                f"(override with --topic {kind}=TOPIC)"
            )

    camera_infos = [t.topic for t in infos if t.msgtype == CAMERA_INFO]
    for image_role, info_role in (("rgb", "rgb_info"), ("depth", "depth_info")):
        if info_role in out.topics or image_role not in out.topics:
            continue
        image = out.topics[image_role]
        found = camera_info_for(_base(image, out.msgtypes[image_role]), camera_infos)
        if found and found != out.topics.get("rgb_info"):
            put(info_role, found, "found")

    clouds: dict[str, list[TopicInfo]] = {}
    for t in infos:
        if t.msgtype == CLOUD and (kind := _cloud_kind(t.topic)):
            clouds.setdefault(kind, []).append(t)
    for kind, candidates in clouds.items():
        if kind not in out.topics:
            put(kind, max(candidates, key=lambda t: (t.count, t.topic)).topic, "found")

    for t in infos:
        last = t.topic.rstrip("/").rsplit("/", 1)[-1]
        if t.msgtype == TF and last in ("tf", "tf_static") and last not in out.topics:
            put(last, t.topic, "found")
        elif t.msgtype == TARGETS and "targets" not in out.topics:
            put("targets", t.topic, "found")
    _find_extrinsic(out, infos, by_topic, put)

    depth = out.topics.get("depth")
    if depth:
        out.depth_registered_by_name = _registered_by_name(depth) or None
    return out


def _find_extrinsic(out: TopicRoles, infos: list[TopicInfo], by_topic: dict, put) -> None:
    """The depth->colour extrinsic a driver records beside the images, if any."""
    if "extrinsic" in out.topics or "rgb" not in out.topics:
        return
    for t in infos:  # RealSense / Orbbec ROS wrappers: .../extrinsics/depth_to_color
        if t.msgtype in EXTRINSICS_TYPES and t.topic.lower().endswith("depth_to_color"):
            put("extrinsic", t.topic, "found")
            return
    # RealSense SDK: <stream>/tf/<reference>: the stream's pose relative to the reference
    # (depth) stream, p_stream = T p_depth; the colour stream's is depth->colour.
    rgb_stem = _info_stem(out.topics.get("rgb_info", "")) if "rgb_info" in out.topics else None
    for t in infos:
        if (
            t.msgtype == TRANSFORM
            and rgb_stem
            and re.fullmatch(re.escape(rgb_stem) + r"/tf/\d+", t.topic)
        ):
            put("extrinsic", t.topic, "found")
            return


__all__ = [
    "COMPRESSED",
    "IMAGE",
    "ROLES",
    "TopicInfo",
    "TopicRoles",
    "camera_info_for",
    "parse_overrides",
    "resolve_topics",
    "transport_of",
]

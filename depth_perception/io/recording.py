"""Reading RGB-D recordings as real cameras write them: any topic layout, ROS 1 or rosbag2.

One path for every verb that reads a bag (``bag-info``, ``eval-bag``, ``complete``,
``training.extract``, the demo):

1. :func:`plan_recording` resolves the topic roles (:mod:`depth_perception.io.topics`) and
   reads the small static topics first: the camera_infos (a driver that publishes one at start
   or latches it with stamp 0 describes the whole recording), ``/tf_static``, the driver's
   depth->colour extrinsic. When the depth is not registered to the colour camera (another
   camera: different intrinsics or frame), the depth->colour extrinsic is looked up (the
   driver's extrinsic topic, ``/tf_static``, ``/tf``, the bag's ``calibration.yaml`` or the
   caller's calibration) and every depth image is registered into the colour camera
   (:func:`depth_perception.core.registration.register_depth`), or the plan says why it cannot.
2. :func:`pair_recording` pairs, streaming, each colour image with the nearest depth image
   (and ground truth, targets) within ``slop_ns`` and the nearest LiDAR / radar cloud within
   ``aux_slop_ns``, on header stamps read straight from the serialized bytes; only paired
   messages are ever deserialized. :class:`PairingStats` says what was paired and what not.
3. :func:`read_rgbd_frames` decodes the pairs (raw, ``compressed`` and ``compressedDepth``
   images; ROS 1 and ROS 2 field spellings) into :class:`RGBDFrame` s.
"""

from __future__ import annotations

import logging
import struct
from bisect import bisect_left
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from depth_perception.core.camera import Intrinsics
from depth_perception.io.bag import (
    CALIBRATION_FILE,
    BagReadError,
    _decoded,
    _deserialize,
    _mcap_files,
    _messages,
    _open_reader,
    _stamp_ns,
    targets_from_msg,
    verify_mcap_data_section,
)
from depth_perception.io.calibration import (
    Calibration,
    Extrinsic,
    load_calibration,
    quaternion_to_matrix,
)
from depth_perception.io.frames import RGBDFrame
from depth_perception.io.topics import EXTRINSICS_TYPES, TopicInfo, TopicRoles, resolve_topics
from depth_perception.ros.conversions import (
    camera_info_to_intrinsics,
    depth_image_to_metres,
    image_to_numpy,
    image_to_rgb,
    pointcloud2_to_array,
)

log = logging.getLogger(__name__)

_NS = 1_000_000_000
#: Roles whose matched message is used up (one partner per colour image); LiDAR / radar clouds
#: (slower than the camera) may serve several colour images.
_CONSUMED = ("depth", "gt_depth", "gt_instances", "targets")
_AUX = ("lidar", "radar")
_STAMP = struct.Struct("<iI")  # header.stamp: sec, nanosec right after 4 leading bytes


#: File suffixes of recordings that are one file: ROS 1 bags and MCAP files without a
#: metadata.yaml (what ``ros2 bag record -s mcap`` leaves after a crash, or Foxglove exports).
RECORDING_FILE_SUFFIXES = (".bag", ".mcap")


def is_recording(path: str | Path) -> bool:
    """A rosbag2 directory (metadata.yaml), a ROS 1 ``.bag`` file or an ``.mcap`` file."""
    path = Path(path)
    if path.is_dir():
        return (path / "metadata.yaml").is_file()
    return path.is_file() and path.suffix.lower() in RECORDING_FILE_SUFFIXES


@dataclass(frozen=True)
class ReadOptions:
    """How to read a recording: role overrides, pairing slop, a calibration for the depth->
    colour extrinsic when the recording has none. Every verb takes the same three options."""

    topics: Mapping[str, str] = field(default_factory=dict)
    slop_ns: int = 20_000_000
    calibration: Calibration | None = None


class RecordingError(ValueError):
    """A recording that cannot give RGB-D frames as asked; the message says why."""


@dataclass
class RecordingPlan:
    """What :func:`plan_recording` found out about a recording before reading its images."""

    path: Path
    roles: TopicRoles
    colour_infos: list[tuple[int, Any]] = field(default_factory=list)  # (stamp, msg), sorted
    depth_infos: list[tuple[int, Any]] = field(default_factory=list)
    colour_T_depth: np.ndarray | None = None  # 4x4, p_colour = T p_depth
    extrinsic_source: str | None = None
    #: Why the depth is registered into the colour camera (None: it already is).
    registration: str | None = None
    calibration: Calibration | None = None  # the bag's (calibration.yaml or /tf_static)
    notes: list[str] = field(default_factory=list)
    is_ros2: bool = True
    message_counts: dict[str, int] = field(default_factory=dict)  # topic -> messages

    @property
    def latched_info(self) -> bool:
        """Camera info published once or stamped 0: valid for the whole recording."""
        return any(len(i) == 1 or i[0][0] == 0 for i in (self.colour_infos, self.depth_infos) if i)


@dataclass
class PairingStats:
    """What pairing made of a recording (:func:`pair_recording` fills it while it runs)."""

    slop_ns: int = 0
    messages: dict[str, int] = field(default_factory=dict)  # role -> messages read
    first_ns: dict[str, int] = field(default_factory=dict)  # role -> first header stamp
    last_ns: dict[str, int] = field(default_factory=dict)
    pairs: int = 0
    max_gap_ns: int = 0  # largest |colour - depth| stamp difference among the pairs
    sum_gap_ns: int = 0
    colour_unpaired: int = 0  # colour images with no depth within slop
    #: Smallest colour-depth gap among the colour images left unpaired (to suggest a slop).
    nearest_miss_ns: int | None = None

    def rate_hz(self, role: str) -> float | None:
        n, span = self.messages.get(role, 0), self.last_ns.get(role, 0) - self.first_ns.get(role, 0)
        return (n - 1) * _NS / span if n > 1 and span > 0 else None

    @property
    def depth_unpaired(self) -> int:
        return self.messages.get("depth", 0) - self.pairs

    @property
    def mean_gap_ns(self) -> float:
        return self.sum_gap_ns / self.pairs if self.pairs else 0.0

    def why_none(self) -> str | None:
        """Why no frame came out (None when some did)."""
        if self.pairs:
            return None
        colour, depth = self.messages.get("rgb", 0), self.messages.get("depth", 0)
        if not colour or not depth:
            missing = " and ".join(w for w, n in (("colour", colour), ("depth", depth)) if not n)
            return f"the {missing} topic has no messages"
        if self.nearest_miss_ns is not None:
            return (
                f"no colour image has a depth image within the slop of "
                f"{self.slop_ns / 1e6:g} ms: the nearest pair is "
                f"{self.nearest_miss_ns / 1e6:.1f} ms apart (raise the slop, e.g. --slop "
                f"{_suggest_slop(self.nearest_miss_ns)})"
            )
        return "colour and depth stamps never overlap"

    def summary(self) -> dict:
        out = {
            "pairs": self.pairs,
            "slop_ms": self.slop_ns / 1e6,
            "max_gap_ms": round(self.max_gap_ns / 1e6, 3),
            "mean_gap_ms": round(self.mean_gap_ns / 1e6, 3),
            "colour_unpaired": self.colour_unpaired,
            "depth_unpaired": self.depth_unpaired,
            "rates_hz": {r: round(h, 3) for r in self.messages if (h := self.rate_hz(r))},
        }
        if (why := self.why_none()) is not None:
            out["why_no_frames"] = why
        return out


def _suggest_slop(gap_ns: int) -> str:
    return f"{np.ceil(gap_ns / 1e7) / 100 + 0.01:.2f}"  # seconds, rounded up to 10 ms, +10 ms


def _stamp_from_bytes(raw: bytes | memoryview, cdr: bool) -> int:
    """Header stamp of a serialized message whose first field is a std_msgs/Header.

    ROS 2 CDR: 4 bytes of encapsulation, then sec (int32), nanosec (uint32); ROS 1: seq
    (uint32), then secs, nsecs. Both little endian in practice (checked for CDR).
    """
    if cdr and raw[1] == 0:  # big-endian CDR, never seen from rmw but legal
        sec, nsec = struct.unpack_from(">iI", raw, 4)
    else:
        sec, nsec = _STAMP.unpack_from(raw, 4)
    if nsec >= _NS:
        raise ValueError(f"header stamp nanoseconds {nsec} out of range")
    return int(sec) * _NS + int(nsec)


# ---------------------------------------------------------------------------------------------
# Planning: roles, static topics, registration
# ---------------------------------------------------------------------------------------------


def topic_infos(reader: Any) -> list[TopicInfo]:
    return [TopicInfo(t, i.msgtype, int(i.msgcount)) for t, i in sorted(reader.topics.items())]


def _sorted_infos(items: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    return sorted(items, key=lambda item: item[0])


def nearest_info(infos: list[tuple[int, Any]], t: int) -> Any:
    """The camera_info nearest in stamp to ``t`` (a single or stamp-0 info serves every t)."""
    if len(infos) == 1:
        return infos[0][1]
    stamps = [s for s, _ in infos]
    i = bisect_left(stamps, t)
    candidates = [j for j in (i - 1, i) if 0 <= j < len(infos)]
    return infos[min(candidates, key=lambda j: abs(stamps[j] - t))][1]


def _transform_matrix(msg: Any) -> np.ndarray:
    tr, q = msg.translation, msg.rotation
    return quaternion_to_matrix(np.array([tr.x, tr.y, tr.z]), np.array([q.x, q.y, q.z, q.w]))


def _extrinsics_matrix(msg: Any) -> np.ndarray:
    """realsense2_camera_msgs / orbbec_camera_msgs Extrinsics: rotation is column-major."""
    T = np.eye(4)
    T[:3, :3] = np.asarray(msg.rotation, dtype=np.float64).reshape(3, 3).T
    T[:3, 3] = np.asarray(msg.translation, dtype=np.float64)
    return T


def _add_transforms(by_child: dict[str, Extrinsic], msg: Any) -> None:
    """A tf2_msgs/TFMessage's transforms into ``by_child`` (the last one wins per child)."""
    for tf in msg.transforms:
        tr, q = tf.transform.translation, tf.transform.rotation
        by_child[tf.child_frame_id] = Extrinsic(
            tf.header.frame_id, tf.child_frame_id, (tr.x, tr.y, tr.z), (q.x, q.y, q.z, q.w)
        )


def _tf_extrinsics(reader: Any, path: Path, conns: list) -> list[Extrinsic]:
    by_child: dict[str, Extrinsic] = {}
    for conn, bag_ns, raw in _messages(reader, path, conns):
        what = f"the {conn.topic} message at bag time {bag_ns}"
        _add_transforms(by_child, _decoded(path, what, _deserialize, reader, raw, conn.msgtype))
    return list(by_child.values())


def read_tf_static(path: str | Path, topic: str = "/tf_static") -> list[Extrinsic]:
    """Every transform on ``topic`` as extrinsics (last one wins per child frame)."""
    with _open_reader(Path(path)) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        # rosbags reads *every* connection when given none
        return _tf_extrinsics(reader, Path(path), conns) if conns else []


def bag_calibration(path: str | Path) -> Calibration | None:
    """The recording's calibration: ``calibration.yaml`` in the bag directory, else /tf_static
    (extrinsics only); None when the bag has neither."""
    path = Path(path)
    if (path / CALIBRATION_FILE).is_file():
        return load_calibration(path / CALIBRATION_FILE)
    extrinsics = read_tf_static(path)
    return Calibration(cameras={}, extrinsics=extrinsics) if extrinsics else None


def _static_messages(reader: Any, path: Path, conns: list, plan: RecordingPlan) -> Iterator:
    """The static topics' messages up to the first unreadable record, if any: reading the
    frames stops at that record too, with the error, after the frames before it."""
    try:
        yield from _messages(reader, path, conns)
    except BagReadError as exc:
        plan.notes.append(f"static topics read up to an unreadable record ({exc})")


def _frame_of(info_msg: Any) -> str:
    return str(info_msg.header.frame_id) if info_msg is not None else ""


def plan_recording(
    path: str | Path,
    overrides: Mapping[str, str] | None = None,
    calibration: Calibration | None = None,
) -> RecordingPlan:
    """Roles, camera_infos, extrinsic and registration decision of a recording (module doc).

    Raises :class:`RecordingError` when the recording lacks colour, depth or a camera_info,
    or when its depth needs registering and no depth->colour extrinsic is known.
    """
    from depth_perception.core.registration import registration_needed

    path = Path(path)
    with _open_reader(path) as reader:
        topics = topic_infos(reader)
        try:
            roles = resolve_topics(topics, overrides)
        except ValueError as exc:  # an override naming a topic the recording lacks
            raise RecordingError(f"{path}: {exc}") from None
        plan = RecordingPlan(path, roles, is_ros2=bool(reader.is2))
        plan.message_counts = {t.topic: t.count for t in topics}
        plan.notes.extend(roles.notes)
        missing = roles.missing(("rgb", "depth"))
        if missing or not {"rgb_info", "depth_info"} & roles.topics.keys():
            available = sorted(f"{c.topic} [{c.msgtype}]" for c in reader.connections)
            shown = ", ".join(available[:40]) + (" ..." if len(available) > 40 else "")
            raise RecordingError(
                f"{path}: need a colour image, a depth image and a camera_info; found no "
                f"{' and no '.join(missing or ['camera_info'])} topic (override with "
                f"--topic ROLE=TOPIC) among: {shown}"
            )
        static_roles = ("rgb_info", "depth_info", "extrinsic", "tf_static")
        wanted = {roles.topics[r]: r for r in static_roles if r in roles.topics}
        conns = [c for c in reader.connections if c.topic in wanted]
        infos: dict[str, list[tuple[int, Any]]] = {"rgb_info": [], "depth_info": []}
        tf_static: dict[str, Extrinsic] = {}
        extrinsic_msg = None
        for conn, bag_ns, raw in _static_messages(reader, path, conns, plan):
            role = wanted[conn.topic]
            what = f"the {conn.topic} message at bag time {bag_ns}"
            msg = _decoded(path, what, _deserialize, reader, raw, conn.msgtype)
            if role == "tf_static":
                _add_transforms(tf_static, msg)
            elif role == "extrinsic":
                extrinsic_msg = (conn.msgtype, msg)
            else:
                infos[role].append((_stamp_ns(msg.header), msg))
        plan.colour_infos = _sorted_infos(infos["rgb_info"])
        plan.depth_infos = _sorted_infos(infos["depth_info"])
        if not plan.colour_infos:  # registered depth whose own camera_info is the colour one
            plan.colour_infos = plan.depth_infos
            plan.notes.append("no colour camera_info: the depth's camera_info is used for colour")
        if plan.latched_info:
            plan.notes.append("camera_info recorded once or stamped 0: used for every frame")

        colour_info, depth_info = plan.colour_infos[0][1], (plan.depth_infos or [(0, None)])[0][1]
        if depth_info is None or depth_info is colour_info:
            return plan  # nothing says the depth comes from another camera
        colour = _decoded(path, "the colour camera_info", camera_info_to_intrinsics, colour_info)
        depth = _decoded(path, "the depth camera_info", camera_info_to_intrinsics, depth_info)
        colour_frame, depth_frame = _frame_of(colour_info), _frame_of(depth_info)
        if (path / CALIBRATION_FILE).is_file():
            plan.calibration = load_calibration(path / CALIBRATION_FILE)
        elif tf_static:
            plan.calibration = Calibration(extrinsics=list(tf_static.values()))
        T, source = None, None
        if extrinsic_msg is not None:
            msgtype, msg = extrinsic_msg
            T = _extrinsics_matrix(msg) if msgtype in EXTRINSICS_TYPES else _transform_matrix(msg)
            source = roles.topics["extrinsic"]
        if T is None and colour_frame and depth_frame:
            for name, cal in (("calibration", calibration), ("the bag", plan.calibration)):
                try:
                    if cal is not None:
                        T, source = cal.transform(colour_frame, depth_frame), name
                        break
                except KeyError:
                    pass
        if T is None and colour_frame and depth_frame and "tf" in roles.topics:
            tf_conns = [c for c in reader.connections if c.topic == roles.topics["tf"]]
            try:
                cal = Calibration(extrinsics=_tf_extrinsics(reader, path, tf_conns))
                T, source = cal.transform(colour_frame, depth_frame), roles.topics["tf"]
            except (KeyError, ValueError):
                pass
        reason = registration_needed(depth, colour, T)
        if reason is None:
            return plan
        if T is None:
            raise RecordingError(
                f"{path}: {reason}; registering it into the colour camera needs the "
                f"depth->colour extrinsic ({depth_frame or 'depth'} -> "
                f"{colour_frame or 'colour'}), which is not in the recording (no extrinsic "
                "topic, /tf_static or /tf connecting the two frames): pass a calibration "
                "YAML with --calibration, or --topic depth=TOPIC for depth registered to colour"
            )
        plan.colour_T_depth, plan.extrinsic_source, plan.registration = T, source, reason
    return plan


# ---------------------------------------------------------------------------------------------
# Pairing
# ---------------------------------------------------------------------------------------------


def _nearest(buffer: list[tuple[int, Any]], t: int, slop_ns: int) -> int | None:
    """Index of the entry nearest to stamp ``t`` within ``slop_ns`` (earlier wins ties)."""
    best, best_dt = None, slop_ns + 1
    for i, (stamp, _) in enumerate(buffer):
        dt = abs(stamp - t)
        if dt < best_dt:
            best, best_dt = i, dt
    return best


Pair = tuple[int, tuple[Any, bytes], dict[str, tuple[int, tuple[Any, bytes]]]]


def pair_recording(
    plan: RecordingPlan,
    slop_ns: int = 20_000_000,
    aux_slop_ns: int = 100_000_000,
    wait_ns: int = 1_000_000_000,
    stats: PairingStats | None = None,
    reader: Any = None,
) -> Iterator[Pair]:
    """(colour stamp, (connection, colour bytes), {role: (stamp, (connection, bytes))}) for
    each colour image that has a depth image within ``slop_ns``; nothing is deserialized.

    A colour image waits for partners until each other topic has a stamp at or past it, or
    until the bag clock is ``wait_ns`` beyond it (sparse topics), or the bag ends. A depth
    image partners one colour image at most.
    """
    stats = stats if stats is not None else PairingStats()
    stats.slop_ns = slop_ns
    roles = plan.roles
    role_of = {roles.topics[r]: r for r in ("rgb", *_CONSUMED, *_AUX) if r in roles.topics}
    others = sorted(set(role_of.values()) - {"rgb"})
    buffers: dict[str, list[tuple[int, Any]]] = {r: [] for r in others}
    latest: dict[str, int] = {}
    anchors: deque[tuple[int, int, Any]] = deque()  # (stamp, bag time, (conn, raw))

    def slop(role: str) -> int:
        return aux_slop_ns if role in _AUX else slop_ns

    def emit() -> Pair | None:
        t, _, rgb = anchors.popleft()
        parts: dict[str, tuple[int, Any]] = {}
        for role in others:
            buf = buffers[role]
            i = _nearest(buf, t, slop(role))
            if role == "depth" and i is None:
                j = _nearest(buf, t, 1 << 62)
                if j is not None:
                    gap = abs(buf[j][0] - t)
                    stats.nearest_miss_ns = min(gap, stats.nearest_miss_ns or gap)
            if i is not None:
                parts[role] = buf.pop(i) if role in _CONSUMED else buf[i]
            # Nothing older than t - slop can partner a later colour image.
            buffers[role] = [e for e in buf if e[0] >= t - slop(role)]
        if "depth" not in parts:
            stats.colour_unpaired += 1
            return None
        gap = abs(parts["depth"][0] - t)
        stats.pairs += 1
        stats.max_gap_ns = max(stats.max_gap_ns, gap)
        stats.sum_gap_ns += gap
        return t, rgb, parts

    def run(reader: Any) -> Iterator[Pair]:
        conns = [c for c in reader.connections if c.topic in role_of]
        for conn, bag_ns, raw in _messages(reader, plan.path, conns):
            role = role_of[conn.topic]
            stamp = _decoded(
                plan.path,
                f"the {conn.topic} message at bag time {bag_ns}",
                _stamp_from_bytes,
                raw,
                plan.is_ros2,
            )
            stats.messages[role] = stats.messages.get(role, 0) + 1
            stats.first_ns.setdefault(role, stamp)
            stats.last_ns[role] = stamp
            if role == "rgb":
                anchors.append((stamp, bag_ns, (conn, raw)))
            else:
                buffers[role].append((stamp, (conn, raw)))
                latest[role] = max(latest.get(role, stamp), stamp)
            while anchors:
                t, t_bag, _ = anchors[0]
                ready = all(latest.get(r, t - 1) >= t for r in others)
                if not (ready or bag_ns - t_bag > wait_ns):
                    break
                if (pair := emit()) is not None:
                    yield pair
        while anchors:
            if (pair := emit()) is not None:
                yield pair

    if reader is not None:
        yield from run(reader)
        return
    with _open_reader(plan.path) as opened:
        yield from run(opened)
    # Read to the end: the data-section CRC also covers the records between chunks.
    for file in _mcap_files(plan.path):
        verify_mcap_data_section(file)


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


def _decode_frame(
    plan: RecordingPlan, reader: Any, t: int, rgb_part: tuple[Any, bytes], parts: dict
) -> RGBDFrame:
    from depth_perception.core.registration import register_depth

    def msg(part: tuple[Any, bytes]) -> Any:
        conn, raw = part
        what = f"the {conn.topic} message at stamp {t}"
        return _decoded(plan.path, what, _deserialize, reader, raw, conn.msgtype)

    rgb_msg = msg(rgb_part)
    rgb = image_to_rgb(rgb_msg)
    colour_info = nearest_info(plan.colour_infos, t)
    intr: Intrinsics = camera_info_to_intrinsics(colour_info)
    if not intr.frame_id:
        intr = Intrinsics.from_K(
            intr.K, intr.width, intr.height, intr.D, intr.distortion_model, rgb_msg.header.frame_id
        )
    depth = depth_image_to_metres(msg(parts["depth"][1]))
    if plan.registration is not None:
        depth_intr = camera_info_to_intrinsics(nearest_info(plan.depth_infos, parts["depth"][0]))
        depth = register_depth(depth, depth_intr, intr, plan.colour_T_depth)
    if depth.shape != rgb.shape[:2] or (intr.height, intr.width) != rgb.shape[:2]:
        raise ValueError(
            f"frame {t}: colour {rgb.shape[1]}x{rgb.shape[0]}, depth {depth.shape[1]}x"
            f"{depth.shape[0]}, camera_info {intr.width}x{intr.height}: the depth must be "
            "registered to the colour image (use the driver's registered / aligned depth "
            "topic, or record the depth camera_info and extrinsic)"
        )
    extra: dict[str, Any] = {"bag": str(plan.path), "registered": plan.registration is not None}
    extra["stamps"] = {"rgb": t, **{role: stamp for role, (stamp, _) in parts.items()}}
    gt_depth = instance = None
    if "gt_depth" in parts:
        gt_depth = depth_image_to_metres(msg(parts["gt_depth"][1]))
    if "gt_instances" in parts:
        instance = np.asarray(image_to_numpy(msg(parts["gt_instances"][1])), dtype=np.int32)
    if "targets" in parts:
        extra["targets"] = targets_from_msg(msg(parts["targets"][1]))
    for kind in _AUX:
        if kind in parts:
            cloud = msg(parts[kind][1])
            extra[kind] = np.array(pointcloud2_to_array(cloud).reshape(-1))  # own the memory
            extra[f"{kind}_frame_id"] = str(cloud.header.frame_id)
    return RGBDFrame(t, rgb, depth, intr, gt_depth=gt_depth, instance=instance, extra=extra)


def read_rgbd_frames(
    path: str | Path,
    topics: Mapping[str, str] | None = None,
    slop_ns: int = 20_000_000,
    aux_slop_ns: int = 100_000_000,
    wait_ns: int = 1_000_000_000,
    calibration: Calibration | None = None,
    stats: PairingStats | None = None,
    plan: RecordingPlan | None = None,
) -> Iterator[RGBDFrame]:
    """Synchronized frames from a recording (ROS 1 bag, rosbag2 sqlite3 or MCAP), one per
    colour image that has depth; depth registered to the colour camera.

    ``topics`` overrides roles (``{"depth": "/my/depth"}``; see
    :func:`depth_perception.io.topics.resolve_topics`); pairing as :func:`pair_recording`;
    ``stats`` (a :class:`PairingStats`) is filled as frames are read. ``extra`` holds
    ``targets``, ``lidar`` / ``radar`` (+ ``*_frame_id``), ``stamps`` (the stamp each part came
    from) and ``registered`` (whether the depth was registered here).
    """
    plan = plan or plan_recording(path, topics, calibration)
    stats = stats if stats is not None else PairingStats()
    with _open_reader(plan.path) as reader:
        for t, rgb, parts in pair_recording(plan, slop_ns, aux_slop_ns, wait_ns, stats, reader):
            what = f"the frame at stamp {t}"
            yield _decoded(plan.path, what, _decode_frame, plan, reader, t, rgb, parts)
    for file in _mcap_files(plan.path):
        verify_mcap_data_section(file)
    if stats.colour_unpaired:
        log.warning(
            "%s: %d colour image(s) had no depth within %g ms",
            plan.path,
            stats.colour_unpaired,
            slop_ns / 1e6,
        )


def count_frames(
    path: str | Path,
    topics: Mapping[str, str] | None = None,
    slop_ns: int = 20_000_000,
    calibration: Calibration | None = None,
) -> tuple[RecordingPlan, PairingStats]:
    """How many frames :func:`read_rgbd_frames` would yield, without decoding an image."""
    plan = plan_recording(path, topics, calibration)
    stats = PairingStats()
    for _ in pair_recording(plan, slop_ns, stats=stats):
        pass
    return plan, stats


# ---------------------------------------------------------------------------------------------
# bag-info
# ---------------------------------------------------------------------------------------------


def bag_info(
    path: str | Path,
    topics: Mapping[str, str] | None = None,
    slop_ns: int = 20_000_000,
    calibration: Calibration | None = None,
) -> dict:
    """Summary of a recording: storage, time span, per-topic type / count / definition, the
    resolved roles and, when it has colour + depth, how many synchronized frames it gives
    (``frames``) and, when none, why (``why_no_frames``).

    ``start_ns`` / ``end_ns`` are the bag times of the first and last message.
    """
    path = Path(path)
    meta = {}
    if path.is_dir() and (path / "metadata.yaml").is_file():
        meta = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    with _open_reader(path) as reader:
        topic_table = {
            name: {
                "type": info.msgtype,
                "count": int(info.msgcount),
                "has_definition": bool(info.msgdef.data),
            }
            for name, info in sorted(reader.topics.items())
        }
        count = int(reader.message_count)
        # rosbags' end_time is exclusive (last stamp + 1); report the last message's stamp.
        start, end = (int(reader.start_time), int(reader.end_time) - 1) if count else (0, 0)
        storage = meta.get("storage_identifier") or ("ros1" if not reader.is2 else None)
    out: dict[str, Any] = {
        "path": str(path),
        "storage": storage,
        "version": meta.get("version"),
        "start_ns": start,
        "end_ns": end,
        "duration_ns": end - start,
        "message_count": count,
        "frames": 0,
    }
    try:
        plan, stats = count_frames(path, topics, slop_ns, calibration)
    except RecordingError as exc:
        try:
            roles = resolve_topics(
                [TopicInfo(t, i["type"], i["count"]) for t, i in topic_table.items()], topics
            )
        except ValueError:  # the overrides are wrong: that is the answer
            raise exc from None
        out.update(layout=roles.layout, roles=roles.topics, why_no_frames=str(exc))
    else:
        out.update(
            layout=plan.roles.layout,
            roles=plan.roles.topics,
            transports={r: t for r, t in plan.roles.transports.items() if t != "raw"},
            registration=plan.registration,
            extrinsic=plan.extrinsic_source,
            frames=stats.pairs,
            pairing=stats.summary(),
            notes=plan.notes,
        )
        if (why := stats.why_none()) is not None:
            out["why_no_frames"] = why
    out["topics"] = topic_table
    return out


__all__ = [
    "RECORDING_FILE_SUFFIXES",
    "PairingStats",
    "ReadOptions",
    "RecordingError",
    "RecordingPlan",
    "bag_calibration",
    "bag_info",
    "count_frames",
    "is_recording",
    "nearest_info",
    "pair_recording",
    "plan_recording",
    "read_rgbd_frames",
    "read_tf_static",
]

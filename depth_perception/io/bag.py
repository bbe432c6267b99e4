"""rosbag2 recording and reading for RGB-D (+ LiDAR, radar, targets, ground truth) sequences.

Writing uses ``rosbags.rosbag2.Writer`` (sqlite3 or MCAP, metadata version 9, which ROS 2
Kilted's ``ros2 bag`` reads). Messages are built with our rclpy conversions and serialized by
``rclpy.serialization.serialize_message``; the CDR padding bytes rclpy leaves uninitialized are
then zeroed (:func:`canonical_cdr`), so the same seed gives byte-identical bags.
``tf2_msgs/TFMessage`` (no rclpy wheel here) is serialized by the rosbags typestore. Every
connection carries its full message definition and RIHS01 type hash, our own
``depth_perception_msgs`` types included, so ``ros2 bag``, Foxglove and rosbags can decode the
bag without our package installed.

Reading (any recording, ours or a driver's) lives in :mod:`depth_perception.io.recording`; this
module keeps the low-level reader helpers it uses (:func:`_open_reader`, checksums, decoding
errors as :class:`BagReadError`).

Topic layout written (:class:`BagTopics` defaults, the nodes' inputs under ``/camera``):

- ``/camera/rgb/image_rect_color``: sensor_msgs/Image, rgb8;
- ``/camera/rgb/camera_info``: sensor_msgs/CameraInfo of the colour camera;
- ``/camera/depth_registered/image_rect``: sensor_msgs/Image, 16UC1 millimetres, 0 = hole
  (as RealSense / Orbbec drivers publish), registered to the colour camera;
- ``/camera/depth_registered/camera_info``: the same intrinsics as the colour camera;
- ``/lidar/points``: sensor_msgs/PointCloud2, x y z intensity float32 + ring uint16, in
  ``lidar_link`` (x forward, y left, z up);
- ``/radar/points``: sensor_msgs/PointCloud2, x y z rcs float32, in ``radar_link``;
- ``/tf_static``: tf2_msgs/TFMessage with the rig's extrinsics, once, latched QoS;
- ``/targets``: depth_perception_msgs/TargetPromptArray, one box + class name (``text``) per
  visible graspable object;
- ``/ground_truth/depth``: sensor_msgs/Image, 32FC1 metres, NaN = unknown;
- ``/ground_truth/instances``: sensor_msgs/Image, 16UC1 instance ids, 0 = background (decode
  with ``conversions.image_to_numpy``); their materials in ``ground_truth_materials.yaml``
  (:data:`MATERIALS_FILE`) beside ``calibration.yaml``.

Every message of a frame has the same header stamp, also used as the bag (receive) time.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import struct
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from builtin_interfaces.msg import Time
from depth_perception_msgs.msg import TargetPrompt, TargetPromptArray
from rclpy.serialization import serialize_message
from rosbags.highlevel import AnyReader
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore
from sensor_msgs.msg import RegionOfInterest
from std_msgs.msg import Header
from tqdm import tqdm

from depth_perception.io.calibration import (
    Calibration,
    Extrinsic,
    save_calibration,
)
from depth_perception.io.frames import RGBDFrame, Target
from depth_perception.ros.conversions import (
    array_to_pointcloud2,
    intrinsics_to_camera_info,
    metres_to_depth_image,
    numpy_to_image,
)

if TYPE_CHECKING:
    from depth_perception.sim.sequence import SequenceConfig

log = logging.getLogger(__name__)

#: rosbag2 metadata version written: the newest rosbags writes, read by Kilted's rosbag2.
BAG_VERSION = 9
#: File written inside the bag directory next to metadata.yaml (``ros2 bag`` ignores it).
CALIBRATION_FILE = "calibration.yaml"
#: Instance id -> material (diffuse | specular | transparent) of a simulated bag's objects, as a
#: file beside ``calibration.yaml``: evaluation reports the transparent and specular targets
#: separately. A file, not a topic: the materials are the scene's (constant over the recording),
#: are ground truth for scoring only (no node takes them), and any reader can open it.
MATERIALS_FILE = "ground_truth_materials.yaml"
MSG_PACKAGE = "depth_perception_msgs"
_STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
_NS = 1_000_000_000


@dataclass
class BagTopics:
    """Topic names of one recording. Defaults match the nodes' inputs under ``/camera``."""

    rgb: str = "/camera/rgb/image_rect_color"
    rgb_info: str = "/camera/rgb/camera_info"
    depth: str = "/camera/depth_registered/image_rect"
    depth_info: str = "/camera/depth_registered/camera_info"
    lidar: str = "/lidar/points"
    radar: str = "/radar/points"
    tf_static: str = "/tf_static"
    targets: str = "/targets"
    gt_depth: str = "/ground_truth/depth"
    gt_instances: str = "/ground_truth/instances"

    @classmethod
    def under(cls, camera_namespace: str) -> BagTopics:
        """Defaults with the camera topics moved from ``/camera`` to ``camera_namespace``."""
        ns = "/" + camera_namespace.strip("/")
        out = cls()
        for name in ("rgb", "rgb_info", "depth", "depth_info"):
            setattr(out, name, ns + getattr(out, name).removeprefix("/camera"))
        return out

    def as_dict(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class BagSummary:
    """What a writer put into a bag."""

    path: Path
    storage: str
    n_frames: int
    message_counts: dict[str, int]  # topic -> messages
    start_ns: int
    end_ns: int
    calibration_path: Path | None = None

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)


# ---------------------------------------------------------------------------------------------
# Type store (with our custom messages)
# ---------------------------------------------------------------------------------------------


def _msg_dir() -> Path:
    """Directory of the installed ``depth_perception_msgs`` .msg files (repo copy as fallback).

    Looked up in the ament index (a sourced ROS workspace), then in this Python environment's
    ``share/`` (ROS wheels installed into a venv, where AMENT_PREFIX_PATH is often unset).
    """
    candidates = []
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(MSG_PACKAGE)) / "msg")
    except (ImportError, OSError, LookupError):  # no ament index, or package not in it
        pass
    candidates.append(Path(sys.prefix) / "share" / MSG_PACKAGE / "msg")
    candidates.append(Path(__file__).resolve().parents[2] / "msg" / "msg")
    return next((d for d in candidates if any(d.glob("*.msg"))), candidates[-1])


@functools.cache
def bag_typestore() -> Typestore:
    """Kilted's type store plus the ``depth_perception_msgs`` types, from their .msg files.

    Registering the real definitions makes the bag's stored definitions and RIHS01 hashes equal
    to the ones rosidl generates for the compiled package (the tests check this).
    """
    store = get_typestore(Stores.ROS2_KILTED)
    types: dict = {}
    for path in sorted(_msg_dir().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{MSG_PACKAGE}/msg/{path.stem}"))
    if not types:
        raise FileNotFoundError(f"no {MSG_PACKAGE} .msg files found")
    store.register(types)
    return store


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

_ZERO = QosTime(0, 0)  # "unspecified": the rmw default (infinite) applies on playback
#: tf_static is latched: late subscribers (``ros2 bag play`` listeners) must still receive it.
TF_STATIC_QOS = Qos(
    QosHistory.KEEP_LAST,
    1,
    QosReliability.RELIABLE,
    QosDurability.TRANSIENT_LOCAL,
    _ZERO,
    _ZERO,
    QosLiveliness.AUTOMATIC,
    _ZERO,
    False,
)


def stamp_to_time(stamp_ns: int) -> Time:
    return Time(sec=int(stamp_ns // _NS), nanosec=int(stamp_ns % _NS))


def _header(stamp_ns: int, frame_id: str) -> Header:
    return Header(stamp=stamp_to_time(stamp_ns), frame_id=frame_id)


def _stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * _NS + int(header.stamp.nanosec)


def targets_to_msg(targets: Iterable[Target], header: Header) -> TargetPromptArray:
    """Targets -> ``TargetPromptArray`` (box as RegionOfInterest, class name in ``text``)."""
    out = TargetPromptArray(header=header)
    out.targets = [
        TargetPrompt(
            header=header,
            target_id=int(t.target_id),
            box=RegionOfInterest(
                x_offset=int(t.box[0]),
                y_offset=int(t.box[1]),
                width=int(t.box[2]),
                height=int(t.box[3]),
                do_rectify=False,
            ),
            text=t.text,
            score=float(t.score),
        )
        for t in targets
    ]
    return out


def targets_from_msg(msg: Any) -> list[Target]:
    """``TargetPromptArray`` (rclpy or rosbags) -> targets."""
    return [
        Target(
            target_id=int(t.target_id),
            text=str(t.text),
            box=(int(t.box.x_offset), int(t.box.y_offset), int(t.box.width), int(t.box.height)),
            score=float(t.score),
        )
        for t in msg.targets
    ]


def tf_static_bytes(extrinsics: Iterable[Extrinsic], stamp_ns: int) -> bytes:
    """Serialized ``tf2_msgs/TFMessage`` with one TransformStamped per extrinsic."""
    store = bag_typestore()
    T = store.types
    stamp = T["builtin_interfaces/msg/Time"](sec=int(stamp_ns // _NS), nanosec=int(stamp_ns % _NS))
    transforms = []
    for e in extrinsics:
        tx, ty, tz = e.translation
        qx, qy, qz, qw = e.rotation
        transforms.append(
            T["geometry_msgs/msg/TransformStamped"](
                header=T["std_msgs/msg/Header"](stamp=stamp, frame_id=e.parent),
                child_frame_id=e.child,
                transform=T["geometry_msgs/msg/Transform"](
                    translation=T["geometry_msgs/msg/Vector3"](x=tx, y=ty, z=tz),
                    rotation=T["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw),
                ),
            )
        )
    msg = T["tf2_msgs/msg/TFMessage"](transforms=transforms)
    return bytes(store.serialize_cdr(msg, "tf2_msgs/msg/TFMessage"))


def canonical_cdr(data: bytes, msgtype: str) -> bytes:
    """The same CDR message with every alignment padding byte set to zero.

    rclpy's serializer leaves the padding after strings and before 4/8-byte fields
    uninitialized (heap garbage), so equal messages can serialize to different bytes. A
    decode + encode with the rosbags typestore, which writes zeros, makes the bytes a function
    of the message alone: the same seed then gives byte-identical bags (and no stray process
    memory ends up in a recording). Field values are untouched.
    """
    store = bag_typestore()
    return bytes(store.serialize_cdr(store.deserialize_cdr(data, msgtype), msgtype))


class _BagWriter:
    """A rosbags Writer that adds each topic's connection the first time it is written."""

    def __init__(self, path: Path, storage: str) -> None:
        if storage not in _STORAGES:
            raise ValueError(f"storage must be one of {list(_STORAGES)}, got {storage!r}")
        self.path = Path(path)
        self.storage = storage
        self.writer = Writer(self.path, version=BAG_VERSION, storage_plugin=_STORAGES[storage])
        self.connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.start_ns: int | None = None
        self.end_ns: int | None = None

    def __enter__(self) -> _BagWriter:
        self.writer.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.writer.close()
            if self.storage == "mcap":
                for file in _mcap_files(self.path):
                    seal_mcap_crcs(file)
        else:
            self.writer.abort()  # do not leave a half-written bag looking complete

    def write(self, topic: str, msgtype: str, stamp_ns: int, data: bytes, qos=()) -> None:
        if topic not in self.connections:
            self.connections[topic] = self.writer.add_connection(
                topic, msgtype, typestore=bag_typestore(), offered_qos_profiles=qos
            )
            self.counts[topic] = 0
        self.writer.write(self.connections[topic], int(stamp_ns), data)
        self.counts[topic] += 1
        self.start_ns = stamp_ns if self.start_ns is None else min(self.start_ns, stamp_ns)
        self.end_ns = stamp_ns if self.end_ns is None else max(self.end_ns, stamp_ns)

    def write_msg(self, topic: str, msgtype: str, stamp_ns: int, msg: Any) -> None:
        self.write(topic, msgtype, stamp_ns, canonical_cdr(serialize_message(msg), msgtype))


_IMAGE = "sensor_msgs/msg/Image"
_INFO = "sensor_msgs/msg/CameraInfo"
_CLOUD = "sensor_msgs/msg/PointCloud2"
_TARGETS = f"{MSG_PACKAGE}/msg/TargetPromptArray"
_TF = "tf2_msgs/msg/TFMessage"


def _write_frame(w: _BagWriter, frame: RGBDFrame, topics: BagTopics, depth_encoding: str) -> None:
    """All messages of one frame, stamped (header and bag time) with ``frame.stamp_ns``."""
    t = frame.stamp_ns
    intr = frame.intrinsics
    hdr = _header(t, intr.frame_id)
    if frame.rgb.shape[:2] != (intr.height, intr.width):
        raise ValueError(f"rgb {frame.rgb.shape[:2]} does not match intrinsics {intr.size}")
    w.write_msg(topics.rgb, _IMAGE, t, numpy_to_image(frame.rgb, "rgb8", hdr))
    info = intrinsics_to_camera_info(intr, hdr)
    w.write_msg(topics.rgb_info, _INFO, t, info)
    w.write_msg(topics.depth, _IMAGE, t, metres_to_depth_image(frame.depth, hdr, depth_encoding))
    # The depth is registered to the colour camera, so it shares its intrinsics and frame.
    w.write_msg(topics.depth_info, _INFO, t, info)
    extra = frame.extra
    if extra.get("targets") is not None:
        w.write_msg(topics.targets, _TARGETS, t, targets_to_msg(extra["targets"], hdr))
    for kind, topic, default_frame in (
        ("lidar", topics.lidar, "lidar_link"),
        ("radar", topics.radar, "radar_link"),
    ):
        if extra.get(kind) is not None:
            cloud_hdr = _header(t, extra.get(f"{kind}_frame_id", default_frame))
            w.write_msg(topic, _CLOUD, t, array_to_pointcloud2(extra[kind], cloud_hdr))
    if frame.gt_depth is not None:
        w.write_msg(topics.gt_depth, _IMAGE, t, metres_to_depth_image(frame.gt_depth, hdr))
    if frame.instance is not None:
        ids = np.asarray(frame.instance)
        if ids.size and (ids.min() < 0 or ids.max() > np.iinfo(np.uint16).max):
            raise ValueError("instance ids must be in [0, 65535] to fit a 16UC1 image")
        w.write_msg(
            topics.gt_instances, _IMAGE, t, numpy_to_image(ids.astype(np.uint16), "16UC1", hdr)
        )


def write_frames_bag(
    path: str | Path,
    frames: Iterable[RGBDFrame],
    topics: BagTopics | None = None,
    storage: str = "sqlite3",
    calibration: Calibration | None = None,
    depth_encoding: str = "16UC1",
    progress: bool = False,
) -> BagSummary:
    """Record already-decoded frames (e.g. real captures) into a new bag at ``path``.

    Per frame: colour (rgb8), both camera_infos, depth (16UC1 mm by default), and when present
    ground truth (``gt_depth``, ``instance``; ``extra["materials"]``, instance id -> material,
    into :data:`MATERIALS_FILE`) and ``extra`` items ``targets`` (list of
    :class:`Target`), ``lidar`` / ``radar`` (structured arrays in ``lidar_frame_id`` /
    ``radar_frame_id``, default ``lidar_link`` / ``radar_link``). With a ``calibration``, its
    extrinsics go on ``/tf_static`` (stamped with the first frame) and the file is saved as
    ``calibration.yaml`` inside the bag directory.
    """
    topics = topics or BagTopics()
    path = Path(path)
    n = 0
    total = len(frames) if hasattr(frames, "__len__") else None
    materials: dict[int, str] = {}
    with _BagWriter(path, storage) as w:
        for frame in tqdm(frames, total=total, desc=f"bag {path.name}", disable=not progress):
            if n == 0 and calibration is not None and calibration.extrinsics:
                data = tf_static_bytes(calibration.extrinsics, frame.stamp_ns)
                w.write(topics.tf_static, _TF, frame.stamp_ns, data, qos=[TF_STATIC_QOS])
            _write_frame(w, frame, topics, depth_encoding)
            materials.update(frame.extra.get("materials") or {})
            n += 1
        if n == 0:
            raise ValueError("no frames to write")
    cal_path = save_calibration(calibration, path / CALIBRATION_FILE) if calibration else None
    if materials:
        save_materials(materials, path / MATERIALS_FILE)
    return BagSummary(
        path=path,
        storage=storage,
        n_frames=n,
        message_counts=dict(w.counts),
        start_ns=int(w.start_ns),
        end_ns=int(w.end_ns),
        calibration_path=cal_path,
    )


def save_materials(materials: dict[int, str], path: str | Path) -> Path:
    """Write instance id -> material as :data:`MATERIALS_FILE` (YAML, ids in order)."""
    import yaml

    path = Path(path)
    body = {"materials": {int(k): str(v) for k, v in sorted(materials.items())}}
    path.write_text(
        "# Instance id (as /ground_truth/instances) -> material of the simulated object.\n"
        + yaml.safe_dump(body, sort_keys=False)
    )
    return path


def bag_materials(path: str | Path) -> dict[int, str]:
    """Instance id -> material of a recording (its :data:`MATERIALS_FILE`); {} without one."""
    import yaml

    file = Path(path) / MATERIALS_FILE
    if not file.is_file():
        return {}
    data = yaml.safe_load(file.read_text()) or {}
    return {int(k): str(v) for k, v in (data.get("materials") or {}).items()}


def write_sim_bag(
    path: str | Path,
    cfg: SequenceConfig,
    storage: str = "sqlite3",
    progress: bool = True,
    topics: BagTopics | None = None,
) -> BagSummary:
    """Simulate a sequence (:func:`sim.sequence.generate_sequence`) straight into a bag.

    The raw depth goes on the depth topic (16UC1 mm, 0 = hole, like a RealSense / Orbbec
    driver), the rendered depth and instance ids on the ground-truth topics, the rig on
    ``/tf_static`` and ``calibration.yaml``, the objects' materials in :data:`MATERIALS_FILE`.
    """
    # Imported here: reading bags must not need the simulator (open3d) on a training cluster.
    from depth_perception.sim.sequence import generate_sequence, sequence_calibration

    calibration = sequence_calibration(cfg)
    frames = (f.to_rgbd_frame() for f in generate_sequence(cfg))
    if progress:
        frames = tqdm(frames, total=cfg.n_frames, desc=f"simulating {Path(path).name}")
    return write_frames_bag(
        path, frames, topics=topics, storage=storage, calibration=calibration, progress=False
    )


# ---------------------------------------------------------------------------------------------
# MCAP checksums
# ---------------------------------------------------------------------------------------------

_MCAP_MAGIC = b"\x89MCAP0\r\n"
_OP_FOOTER, _OP_CHUNK, _OP_DATA_END = 0x02, 0x06, 0x0F
_RECORD_HEAD = 9  # opcode (uint8) + content length (uint64)
_CHUNK_CRC_AT = _RECORD_HEAD + 24  # after message_start_time, message_end_time, uncompressed_size
_FOOTER_SIZE = _RECORD_HEAD + 20  # summary_start, summary_offset_start (uint64), summary_crc
_U32 = struct.Struct("<I")
_CHUNK_HEAD = struct.Struct("<QQQI")  # message start / end time, uncompressed size, its CRC


class BagReadError(OSError):
    """A bag that cannot be read as recorded: unreadable, corrupt record, checksum mismatch.

    An OSError like ``gzip.BadGzipFile``: the file's bytes are at fault, not the caller.
    """


class BagOpenError(BagReadError):
    """A bag that cannot be opened at all (as opposed to a bad record inside it)."""


@dataclass(frozen=True)
class _McapChunk:
    offset: int  # of the chunk record in the file
    message_start_ns: int
    crc: int  # CRC-32 of the uncompressed records, 0 = not computed
    compression: str
    data_at: int  # where the (compressed) records start
    data_size: int
    uncompressed_size: int


def _mcap_files(path: Path) -> list[Path]:
    """The .mcap files of a bag directory (or the file itself)."""
    path = Path(path)
    return [path] if path.suffix == ".mcap" else sorted(path.glob("*.mcap"))


def _mcap_data_section(f: BinaryIO, file: Path) -> tuple[list[_McapChunk], int | None]:
    """Chunk headers of the data section and the offset of its Data End record (None if absent).

    Walks the records from the start of the file, reading only the chunk headers.
    """
    size = f.seek(0, 2)
    f.seek(0)
    if f.read(len(_MCAP_MAGIC)) != _MCAP_MAGIC:
        raise BagReadError(f"{file}: not an MCAP file (bad magic)")
    chunks: list[_McapChunk] = []
    pos = len(_MCAP_MAGIC)
    while pos + _RECORD_HEAD <= size:
        f.seek(pos)
        op, length = struct.unpack("<BQ", f.read(_RECORD_HEAD))
        end = pos + _RECORD_HEAD + length
        if end > size:
            raise BagReadError(
                f"{file}: malformed MCAP record at byte offset {pos} (length {length})"
            )
        if op in (_OP_DATA_END, _OP_FOOTER):
            return chunks, pos if op == _OP_DATA_END else None
        if op == _OP_CHUNK:
            start_ns, _, uncompressed, crc = _CHUNK_HEAD.unpack(f.read(_CHUNK_HEAD.size))
            (n,) = _U32.unpack(f.read(4))
            compression = f.read(n).decode("utf-8", "replace")
            (data_size,) = struct.unpack("<Q", f.read(8))
            chunks.append(
                _McapChunk(pos, start_ns, crc, compression, f.tell(), data_size, uncompressed)
            )
        pos = end
    return chunks, None


def _chunk_crc(f: BinaryIO, chunk: _McapChunk) -> int:
    # rosbags' own table of chunk decompressors ("", "lz4", "zstd"): one place knows them.
    from rosbags.rosbag2.storage_mcap import DECOMPRESSORS

    f.seek(chunk.data_at)
    data = f.read(chunk.data_size)
    if chunk.compression not in DECOMPRESSORS:
        raise BagReadError(f"MCAP chunk compression {chunk.compression!r} is not supported")
    return zlib.crc32(DECOMPRESSORS[chunk.compression](data, chunk.uncompressed_size))


def _crc_of_range(f: BinaryIO, start: int, stop: int, block: int = 1 << 22) -> int:
    crc, pos = 0, start
    f.seek(start)
    while pos < stop:
        data = f.read(min(block, stop - pos))
        if not data:
            break
        crc, pos = zlib.crc32(data, crc), pos + len(data)
    return crc


def _footer(f: BinaryIO, file: Path) -> tuple[int, int, int]:
    """(footer offset, summary_start, summary_crc) of the record before the trailing magic."""
    at = f.seek(0, 2) - len(_MCAP_MAGIC) - _FOOTER_SIZE
    if at < len(_MCAP_MAGIC):
        raise BagReadError(f"{file}: too short for an MCAP file")
    f.seek(at)
    op, _, start, _, crc = struct.unpack("<BQQQI", f.read(_FOOTER_SIZE))
    if op != _OP_FOOTER or f.read() != _MCAP_MAGIC:
        raise BagReadError(f"{file}: no MCAP footer at its end (truncated or corrupt)")
    return at, start, crc


def _summary_crc_range(f: BinaryIO, file: Path) -> tuple[int, int] | None:
    """Byte range the footer's summary CRC covers: summary start to the end of the footer's
    summary_offset_start field. None when the file has no summary section."""
    at, start, _ = _footer(f, file)
    return (start, at + _RECORD_HEAD + 16) if 0 < start <= at else None


def seal_mcap_crcs(file: str | Path) -> None:
    """Write the CRCs rosbags leaves at 0: each chunk's, the data section's, the summary's.

    Order matters: chunk CRCs lie inside the data section, which the data-section CRC covers;
    the summary CRC covers neither.
    """
    file = Path(file)
    with file.open("r+b") as f:
        chunks, data_end = _mcap_data_section(f, file)
        for chunk in chunks:
            crc = _chunk_crc(f, chunk)  # reads: seek for the write only afterwards
            f.seek(chunk.offset + _CHUNK_CRC_AT)
            f.write(_U32.pack(crc))
        if data_end is not None:
            crc = _crc_of_range(f, 0, data_end)
            f.seek(data_end + _RECORD_HEAD)
            f.write(_U32.pack(crc))
        summary = _summary_crc_range(f, file)
        if summary is not None:
            crc = _crc_of_range(f, *summary)
            f.seek(summary[1])
            f.write(_U32.pack(crc))


def _check(file: Path, what: str, stored: int, computed: int) -> None:
    if stored and stored != computed:
        raise BagReadError(
            f"{file}: {what}: CRC mismatch (stored {stored:#010x}, computed {computed:#010x}); "
            "the file is corrupt"
        )


def verify_mcap_summary(file: str | Path) -> None:
    """Check the summary CRC (the index readers trust to find chunks); cheap, done at open."""
    file = Path(file)
    with file.open("rb") as f:
        summary = _summary_crc_range(f, file)
        if summary is not None:
            _check(file, "MCAP summary section", _footer(f, file)[2], _crc_of_range(f, *summary))


def verify_mcap_chunks(file: str | Path) -> None:
    """Check every chunk's CRC; the error names the file and the first bad chunk's offset."""
    file = Path(file)
    with file.open("rb") as f:
        for chunk in _mcap_data_section(f, file)[0]:
            if chunk.crc:
                what = f"MCAP chunk at byte offset {chunk.offset}"
                _check(file, what, chunk.crc, _chunk_crc(f, chunk))


def verify_mcap_data_section(file: str | Path) -> None:
    """Check the data-section CRC (covers the records between chunks too; reads the file)."""
    file = Path(file)
    with file.open("rb") as f:
        data_end = _mcap_data_section(f, file)[1]
        if data_end is not None:
            f.seek(data_end + _RECORD_HEAD)
            (stored,) = _U32.unpack(f.read(4))
            _check(file, "MCAP data section", stored, _crc_of_range(f, 0, data_end))


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _open_reader(path: Path) -> Iterator[AnyReader]:
    """An open AnyReader on the bag; a failure to open it is a :class:`BagReadError`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such bag")
    try:
        for file in _mcap_files(path):
            verify_mcap_summary(file)  # the chunk index the reader is about to trust
        # Our type store is only the fallback: a bag's own stored definitions take precedence.
        reader = AnyReader([path], default_typestore=bag_typestore())
        reader.open()
    except BagReadError:
        raise
    except Exception as exc:  # rosbags' errors, sqlite3, struct, yaml: the bag is unreadable
        raise BagOpenError(f"{path}: not a readable rosbag ({exc})") from exc
    try:
        yield reader
    finally:
        reader.close()


def _messages(reader: AnyReader, path: Path, connections: list) -> Iterator[tuple[Any, int, bytes]]:
    """``reader.messages``, with a failure to read a record as a :class:`BagReadError`.

    rosbags checks an MCAP chunk's CRC when it reads the chunk but does not say which one
    failed; the error then names the file and the chunk's offset.
    """
    try:
        yield from reader.messages(connections=connections)
    except Exception as exc:
        for file in _mcap_files(path):
            verify_mcap_chunks(file)  # raises, naming the chunk, when a CRC is the cause
        raise BagReadError(f"{path}: corrupt record ({type(exc).__name__}: {exc})") from exc


def _decoded(path: str | Path, what: str, decode: Callable[..., Any], *args: Any) -> Any:
    """``decode(*args)``, with a message that does not decode as a :class:`BagReadError`."""
    try:
        return decode(*args)
    except Exception as exc:
        raise BagReadError(f"{path}: cannot decode {what} ({type(exc).__name__}: {exc})") from exc


def _deserialize(reader: AnyReader, raw: bytes, msgtype: str) -> Any:
    if msgtype in reader.typestore.types:
        return reader.deserialize(raw, msgtype)
    # Bags with definitions for only some connections: fall back to our store.
    return bag_typestore().deserialize_cdr(raw, msgtype)


__all__ = [
    "BAG_VERSION",
    "CALIBRATION_FILE",
    "MATERIALS_FILE",
    "BagOpenError",
    "BagReadError",
    "BagSummary",
    "BagTopics",
    "bag_materials",
    "bag_typestore",
    "canonical_cdr",
    "save_materials",
    "seal_mcap_crcs",
    "targets_from_msg",
    "targets_to_msg",
    "tf_static_bytes",
    "verify_mcap_chunks",
    "verify_mcap_data_section",
    "verify_mcap_summary",
    "write_frames_bag",
    "write_sim_bag",
]

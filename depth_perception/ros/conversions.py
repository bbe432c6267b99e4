"""numpy <-> ROS message adapters used by the nodes.

Decoders are duck-typed: they read only field names (``height``, ``encoding``, ``data``, ``k``,
``fields``...), so rclpy messages and ``rosbags`` messages (whose array fields are numpy arrays)
decode identically. Encoders build rclpy messages whose ``uint8[]`` payload is an
``array.array('B')`` (what rclpy's setter stores without re-copying) and every message they
return survives ``rclpy.serialization`` round trips.

Conventions follow depth_image_proc: 16UC1 depth is millimetres with 0 = invalid, 32FC1 depth is
metres with non-finite = invalid (we also treat <= 0 as invalid), and point clouds are organized
with NaN points, x/y/z float32 at offsets 0/4/8 (+ packed ``rgb`` float32 at 16).
"""

from __future__ import annotations

import array
import sys
from typing import Any

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from depth_perception.core.camera import Intrinsics
from depth_perception.core.cloud import (
    XYZ_DTYPE,
    XYZRGB_DTYPE,
    depth_to_xyz,
    depth_to_xyzrgb,
    valid_points,
)
from depth_perception.core.depth import depth_from_mm, depth_to_mm, sanitize_depth
from depth_perception.ros.cv_bridge_compat import CvBridge as _CompatCvBridge
from depth_perception.ros.cv_bridge_compat import (
    CvBridgeError,
    buffer_of,
    decode_image,
    numpy_to_uint8_array,
)

try:  # the real cv_bridge when a ROS install provides it
    from cv_bridge import CvBridge  # type: ignore[import-not-found]

    BRIDGE_IMPLEMENTATION = "cv_bridge"
except ImportError:
    CvBridge = _CompatCvBridge
    BRIDGE_IMPLEMENTATION = "depth_perception.ros.cv_bridge_compat"

__all__ = [
    "BRIDGE_IMPLEMENTATION",
    "CvBridge",
    "CvBridgeError",
    "ns_to_stamp",
    "stamp_to_ns",
    "array_to_pointcloud2",
    "camera_info_to_intrinsics",
    "copy_header",
    "depth_image_to_metres",
    "depth_to_pointcloud2",
    "image_to_numpy",
    "image_to_rgb",
    "intrinsics_to_camera_info",
    "metres_to_depth_image",
    "numpy_to_image",
    "pointcloud2_to_array",
    "pointcloud2_to_xyz",
]

# Our encoder is used for every Image we build: it behaves the same whichever bridge is
# installed, and it fills ``data`` with one memcpy.
_ENCODER = _CompatCvBridge()

# ---------------------------------------------------------------------------------------------
# Headers
# ---------------------------------------------------------------------------------------------


def stamp_to_ns(stamp: Any) -> int:
    """A header stamp (builtin_interfaces/Time, rosbags Time or rclpy Time) -> nanoseconds."""
    if hasattr(stamp, "nanoseconds"):
        return int(stamp.nanoseconds)
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(stamp_ns: int) -> Time:
    """Nanoseconds -> builtin_interfaces/Time."""
    return Time(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))


def copy_header(header: Any = None, frame_id: str | None = None) -> Header:
    """A fresh rclpy ``std_msgs/Header`` copied from any header-like object (rclpy or rosbags).

    Copying (rather than sharing the caller's object) keeps later edits of one message's header
    from silently changing another's.
    """
    out = Header()
    if header is not None:
        out.stamp = Time(sec=int(header.stamp.sec), nanosec=int(header.stamp.nanosec))
        out.frame_id = str(header.frame_id)
    if frame_id is not None:
        out.frame_id = frame_id
    return out


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def image_to_numpy(msg: Any) -> np.ndarray:
    """sensor_msgs/Image -> (H, W) or (H, W, C) array in the message's own layout.

    A view of ``msg.data`` when rows are unpadded and the byte order is native (as cv_bridge's
    passthrough); copy it before modifying if the message is still used elsewhere.
    """
    return decode_image(msg)


_TO_RGB = {
    "rgb8": None,
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
}


def image_to_rgb(msg: Any) -> np.ndarray:
    """Colour or mono8 sensor_msgs/Image -> new (H, W, 3) uint8 RGB array."""
    encoding = str(msg.encoding)
    if encoding not in _TO_RGB:
        raise CvBridgeError(
            f"image_to_rgb: unsupported encoding '{encoding}' (expected one of {list(_TO_RGB)})"
        )
    image = decode_image(msg)
    code = _TO_RGB[encoding]
    if code is None:
        return np.array(image, copy=True)
    return cv2.cvtColor(np.ascontiguousarray(image), code)


def depth_image_to_metres(msg: Any) -> np.ndarray:
    """Depth sensor_msgs/Image -> new float32 (H, W) metres, NaN where invalid.

    16UC1 / mono16 are millimetres with 0 = no measurement; 32FC1 is metres where non-finite or
    non-positive values are invalid (depth_image_proc's conventions).
    """
    encoding = str(msg.encoding)
    if encoding in ("16UC1", "mono16"):
        return depth_from_mm(decode_image(msg))
    if encoding == "32FC1":
        return sanitize_depth(decode_image(msg))
    raise CvBridgeError(
        f"depth_image_to_metres: unsupported depth encoding '{encoding}' "
        "(expected 16UC1, mono16 or 32FC1)"
    )


def numpy_to_image(arr: np.ndarray, encoding: str, header: Any = None) -> Image:
    """numpy image -> sensor_msgs/Image with ``encoding`` (checked against dtype/channels)."""
    return _ENCODER.cv2_to_imgmsg(
        np.asarray(arr), encoding=encoding, header=None if header is None else copy_header(header)
    )


def metres_to_depth_image(depth: np.ndarray, header: Any = None, encoding: str = "32FC1") -> Image:
    """float metres (H, W) -> depth sensor_msgs/Image.

    32FC1 keeps metres with NaN for invalid pixels; 16UC1 rounds to millimetres with 0 for
    invalid (and for depths beyond 65.535 m).
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth.shape}")
    if not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f"depth must be a float array of metres, got {depth.dtype}")
    if encoding == "32FC1":
        data = sanitize_depth(depth)  # float32 copy, NaN at every invalid pixel
    elif encoding == "16UC1":
        data = depth_to_mm(depth)
    else:
        raise CvBridgeError(f"metres_to_depth_image: unsupported encoding '{encoding}'")
    return numpy_to_image(data, encoding, header)


# ---------------------------------------------------------------------------------------------
# Camera info
# ---------------------------------------------------------------------------------------------


def camera_info_to_intrinsics(msg: Any) -> Intrinsics:
    """sensor_msgs/CameraInfo (rclpy or rosbags) -> :class:`Intrinsics`.

    Raises ValueError naming the offending field for an uncalibrated camera (K = 0), non-finite
    or non-positive focal lengths, a non-finite principal point or an image size of 0.
    """
    k = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    frame = msg.header.frame_id
    if k[0, 0] == 0.0 or k[1, 1] == 0.0:
        # REP: "If K[0] == 0.0, the camera is uncalibrated"; back-projection would divide by 0.
        raise ValueError(f"CameraInfo for frame '{frame}' is uncalibrated (K = 0)")
    for name, value in (("fx", k[0, 0]), ("fy", k[1, 1]), ("cx", k[0, 2]), ("cy", k[1, 2])):
        if not np.isfinite(value):
            raise ValueError(f"CameraInfo for frame '{frame}' has a non-finite {name} ({value})")
    for name, value in (("fx", k[0, 0]), ("fy", k[1, 1])):
        if value <= 0:
            raise ValueError(f"CameraInfo for frame '{frame}' has {name} = {value} (must be > 0)")
    if int(msg.width) <= 0 or int(msg.height) <= 0:
        raise ValueError(
            f"CameraInfo for frame '{frame}' has size {msg.width}x{msg.height} "
            "(width and height must be > 0)"
        )
    return Intrinsics.from_K(
        k,
        width=int(msg.width),
        height=int(msg.height),
        D=np.asarray(msg.d, dtype=np.float64),
        distortion_model=str(msg.distortion_model),
        frame_id=str(frame),
    )


def intrinsics_to_camera_info(intr: Intrinsics, header: Any = None) -> CameraInfo:
    """:class:`Intrinsics` -> sensor_msgs/CameraInfo of a monocular camera.

    R is identity and P = [K | 0]. Without a header, frame_id comes from the intrinsics.
    """
    msg = CameraInfo()
    msg.header = copy_header(header, None if header is not None else intr.frame_id)
    msg.width, msg.height = int(intr.width), int(intr.height)
    msg.distortion_model = intr.distortion_model
    msg.d = [float(d) for d in intr.D]
    msg.k = intr.K.reshape(-1)
    msg.r = np.eye(3).reshape(-1)
    p = np.zeros((3, 4))
    p[:, :3] = intr.K
    msg.p = p.reshape(-1)
    return msg


# ---------------------------------------------------------------------------------------------
# Point clouds
# ---------------------------------------------------------------------------------------------

# PointField datatype <-> numpy scalar type (sensor_msgs/PointField constants).
_POINTFIELD_TO_NUMPY: dict[int, np.dtype] = {
    PointField.INT8: np.dtype("i1"),
    PointField.UINT8: np.dtype("u1"),
    PointField.INT16: np.dtype("i2"),
    PointField.UINT16: np.dtype("u2"),
    PointField.INT32: np.dtype("i4"),
    PointField.UINT32: np.dtype("u4"),
    PointField.FLOAT32: np.dtype("f4"),
    PointField.FLOAT64: np.dtype("f8"),
}
_NUMPY_TO_POINTFIELD = {v: k for k, v in _POINTFIELD_TO_NUMPY.items()}
_HOST_ORDER = "<" if sys.byteorder == "little" else ">"


def _field(name: str, offset: int, datatype: int, count: int = 1) -> PointField:
    return PointField(name=name, offset=offset, datatype=datatype, count=count)


def depth_to_pointcloud2(
    depth: np.ndarray,
    intr: Intrinsics,
    header: Any = None,
    rgb: np.ndarray | None = None,
    unorganized: bool = False,
) -> PointCloud2:
    """Depth in metres (+ optional registered uint8 RGB) -> sensor_msgs/PointCloud2.

    The layout is exactly depth_image_proc's point_cloud_xyz / point_cloud_xyzrgb: organized
    height x width, NaN points where depth is invalid, is_dense False, x/y/z FLOAT32 at 0/4/8
    (point_step 16) plus packed ``rgb`` FLOAT32 at 16 (point_step 32). ``unorganized=True``
    keeps only finite points in a 1 x N cloud with is_dense True.
    """
    data = None
    if unorganized:
        cloud = depth_to_xyz(depth, intr) if rgb is None else depth_to_xyzrgb(depth, rgb, intr)
        cloud = valid_points(cloud).reshape(1, -1)
        data = numpy_to_uint8_array(cloud)
    else:
        # Write the cloud straight into the message's buffer: no 10 MB copy per frame.
        step = (XYZ_DTYPE if rgb is None else XYZRGB_DTYPE).itemsize
        data = array.array("B", b"\0") * (intr.width * intr.height * step)
        if rgb is None:
            cloud = depth_to_xyz(depth, intr, out=data)
        else:
            cloud = depth_to_xyzrgb(depth, rgb, intr, out=data)
    msg = PointCloud2(check_fields=True)  # see numpy_to_uint8_array: zero-copy data
    msg.header = copy_header(header, None if header is not None else intr.frame_id)
    msg.height, msg.width = int(cloud.shape[0]), int(cloud.shape[1])
    fields = [
        _field("x", 0, PointField.FLOAT32),
        _field("y", 4, PointField.FLOAT32),
        _field("z", 8, PointField.FLOAT32),
    ]
    if rgb is not None:
        fields.append(_field("rgb", 16, PointField.FLOAT32))
    msg.fields = fields
    msg.is_bigendian = False  # core/cloud.py writes little-endian float32
    msg.point_step = cloud.dtype.itemsize
    msg.row_step = msg.point_step * msg.width
    msg.is_dense = bool(unorganized)
    msg.data = data
    return msg


def _dtype_from_fields(fields: Any, point_step: int, big_endian: bool) -> np.dtype:
    """PointField list -> structured dtype of itemsize ``point_step`` (padding kept implicit)."""
    order = ">" if big_endian else "<"
    names, formats, offsets = [], [], []
    for f in fields:
        datatype = int(f.datatype)
        if datatype not in _POINTFIELD_TO_NUMPY:
            raise ValueError(f"PointField '{f.name}' has unknown datatype {datatype}")
        base = _POINTFIELD_TO_NUMPY[datatype].newbyteorder(order)
        count = int(f.count)
        if count < 1:
            continue  # a zero-count field carries no data (seen as padding markers)
        fmt = base if count == 1 else np.dtype((base, (count,)))
        offset = int(f.offset)
        if offset + fmt.itemsize > point_step:
            raise ValueError(
                f"PointField '{f.name}' (offset {offset}, {fmt.itemsize} bytes) does not fit in "
                f"point_step {point_step}"
            )
        if str(f.name) in names:
            raise ValueError(f"PointCloud2 has a duplicate field name '{f.name}'")
        names.append(str(f.name))
        formats.append(fmt)
        offsets.append(offset)
    return np.dtype(
        {"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step}
    )


def pointcloud2_to_array(msg: Any) -> np.ndarray:
    """Any sensor_msgs/PointCloud2 -> (height, width) structured array in native byte order.

    Honours every PointField datatype, ``count`` > 1 (as sub-arrays), field offsets with
    padding, ``point_step``, ``row_step`` padding and ``is_bigendian``. The result is a view of
    ``msg.data`` when the layout allows it (no row padding, native byte order), else a copy.
    """
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    big = bool(msg.is_bigendian)
    dtype = _dtype_from_fields(msg.fields, point_step, big)
    if height * width == 0:
        return np.empty((height, width), dtype=dtype.newbyteorder("="))
    if row_step < point_step * width:
        raise ValueError(f"row_step {row_step} < point_step {point_step} x width {width}")
    buf = buffer_of(msg.data)
    # The last row needs only point_step * width bytes; anything shorter is truncated data.
    needed = row_step * (height - 1) + point_step * width
    if buf.size < needed:
        raise ValueError(f"PointCloud2 data has {buf.size} bytes, expected at least {needed}")
    cloud = np.ndarray(
        (height, width), dtype=dtype, buffer=buf, offset=0, strides=(row_step, point_step)
    )
    if big != (_HOST_ORDER == ">"):
        return cloud.astype(dtype.newbyteorder("="))  # value-preserving swap into a copy
    return cloud if row_step == point_step * width else cloud.copy()


def pointcloud2_to_xyz(msg: Any, skip_nans: bool = True) -> np.ndarray:
    """PointCloud2 -> (N, 3) float32 x, y, z in row-major order.

    With ``skip_nans`` points with any non-finite coordinate are dropped (as sensor_msgs_py's
    read_points with skip_nans=True drops NaN points).
    """
    cloud = pointcloud2_to_array(msg).reshape(-1)
    names = cloud.dtype.names or ()
    missing = [c for c in "xyz" if c not in names]
    if missing:
        raise ValueError(f"PointCloud2 has no field(s) {missing}; fields are {list(names)}")
    xyz = np.empty((cloud.shape[0], 3), dtype=np.float32)
    for i, c in enumerate("xyz"):
        xyz[:, i] = cloud[c]
    if skip_nans:
        xyz = xyz[np.isfinite(xyz).all(axis=1)]
    return xyz


def _fields_from_dtype(dtype: np.dtype) -> tuple[list[PointField], bool]:
    """Structured dtype -> (PointField list, is_bigendian). All fields must share byte order."""
    if dtype.names is None:
        raise ValueError(f"array_to_pointcloud2 needs a structured array, got dtype {dtype}")
    fields, orders = [], set()
    for name in dtype.names:
        fdtype, offset = dtype.fields[name][:2]
        base, count = fdtype, 1
        if fdtype.subdtype is not None:
            base, shape = fdtype.subdtype
            count = int(np.prod(shape))
        key = base.newbyteorder("=")
        if key not in _NUMPY_TO_POINTFIELD:
            raise ValueError(f"field '{name}' has dtype {base}, which PointField cannot express")
        if base.itemsize > 1:
            orders.add(_HOST_ORDER if base.byteorder == "=" else base.byteorder)
        fields.append(_field(name, int(offset), _NUMPY_TO_POINTFIELD[key], count))
    if len(orders) > 1:
        raise ValueError("all fields of a PointCloud2 must share one byte order")
    big = (orders.pop() if orders else _HOST_ORDER) == ">"
    return fields, big


def array_to_pointcloud2(
    cloud: np.ndarray, header: Any = None, is_dense: bool | None = None
) -> PointCloud2:
    """Structured array (N,) or (H, W) -> PointCloud2 with one PointField per dtype field.

    Offsets, padding (``itemsize`` > sum of fields) and sub-array counts are kept, e.g. a LiDAR
    dtype x, y, z, intensity float32 + ring uint16 as Velodyne/Ouster drivers publish. When
    ``is_dense`` is None it is True iff every x/y/z value present is finite.
    """
    cloud = np.asarray(cloud)
    if cloud.ndim == 1:
        cloud = cloud.reshape(1, -1)
    if cloud.ndim != 2:
        raise ValueError(f"cloud must be 1-D or 2-D, got shape {cloud.shape}")
    fields, big = _fields_from_dtype(cloud.dtype)
    if is_dense is None:
        coords = [c for c in "xyz" if c in cloud.dtype.names]
        is_dense = all(bool(np.isfinite(cloud[c]).all()) for c in coords)
    msg = PointCloud2(check_fields=True)  # see numpy_to_uint8_array: zero-copy data
    msg.header = copy_header(header)
    msg.height, msg.width = int(cloud.shape[0]), int(cloud.shape[1])
    msg.fields = fields
    msg.is_bigendian = big
    msg.point_step = int(cloud.dtype.itemsize)
    msg.row_step = msg.point_step * msg.width
    msg.is_dense = bool(is_dense)
    msg.data = numpy_to_uint8_array(cloud)
    return msg

"""numpy <-> ROS message adapters used by the nodes.

Decoders are duck-typed: they read only field names (``height``, ``encoding``, ``data``, ``k``,
``fields``...), so rclpy messages and ``rosbags`` messages (whose array fields are numpy arrays)
decode identically. Encoders build rclpy messages whose ``uint8[]`` payload is an
``array.array('B')`` (what rclpy's setter stores without re-copying) and every message they
return survives ``rclpy.serialization`` round trips.

Conventions follow depth_image_proc: 16UC1 depth is millimetres with 0 = invalid, 32FC1 depth is
metres with non-finite = invalid (we also treat <= 0 as invalid), and point clouds are organized
with NaN points, x/y/z float32 at offsets 0/4/8 (+ packed ``rgb`` float32 at 16).

``image_to_rgb`` and ``depth_image_to_metres`` also take ``sensor_msgs/CompressedImage`` as
image_transport writes it (ROS 1 and ROS 2): ``compressed`` colour (JPEG / PNG, format e.g.
``"rgb8; jpeg compressed bgr8"`` or a bare ``"jpeg"``), ``compressedDepth`` depth (a 12-byte
header + PNG or RVL, 16UC1 millimetres or 32FC1 inverse-depth quantised) and ``compressed``
16-bit PNG depth (``"16UC1; png compressed "``). Problems specific to compressed messages (corrupt
or truncated data, unknown formats) raise ``ValueError`` naming the format; an unsupported raw
``Image`` encoding raises ``CvBridgeError`` as before, so callers catch both.
"""

from __future__ import annotations

import array
import re
import struct
import sys
from typing import Any

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from depth_perception.core.camera import Intrinsics
from depth_perception.core.cloud import (
    XYZ_DTYPE,
    XYZRGB_DTYPE,
    depth_to_xyz,
    depth_to_xyzrgb,
    valid_points,
)
from depth_perception.core.depth import (
    MM_PER_M,
    depth_from_mm,
    depth_to_mm,
    sanitize_depth,
    valid_mask,
)
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
    "compressed_image_size",
    "copy_header",
    "depth_image_to_metres",
    "depth_to_pointcloud2",
    "image_to_numpy",
    "image_to_rgb",
    "intrinsics_to_camera_info",
    "inverse_depth_quantisation",
    "is_compressed_image",
    "metres_to_compressed_depth",
    "metres_to_depth_image",
    "numpy_to_image",
    "pointcloud2_to_array",
    "pointcloud2_to_xyz",
    "rgb_to_compressed_image",
    "rvl_compress",
    "rvl_decompress",
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
    """Colour or mono8 sensor_msgs/Image, or a ``compressed`` CompressedImage (JPEG / PNG) ->
    new (H, W, 3) uint8 RGB array."""
    if is_compressed_image(msg):
        try:
            return _compressed_to_rgb(msg)
        except ValueError as exc:
            raise ValueError(f"image_to_rgb: {exc}") from None
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
    non-positive values are invalid (depth_image_proc's conventions). A CompressedImage may be
    image_transport ``compressedDepth`` (16UC1 / 32FC1; PNG or RVL) or a ``compressed`` 16-bit
    PNG of millimetres (see :func:`metres_to_compressed_depth` for the layout).
    """
    if is_compressed_image(msg):
        try:
            return _compressed_to_metres(msg)
        except ValueError as exc:
            raise ValueError(f"depth_image_to_metres: {exc}") from None
    encoding = str(msg.encoding)
    if encoding in ("16UC1", "mono16"):
        return _mm_to_metres(decode_image(msg))
    if encoding == "32FC1":
        return sanitize_depth(decode_image(msg))
    raise CvBridgeError(
        f"depth_image_to_metres: unsupported depth encoding '{encoding}' "
        "(expected 16UC1, mono16 or 32FC1)"
    )


# Per-frame fast paths of the depth encodings. Each gives exactly (bit for bit) what the core
# function named in its docstring gives; test/test_node_lazy_outputs.py compares them.

#: depth_from_mm of every uint16: decoding 16UC1 is then one table look-up per pixel.
_MM_TO_METRES = depth_from_mm(np.arange(1 << 16, dtype=np.uint16))
_MM_TO_METRES.flags.writeable = False


def _mm_to_metres(depth_mm: np.ndarray) -> np.ndarray:
    """:func:`depth_from_mm` of a uint16 image, by table (4x faster than the arithmetic)."""
    if depth_mm.dtype != np.uint16:
        return depth_from_mm(depth_mm)
    return _MM_TO_METRES.take(depth_mm)


def _metres_to_mm(depth_m: np.ndarray) -> np.ndarray:
    """:func:`depth_to_mm` of a float image with fewer temporaries (same float64 rounding)."""
    mm = np.multiply(depth_m, MM_PER_M, dtype=np.float64)
    np.rint(mm, out=mm)
    # fmax drops NaN: NaN and everything <= 0 become 0 without a per-pixel select; what does
    # not fit (beyond 65,535 mm, +inf) is rare and zeroed where it is.
    np.fmax(mm, 0.0, out=mm)
    big = mm > np.iinfo(np.uint16).max
    if big.any():
        mm[big] = 0.0
    return mm.astype(np.uint16)


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
        data = _metres_to_mm(depth)
    else:
        raise CvBridgeError(f"metres_to_depth_image: unsupported encoding '{encoding}'")
    return numpy_to_image(data, encoding, header)


# ---------------------------------------------------------------------------------------------
# Compressed images (image_transport's compressed and compressedDepth transports)
# ---------------------------------------------------------------------------------------------

#: compressedDepth's ConfigHeader ahead of the PNG / RVL payload: int32 format (0 = INV_DEPTH),
#: float32 depthQuantA, float32 depthQuantB, in the publisher's (little-endian) byte order.
_DEPTH_HEADER = struct.Struct("<iff")
#: An RVL payload starts with uint32 cols, uint32 rows.
_RVL_SIZE = struct.Struct("<II")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8\xff"
_CODEC_RE = re.compile(r"\b(jpe?g|png)\b")
# JPEG start-of-frame markers (C0-CF except DHT C4, JPG C8, DAC CC): they carry the image size.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_COLOUR_BASES = ("rgb8", "bgr8", "rgba8", "bgra8", "rgb16", "bgr16", "rgba16", "bgra16")
_MM_ENCODINGS = ("16UC1", "mono16")


def is_compressed_image(msg: Any) -> bool:
    """True for a sensor_msgs/CompressedImage (rclpy or rosbags): ``format``, no ``encoding``."""
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def _split_format(fmt: str) -> tuple[str, str]:
    """'rgb8; jpeg compressed bgr8' -> ('rgb8', 'jpeg compressed bgr8'); 'jpeg' -> ('', 'jpeg')."""
    base, sep, rest = fmt.partition(";")
    return (base.strip(), rest.strip()) if sep else ("", fmt.strip())


def _image_codec(fmt: str) -> str | None:
    """'jpeg' or 'png' as named by a ``compressed`` format string, else None."""
    match = _CODEC_RE.search(_split_format(fmt)[1].lower())
    if match is None:
        return None
    return "png" if match.group(1) == "png" else "jpeg"


def _depth_codec(fmt: str) -> str:
    """Payload codec of a ``compressedDepth`` format, by compressed_depth_image_transport's rules:
    no ';' or a bare 'compressedDepth' (older publishers) is PNG, else 'compressedDepth png|rvl'."""
    _, sep, ending = fmt.partition(";")
    if not sep or "compressedDepth png" in ending:
        return "png"
    if "compressedDepth rvl" in ending:
        return "rvl"
    if "compressedDepth" in ending and "compressedDepth " not in ending:
        return "png"
    raise ValueError(
        f"CompressedImage format '{fmt}': unsupported compressedDepth codec "
        "(expected 'compressedDepth', 'compressedDepth png' or 'compressedDepth rvl')"
    )


def _png_size(buf: np.ndarray, fmt: str) -> tuple[int, int]:
    head = buf[:24].tobytes()
    if len(head) < 24 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        raise ValueError(f"CompressedImage format '{fmt}': data is not a PNG ({buf.size} bytes)")
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def _jpeg_size(buf: np.ndarray, fmt: str) -> tuple[int, int]:
    """Width and height from the first start-of-frame segment (no pixel is decoded)."""
    if buf[:3].tobytes() != _JPEG_SOI:
        raise ValueError(f"CompressedImage format '{fmt}': data is not a JPEG ({buf.size} bytes)")
    i, n = 2, buf.size
    while i + 4 <= n:
        if buf[i] != 0xFF:
            break
        marker = int(buf[i + 1])
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # segments without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            break
        if marker in _JPEG_SOF:
            if i + 9 > n:
                break
            height, width = struct.unpack(">HH", buf[i + 5 : i + 9].tobytes())
            return int(width), int(height)
        i += 2 + (int(buf[i + 2]) << 8 | int(buf[i + 3]))
    raise ValueError(
        f"CompressedImage format '{fmt}': JPEG without a readable frame header "
        f"({buf.size} bytes): corrupt or truncated"
    )


def compressed_image_size(msg: Any) -> tuple[int, int]:
    """(width, height) of a CompressedImage read from its headers only (PNG IHDR, JPEG SOF, RVL
    size), so a frame can be checked before anything is decoded. ValueError if unreadable."""
    fmt = str(msg.format)
    buf = buffer_of(msg.data)
    if "compressedDepth" in fmt:
        payload = buf[_DEPTH_HEADER.size :]
        if _depth_codec(fmt) == "rvl":
            if payload.size < _RVL_SIZE.size:
                raise ValueError(f"CompressedImage format '{fmt}': RVL data is truncated")
            cols, rows = _RVL_SIZE.unpack(payload[: _RVL_SIZE.size].tobytes())
            return int(cols), int(rows)
        return _png_size(payload, fmt)
    codec = _image_codec(fmt)
    if codec == "png":
        return _png_size(buf, fmt)
    if codec == "jpeg":
        return _jpeg_size(buf, fmt)
    raise ValueError(_unknown_format(fmt))


def _unknown_format(fmt: str) -> str:
    return (
        f"unsupported CompressedImage format '{fmt}' (expected image_transport 'compressed' "
        "jpeg/png, e.g. 'rgb8; jpeg compressed bgr8', or 'compressedDepth')"
    )


def _imdecode(buf: np.ndarray, fmt: str, codec: str) -> np.ndarray:
    if codec == "png":
        _png_size(buf, fmt)  # the signature: anything else is not what the format says
    else:
        _jpeg_size(buf, fmt)
    image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ValueError(
            f"CompressedImage format '{fmt}': cannot decode the {codec.upper()} data "
            f"({buf.size} bytes): corrupt or truncated"
        )
    return image


def _compressed_to_rgb(msg: Any) -> np.ndarray:
    fmt = str(msg.format)
    if "compressedDepth" in fmt:
        raise ValueError(f"CompressedImage format '{fmt}' is a depth image")
    codec = _image_codec(fmt)
    if codec is None:
        raise ValueError(_unknown_format(fmt))
    base, rest = _split_format(fmt)
    if base and base not in _TO_RGB and base not in _COLOUR_BASES:
        raise ValueError(
            f"CompressedImage format '{fmt}' holds a '{base}' image "
            f"(expected one of {list(_TO_RGB)})"
        )
    image = _imdecode(buffer_of(msg.data), fmt, codec)
    if image.dtype != np.uint8:
        raise ValueError(
            f"CompressedImage format '{fmt}' decodes to {image.dtype}; "
            "only 8-bit colour is supported"
        )
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    # OpenCV decodes to BGR(A). image_transport's subscriber takes the decoded channels as BGR
    # unless a colour image's format says it was compressed from RGB (no "compressed bgr").
    rgb_order = base in _COLOUR_BASES and "compressed bgr" not in rest
    channels = image.shape[2]
    if channels == 3:
        return image if rgb_order else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2RGB if rgb_order else cv2.COLOR_BGRA2RGB)
    raise ValueError(f"CompressedImage format '{fmt}' has {channels} channels")


def _compressed_to_metres(msg: Any) -> np.ndarray:
    fmt = str(msg.format)
    base, _ = _split_format(fmt)
    buf = buffer_of(msg.data)
    if "compressedDepth" not in fmt:
        # compressed_image_transport's PNG of a 16-bit image: "16UC1; png compressed "
        if _image_codec(fmt) != "png" or base not in _MM_ENCODINGS:
            raise ValueError(
                f"CompressedImage format '{fmt}' is not depth (expected "
                "compressedDepth, e.g. '16UC1; compressedDepth', or a 16-bit PNG "
                "'16UC1; png compressed ')"
            )
        return _mm_to_metres(_uint16_png(buf, fmt))
    codec = _depth_codec(fmt)
    if base not in (*_MM_ENCODINGS, "32FC1"):
        raise ValueError(
            f"CompressedImage format '{fmt}': unsupported depth encoding "
            f"'{base}' (expected 16UC1, mono16 or 32FC1)"
        )
    if buf.size <= _DEPTH_HEADER.size:
        raise ValueError(
            f"CompressedImage format '{fmt}': {buf.size} bytes, no room for the compressedDepth "
            "header and data"
        )
    _, quant_a, quant_b = _DEPTH_HEADER.unpack(buf[: _DEPTH_HEADER.size].tobytes())
    payload = buf[_DEPTH_HEADER.size :]
    values = _rvl_payload(payload, fmt) if codec == "rvl" else _uint16_png(payload, fmt)
    if base in _MM_ENCODINGS:  # raw millimetres; the header's parameters are unused
        return _mm_to_metres(values)
    if not (np.isfinite(quant_a) and np.isfinite(quant_b) and quant_a > 0):
        raise ValueError(
            f"CompressedImage format '{fmt}': invalid inverse-depth quantisation "
            f"(depthQuantA {quant_a}, depthQuantB {quant_b})"
        )
    # depth = A / (v - B), in float32 as compressed_depth_image_transport computes it; 0 = none.
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.float32(quant_a) / (values.astype(np.float32) - np.float32(quant_b))
    depth[(values == 0) | ~valid_mask(depth)] = np.nan
    return depth


def _uint16_png(buf: np.ndarray, fmt: str) -> np.ndarray:
    image = _imdecode(buf, fmt, "png")
    if image.dtype != np.uint16 or image.ndim != 2:
        raise ValueError(
            f"CompressedImage format '{fmt}': the PNG holds {image.dtype} x "
            f"{1 if image.ndim == 2 else image.shape[2]} channel(s), expected 16-bit single-channel"
        )
    return image


def _rvl_payload(payload: np.ndarray, fmt: str) -> np.ndarray:
    if payload.size < _RVL_SIZE.size:
        raise ValueError(f"CompressedImage format '{fmt}': RVL data is truncated")
    cols, rows = _RVL_SIZE.unpack(payload[: _RVL_SIZE.size].tobytes())
    # RVL compresses at most ~4x (2 bytes per pixel); like the reference decoder, a size claiming
    # more than 10x is corrupt data rather than an image worth allocating.
    if rows == 0 or cols == 0 or rows * cols > payload.size * 5:
        raise ValueError(
            f"CompressedImage format '{fmt}': malformed RVL image of {cols}x{rows} pixels in "
            f"{payload.size} bytes"
        )
    try:
        values = rvl_decompress(payload[_RVL_SIZE.size :], rows * cols)
    except ValueError as exc:
        raise ValueError(f"CompressedImage format '{fmt}': {exc}") from None
    return values.reshape(rows, cols)


def _compressed_message(header: Any, fmt: str, payload: bytes | np.ndarray) -> CompressedImage:
    msg = CompressedImage(check_fields=True)  # see numpy_to_uint8_array: zero-copy data
    msg.header = copy_header(header)
    msg.format = fmt
    msg.data = numpy_to_uint8_array(np.frombuffer(payload, np.uint8))
    return msg


def rgb_to_compressed_image(
    rgb: np.ndarray,
    header: Any = None,
    format: str = "jpeg",  # noqa: A002 - image_transport's parameter name
    jpeg_quality: int = 95,
    png_level: int = 3,
) -> CompressedImage:
    """(H, W, 3) uint8 RGB -> CompressedImage as image_transport's ``compressed`` publisher
    writes an rgb8 image: BGR-ordered JPEG / PNG, format ``"rgb8; jpeg compressed bgr8"`` or
    ``"rgb8; png compressed bgr8"`` (defaults: its quality 95 and PNG level 3)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    if format == "jpeg":
        ext, params = ".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    elif format == "png":
        ext, params = ".png", [cv2.IMWRITE_PNG_COMPRESSION, int(png_level)]
    else:
        raise ValueError(f"rgb_to_compressed_image: format '{format}' (expected jpeg or png)")
    ok, data = cv2.imencode(ext, cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"cv2.imencode ({format}) failed on a {rgb.shape} image")
    return _compressed_message(header, f"rgb8; {format} compressed bgr8", data)


def inverse_depth_quantisation(
    depth_max: float = 10.0, depth_quantization: float = 100.0
) -> tuple[float, float]:
    """compressedDepth's (depthQuantA, depthQuantB) in float32 as its encoder computes them:
    A = z0 (z0 + 1), B = 1 - A / depth_max with z0 = ``depth_quantization``.

    A depth d < depth_max is stored as v = trunc(A / d + B) and read back as A / (v - B), so
    the read-back depth d' satisfies d <= d' < d + d^2 / (A - d) (up to float32 rounding), and
    only d >= A / (65535 - B) fits in 16 bits (0.152 m at the defaults).
    """
    z0 = np.float32(depth_quantization)
    quant_a = z0 * (z0 + np.float32(1.0))
    quant_b = np.float32(1.0) - quant_a / np.float32(depth_max)
    return float(quant_a), float(quant_b)


def metres_to_compressed_depth(
    depth: np.ndarray,
    header: Any = None,
    encoding: str = "32FC1",
    depth_max: float = 10.0,
    depth_quantization: float = 100.0,
    png_level: int = 3,
    compression: str = "png",
) -> CompressedImage:
    """Float metres (H, W) -> CompressedImage exactly as compressed_depth_image_transport encodes
    a 16UC1 or 32FC1 image: format ``"<encoding>; compressedDepth <png|rvl>"``, data = 12-byte
    ConfigHeader (int32 0, float32 depthQuantA, float32 depthQuantB) + PNG (or RVL) of uint16.

    16UC1: millimetres (rounded), 0 where invalid or beyond ``depth_max``; lossless at 1 mm;
    the header's parameters are 0 (unused). 32FC1: inverse depth ``trunc(A / d + B)`` with the
    parameters of :func:`inverse_depth_quantisation`; NaN, <= 0, >= ``depth_max`` and depths too
    close to fit in 16 bits become 0 (= no measurement).
    """
    depth = np.asarray(depth)
    if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f"depth must be a (H, W) float array of metres, got {depth.shape}")
    if not (depth_max > 0 and depth_quantization > 0):
        raise ValueError(
            f"depth_max {depth_max} and depth_quantization {depth_quantization} must be > 0"
        )
    if encoding == "16UC1":
        values = depth_to_mm(depth)
        limit = min(int(depth_max * 1000.0), int(np.iinfo(np.uint16).max))
        values[values > limit] = 0
        quant_a = quant_b = 0.0
    elif encoding == "32FC1":
        quant_a, quant_b = inverse_depth_quantisation(depth_max, depth_quantization)
        d = depth.astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            inverse = np.float32(quant_a) / d + np.float32(quant_b)
            keep = (d > 0) & (d < np.float32(depth_max)) & (inverse < 65536.0)
        values = np.zeros(d.shape, np.uint16)
        values[keep] = inverse[keep].astype(np.uint16)  # truncation, as the C++ cast
    else:
        raise ValueError(f"metres_to_compressed_depth: encoding '{encoding}' (16UC1 or 32FC1)")
    if compression == "png":
        ok, payload = cv2.imencode(".png", values, [cv2.IMWRITE_PNG_COMPRESSION, int(png_level)])
        if not ok:
            raise ValueError(f"cv2.imencode (png) failed on a {values.shape} depth image")
        payload = payload.tobytes()
    elif compression == "rvl":
        rows, cols = values.shape
        payload = _RVL_SIZE.pack(cols, rows) + rvl_compress(values)
    else:
        raise ValueError(f"metres_to_compressed_depth: compression '{compression}' (png or rvl)")
    data = _DEPTH_HEADER.pack(0, quant_a, quant_b) + payload
    return _compressed_message(header, f"{encoding}; compressedDepth {compression}", data)


# RVL (A. D. Wilson, "Fast Lossless Depth Image Compression", 2017), the layout of
# compressed_depth_image_transport: 32-bit little-endian words filled with 4-bit nibbles from the
# most significant end; a value is written in 3-bit groups, least significant first, each
# nibble's high bit saying "more follows". The stream is, until every pixel is covered: the
# number of zeros, the number of non-zeros, then each non-zero as the zigzag-coded difference
# to the previous non-zero pixel (starting from 0).
_NIBBLE_SHIFTS = np.arange(28, -1, -4, dtype=np.uint32)
_RVL_MAX_GROUPS = 10  # the reference decoder's 32-bit accumulator holds ten 3-bit groups


def rvl_compress(values: np.ndarray) -> bytes:
    """uint16 pixels (any shape, row-major) -> RVL bytes (without the cols/rows prefix)."""
    px = np.ascontiguousarray(values, dtype=np.uint16).reshape(-1)
    if px.size == 0:
        return b""
    nonzero = px != 0
    edges = np.flatnonzero(nonzero[1:] != nonzero[:-1]) + 1
    runs = np.diff(np.concatenate(([0], edges, [px.size])))
    if nonzero[0]:
        runs = np.concatenate(([0], runs))  # every pair starts with a (possibly empty) zero run
    if runs.size % 2:
        runs = np.concatenate((runs, [0]))  # trailing zeros: the pair's non-zero count is 0
    zeros, counts = runs[0::2], runs[1::2]
    current = px[nonzero].astype(np.int64)
    delta = current - np.concatenate(([0], current[:-1]))
    zigzag = np.where(delta >= 0, delta << 1, ((-delta) << 1) - 1)
    # Interleave: zeros_i, counts_i, then the counts_i values of that run.
    heads = 2 * np.arange(zeros.size) + np.concatenate(([0], np.cumsum(counts)[:-1]))
    stream = np.empty(2 * zeros.size + current.size, np.int64)
    is_value = np.ones(stream.size, bool)
    is_value[heads] = is_value[heads + 1] = False
    stream[heads], stream[heads + 1] = zeros, counts
    stream[is_value] = zigzag
    # Variable-length code: ceil(bits / 3) nibbles per value (at least one).
    groups = np.ones(stream.size, np.int64)
    rest = stream >> 3
    while rest.any():
        groups += rest > 0
        rest >>= 3
    starts = np.cumsum(groups) - groups
    which = np.repeat(np.arange(stream.size), groups)
    index = np.arange(which.size) - starts[which]
    nibbles = (stream[which] >> (3 * index)) & 7
    nibbles |= (index < groups[which] - 1).astype(np.int64) << 3
    padded = np.zeros(-(-nibbles.size // 8) * 8, np.uint32)
    padded[: nibbles.size] = nibbles
    words = (padded.reshape(-1, 8) << _NIBBLE_SHIFTS).sum(axis=1, dtype=np.uint32)
    return words.astype("<u4").tobytes()


def rvl_decompress(data: Any, num_pixels: int) -> np.ndarray:
    """RVL bytes (without the cols/rows prefix) -> ``num_pixels`` uint16 values.

    ValueError when the stream ends early or its run lengths overrun ``num_pixels`` (where the
    reference decoder would read or write out of bounds).
    """
    buf = buffer_of(data)
    out = np.zeros(num_pixels, np.uint16)
    if num_pixels == 0:
        return out
    padded = np.zeros(-(-buf.size // 4) * 4, np.uint8)
    padded[: buf.size] = buf
    words = padded.view("<u4").astype(np.uint32)
    nibbles = ((words[:, None] >> _NIBBLE_SHIFTS) & 0xF).reshape(-1).astype(np.int64)
    ends = np.flatnonzero((nibbles & 8) == 0)
    if ends.size == 0:
        raise ValueError("RVL data is truncated")
    starts = np.concatenate(([0], ends[:-1] + 1))
    groups = ends - starts + 1
    index = np.arange(ends[-1] + 1) - np.repeat(starts, groups)
    shifted = (nibbles[: ends[-1] + 1] & 7) << (3 * np.minimum(index, _RVL_MAX_GROUPS))
    stream = np.add.reduceat(shifted, starts)
    too_long = groups > _RVL_MAX_GROUPS
    values = stream.tolist()
    runs_at, runs_len, runs_pixel = [], [], []
    i, pixel, n = 0, 0, len(values)
    while pixel < num_pixels:
        if i + 1 >= n:
            raise ValueError(f"RVL data is truncated after {pixel} of {num_pixels} pixels")
        zeros, count = values[i], values[i + 1]
        if zeros + count > num_pixels - pixel or too_long[i] or too_long[i + 1]:
            raise ValueError(f"RVL data is corrupt: runs overrun {num_pixels} pixels")
        if i + 2 + count > n:
            raise ValueError(f"RVL data is truncated after {pixel + zeros} of {num_pixels} pixels")
        pixel += zeros
        if count:
            runs_at.append(i + 2)
            runs_len.append(count)
            runs_pixel.append(pixel)
        pixel += count
        i += 2 + count
    if runs_len:
        lengths = np.asarray(runs_len, np.int64)
        offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
        step = np.arange(int(lengths.sum())) - offsets
        value_index = np.repeat(np.asarray(runs_at, np.int64), lengths) + step
        if too_long[value_index].any():
            raise ValueError("RVL data is corrupt: a value longer than 30 bits")
        zigzag = stream[value_index]
        delta = (zigzag >> 1) ^ -(zigzag & 1)
        out[np.repeat(np.asarray(runs_pixel, np.int64), lengths) + step] = np.cumsum(delta) & 0xFFFF
    return out


# ---------------------------------------------------------------------------------------------
# Camera info
# ---------------------------------------------------------------------------------------------


# Distortion model names of other writers -> the ROS name with the same equations. The RealSense
# SDK records its rs2_distortion names; its "Brown Conrady" is OpenCV's / ROS's plumb_bob (and
# realsense-ros publishes it as such), "Kannala Brandt4" is ROS's equidistant.
_DISTORTION_ALIASES = {
    "brown conrady": "plumb_bob",
    "brown_conrady": "plumb_bob",
    "kannala brandt4": "equidistant",
}


def _camera_info_field(msg: Any, name: str) -> Any:
    """A CameraInfo array field by its ROS 2 name (``k``) or its ROS 1 name (``K``)."""
    value = getattr(msg, name, None)
    return getattr(msg, name.upper()) if value is None else value


def camera_info_to_intrinsics(msg: Any) -> Intrinsics:
    """sensor_msgs/CameraInfo (rclpy or rosbags, ROS 2 ``k``/``d`` or ROS 1 ``K``/``D``
    spellings) -> :class:`Intrinsics`.

    The RealSense SDK's distortion name "Brown Conrady" becomes "plumb_bob" (same model).
    Raises ValueError naming the offending field for an uncalibrated camera (K = 0), non-finite
    or non-positive focal lengths, a non-finite principal point or an image size of 0.
    """
    k = np.asarray(_camera_info_field(msg, "k"), dtype=np.float64).reshape(3, 3)
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
        D=np.asarray(_camera_info_field(msg, "d"), dtype=np.float64),
        distortion_model=_DISTORTION_ALIASES.get(
            str(msg.distortion_model).strip().lower(), str(msg.distortion_model)
        ),
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
    data: array.array | None = None,
) -> PointCloud2:
    """Depth in metres (+ optional registered uint8 RGB) -> sensor_msgs/PointCloud2.

    The layout is exactly depth_image_proc's point_cloud_xyz / point_cloud_xyzrgb: organized
    height x width, NaN points where depth is invalid, is_dense False, x/y/z FLOAT32 at 0/4/8
    (point_step 16) plus packed ``rgb`` FLOAT32 at 16 (point_step 32). ``unorganized=True``
    keeps only finite points in a 1 x N cloud with is_dense True.

    ``data``: an ``array.array('B')`` of exactly the organized cloud's size to write the cloud
    into and use as the message's data, instead of a new one (every byte is overwritten). A
    node that publishes a cloud per frame passes the same one each time: rclpy copies it when
    publishing, and a new 10 MB buffer per frame costs its page faults again every frame.
    """
    if unorganized:
        cloud = depth_to_xyz(depth, intr) if rgb is None else depth_to_xyzrgb(depth, rgb, intr)
        cloud = valid_points(cloud).reshape(1, -1)
        data = numpy_to_uint8_array(cloud)
    else:
        # Write the cloud straight into the message's buffer: no 10 MB copy per frame.
        step = (XYZ_DTYPE if rgb is None else XYZRGB_DTYPE).itemsize
        size = intr.width * intr.height * step
        if data is None or len(data) != size or data.typecode != "B":
            data = array.array("B", b"\0") * size
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

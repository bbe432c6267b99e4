"""A small, pure-numpy stand-in for ROS 2's ``cv_bridge.CvBridge``.

``cv_bridge`` is a compiled package that is not pip-installable, so this module reproduces the
part of its Python API the nodes need, with the same names and semantics:

- ``CvBridge().imgmsg_to_cv2(img_msg, desired_encoding="passthrough")``
- ``CvBridge().cv2_to_imgmsg(cvim, encoding="passthrough", header=None)``
- ``CvBridgeError``

Decoding is duck-typed: anything with ``height``, ``width``, ``encoding``, ``is_bigendian``,
``step`` and a buffer-like ``data`` works, so ``rosbags`` messages (numpy ``data``) decode the
same way as rclpy ones (``array.array('B')`` data). Unlike cv_bridge, inconsistent messages
(short data, too-small step) raise a ``CvBridgeError`` instead of a numpy shape error.
"""

from __future__ import annotations

import array
import re
import sys
from typing import Any

import cv2
import numpy as np

__all__ = [
    "CvBridge",
    "CvBridgeError",
    "SUPPORTED_ENCODINGS",
    "buffer_of",
    "decode_image",
    "encoding_to_dtype_with_channels",
    "numpy_to_uint8_array",
]

# Named ROS encodings (sensor_msgs/image_encodings.hpp) -> (numpy dtype, channels).
_NAMED_ENCODINGS: dict[str, tuple[str, int]] = {
    "rgb8": ("uint8", 3),
    "bgr8": ("uint8", 3),
    "rgba8": ("uint8", 4),
    "bgra8": ("uint8", 4),
    "mono8": ("uint8", 1),
    "mono16": ("uint16", 1),
}
# OpenCV-style generic encodings "<depth>C<channels>", e.g. 8UC3, 16UC1, 32FC1.
_CV_DEPTHS: dict[str, str] = {
    "8U": "uint8",
    "8S": "int8",
    "16U": "uint16",
    "16S": "int16",
    "32S": "int32",
    "32F": "float32",
    "64F": "float64",
}
_CV_DEPTH_OF_DTYPE = {np.dtype(v): k for k, v in _CV_DEPTHS.items()}
_GENERIC_RE = re.compile(r"^(8U|8S|16U|16S|32S|32F|64F)C([1-4])$")

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_NAMED_ENCODINGS) + tuple(
    f"{d}C{c}" for d in _CV_DEPTHS for c in range(1, 5)
)

# Colour encodings cv_bridge converts among with cv2.cvtColor; value = channel order.
_COLOUR_ORDER = {"rgb8": "RGB", "bgr8": "BGR", "rgba8": "RGBA", "bgra8": "BGRA", "mono8": "GRAY"}

_HOST_IS_BIG = sys.byteorder == "big"


class CvBridgeError(TypeError):
    """Raised for unsupported encodings and malformed image messages (as cv_bridge does)."""


def encoding_to_dtype_with_channels(encoding: str) -> tuple[np.dtype, int]:
    """ROS image encoding -> (numpy dtype in native byte order, number of channels)."""
    if encoding in _NAMED_ENCODINGS:
        dtype, channels = _NAMED_ENCODINGS[encoding]
        return np.dtype(dtype), channels
    match = _GENERIC_RE.match(encoding)
    if match is None:
        raise CvBridgeError(
            f"Unsupported image encoding '{encoding}'; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    return np.dtype(_CV_DEPTHS[match.group(1)]), int(match.group(2))


def _cv_type_name(dtype: np.dtype, channels: int) -> str:
    """numpy dtype + channels -> OpenCV type name such as '8UC3' (cv_bridge's passthrough)."""
    depth = _CV_DEPTH_OF_DTYPE.get(np.dtype(dtype).newbyteorder("="))
    if depth is None or not 1 <= channels <= 4:
        raise CvBridgeError(
            f"Unsupported image type: dtype {np.dtype(dtype)} with {channels} channel(s)"
        )
    return f"{depth}C{channels}"


def numpy_to_uint8_array(arr: np.ndarray) -> array.array:
    """Copy an array's bytes into ``array.array('B')``, the fastest input for ``uint8[]`` fields.

    rclpy's generated setter (e.g. ``Image.data``) stores an ``array.array('B')`` as-is only on
    a message built with ``check_fields=True``; otherwise it copies it once more with
    ``array.array('B', value)``. Bytes or lists are worse: copied, and with checks enabled
    validated element by element in Python. So our encoders create messages with
    ``check_fields=True`` and assign the result of this function: one memcpy in total.
    """
    arr = np.ascontiguousarray(arr)
    out = array.array("B")
    # A flat uint8 view gives a plain 'B' buffer even for structured or multi-byte dtypes.
    out.frombytes(memoryview(arr.reshape(-1).view(np.uint8)))
    return out


def buffer_of(data: Any) -> np.ndarray:
    """Message ``data`` (array.array, bytes, numpy array, list) -> flat uint8 numpy view."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype != np.uint8 else data.reshape(-1)
    if isinstance(data, list):  # rare (hand-built messages); a copy cannot be avoided
        return np.asarray(data, dtype=np.uint8)
    return np.frombuffer(data, dtype=np.uint8)


def decode_image(img_msg: Any) -> np.ndarray:
    """Image message -> (H, W) or (H, W, C) array in native byte order.

    Like cv_bridge, the result is a view of ``img_msg.data`` when rows are unpadded and the
    byte order is native; otherwise it is a compact copy.
    """
    encoding = str(img_msg.encoding)
    dtype, channels = encoding_to_dtype_with_channels(encoding)
    height, width, step = int(img_msg.height), int(img_msg.width), int(img_msg.step)
    pixel_bytes = dtype.itemsize * channels
    if step < width * pixel_bytes:
        raise CvBridgeError(
            f"Image with encoding '{encoding}': step {step} is smaller than "
            f"width {width} x {pixel_bytes} bytes per pixel"
        )
    buf = buffer_of(img_msg.data)
    if buf.size < step * height:
        raise CvBridgeError(
            f"Image with encoding '{encoding}': data has {buf.size} bytes, expected at least "
            f"step {step} x height {height} = {step * height}"
        )
    big = bool(img_msg.is_bigendian)
    wire_dtype = dtype.newbyteorder(">" if big else "<")
    shape = (height, width, channels)
    strides = (step, pixel_bytes, dtype.itemsize)
    # Strided view over the buffer: skips any row padding without copying.
    image = np.ndarray(shape, dtype=wire_dtype, buffer=buf, offset=0, strides=strides)
    if big != _HOST_IS_BIG and dtype.itemsize > 1:
        image = image.astype(dtype)  # value-preserving byteswap into a native, compact copy
    else:
        image = image.view(dtype)
        if step != width * pixel_bytes:
            image = np.ascontiguousarray(image)
    return image[..., 0] if channels == 1 else image


def _convert_colour(image: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Colour conversion between 8-bit encodings, as cv_bridge's cvtColor2 does."""
    if src == dst:
        return image
    if src not in _COLOUR_ORDER or dst not in _COLOUR_ORDER:
        raise CvBridgeError(f"Cannot convert image from encoding '{src}' to '{dst}'")
    code_name = f"COLOR_{_COLOUR_ORDER[src]}2{_COLOUR_ORDER[dst]}"
    code = getattr(cv2, code_name, None)
    if code is None:  # e.g. RGB2BGRA exists but GRAY2GRAY does not; src == dst handled above
        raise CvBridgeError(f"Cannot convert image from encoding '{src}' to '{dst}'")
    return cv2.cvtColor(np.ascontiguousarray(image), code)


class CvBridge:
    """Drop-in for the subset of ``cv_bridge.CvBridge`` used by depth_perception."""

    def imgmsg_to_cv2(self, img_msg: Any, desired_encoding: str = "passthrough") -> np.ndarray:
        """Convert a sensor_msgs/Image (rclpy or rosbags) to a numpy image.

        ``desired_encoding`` "passthrough" keeps the message's layout; otherwise colour
        encodings (rgb8, bgr8, rgba8, bgra8, mono8) are converted with cv2.cvtColor, and an
        OpenCV type name matching the message's type (e.g. "16UC1" for mono16) passes through.
        """
        image = decode_image(img_msg)
        src = str(img_msg.encoding)
        if desired_encoding in ("passthrough", src):
            return image
        if src in _COLOUR_ORDER and desired_encoding in _COLOUR_ORDER:
            return _convert_colour(image, src, desired_encoding)
        channels = 1 if image.ndim == 2 else image.shape[2]
        if _GENERIC_RE.match(desired_encoding) and desired_encoding == _cv_type_name(
            image.dtype, channels
        ):
            return image
        raise CvBridgeError(f"Cannot convert image from encoding '{src}' to '{desired_encoding}'")

    def cv2_to_imgmsg(
        self, cvim: np.ndarray, encoding: str = "passthrough", header: Any = None
    ) -> Any:
        """Convert a numpy image to a sensor_msgs/Image.

        "passthrough" names the OpenCV type (e.g. "8UC3"); any other encoding must match the
        array's dtype and channel count, otherwise ``CvBridgeError`` (cv_bridge semantics).
        """
        # Imported lazily: decoding works without ROS message packages.
        from builtin_interfaces.msg import Time
        from sensor_msgs.msg import Image
        from std_msgs.msg import Header

        if not isinstance(cvim, np.ndarray | np.generic):
            raise TypeError("Your input type is not a numpy array")
        if cvim.ndim not in (2, 3):
            raise CvBridgeError(f"Expected a (H, W) or (H, W, C) array, got shape {cvim.shape}")
        channels = 1 if cvim.ndim == 2 else cvim.shape[2]
        cv_type = _cv_type_name(cvim.dtype, channels)
        if encoding != "passthrough":
            dtype, enc_channels = encoding_to_dtype_with_channels(encoding)
            if _cv_type_name(dtype, enc_channels) != cv_type:
                raise CvBridgeError(
                    f"encoding specified as {encoding}, but image has incompatible type {cv_type}"
                )
        msg = Image(check_fields=True)  # see numpy_to_uint8_array: zero-copy data
        if isinstance(header, Header):
            msg.header = header
        elif header is not None:  # e.g. a rosbags Header: same fields, different class
            stamp = Time(sec=int(header.stamp.sec), nanosec=int(header.stamp.nanosec))
            msg.header = Header(stamp=stamp, frame_id=str(header.frame_id))
        msg.height, msg.width = int(cvim.shape[0]), int(cvim.shape[1])
        msg.encoding = cv_type if encoding == "passthrough" else encoding
        byteorder = cvim.dtype.byteorder
        msg.is_bigendian = int(byteorder == ">" or (byteorder in "=|" and _HOST_IS_BIG))
        msg.step = msg.width * channels * cvim.dtype.itemsize
        msg.data = numpy_to_uint8_array(cvim)
        return msg

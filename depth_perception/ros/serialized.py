"""Images read straight from their serialized (CDR) bytes, without rclpy's message conversion.

rclpy hands a subscription callback a Python message built from the DDS sample: the middleware
deserializes it into a C struct, then rclpy copies every field, the megabyte ``data`` included,
into a new Python object. For a 640x480 rgb8 image that conversion costs more CPU than the
DDS delivery itself (measured: 2.7 vs 1.3 ms per frame for the same receiver, ``bench/
bench_node_overhead.py``). A subscription with ``raw=True`` gets the serialized bytes instead;
:func:`parse_image` and :func:`parse_compressed_image` read the few scalar fields from them and
give ``data`` as a numpy view of the same bytes, so the payload is never copied again.

The views (:class:`ImageView`, :class:`CompressedImageView`) carry the field names our
decoders read (``header``, ``height``, ``width``, ``encoding``, ``is_bigendian``, ``step``,
``format``, ``data``), with a real ``std_msgs/Header`` (message_filters reads its stamp as a
``builtin_interfaces/Time``), so everything downstream takes them as it takes messages.

Wire format (OMG DDS-XTypes 7.4): a 4-byte encapsulation header -- representation id
(``CDR_BE`` 0x0000, ``CDR_LE`` 0x0001, ``PLAIN_CDR2_BE`` 0x0006, ``PLAIN_CDR2_LE`` 0x0007), then
2 option bytes -- and the body, whose primitives are aligned to their size counted from the
body's start (CDR2 caps alignment at 4; these types have no 8-byte field, so both read alike;
ROS messages are final types: no DHEADER). A string is a uint32 length counting its NUL, the
characters and the NUL; a sequence<uint8> a uint32 count and the bytes. Anything else, or a
buffer too short for what it declares, raises ValueError naming the field.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

__all__ = [
    "PARSERS",
    "CompressedImageView",
    "ImageView",
    "parse_compressed_image",
    "parse_image",
]

#: Representation id -> byte order of the body ("<" little, ">" big endian).
_ENCAPSULATIONS = {0x0000: ">", 0x0001: "<", 0x0006: ">", 0x0007: "<"}


class _Reader:
    """Sequential CDR reads over ``buf`` with bounds checks (offsets count from the body)."""

    def __init__(self, buf: bytes | bytearray | memoryview, what: str) -> None:
        self.buf = buf
        self.what = what
        if len(buf) < 4:
            raise ValueError(f"serialized {what}: {len(buf)} bytes, not even a CDR header")
        kind = int.from_bytes(bytes(buf[0:2]), "big")
        if kind not in _ENCAPSULATIONS:
            raise ValueError(
                f"serialized {what}: encapsulation 0x{kind:04x} is not plain CDR "
                "(expected 0x0000, 0x0001, 0x0006 or 0x0007)"
            )
        self.order = "little" if _ENCAPSULATIONS[kind] == "<" else "big"
        self.numpy_order = _ENCAPSULATIONS[kind]
        self.pos = 0  # in the body, which starts at byte 4

    def _take(self, n: int, field: str, align: int = 1) -> int:
        self.pos += -self.pos % align
        start = 4 + self.pos
        if start + n > len(self.buf):
            raise ValueError(
                f"serialized {self.what} truncated at {field}: needs {n} bytes at {start}, "
                f"has {len(self.buf)}"
            )
        self.pos += n
        return start

    def uint32(self, field: str) -> int:
        start = self._take(4, field, 4)
        return int.from_bytes(bytes(self.buf[start : start + 4]), self.order)

    def int32(self, field: str) -> int:
        start = self._take(4, field, 4)
        return int.from_bytes(bytes(self.buf[start : start + 4]), self.order, signed=True)

    def uint8(self, field: str) -> int:
        return int(self.buf[self._take(1, field)])

    def string(self, field: str) -> str:
        n = self.uint32(field)
        start = self._take(n, field)
        if n == 0 or self.buf[start + n - 1] != 0:
            raise ValueError(f"serialized {self.what}: {field} is not a NUL-terminated string")
        return bytes(self.buf[start : start + n - 1]).decode("utf-8", errors="replace")

    def uint8_sequence(self, field: str) -> np.ndarray:
        n = self.uint32(field)
        return np.frombuffer(self.buf, np.uint8, n, self._take(n, field))

    def header(self) -> Header:
        sec = self.int32("header.stamp.sec")
        nanosec = self.uint32("header.stamp.nanosec")
        frame_id = self.string("header.frame_id")
        return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


class ImageView:
    """A sensor_msgs/Image read from its serialized bytes; ``data`` views those bytes."""

    __slots__ = ("header", "height", "width", "encoding", "is_bigendian", "step", "data")

    def __init__(self, header: Header, height: int, width: int, encoding: str,
                 is_bigendian: int, step: int, data: np.ndarray) -> None:  # fmt: skip
        self.header, self.height, self.width = header, height, width
        self.encoding, self.is_bigendian, self.step, self.data = encoding, is_bigendian, step, data

    def __repr__(self) -> str:
        return (
            f"ImageView({self.width}x{self.height} {self.encoding}, step {self.step}, "
            f"{self.data.size} bytes, frame {self.header.frame_id!r})"
        )


class CompressedImageView:
    """A sensor_msgs/CompressedImage read from its serialized bytes; ``data`` views them."""

    __slots__ = ("header", "format", "data")

    def __init__(self, header: Header, format: str, data: np.ndarray) -> None:  # noqa: A002
        self.header, self.format, self.data = header, format, data

    def __repr__(self) -> str:
        return f"CompressedImageView({self.format!r}, {self.data.size} bytes)"


def parse_image(buf: bytes | bytearray | memoryview) -> ImageView:
    """Serialized sensor_msgs/Image (as a ``raw=True`` subscription gets it) -> view."""
    r = _Reader(buf, "sensor_msgs/Image")
    header = r.header()
    height, width = r.uint32("height"), r.uint32("width")
    encoding = r.string("encoding")
    is_bigendian = r.uint8("is_bigendian")
    step = r.uint32("step")
    return ImageView(header, height, width, encoding, is_bigendian, step, r.uint8_sequence("data"))


def parse_compressed_image(buf: bytes | bytearray | memoryview) -> CompressedImageView:
    """Serialized sensor_msgs/CompressedImage -> view."""
    r = _Reader(buf, "sensor_msgs/CompressedImage")
    header = r.header()
    fmt = r.string("format")
    return CompressedImageView(header, fmt, r.uint8_sequence("data"))


#: Message type -> parser of its serialized bytes: the types worth subscribing to raw.
PARSERS: dict[type, Any] = {Image: parse_image, CompressedImage: parse_compressed_image}

"""Images read from their serialized bytes (ros/serialized.py) against rclpy's own
serialization: every field of the view equals the message's, for frame ids and encodings of
every length mod 4 (the CDR padding before each uint32), padded rows, compressed images; a
hand-packed big-endian buffer; truncated and foreign buffers refused by name; our decoders
give the same pixels from the view as from the message."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage, Image

from depth_perception.ros.conversions import (
    depth_image_to_metres,
    image_to_rgb,
    metres_to_compressed_depth,
    rgb_to_compressed_image,
)
from depth_perception.ros.serialized import (
    CompressedImageView,
    ImageView,
    parse_compressed_image,
    parse_image,
)


def _image(h: int, w: int, encoding: str, frame_id: str, pad: int = 0, seed: int = 0) -> Image:
    bpp = {"rgb8": 3, "16UC1": 2, "32FC1": 4, "mono8": 1}[encoding]
    step = w * bpp + pad
    data = np.random.default_rng(seed).integers(0, 256, h * step, dtype=np.uint8)
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=0, step=step)
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1_700_000_123, 456_789_012
    msg.header.frame_id = frame_id
    msg.data = data.tobytes()
    return msg


def _same_image(view: ImageView, msg: Image) -> None:
    assert view.header.stamp.sec == msg.header.stamp.sec
    assert view.header.stamp.nanosec == msg.header.stamp.nanosec
    assert view.header.frame_id == msg.header.frame_id
    assert (view.height, view.width, view.step) == (msg.height, msg.width, msg.step)
    assert (view.encoding, view.is_bigendian) == (msg.encoding, msg.is_bigendian)
    assert view.data.dtype == np.uint8 and view.data.tobytes() == bytes(msg.data)


@pytest.mark.parametrize("frame_id", ["", "c", "cam", "camera_color_optical_frame", "abcd"])
@pytest.mark.parametrize("encoding", ["rgb8", "16UC1", "32FC1", "mono8"])
def test_image_fields_equal_the_message(frame_id, encoding):
    msg = _image(5, 7, encoding, frame_id, pad=3)
    _same_image(parse_image(serialize_message(msg)), msg)


def test_the_pixels_are_a_view_of_the_bytes():
    msg = _image(480, 640, "rgb8", "camera_color_optical_frame")
    raw = serialize_message(msg)
    view = parse_image(raw)
    assert np.shares_memory(view.data, np.frombuffer(raw, np.uint8))
    assert view.data.size == 480 * 640 * 3


def test_decoders_give_the_same_pixels_from_the_view():
    colour = _image(6, 8, "rgb8", "cam", pad=4, seed=1)
    np.testing.assert_array_equal(
        image_to_rgb(parse_image(serialize_message(colour))), image_to_rgb(colour)
    )
    depth = _image(6, 8, "16UC1", "cam", seed=2)
    np.testing.assert_array_equal(
        depth_image_to_metres(parse_image(serialize_message(depth))), depth_image_to_metres(depth)
    )
    metres = np.linspace(0.5, 4.0, 48, dtype=np.float32).reshape(6, 8)
    metres[2, 3] = np.nan
    for msg in (
        rgb_to_compressed_image(np.full((6, 8, 3), 90, np.uint8), None, "png"),
        metres_to_compressed_depth(metres, None),
    ):
        msg.header.frame_id = "depth_optical"
        view = parse_compressed_image(serialize_message(msg))
        assert isinstance(view, CompressedImageView)
        assert view.format == msg.format and view.header.frame_id == "depth_optical"
        assert view.data.tobytes() == bytes(msg.data)
    np.testing.assert_array_equal(
        depth_image_to_metres(parse_compressed_image(serialize_message(msg))),
        depth_image_to_metres(msg),
    )


def _cdr_string(s: str, order: str, pos: int) -> tuple[bytes, int]:
    """(padding + length + characters + NUL, new position) at body offset ``pos``."""
    pad = b"\0" * (-pos % 4)
    raw = s.encode() + b"\0"
    out = pad + struct.pack(order + "I", len(raw)) + raw
    return out, pos + len(out)


def test_a_hand_packed_big_endian_image():
    # CDR_BE (0x0000): every uint32 big endian, aligned to 4 from the body's start
    body, pos = struct.pack(">iI", 12, 34), 8
    part, pos = _cdr_string("odd", ">", pos)  # 4 + 4 bytes: pos 16
    body += part + struct.pack(">II", 2, 3)
    pos += 8
    part, pos = _cdr_string("mono8", ">", pos)  # 4 + 6 bytes: pos 34
    body += part + b"\1"  # is_bigendian, pos 35; the step is padded to 36
    body += b"\0" + struct.pack(">II", 3, 6) + bytes(range(6))
    view = parse_image(b"\0\0\0\0" + body)
    assert (view.header.stamp.sec, view.header.stamp.nanosec) == (12, 34)
    assert (view.header.frame_id, view.height, view.width, view.encoding) == ("odd", 2, 3, "mono8")
    assert (view.is_bigendian, view.step) == (1, 3)
    assert view.data.tolist() == [0, 1, 2, 3, 4, 5]


def test_truncated_and_foreign_buffers_are_refused_by_name():
    raw = serialize_message(_image(4, 4, "rgb8", "cam"))
    with pytest.raises(ValueError, match="truncated at data"):
        parse_image(raw[:-1])
    with pytest.raises(ValueError, match="truncated at encoding"):
        parse_image(raw[:36])
    with pytest.raises(ValueError, match="encapsulation 0x0102"):
        parse_image(b"\1\2" + raw[2:])
    with pytest.raises(ValueError, match="not even a CDR header"):
        parse_image(b"\0\1")
    bad = bytearray(raw)
    bad[4 + 12 + len("cam")] = ord("x")  # frame_id's NUL: header 4, stamp 8 + length 4, "cam"
    with pytest.raises(ValueError, match="header.frame_id is not a NUL-terminated string"):
        parse_image(bytes(bad))
    with pytest.raises(ValueError, match="CompressedImage truncated at data"):
        parse_compressed_image(serialize_message(CompressedImage(format="png", data=b"12"))[:-1])

"""cv_bridge_compat + conversions: encodings, padding, endianness, clouds, rosbags duck typing."""

from __future__ import annotations

import array
import struct
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from depth_perception.core.camera import Intrinsics
from depth_perception.core.depth import depth_from_mm, depth_to_mm
from depth_perception.ros import conversions as conv
from depth_perception.ros.cv_bridge_compat import CvBridge, CvBridgeError, numpy_to_uint8_array

BRIDGE = CvBridge()
RNG = np.random.default_rng(7)
TYPESTORE = get_typestore(Stores.ROS2_KILTED)
ROS1 = get_typestore(Stores.ROS1_NOETIC)


def roundtrip(msg):
    """Serialize with rclpy and read back: every produced message must survive this."""
    return deserialize_message(serialize_message(msg), type(msg))


def as_rosbags(msg, typename: str):
    """The same CDR bytes decoded by rosbags (numpy array fields, different classes)."""
    return TYPESTORE.deserialize_cdr(serialize_message(msg), typename)


def ros1_header(h=None):
    """A ROS 1 std_msgs/Header (with seq) in rosbags' ROS 1 types."""
    types = ROS1.types
    sec, nanosec = (h.stamp.sec, h.stamp.nanosec) if h is not None else (0, 0)
    return types["std_msgs/msg/Header"](
        seq=7,
        stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
        frame_id=h.frame_id if h is not None else "",
    )


def as_ros1_compressed(msg):
    """A CompressedImage as a ROS 1 bag holds it, read back by rosbags (ROS 1 serialization)."""
    typename = "sensor_msgs/msg/CompressedImage"
    ros1 = ROS1.types[typename](
        header=ros1_header(msg.header),
        format=msg.format,
        data=np.frombuffer(bytes(msg.data), np.uint8),
    )
    return ROS1.deserialize_ros1(ROS1.serialize_ros1(ros1, typename), typename)


def header(sec=12, nanosec=345, frame_id="camera_optical") -> Header:
    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = sec, nanosec
    return h


def raw_image(encoding, height, width, step, data: bytes, big=False) -> Image:
    msg = Image(encoding=encoding, height=height, width=width, step=step, is_bigendian=int(big))
    msg.data = array.array("B", data)
    return msg


# ---------------------------------------------------------------------------------------------
# cv_bridge_compat
# ---------------------------------------------------------------------------------------------

ENCODING_SAMPLES = {
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "rgba8": (np.uint8, 4),
    "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1),
    "mono16": (np.uint16, 1),
    "8UC1": (np.uint8, 1),
    "8UC3": (np.uint8, 3),
    "16UC1": (np.uint16, 1),
    "32FC1": (np.float32, 1),
}


def sample_image(dtype, channels, h=5, w=7):
    shape = (h, w) if channels == 1 else (h, w, channels)
    if np.issubdtype(dtype, np.floating):
        return RNG.normal(2.0, 1.0, shape).astype(dtype)
    return RNG.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)


@pytest.mark.parametrize("encoding", list(ENCODING_SAMPLES))
def test_bridge_roundtrip_every_encoding(encoding):
    dtype, channels = ENCODING_SAMPLES[encoding]
    image = sample_image(dtype, channels)
    msg = BRIDGE.cv2_to_imgmsg(image, encoding, header=header())
    assert isinstance(msg.data, array.array) and msg.data.typecode == "B"
    assert (msg.encoding, msg.height, msg.width) == (encoding, 5, 7)
    assert msg.step == 7 * channels * np.dtype(dtype).itemsize
    assert msg.is_bigendian == 0
    assert bytes(msg.data) == image.tobytes()
    back = BRIDGE.imgmsg_to_cv2(roundtrip(msg))
    assert back.dtype == dtype and back.shape == image.shape
    np.testing.assert_array_equal(back, image)


def test_bridge_passthrough_names_opencv_type():
    msg = BRIDGE.cv2_to_imgmsg(np.zeros((2, 3, 3), np.uint8))
    assert msg.encoding == "8UC3"
    assert BRIDGE.cv2_to_imgmsg(np.zeros((2, 3), np.float32)).encoding == "32FC1"
    assert BRIDGE.cv2_to_imgmsg(np.zeros((2, 3), np.uint16)).encoding == "16UC1"


def test_bridge_honours_row_padding():
    # 3x2 rgb8 image, 6 bytes of pixels per row padded to step 10 with junk.
    rows = [
        bytes([1, 2, 3, 4, 5, 6]),
        bytes([7, 8, 9, 10, 11, 12]),
        bytes([13, 14, 15, 16, 17, 18]),
    ]
    data = b"".join(r + b"\xee\xee\xee\xee" for r in rows)
    image = BRIDGE.imgmsg_to_cv2(raw_image("rgb8", 3, 2, 10, data))
    expected = np.arange(1, 19, dtype=np.uint8).reshape(3, 2, 3)
    np.testing.assert_array_equal(image, expected)
    assert image.flags.c_contiguous


def test_bridge_padding_with_odd_step_16bit():
    # step 5 for a 2-pixel mono16 row: rows start at unaligned byte offsets.
    vals = [[258, 772], [4112, 65535]]
    data = b"".join(struct.pack("<HH", *r) + b"\x00" for r in vals)
    image = BRIDGE.imgmsg_to_cv2(raw_image("16UC1", 2, 2, 5, data))
    np.testing.assert_array_equal(image, np.array(vals, np.uint16))


@pytest.mark.parametrize(
    ("encoding", "fmt", "values"),
    [("16UC1", ">H", [1, 258, 65534, 4096]), ("32FC1", ">f", [1.5, -2.25, 1e-3, 1234.5])],
)
def test_bridge_big_endian_is_swapped(encoding, fmt, values):
    data = b"".join(struct.pack(fmt, v) for v in values)
    image = BRIDGE.imgmsg_to_cv2(raw_image(encoding, 2, 2, 2 * struct.calcsize(fmt), data, True))
    assert image.dtype.isnative
    np.testing.assert_array_equal(image.ravel(), np.array(values, dtype=image.dtype))


def test_bridge_big_endian_array_sets_flag():
    image = np.array([[1, 2], [300, 65535]], dtype=">u2")
    msg = BRIDGE.cv2_to_imgmsg(image, "16UC1")
    assert msg.is_bigendian == 1
    assert bytes(msg.data) == struct.pack(">HHHH", 1, 2, 300, 65535)
    np.testing.assert_array_equal(BRIDGE.imgmsg_to_cv2(msg), [[1, 2], [300, 65535]])


def test_bridge_colour_conversions():
    rgb = sample_image(np.uint8, 3)
    msg = BRIDGE.cv2_to_imgmsg(np.ascontiguousarray(rgb[..., ::-1]), "bgr8")
    np.testing.assert_array_equal(BRIDGE.imgmsg_to_cv2(msg, "rgb8"), rgb)
    rgba = BRIDGE.imgmsg_to_cv2(msg, "rgba8")
    np.testing.assert_array_equal(rgba[..., :3], rgb)
    assert (rgba[..., 3] == 255).all()
    # Grey is the BT.601 luma OpenCV uses: 0.299 R + 0.587 G + 0.114 B (rounded).
    grey = BRIDGE.imgmsg_to_cv2(msg, "mono8")
    expected = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(grey.astype(np.float64) - expected).max() <= 1.0
    mono = BRIDGE.cv2_to_imgmsg(grey, "mono8")
    np.testing.assert_array_equal(BRIDGE.imgmsg_to_cv2(mono, "bgr8"), np.dstack([grey] * 3))
    # Same-type OpenCV names pass through; a depth image is not a colour one.
    depth_msg = BRIDGE.cv2_to_imgmsg(np.ones((2, 2), np.uint16), "mono16")
    assert BRIDGE.imgmsg_to_cv2(depth_msg, "16UC1").dtype == np.uint16
    with pytest.raises(CvBridgeError, match="mono16"):
        BRIDGE.imgmsg_to_cv2(depth_msg, "rgb8")


def test_bridge_errors_name_the_problem():
    with pytest.raises(CvBridgeError, match="yuv422"):
        BRIDGE.imgmsg_to_cv2(raw_image("yuv422", 1, 2, 4, bytes(4)))
    with pytest.raises(CvBridgeError, match="rgb8.*expected at least"):
        BRIDGE.imgmsg_to_cv2(raw_image("rgb8", 2, 2, 6, bytes(11)))
    with pytest.raises(CvBridgeError, match="32FC1.*step 4 is smaller"):
        BRIDGE.imgmsg_to_cv2(raw_image("32FC1", 1, 2, 4, bytes(8)))
    with pytest.raises(CvBridgeError, match="incompatible type 16UC1"):
        BRIDGE.cv2_to_imgmsg(np.zeros((2, 2), np.uint16), "rgb8")
    with pytest.raises(CvBridgeError, match="bayer_rggb8"):
        BRIDGE.cv2_to_imgmsg(np.zeros((2, 2), np.uint8), "bayer_rggb8")
    with pytest.raises(TypeError):
        BRIDGE.cv2_to_imgmsg([[1, 2]], "mono8")


def test_numpy_to_uint8_array_copies_bytes():
    cloud = np.zeros(3, dtype=[("x", "<f4"), ("ring", "<u2")])
    cloud["x"] = [1.0, 2.0, 3.0]
    cloud["ring"] = [7, 8, 9]
    out = numpy_to_uint8_array(cloud)
    assert out.typecode == "B" and bytes(out) == cloud.tobytes()
    strided = np.arange(12, dtype=np.uint16).reshape(3, 4)[:, ::2]
    assert bytes(numpy_to_uint8_array(strided)) == np.ascontiguousarray(strided).tobytes()


# ---------------------------------------------------------------------------------------------
# Image adapters
# ---------------------------------------------------------------------------------------------


def test_bridge_implementation_is_reported():
    assert conv.BRIDGE_IMPLEMENTATION in ("cv_bridge", "depth_perception.ros.cv_bridge_compat")
    if conv.BRIDGE_IMPLEMENTATION.endswith("compat"):
        assert conv.CvBridge is CvBridge


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_image_to_rgb(encoding):
    rgb = sample_image(np.uint8, 3)
    alpha = sample_image(np.uint8, 1)
    grey = rgb[..., 1]
    arrays = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "rgba8": np.dstack([rgb, alpha]),
        "bgra8": np.dstack([rgb[..., ::-1], alpha]),
        "mono8": grey,
    }
    msg = conv.numpy_to_image(np.ascontiguousarray(arrays[encoding]), encoding, header())
    out = conv.image_to_rgb(roundtrip(msg))
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, np.dstack([grey] * 3) if encoding == "mono8" else rgb)
    out[0, 0] = 0  # the result is writable and not the message's buffer


def test_image_to_rgb_rejects_depth():
    with pytest.raises(CvBridgeError, match="32FC1"):
        conv.image_to_rgb(conv.metres_to_depth_image(np.ones((2, 2), np.float32)))


@pytest.mark.parametrize("encoding", ["16UC1", "mono16"])
def test_depth_mm_to_metres(encoding):
    mm = np.array([[0, 1000, 65535], [1, 1234, 0]], np.uint16)
    depth = conv.depth_image_to_metres(conv.numpy_to_image(mm, encoding))
    expected = np.array([[np.nan, 1.0, 65.535], [0.001, 1.234, np.nan]], np.float32)
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth, expected, rtol=1e-7)


def test_depth_32f_invalids_become_nan():
    raw = np.array([[np.nan, np.inf, -np.inf], [-1.0, 0.0, 2.5]], np.float32)
    msg = conv.numpy_to_image(raw, "32FC1")
    depth = conv.depth_image_to_metres(msg)
    expected = np.array([[np.nan] * 3, [np.nan, np.nan, 2.5]], np.float32)
    np.testing.assert_array_equal(depth, expected)
    assert np.isinf(conv.image_to_numpy(msg)[0, 1])  # the message itself is untouched
    with pytest.raises(CvBridgeError, match="rgb8"):
        conv.depth_image_to_metres(conv.numpy_to_image(np.zeros((1, 1, 3), np.uint8), "rgb8"))


def test_metres_to_depth_image_both_encodings():
    depth = np.array([[1.0, np.nan], [0.0004, 70.0], [2.0016, -3.0]], np.float32)
    msg32 = roundtrip(conv.metres_to_depth_image(depth, header(), "32FC1"))
    assert (msg32.encoding, msg32.step, msg32.header.frame_id) == ("32FC1", 8, "camera_optical")
    expected = np.array([[1.0, np.nan], [0.0004, 70.0], [2.0016, np.nan]], np.float32)
    np.testing.assert_array_equal(conv.image_to_numpy(msg32), expected)
    msg16 = roundtrip(conv.metres_to_depth_image(depth, header(), "16UC1"))
    assert msg16.encoding == "16UC1" and msg16.step == 4
    # NaN, < 0.5 mm, > 65.535 m and negative -> 0 (no measurement); 2.0016 m -> 2002 mm.
    np.testing.assert_array_equal(conv.image_to_numpy(msg16), [[1000, 0], [0, 0], [2002, 0]])
    with pytest.raises(CvBridgeError, match="8UC1"):
        conv.metres_to_depth_image(depth, header(), "8UC1")


def test_image_decoding_works_on_rosbags_messages():
    mm = np.array([[0, 500, 1500], [2500, 0, 65535]], np.uint16)
    bag_msg = as_rosbags(conv.numpy_to_image(mm, "16UC1", header()), "sensor_msgs/msg/Image")
    assert isinstance(bag_msg.data, np.ndarray)  # a genuinely different message object
    np.testing.assert_array_equal(conv.image_to_numpy(bag_msg), mm)
    np.testing.assert_allclose(
        conv.depth_image_to_metres(bag_msg), [[np.nan, 0.5, 1.5], [2.5, np.nan, 65.535]]
    )
    rgb = sample_image(np.uint8, 3)
    bag_rgb = as_rosbags(
        conv.numpy_to_image(rgb[..., ::-1].copy(), "bgr8"), "sensor_msgs/msg/Image"
    )
    np.testing.assert_array_equal(conv.image_to_rgb(bag_rgb), rgb)


def test_numpy_to_image_copies_header():
    h = header(3, 4, "a")
    msg = conv.numpy_to_image(np.zeros((1, 1), np.uint8), "mono8", h)
    h.frame_id = "changed"
    assert msg.header.frame_id == "a" and msg.header.stamp.nanosec == 4


# ---------------------------------------------------------------------------------------------
# CameraInfo
# ---------------------------------------------------------------------------------------------

INTR = Intrinsics(
    width=8,
    height=6,
    fx=5.0,
    fy=4.0,
    cx=3.5,
    cy=2.5,
    distortion_model="plumb_bob",
    D=(0.1, -0.05, 0.001, 0.002, 0.0),
    frame_id="cam_optical",
)


def test_camera_info_roundtrip():
    msg = roundtrip(conv.intrinsics_to_camera_info(INTR))
    assert (msg.width, msg.height, msg.distortion_model) == (8, 6, "plumb_bob")
    assert msg.header.frame_id == "cam_optical"
    np.testing.assert_array_equal(msg.k, [5, 0, 3.5, 0, 4, 2.5, 0, 0, 1])
    np.testing.assert_array_equal(msg.r, [1, 0, 0, 0, 1, 0, 0, 0, 1])
    np.testing.assert_array_equal(msg.p, [5, 0, 3.5, 0, 0, 4, 2.5, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(msg.d, INTR.D)
    assert conv.camera_info_to_intrinsics(msg) == INTR
    with_header = conv.intrinsics_to_camera_info(INTR, header(frame_id="other"))
    assert with_header.header.frame_id == "other" and with_header.header.stamp.sec == 12


def test_camera_info_from_rosbags_and_uncalibrated():
    bag_msg = as_rosbags(conv.intrinsics_to_camera_info(INTR), "sensor_msgs/msg/CameraInfo")
    assert conv.camera_info_to_intrinsics(bag_msg) == INTR
    with pytest.raises(ValueError, match="uncalibrated"):
        conv.camera_info_to_intrinsics(CameraInfo(width=8, height=6))


@pytest.mark.parametrize(
    "index,value,says",
    [
        (0, float("nan"), "non-finite fx"),
        (4, float("inf"), "non-finite fy"),
        (2, float("nan"), "non-finite cx"),
        (5, float("-inf"), "non-finite cy"),
        (0, -5.0, "fx = -5.0"),
    ],
)
def test_camera_info_with_bad_intrinsics_names_the_field(index, value, says):
    msg = conv.intrinsics_to_camera_info(INTR)
    k = list(msg.k)
    k[index] = value
    msg.k = k
    with pytest.raises(ValueError, match=says):
        conv.camera_info_to_intrinsics(msg)


def test_camera_info_of_size_zero_is_rejected():
    msg = conv.intrinsics_to_camera_info(INTR)
    msg.width = msg.height = 0  # a valid K does not make a 0x0 camera usable (scaling divides)
    with pytest.raises(ValueError, match="size 0x0"):
        conv.camera_info_to_intrinsics(msg)


def ros1_camera_info(model="Brown Conrady", k=(5.0, 0, 3.5, 0, 4.0, 2.5, 0, 0, 1)):
    """A CameraInfo as the RealSense SDK writes it to a ROS 1 bag (stamp 0, upper-case fields)."""
    types = ROS1.types
    header = ros1_header()
    roi = types["sensor_msgs/msg/RegionOfInterest"](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
    )
    msg = types["sensor_msgs/msg/CameraInfo"](
        header=header,
        height=6,
        width=8,
        distortion_model=model,
        D=np.array([0.1, -0.05, 0.001, 0.002, 0.0]),
        K=np.array(k, dtype=np.float64),
        R=np.eye(3).reshape(-1),
        P=np.array([k[0], 0, k[2], 0, 0, k[4], k[5], 0, 0, 0, 1, 0], dtype=np.float64),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )
    raw = ROS1.serialize_ros1(msg, "sensor_msgs/msg/CameraInfo")
    return ROS1.deserialize_ros1(raw, "sensor_msgs/msg/CameraInfo")


@pytest.mark.parametrize(
    "model,expected",
    [
        ("Brown Conrady", "plumb_bob"),  # the RealSense SDK's rs2_distortion name
        ("brown_conrady", "plumb_bob"),
        ("plumb_bob", "plumb_bob"),
        ("Kannala Brandt4", "equidistant"),
        ("rational_polynomial", "rational_polynomial"),  # other names pass through
    ],
)
def test_camera_info_ros1_spellings_and_realsense_distortion_names(model, expected):
    msg = ros1_camera_info(model)
    assert not hasattr(msg, "k") and msg.K.shape == (9,)  # genuinely the ROS 1 layout
    intr = conv.camera_info_to_intrinsics(msg)
    assert intr == Intrinsics(
        8, 6, 5.0, 4.0, 3.5, 2.5, expected, (0.1, -0.05, 0.001, 0.002, 0.0), frame_id=""
    )
    # The ROS 2 spelling of the same model name maps the same way.
    ros2 = conv.intrinsics_to_camera_info(INTR)
    ros2.distortion_model = model
    assert conv.camera_info_to_intrinsics(ros2).distortion_model == expected


def test_camera_info_ros1_keeps_the_validation():
    with pytest.raises(ValueError, match="uncalibrated"):
        conv.camera_info_to_intrinsics(ros1_camera_info(k=(0.0,) * 9))
    with pytest.raises(ValueError, match="non-finite cx"):
        conv.camera_info_to_intrinsics(
            ros1_camera_info(k=(5.0, 0, float("nan"), 0, 4.0, 2.5, 0, 0, 1))
        )


REAL_BAG = (
    Path(__file__).resolve().parents[2]
    / "shared/data/real_bags/realsense_d435_single_depth_color_640x480.bag"
)


@pytest.mark.skipif(not REAL_BAG.exists(), reason=f"real D435 recording absent: {REAL_BAG}")
def test_camera_info_of_a_real_realsense_sdk_ros1_bag():
    from rosbags.highlevel import AnyReader

    with AnyReader([REAL_BAG]) as reader:
        infos = {
            c.topic.split("/")[3]: reader.deserialize(raw, c.msgtype)
            for c in reader.connections
            if c.topic.endswith("info/camera_info")
            for _, _, raw in reader.messages(connections=[c])
        }
    colour = conv.camera_info_to_intrinsics(infos["Color_0"])
    depth = conv.camera_info_to_intrinsics(infos["Depth_0"])
    assert infos["Color_0"].distortion_model == "Brown Conrady"
    assert (colour.distortion_model, colour.size, colour.D) == ("plumb_bob", (640, 480), (0.0,) * 5)
    assert colour.fx == pytest.approx(613.2036743) and depth.fx == pytest.approx(390.4314575)


# ---------------------------------------------------------------------------------------------
# PointCloud2 from depth
# ---------------------------------------------------------------------------------------------


def depth_with_holes(intr: Intrinsics) -> np.ndarray:
    depth = RNG.uniform(0.5, 4.0, (intr.height, intr.width)).astype(np.float32)
    depth[0, 0] = 0.0
    depth[2, 3] = np.nan
    depth[5, 7] = -1.0
    return depth


def field_layout(msg):
    return [(f.name, f.offset, f.datatype, f.count) for f in msg.fields]


def test_depth_to_pointcloud2_xyz_layout_and_values():
    depth = depth_with_holes(INTR)
    msg = roundtrip(conv.depth_to_pointcloud2(depth, INTR, header()))
    f32 = PointField.FLOAT32
    assert field_layout(msg) == [("x", 0, f32, 1), ("y", 4, f32, 1), ("z", 8, f32, 1)]
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (6, 8, 16, 128)
    assert msg.is_dense is False and msg.is_bigendian is False
    assert (msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec) == (
        "camera_optical",
        12,
        345,
    )
    assert len(msg.data) == 6 * 8 * 16
    cloud = conv.pointcloud2_to_array(msg)
    assert cloud.shape == (6, 8)
    # Hand-computed pixel (u=6, v=1): x = (6 - 3.5) z / 5, y = (1 - 2.5) z / 4.
    z = depth[1, 6]
    np.testing.assert_allclose(
        [cloud["x"][1, 6], cloud["y"][1, 6], cloud["z"][1, 6]],
        [2.5 * z / 5.0, -1.5 * z / 4.0, z],
        rtol=1e-6,
    )
    for v, u in [(0, 0), (2, 3), (5, 7)]:
        assert np.isnan(cloud["x"][v, u]) and np.isnan(cloud["z"][v, u])
    # Independent reference: open3d's back-projection of the valid pixels, row-major.
    o3d_depth = o3d.geometry.Image(np.where(depth > 0, depth, 0).astype(np.float32))
    pinhole = o3d.camera.PinholeCameraIntrinsic(8, 6, 5.0, 4.0, 3.5, 2.5)
    reference = o3d.geometry.PointCloud.create_from_depth_image(
        o3d_depth, pinhole, depth_scale=1.0, depth_trunc=1e6
    )
    np.testing.assert_allclose(conv.pointcloud2_to_xyz(msg), reference.points, rtol=1e-5)


def test_depth_to_pointcloud2_xyzrgb_packs_bgr0():
    depth = depth_with_holes(INTR)
    rgb = sample_image(np.uint8, 3, 6, 8)
    msg = roundtrip(conv.depth_to_pointcloud2(depth, INTR, header(), rgb=rgb))
    f32 = PointField.FLOAT32
    assert field_layout(msg)[3] == ("rgb", 16, f32, 1)
    assert (msg.point_step, msg.row_step) == (32, 256)
    raw = np.frombuffer(msg.data, np.uint8).reshape(6, 8, 32)
    # PCL packing: bytes 16..19 are B, G, R, 0 (uint32 0x00RRGGBB little-endian).
    np.testing.assert_array_equal(raw[..., 16], rgb[..., 2])
    np.testing.assert_array_equal(raw[..., 17], rgb[..., 1])
    np.testing.assert_array_equal(raw[..., 18], rgb[..., 0])
    assert (raw[..., 19] == 0).all()
    packed = conv.pointcloud2_to_array(msg)["rgb"].view(np.uint32)
    r, g, b = (int(c) for c in rgb[4, 5])
    assert packed[4, 5] == (r << 16) | (g << 8) | b
    # The xyz part is identical to the colourless cloud.
    xyz_only = conv.pointcloud2_to_array(conv.depth_to_pointcloud2(depth, INTR, header()))
    np.testing.assert_array_equal(
        conv.pointcloud2_to_array(msg)[["x", "y", "z"]].tolist(), xyz_only[["x", "y", "z"]].tolist()
    )


def test_depth_to_pointcloud2_unorganized():
    depth = depth_with_holes(INTR)
    rgb = sample_image(np.uint8, 3, 6, 8)
    msg = roundtrip(conv.depth_to_pointcloud2(depth, INTR, header(), rgb=rgb, unorganized=True))
    assert (msg.height, msg.width, msg.is_dense) == (1, 45, True)
    assert msg.row_step == 45 * 32
    xyz = conv.pointcloud2_to_xyz(msg, skip_nans=False)
    assert xyz.shape == (45, 3) and np.isfinite(xyz).all()
    organized = conv.depth_to_pointcloud2(depth, INTR, header(), rgb=rgb)
    np.testing.assert_array_equal(xyz, conv.pointcloud2_to_xyz(organized))
    assert conv.pointcloud2_to_xyz(organized, skip_nans=False).shape == (48, 3)


def test_depth_to_pointcloud2_without_header_uses_intrinsics_frame():
    msg = conv.depth_to_pointcloud2(np.ones((6, 8), np.float32), INTR)
    assert msg.header.frame_id == "cam_optical"


def test_pointcloud_decoding_works_on_rosbags_messages():
    depth = depth_with_holes(INTR)
    msg = conv.depth_to_pointcloud2(depth, INTR, header(), rgb=sample_image(np.uint8, 3, 6, 8))
    bag_msg = as_rosbags(msg, "sensor_msgs/msg/PointCloud2")
    assert isinstance(bag_msg.data, np.ndarray)
    np.testing.assert_array_equal(
        conv.pointcloud2_to_array(bag_msg).tobytes(), conv.pointcloud2_to_array(msg).tobytes()
    )


# ---------------------------------------------------------------------------------------------
# Generic PointCloud2 reading / writing
# ---------------------------------------------------------------------------------------------

# (name, PointField datatype, struct code, count) -- every datatype, one with count 3.
GENERIC_FIELDS = [
    ("x", PointField.FLOAT64, "d", 1),
    ("i8", PointField.INT8, "b", 1),
    ("u8", PointField.UINT8, "B", 1),
    ("i16", PointField.INT16, "h", 1),
    ("u16", PointField.UINT16, "H", 1),
    ("i32", PointField.INT32, "i", 1),
    ("u32", PointField.UINT32, "I", 1),
    ("normal", PointField.FLOAT32, "f", 3),
]


@pytest.mark.parametrize("big", [False, True])
def test_pointcloud2_to_array_any_layout(big):
    """A hand-packed cloud (struct, not numpy) with padding between fields, after the last field
    and at the end of each row; every datatype; big- and little-endian."""
    order = ">" if big else "<"
    # Offsets chosen with gaps: x@0, i8@9 (1 pad byte before), ..., normal@28, point_step 44.
    offsets = [0, 9, 10, 12, 16, 20, 24, 28]
    point_step, width, height = 44, 3, 2
    row_step = point_step * width + 6
    points = {}
    data = bytearray(row_step * height)
    for v in range(height):
        for u in range(width):
            k = v * width + u
            values = [
                1.5 * k - 2.0,
                -100 + k,
                200 + k,
                -30000 + k,
                60000 + k,
                -2_000_000_000 + k,
                4_000_000_000 + k,
                (0.5 * k, -0.25 * k, 8.0 + k),
            ]
            points[(v, u)] = values
            base = v * row_step + u * point_step
            for (_, _, code, count), off, val in zip(GENERIC_FIELDS, offsets, values, strict=True):
                vals = val if count > 1 else (val,)
                struct.pack_into(f"{order}{count}{code}", data, base + off, *vals)
    msg = PointCloud2(height=height, width=width, point_step=point_step, row_step=row_step)
    msg.is_bigendian = big
    msg.fields = [
        PointField(name=n, offset=o, datatype=t, count=c)
        for (n, t, _, c), o in zip(GENERIC_FIELDS, offsets, strict=True)
    ]
    msg.data = array.array("B", bytes(data))
    cloud = conv.pointcloud2_to_array(roundtrip(msg))
    assert cloud.shape == (2, 3)
    assert cloud.dtype["u16"] == np.dtype("u2") and cloud.dtype["u16"].isnative
    assert cloud.dtype["normal"].shape == (3,)
    for (v, u), values in points.items():
        for (name, _, _, _), val in zip(GENERIC_FIELDS, values, strict=True):
            np.testing.assert_array_equal(cloud[name][v, u], val)
    xyz_error = pytest.raises(ValueError, match="no field")
    with xyz_error:
        conv.pointcloud2_to_xyz(msg)


def test_pointcloud2_to_array_rejects_inconsistent_messages():
    msg = PointCloud2(height=2, width=2, point_step=4, row_step=8)
    msg.fields = [PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1)]
    msg.data = array.array("B", bytes(15))
    with pytest.raises(ValueError, match="expected at least 16"):
        conv.pointcloud2_to_array(msg)
    msg.row_step = 6
    with pytest.raises(ValueError, match="row_step 6"):
        conv.pointcloud2_to_array(msg)
    msg.row_step = 8
    msg.fields = [PointField(name="x", offset=2, datatype=PointField.FLOAT32, count=1)]
    with pytest.raises(ValueError, match="does not fit"):
        conv.pointcloud2_to_array(msg)


LIDAR_DTYPE = np.dtype(
    {
        "names": ["x", "y", "z", "intensity", "ring"],
        "formats": ["<f4", "<f4", "<f4", "<f4", "<u2"],
        "offsets": [0, 4, 8, 16, 20],
        "itemsize": 24,
    }
)


def test_array_to_pointcloud2_lidar_layout():
    cloud = np.zeros(5, dtype=LIDAR_DTYPE)
    cloud["x"] = [1, 2, 3, 4, 5]
    cloud["y"] = [-1, -2, -3, -4, -5]
    cloud["z"] = 0.25
    cloud["intensity"] = [10, 20, 30, 40, 50]
    cloud["ring"] = [0, 1, 15, 31, 127]
    msg = roundtrip(conv.array_to_pointcloud2(cloud, header(frame_id="velodyne")))
    f32, u16 = PointField.FLOAT32, PointField.UINT16
    assert field_layout(msg) == [
        ("x", 0, f32, 1),
        ("y", 4, f32, 1),
        ("z", 8, f32, 1),
        ("intensity", 16, f32, 1),
        ("ring", 20, u16, 1),
    ]
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 5, 24, 120)
    assert msg.is_dense is True and msg.is_bigendian is False
    assert msg.header.frame_id == "velodyne"
    # Point 3 read back with struct straight from the wire bytes.
    x, y, z, intensity, ring = struct.unpack_from("<3f4xfH", bytes(msg.data), 3 * 24)
    assert (x, y, z, intensity, ring) == (4.0, -4.0, 0.25, 40.0, 31)
    back = conv.pointcloud2_to_array(msg)
    assert back.shape == (1, 5)
    for name in LIDAR_DTYPE.names:
        np.testing.assert_array_equal(back[name][0], cloud[name])


def test_array_to_pointcloud2_big_endian_counts_and_density():
    dtype = np.dtype([("x", ">f8"), ("y", ">f8"), ("z", ">f8"), ("rgba", ">u1", (4,))])
    cloud = np.zeros((2, 2), dtype=dtype)
    cloud["x"] = [[1.0, np.nan], [3.0, 4.0]]
    cloud["rgba"] = np.arange(16, dtype=np.uint8).reshape(2, 2, 4)
    msg = roundtrip(conv.array_to_pointcloud2(cloud))
    assert msg.is_bigendian is True and msg.is_dense is False
    assert field_layout(msg)[3] == ("rgba", 24, PointField.UINT8, 4)
    assert struct.unpack_from(">d", bytes(msg.data), 2 * 28)[0] == 3.0
    back = conv.pointcloud2_to_array(msg)
    np.testing.assert_array_equal(back["x"], cloud["x"])
    np.testing.assert_array_equal(back["rgba"], cloud["rgba"])
    np.testing.assert_array_equal(conv.pointcloud2_to_xyz(msg), [[1, 0, 0], [3, 0, 0], [4, 0, 0]])
    with pytest.raises(ValueError, match="structured"):
        conv.array_to_pointcloud2(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="byte order"):
        conv.array_to_pointcloud2(np.zeros(2, dtype=[("x", ">f4"), ("y", "<f4")]))


def test_headers_from_rosbags_messages_are_converted():
    bag_header = as_rosbags(header(7, 8, "bag_frame"), "std_msgs/msg/Header")
    msg = roundtrip(BRIDGE.cv2_to_imgmsg(np.zeros((1, 2), np.uint8), "mono8", bag_header))
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (
        7,
        8,
        "bag_frame",
    )
    cloud_msg = conv.depth_to_pointcloud2(np.ones((6, 8), np.float32), INTR, bag_header)
    assert cloud_msg.header.frame_id == "bag_frame" and cloud_msg.header.stamp.nanosec == 8


# ---------------------------------------------------------------------------------------------
# CompressedImage: image_transport's compressed and compressedDepth
# ---------------------------------------------------------------------------------------------


def compressed(fmt: str, data: bytes, h=None):
    """A CompressedImage as another writer (a driver, ROS 1 image_transport) would build it."""
    msg = conv.CompressedImage(format=fmt)
    msg.data = array.array("B", bytes(data))
    if h is not None:
        msg.header = h
    return msg


def encoded(ext: str, image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


def colour_sample(h=24, w=32) -> np.ndarray:
    """Smooth colour (JPEG reproduces it closely) with distinct R, G and B."""
    v, u = np.mgrid[0:h, 0:w]
    return np.dstack([u * 7 + 20, v * 9 + 10, 200 - u * 3 - v * 2]).astype(np.uint8)


def test_rgb_to_compressed_image_formats_and_round_trip():
    rgb = colour_sample()
    png = roundtrip(conv.rgb_to_compressed_image(rgb, header(), format="png"))
    jpeg = roundtrip(conv.rgb_to_compressed_image(rgb, header(), format="jpeg"))
    # image_transport's compressed publisher for an rgb8 image (it converts to BGR first)
    assert png.format == "rgb8; png compressed bgr8"
    assert jpeg.format == "rgb8; jpeg compressed bgr8"
    assert jpeg.header.frame_id == "camera_optical" and jpeg.header.stamp.sec == 12
    assert bytes(png.data).startswith(b"\x89PNG") and bytes(jpeg.data).startswith(b"\xff\xd8")
    np.testing.assert_array_equal(conv.image_to_rgb(png), rgb)  # PNG is lossless
    # The file is a true-colour JPEG: any decoder sees R, G, B where they belong.
    as_file = cv2.imdecode(np.frombuffer(bytes(jpeg.data), np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(as_file[..., ::-1].astype(int) - rgb).mean() < 2.0
    assert np.abs(conv.image_to_rgb(jpeg).astype(int) - rgb).mean() < 2.0
    assert conv.compressed_image_size(jpeg) == conv.compressed_image_size(png) == (32, 24)
    with pytest.raises(ValueError, match="webp"):
        conv.rgb_to_compressed_image(rgb, format="webp")


def _writers():
    """(format, data) as image_transport (ROS 1 / ROS 2) and drivers write colour images."""
    rgb = colour_sample()
    bgr = rgb[..., ::-1].copy()
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    return rgb, [
        ("rgb8; png compressed bgr8", encoded(".png", bgr)),  # image_transport, rgb8 input
        ("bgr8; png compressed bgr8", encoded(".png", bgr)),  # bgr8 input
        ("bgra8; png compressed bgr8", encoded(".png", bgr)),  # alpha dropped by the publisher
        ("png", encoded(".png", bgr)),  # no ';': older image_transport / drivers, BGR
        # other software compressing RGB channels as they are ("compressed rgb8")
        ("rgb8; png compressed rgb8", encoded(".png", rgb)),
        ("rgba8; png compressed rgba8", encoded(".png", np.dstack([rgb, alpha]))),
    ]


@pytest.mark.parametrize("index", range(6))
def test_compressed_colour_as_image_transport_and_drivers_write_it(index):
    rgb, writers = _writers()
    fmt, data = writers[index]
    msg = compressed(fmt, data, header())
    for m in (msg, roundtrip(msg), as_rosbags(msg, "sensor_msgs/msg/CompressedImage")):
        out = conv.image_to_rgb(m)
        assert out.dtype == np.uint8 and out.shape == (24, 32, 3), fmt
        np.testing.assert_array_equal(out, rgb, err_msg=fmt)
    ros1 = as_ros1_compressed(msg)
    assert hasattr(ros1.header, "seq") and isinstance(ros1.data, np.ndarray)
    np.testing.assert_array_equal(conv.image_to_rgb(ros1), rgb)


@pytest.mark.parametrize(
    "fmt", ["mono8; jpeg compressed mono8", "mono8; jpeg compressed ", "mono8; png compressed "]
)
def test_compressed_mono_becomes_grey_rgb(fmt):
    grey = colour_sample()[..., 1].copy()
    ext = ".png" if "png" in fmt else ".jpg"
    out = conv.image_to_rgb(compressed(fmt, encoded(ext, grey)))
    expected = cv2.imdecode(np.frombuffer(encoded(ext, grey), np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(out, np.dstack([expected] * 3))


def test_compressed_colour_errors_name_the_format():
    good = bytes(conv.rgb_to_compressed_image(colour_sample(), format="jpeg").data)
    png = encoded(".png", colour_sample())
    flipped = bytearray(png)
    flipped[len(png) // 2] ^= 0xFF  # PNG chunks carry a CRC: caught
    cases = [
        ("rgb8; jpeg compressed bgr8", good[: len(good) // 2], "corrupt or truncated"),
        ("rgb8; jpeg compressed bgr8", good[:40], "rgb8; jpeg compressed bgr8"),
        ("rgb8; png compressed bgr8", png[:-20], "corrupt or truncated"),
        ("rgb8; png compressed bgr8", bytes(flipped), "corrupt or truncated"),
        ("rgb8; png compressed bgr8", good, "not a PNG"),  # format and data disagree
        ("h264", good, "unsupported CompressedImage format 'h264'"),
        ("rgb8; theora", good, "'rgb8; theora'"),
        ("16UC1; compressedDepth png", png, "is a depth image"),
        ("16UC1; png compressed ", png, "'16UC1'"),
        (
            "rgb16; png compressed bgr16",
            encoded(".png", colour_sample().astype(np.uint16)),
            "8-bit",
        ),
        ("jpeg", b"", "not a JPEG"),
    ]
    for fmt, data, says in cases:
        with pytest.raises(ValueError, match=says):
            conv.image_to_rgb(compressed(fmt, data))


def depth_sample(h=24, w=32, far=9.5) -> np.ndarray:
    """Metres in (0.2, far) on a mm grid, with holes: NaN, 0 and negative."""
    rng = np.random.default_rng(3)
    depth = rng.uniform(0.2, far, (h, w)).astype(np.float32)
    depth = depth_from_mm(depth_to_mm(depth))
    depth[rng.random((h, w)) < 0.2] = np.nan
    depth[0, :3] = (0.0, -1.0, np.nan)
    return depth


@pytest.mark.parametrize("compression", ["png", "rvl"])
def test_compressed_depth_16uc1_is_lossless_at_mm(compression):
    depth = depth_sample()
    depth[1, 0], depth[1, 1] = 10.0, 10.001  # compressed_depth's depth_max (10 m) keeps 10000 mm
    msg = roundtrip(
        conv.metres_to_compressed_depth(depth, header(), "16UC1", compression=compression)
    )
    assert msg.format == f"16UC1; compressedDepth {compression}"
    assert struct.unpack("<iff", bytes(msg.data)[:12]) == (0, 0.0, 0.0)  # params unused in 16UC1
    out = conv.depth_image_to_metres(msg)
    raw = conv.depth_image_to_metres(conv.metres_to_depth_image(depth, header(), "16UC1"))
    expected = raw.copy()
    expected[1, 1] = np.nan  # beyond depth_max: 0 = no measurement, as image_transport drops it
    np.testing.assert_array_equal(out, expected)  # bit-identical to the raw 16UC1 path
    assert out[1, 0] == np.float32(10.0)
    assert np.isnan(out[0, :3]).all()
    assert conv.compressed_image_size(msg) == (32, 24)
    bag = as_ros1_compressed(msg)
    np.testing.assert_array_equal(conv.depth_image_to_metres(bag), expected)


@pytest.mark.parametrize("compression", ["png", "rvl"])
@pytest.mark.parametrize("depth_max,quantization", [(10.0, 100.0), (4.0, 50.0)])
def test_compressed_depth_32fc1_within_its_quantisation(compression, depth_max, quantization):
    """Inverse-depth quantisation: v = trunc(A / d + B), read back d' = A / (v - B) with
    A = q (q + 1), B = 1 - A / depth_max. From v <= A/d + B < v + 1:  d <= d' < A / (A/d - 1),
    i.e. 0 <= d' - d < d^2 / (A - d) (about d^2 / q^2: 1 cm at 10 m for q = 100), plus float32
    rounding of the two divisions (a few 1e-7 relative)."""
    depth = depth_sample(far=depth_max)
    quant_a, quant_b = conv.inverse_depth_quantisation(depth_max, quantization)
    nearest = quant_a / (65535 - quant_b)  # the smallest depth 16 bits hold
    depth[2, :4] = (nearest * 0.99, depth_max, depth_max * 1.5, np.inf)
    msg = conv.metres_to_compressed_depth(
        depth, header(), "32FC1", depth_max, quantization, compression=compression
    )
    assert msg.format == f"32FC1; compressedDepth {compression}"
    assert struct.unpack("<iff", bytes(msg.data)[:12]) == (0, quant_a, quant_b)
    out = conv.depth_image_to_metres(roundtrip(msg))
    d = depth.astype(np.float64)
    representable = np.isfinite(d) & (d >= nearest) & (d < depth_max)
    np.testing.assert_array_equal(np.isfinite(out), representable)
    err = out[representable] - d[representable]
    bound = d[representable] ** 2 / (quant_a - d[representable])
    tolerance = 1e-6 * d[representable]
    assert (err >= -tolerance).all()
    assert (err < bound + tolerance).all()
    assert np.abs(err).max() > 0.1 * bound.max()  # it is quantised, the bound is not loose


def test_compressed_depth_32fc1_against_hand_computed_pixels():
    # Defaults: A = 100 * 101 = 10100, B = 1 - 10100 / 10 = -1009.
    assert conv.inverse_depth_quantisation() == (10100.0, -1009.0)
    depth = np.array([[1.0, 3.0, 9.99, 0.1]], np.float32)
    msg = conv.metres_to_compressed_depth(depth, header(), "32FC1")
    data = bytes(msg.data)
    assert data[:12] == struct.pack("<iff", 0, 10100.0, -1009.0)
    values = cv2.imdecode(np.frombuffer(data[12:], np.uint8), cv2.IMREAD_UNCHANGED)
    # 10100/1 - 1009 = 9091; 10100/3 - 1009 = 2357.67 -> 2357; 10100/9.99 - 1009 = 2.01 -> 2;
    # 10100/0.1 - 1009 = 99991 does not fit in 16 bits -> 0 (no measurement)
    np.testing.assert_array_equal(values, [[9091, 2357, 2, 0]])
    out = conv.depth_image_to_metres(msg)
    expected = np.float32([10100 / 10100, 10100 / 3366, 10100 / 1011, np.nan])
    np.testing.assert_array_equal(out[0], expected)


@pytest.mark.parametrize(
    "fmt,payload",
    [
        ("16UC1; compressedDepth", "png"),  # ROS 1 (before the codec name) and early ROS 2
        ("16UC1; compressedDepth png", "png"),
        ("mono16; compressedDepth rvl", "rvl"),
        ("32FC1; compressedDepth", "png"),
        ("16UC1; png compressed ", "plain"),  # the compressed transport's 16-bit PNG
        ("mono16; png compressed ", "plain"),
    ],
)
def test_compressed_depth_format_variants(fmt, payload):
    depth = depth_sample()
    kind = "32FC1" if fmt.startswith("32FC1") else "16UC1"
    if payload == "plain":
        data = encoded(".png", depth_to_mm(depth))
    else:
        reference = conv.metres_to_compressed_depth(depth, None, kind, compression=payload)
        data = bytes(reference.data)
    out = conv.depth_image_to_metres(compressed(fmt, data))
    if kind == "16UC1":
        np.testing.assert_array_equal(out, depth_from_mm(depth_to_mm(depth)))
    else:
        np.testing.assert_array_equal(np.isfinite(out), np.isfinite(depth) & (depth > 0))


def test_compressed_depth_errors_name_the_format():
    depth = depth_sample()
    good = bytes(conv.metres_to_compressed_depth(depth, None, "16UC1").data)
    rvl = bytes(conv.metres_to_compressed_depth(depth, None, "16UC1", compression="rvl").data)
    huge = good[:12] + struct.pack("<II", 60000, 60000) + rvl[20:]
    cases = [
        ("16UC1; compressedDepth png", good[: len(good) // 2], "corrupt or truncated"),
        ("16UC1; compressedDepth png", good[:12], "no room"),
        ("16UC1; compressedDepth png", b"\0" * 12 + good[20:], "not a PNG"),
        ("16UC1; compressedDepth rvl", rvl[: len(rvl) // 2], "truncated"),
        ("16UC1; compressedDepth rvl", huge, "malformed RVL"),
        ("16UC1; compressedDepth zstd", good, "'16UC1; compressedDepth zstd'"),
        ("8UC1; compressedDepth png", good, "'8UC1'"),
        ("32FC1; compressedDepth png", b"\0" * 12 + good[12:], "quantisation"),  # A = 0
        ("16UC1; jpeg compressed mono8", good, "is not depth"),
        ("png", good[12:], "is not depth"),  # the unit is not said
        ("rgb8; png compressed bgr8", encoded(".png", colour_sample()), "is not depth"),
        ("16UC1; png compressed ", encoded(".png", colour_sample()), "16-bit single-channel"),
    ]
    for fmt, data, says in cases:
        with pytest.raises(ValueError, match=says):
            conv.depth_image_to_metres(compressed(fmt, data))
    with pytest.raises(ValueError, match="encoding '8UC1'"):
        conv.metres_to_compressed_depth(depth, None, "8UC1")
    with pytest.raises(ValueError, match="must be > 0"):
        conv.metres_to_compressed_depth(depth, None, "32FC1", depth_max=0.0)


@pytest.mark.parametrize(
    "pixels,words",
    [
        # runs (zeros 2, non-zeros 2: +5 -> 10, +2 -> 4), (zeros 1, non-zeros 0):
        # nibbles 2 2 A 1 4 1 0 (+ 0 pad); 10 = 0b1_010 is two groups: 0x8|2, then 1
        ([0, 0, 5, 7, 0], [0x22A14100]),
        # ... then (zeros 1, non-zeros 1: 3 - 7 = -4 -> zigzag 7): exactly one full word
        ([0, 0, 5, 7, 0, 3], [0x22A14117]),
        ([0, 0, 0], [0x30000000]),  # (zeros 3, non-zeros 0)
        # (0, 1: +65535 -> zigzag 131070 = groups 6 7 7 7 7 3, low first)
        ([65535], [0x01EFFFF3]),
        ([], []),
    ],
)
def test_rvl_matches_hand_encoded_words(pixels, words):
    data = struct.pack(f"<{len(words)}I", *words)
    assert conv.rvl_compress(np.array(pixels, np.uint16)) == data
    np.testing.assert_array_equal(conv.rvl_decompress(data, len(pixels)), pixels)


def test_rvl_round_trip_and_corrupt_streams():
    rng = np.random.default_rng(5)
    for pixels in (
        rng.integers(0, 65536, 1000),
        np.where(rng.random(5000) < 0.3, 0, rng.integers(300, 4000, 5000)),
        np.zeros(77),
    ):
        pixels = pixels.astype(np.uint16)
        data = conv.rvl_compress(pixels)
        assert len(data) % 4 == 0
        np.testing.assert_array_equal(conv.rvl_decompress(data, pixels.size), pixels)
    data = conv.rvl_compress(np.array([0, 0, 5, 7, 0], np.uint16))
    with pytest.raises(ValueError, match="overrun"):
        conv.rvl_decompress(data, 3)  # 2 zeros + 2 values do not fit in 3 pixels
    with pytest.raises(ValueError, match="truncated"):
        conv.rvl_decompress(data, 9)  # the stream ends after 5 pixels


def test_compressed_image_size_reads_headers_only():
    rgb = np.zeros((30, 50, 3), np.uint8)
    ok, progressive = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    depth = np.ones((30, 50), np.float32)
    for msg in (
        conv.rgb_to_compressed_image(rgb, format="jpeg"),
        conv.rgb_to_compressed_image(rgb, format="png"),
        compressed("jpeg", progressive.tobytes()),
        conv.metres_to_compressed_depth(depth, None, "32FC1"),
        conv.metres_to_compressed_depth(depth, None, "16UC1", compression="rvl"),
    ):
        assert conv.compressed_image_size(msg) == (50, 30), msg.format
        assert conv.is_compressed_image(msg)
    assert not conv.is_compressed_image(conv.metres_to_depth_image(depth))
    with pytest.raises(ValueError, match="readable frame header"):
        conv.compressed_image_size(compressed("jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF"))
    with pytest.raises(ValueError, match="h264"):
        conv.compressed_image_size(compressed("h264", b"\0" * 64))


def test_depth_outputs_equal_the_reference_conversions_on_every_kind_of_invalid():
    from depth_perception.core.depth import valid_mask

    rng = np.random.default_rng(5)
    d = rng.uniform(0.1, 80.0, (48, 64)).astype(np.float32)
    kinds = rng.integers(0, 7, d.shape)
    d[kinds == 1] = np.nan
    d[kinds == 2] = 0.0
    d[kinds == 3] = -1.0
    d[kinds == 4] = np.inf
    d[kinds == 5] = -np.inf
    d[kinds == 6] = 0.0004  # rounds to 0 mm: invalid in 16UC1
    mm = np.frombuffer(bytes(conv.metres_to_depth_image(d, None, "16UC1").data), np.uint16)
    np.testing.assert_array_equal(mm.reshape(d.shape), depth_to_mm(d))  # > 65.535 m -> 0 too
    metres = np.frombuffer(bytes(conv.metres_to_depth_image(d, None, "32FC1").data), np.float32)
    expected = np.where(valid_mask(d), d, np.float32(np.nan))
    np.testing.assert_array_equal(metres.reshape(d.shape), expected)

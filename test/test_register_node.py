"""depth_register_node end to end over real DDS: the node launched like `ros2 run`, fed depth and
camera_info as a driver publishes them, its output compared with core.registration."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from node_harness import Collector, by_stamp, running_node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from depth_perception.core.camera import Intrinsics
from depth_perception.core.depth import depth_from_mm, depth_to_mm
from depth_perception.core.registration import register_depth
from depth_perception.io.calibration import (
    Calibration,
    Extrinsic,
    quaternion_to_matrix,
    save_calibration,
)
from depth_perception.paths import config_file
from depth_perception.ros.conversions import (
    depth_image_to_metres,
    intrinsics_to_camera_info,
    ns_to_stamp,
    numpy_to_image,
    stamp_to_ns,
)
from depth_perception.ros.diagnostics import ERROR, OK, WARN, level_name
from depth_perception.ros.launcher import NodeProcess
from depth_perception.ros.qos import latched_qos, reliable_qos

EXECUTABLE = "depth_register_node"
W, H = 160, 120
DEPTH_FRAME, COLOUR_FRAME = "cam_depth_optical_frame", "cam_color_optical_frame"
# A RealSense D435's imagers (depth fx 390, colour fx 613 at 640x480) at 160x120.
DEPTH_K = Intrinsics(640, 480, 390.43, 390.43, 331.39, 242.19, frame_id=DEPTH_FRAME).scaled(W, H)
COLOUR_K = Intrinsics(640, 480, 613.20, 613.42, 319.94, 239.18, frame_id=COLOUR_FRAME).scaled(W, H)
POSE = [0.0143, 0.0006, 0.0006, -0.0000532, 0.00646, 0.00515, 0.99997]  # x y z qx qy qz qw
T_PARAM = quaternion_to_matrix(POSE[:3], POSE[3:])
STAMP0 = 1_700_000_000_000_000_000
INPUTS = ("depth/image_rect", "depth/camera_info", "rgb/camera_info")
OUTPUTS = ("depth_registered/image_rect", "depth_registered/camera_info")


def _depth_mm(seed: int) -> np.ndarray:
    """A tilted wall at 1.2-2.5 m, a box at 0.7 m, 8 % holes: uint16 millimetres."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:H, 0:W]
    depth = 1.2 + 1.3 * u / W + 0.2 * v / H
    depth[40:60, 40:80] = 0.7
    depth[rng.random(depth.shape) < 0.08] = 0.0
    return np.round(depth * 1000).astype(np.uint16)


class Driver(Collector):
    """A camera driver stand-in (depth + both camera_infos) that also collects the node's output,
    in an rclpy context of its own."""

    def __init__(self, namespace: str, info_qos=None) -> None:
        outputs = {OUTPUTS[0]: Image, OUTPUTS[1]: CameraInfo}
        super().__init__(namespace, outputs, ready=OUTPUTS[:1])
        info_qos = info_qos or reliable_qos(10)
        self.pub_depth = self.node.create_publisher(Image, INPUTS[0], reliable_qos(10))
        self.pub_depth_info = self.node.create_publisher(CameraInfo, INPUTS[1], info_qos)
        self.pub_colour_info = self.node.create_publisher(CameraInfo, INPUTS[2], info_qos)
        self.inputs = [self.pub_depth, self.pub_depth_info, self.pub_colour_info]

    @property
    def diagnostics(self) -> list:
        """The node's statuses on /diagnostics so far."""
        return [
            s
            for array in self.msgs["/diagnostics"]
            for s in array.status
            if s.name.startswith(f"{EXECUTABLE}: ")
        ]

    def publish_infos(self, depth_k: Intrinsics | None = DEPTH_K, colour_k=COLOUR_K) -> None:
        for pub, intr in ((self.pub_depth_info, depth_k), (self.pub_colour_info, colour_k)):
            if intr is not None:
                # stamp 0, as recordings and latched drivers carry it
                pub.publish(intrinsics_to_camera_info(intr, Header(frame_id=intr.frame_id)))
        self.spin_until(lambda: False, 0.3)

    def publish_depth(self, image: np.ndarray, encoding: str, stamp_ns: int) -> None:
        header = Header(stamp=ns_to_stamp(stamp_ns), frame_id=DEPTH_FRAME)
        self.pub_depth.publish(numpy_to_image(image, encoding, header))

    def output(self, stamp_ns: int, timeout: float = 15.0) -> tuple[Image, CameraInfo]:
        depth, info = (self.msgs[topic] for topic in OUTPUTS)
        self.spin_until(lambda: by_stamp(depth, stamp_ns) and by_stamp(info, stamp_ns), timeout)
        return by_stamp(depth, stamp_ns), by_stamp(info, stamp_ns)

    def status(self, level: int, says: str, timeout: float = 10.0):
        def find():
            return next(
                (s for s in self.diagnostics if s.level[0] == level and says in s.message), None
            )

        self.spin_until(find, timeout)
        return find()


def running_register_node(namespace: str, log, parameters: dict, driver: Driver | None = None):
    """The node as its own process with the package's config (like `ros2 run`) and a Driver
    connected to it; yields (node, None, driver). On exit the node must shut down cleanly."""
    return running_node(
        EXECUTABLE,
        "depth_register.yaml",
        namespace,
        log,
        {"diagnostics_period": 0.2, **parameters},
        timeout=30.0,
        collector=driver or Driver(namespace),
    )


@pytest.fixture(scope="module")
def param_node(tmp_path_factory):
    log = tmp_path_factory.mktemp("register") / "node.log"
    namespace = f"/register_test_{id(object()) % 100000}"
    with running_register_node(namespace, log, {"colour_T_depth": POSE}) as (node, _, driver):
        driver.publish_infos()  # once, as a latched driver or a recording does
        yield node, driver, log


def _check_camera_info(info: CameraInfo, stamp_ns: int) -> None:
    assert info is not None
    assert stamp_to_ns(info.header.stamp) == stamp_ns and info.header.frame_id == COLOUR_FRAME
    assert (info.width, info.height) == (W, H)
    np.testing.assert_array_equal(np.asarray(info.k).reshape(3, 3), COLOUR_K.K)


def test_16uc1_depth_is_registered_exactly_like_register_depth(param_node):
    node, driver, log = param_node
    mm = _depth_mm(0)
    stamp = STAMP0 + 1
    driver.publish_depth(mm, "16UC1", stamp)
    out, info = driver.output(stamp)
    assert out is not None, log.read_text()
    assert out.encoding == "16UC1"
    assert stamp_to_ns(out.header.stamp) == stamp and out.header.frame_id == COLOUR_FRAME
    expected = depth_to_mm(register_depth(depth_from_mm(mm), DEPTH_K, COLOUR_K, T_PARAM))
    got = np.frombuffer(bytes(out.data), np.uint16).reshape(H, W)
    np.testing.assert_array_equal(got, expected)
    assert np.count_nonzero(got) > 0.85 * got.size
    # it moved: the raw depth is not what the colour camera sees
    assert np.mean(got == mm) < 0.5
    _check_camera_info(info, stamp)
    assert driver.status(OK, "registering depth") is not None


@pytest.mark.parametrize("encoding", ["32FC1", "mono16"])
def test_other_depth_encodings_come_back_in_their_own_encoding(param_node, encoding):
    node, driver, log = param_node
    mm = _depth_mm(1)
    stamp = STAMP0 + (2 if encoding == "32FC1" else 3)
    metres = depth_from_mm(mm)
    image = metres if encoding == "32FC1" else mm
    driver.publish_depth(image, encoding, stamp)
    out, info = driver.output(stamp)
    assert out is not None, log.read_text()
    assert out.encoding == encoding
    expected = register_depth(metres, DEPTH_K, COLOUR_K, T_PARAM)
    if encoding == "32FC1":
        np.testing.assert_array_equal(depth_image_to_metres(out), expected)  # NaN where empty
    else:
        got = np.frombuffer(bytes(out.data), np.uint16).reshape(H, W)
        np.testing.assert_array_equal(got, depth_to_mm(expected))
    _check_camera_info(info, stamp)


def test_bad_input_is_reported_and_the_node_keeps_registering(param_node):
    node, driver, log = param_node
    # a colour image on the depth topic
    driver.publish_depth(np.zeros((H, W, 3), np.uint8), "rgb8", STAMP0 + 10)
    status = driver.status(ERROR, "unsupported depth encoding 'rgb8'")
    assert status is not None, [(level_name(s.level), s.message) for s in driver.diagnostics]
    # sizes checked before decoding: an empty image, and one claiming 10^10 pixels (no data)
    for width, height, says in (
        (W, 0, f"depth image is {W}x0"),
        (10**5, 10**5, "= 10000000000 pixels, more than max_input_pixels = 2500000"),
    ):
        header = Header(stamp=ns_to_stamp(STAMP0 + 13), frame_id=DEPTH_FRAME)
        driver.pub_depth.publish(
            Image(header=header, width=width, height=height, encoding="16UC1", step=2 * width)
        )
        status = driver.status(ERROR, says)
        assert status is not None, [(level_name(s.level), s.message) for s in driver.diagnostics]
        assert "errors_depth" in {v.key for v in status.values}
    # an unrectified colour camera
    distorted = replace(COLOUR_K, D=(0.09, -0.18, 0.0, 0.0, 0.0))
    driver.publish_infos(depth_k=None, colour_k=distorted)
    driver.publish_depth(_depth_mm(2), "16UC1", STAMP0 + 11)
    assert driver.status(ERROR, "registration expects rectified images") is not None
    assert driver.output(STAMP0 + 11, timeout=1.0)[0] is None
    # good input again: registered as before
    driver.publish_infos(depth_k=None)
    driver.publish_depth(_depth_mm(3), "16UC1", STAMP0 + 12)
    out, _ = driver.output(STAMP0 + 12)
    assert out is not None, log.read_text()
    expected = depth_to_mm(register_depth(depth_from_mm(_depth_mm(3)), DEPTH_K, COLOUR_K, T_PARAM))
    np.testing.assert_array_equal(np.frombuffer(bytes(out.data), np.uint16).reshape(H, W), expected)
    assert node.alive()
    errors = [line for line in log.read_text().splitlines() if "[ERROR]" in line]
    assert any("rgb8" in line for line in errors) and any("rectified" in line for line in errors)


def test_calibration_file_and_camera_info_published_once_before_the_node_started(tmp_path):
    # The rig's calibration: colour imager 15 mm beside the depth imager, 1 deg of yaw.
    camera_link_T_optical = [-0.5, 0.5, -0.5, 0.5]
    calibration = Calibration(
        cameras={"color": COLOUR_K, "depth": DEPTH_K},
        extrinsics=[
            Extrinsic("camera_link", COLOUR_FRAME, (0.0, 0.015, 0.0), camera_link_T_optical),
            Extrinsic("camera_link", "tilted", (0.0, 0.0, 0.0), (0.0, 0.0, 0.0087265, 0.9999619)),
            Extrinsic("tilted", DEPTH_FRAME, (0.0, 0.0, 0.0), camera_link_T_optical),
        ],
    )
    path = save_calibration(calibration, tmp_path / "rig.yaml")
    T = calibration.transform(COLOUR_FRAME, DEPTH_FRAME)
    namespace = f"/register_cal_{id(object()) % 100000}"
    log = tmp_path / "node.log"
    # Latched colour camera_info, published before the node exists; the depth camera_info only
    # comes later, so the first depth frame waits for it.
    driver = Driver(namespace, info_qos=latched_qos())
    driver.publish_infos(depth_k=None)
    parameters = {"calibration_file": str(path), "camera_info_qos": "latched"}
    with running_register_node(namespace, log, parameters, driver) as (node, _, driver):
        driver.publish_depth(_depth_mm(4), "16UC1", STAMP0 + 20)
        waiting = driver.status(WARN, "waiting for camera_info")
        assert waiting is not None, log.read_text()
        assert f"{namespace}/depth/camera_info" in waiting.message
        assert "rgb/camera_info" not in waiting.message  # the latched one did arrive
        driver.publish_infos(colour_k=None)
        driver.publish_depth(_depth_mm(4), "16UC1", STAMP0 + 21)
        out, info = driver.output(STAMP0 + 21)
        assert out is not None, log.read_text()
        expected = depth_to_mm(register_depth(depth_from_mm(_depth_mm(4)), DEPTH_K, COLOUR_K, T))
        got = np.frombuffer(bytes(out.data), np.uint16).reshape(H, W)
        np.testing.assert_array_equal(got, expected)
        _check_camera_info(info, STAMP0 + 21)
        # the transform really is the calibration's (its 1 deg yaw moves depth by ~1.5 px)
        with_param_pose = register_depth(depth_from_mm(_depth_mm(4)), DEPTH_K, COLOUR_K, T_PARAM)
        assert np.mean(got == depth_to_mm(with_param_pose)) < 0.9


def test_the_extrinsic_from_tf_static(tmp_path):
    """Neither calibration_file nor colour_T_depth: /tf_static, as a driver latches it."""
    from tf2_msgs.msg import TFMessage

    from depth_perception.ros.tf_static import (
        TF_STATIC_TOPIC,
        extrinsics_to_tf_message,
        tf_static_qos,
    )

    namespace = f"/register_tf_{id(object()) % 100000}"
    t, q = POSE[:3], POSE[3:]
    with running_register_node(namespace, tmp_path / "node.log", {}) as (node, _, driver):
        driver.publish_infos()
        driver.publish_depth(_depth_mm(5), "16UC1", STAMP0 + 30)
        assert driver.status(ERROR, "no transform from") is not None  # nothing on /tf_static yet
        pub = driver.node.create_publisher(TFMessage, TF_STATIC_TOPIC, tf_static_qos())
        pub.publish(extrinsics_to_tf_message([Extrinsic(COLOUR_FRAME, DEPTH_FRAME, t, q)], 0))
        driver.spin_until(lambda: False, 0.5)
        driver.publish_depth(_depth_mm(5), "16UC1", STAMP0 + 31)
        out, _ = driver.output(STAMP0 + 31)
        assert out is not None, (tmp_path / "node.log").read_text()
        want = register_depth(depth_from_mm(_depth_mm(5)), DEPTH_K, COLOUR_K, T_PARAM)
        got = np.frombuffer(bytes(out.data), np.uint16).reshape(H, W)
        np.testing.assert_array_equal(got, depth_to_mm(want))
        assert node.alive()


START_FAILURES = [
    ({"colour_T_depth": [0.01, 0.0, 0.0, 0.0, 0.0, 1.0]}, "colour_T_depth has 6 values"),
    ({"colour_T_depth": [0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0]}, "unit length"),
    ({"calibration_file": "/nonexistent/rig.yaml"}, "/nonexistent/rig.yaml"),
    (
        {"calibration_file": "CAL", "colour_T_depth": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]},
        "not both",
    ),
    (
        {"calibration_file": "CAL", "depth_frame": "ir_frame", "colour_frame": "camera_link"},
        "no transform from depth frame 'ir_frame'",
    ),
    ({"colour_T_depth": POSE, "camera_info_qos": "whenever"}, "camera_info_qos"),
]


@pytest.mark.parametrize("params,says", START_FAILURES, ids=[s[1][:24] for s in START_FAILURES])
def test_a_node_that_cannot_start_says_why_once_and_exits_non_zero(tmp_path, params, says):
    if params.get("calibration_file") == "CAL":
        cal = Calibration(extrinsics=[Extrinsic("camera_link", "other", (0, 0, 0), (0, 0, 0, 1))])
        params = {**params, "calibration_file": str(save_calibration(cal, tmp_path / "c.yaml"))}
    log = tmp_path / "node.log"
    node = NodeProcess(
        EXECUTABLE,
        params_file=config_file("depth_register.yaml"),
        parameters=params,
        log_path=log,
    ).start()
    node.process.wait(timeout=60)
    text = log.read_text()
    assert node.process.returncode == 1, text
    assert says in text, text
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if "[FATAL]" in line or "[ERROR]" in line]
    assert len(errors) == 1, text

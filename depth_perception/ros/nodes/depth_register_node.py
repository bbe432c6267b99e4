"""depth_register_node: depth from the depth imager -> depth in the colour camera.

The job of depth_image_proc's ``register``, with :func:`depth_perception.core.registration.
register_depth` (the function the bag tools use too). Topics are relative, so a namespace
(``-r __ns:=/camera``) puts the node beside its camera:

  in:  depth/image_rect (sensor_msgs/Image: 16UC1 / mono16 millimetres or 32FC1 metres),
       depth/camera_info, rgb/camera_info (SensorData QoS; ``camera_info_qos: latched`` for
       drivers or bags that publish camera_info once, transient local)
  out: depth_registered/image_rect (the input's encoding, the depth's stamp, the colour
       camera's frame_id), depth_registered/camera_info (the colour camera's camera_info with
       the depth's stamp), /diagnostics

camera_info is not synchronised with depth: the latest of each is used (drivers publish it once,
latched, or with their own stamps; a recording may carry one at stamp 0).

The depth->colour extrinsic ``colour_T_depth`` (``p_colour = T p_depth``) comes from one of:
- ``calibration_file``: our calibration YAML (calibration/README.md); the transform between
  ``colour_frame`` and ``depth_frame`` (parameters; empty: the camera_infos' frame_ids);
- ``colour_T_depth``: 7 numbers ``[x, y, z, qx, qy, qz, qw]`` (metres, ROS quaternion order),
  what ``tf2_echo <colour_frame> <depth_frame>`` prints.
- neither: ``/tf_static`` (tf2's static QoS, into our own static-transform buffer; no tf2_ros),
  looked up per frame between the camera_infos' frame_ids (or ``depth_frame`` /
  ``colour_frame``); until the transform arrives frames are dropped with an ERROR.

Images must be rectified (zero distortion). A frame that cannot be registered (encoding, size,
camera_info, missing extrinsic) is dropped with a throttled error and an ERROR on /diagnostics;
the node keeps serving. A node that cannot start (no or bad extrinsic source) says why in one
line and exits with status 1.
"""

from __future__ import annotations

import time
import traceback

import numpy as np
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image

from depth_perception.core.camera import Intrinsics
from depth_perception.core.depth import depth_to_mm, valid_ratio
from depth_perception.core.registration import register_depth, registration_needed
from depth_perception.io.calibration import (
    Calibration,
    StaticTransforms,
    load_calibration,
    quaternion_to_matrix,
)
from depth_perception.ros.completion_node import NodeStartupError
from depth_perception.ros.conversions import (
    CvBridgeError,
    camera_info_to_intrinsics,
    copy_header,
    depth_image_to_metres,
    metres_to_depth_image,
    numpy_to_image,
)
from depth_perception.ros.diagnostics import DiagnosticsReporter
from depth_perception.ros.dropped_frames import DroppedFrames, FrameRejected, check_image_size
from depth_perception.ros.qos import qos_by_name, reliable_qos, sensor_data_qos
from depth_perception.ros.spin import spin_node
from depth_perception.ros.tf_static import TF_STATIC_TOPIC, TfStaticListener

INPUT_TOPICS = ("depth/image_rect", "depth/camera_info", "rgb/camera_info")
OUTPUT_TOPICS = ("depth_registered/image_rect", "depth_registered/camera_info")
_NOT_YET = object()


def _transform_from_parameter(values: list[float]) -> np.ndarray:
    """[x, y, z, qx, qy, qz, qw] -> 4x4 (quaternion within 1 % of unit length, as in files)."""
    if len(values) != 7:
        raise NodeStartupError(
            f"colour_T_depth has {len(values)} values: give 7, [x, y, z, qx, qy, qz, qw]"
        )
    values = np.asarray(values, dtype=np.float64)
    norm = float(np.linalg.norm(values[3:]))
    if not np.all(np.isfinite(values)) or not 0.99 < norm < 1.01:
        raise NodeStartupError(
            f"colour_T_depth {values.tolist()}: the quaternion (qx, qy, qz, qw) must be finite "
            f"and of unit length (|q| = {norm:.4f})"
        )
    return quaternion_to_matrix(values[:3], values[3:])


class DepthRegisterNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("depth_register_node", **kwargs)
        self.declare_parameter("calibration_file", "")
        self.declare_parameter("depth_frame", "")
        self.declare_parameter("colour_frame", "")
        self.declare_parameter("colour_T_depth", Parameter.Type.DOUBLE_ARRAY)
        self.declare_parameter("qos_depth", 5)
        self.declare_parameter("camera_info_qos", "sensor_data")
        self.declare_parameter("max_input_pixels", 2_500_000)
        self.declare_parameter("diagnostics_period", 1.0)
        p = self.get_parameter
        self._depth_frame = str(p("depth_frame").value)
        self._colour_frame = str(p("colour_frame").value)
        self._max_pixels = int(p("max_input_pixels").value)

        # The extrinsic: a fixed transform, or a calibration file looked up per frame pair.
        self._fixed_T: np.ndarray | None = None
        self._calibration: Calibration | None = None
        self._static: StaticTransforms | None = None
        self._T_by_frames: dict[tuple[str, str], np.ndarray] = {}
        path = str(p("calibration_file").value)
        try:
            values = p("colour_T_depth").value
        except ParameterUninitializedException:  # declared by type only: not set
            values = None
        if path and values:
            raise NodeStartupError("set calibration_file or colour_T_depth, not both")
        if values:
            self._fixed_T = _transform_from_parameter(list(values))
            self._source = "colour_T_depth parameter"
        elif path:
            try:
                self._calibration = load_calibration(path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise NodeStartupError(f"calibration_file {path}: {exc}") from None
            self._source = f"calibration_file {path}"
            if self._depth_frame and self._colour_frame:
                self._lookup(self._colour_frame, self._depth_frame, startup=True)
        else:  # neither: the extrinsic comes from /tf_static, as tf2 users publish it
            self._static = StaticTransforms(source=TF_STATIC_TOPIC)
            self._source = TF_STATIC_TOPIC
        try:
            info_qos = qos_by_name(str(p("camera_info_qos").value), int(p("qos_depth").value))
        except ValueError as exc:
            raise NodeStartupError(f"camera_info_qos: {exc}") from None

        self._depth_info: CameraInfo | None = None
        self._colour_info: CameraInfo | None = None
        self._reason_logged: object = _NOT_YET  # the registration_needed() reason last logged
        self._registered = 0
        out_qos = reliable_qos(depth=5)
        self._pub_depth = self.create_publisher(Image, OUTPUT_TOPICS[0], out_qos)
        self._pub_info = self.create_publisher(CameraInfo, OUTPUT_TOPICS[1], out_qos)
        self.diagnostics = DiagnosticsReporter(
            self,
            task_name="depth registration",
            hardware_id=self.get_namespace(),
            period_s=float(p("diagnostics_period").value),
        )
        self._dropped = DroppedFrames(self.diagnostics)
        if self._static is not None:
            self._tf_listener = TfStaticListener(
                self, self._static, lambda message: self._reject("extrinsic", message)
            )
        self.create_subscription(CameraInfo, INPUT_TOPICS[1], self._on_depth_info, info_qos)
        self.create_subscription(CameraInfo, INPUT_TOPICS[2], self._on_colour_info, info_qos)
        self.create_subscription(
            Image, INPUT_TOPICS[0], self._on_depth, sensor_data_qos(int(p("qos_depth").value))
        )
        self.get_logger().info(f"depth->colour extrinsic from the {self._source}")

    # -- inputs ------------------------------------------------------------------------------
    def _on_depth_info(self, msg: CameraInfo) -> None:
        self._depth_info = msg

    def _on_colour_info(self, msg: CameraInfo) -> None:
        self._colour_info = msg

    def _on_depth(self, msg: Image) -> None:
        start = time.monotonic()
        try:
            self._register(msg, start)
        except FrameRejected as exc:
            self._reject(exc.kind, f"depth frame dropped: {exc}")
        except (ValueError, CvBridgeError) as exc:
            self._reject("input", f"depth frame dropped: {exc}")
        except Exception as exc:  # keep serving the next frame whatever happened
            self.get_logger().error(traceback.format_exc(), throttle_duration_sec=10.0)
            self._reject("registration", f"registration failed: {type(exc).__name__}: {exc}")

    def _reject(self, kind: str, message: str) -> None:
        self._dropped.report(kind, message, frames_registered=self._registered)

    # -- processing ----------------------------------------------------------------------------
    def _lookup(self, colour_frame: str, depth_frame: str, startup: bool = False) -> np.ndarray:
        key = (colour_frame, depth_frame)
        if self._static is not None:  # /tf_static: transforms may still arrive, never cached
            try:
                return self._static.lookup(colour_frame, depth_frame)
            except KeyError as exc:
                raise FrameRejected("extrinsic", str(exc.args[0])) from None
        if key not in self._T_by_frames:
            try:
                self._T_by_frames[key] = self._calibration.transform(colour_frame, depth_frame)
            except KeyError as exc:
                message = (
                    f"no transform from depth frame '{depth_frame}' to colour frame "
                    f"'{colour_frame}' in the {self._source}: {exc.args[0]}"
                )
                if startup:
                    raise NodeStartupError(message) from None
                raise FrameRejected("extrinsic", message) from None
        return self._T_by_frames[key]

    def _extrinsic(self, depth_intr: Intrinsics, colour_intr: Intrinsics) -> np.ndarray:
        if self._fixed_T is not None:
            return self._fixed_T
        depth_frame = self._depth_frame or depth_intr.frame_id
        colour_frame = self._colour_frame or colour_intr.frame_id
        for what, frame in (("depth", depth_frame), ("colour", colour_frame)):
            if not frame:
                raise FrameRejected(
                    "extrinsic",
                    f"the {what} camera_info has no frame_id: set the {what}_frame parameter "
                    "to its frame in the calibration file",
                )
        return self._lookup(colour_frame, depth_frame)

    def _intrinsics(self, msg: CameraInfo, what: str) -> Intrinsics:
        try:
            intr = camera_info_to_intrinsics(msg)
        except ValueError as exc:
            raise FrameRejected(f"{what}_camera_info", f"{what} camera_info: {exc}") from None
        if intr.width * intr.height > self._max_pixels:
            raise FrameRejected(
                f"{what}_camera_info",
                f"{what} camera_info is {intr.width}x{intr.height}, more than max_input_pixels "
                f"= {self._max_pixels}",
            )
        return intr

    def _register(self, msg: Image, start: float) -> None:
        depth_info, colour_info = self._depth_info, self._colour_info
        if depth_info is None or colour_info is None:
            missing = [
                self.resolve_topic_name(topic)
                for topic, info in zip(INPUT_TOPICS[1:], (depth_info, colour_info), strict=True)
                if info is None
            ]
            self.diagnostics.warn(
                f"depth frame dropped: waiting for camera_info on {', '.join(missing)}",
                kind="waiting",
                frames_registered=self._registered,
            )
            return
        width, height = check_image_size(msg, "depth", self._max_pixels)
        encoding = str(msg.encoding)
        try:
            depth = depth_image_to_metres(msg)
        except (ValueError, CvBridgeError) as exc:
            raise FrameRejected("depth", str(exc)) from None
        depth_intr = self._intrinsics(depth_info, "depth")
        colour_intr = self._intrinsics(colour_info, "colour")
        if depth_intr.size != (width, height):
            # camera_info of another resolution of the same depth camera
            depth_intr = depth_intr.scaled(width, height)
        T = self._extrinsic(depth_intr, colour_intr)

        reason = registration_needed(depth_intr, colour_intr, T)
        if reason != self._reason_logged:
            self.get_logger().info(
                f"registering depth into the colour camera: {reason}"
                if reason
                else "the depth is already registered to the colour camera: passing it through"
            )
            self._reason_logged = reason
        if reason is None:
            registered = depth
        else:
            try:
                registered = register_depth(depth, depth_intr, colour_intr, T)
            except ValueError as exc:  # distorted (unrectified) camera_info
                raise FrameRejected("camera_info", str(exc)) from None

        header = copy_header(msg.header, frame_id=self._colour_frame or colour_intr.frame_id)
        if encoding == "32FC1":
            out = metres_to_depth_image(registered, header, "32FC1")
        else:  # 16UC1 / mono16 millimetres, published as they came
            out = numpy_to_image(depth_to_mm(registered), encoding, header)
        self._pub_depth.publish(out)
        self._pub_info.publish(self._colour_info_for(colour_info, header))

        self._registered += 1
        self.diagnostics.ok(
            "registering depth" if reason else "depth already registered: passed through",
            frames_registered=self._registered,
            input_errors=self._dropped.total,
            registration=reason or "not needed",
            extrinsic=self._source,
            input_valid_ratio=f"{valid_ratio(depth):.3f}",
            output_valid_ratio=f"{valid_ratio(registered):.3f}",
            latency_ms=f"{(time.monotonic() - start) * 1e3:.1f}",
        )

    @staticmethod
    def _colour_info_for(info: CameraInfo, header) -> CameraInfo:
        """The colour camera's camera_info as the driver sent it, with the output's header."""
        out = CameraInfo()
        out.header = header
        out.height, out.width = info.height, info.width
        out.distortion_model = info.distortion_model
        out.d, out.k, out.r, out.p = info.d, info.k, info.r, info.p
        out.binning_x, out.binning_y, out.roi = info.binning_x, info.binning_y, info.roi
        return out


def main(args: list[str] | None = None) -> None:
    spin_node(DepthRegisterNode, args)


if __name__ == "__main__":
    main()

"""The ROS front end shared by every depth node (classical fill, LingBot-Depth, prompted models).

The engine declares its inputs (:class:`depth_perception.engines.base.EngineInputs`); the base
subscribes to, synchronises and converts exactly those, calls ``engine.run(FrameInputs)`` and
publishes the same outputs whatever the method:

colour + camera_info (+ registered depth when the engine takes it or ``sensor_depth`` is a
prompt source; exact / approximate sync, SensorData QoS)
  + newest LiDAR / radar scan within ``max_prompt_age`` (not synchronised) -> prompt
  -> newest-frame worker -> engine.run() -> depth / confidence / cloud / status / diagnostics

Topics are relative, so a namespace (``-r __ns:=/camera``) puts the node beside its camera:

  in:  rgb/image_rect_color, rgb/camera_info, depth_registered/image_rect (when used),
       lidar/points, radar/points (``lidar_topic`` / ``radar_topic``, when prompt sources),
       /tf_static (when prompt clouds and no ``calibration_file``),
       targets (depth_perception_msgs/TargetPromptArray, engines that take targets: the newest
       targets within ``max_target_age`` of the frame; :mod:`depth_perception.ros.targets`)
  srv: depth_query (depth_perception_msgs/DepthQuery: depth and 3-D points at pixels of one
       of the last ``query_history`` completed frames)
  out: depth_completed/image (32FC1 m), depth_completed/image_mm (16UC1, optional),
       depth_completed/image/compressedDepth (optional, see below),
       depth_completed/confidence (32FC1, when the engine estimates it),
       depth_completed/camera_info, depth_completed/points (organized xyzrgb),
       depth_completed/status (depth_perception_msgs/CompletionStatus), /diagnostics,
       and the method's extras (``publish_extras``): for targets targets/geometry,
       targets/cloud, targets/mask, targets/markers

Prompts (engines that take one): ``prompt_sources`` any of ``lidar``, ``radar`` (PointCloud2 in
the sensor's frame, any field layout with float32/64 x, y, z) and ``sensor_depth`` (the RGB-D
sensor's valid pixels); the nearest depth wins a pixel. A cloud is moved into the camera's
optical frame (``camera_frame``; empty: the camera_info's frame_id) with the static transform
from ``calibration_file`` (our calibration YAML) or, when that is empty, from ``/tf_static``
(transient local, as tf2's static listener), then projected with a z-buffer; points behind the
camera, outside the image or non-finite are counted on /diagnostics. A scan is used for a
frame when its stamp is within ``max_prompt_age`` seconds of the frame's; the camera stream
never waits for one. A frame whose prompt is empty (no fresh scan, every source unusable) is
counted (``frames_without_prompt``) and, unless the engine runs without a prompt
(``prompt_optional``), published as NaN with a WARN. A malformed source (empty cloud, only NaN
points, no x/y/z, no frame_id, no transform to the camera) is a throttled ERROR on /diagnostics
naming the source; the node keeps running with the other sources.

Transports (image_transport's names and topic convention, for a camera whose images reach an
offboard GPU compressed): ``rgb_transport`` raw | compressed subscribes to
``<colour topic>/compressed`` (sensor_msgs/CompressedImage, JPEG / PNG); ``depth_transport`` raw
| compressed | compressedDepth to ``<depth topic>/compressed`` (16-bit PNG) or
``<depth topic>/compressedDepth``. The suffix is appended to the *resolved* base topic, so
remapping the base topic (``-r rgb/image_rect_color:=color/image_raw``) moves the compressed
subscription with it, as with image_transport. ``publish_compressed_depth`` also publishes the
completed depth as image_transport's ``compressedDepth`` of ``depth_completed/image`` (32FC1
inverse-depth quantisation, ``compressed_depth_max`` / ``compressed_depth_quantization`` as
compressed_depth_image_transport's ``depth_max`` / ``depth_quantization``; depth at or beyond
``compressed_depth_max`` or nearer than ~0.15 m at the defaults is sent as "no depth").

When the engine is slower than the camera, only the newest synchronized frame waits for the
worker; older ones are counted as skipped, so latency never grows with a backlog.

Two stages (``pipeline: true``, the default): one thread decodes a frame and runs the engine,
a second converts and publishes the previous frame's outputs meanwhile, so the frame rate is
the slower stage's rather than model + plumbing (the engine's torch work releases the GIL). A
finished frame waits for the publisher only while the publisher still has the one before it.
``pipeline: false`` runs both stages one after the other in one thread.

Outputs are lazy, as depth_image_proc's: an output topic without a subscriber (checked per
frame with ``get_subscription_count()``) is not built at all — no cloud, no 16UC1 copy, no
confidence image, no colour decoding when neither the engine nor the cloud needs it — and each
such frame is counted on /diagnostics as ``outputs_skipped_<output>``.

Fail-safe rules (every node through this base): a frame whose input is malformed (encoding,
size, camera_info) is dropped with a throttled error naming the field and an ERROR on
/diagnostics; depth (and prompt) outside [min_depth, max_depth] is invalid; for an engine that
takes the sensor depth, a frame with less valid input depth than ``min_input_valid_ratio`` is
published as NaN (the model has no metric anchor), and suspicious stamps are counted and warned
about. The node keeps serving the next frame.

Pixel-query engines (DepthLM) declare ``dense_output = False``: they give no depth image, so the
node publishes none of the ``depth_completed/*`` outputs and never calls ``engine.run``; each
frame's decoded colour image (instead of a completed depth) is what the history keeps, and the
subclass answers ``depth_query`` from it and publishes its own outputs (``publish_extras``,
called with ``result`` None).
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np
from depth_perception_msgs.msg import CompletionStatus
from depth_perception_msgs.srv import DepthQuery
from geometry_msgs.msg import Point
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from depth_perception.core.camera import Intrinsics
from depth_perception.core.depth import valid_ratio
from depth_perception.core.prompts import CLOUD_SOURCES, DEFAULT_MAX_PROMPT_AGE, PROMPT_SOURCES
from depth_perception.engines.base import (
    CompletionResult,
    Engine,
    EngineInputs,
    FrameInputs,
    TargetResult,
    input_roles,
    no_result,
)
from depth_perception.io.calibration import StaticTransforms, load_calibration
from depth_perception.ros.conversions import (
    CvBridgeError,
    camera_info_to_intrinsics,
    depth_image_to_metres,
    depth_to_pointcloud2,
    image_to_rgb,
    intrinsics_to_camera_info,
    metres_to_compressed_depth,
    metres_to_depth_image,
    stamp_to_ns,
)
from depth_perception.ros.diagnostics import OK, DiagnosticsReporter
from depth_perception.ros.dropped_frames import DroppedFrames, FrameRejected, check_image_size
from depth_perception.ros.prompt_sources import PromptBuild, PromptSources
from depth_perception.ros.qos import reliable_qos, sensor_data_qos
from depth_perception.ros.stamps import StampMonitor
from depth_perception.ros.sync import SyncedSubscriptions
from depth_perception.ros.targets import (
    DEFAULT_MAX_TARGET_AGE,
    TARGETS_TOPIC,
    TargetOutputs,
    TargetSource,
)

INPUT_TOPICS = ("rgb/image_rect_color", "depth_registered/image_rect", "rgb/camera_info")
#: Default (relative) topics of the point-cloud prompt sources.
PROMPT_TOPICS = {"lidar": "lidar/points", "radar": "radar/points"}
OUTPUT_PREFIX = "depth_completed"
#: Transports each image input accepts (image_transport's names; the topic suffix is the name).
RGB_TRANSPORTS = ("raw", "compressed")
DEPTH_TRANSPORTS = ("raw", "compressed", "compressedDepth")


def transport_topic(node: Node, base_topic: str, transport: str) -> str:
    """The topic image_transport uses for ``transport`` of ``base_topic``: the base topic itself
    for raw, else the resolved (namespaced and remapped) base topic + '/' + transport."""
    if transport == "raw":
        return base_topic
    return f"{node.resolve_topic_name(base_topic)}/{transport}"


#: role (:func:`depth_perception.engines.base.input_roles`) -> the node's default topic.
ROLE_TOPICS = {
    "rgb": INPUT_TOPICS[0],
    "depth": INPUT_TOPICS[1],
    "rgb_info": INPUT_TOPICS[2],
    **PROMPT_TOPICS,
    "targets": TARGETS_TOPIC,
}


class NodeStartupError(RuntimeError):
    """The node cannot start (engine, checkpoint, device, parameters): one clear message."""


@dataclass
class _Ran:
    """A frame after the first stage (decode, prompt, engine), waiting to be published."""

    frame: _SyncedFrame
    header: object
    wanted: set[str]
    rgb: np.ndarray | None
    intrinsics: Intrinsics
    inputs: FrameInputs
    result: CompletionResult | None  # None: a pixel-query engine (no dense output)
    warnings: list[tuple[str, str]]
    prompt_values: dict[str, object]
    in_ratio: float


@dataclass
class _SyncedFrame:
    rgb: Image | CompressedImage
    depth: Image | CompressedImage | None  # None when the node takes no depth
    info: CameraInfo
    received: float  # time.monotonic() when the set was complete


class DepthCompletionNode(Node):
    """Base node: subclasses only build the engine (``make_engine``) and declare its parameters."""

    def __init__(self, node_name: str, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        # Set first: destroy_node() must work on a node whose engine failed to build.
        self._wake = threading.Condition()
        self._stopping = False
        self._worker: threading.Thread | None = None
        # second stage (``pipeline``): the frame the publisher thread has to publish
        self._handoff = threading.Condition()
        self._ran: _Ran | None = None
        self._publisher: threading.Thread | None = None
        self.declare_parameter("sync", "exact")
        self.declare_parameter("queue_size", 10)
        self.declare_parameter("slop", 0.015)
        self.declare_parameter("qos_depth", 5)
        self.declare_parameter("publish_cloud", True)
        self.declare_parameter("publish_depth_mm", False)
        self.declare_parameter("publish_confidence", True)
        self.declare_parameter("diagnostics_period", 1.0)
        self.declare_parameter("query_history", 30)
        self.declare_parameter("min_depth", 0.0)
        self.declare_parameter("max_depth", 200.0)
        self.declare_parameter("min_input_valid_ratio", 0.001)
        self.declare_parameter("max_input_pixels", 2_500_000)
        self.declare_parameter("rgb_transport", "raw")
        self.declare_parameter("depth_transport", "raw")
        self.declare_parameter("publish_compressed_depth", False)
        self.declare_parameter("compressed_depth_max", 10.0)
        self.declare_parameter("compressed_depth_quantization", 100.0)
        # Prompt sources (engines that take a prompt).
        self.declare_parameter("prompt_sources", Parameter.Type.STRING_ARRAY)
        self.declare_parameter("lidar_topic", PROMPT_TOPICS["lidar"])
        self.declare_parameter("radar_topic", PROMPT_TOPICS["radar"])
        self.declare_parameter("max_prompt_age", DEFAULT_MAX_PROMPT_AGE)
        self.declare_parameter("calibration_file", "")
        self.declare_parameter("camera_frame", "")
        # Targets (engines that take them).
        self.declare_parameter("max_target_age", DEFAULT_MAX_TARGET_AGE)
        self.declare_parameter("marker_lifetime", 0.2)
        self.declare_parameter("pipeline", True)
        p = self.get_parameter
        sync = str(p("sync").value)
        if sync not in ("exact", "approximate"):
            raise NodeStartupError(f"parameter sync is {sync!r}: choose exact or approximate")
        rgb_transport = str(p("rgb_transport").value)
        depth_transport = str(p("depth_transport").value)
        for name, value, allowed in (
            ("rgb_transport", rgb_transport, RGB_TRANSPORTS),
            ("depth_transport", depth_transport, DEPTH_TRANSPORTS),
        ):
            if value not in allowed:
                raise NodeStartupError(
                    f"parameter {name} is {value!r}: choose one of {', '.join(allowed)}"
                )
        self._cdepth_max = float(p("compressed_depth_max").value)
        self._cdepth_quant = float(p("compressed_depth_quantization").value)
        if not (self._cdepth_max > 0 and self._cdepth_quant > 0):
            raise NodeStartupError(
                f"compressed_depth_max {self._cdepth_max} / compressed_depth_quantization "
                f"{self._cdepth_quant}: both must be > 0"
            )
        self._min_depth = float(p("min_depth").value)
        self._max_depth = float(p("max_depth").value)
        if not 0.0 <= self._min_depth < self._max_depth:
            raise NodeStartupError(
                f"min_depth {self._min_depth} / max_depth {self._max_depth}: "
                "need 0 <= min_depth < max_depth"
            )
        self._min_valid_ratio = float(p("min_input_valid_ratio").value)
        self._max_pixels = int(p("max_input_pixels").value)

        try:
            self.engine: Engine = self.make_engine()
        except NodeStartupError:
            raise
        except Exception as exc:  # checkpoint, device, method: say what failed, once
            raise NodeStartupError(f"cannot build the engine: {exc}") from exc
        self.get_logger().info(f"engine: {self.engine.model_id}")
        self.inputs: EngineInputs = self.engine.inputs
        self._prompt_sources = self._prompt_sources_parameter()
        self.roles = input_roles(self.inputs, self._prompt_sources)
        self._takes_depth = "depth" in self.roles
        self._camera_frame = str(p("camera_frame").value)
        # A pixel-query engine (DepthLM) gives no depth image: no depth_completed/* outputs.
        self._dense = bool(getattr(self.engine, "dense_output", True))

        out_qos = reliable_qos(depth=5)

        def publisher(kind, topic: str, enabled: bool = True):
            return self.create_publisher(kind, topic, out_qos) if enabled and self._dense else None

        self._pub_depth = publisher(Image, f"{OUTPUT_PREFIX}/image")
        self._pub_info = publisher(CameraInfo, f"{OUTPUT_PREFIX}/camera_info")
        self._pub_status = publisher(CompletionStatus, f"{OUTPUT_PREFIX}/status")
        self._pub_depth_cd = publisher(
            CompressedImage,
            transport_topic(self, f"{OUTPUT_PREFIX}/image", "compressedDepth"),
            p("publish_compressed_depth").value,
        )
        self._pub_depth_mm = publisher(
            Image, f"{OUTPUT_PREFIX}/image_mm", p("publish_depth_mm").value
        )
        self._pub_conf = publisher(
            Image, f"{OUTPUT_PREFIX}/confidence", p("publish_confidence").value
        )
        self._pub_cloud = publisher(
            PointCloud2, f"{OUTPUT_PREFIX}/points", p("publish_cloud").value
        )

        # Lazy outputs (depth_image_proc's behaviour): an output nobody subscribes to is not
        # built. Checked per frame; frames whose output was skipped are counted per output.
        self._outputs = {
            name: pub
            for name, pub in (
                ("image", self._pub_depth),
                ("camera_info", self._pub_info),
                ("status", self._pub_status),
                ("compressed_depth", self._pub_depth_cd),
                ("image_mm", self._pub_depth_mm),
                ("confidence", self._pub_conf),
                ("points", self._pub_cloud),
            )
            if pub is not None
        }
        self._unsubscribed = dict.fromkeys(self._outputs, 0)
        # The cloud's message buffer, reused every frame (rclpy copies it when publishing).
        self._cloud_data = None

        self.diagnostics = DiagnosticsReporter(
            self,
            task_name="depth completion",
            hardware_id=self.get_namespace(),
            period_s=float(p("diagnostics_period").value),
        )
        self._processed = 0
        self._skipped = 0
        self._dropped = DroppedFrames(self.diagnostics)
        self._blind_frames = 0
        self._frames_without_prompt = 0
        self._prompt_errors: dict[str, int] = {}
        self._out_of_range_px = 0
        self._stamps = StampMonitor()
        self._pending: _SyncedFrame | None = None
        # stamp (ns) -> (header, completed depth -- the colour image for an engine without dense
        # output --, intrinsics) of the last frames, for depth_query
        self._history: OrderedDict[int, tuple] = OrderedDict()
        self._history_size = int(p("query_history").value)
        self._history_lock = threading.Lock()
        self.create_service(DepthQuery, "depth_query", self._on_depth_query)

        self.prompts = self._make_prompt_sources()
        self.targets, self.target_outputs = self._make_targets()
        rgb_type = Image if rgb_transport == "raw" else CompressedImage
        depth_type = Image if depth_transport == "raw" else CompressedImage
        inputs = [(rgb_type, transport_topic(self, INPUT_TOPICS[0], rgb_transport))]
        if self._takes_depth:
            inputs.append((depth_type, transport_topic(self, INPUT_TOPICS[1], depth_transport)))
        inputs.append((CameraInfo, INPUT_TOPICS[2]))
        self._sync = SyncedSubscriptions(
            self,
            inputs,
            sensor_data_qos(depth=int(p("qos_depth").value)),
            queue_size=int(p("queue_size").value),
            slop=float(p("slop").value) if sync == "approximate" else None,
            callback=self._on_synced,
        )
        if bool(p("pipeline").value):
            self._publisher = threading.Thread(
                target=self._publish_loop, name="completion_publish", daemon=True
            )
            self._publisher.start()
        self._worker = threading.Thread(target=self._work, name="completion", daemon=True)
        self._worker.start()

    # -- to be provided by subclasses -------------------------------------------------------
    def make_engine(self) -> Engine:
        raise TypeError(f"{type(self).__name__} must implement make_engine()")

    def publish_extras(
        self, header, inputs: FrameInputs, result: CompletionResult | None, reason: str = ""
    ) -> dict[str, object]:
        """Hook: publish what the method gives beyond the common outputs, once per frame;
        returns its diagnostics values. Here: the targets' outputs of an engine that takes
        targets (``reason``: why the engine did not run, for each target's error). A subclass
        with other extras overrides it (and calls it). ``result`` is None for an engine without
        dense output (the engine was not run)."""
        if self.target_outputs is None or result is None:
            return {}
        results = result.targets
        if results is None:  # the engine did not run: every target says why
            results = [
                TargetResult(
                    t.target_id, t.text, error=f"target {t.target_id}: {reason}", error_kind="skip"
                )
                for t in inputs.targets or []
            ]
        shape = (inputs.intrinsics.height, inputs.intrinsics.width)
        for kind, message in self.target_outputs.publish(header, shape, results):
            self._target_error(kind, message)
        return {**self.targets.counters(), **self.target_outputs.counters()}

    # -- targets -----------------------------------------------------------------------------
    def _make_targets(self) -> tuple[TargetSource | None, TargetOutputs | None]:
        if not self.inputs.targets:
            return None, None
        p = self.get_parameter
        max_age = float(p("max_target_age").value)
        if not max_age > 0:
            raise NodeStartupError(f"max_target_age is {max_age}: must be > 0 seconds")
        lifetime = float(p("marker_lifetime").value)
        if lifetime < 0:
            raise NodeStartupError(f"marker_lifetime is {lifetime}: must be >= 0 seconds")
        source = TargetSource(self, max_age)
        self.get_logger().info(f"targets from {source.topic} (max_target_age {max_age:g} s)")
        return source, TargetOutputs(self, lifetime)

    def _target_error(self, kind: str, message: str) -> None:
        """A target dropped or not processed: a throttled ERROR (per kind) on /diagnostics."""
        counters = {**self.targets.counters(), **self.target_outputs.counters()}
        self.diagnostics.error(message, kind=kind, **counters)

    # -- prompt sources ----------------------------------------------------------------------
    def _prompt_sources_parameter(self) -> list[str]:
        try:
            sources = [str(s) for s in self.get_parameter("prompt_sources").value]
        except ParameterUninitializedException:  # declared by type only: not set
            sources = []
        sources = [s for s in sources if s]  # [""]: a YAML way of saying none
        unknown = [s for s in sources if s not in PROMPT_SOURCES]
        if unknown:
            raise NodeStartupError(
                f"prompt_sources {sources}: unknown {unknown}; choose from "
                f"{', '.join(PROMPT_SOURCES)}"
            )
        if len(set(sources)) != len(sources):
            raise NodeStartupError(f"prompt_sources {sources} names a source twice")
        if sources and not self.inputs.prompt:
            raise NodeStartupError(
                f"prompt_sources {sources}: engine {self.engine.model_id} takes no prompt "
                f"(it takes {', '.join(self.inputs.names())})"
            )
        if self.inputs.prompt and not sources and not self.inputs.prompt_optional:
            raise NodeStartupError(
                f"engine {self.engine.model_id} needs a prompt: set prompt_sources to any of "
                f"{', '.join(PROMPT_SOURCES)} (e.g. prompt_sources:=[lidar])"
            )
        return sources

    def _make_prompt_sources(self) -> PromptSources | None:
        if not self.inputs.prompt or not self._prompt_sources:
            return None
        p = self.get_parameter
        max_age = float(p("max_prompt_age").value)
        if not max_age > 0:
            raise NodeStartupError(f"max_prompt_age is {max_age}: must be > 0 seconds")
        transforms = None
        clouds = [s for s in self._prompt_sources if s in CLOUD_SOURCES]
        if clouds:
            transforms = self._static_transforms()
        topics = {s: str(p(f"{s}_topic").value) for s in CLOUD_SOURCES}
        prompts = PromptSources(
            self,
            self._prompt_sources,
            topics,
            transforms,
            max_age,
            qos_depth=int(p("qos_depth").value),
        )
        self.get_logger().info(
            f"prompt from {', '.join(self._prompt_sources)}"
            + (
                f" ({', '.join(prompts.topics.values())}, extrinsics from {transforms.source}, "
                f"max_prompt_age {max_age:g} s)"
                if clouds
                else ""
            )
        )
        return prompts

    def _static_transforms(self) -> StaticTransforms:
        path = str(self.get_parameter("calibration_file").value)
        if path:
            try:
                calibration = load_calibration(path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise NodeStartupError(f"calibration_file {path}: {exc}") from None
            return StaticTransforms.from_calibration(calibration, f"calibration_file {path}")
        try:
            from depth_perception.ros.tf_static import TF_STATIC_TOPIC, TfStaticListener
        except ImportError as exc:  # no tf2_msgs: neither a ROS install nor the bootstrap's
            raise NodeStartupError(
                f"prompt clouds need their extrinsics: /tf_static cannot be read ({exc}); set "
                "calibration_file, or run scripts/bootstrap.sh (builds tf2_msgs)"
            ) from None
        transforms = StaticTransforms(source=TF_STATIC_TOPIC)
        self._tf_listener = TfStaticListener(
            self, transforms, lambda message: self._prompt_error("tf_static", message)
        )
        return transforms

    def _prompt_error(self, kind: str, message: str) -> None:
        self._prompt_errors[kind] = self._prompt_errors.get(kind, 0) + 1
        self.diagnostics.error(
            message,
            kind=kind,
            prompt_errors=sum(self._prompt_errors.values()),
            **{f"errors_{k}": n for k, n in self._prompt_errors.items()},
        )

    # -- input side --------------------------------------------------------------------------
    def _on_synced(self, *msgs: Image | CompressedImage | CameraInfo) -> None:
        rgb, depth, info = msgs if self._takes_depth else (msgs[0], None, msgs[1])
        frame = _SyncedFrame(rgb, depth, info, time.monotonic())
        with self._wake:
            if self._pending is not None:
                self._skipped += 1  # the worker never got to it: a newer frame replaces it
            self._pending = frame
            self._wake.notify()

    def _work(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._pending is not None or self._stopping)
                if self._stopping:
                    return
                frame, self._pending = self._pending, None
            ran = self._safely(self._run_frame, frame)
            if ran is None:
                continue
            if self._publisher is None:
                self._safely(self._publish_frame, ran)
                continue
            with self._handoff:  # wait only while the publisher has the frame before
                self._handoff.wait_for(lambda: self._ran is None or self._stopping)
                if self._stopping:
                    return
                self._ran = ran
                self._handoff.notify_all()

    def _publish_loop(self) -> None:
        while True:
            with self._handoff:
                self._handoff.wait_for(lambda: self._ran is not None or self._stopping)
                if self._stopping:
                    return
                ran = self._ran
            self._safely(self._publish_frame, ran)
            with self._handoff:
                self._ran = None
                self._handoff.notify_all()

    def _safely(self, stage, item):
        """``stage(item)``, or None after reporting what went wrong (the node keeps going)."""
        try:
            return stage(item)
        except (ValueError, CvBridgeError) as exc:  # malformed or unsupported input
            self._dropped.report(getattr(exc, "kind", "input"), f"bad input frame dropped: {exc}")
        except Exception as exc:  # keep serving the next frame whatever the engine did
            self.get_logger().error(traceback.format_exc(), throttle_duration_sec=10.0)
            self._dropped.report("engine", f"processing failed: {type(exc).__name__}: {exc}")
        return None

    # -- processing --------------------------------------------------------------------------
    def _subscribed(self) -> set[str]:
        """The enabled outputs with a subscriber now; the others are counted as skipped."""
        wanted = set()
        for name, pub in self._outputs.items():
            if pub.get_subscription_count() > 0:
                wanted.add(name)
            else:
                self._unsubscribed[name] += 1
        return wanted

    def _decode(
        self, frame: _SyncedFrame, colour: bool = True
    ) -> tuple[np.ndarray | None, np.ndarray | None, Intrinsics, int]:
        """(rgb, depth in metres or None, intrinsics of the output image, out-of-range pixel
        count). The output image is the depth image's when there is one, else the colour's.
        ``colour`` False (the engine takes no colour, no cloud is wanted) leaves the colour
        image undecoded (rgb None) when there is a depth image to size the output."""
        if frame.depth is not None:
            check_image_size(frame.depth, "depth", self._max_pixels)
        check_image_size(frame.rgb, "colour", self._max_pixels)
        depth = None
        if frame.depth is not None:
            try:
                depth = depth_image_to_metres(frame.depth)
            except (ValueError, CvBridgeError) as exc:
                raise FrameRejected("depth", str(exc)) from None
        rgb = None
        if colour or depth is None:
            try:
                rgb = image_to_rgb(frame.rgb)
            except (ValueError, CvBridgeError) as exc:
                raise FrameRejected("colour", str(exc)) from None
        try:
            intrinsics = camera_info_to_intrinsics(frame.info)
        except ValueError as exc:
            raise FrameRejected("camera_info", str(exc)) from None
        height, width = depth.shape if depth is not None else rgb.shape[:2]
        if intrinsics.size != (width, height):
            # camera_info of another resolution of the same (registered) camera
            intrinsics = intrinsics.scaled(width, height)
        if rgb is not None and rgb.shape[:2] != (height, width):
            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        out_of_range = self._limit_range(depth) if depth is not None else 0
        return rgb, depth, intrinsics, out_of_range

    def _limit_range(self, depth: np.ndarray) -> int:
        """Invalidate (NaN) depth outside [min_depth, max_depth] in place; how many pixels."""
        with np.errstate(invalid="ignore"):
            outside = (depth < self._min_depth) | (depth > self._max_depth)
        count = int(np.count_nonzero(outside))
        if count:
            depth[outside] = np.nan
        return count

    def _build_prompt(
        self, header, intrinsics: Intrinsics, depth: np.ndarray | None
    ) -> PromptBuild:
        camera_frame = self._camera_frame or intrinsics.frame_id or str(header.frame_id)
        if not camera_frame and self.prompts.cloud_sources:
            build = PromptBuild(prompt=None)
            build.errors.append(
                (
                    "prompt_transform",
                    "the camera_info has no frame_id: set camera_frame to the camera's optical "
                    "frame in the extrinsics",
                )
            )
            return build
        build = self.prompts.build(stamp_to_ns(header.stamp), intrinsics, camera_frame, depth)
        if build.prompt is not None:
            self._limit_range(build.prompt)
            if not np.isfinite(build.prompt).any():
                build.prompt = None
        for kind, message in build.errors:
            self._prompt_error(kind, message)
        return build

    def _run_frame(self, frame: _SyncedFrame) -> _Ran:
        """The first stage: decode, prompt, targets, the engine."""
        wanted = self._subscribed()
        rgb, depth, intrinsics, out_of_range = self._decode(
            frame, colour=self.inputs.colour or "points" in wanted
        )
        # Outputs describe the registered depth image, or the colour image without one.
        header = (frame.depth if frame.depth is not None else frame.rgb).header
        warnings: list[tuple[str, str]] = []  # (kind, message): logs are throttled per kind
        stamp_problem = self._stamps.check(
            stamp_to_ns(header.stamp), self.get_clock().now().nanoseconds
        )
        if stamp_problem:
            warnings.append(("stamp", stamp_problem))
        if out_of_range:
            self._out_of_range_px += out_of_range
            warnings.append(
                (
                    "range",
                    f"{out_of_range} input pixels outside [{self._min_depth}, {self._max_depth}] m"
                    " treated as invalid",
                )
            )

        inputs = FrameInputs(
            intrinsics=intrinsics,
            rgb=rgb if self.inputs.colour else None,
            depth=depth if self.inputs.depth else None,
            stamp_ns=stamp_to_ns(header.stamp),
        )
        prompt_values: dict[str, object] = {}
        run = True
        in_ratio = 0.0  # of the metric input: the sensor depth, else the prompt (none: 0)
        if self.inputs.depth:
            in_ratio = valid_ratio(depth)
            if in_ratio == 0.0 or in_ratio < self._min_valid_ratio:
                self._blind_frames += 1
            if in_ratio < self._min_valid_ratio:
                # No metric anchor: whatever a model says here is a guess of scale. Publish
                # "unknown".
                warnings.append(
                    (
                        "blind",
                        f"input depth valid ratio {in_ratio:.4f} < min_input_valid_ratio "
                        f"{self._min_valid_ratio}: published no depth",
                    )
                )
                run = False
            elif in_ratio == 0.0:  # the user asked for prompt-free output (min ratio 0)
                warnings.append(("blind", "no valid input depth: the output's scale is a guess"))
        if self.prompts is not None:  # the engine takes a prompt, and sources are configured
            build = self._build_prompt(header, intrinsics, depth)
            inputs.prompt = build.prompt
            prompt_values = build.values()
            if not self.inputs.depth:
                in_ratio = valid_ratio(build.prompt) if build.prompt is not None else 0.0
            if build.prompt is None:
                self._frames_without_prompt += 1
                reasons = "; ".join(m for _, m in build.problems + build.errors)
                reasons = reasons or "no source has a valid point in the image"
                if self.inputs.prompt_optional:
                    warnings.append(("no_prompt", f"no prompt ({reasons}): ran without one"))
                else:
                    warnings.append(("no_prompt", f"no prompt ({reasons}): published no depth"))
                    run = False
            else:
                warnings.extend(build.problems)
            inputs.prompt_report = prompt_values
        if self.targets is not None:
            take = self.targets.take(stamp_to_ns(frame.rgb.header.stamp), frame.rgb.header.frame_id)
            inputs.targets = take.targets
            for kind, message in take.errors:
                self._target_error(kind, message)
            if take.newer:
                warnings.append(
                    ("target_newer", f"{take.newer} target(s) drawn on a later image skipped")
                )

        result = None
        if self._dense:  # a pixel-query engine is asked in publish_extras, not here
            if run:
                result = self.engine.run(inputs)
                self._limit_range(result.depth)
            else:
                result = no_result((intrinsics.height, intrinsics.width))
        return _Ran(
            frame,
            header,
            wanted,
            rgb,
            intrinsics,
            inputs,
            result,
            warnings,
            prompt_values,
            in_ratio,
        )

    def _publish_frame(self, ran: _Ran) -> None:
        """The second stage: the outputs, the history, /diagnostics."""
        header, wanted, intrinsics, inputs = ran.header, ran.wanted, ran.intrinsics, ran.inputs
        warnings, prompt_values, result = ran.warnings, ran.prompt_values, ran.result
        if result is None:  # pixel queries only: the subclass's outputs, the frame kept
            extra_values = self.publish_extras(header, inputs, None)
            self._processed += 1
            latency_ms = (time.monotonic() - ran.frame.received) * 1e3
            self._finish_frame(
                header, inputs.rgb, intrinsics, warnings, extra_values, latency_ms, prompt_values
            )
            return

        if "image" in wanted:
            self._pub_depth.publish(metres_to_depth_image(result.depth, header, "32FC1"))
        if "compressed_depth" in wanted:
            self._pub_depth_cd.publish(
                metres_to_compressed_depth(
                    result.depth,
                    header,
                    "32FC1",
                    depth_max=self._cdepth_max,
                    depth_quantization=self._cdepth_quant,
                )
            )
        if "camera_info" in wanted:
            self._pub_info.publish(intrinsics_to_camera_info(intrinsics, header))
        reason = "; ".join(text for _, text in warnings) or "the engine did not run"
        extra_values = self.publish_extras(header, inputs, result, reason)
        if "image_mm" in wanted:
            self._pub_depth_mm.publish(metres_to_depth_image(result.depth, header, "16UC1"))
        if "confidence" in wanted and result.confidence is not None:
            conf = np.ascontiguousarray(result.confidence, dtype=np.float32)
            self._pub_conf.publish(metres_to_depth_image(conf, header, "32FC1"))
        if "points" in wanted:
            cloud = depth_to_pointcloud2(
                result.depth, intrinsics, header, rgb=ran.rgb, data=self._cloud_data
            )
            self._cloud_data = cloud.data
            self._pub_cloud.publish(cloud)

        self._processed += 1
        latency_ms = (time.monotonic() - ran.frame.received) * 1e3
        out_ratio = valid_ratio(result.depth)
        stats = self._sync.stats()
        if "status" in wanted:
            status = CompletionStatus()
            status.header = header
            status.model_id = self.engine.model_id
            status.input_valid_ratio = float(ran.in_ratio)
            status.output_valid_ratio = float(out_ratio)
            status.latency_ms = float(latency_ms)
            status.frames_processed = self._processed
            status.frames_skipped = self._skipped
            status.messages_unmatched = stats.total_unmatched
            self._pub_status.publish(status)
        ratios = dict(
            input_valid_ratio=f"{ran.in_ratio:.3f}", output_valid_ratio=f"{out_ratio:.3f}"
        )
        self._finish_frame(
            header,
            result.depth,
            intrinsics,
            warnings,
            {**ratios, **extra_values},
            latency_ms,
            prompt_values,
        )

    def _finish_frame(
        self,
        header,
        kept: np.ndarray,
        intrinsics: Intrinsics,
        warnings: list[tuple[str, str]],
        extra_values: dict[str, object],
        latency_ms: float,
        prompt_values: dict[str, object],
    ) -> None:
        """Keep the processed frame for depth_query and report it on /diagnostics."""
        stats = self._sync.stats()
        with self._history_lock:
            stamp_ns = stamp_to_ns(header.stamp)
            self._history[stamp_ns] = (header, kept, intrinsics)
            while len(self._history) > self._history_size:
                self._history.popitem(last=False)
        values = dict(
            model_id=self.engine.model_id,
            frames_processed=self._processed,
            frames_skipped=self._skipped,
            messages_unmatched=stats.total_unmatched,
            input_errors=self._dropped.total,
            blind_frames=self._blind_frames,
            out_of_range_pixels=self._out_of_range_px,
            **self._stamps.counters(),
            latency_ms=f"{latency_ms:.1f}",
            **{f"outputs_skipped_{name}": n for name, n in self._unsubscribed.items()},
        )
        values.update(extra_values)
        if self.prompts is not None:
            values.update(
                frames_without_prompt=self._frames_without_prompt,
                prompt_errors=sum(self._prompt_errors.values()),
                **prompt_values,
            )
        if warnings:
            message = "; ".join(text for _, text in warnings)
            self.diagnostics.warn(message, kind="+".join(k for k, _ in warnings), **values)
        else:
            self.diagnostics.update(
                OK, "completing depth" if self._dense else "answering pixel queries", **values
            )

    # -- depth_query service -------------------------------------------------------------------
    def history_entry(self, stamp) -> tuple[tuple | None, str]:
        """(the kept (header, depth or colour, intrinsics) of the frame at ``stamp`` -- zero: the
        newest --, "") or (None, why there is none)."""
        stamp_ns = stamp_to_ns(stamp)
        with self._history_lock:
            if not self._history:
                entry = None
            elif stamp_ns == 0:
                entry = next(reversed(self._history.values()))
            else:
                entry = self._history.get(stamp_ns)
            stamps = list(self._history)
        if entry is not None:
            return entry, ""
        return None, (
            f"no {'completed ' if self._dense else ''}frame with stamp {stamp_ns} ns; have "
            f"{len(stamps)} " + (f"from {stamps[0]} to {stamps[-1]} ns" if stamps else "(none yet)")
        )

    def _on_depth_query(
        self, request: DepthQuery.Request, response: DepthQuery.Response
    ) -> DepthQuery.Response:
        entry, why = self.history_entry(request.stamp)
        if entry is None:
            response.success = False
            response.message = why
            return response
        header, depth, intrinsics = entry
        intrinsics: Intrinsics
        uv = np.array([[p.u, p.v] for p in request.pixels], dtype=np.float64).reshape(-1, 2)
        z = intrinsics.sample_depth(depth, uv)
        xyz = intrinsics.backproject_pixels(uv, z)
        response.header = header
        response.depth = z.tolist()
        response.points = [Point(x=float(x), y=float(y), z=float(zz)) for x, y, zz in xyz]
        response.success = True
        response.message = f"{int(np.isfinite(z).sum())} of {len(z)} pixels have depth"
        if request.question:
            # Language questions need a vision-language model (the DepthLM node).
            response.success = False
            response.message += f"; {self.engine.model_id} does not answer questions"
        return response

    def destroy_node(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        with self._handoff:
            self._handoff.notify_all()
        for thread in (self._worker, self._publisher):
            if thread is not None:
                thread.join(timeout=5.0)
        super().destroy_node()

"""A node's prompt sources: LiDAR / radar clouds and the sensor's own depth -> one prompt.

Point clouds are not synchronised with the camera (a 10 Hz LiDAR beside a 30 Hz camera is no
sync partner): each source keeps its newest scan, and a camera frame uses it when its stamp is
within ``max_prompt_age`` seconds of the frame's (either side). The camera stream never waits
for a scan. Building the prompt for a frame (:meth:`PromptSources.build`):

1. per cloud source, its newest scan: decoded (any PointField layout with x, y, z), moved into
   the camera's optical frame with ``camera_T_sensor`` from the static-transform buffer
   (calibration file or ``/tf_static``), projected with a z-buffer
   (:func:`depth_perception.core.prompts.cloud_prompt`); points behind the camera, outside the
   image or non-finite are counted;
2. ``sensor_depth``: the RGB-D sensor's valid pixels;
3. merged, the nearest depth winning each pixel.

What went wrong with a source (no scan yet, a stale scan, an empty cloud, every point NaN, no
x/y/z field, no frame_id, no transform to the camera) comes back as a problem of that source;
the node reports it (a throttled error on /diagnostics) and still uses the other sources.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import PointCloud2

from depth_perception.core.camera import Intrinsics
from depth_perception.core.prompts import (
    CLOUD_SOURCES,
    ProjectionCounts,
    cloud_prompt,
    merge_prompts,
    sensor_depth_prompt,
)
from depth_perception.io.calibration import StaticTransforms
from depth_perception.ros.conversions import pointcloud2_to_array, stamp_to_ns
from depth_perception.ros.qos import sensor_data_qos


@dataclass
class _Scan:
    msg: PointCloud2
    stamp_ns: int
    received: float  # time.monotonic()
    points: np.ndarray | None = None  # decoded on first use, shared by the frames using it


@dataclass
class PromptBuild:
    """The prompt of one frame and what became of each source."""

    prompt: np.ndarray | None  # (H, W) float32 metres, NaN = none; None if no source gave one
    counts: dict[str, ProjectionCounts] = field(default_factory=dict)  # cloud source -> counts
    ages_s: dict[str, float] = field(default_factory=dict)  # cloud source -> frame - scan stamp
    sensor_pixels: int | None = None  # pixels the sensor depth gave (when a source)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (kind, message)
    errors: list[tuple[str, str]] = field(default_factory=list)  # malformed input (kind, msg)

    @property
    def pixels(self) -> int:
        return 0 if self.prompt is None else int(np.count_nonzero(np.isfinite(self.prompt)))

    def values(self) -> dict[str, object]:
        """Diagnostics key/values of this frame's prompt."""
        out: dict[str, object] = {"prompt_pixels": self.pixels}
        for source, c in self.counts.items():
            out[f"{source}_points"] = c.points
            out[f"{source}_points_used"] = c.in_image
            out[f"{source}_discarded_behind"] = c.behind
            out[f"{source}_discarded_outside"] = c.outside
            out[f"{source}_discarded_non_finite"] = c.non_finite
        for source, age in self.ages_s.items():
            out[f"{source}_age_ms"] = f"{age * 1e3:.1f}"
        if self.sensor_pixels is not None:
            out["sensor_depth_pixels"] = self.sensor_pixels
        return out


class PromptSources:
    """Subscribes to the configured cloud sources and builds each frame's prompt."""

    def __init__(
        self,
        node: Node,
        sources: list[str],
        topics: dict[str, str],
        transforms: StaticTransforms | None,
        max_age_s: float,
        qos_depth: int = 5,
    ) -> None:
        self.sources = list(sources)
        self.transforms = transforms
        self.max_age_s = float(max_age_s)
        self._lock = threading.Lock()
        self._scans: dict[str, _Scan | None] = {}
        self.topics: dict[str, str] = {}
        self.received: dict[str, int] = {}
        for source in self.sources:
            if source not in CLOUD_SOURCES:
                continue
            self._scans[source] = None
            self.received[source] = 0
            topic = topics[source]
            self.topics[source] = node.resolve_topic_name(topic)
            node.create_subscription(
                PointCloud2,
                topic,
                lambda msg, source=source: self._on_cloud(source, msg),
                sensor_data_qos(qos_depth),
            )

    @property
    def cloud_sources(self) -> list[str]:
        return [s for s in self.sources if s in CLOUD_SOURCES]

    def _on_cloud(self, source: str, msg: PointCloud2) -> None:
        scan = _Scan(msg, stamp_to_ns(msg.header.stamp), time.monotonic())
        with self._lock:
            self._scans[source] = scan  # the newest replaces the older one, decoded or not
            self.received[source] += 1

    def build(
        self,
        stamp_ns: int,
        intrinsics: Intrinsics,
        camera_frame: str,
        sensor_depth: np.ndarray | None,
    ) -> PromptBuild:
        out = PromptBuild(prompt=None)
        parts: list[np.ndarray] = []
        for source in self.cloud_sources:
            with self._lock:
                scan = self._scans[source]
            if scan is None:
                out.problems.append(
                    ("prompt_missing", f"{source}: no scan received on {self.topics[source]} yet")
                )
                continue
            age = (stamp_ns - scan.stamp_ns) * 1e-9
            if abs(age) > self.max_age_s:
                when = "older" if age > 0 else "newer"
                out.problems.append(
                    (
                        "prompt_stale",
                        f"{source}: newest scan is {abs(age):.3f} s {when} than the frame "
                        f"(max_prompt_age {self.max_age_s:g} s)",
                    )
                )
                continue
            try:
                part, counts = self._project(source, scan, intrinsics, camera_frame)
            except _SourceError as exc:
                out.errors.append((exc.kind, f"{source} prompt ({self.topics[source]}): {exc}"))
                continue
            out.ages_s[source] = age
            out.counts[source] = counts
            parts.append(part)
        if "sensor_depth" in self.sources and sensor_depth is not None:
            part = sensor_depth_prompt(sensor_depth)
            out.sensor_pixels = int(np.count_nonzero(np.isfinite(part)))
            parts.append(part)
        if parts:
            prompt = merge_prompts(parts, (intrinsics.height, intrinsics.width))
            out.prompt = prompt if np.isfinite(prompt).any() else None
        return out

    def _project(
        self, source: str, scan: _Scan, intrinsics: Intrinsics, camera_frame: str
    ) -> tuple[np.ndarray, ProjectionCounts]:
        frame_id = str(scan.msg.header.frame_id)
        if not frame_id:
            raise _SourceError("prompt_frame", "the cloud has no header.frame_id")
        if scan.points is None:
            try:
                cloud = pointcloud2_to_array(scan.msg).reshape(-1)
            except ValueError as exc:
                raise _SourceError("prompt_cloud", f"cannot decode the cloud: {exc}") from None
            names = cloud.dtype.names or ()
            missing = [c for c in "xyz" if c not in names]
            if missing:
                raise _SourceError(
                    "prompt_cloud",
                    f"the cloud has no {', '.join(missing)} field(s); its fields are {list(names)}",
                )
            scan.points = cloud
        cloud = scan.points
        if cloud.shape[0] == 0:
            raise _SourceError("prompt_empty", "the cloud is empty (0 points)")
        if self.transforms is None:  # not configured: the node refuses to start before this
            raise _SourceError("prompt_transform", "no transform source")
        try:
            camera_T_sensor = self.transforms.lookup(camera_frame, frame_id)
        except KeyError as exc:
            raise _SourceError("prompt_transform", str(exc.args[0])) from None
        try:
            prompt, counts = cloud_prompt(cloud, camera_T_sensor, intrinsics)
        except ValueError as exc:
            raise _SourceError("prompt_cloud", str(exc)) from None
        if counts.non_finite == counts.points:
            raise _SourceError(
                "prompt_non_finite", f"all {counts.points} points have NaN / inf coordinates"
            )
        return prompt, counts


class _SourceError(ValueError):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

"""depth_query_node: ask a DepthLM vision-language model how far pixels of the camera image are.

colour + camera_info (SensorData QoS, synchronised by the node base,
depth_perception.ros.completion_node) -> the last ``query_history`` colour frames (with their
intrinsics and header) are kept; no depth is computed per frame (DepthLM answers one marked
pixel per generation, depth_perception.engines.depthlm), so the node publishes no
``depth_completed/*`` topics.

  srv: depth_query (depth_perception_msgs/DepthQuery): pixels (u, v) of a kept frame (stamp
       0: the newest) -> per pixel ``depth`` (metres along the optical axis), ``points`` (the
       3-D point in the camera's optical frame, header.frame_id: the answered range x the unit
       ray through the pixel), ``answers`` (the model's raw text) and ``answer_metres`` (the
       distance parsed from it: the range, or z with ``kind: z``). With a ``question``, that
       question is asked about each requested pixel as the marked point: ``answers`` are its
       texts and ``answer_metres`` the number in their <answer> tags (NaN without one), while
       ``depth`` / ``points`` still come from the distance question. A pixel outside the image,
       too close to its border for the marker, or whose answer does not parse is NaN, and the
       message says which pixel and why. An unknown stamp, no frame yet or no pixel at all:
       ``success`` false with the reason.
  out: depthlm/points (sensor_msgs/PointCloud2, optional sparse-cloud mode): every
       ``sparse_cloud.every_n_frames``-th frame, a grid of about ``sparse_cloud.pixels`` pixels
       is queried and the answered points are published (unorganized, x y z float32, the
       colour image's header: the camera's optical frame); only while someone subscribes.
       /diagnostics: frames, queries, answers, failures, clouds.

Parameters (config/depth_query.yaml): ``checkpoint`` (a DepthLM model directory: Hugging Face
files + depthlm.json with f_uni; empty: the shipped ``models/depthlm_small``), ``device``,
``precision``, ``max_new_tokens``, ``batch_size``, ``kind``, ``sparse_cloud.*``, plus those of
every node (sync, queue_size, slop, qos_depth, query_history, diagnostics_period,
max_input_pixels, rgb_transport).
"""

from __future__ import annotations

import math
import threading

import numpy as np
from depth_perception_msgs.srv import DepthQuery
from geometry_msgs.msg import Point
from sensor_msgs.msg import PointCloud2

from depth_perception.core.camera import Intrinsics
from depth_perception.core.depthlm import parse_answer
from depth_perception.engines.base import FrameInputs
from depth_perception.engines.depthlm import (
    DepthLMEngine,
    DepthLMEngineConfig,
    PixelQueryResult,
    resolve_depthlm_checkpoint,
)
from depth_perception.ros.completion_node import DepthCompletionNode, NodeStartupError
from depth_perception.ros.conversions import array_to_pointcloud2
from depth_perception.ros.qos import reliable_qos
from depth_perception.ros.spin import spin_node

CLOUD_TOPIC = "depthlm/points"
CLOUD_DTYPE = np.dtype([("x", np.float32), ("y", np.float32), ("z", np.float32)])
#: Why a pixel has no answer, by the engine's status.
REASONS = {
    "too_close_to_border": "too close to the image border for the marker",
    "failed": "the answer did not parse",
}


def query_grid(width: int, height: int, pixels: int) -> np.ndarray:
    """About ``pixels`` pixel centres (N, 2) (u, v) on a regular grid over a width x height
    image: cols x rows cells of the image's aspect, one pixel at each cell's centre."""
    if pixels < 1:
        raise ValueError(f"the grid needs >= 1 pixel, got {pixels}")
    cols = max(1, round(math.sqrt(pixels * width / height)))
    rows = max(1, round(pixels / cols))
    u = np.floor((np.arange(cols) + 0.5) * width / cols)
    v = np.floor((np.arange(rows) + 0.5) * height / rows)
    uu, vv = np.meshgrid(u, v)
    return np.stack([uu.ravel(), vv.ravel()], axis=1)


def points_cloud(result: PixelQueryResult, header) -> PointCloud2:
    """The answered points of ``result`` (status ok) as an unorganized x y z float32 cloud."""
    ok = result.ok & np.isfinite(result.points).all(axis=1)
    cloud = np.empty(int(ok.sum()), dtype=CLOUD_DTYPE)
    for i, c in enumerate("xyz"):
        cloud[c] = result.points[ok, i]
    return array_to_pointcloud2(cloud, header, is_dense=True)


class DepthQueryNode(DepthCompletionNode):
    def __init__(self, **kwargs) -> None:
        self._engine_lock = threading.Lock()  # the service and the cloud share the model
        self._counts = dict.fromkeys(
            ("queries", "query_errors", "pixels_asked", "pixels_answered", "clouds_published"), 0
        )
        self._frames_seen = 0
        super().__init__("depth_query_node", **kwargs)
        p = self.get_parameter
        self._cloud_every = int(p("sparse_cloud.every_n_frames").value)
        self._cloud_pixels = int(p("sparse_cloud.pixels").value)
        if self._cloud_every < 1 or self._cloud_pixels < 1:
            raise NodeStartupError(
                f"sparse_cloud.every_n_frames {self._cloud_every} / sparse_cloud.pixels "
                f"{self._cloud_pixels}: both must be >= 1"
            )
        self._pub_sparse = (
            self.create_publisher(PointCloud2, CLOUD_TOPIC, reliable_qos(depth=5))
            if p("sparse_cloud.enabled").value
            else None
        )
        self._clouds_unsubscribed = 0

    def make_engine(self) -> DepthLMEngine:
        declare = self.declare_parameter
        checkpoint = str(declare("checkpoint", "").value)
        max_new_tokens = int(declare("max_new_tokens", 0).value)
        kind = str(declare("kind", "range").value)
        declare("sparse_cloud.enabled", False)
        declare("sparse_cloud.every_n_frames", 10)
        declare("sparse_cloud.pixels", 64)
        try:
            checkpoint = resolve_depthlm_checkpoint(checkpoint)
        except FileNotFoundError as exc:
            raise NodeStartupError(str(exc)) from None
        try:
            cfg = DepthLMEngineConfig(
                checkpoint=checkpoint,
                device=str(declare("device", "auto").value),
                precision=str(declare("precision", "auto").value),
                max_new_tokens=max_new_tokens if max_new_tokens > 0 else None,
                batch_size=int(declare("batch_size", 16).value),
                kind=kind,
            )
        except ValueError as exc:
            raise NodeStartupError(str(exc)) from None
        engine = DepthLMEngine(cfg)
        self.get_logger().info(
            f"DepthLM {engine.lm.architecture} from {checkpoint} on {engine.device} "
            f"(f_uni {engine.f_uni:g}, asking for the {kind})"
        )
        return engine

    # -- sparse cloud (per frame, the worker thread) ---------------------------------------------
    def publish_extras(self, header, inputs: FrameInputs, result, reason: str = ""):
        values = super().publish_extras(header, inputs, result, reason)
        self._frames_seen += 1
        if self._pub_sparse is not None and (self._frames_seen - 1) % self._cloud_every == 0:
            if self._pub_sparse.get_subscription_count() > 0:
                k = inputs.intrinsics
                grid = query_grid(k.width, k.height, self._cloud_pixels)
                with self._engine_lock:
                    res = self.engine.query(inputs.rgb, k, grid)
                self._pub_sparse.publish(points_cloud(res, header))
                self._counts["clouds_published"] += 1
            else:
                self._clouds_unsubscribed += 1
        return {
            **values,
            **self._counts,
            "outputs_skipped_sparse_cloud": self._clouds_unsubscribed,
        }

    # -- depth_query (the executor thread) -------------------------------------------------------
    def _on_depth_query(
        self, request: DepthQuery.Request, response: DepthQuery.Response
    ) -> DepthQuery.Response:
        self._counts["queries"] += 1
        try:
            return self._answer(request, response)
        except Exception as exc:  # keep serving: the caller gets the reason
            self._counts["query_errors"] += 1
            self.get_logger().error(f"depth_query failed: {type(exc).__name__}: {exc}")
            response.success = False
            response.message = f"depth_query failed: {type(exc).__name__}: {exc}"
            return response

    def _answer(
        self, request: DepthQuery.Request, response: DepthQuery.Response
    ) -> DepthQuery.Response:
        entry, why = self.history_entry(request.stamp)
        if entry is None:
            self._counts["query_errors"] += 1
            response.success, response.message = False, why
            return response
        if not request.pixels:
            self._counts["query_errors"] += 1
            response.success, response.message = False, "no pixels given"
            return response
        header, rgb, intrinsics = entry
        intrinsics: Intrinsics
        uv = np.array([[p.u, p.v] for p in request.pixels], dtype=np.float64).reshape(-1, 2)
        n = len(uv)
        inside = (
            np.isfinite(uv).all(axis=1)
            & (uv[:, 0] >= 0)
            & (uv[:, 0] <= intrinsics.width - 1)
            & (uv[:, 1] >= 0)
            & (uv[:, 1] <= intrinsics.height - 1)
        )
        depth = np.full(n, np.nan, np.float32)
        points = np.full((n, 3), np.nan, np.float32)
        metres = np.full(n, np.nan, np.float32)
        texts = [""] * n
        reasons: dict[int, str] = {
            i: f"outside the {intrinsics.width}x{intrinsics.height} image"
            for i in np.flatnonzero(~inside)
        }
        idx = np.flatnonzero(inside)
        question = request.question.strip()
        if len(idx):
            with self._engine_lock:
                res = self.engine.query(rgb, intrinsics, uv[idx])
                free = (
                    [self.engine.ask(rgb, intrinsics, uv[i], question) for i in idx]
                    if question
                    else []
                )
            depth[idx] = res.z_m
            points[idx] = res.points
            answered = res.range_m if res.kind == "range" else res.z_m
            for j, i in enumerate(idx):
                if res.status[j] != "ok":
                    reason = REASONS.get(res.status[j], res.status[j])
                    if res.status[j] == "failed":
                        reason += f" ({parse_answer(res.text[j] or '').failure})"
                    reasons[int(i)] = reason
                if question:
                    texts[i] = free[j].text or ""
                    parsed = parse_answer(free[j].text or "")
                    metres[i] = parsed.value if parsed.ok else np.nan
                else:
                    texts[i] = res.text[j] or ""
                    metres[i] = answered[j]
        answered_n = int(np.isfinite(depth).sum())
        self._counts["pixels_asked"] += n
        self._counts["pixels_answered"] += answered_n
        response.header = header
        response.depth = depth.tolist()
        response.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in points]
        response.answers = texts
        response.answer_metres = metres.tolist()
        response.success = True
        message = f"{answered_n} of {n} pixels answered"
        if question:
            message += f"; the question asked about each of the {len(idx)} pixels in the image"
        if reasons:
            message += "; " + "; ".join(
                f"pixel {i} ({uv[i, 0]:g}, {uv[i, 1]:g}): {reasons[i]}" for i in sorted(reasons)
            )
        response.message = message
        return response


def main(args: list[str] | None = None) -> None:
    spin_node(DepthQueryNode, args)


if __name__ == "__main__":
    main()

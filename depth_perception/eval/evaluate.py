"""Score a pipeline on a stream of frames: offline (engine in-process) or over DDS (real node).

Both modes feed the same frames and score with the same metrics, so a report says how the node a
user launches performs, and the offline mode is there for speed and for training-time checks.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from depth_perception.core.metrics import (
    aggregate_targets,
    boundary_f1_avg,
    coverage,
    depth_metrics,
    hide_blocks,
    region_metrics,
    valid_depth,
)
from depth_perception.core.prompts import points_to_sparse_depth, transform_points
from depth_perception.eval.pipelines import (
    MissingInputError,
    Pipeline,
    get_pipeline,
    missing_inputs,
)
from depth_perception.eval.report import FrameResult, ReportWriter, Summary
from depth_perception.io.calibration import Calibration
from depth_perception.io.frames import RGBDFrame

if TYPE_CHECKING:  # the recording reader imports rclpy: only when a bag is read
    from depth_perception.io.recording import ReadOptions

# The columns a completion report leads with (summary.json has every metric).
HEADLINE_METRICS = (
    "abs_rel",
    "rmse",
    "mae",
    "delta1",
    "holes.abs_rel",
    "holes.rmse",
    "boundary_f1",
    "coverage",
)
# Hide-and-seek scores only the hidden blocks, which are all holes of the input: holes.* would
# repeat the overall metrics, and the blocks' edges are no object boundaries (boundary F1).
HIDE_AND_SEEK_METRICS = tuple(
    m for m in HEADLINE_METRICS if not m.startswith("holes.") and m != "boundary_f1"
)


@dataclass
class EvalConfig:
    pipeline: str
    mode: str = "dds"  # "dds": launch the node and replay over DDS; "offline": call the engine
    rate: float | None = None  # dds only: None = lockstep, r = publish at r x the recorded rate
    max_frames: int | None = None
    figure_every: int = 10
    timeout_s: float = 60.0  # dds: per frame (lockstep) or for the tail (timed)
    namespace: str = "/camera"
    checkpoint: str | None = None  # learned pipelines: the model to load instead of the default


def completion_metrics(
    frame: RGBDFrame, pred: np.ndarray, targets_out: list | None = None
) -> dict[str, float]:
    """Scores of one completed frame against its ground truth.

    ``holes.*`` are scored only where the sensor had no depth but the ground truth has: the
    pixels a completion method actually had to invent. ``target.*`` are FocusDepth region
    metrics (median over this frame's targets); the per-target regions are appended to
    ``targets_out`` so a run can aggregate over all its targets.
    """
    gt = frame.gt_depth
    out: dict[str, float] = {"coverage": coverage(pred)}
    if gt is None:
        return out
    everywhere = depth_metrics(pred, gt)
    holes = depth_metrics(pred, gt, mask=~valid_depth(frame.depth))
    for name in ("abs_rel", "rmse", "mae", "delta1", "delta2", "delta3"):
        out[name] = getattr(everywhere, name)
        out[f"holes.{name}"] = getattr(holes, name)
    out["holes.fraction"] = holes.n_valid / max(everywhere.n_valid, 1)
    out["boundary_f1"] = boundary_f1_avg(pred, gt) if np.isfinite(pred).any() else math.nan
    per_target = target_regions(frame, pred)
    if per_target:
        agg = aggregate_targets(per_target)
        for region in ("foreground", "boundary"):
            for name in ("abs_rel", "rmse", "delta1"):
                out[f"target.{region}.{name}"] = agg[region][name]["median"]
        if targets_out is not None:
            targets_out.extend(per_target)
    return out


def target_regions(frame: RGBDFrame, pred: np.ndarray, r: int = 10) -> list[dict]:
    """FocusDepth regions (foreground / boundary band / global) of each target in the frame.

    Needs the ground-truth instance map and the target list (what simulated bags carry); a
    target's instance id is its ``target_id``.
    """
    targets = frame.extra.get("targets") or []
    if frame.instance is None or frame.gt_depth is None:
        return []
    masks = (frame.instance == int(t.target_id) for t in targets)
    return [region_metrics(pred, frame.gt_depth, m, r=r) for m in masks if m.any()]


def with_lidar_prompt(
    frames: Iterable[RGBDFrame], calibration: Calibration | None = None
) -> Iterator[RGBDFrame]:
    """Replace each frame's depth input with its LiDAR scan projected into the colour camera.

    The sparse metric prompt (z-buffered, NaN elsewhere) is what prompt-based methods densify.
    The LiDAR extrinsic comes from ``frame.extra["calibration"]`` (set by :func:`chain_bags`)
    or else from ``calibration``.
    """
    for frame in frames:
        cal = frame.extra.get("calibration") or calibration
        if cal is None:
            raise ValueError("LiDAR prompts need the recording's calibration (LiDAR extrinsic)")
        points = frame.extra.get("lidar")
        if points is None:
            raise ValueError(f"frame {frame.stamp_ns} has no LiDAR scan to build a prompt from")
        lidar_frame = frame.extra.get("lidar_frame_id", "lidar_link")
        cam_T_lidar = cal.transform(frame.frame_id, lidar_frame)
        xyz = np.stack([points["x"], points["y"], points["z"]], axis=-1).astype(np.float64)
        prompt = points_to_sparse_depth(transform_points(xyz, cam_T_lidar), frame.intrinsics)
        yield replace(frame, depth=prompt)


def hide_and_seek(
    frames: Iterable[RGBDFrame], seed: int = 0, fraction: float = 0.1
) -> Iterator[RGBDFrame]:
    """Real captures have no ground truth: hide blocks of valid raw depth and score on them.

    The returned frame's input depth lacks the hidden blocks and its ``gt_depth`` holds the raw
    depth on the hidden pixels only, so the usual metrics score exactly the hidden pixels.
    """
    rng = np.random.default_rng(seed)
    for frame in frames:
        masked, hidden = hide_blocks(frame.depth, rng, fraction=fraction)
        gt = np.where(hidden, frame.depth, np.float32(np.nan)).astype(np.float32)
        yield replace(frame, depth=masked, gt_depth=gt)


def with_corruption(frames: Iterable[RGBDFrame], level: str, seed: int = 0) -> Iterator[RGBDFrame]:
    """The LingBot-Depth evaluation protocol: the input is the ground truth corrupted at
    ``level`` (block masking + noise, ``sim.sensors.corrupt_depth``), scored against the
    ground truth. Deterministic for a seed."""
    from depth_perception.sim.sensors import corrupt_depth

    rng = np.random.default_rng(seed)
    for frame in frames:
        if frame.gt_depth is None:
            raise ValueError(f"frame {frame.stamp_ns} has no ground truth to corrupt")
        yield replace(frame, depth=corrupt_depth(frame.gt_depth, level, rng))


def chain_bags(
    bags: Iterable[str | Path], options: ReadOptions | None = None
) -> Iterator[RGBDFrame]:
    """Frames of several recordings in a row, each carrying its calibration (``options``'
    calibration, else the bag's own); stamps shifted so they keep increasing across bags
    (recordings often all start at the same time). A recording that yields no frame is a
    :class:`~depth_perception.io.recording.RecordingError` saying why."""
    from depth_perception.io.recording import (
        PairingStats,
        ReadOptions,
        RecordingError,
        bag_calibration,
        read_rgbd_frames,
    )

    options = options or ReadOptions()
    offset = last = 0
    for bag in bags:
        calibration = options.calibration or bag_calibration(bag)
        first = None
        stats = PairingStats()
        for frame in read_rgbd_frames(
            bag, options.topics, options.slop_ns, calibration=calibration, stats=stats
        ):
            if first is None:
                first = frame.stamp_ns
                offset = max(0, last + 100_000_000 - first)  # 0.1 s after the previous bag
            frame.extra["calibration"] = calibration
            frame = replace(frame, stamp_ns=frame.stamp_ns + offset)
            last = frame.stamp_ns
            yield frame
        if first is None:
            raise RecordingError(f"{bag}: no synchronized RGB-D frames: {stats.why_none()}")


def pipeline_frames(
    pipeline: Pipeline, frames: Iterable[RGBDFrame], calibration: Calibration | None = None
) -> Iterator[RGBDFrame]:
    """``frames`` as ``pipeline`` takes them: the LiDAR prompt as depth when its ``depth_input``
    is "lidar". Raises :class:`MissingInputError` at once (nothing yielded yet) when the first
    frame lacks an input the pipeline needs."""
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        return iter(())
    missing = missing_inputs(pipeline, first, calibration)
    if missing:
        raise MissingInputError(
            f"pipeline {pipeline.name} needs {' and '.join(missing)}, which the recording "
            "does not provide"
        )
    stream = itertools.chain([first], frames)
    if pipeline.depth_input == "lidar":
        stream = with_lidar_prompt(stream, calibration)
    return stream


@dataclass
class _Truncation:
    reason: str | None = None


def _until_unreadable(frames: Iterable[RGBDFrame], stop: _Truncation) -> Iterator[RGBDFrame]:
    """``frames`` up to the first one that cannot be read, whose reason lands in ``stop``.

    A corrupt record mid-bag (``io.bag.BagReadError``, an OSError like any failure to read an
    image file) ends the run instead of discarding every frame scored before it.
    """
    try:
        yield from frames
    except OSError as exc:
        stop.reason = str(exc)


def _limit(frames: Iterable[RGBDFrame], n: int | None) -> Iterator[RGBDFrame]:
    for i, frame in enumerate(frames):
        if n is not None and i >= n:
            return
        yield frame


def evaluate(
    frames: Iterable[RGBDFrame],
    cfg: EvalConfig,
    out_dir: str | Path,
    title: str,
    total: int | None = None,
    log_dir: str | Path | None = None,
    calibration: Calibration | None = None,
) -> Summary:
    """Run ``cfg.pipeline`` over ``frames`` and write the report into ``out_dir``.

    ``calibration`` (the recording's extrinsics) is needed by pipelines fed by the LiDAR. A
    pipeline whose inputs the frames lack raises :class:`MissingInputError` before anything is
    written. When the frames stop at an unreadable record, the frames scored so far are reported
    and the summary says ``truncated`` (with the reason).
    """
    pipeline = get_pipeline(cfg.pipeline, cfg.checkpoint)
    truncation = _Truncation()
    frames = pipeline_frames(pipeline, _until_unreadable(frames, truncation), calibration)
    writer = ReportWriter(out_dir, pipeline.name, title, figure_every=cfg.figure_every)
    frames = _limit(frames, cfg.max_frames)
    if cfg.max_frames is not None and total is not None:
        total = min(total, cfg.max_frames)
    bar = tqdm(total=total, desc=f"{pipeline.name} ({cfg.mode})", unit="frame", leave=False)
    missing = 0
    all_targets: list[dict] = []
    t_start = time.monotonic()
    extra: dict[str, object] = {"mode": cfg.mode, "pipeline_description": pipeline.description}

    def record(index: int, frame: RGBDFrame, pred: np.ndarray | None, latency: float | None):
        nonlocal missing
        bar.update(1)
        if pred is None:
            missing += 1
            return
        metrics = completion_metrics(frame, pred, all_targets)
        writer.add_frame(
            FrameResult(index, frame.stamp_ns, pipeline.name, metrics, latency),
            {"rgb": frame.rgb, "input_depth": frame.depth, "pred": pred, "gt": frame.gt_depth},
        )

    if cfg.mode == "offline":
        engine = pipeline.make_engine()
        for i, frame in enumerate(frames):
            t0 = time.perf_counter()
            result = engine.complete(frame.rgb, frame.depth, frame.intrinsics)
            record(i, frame, result.depth, (time.perf_counter() - t0) * 1e3)
        extra["model_id"] = engine.model_id
    elif cfg.mode == "dds":
        # Imported here so offline evaluation (e.g. inside training) needs no ROS.
        from depth_perception.ros.launcher import NodeProcess
        from depth_perception.ros.replay import ReplayClient

        log_path = Path(log_dir or out_dir) / f"{pipeline.name}_node.log"
        node = NodeProcess(
            pipeline.executable,
            params_file=pipeline.params_path,
            namespace=cfg.namespace,
            parameters=pipeline.parameters,
            log_path=log_path,
        )
        with node, ReplayClient(cfg.namespace) as client:
            if not client.wait_for_node(timeout_s=30.0):
                raise RuntimeError(f"{pipeline.executable} did not come up; see {log_path}")
            t_start = time.monotonic()
            last_status = None
            for i, res in enumerate(client.run(frames, rate=cfg.rate, timeout_s=cfg.timeout_s)):
                latency = res.status.latency_ms if res.status is not None else None
                record(i, res.frame, res.depth, latency)
                last_status = res.status or last_status
            if last_status is not None:
                extra["model_id"] = last_status.model_id
                extra["frames_skipped_by_node"] = int(last_status.frames_skipped)
                extra["messages_unmatched"] = int(last_status.messages_unmatched)
            extra["rate"] = "lockstep" if cfg.rate is None else cfg.rate
    else:
        raise ValueError(f"mode must be 'dds' or 'offline', not {cfg.mode!r}")
    bar.close()
    extra["wall_time_s"] = time.monotonic() - t_start
    extra["frames_without_result"] = missing
    if all_targets:
        # FocusDepth aggregation over every target of the run: median and quartiles per region
        extra["targets"] = {"n": len(all_targets), **aggregate_targets(all_targets)}
    return writer.finish(extra, truncated_reason=truncation.reason)

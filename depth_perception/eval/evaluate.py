"""Score a pipeline on a stream of frames: offline (engine in-process) or over DDS (real node).

Both modes feed the same frames and score with the same metrics, so a report says how the node a
user launches performs, and the offline mode is there for speed and for training-time checks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from depth_perception.core.metrics import (
    boundary_f1_avg,
    coverage,
    depth_metrics,
    hide_blocks,
    valid_depth,
)
from depth_perception.eval.pipelines import get_pipeline
from depth_perception.eval.report import FrameResult, ReportWriter, Summary
from depth_perception.io.frames import RGBDFrame

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


@dataclass
class EvalConfig:
    pipeline: str
    mode: str = "dds"  # "dds": launch the node and replay over DDS; "offline": call the engine
    rate: float | None = None  # dds only: None = lockstep, r = publish at r x the recorded rate
    max_frames: int | None = None
    figure_every: int = 10
    timeout_s: float = 60.0  # dds: per frame (lockstep) or for the tail (timed)
    namespace: str = "/camera"


def completion_metrics(frame: RGBDFrame, pred: np.ndarray) -> dict[str, float]:
    """Scores of one completed frame against its ground truth.

    ``holes.*`` are scored only where the sensor had no depth but the ground truth has: the
    pixels a completion method actually had to invent.
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
    return out


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
) -> Summary:
    """Run ``cfg.pipeline`` over ``frames`` and write the report into ``out_dir``."""
    pipeline = get_pipeline(cfg.pipeline)
    writer = ReportWriter(out_dir, pipeline.name, title, figure_every=cfg.figure_every)
    frames = _limit(frames, cfg.max_frames)
    if cfg.max_frames is not None and total is not None:
        total = min(total, cfg.max_frames)
    bar = tqdm(total=total, desc=f"{pipeline.name} ({cfg.mode})", unit="frame", leave=False)
    missing = 0
    t_start = time.monotonic()
    extra: dict[str, object] = {"mode": cfg.mode, "pipeline_description": pipeline.description}

    def record(index: int, frame: RGBDFrame, pred: np.ndarray | None, latency: float | None):
        nonlocal missing
        bar.update(1)
        if pred is None:
            missing += 1
            return
        writer.add_frame(
            FrameResult(
                index, frame.stamp_ns, pipeline.name, completion_metrics(frame, pred), latency
            ),
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
    return writer.finish(extra)

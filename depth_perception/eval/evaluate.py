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

from depth_perception.core.depth import sanitize_depth
from depth_perception.core.metrics import (
    RADAR_RANGE_CAPS_M,
    aggregate_targets,
    binned_abs_rel,
    boundary_f1_avg,
    coverage,
    depth_metrics,
    hide_blocks,
    range_capped_errors,
    range_metric_name,
    region_metrics,
    valid_depth,
)
from depth_perception.core.prompt_prep import make_prompt
from depth_perception.core.prompts import (
    CLOUD_SOURCES,
    DEFAULT_MAX_PROMPT_AGE,
    cloud_prompt,
    merge_prompts,
    sensor_depth_prompt,
)
from depth_perception.core.visualize import save_png
from depth_perception.engines.base import (
    PROMPT_INPUTS,
    EngineInputs,
    FrameInputs,
    missing_frame_inputs,
    no_result,
)
from depth_perception.eval.pipelines import (
    MissingInputError,
    OfflineOnlyError,
    Pipeline,
    frame_cloud,
    get_pipeline,
    missing_inputs,
)
from depth_perception.eval.report import FrameResult, ReportWriter, Summary
from depth_perception.eval.targets import (
    ROW_FIELDS,
    per_target_table,
    summarize_rows,
    target_figure,
    target_rows,
    write_rows_csv,
)
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
    "delta2",
    "delta3",
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
# The radar protocol's range-capped errors (pipelines with ``range_caps_m``), in millimetres.
RANGE_METRICS = tuple(
    range_metric_name(metric, cap) for cap in RADAR_RANGE_CAPS_M for metric in ("mae", "rmse")
)
#: Seed of the synthetic prompts (``Pipeline.synthetic_prompt``), combined with each frame's
#: stamp: the same frame gets the same prompt in every run, offline or over DDS.
SYNTHETIC_PROMPT_SEED = 20_240_710


def table_metrics(summaries: dict[str, dict], hidden: bool = False) -> list[str]:
    """Columns of a comparison table of ``summaries`` (summary.json dicts): the headline
    metrics (hide-and-seek's when ``hidden``), then the range-capped radar errors when a
    pipeline reported them."""
    columns = list(HIDE_AND_SEEK_METRICS if hidden else HEADLINE_METRICS)
    reported = {m for summary in summaries.values() for m in summary.get("metrics", {})}
    binned = {m for m in reported if m.startswith("abs_rel_") and m.endswith("m")}
    in_order = [m for s in summaries.values() for m in s.get("metrics", {}) if m in binned]
    return columns + [m for m in RANGE_METRICS if m in reported] + list(dict.fromkeys(in_order))


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
    depth_bins_m: tuple[float, ...] = ()  # also AbsRel per ground-truth range (binned_abs_rel)
    teacher: str | None = None  # ma_teacher_lidar_student_prior: its teacher (default: shipped)


def completion_metrics(
    frame: RGBDFrame,
    pred: np.ndarray,
    targets_out: list | None = None,
    range_caps_m: tuple[float, ...] = (),
    depth_bins_m: tuple[float, ...] = (),
) -> dict[str, float]:
    """Scores of one completed frame against its ground truth.

    ``holes.*`` are scored only where the sensor had no depth but the ground truth has: the
    pixels a completion method actually had to invent. ``target.*`` are FocusDepth region
    metrics (median over this frame's targets); the per-target regions are appended to
    ``targets_out`` so a run can aggregate over all its targets. ``range_caps_m``: also MAE
    and RMSE in millimetres over the ground truth within 0 to each cap
    (:func:`~depth_perception.core.metrics.range_capped_errors`, the radar protocol).
    ``depth_bins_m``: also AbsRel per ground-truth depth range
    (:func:`~depth_perception.core.metrics.binned_abs_rel`, Table 14's).
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
    if range_caps_m:
        out.update(range_capped_errors(pred, gt, range_caps_m))
    if depth_bins_m:
        out.update(binned_abs_rel(pred, gt, depth_bins_m))
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


class FrameInputsBuilder:
    """Each frame's engine inputs, built from :class:`RGBDFrame` s by the node base's rules.

    Colour and intrinsics always; the sensor depth when the engine takes it; the prompt from
    ``prompt_sources``: a LiDAR / radar scan (``frame.extra["lidar"]``, its ``*_frame_id`` and
    stamp) moved into the colour camera with the frame's calibration (``frame.extra[
    "calibration"]``, else ``calibration``) and projected with a z-buffer, the sensor's valid
    depth, merged nearest-first. As in the node, the newest scan seen so far serves a frame when
    its stamp is within ``max_prompt_age`` of the frame's, and a frame without any prompt pixel
    gets ``prompt`` None (the node then publishes "no depth", as :func:`evaluate` scores).
    Stateful (the newest scan per source): one builder per stream of frames.

    ``synthetic_prompt`` (a :data:`~depth_perception.core.prompt_prep.PROMPT_KINDS` kind):
    each frame's sensor depth is first replaced by that prompt drawn from its ground truth
    (:func:`synthetic_prompt_depth`; :meth:`source_frame`), so a ``sensor_depth`` prompt source
    or a hole fill takes it.
    """

    def __init__(
        self,
        inputs: EngineInputs,
        prompt_sources: tuple[str, ...] | list[str] = (),
        max_prompt_age: float = DEFAULT_MAX_PROMPT_AGE,
        calibration: Calibration | None = None,
        synthetic_prompt: str = "",
    ) -> None:
        self.inputs = inputs
        self.prompt_sources = tuple(prompt_sources)
        self.max_prompt_age = float(max_prompt_age)
        self.calibration = calibration
        self.synthetic_prompt = synthetic_prompt
        self._newest: dict[str, tuple[np.ndarray, str, int, Calibration | None]] = {}

    @classmethod
    def for_pipeline(
        cls, pipeline: Pipeline, calibration: Calibration | None = None
    ) -> FrameInputsBuilder:
        return cls(
            pipeline.inputs,
            pipeline.prompt_sources,
            pipeline.max_prompt_age,
            calibration,
            pipeline.synthetic_prompt,
        )

    def source_frame(self, frame: RGBDFrame) -> RGBDFrame:
        """``frame`` as the pipeline takes it: with a synthetic prompt as its sensor depth."""
        if not self.synthetic_prompt:
            return frame
        return replace(frame, depth=synthetic_prompt_depth(frame, self.synthetic_prompt))

    def __call__(self, frame: RGBDFrame) -> FrameInputs:
        """The engine inputs of a recorded frame (:meth:`source_frame`, then :meth:`build`)."""
        return self.build(self.source_frame(frame))

    def build(self, frame: RGBDFrame) -> FrameInputs:
        """The engine inputs of a frame already as the pipeline takes it."""
        return FrameInputs(
            intrinsics=frame.intrinsics,
            rgb=frame.rgb if self.inputs.colour else None,
            depth=frame.depth if self.inputs.depth else None,
            prompt=self.prompt(frame) if self.inputs.prompt else None,
            targets=frame.extra.get("targets") if self.inputs.targets else None,
            stamp_ns=frame.stamp_ns,
        )

    def prompt(self, frame: RGBDFrame) -> np.ndarray | None:
        parts = []
        calibration = frame.extra.get("calibration") or self.calibration
        for source in CLOUD_SOURCES:
            if source not in self.prompt_sources:
                continue
            scan = frame_cloud(frame, source)
            if scan is not None:
                self._newest[source] = (*scan, calibration)
            if source not in self._newest:
                continue
            cloud, sensor_frame, stamp_ns, cal = self._newest[source]
            if abs(frame.stamp_ns - stamp_ns) * 1e-9 > self.max_prompt_age:
                continue
            if cal is None:
                raise ValueError(
                    f"{source} prompts need the recording's calibration ({source} extrinsic)"
                )
            camera_T_sensor = cal.transform(frame.frame_id, sensor_frame)
            parts.append(cloud_prompt(cloud, camera_T_sensor, frame.intrinsics)[0])
        if "sensor_depth" in self.prompt_sources:
            parts.append(sensor_depth_prompt(frame.depth))
        if not parts:
            return None
        prompt = merge_prompts(parts, (frame.intrinsics.height, frame.intrinsics.width))
        return prompt if np.isfinite(prompt).any() else None


def synthetic_prompt_depth(frame: RGBDFrame, kind: str) -> np.ndarray:
    """The ``kind`` prompt (:func:`~depth_perception.core.prompt_prep.make_prompt`) of the
    frame's ground truth (float32 metres, NaN elsewhere), drawn with a generator seeded by
    :data:`SYNTHETIC_PROMPT_SEED` and the frame's stamp. The DDS replay publishes it as the
    depth image in 32FC1 (``Pipeline.depth_encoding``), which carries it unchanged."""
    if frame.gt_depth is None:
        raise ValueError(f"frame {frame.stamp_ns} has no ground truth to draw a {kind} prompt from")
    rng = np.random.default_rng([SYNTHETIC_PROMPT_SEED, int(frame.stamp_ns)])
    return sanitize_depth(make_prompt(kind, frame.gt_depth, rng))


def with_lidar_prompt(
    frames: Iterable[RGBDFrame], calibration: Calibration | None = None
) -> Iterator[RGBDFrame]:
    """Each frame with its depth replaced by its LiDAR prompt (z-buffered, NaN elsewhere): the
    sparse metric input ``jbu_lidar`` densifies (:class:`FrameInputsBuilder`'s rules). The LiDAR
    extrinsic comes from ``frame.extra["calibration"]`` (set by :func:`chain_bags`) or else
    from ``calibration``."""
    build = FrameInputsBuilder(PROMPT_INPUTS, ("lidar",), calibration=calibration)
    for frame in frames:
        if frame.extra.get("lidar") is None:
            raise ValueError(f"frame {frame.stamp_ns} has no LiDAR scan to build a prompt from")
        prompt = build(frame).prompt
        if prompt is None:
            prompt = np.full(frame.depth.shape, np.nan, np.float32)
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
        yield replace(
            frame, depth=masked, gt_depth=gt, extra={**frame.extra, "hide_and_seek": True}
        )


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
    from depth_perception.io.bag import bag_materials
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
        materials = bag_materials(bag)
        first = None
        stats = PairingStats()
        for frame in read_rgbd_frames(
            bag, options.topics, options.slop_ns, calibration=calibration, stats=stats
        ):
            if first is None:
                first = frame.stamp_ns
                offset = max(0, last + 100_000_000 - first)  # 0.1 s after the previous bag
            frame.extra["calibration"] = calibration
            if materials:
                frame.extra.setdefault("materials", materials)
            frame = replace(frame, stamp_ns=frame.stamp_ns + offset)
            last = frame.stamp_ns
            yield frame
        if first is None:
            raise RecordingError(f"{bag}: no synchronized RGB-D frames: {stats.why_none()}")


def pipeline_frames(
    pipeline: Pipeline, frames: Iterable[RGBDFrame], calibration: Calibration | None = None
) -> Iterator[tuple[RGBDFrame, FrameInputs]]:
    """``frames`` as ``pipeline`` takes them: each with its engine inputs
    (:class:`FrameInputsBuilder`); the DDS replay publishes the same streams of the frame
    (``pipeline.roles``) for the node to build them itself. The frame's ``depth`` is what the
    pipeline takes as its metric input — the sensor depth (a synthetic prompt in its place,
    ``Pipeline.synthetic_prompt``, which the replay then publishes as the depth), or the prompt
    for a pipeline that takes no sensor depth (what ``holes.*`` and the figures then refer
    to).

    Raises :class:`MissingInputError` at once (nothing yielded yet) when the first frame lacks
    an input the pipeline needs."""
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
    build = FrameInputsBuilder.for_pipeline(pipeline, calibration)
    takes_depth = "depth" in pipeline.roles

    def stream() -> Iterator[tuple[RGBDFrame, FrameInputs]]:
        for frame in itertools.chain([first], frames):
            frame = build.source_frame(frame)
            inputs = build.build(frame)
            if not takes_depth:
                prompt = inputs.prompt
                if prompt is None:
                    prompt = np.full(frame.depth.shape, np.nan, np.float32)
                frame = replace(frame, depth=prompt)
            yield frame, inputs

    return stream()


def run_offline(engine, inputs: FrameInputs):
    """``engine.run(inputs)``, or "no depth" when a declared input is missing (a frame without a
    prompt for an engine that needs one): what the node publishes for such a frame."""
    if missing_frame_inputs(engine.inputs, inputs):
        return no_result(inputs.shape)
    return engine.run(inputs)


def _startup_error(log_path: Path) -> str:
    """': <why>' from a node log's "cannot start" line (spin_node's), else ''."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if "cannot start: " in line:
            return ": " + line.split("cannot start: ", 1)[1].strip()
    return ""


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

    ``calibration`` (the recording's extrinsics, unless the frames carry their own) is needed by
    pipelines fed by a LiDAR or radar; the DDS replay publishes it on ``/tf_static``. A
    pipeline whose inputs the frames lack raises :class:`MissingInputError` before anything is
    written. When the frames stop at an unreadable record, the frames scored so far are reported
    and the summary says ``truncated`` (with the reason).

    Frames with ground-truth instances and targets are also scored per target
    (:mod:`depth_perception.eval.targets`: planner geometry, aligned FDE-Bench regions): one row
    per target in ``targets.csv``, median / Q25 / Q75 (all, per material) in the summary's
    ``per_target`` and report.md. A pipeline that runs offline only raises
    :class:`~depth_perception.eval.pipelines.OfflineOnlyError` in DDS mode.
    """
    pipeline = get_pipeline(cfg.pipeline, cfg.checkpoint, cfg.teacher)
    if cfg.mode == "dds" and pipeline.offline_only:
        raise OfflineOnlyError(
            f"pipeline {pipeline.name} runs offline only: {pipeline.offline_only}"
        )
    truncation = _Truncation()
    frames = pipeline_frames(pipeline, _until_unreadable(frames, truncation), calibration)
    writer = ReportWriter(out_dir, pipeline.name, title, figure_every=cfg.figure_every)
    frames = _limit(frames, cfg.max_frames)
    if cfg.max_frames is not None and total is not None:
        total = min(total, cfg.max_frames)
    bar = tqdm(total=total, desc=f"{pipeline.name} ({cfg.mode})", unit="frame", leave=False)
    missing = 0
    all_targets: list[dict] = []
    target_table: list[dict] = []  # one row per target (targets.csv)
    t_start = time.monotonic()
    extra: dict[str, object] = {"mode": cfg.mode, "pipeline_description": pipeline.description}

    def record(
        index: int,
        frame: RGBDFrame,
        pred: np.ndarray | None,
        latency: float | None,
        results: list | None = None,
    ):
        """Score one frame; ``results``: a FocusDepth engine's per-target results (offline)."""
        nonlocal missing
        bar.update(1)
        if pred is None:
            missing += 1
            return
        metrics = completion_metrics(
            frame, pred, all_targets, pipeline.range_caps_m, cfg.depth_bins_m
        )
        target_table.extend(target_rows(frame, pred, results, index))
        drawn = writer.add_frame(
            FrameResult(index, frame.stamp_ns, pipeline.name, metrics, latency),
            {"rgb": frame.rgb, "input_depth": frame.depth, "pred": pred, "gt": frame.gt_depth},
        )
        if drawn is not None and results:
            # FocusDepth: each target's own prediction, as the fde.* columns score it
            figure = target_figure(frame, results)
            if figure is not None:
                save_png(drawn.with_name(drawn.name.replace("frame_", "targets_")), figure)

    if cfg.mode == "offline":
        engine = pipeline.make_engine()
        for i, (frame, inputs) in enumerate(frames):
            t0 = time.perf_counter()
            result = run_offline(engine, inputs)
            # A FocusDepth engine's own target clouds are scored (eval.targets); over DDS the
            # node's depth is, inside the ground-truth masks.
            results = (result.targets or []) if engine.inputs.targets else None
            record(i, frame, result.depth, (time.perf_counter() - t0) * 1e3, results)
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
            parameters=pipeline.node_parameters,
            log_path=log_path,
        )
        client = ReplayClient(
            cfg.namespace,
            roles=pipeline.roles,
            calibration=calibration,
            depth_encoding=pipeline.depth_encoding,
        )
        with node, client:
            if not client.wait_for_node(timeout_s=30.0):
                raise RuntimeError(
                    f"{pipeline.executable} did not come up{_startup_error(log_path)}; "
                    f"see {log_path}"
                )
            t_start = time.monotonic()
            last_status = None
            replayed = (frame for frame, _ in frames)
            for i, res in enumerate(client.run(replayed, rate=cfg.rate, timeout_s=cfg.timeout_s)):
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
    if target_table:
        # Per target (eval.targets): planner geometry and aligned FDE-Bench regions.
        extra["per_target"] = summarize_rows(target_table)
        write_rows_csv(Path(out_dir) / "targets.csv", target_table, ROW_FIELDS)
    summary = writer.finish(extra, truncated_reason=truncation.reason)
    if target_table:
        with (Path(out_dir) / "report.md").open("a") as f:
            f.write(
                "\n## Per target (median [Q25, Q75]; targets.csv)\n\n"
                + per_target_table({pipeline.name: extra["per_target"]})
            )
    return summary

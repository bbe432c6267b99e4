"""The prompt-correctness study of the FocusDepth paper (§5.3) on recordings with ground truth.

Each target of each frame is run again with four prompts (:func:`study_prompts`):

- ``correct``: its own box and class name;
- ``wrong_visible``: another target's box and name in the same frame (the next one in the
  frame's list; none when the frame has a single target);
- ``absent``: a class name that names no target of the frame (:data:`ABSENT_NAMES`) with a
  box of the same size on empty surface -- no target pixel in it, the free position nearest to
  the target (the table next to it), halved until one fits, else no box;
- ``empty``: no box and no text, which the engine refuses (``empty_prompt``).

Scored is the depth FocusDepth gives for that prompt: the prompt's own metric-fitted full-image
depth (``TargetResult.depth``, the network's output the paper scores), or, where the engine
refused the prompt (empty, not found, no mask, no fit), the reference depth it then leaves in
place. Always against the *true* target: FDE-Bench's aligned region metrics on its ground-truth
mask (:func:`~depth_perception.eval.targets.fde_metrics`), plus the IoU of the engine's mask with
that mask, whether the prompt was refused and the fraction of the target's ground-truth pixels
with a depth (``fg_coverage``: a refused prompt leaves the reference, holes and all, and the
regions score valid pixels only). Means per prompt kind, as the paper reports.

``prompt_effect`` asks the paper's premise directly -- does the prompt change the depth where
the target is? -- as the mean absolute difference between this prompt's relative output
(``TargetResult.relative``, before any fit) and the correct prompt's on the target's
ground-truth mask, over the mean magnitude of the correct one there (0 for ``correct``; NaN
where a prompt never reached the network, as the empty one).

Offline only (the engine in-process: the node takes its prompts from the recording); the
reference is the pipeline's (the sensor depth, or the chain's completion, computed once per
frame).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from depth_perception.core.metrics import coverage, valid_depth
from depth_perception.engines.base import Engine, FrameInputs
from depth_perception.eval.evaluate import EvalConfig, pipeline_frames
from depth_perception.eval.pipelines import FocusChainEngine, Pipeline, get_pipeline
from depth_perception.eval.report import _jsonable
from depth_perception.eval.targets import (
    FDE_COLUMNS,
    fde_aligned,
    fde_metrics,
    quartiles,
    write_rows_csv,
)
from depth_perception.io.frames import RGBDFrame, Target

PROMPT_STUDY_KINDS = ("correct", "wrong_visible", "absent", "empty")
#: Class names for the absent prompt: the first that names no target of the frame is used.
ABSENT_NAMES = ("giraffe", "piano", "umbrella")
STUDY_METRICS = ("mask_iou", "refused", "fg_coverage", "prompt_effect", *FDE_COLUMNS)
STUDY_FIELDS = (
    *("frame_index", "stamp_ns", "target_id", "text"),
    *("kind", "prompt_text", "prompt_box", "error", *STUDY_METRICS),
)


def empty_box(
    occupied: np.ndarray, size: tuple[int, int], near: tuple[float, float]
) -> tuple[int, int, int, int] | None:
    """An (x, y, w, h) box of ``size`` (w, h) with no ``occupied`` pixel, the free position
    whose centre is nearest to ``near`` (x, y); halved until one fits; None when none does."""
    height, width = occupied.shape
    integral = np.pad(np.cumsum(np.cumsum(occupied, 0, dtype=np.int64), 1), ((1, 0), (1, 0)))
    w, h = (max(1, min(int(v), lim)) for v, lim in zip(size, (width, height), strict=True))
    while True:
        counts = (
            integral[h:, w:] - integral[:-h, w:] - integral[h:, :-w] + integral[:-h, :-w]
        )  # counts[y, x]: occupied pixels in the box at (x, y)
        ys, xs = np.nonzero(counts == 0)
        if len(xs):
            d = (xs + w / 2 - near[0]) ** 2 + (ys + h / 2 - near[1]) ** 2
            i = int(np.argmin(d))
            return int(xs[i]), int(ys[i]), w, h
        if w == 1 and h == 1:
            return None
        w, h = (w + 1) // 2, (h + 1) // 2


def study_prompts(frame: RGBDFrame, target: Target) -> dict[str, Target]:
    """The four prompts of :data:`PROMPT_STUDY_KINDS` for ``target`` (module notes); a kind
    that cannot be built for this frame (wrong_visible with one target) is left out. Every
    prompt keeps the target's id."""
    targets = list(frame.extra.get("targets") or [])
    tid = int(target.target_id)
    out = {"correct": Target(tid, target.text, tuple(target.box))}
    others = [t for t in targets if int(t.target_id) != tid]
    if others:
        i = next((k for k, t in enumerate(targets) if int(t.target_id) == tid), 0)
        after = [t for t in targets[i + 1 :] + targets[:i] if int(t.target_id) != tid]
        other = after[0]
        out["wrong_visible"] = Target(tid, other.text, tuple(other.box))
    names = {str(t.text) for t in targets}
    absent_text = next(n for n in ABSENT_NAMES if n not in names)
    occupied = (
        np.isin(frame.instance, [int(t.target_id) for t in targets])
        if frame.instance is not None
        else np.zeros(frame.depth.shape, dtype=bool)
    )
    x, y, w, h = (int(v) for v in target.box)
    box = empty_box(occupied, (max(w, 1), max(h, 1)), (x + w / 2, y + h / 2))
    out["absent"] = Target(tid, absent_text, box or (0, 0, 0, 0))
    out["empty"] = Target(tid, "", (0, 0, 0, 0))
    return out


def _focus_parts(engine: Engine) -> tuple[Callable[[FrameInputs], np.ndarray], Engine]:
    """(reference depth of a frame's inputs, the FocusDepth engine) of a FocusDepth pipeline."""
    if isinstance(engine, FocusChainEngine):
        return engine.reference, engine.focus
    return (lambda inputs: inputs.depth), engine


def _iou(a: np.ndarray | None, b: np.ndarray) -> float:
    if a is None:
        return 0.0
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else math.nan


def prompt_effect(
    relative: np.ndarray | None, correct: np.ndarray | None, mask: np.ndarray
) -> float:
    """Mean |relative - correct| over mean |correct| on ``mask`` (module notes); NaN when
    either output is missing or the mask is empty."""
    if relative is None or correct is None or not mask.any():
        return math.nan
    scale = float(np.mean(np.abs(correct[mask])))
    if not math.isfinite(scale) or scale == 0.0:
        return math.nan
    return float(np.mean(np.abs(relative[mask] - correct[mask]))) / scale


def study_frame(
    frame: RGBDFrame, inputs: FrameInputs, reference_of: Callable, focus: Engine, index: int
) -> list[dict]:
    """Rows (one per target and prompt kind) of one frame; one engine run for all prompts."""
    if frame.gt_depth is None or frame.instance is None:
        return []
    reference = reference_of(inputs)
    jobs = []  # (target, kind, prompt)
    for target in frame.extra.get("targets") or []:
        if not np.any(frame.instance == int(target.target_id)):
            continue
        jobs += [(target, k, p) for k, p in study_prompts(frame, target).items()]
    if not jobs:
        return []
    result = focus.run(replace(inputs, depth=reference, targets=[p for _, _, p in jobs]))
    aligned_reference = fde_aligned(reference, frame.gt_depth)
    results = list(result.targets or [])
    correct = {  # the correct prompt's network output of each target
        int(t.target_id): r.relative
        for (t, kind, _), r in zip(jobs, results, strict=True)
        if kind == "correct"
    }
    rows = []
    for (target, kind, prompt), r in zip(jobs, results, strict=True):
        mask = frame.instance == int(target.target_id)
        refused = r.error is not None or r.depth is None
        depth = reference if refused else r.depth
        aligned = aligned_reference if refused else fde_aligned(depth, frame.gt_depth)
        rows.append(
            {
                "frame_index": index,
                "stamp_ns": int(frame.stamp_ns),
                "target_id": int(target.target_id),
                "text": str(target.text),
                "kind": kind,
                "prompt_text": prompt.text,
                "prompt_box": " ".join(str(int(v)) for v in prompt.box),
                "error": str(r.error_kind or ""),
                "mask_iou": _iou(r.mask, mask),
                "refused": float(refused),
                # the regions score valid pixels only: how much of the target has a depth
                "fg_coverage": coverage(depth, mask & valid_depth(frame.gt_depth)),
                "prompt_effect": prompt_effect(r.relative, correct[int(target.target_id)], mask),
                **fde_metrics(aligned, frame.gt_depth, mask),
            }
        )
    return rows


def summarize_study(rows: Sequence[Mapping]) -> dict:
    """Means per prompt kind (finite values; ``n`` rows, ``errors`` by kind of refusal), and
    ``per_target``: median / Q25 / Q75 of the ``fde.*`` metrics (the ``correct`` row is then
    FDE-Bench's protocol on the network's own depth: compare FocusDepth with DA2-ft there)."""
    out = {}
    for kind in PROMPT_STUDY_KINDS:
        mine = [r for r in rows if r["kind"] == kind]
        stats: dict = {"n": len(mine)}
        for m in STUDY_METRICS:
            a = np.asarray([r[m] for r in mine], dtype=np.float64)
            a = a[np.isfinite(a)]
            stats[m] = float(a.mean()) if a.size else math.nan
        errors: dict[str, int] = {}
        for r in mine:
            if r["error"]:
                errors[r["error"]] = errors.get(r["error"], 0) + 1
        stats["errors"] = errors
        stats["per_target"] = {m: quartiles(r[m] for r in mine) for m in FDE_COLUMNS}
        out[kind] = stats
    return out


def study_table(summary: Mapping[str, Mapping], digits: int = 3) -> str:
    """Markdown table of :func:`summarize_study`: kinds (rows) x mean metrics."""
    lines = [
        "| prompt | n | " + " | ".join(STUDY_METRICS) + " |",
        "|---|---:|" + "---:|" * len(STUDY_METRICS),
    ]
    for kind, stats in summary.items():
        cells = [
            "–" if not math.isfinite(stats[m]) else f"{stats[m]:.{digits}f}" for m in STUDY_METRICS
        ]
        lines.append(f"| {kind} | {stats['n']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| prompt (median [Q25, Q75] per target) | " + " | ".join(FDE_COLUMNS) + " |",
        "|---|" + "---:|" * len(FDE_COLUMNS),
    ]
    for kind, stats in summary.items():
        cells = [_quartile_text(stats["per_target"][m], digits) for m in FDE_COLUMNS]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _quartile_text(stats: Mapping, digits: int) -> str:
    if not stats.get("n") or stats.get("median") is None:
        return "–"
    return f"{stats['median']:.{digits}f} [{stats['q25']:.{digits}f}, {stats['q75']:.{digits}f}]"


def prompt_study(
    pipeline: Pipeline,
    frames: Iterable[tuple[RGBDFrame, FrameInputs]],
    out_dir: str | Path,
    max_frames: int | None = None,
) -> dict:
    """Run the study of ``pipeline`` (a FocusDepth one) over ``frames`` (as
    :func:`~depth_perception.eval.evaluate.pipeline_frames` gives them) into ``out_dir``:
    prompt_study.csv (one row per target and kind), prompt_study.json (means per kind) and
    prompt_study.md; returns the means."""
    if not pipeline.inputs.targets:
        raise ValueError(f"pipeline {pipeline.name} takes no targets: no prompt study")
    reference_of, focus = _focus_parts(pipeline.make_engine())
    rows: list[dict] = []
    for i, (frame, inputs) in enumerate(frames):
        if max_frames is not None and i >= max_frames:
            break
        rows += study_frame(frame, inputs, reference_of, focus, i)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize_study(rows)
    write_rows_csv(out / "prompt_study.csv", rows, STUDY_FIELDS)
    (out / "prompt_study.json").write_text(json.dumps(_jsonable(summary), indent=2) + "\n")
    text = (
        f"# Prompt correctness: {pipeline.name} (means over targets; {focus.model_id})\n\n"
        + study_table(summary)
        + "\nfde.*: the prompt's FocusDepth depth (the reference where the engine refused), "
        "aligned in disparity over the whole image, on the true target's regions.\n"
    )
    (out / "prompt_study.md").write_text(text)
    return summary


def evaluate_prompts(frames: Iterable[RGBDFrame], cfg: EvalConfig, out_dir: str | Path) -> dict:
    """:func:`prompt_study` of ``cfg.pipeline`` (its checkpoint, ``max_frames``) over recorded
    ``frames``, whatever ``cfg.mode``: the study runs the engine in-process."""
    pipeline = get_pipeline(cfg.pipeline, cfg.checkpoint, cfg.teacher)
    return prompt_study(pipeline, pipeline_frames(pipeline, frames), out_dir, cfg.max_frames)

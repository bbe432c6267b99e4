"""DepthLM evaluation: pixel queries on recordings with ground truth, and the official jsonl.

Recordings (``depth-perception eval-depthlm BAGS --checkpoint DIR``): for every frame with
ground truth, ``pixels_per_image`` pixels (100, as the official evaluation jsonl) are drawn
among those whose ground truth is valid and whose marker fits the model's normalised image
(a generator keyed by ``seed`` and the frame's index: the same pixels for every method and
every run). Each method answers the Euclidean range at those pixels:

- ``depthlm``: the model (:class:`~depth_perception.engines.depthlm.DepthLMEngine`), one
  marked image per pixel; an answer that does not parse is a failure;
- ``constant_2m``: always 2.0 m (the paper's Table 1 baseline);
- ``train_median``: always the median range of the model's training labels
  (``train_median_range_m`` in its depthlm.json, written by training/); skipped with a note
  when the model does not record it;
- each ``--dense`` pipeline of the table (:mod:`depth_perception.eval.pipelines`), run offline
  on the frame as eval-bag feeds it (:func:`~depth_perception.eval.evaluate.pipeline_frames`'
  rules), its z-depth read at the pixels and converted to range; NaN there is a failure.

Scores (:func:`~depth_perception.core.depthlm.score_answers`, pooled over all pixels): δ1 (a
failure counts 0 and stays in the denominator), AbsRel over the answered pixels, the failure
share and count. The official jsonl (``--jsonl``) is scored the same way on its own pixels
(the model and the constant; a pixel whose marker does not fit counts as a failure, where the
official code would crash).

Written to ``out``: ``report.md`` (the comparison table, notes, the figure), ``summary.json``,
``pixels.csv`` (one row per pixel: frame, stamp, u, v, truth, each method's value, the
model's status and text) and ``figures/frame_XXXX.png`` (the colour image with the queried
pixels coloured by the model's AbsRel, failures in white, with a colour bar).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from depth_perception.core.camera import Intrinsics
from depth_perception.core.depthlm import (
    MARKER_SIZE,
    NormalisedFrame,
    load_rgb,
    pixel_distances,
    read_eval_jsonl,
    score_answers,
)
from depth_perception.core.visualize import (
    RELATIVE_ERROR_VMAX,
    ColorBar,
    apply_cmap,
    save_png,
    side_by_side,
)
from depth_perception.eval.evaluate import FrameInputsBuilder, run_offline
from depth_perception.eval.pipelines import MissingInputError, get_pipeline, missing_inputs
from depth_perception.eval.report import _jsonable, compare_table
from depth_perception.io.frames import RGBDFrame

CONSTANT_M = 2.0  # the paper's Table 1 constant baseline
MODEL = "depthlm"
CONSTANT = "constant_2m"
TRAIN_MEDIAN = "train_median"
METRICS = ("delta1", "abs_rel", "failed", "n_failed", "n")
FAILED_RGB = (255, 255, 255)


@dataclass
class DepthLMEvalConfig:
    pixels_per_image: int = 100
    seed: int = 0
    dense: tuple[str, ...] = ()  # pipeline names, NAME or NAME=CHECKPOINT
    max_frames: int | None = None
    figures: int = 1  # figures of the first scored frames


@dataclass
class _Scores:
    """Per method, the values answered at every scored pixel (NaN: a failure)."""

    truths: list[float] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, name: str, values: np.ndarray) -> None:
        self.values.setdefault(name, []).extend(float(v) for v in values)

    def table(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, values in self.values.items():
            s = score_answers(values, self.truths)
            out[name] = {
                "delta1": s.delta1,
                "abs_rel": s.abs_rel,
                "failed": s.n_failed / s.n if s.n else math.nan,
                "n_failed": s.n_failed,
                "n": s.n,
            }
        return out


def eligible_mask(gt_depth: np.ndarray, frame: NormalisedFrame, uv: np.ndarray) -> np.ndarray:
    """Which pixels (N, 2) of the source image have valid ground truth and a marker that fits
    the normalised image ``frame`` (the model's view)."""
    xy = frame.map_pixels(uv)
    width, height = frame.size
    x, y = xy[:, 0], xy[:, 1]
    fits = (x >= MARKER_SIZE) & (x < width - MARKER_SIZE)
    fits &= (y >= MARKER_SIZE) & (y < height - MARKER_SIZE)
    depth = gt_depth[uv[:, 1], uv[:, 0]]
    return fits & np.isfinite(depth) & (depth > 0)


def sample_pixels(
    gt_depth: np.ndarray, frame: NormalisedFrame, n: int, seed: int, index: int
) -> np.ndarray:
    """Up to ``n`` pixels (N, 2) int64 (u, v), drawn without replacement among the eligible
    ones (:func:`eligible_mask`) by a generator keyed by (``seed``, ``index``); in row-major
    order."""
    rows, cols = np.nonzero(np.isfinite(gt_depth) & (gt_depth > 0))
    uv = np.stack([cols, rows], axis=1).astype(np.int64)
    uv = uv[eligible_mask(gt_depth, frame, uv)]
    rng = np.random.default_rng([int(seed), int(index)])
    take = np.sort(rng.choice(len(uv), size=min(n, len(uv)), replace=False))
    return uv[take]


def error_figure(rgb: np.ndarray, uv: np.ndarray, values: np.ndarray, truths: np.ndarray):
    """The colour image with each queried pixel a dot coloured by AbsRel |a - g| / g (inferno,
    0 to 0.25; failures white), with a colour bar."""
    image = np.ascontiguousarray(rgb, dtype=np.uint8).copy()
    err = np.abs(values - truths) / truths
    colours = apply_cmap((np.nan_to_num(err, nan=0.0) / RELATIVE_ERROR_VMAX)[None], "inferno")[0]
    radius = max(1, round(min(image.shape[:2]) / 120))
    for (u, v), e, c in zip(uv, err, colours, strict=True):
        colour = FAILED_RGB if not np.isfinite(e) else tuple(int(x) for x in c)
        cv2.circle(image, (int(u), int(v)), radius + 1, (0, 0, 0), -1)
        cv2.circle(image, (int(u), int(v)), radius, colour, -1)
    bar = ColorBar(0.0, RELATIVE_ERROR_VMAX, unit="", cmap="inferno")
    label = "DepthLM AbsRel at the queried pixels (white: failed)"
    return side_by_side([image], [label], colorbars=[bar])


def _dense_pipelines(specs: Sequence[str], first: RGBDFrame, notes: list[str]) -> dict:
    """name -> (engine, FrameInputsBuilder) of every ``--dense`` pipeline the recording can feed;
    the others are skipped with a note."""
    out = {}
    for spec in specs:
        name, _, checkpoint = spec.partition("=")
        try:
            pipeline = get_pipeline(name, checkpoint or None)
            missing = missing_inputs(pipeline, first)
            if missing:
                raise MissingInputError(f"needs {' and '.join(missing)}")
            engine = pipeline.make_engine()
        except MissingInputError as exc:
            notes.append(f"{name} skipped: {exc}")
            continue
        out[name] = (engine, FrameInputsBuilder.for_pipeline(pipeline))
    return out


def _train_median(engine, notes: list[str]) -> float | None:
    value = getattr(engine.lm.settings, "train_median_range_m", None)
    if value is None or not (math.isfinite(value) and value > 0):
        notes.append(
            f"{TRAIN_MEDIAN} skipped: the model's depthlm.json has no train_median_range_m "
            "(written by training/ since the DepthLM export records it)"
        )
        return None
    return float(value)


def evaluate_frames(
    engine, frames: Iterable[RGBDFrame], cfg: DepthLMEvalConfig, out: str | Path, title: str
) -> dict[str, Any]:
    """Score the model, the baselines and ``cfg.dense`` at sampled pixels of ``frames`` (module
    docstring); writes the report into ``out`` and returns the summary."""
    out = Path(out)
    notes: list[str] = []
    scores = _Scores()
    median = _train_median(engine, notes)
    dense: dict | None = None
    figures: list[str] = []
    counts = {"frames": 0, "frames_scored": 0, "frames_without_gt": 0, "frames_without_pixels": 0}
    for index, frame in enumerate(frames):
        if cfg.max_frames is not None and counts["frames"] >= cfg.max_frames:
            break
        counts["frames"] += 1
        if frame.gt_depth is None:
            counts["frames_without_gt"] += 1
            continue
        if dense is None:
            dense = _dense_pipelines(cfg.dense, frame, notes)
        k = frame.intrinsics
        view = engine.lm.prepare_frame(frame.rgb, k)
        uv = sample_pixels(frame.gt_depth, view, cfg.pixels_per_image, cfg.seed, index)
        if not len(uv):
            counts["frames_without_pixels"] += 1
            continue
        counts["frames_scored"] += 1
        truths, _ = pixel_distances(frame.gt_depth, k, uv)
        scores.truths.extend(truths.tolist())
        res = engine.query(frame.rgb, k, uv, kind="range")
        model = res.range_m.astype(np.float64)
        scores.add(MODEL, model)
        scores.add(CONSTANT, np.full(len(uv), CONSTANT_M))
        if median is not None:
            scores.add(TRAIN_MEDIAN, np.full(len(uv), median))
        per_method = {}
        for name, (dense_engine, build) in dense.items():
            pred = run_offline(dense_engine, build(frame)).depth
            per_method[name], _ = pixel_distances(pred, k, uv)
            scores.add(name, per_method[name])
        for i in range(len(uv)):
            scores.rows.append(
                {
                    "frame": index,
                    "stamp_ns": frame.stamp_ns,
                    "u": int(uv[i, 0]),
                    "v": int(uv[i, 1]),
                    "truth_m": float(truths[i]),
                    MODEL: float(model[i]),
                    "status": res.status[i],
                    "text": res.text[i],
                    **{name: float(v[i]) for name, v in per_method.items()},
                }
            )
        if len(figures) < cfg.figures:
            path = out / "figures" / f"frame_{index:04d}.png"
            save_png(path, error_figure(frame.rgb, uv, model, truths))
            figures.append(str(path.relative_to(out)))
    if not counts["frames_scored"]:
        notes.append("no frame with ground truth and a pixel whose marker fits: nothing scored")
    summary = {
        "title": title,
        "model_id": engine.model_id,
        "f_uni": engine.f_uni,
        "pixels_per_image": cfg.pixels_per_image,
        "seed": cfg.seed,
        **counts,
        "train_median_range_m": median,
        "methods": scores.table(),
        "notes": notes,
        "figures": figures,
    }
    write_report(out, summary, scores.rows)
    return summary


def evaluate_jsonl(
    engine,
    path: str | Path,
    out: str | Path,
    image_folder: str | Path | None = None,
    title: str | None = None,
    figures: int = 1,
) -> dict[str, Any]:
    """Score the model and the constant on an official evaluation jsonl (module docstring)."""
    out = Path(out)
    records = read_eval_jsonl(path, image_folder)
    scores = _Scores()
    notes: list[str] = []
    figure_paths: list[str] = []
    border = 0
    for index, rec in enumerate(records):
        rgb = load_rgb(rec.image_path)
        k: Intrinsics = rec.intrinsics
        if rgb.shape[:2] != (k.height, k.width):
            raise ValueError(
                f"{rec.image_path}: the image is {rgb.shape[1]}x{rgb.shape[0]} but its record "
                f"says {k.width}x{k.height}"
            )
        res = engine.query(rgb, k, rec.pixels, kind="range")
        model = res.range_m.astype(np.float64)
        border += sum(s == "too_close_to_border" for s in res.status)
        scores.truths.extend(rec.distances.tolist())
        scores.add(MODEL, model)
        scores.add(CONSTANT, np.full(len(model), CONSTANT_M))
        for i in range(len(model)):
            scores.rows.append(
                {
                    "frame": index,
                    "image": str(rec.image_path),
                    "u": int(rec.pixels[i, 0]),
                    "v": int(rec.pixels[i, 1]),
                    "truth_m": float(rec.distances[i]),
                    MODEL: float(model[i]),
                    "status": res.status[i],
                    "text": res.text[i],
                }
            )
        if len(figure_paths) < figures:
            fig = out / "figures" / f"frame_{index:04d}.png"
            save_png(fig, error_figure(rgb, rec.pixels, model, rec.distances))
            figure_paths.append(str(fig.relative_to(out)))
    if border:
        notes.append(
            f"{border} pixel(s) too close to the border for the marker: counted as failures"
        )
    summary = {
        "title": title or f"DepthLM on {Path(path).name}",
        "model_id": engine.model_id,
        "f_uni": engine.f_uni,
        "jsonl": str(path),
        "images": len(records),
        "pixels_too_close_to_border": border,
        "methods": scores.table(),
        "notes": notes,
        "figures": figure_paths,
    }
    write_report(out, summary, scores.rows)
    return summary


def write_report(out: Path, summary: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """report.md, summary.json and pixels.csv of one evaluation."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2) + "\n")
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    with (out / "pixels.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: ("" if isinstance(v, float) and not math.isfinite(v) else v)
                    for k, v in row.items()
                }
            )
    facts = {
        k: v
        for k, v in summary.items()
        if k not in ("title", "methods", "notes", "figures") and v is not None
    }
    lines = [f"# {summary['title']}", ""]
    lines += [f"- {k}: {v}" for k, v in facts.items()]
    lines += [
        "",
        "Pooled over every queried pixel: δ1 counts a failed answer as 0; AbsRel is over the "
        "answered pixels; `failed` is the share of pixels without an answer.",
        "",
    ]
    methods = summary["methods"]
    lines.append(compare_table(methods, METRICS) if methods else "Nothing was scored.\n")
    lines += [f"- {note}" for note in summary["notes"]]
    if summary["figures"]:
        lines += ["", "## Figures", ""]
        lines += [f"![{Path(p).stem}]({p})" for p in summary["figures"]]
    (out / "report.md").write_text("\n".join(lines) + "\n")


__all__ = [
    "CONSTANT_M",
    "DepthLMEvalConfig",
    "eligible_mask",
    "error_figure",
    "evaluate_frames",
    "evaluate_jsonl",
    "sample_pixels",
    "write_report",
]

"""Per-target scores of a depth: what a grasp planner gets (geometry) and FDE-Bench's regions.

One row per ground-truth target of a frame (its ``target_id`` is its instance id in
``frame.instance``; needs ``frame.gt_depth``, ``frame.instance`` and ``frame.extra["targets"]``,
what simulated tabletop bags carry):

- **Geometry** (:func:`~depth_perception.core.target_geometry.geometry_errors`): centroid,
  extent and Chamfer errors in mm of the predicted target cloud against the ground-truth target
  surface, the ground-truth depth inside the ground-truth mask back-projected. The predicted
  cloud is

  - for a depth pipeline: its depth inside the *ground-truth* mask (``mask = gt_instance``).
    Such a pipeline gives no mask; a planner would take one from a segmenter, whose errors
    are not the depth's: the ground-truth mask scores the depth alone;
  - for a FocusDepth pipeline (engine results given): the engine's *own* cloud, its mask's
    pixels with its fitted depth (``mask = engine``), exactly what focus_depth_node publishes
    on ``targets/cloud`` and a planner consumes: its segmentation errors are part of what it
    delivers. A target the engine refused (``error``) has no errors (NaN), counted as failed.
    Over DDS only the node's depth comes back (the replay does not collect ``targets/cloud``):
    there its depth is scored inside the ground-truth mask, as a depth pipeline's.

- **FDE-Bench regions** (``fde.*``, the paper's §4.2 protocol): the whole image is first
  aligned to the ground truth with one least-squares scale and shift *in disparity* (as
  FocusDepth's training validates: the Depth Anything family predicts affine-invariant
  disparity; a metric depth is inverted first), then AbsRel and δ1 on the target's foreground
  (ground-truth mask), its boundary band (r = 10 px) and the global image
  (:func:`~depth_perception.core.metrics.region_metrics`). For a FocusDepth pipeline the
  image scored is the model's own whole-image relative disparity for *that target's* prompt
  (``TargetResult.relative``), not the published composite (the reference outside the masks,
  which would score the reference): this compares models, as the paper's benchmark does.
  A target refused before the model ran (invalid box) has NaN there.
  ``completion_metrics``' ``target.*`` score the depth as it is (no alignment).

Runs aggregate rows per target (not per image): median with Q25 / Q75 (:func:`summarize_rows`),
for all targets and per material (``frame.extra["materials"]``: instance id -> diffuse /
specular / transparent, from a simulated bag's ``ground_truth_materials.yaml``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from depth_perception.core.metrics import (
    REGIONS,
    align_scale_shift,
    apply_scale_shift,
    region_masks,
    region_metrics,
    valid_depth,
)
from depth_perception.core.target_geometry import geometry_errors, target_cloud
from depth_perception.core.visualize import (
    RELATIVE_ERROR_VMAX,
    ColorBar,
    colorize_depth,
    colorize_error,
    colorize_mask,
    depth_range,
    side_by_side,
)
from depth_perception.engines.base import TargetResult
from depth_perception.io.frames import RGBDFrame

GEOMETRY_METRICS = ("centroid_mm", "extent_mm", "chamfer_mm")
FDE_METRICS = ("abs_rel", "delta1")
FDE_COLUMNS = tuple(f"fde.{region}.{m}" for region in REGIONS for m in FDE_METRICS)
#: The numbers a run aggregates per target.
TARGET_METRICS = (*GEOMETRY_METRICS, *FDE_COLUMNS)
BOUNDARY_RADIUS = 10  # px, FDE-Bench's r
ROW_FIELDS = (
    "frame_index",
    "stamp_ns",
    "target_id",
    "text",
    "material",
    "mask",
    "gt_points",
    "n_points",
    *TARGET_METRICS,
    "error",
)


def fde_aligned(pred: np.ndarray, gt: np.ndarray) -> np.ndarray | None:
    """``pred`` (metric depth) aligned to ``gt`` over the whole image by one scale and shift in
    disparity (module notes); None when too few pixels are valid in both to fit."""
    pred = np.asarray(pred, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        disparity = np.where(valid_depth(pred), 1.0 / pred, np.nan)
    return fde_aligned_disparity(disparity, gt)


def fde_aligned_disparity(disparity: np.ndarray, gt: np.ndarray) -> np.ndarray | None:
    """A relative ``disparity`` (any scale and shift; non-finite = invalid) aligned to ``gt``
    as :func:`fde_aligned` does; None when it cannot be fitted."""
    try:
        scale, shift = align_scale_shift(disparity, gt, space="disparity")
    except ValueError:
        return None
    return apply_scale_shift(disparity, scale, shift, space="disparity")


def fde_metrics(aligned: np.ndarray | None, gt: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """``fde.<region>.<metric>`` of one target's ground-truth ``mask`` (NaN without a fit)."""
    if aligned is None:
        return dict.fromkeys(FDE_COLUMNS, math.nan)
    regions = region_metrics(aligned, gt, mask, r=BOUNDARY_RADIUS)
    return {
        f"fde.{region}.{m}": float(getattr(regions[region], m))
        for region in REGIONS
        for m in FDE_METRICS
    }


def target_rows(
    frame: RGBDFrame,
    pred: np.ndarray,
    results: Sequence[TargetResult] | None = None,
    frame_index: int = 0,
) -> list[dict]:
    """One row per target of ``frame`` with ground truth on it (module notes); ``results``:
    a FocusDepth engine's per-target results (its clouds are scored), None for a depth."""
    targets = frame.extra.get("targets") or []
    if frame.gt_depth is None or frame.instance is None or not targets:
        return []
    gt = frame.gt_depth
    materials = frame.extra.get("materials") or {}
    by_id = {int(r.target_id): r for r in results or []}
    aligned = fde_aligned(pred, gt) if results is None else None
    rows = []
    for target in targets:
        tid = int(target.target_id)
        mask = frame.instance == tid
        gt_points = target_cloud(gt, mask, frame.intrinsics)
        if len(gt_points) == 0:  # not visible with ground truth: nothing to score
            continue
        row: dict = {
            "frame_index": frame_index,
            "stamp_ns": int(frame.stamp_ns),
            "target_id": tid,
            "text": str(target.text or ""),
            "material": str(materials.get(tid, "unknown")),
            "gt_points": len(gt_points),
            **dict.fromkeys(GEOMETRY_METRICS, math.nan),
            "error": "",
        }
        if results is not None:
            result = by_id.get(tid)
            row["mask"] = "engine"
            points = result.points if result is not None and result.ok else None
            if result is None:
                row["error"] = "no_result"
            elif not result.ok:
                row["error"] = str(result.error_kind or "error")
        else:
            row["mask"] = "gt_instance"
            points = target_cloud(pred, mask, frame.intrinsics)
        row["n_points"] = 0 if points is None else len(points)
        if points is not None and len(points):
            row.update(geometry_errors(points, gt_points))
        elif not row["error"]:
            row["error"] = "no_points"
        if results is None:
            row.update(fde_metrics(aligned, gt, mask))
        else:  # the model's own whole-image prediction for this target's prompt
            relative = None if result is None else result.relative
            own = None if relative is None else fde_aligned_disparity(relative, gt)
            row.update(fde_metrics(own, gt, mask))
        rows.append(row)
    return rows


def target_figure(
    frame: RGBDFrame, results: Sequence[TargetResult], max_targets: int = 3
) -> np.ndarray | None:
    """One row per target (the first ``max_targets`` with a relative prediction) of a
    FocusDepth frame: colour with the prompt box (yellow), the engine's mask (green) and the
    ground-truth mask's outline (white) | the model's own whole-image prediction for that
    prompt, FDE-aligned (what the ``fde.*`` columns score) | ground truth | its AbsRel error
    inside the target's boundary band (dark outside). None when no target has a prediction."""
    gt = frame.gt_depth
    if gt is None or frame.rgb is None:
        return None
    boxes = {int(t.target_id): t.box for t in frame.extra.get("targets") or []}
    vmin, vmax = depth_range(gt)
    rows = []
    for result in results:
        if len(rows) >= max_targets:
            break
        aligned = None
        if result.relative is not None:
            aligned = fde_aligned_disparity(result.relative, gt)
        if aligned is None:
            continue
        rgb = np.array(frame.rgb, dtype=np.uint8, copy=True)
        if result.mask is not None:
            rgb = colorize_mask(result.mask, rgb, alpha=0.4)
        gt_mask = (
            frame.instance == int(result.target_id)
            if frame.instance is not None
            else np.zeros(gt.shape, bool)
        )
        contours, _ = cv2.findContours(
            gt_mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        cv2.drawContours(rgb, contours, -1, (255, 255, 255), 1)
        if result.target_id in boxes:
            x, y, w, h = (int(v) for v in boxes[result.target_id])
            cv2.rectangle(rgb, (x, y), (x + w - 1, y + h - 1), (255, 220, 0), 1)
        regions = region_masks(gt_mask, BOUNDARY_RADIUS)
        region = regions["foreground"] | regions["boundary"]
        err = colorize_error(np.where(region, aligned, np.nan), gt)
        label = f"target {result.target_id} '{result.text}'"
        rows.append(
            side_by_side(
                [rgb, colorize_depth(aligned, vmin, vmax), colorize_depth(gt, vmin, vmax), err],
                [label, "own prediction, aligned", "ground truth", "AbsRel, fg + band"],
                height=max(240, gt.shape[0]),
                colorbars=[
                    None,
                    ColorBar.depth(vmin, vmax),
                    ColorBar.depth(vmin, vmax),
                    ColorBar(0.0, RELATIVE_ERROR_VMAX, unit="", cmap="inferno"),
                ],
            )
        )
    if not rows:
        return None
    width = max(r.shape[1] for r in rows)
    padded = [
        np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows
    ]
    return np.concatenate(padded, axis=0)


def quartiles(values: Iterable[float]) -> dict[str, float]:
    """Median, Q25, Q75 and count ``n`` of the finite values (NaN stats when none)."""
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"median": math.nan, "q25": math.nan, "q75": math.nan, "n": 0}
    q25, med, q75 = np.percentile(a, [25, 50, 75])
    return {"median": float(med), "q25": float(q25), "q75": float(q75), "n": int(a.size)}


def _group(rows: Sequence[Mapping]) -> dict:
    return {
        "targets": len(rows),
        "failed": sum(1 for r in rows if r.get("error")),
        **{m: quartiles(r.get(m, math.nan) for r in rows) for m in TARGET_METRICS},
    }


def summarize_rows(rows: Sequence[Mapping]) -> dict:
    """Per-target aggregate of a run: ``all`` and ``by_material``, each ``targets`` (count),
    ``failed`` (rows with an error: no cloud) and per metric median / Q25 / Q75 / n."""
    materials = sorted({str(r.get("material", "unknown")) for r in rows})
    masks = sorted({str(r.get("mask")) for r in rows})
    return {
        "mask": masks[0] if len(masks) == 1 else masks,
        "alignment": "fde.*: whole image, one scale and shift in disparity",
        "all": _group(rows),
        "by_material": {m: _group([r for r in rows if r.get("material") == m]) for m in materials},
    }


def write_rows_csv(path: str | Path, rows: Sequence[Mapping], fields: Sequence[str]) -> Path:
    """``rows`` as CSV with ``fields`` as columns (NaN as empty cells, as frames.csv)."""
    path = Path(path)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(fields)
        for row in rows:
            writer.writerow([_cell(row.get(k)) for k in fields])
    return path


def _cell(v: object) -> object:
    if isinstance(v, float | np.floating):
        return repr(float(v)) if math.isfinite(v) else ""
    return "" if v is None else v


def _stat_text(stats: Mapping, digits: int = 1) -> str:
    if not stats.get("n"):
        return "–"
    return f"{stats['median']:.{digits}f} [{stats['q25']:.{digits}f}, {stats['q75']:.{digits}f}]"


#: Columns of the per-target tables: (metric, header, decimals).
TABLE_COLUMNS = (
    ("centroid_mm", "centroid mm", 1),
    ("extent_mm", "extent mm", 1),
    ("chamfer_mm", "Chamfer mm", 1),
    ("fde.foreground.abs_rel", "fg AbsRel", 3),
    ("fde.foreground.delta1", "fg δ1", 3),
    ("fde.boundary.abs_rel", "boundary AbsRel", 3),
    ("fde.boundary.delta1", "boundary δ1", 3),
    ("fde.global.abs_rel", "global AbsRel", 3),
    ("fde.global.delta1", "global δ1", 3),
)


def per_target_table(summaries: Mapping[str, Mapping]) -> str:
    """Markdown table, one row per pipeline and material group (all first), of the per-target
    medians with [Q25, Q75] (``summaries``: name -> :func:`summarize_rows` dict)."""
    header = " | ".join(h for _, h, _ in TABLE_COLUMNS)
    lines = [
        f"| pipeline | material | targets | failed | {header} |",
        "|---|---|---:|---:|" + "---:|" * len(TABLE_COLUMNS),
    ]
    for name, summary in summaries.items():
        groups = {"all": summary["all"], **summary.get("by_material", {})}
        for group, stats in groups.items():
            cells = [_stat_text(stats[m], d) for m, _, d in TABLE_COLUMNS]
            lines.append(
                f"| {name} | {group} | {stats['targets']} | {stats['failed']} | "
                + " | ".join(cells)
                + " |"
            )
    return "\n".join(lines) + "\n"

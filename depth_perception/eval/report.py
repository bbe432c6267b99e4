"""Evaluation report writer: per-frame results in, summary.json / frames.csv / report.md out.

Layout of ``out_dir`` after :meth:`ReportWriter.finish`::

    summary.json        mean / median / n per metric, latency stats, real-time factor, extras
    frames.csv          one row per frame (index, stamp, pipeline, latency, metrics, extras)
    report.md           Markdown table of the summary plus links to the figures
    targets.csv         one row per target (eval.targets; recordings with instances + targets)
    figures/frame_XXXX.png   side-by-side panels every ``figure_every`` frames

Non-finite numbers are written as JSON ``null`` / empty CSV cells so every file parses with
standard tools.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from depth_perception.core.visualize import (
    RELATIVE_ERROR_VMAX,
    ColorBar,
    colorize_depth,
    colorize_error,
    depth_range,
    save_png,
    side_by_side,
)

# Metric names where larger is better (matched as substrings, case-insensitive); everything
# else is an error, except the counts in NEUTRAL_METRICS which are never ranked.
HIGHER_IS_BETTER_KEYS = (
    "delta",
    "f1",
    "coverage",
    "precision",
    "recall",
    "accuracy",
    "fps",
    "real_time_factor",
)
NEUTRAL_METRICS = frozenset({"n_valid", "n", "frames"})


@dataclass
class FrameResult:
    """Scores of one evaluated frame. ``metrics`` values are floats (NaN allowed)."""

    frame_index: int
    stamp_ns: int
    pipeline: str
    metrics: dict[str, float]
    latency_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Summary:
    """What :meth:`ReportWriter.finish` writes to summary.json (``to_dict`` gives that dict)."""

    title: str
    pipeline: str
    frames: int
    metrics: dict[str, dict[str, float]]
    latency_ms: dict[str, float] | None
    real_time_factor: float | None
    figures: list[str]
    extra: dict[str, Any]
    # The frames stopped early (a corrupt record): the numbers cover only the frames before it.
    truncated: bool = False
    truncated_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


def _jsonable(obj: Any) -> Any:
    """Plain-JSON copy of ``obj``: numpy scalars/arrays to Python, non-finite floats to None."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _stats(values: Sequence[float]) -> dict[str, float]:
    """Mean / median over the finite values, with their count ``n``."""
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"mean": math.nan, "median": math.nan, "n": 0}
    return {"mean": float(a.mean()), "median": float(np.median(a)), "n": int(a.size)}


def _fmt(v: Any, digits: int = 4) -> str:
    """Table text: ints as is, floats with ``digits`` decimals; from 1,000 on, whole numbers
    with thousands separators (millimetre errors: 4,810, not 4.81e+03)."""
    if v is None:
        return "–"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not math.isfinite(v):
            return "–"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.{digits}f}"
    return str(v)


def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return repr(float(v)) if math.isfinite(v) else ""
    if isinstance(v, (int, np.integer, str, bool)):
        return v
    return json.dumps(_jsonable(v))


class ReportWriter:
    """Collects :class:`FrameResult` s of one pipeline and writes the report files.

    Figures are drawn for the 1st, (1 + figure_every)-th, ... added frame that comes with
    ``figure_inputs``; ``figure_every <= 0`` turns figures off.
    """

    def __init__(
        self, out_dir: str | Path, pipeline: str, title: str, figure_every: int = 10
    ) -> None:
        self.out_dir = Path(out_dir)
        self.pipeline = pipeline
        self.title = title
        self.figure_every = int(figure_every)
        self.frames: list[FrameResult] = []
        self.figures: list[Path] = []
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def add_frame(self, result: FrameResult, figure_inputs: Mapping | None = None) -> Path | None:
        """Record one frame; returns the figure path when one was written.

        ``figure_inputs`` may hold ``rgb`` (uint8 RGB), ``input_depth``, ``pred``, ``gt`` (metres,
        NaN invalid); missing entries just drop their panel. The error panel needs pred and gt.
        """
        draw = (
            figure_inputs is not None
            and self.figure_every > 0
            and len(self.frames) % self.figure_every == 0
        )
        self.frames.append(result)
        if not draw:
            return None
        path = self.out_dir / "figures" / f"frame_{result.frame_index:04d}.png"
        save_png(path, frame_figure(figure_inputs))
        self.figures.append(path)
        return path

    def summary(
        self, extra_summary: Mapping | None = None, truncated_reason: str | None = None
    ) -> Summary:
        """Aggregate the frames so far (what :meth:`finish` writes); ``truncated_reason``: why
        the run stopped before the end of its data, if it did."""
        extra = dict(extra_summary or {})
        names: dict[str, None] = {}  # ordered set: metric columns in first-seen order
        for fr in self.frames:
            names.update(dict.fromkeys(fr.metrics))
        metrics = {n: _stats([fr.metrics.get(n, math.nan) for fr in self.frames]) for n in names}
        lat = [fr.latency_ms for fr in self.frames if fr.latency_ms is not None]
        latency = None
        if lat:
            latency = _stats(lat)
            latency["p95"] = float(np.percentile(np.asarray(lat, dtype=np.float64), 95))
        return Summary(
            title=self.title,
            pipeline=self.pipeline,
            frames=len(self.frames),
            metrics=metrics,
            latency_ms=latency,
            real_time_factor=self._real_time_factor(extra),
            figures=[p.relative_to(self.out_dir).as_posix() for p in self.figures],
            extra=extra,
            truncated=truncated_reason is not None,
            truncated_reason=truncated_reason,
        )

    def _real_time_factor(self, extra: Mapping) -> float | None:
        """Given ``real_time_factor``, or recorded data time / ``wall_time_s`` when that is given.

        Data time is the stamp span of the frames plus one mean frame interval, so N frames at a
        fixed rate count as N periods. > 1 means faster than the data was recorded.
        """
        if extra.get("real_time_factor") is not None:
            return float(extra["real_time_factor"])
        wall = extra.get("wall_time_s")
        if wall is None or len(self.frames) < 2 or float(wall) <= 0:
            return None
        stamps = np.sort(np.asarray([fr.stamp_ns for fr in self.frames], dtype=np.float64))
        span_s = (stamps[-1] - stamps[0]) * 1e-9
        data_s = span_s * len(stamps) / (len(stamps) - 1)
        return float(data_s / float(wall))

    def finish(
        self, extra_summary: Mapping | None = None, truncated_reason: str | None = None
    ) -> Summary:
        """Write summary.json, frames.csv and report.md; return the :class:`Summary`."""
        summary = self.summary(extra_summary, truncated_reason)
        (self.out_dir / "summary.json").write_text(
            json.dumps(summary.to_dict(), indent=2, allow_nan=False) + "\n"
        )
        self._write_csv(summary)
        (self.out_dir / "report.md").write_text(render_markdown(summary))
        return summary

    def _write_csv(self, summary: Summary) -> None:
        extra_keys: dict[str, None] = {}
        for fr in self.frames:
            extra_keys.update(dict.fromkeys(fr.extra))
        metric_keys = list(summary.metrics)
        header = ["frame_index", "stamp_ns", "pipeline", "latency_ms", *metric_keys]
        header += [f"extra.{k}" for k in extra_keys]
        with (self.out_dir / "frames.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for fr in self.frames:
                row = [fr.frame_index, fr.stamp_ns, fr.pipeline, fr.latency_ms]
                row += [fr.metrics.get(k) for k in metric_keys]
                row += [fr.extra.get(k) for k in extra_keys]
                writer.writerow([_csv_cell(v) for v in row])


def frame_figure(inputs: Mapping) -> np.ndarray:
    """Side-by-side RGB | input depth | output | ground truth | AbsRel error (what is present).

    All depth panels share one colour range (from gt when present, else the prediction) so the
    same colour means the same distance across panels.
    """
    ref = next(
        (inputs[k] for k in ("gt", "pred", "input_depth") if inputs.get(k) is not None), None
    )
    vmin, vmax = depth_range(ref) if ref is not None else (0.0, 1.0)
    panels: list[np.ndarray] = []
    labels: list[str] = []
    bars: list[ColorBar | None] = []
    if inputs.get("rgb") is not None:
        panels.append(np.asarray(inputs["rgb"], dtype=np.uint8))
        labels.append("rgb")
        bars.append(None)
    for key, label in (("input_depth", "input depth"), ("pred", "output"), ("gt", "ground truth")):
        if inputs.get(key) is not None:
            panels.append(colorize_depth(inputs[key], vmin, vmax))
            labels.append(label)
            bars.append(ColorBar.depth(vmin, vmax))
    if inputs.get("pred") is not None and inputs.get("gt") is not None:
        panels.append(colorize_error(inputs["pred"], inputs["gt"], kind="absrel"))
        labels.append("AbsRel error")
        bars.append(ColorBar(0.0, RELATIVE_ERROR_VMAX, unit="", cmap="inferno"))
    if not panels:
        raise ValueError("figure_inputs has none of rgb / input_depth / pred / gt")
    return side_by_side(panels, labels, colorbars=bars)


def render_markdown(summary: Summary) -> str:
    """report.md text: header facts, one metric table, extras and figure links."""
    lines = [f"# {summary.title}", ""]
    if summary.truncated:
        lines += [
            f"**Truncated run**: {summary.truncated_reason}. Only the {summary.frames} frame(s) "
            "scored before that are reported here.",
            "",
        ]
    lines.append(f"- pipeline: `{summary.pipeline}`")
    lines.append(f"- frames: {summary.frames}")
    if summary.latency_ms is not None:
        lat = summary.latency_ms
        lines.append(
            f"- latency (ms): mean {_fmt(lat['mean'], 1)}, median {_fmt(lat['median'], 1)}, "
            f"p95 {_fmt(lat['p95'], 1)}"
        )
    if summary.real_time_factor is not None:
        lines.append(f"- real-time factor: {_fmt(summary.real_time_factor, 2)}")
    lines += ["", "| metric | mean | median | n |", "|---|---:|---:|---:|"]
    for name, s in summary.metrics.items():
        lines.append(f"| {name} | {_fmt(s['mean'])} | {_fmt(s['median'])} | {s['n']} |")
    if summary.extra:
        lines += ["", "## Details", ""]
        lines += [f"- {k}: {_fmt(v)}" for k, v in summary.extra.items()]
    if summary.figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{Path(p).stem}]({p})" for p in summary.figures]
    return "\n".join(lines) + "\n"


def higher_is_better(metric: str) -> bool | None:
    """True / False for ranked metrics, None for counts that are not ranked."""
    name = metric.lower()
    if name.rsplit("/", 1)[-1].rsplit(".", 1)[-1] in NEUTRAL_METRICS:
        return None
    return any(key in name for key in HIGHER_IS_BETTER_KEYS)


def _lookup(summary: Mapping, metric: str, stat: str) -> float | None:
    """A metric value from a summary.json-style dict or a flat ``{metric: value}`` dict."""
    holder = summary.get("metrics")
    value = holder.get(metric) if isinstance(holder, Mapping) and metric in holder else None
    if value is None:
        value = summary.get(metric)
    if isinstance(value, Mapping):
        value = value.get(stat)
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def compare_table(
    summaries: Mapping[str, Mapping],
    metrics: Sequence[str],
    stat: str = "mean",
    digits: int = 3,
) -> str:
    """Markdown table, pipelines (rows) x ``metrics`` (columns), best value per column in bold.

    ``summaries`` maps pipeline name to its summary.json dict (``Summary.to_dict()``) or to a
    flat ``{metric: value}`` dict; nested values use ``stat``. Direction comes from
    :func:`higher_is_better`; a best value shared by several rows (a tie at the shown
    precision, e.g. coverage 1.000 everywhere) or alone in its column is not bold; a missing
    value shows as "–".
    """
    header = "| pipeline | " + " | ".join(metrics) + " |"
    rule = "|---|" + "---:|" * len(metrics)
    values = {p: [_lookup(s, m, stat) for m in metrics] for p, s in summaries.items()}
    texts = {
        p: [_cell_text(v, m, digits) for v, m in zip(vals, metrics, strict=True)]
        for p, vals in values.items()
    }
    # per column: the pipeline holding its one best value
    bold = [
        _unique_best({p: v[j] for p, v in values.items()}, m, digits) for j, m in enumerate(metrics)
    ]
    lines = [header, rule]
    for p, cells in texts.items():
        cells = [f"**{c}**" if bold[j] == p else c for j, c in enumerate(cells)]
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _unique_best(values: Mapping[str, float | None], metric: str, digits: int) -> str | None:
    """The key whose value is best for ``metric`` — None when the metric has no direction,
    fewer than two values are there, or the best is tied at the shown precision (``digits``)."""
    shown = {k: _fmt(v, digits) for k, v in values.items() if v is not None}
    hib = higher_is_better(metric)
    if len(shown) < 2 or hib is None:
        return None
    best = _fmt((max if hib else min)(v for v in values.values() if v is not None), digits)
    holders = [k for k, text in shown.items() if text == best]
    return holders[0] if len(holders) == 1 else None


def _cell_text(v: float | None, metric: str, digits: int) -> str:
    # Unranked counts (n_valid, frames) read better without decimals.
    if v is not None and higher_is_better(metric) is None and v.is_integer():
        return _fmt(int(v))
    return _fmt(v, digits)


def repeated_runs_table(
    runs: Sequence[Path],
    pipelines: Sequence[str],
    frame_names: Sequence[str],
    metric: str,
    digits: int = 3,
) -> str:
    """Markdown table of ``metric`` per frame (rows) and pipeline (columns) over repeated runs.

    ``runs`` are report directories of the same evaluation repeated (e.g. hide-and-seek with
    several seeds), each holding ``<pipeline>/frames.csv``. A cell is the mean ± standard
    deviation over the runs; the last row averages each run over all frames first. The best
    mean of a row is bold unless tied at the shown precision.
    """
    # values[pipeline][frame index] = one value per run
    values: dict[str, dict[int, list[float]]] = {p: {} for p in pipelines}
    per_run_mean: dict[str, list[float]] = {p: [] for p in pipelines}
    for run in runs:
        for p in pipelines:
            with open(Path(run) / p / "frames.csv", newline="") as f:
                rows = [(int(r["frame_index"]), float(r[metric])) for r in csv.DictReader(f)]
            for index, value in rows:
                values[p].setdefault(index, []).append(value)
            per_run_mean[p].append(float(np.mean([v for _, v in rows])))
    body = [
        (name, {p: values[p].get(i, []) for p in pipelines}) for i, name in enumerate(frame_names)
    ]
    body.append((f"all {len(frame_names)}", per_run_mean))
    lines = [
        f"| {metric} (mean ± std, {len(runs)} runs) | " + " | ".join(pipelines) + " |",
        "|---|" + "---:|" * len(pipelines),
    ]
    for name, cells in body:
        means = {p: float(np.mean(v)) for p, v in cells.items() if v}
        texts = {
            p: f"{_fmt(means[p], digits)} ± {_fmt(float(np.std(cells[p])), digits)}" for p in means
        }
        best = _unique_best(means, metric, digits)
        row = [f"**{texts[p]}**" if p == best else texts.get(p, "–") for p in pipelines]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"

"""Tests for depth_perception.eval.report and the colouring helpers it draws with."""

import csv
import json
import math

import cv2
import numpy as np
import pytest

from depth_perception.core.visualize import (
    INVALID_ERROR_RGB,
    colorize_depth,
    colorize_error,
    colorize_mask,
    error_map,
    save_png,
    side_by_side,
)
from depth_perception.eval.report import (
    FrameResult,
    ReportWriter,
    compare_table,
    higher_is_better,
)

H, W = 24, 32


def _cv2_rgb(value_0_255: int, cmap: int) -> np.ndarray:
    """Independent reference colour: OpenCV's colormap of one uint8 value, as RGB."""
    bgr = cv2.applyColorMap(np.array([[value_0_255]], np.uint8), cmap)[0, 0]
    return bgr[::-1]


# --------------------------------------------------------------------------- visualize


def test_colorize_depth_near_is_warm_and_nan_black():
    depth = np.tile(np.linspace(1.0, 5.0, W, dtype=np.float32), (H, 1))
    depth[0, 0] = np.nan
    rgb = colorize_depth(depth, vmin=1.0, vmax=5.0)
    assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [0, 0, 0]
    # vmin (near) maps to the top of turbo (dark red), vmax (far) to its bottom (dark blue).
    np.testing.assert_array_equal(rgb[1, 0], _cv2_rgb(255, cv2.COLORMAP_TURBO))
    np.testing.assert_array_equal(rgb[1, -1], _cv2_rgb(0, cv2.COLORMAP_TURBO))
    assert rgb[1, 0, 0] > rgb[1, 0, 2] and rgb[1, -1, 2] > rgb[1, -1, 0]
    # Values beyond the range clip; 3.0 is mid-range: (5 - 3) / 4 * 255 = 127.5 -> 128.
    np.testing.assert_array_equal(
        colorize_depth(np.array([[3.0, 9.0]], np.float32), 1.0, 5.0),
        np.stack([_cv2_rgb(128, cv2.COLORMAP_TURBO), _cv2_rgb(0, cv2.COLORMAP_TURBO)])[None],
    )


def test_colorize_depth_robust_range_ignores_outliers():
    depth = np.full((10, 10), 2.0, np.float32)
    depth[:, 5:] = 4.0
    depth[0, 0] = 1000.0  # a single outlier must not squash the 2-4 m range
    rgb = colorize_depth(depth)
    assert not np.array_equal(rgb[5, 0], rgb[5, 9])
    np.testing.assert_array_equal(rgb[5, 9], _cv2_rgb(0, cv2.COLORMAP_TURBO))


def test_colorize_error_and_error_map():
    gt = np.array([[2.0, 2.0, 2.0, np.nan]], np.float32)
    pred = np.array([[2.0, 2.5, np.nan, 2.0]], np.float32)
    err = error_map(pred, gt)  # |2.5 - 2| / 2 = 0.25
    np.testing.assert_allclose(err[0, :2], [0.0, 0.25])
    assert np.isnan(err[0, 2:]).all()
    np.testing.assert_allclose(error_map(pred, gt, "abs")[0, 1], 0.5)
    np.testing.assert_allclose(error_map(pred, gt, "delta")[0, 1], 0.25)
    rgb = colorize_error(pred, gt)  # vmax 0.25 for absrel
    np.testing.assert_array_equal(rgb[0, 0], _cv2_rgb(0, cv2.COLORMAP_INFERNO))
    np.testing.assert_array_equal(rgb[0, 1], _cv2_rgb(255, cv2.COLORMAP_INFERNO))
    assert rgb[0, 2].tolist() == list(INVALID_ERROR_RGB) == rgb[0, 3].tolist()


def test_colorize_mask_bool_overlay_and_labels():
    mask = np.array([[True, False]])
    assert colorize_mask(mask).tolist() == [[[0, 255, 0], [0, 0, 0]]]
    base = np.full((1, 2, 3), 100, np.uint8)
    # alpha 0.5: (100, 100, 100) * 0.5 + (0, 255, 0) * 0.5 = (50, 177.5 -> 178, 50)
    assert colorize_mask(mask, base).tolist() == [[[50, 178, 50], [100, 100, 100]]]
    labels = colorize_mask(np.array([[0, 1, 2, 3, 1]]))
    assert labels[0, 0].tolist() == [0, 0, 0]
    assert labels[0, 1].tolist() == labels[0, 4].tolist()
    colours = {tuple(c) for c in labels[0, 1:4].tolist()}
    assert len(colours) == 3


def test_side_by_side_and_save_png_roundtrip(tmp_path):
    a = np.zeros((20, 30, 3), np.uint8)
    b = np.full((10, 10), 200, np.uint8)  # gray, half height: resized to 20 x 20
    out = side_by_side([a, b], ["a", "b"], gap=4)
    strip = out.shape[0] - 20
    assert strip > 0 and out.shape[1] == 30 + 4 + 20
    assert (out[strip:, :30] == 0).all() and (out[strip:, 34:] == 200).all()
    assert (out[strip:, 30:34] == 255).all()  # white gap
    assert (out[:strip, :30] > 32).any()  # white label text drawn on the dark strip
    no_labels = side_by_side([a, b])
    assert no_labels.shape == (20, 54, 3)
    path = save_png(tmp_path / "sub" / "x.png", out)
    back = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(back, out)
    with pytest.raises(ValueError):
        side_by_side([np.zeros((4, 4), np.float32)])


# --------------------------------------------------------------------------- ReportWriter


def _frame_inputs(i: int) -> dict:
    gt = np.full((H, W), 2.0, np.float32)
    gt[0, 0] = np.nan
    pred = gt * np.float32(1.0 + 0.01 * i)
    pred[1, 1] = np.nan
    return {
        "rgb": np.full((H, W, 3), 128, np.uint8),
        "input_depth": np.where(np.arange(W) % 3 == 0, gt, np.nan).astype(np.float32),
        "pred": pred,
        "gt": gt,
    }


def _write_report(tmp_path, **extra_summary):
    writer = ReportWriter(tmp_path / "out", pipeline="lingbot", title="Replay test", figure_every=5)
    for i in range(12):
        metrics = {"abs_rel": 0.01 * i, "delta1": 1.0 if i != 3 else math.nan}
        result = FrameResult(
            frame_index=100 + i,
            stamp_ns=1_000_000_000 + i * 100_000_000,  # 10 Hz
            pipeline="lingbot",
            metrics=metrics,
            latency_ms=10.0 + i,
            extra={"scene": "desk"} if i % 2 == 0 else {},
        )
        writer.add_frame(result, _frame_inputs(i))
    return writer, writer.finish(extra_summary)


def test_report_writer_summary_json(tmp_path):
    _, summary = _write_report(tmp_path, wall_time_s=0.6, dataset="desk_bag")
    data = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert data == summary.to_dict()
    assert data["title"] == "Replay test" and data["pipeline"] == "lingbot"
    assert data["frames"] == 12
    # abs_rel = 0.00 .. 0.11: mean = median = 0.055
    assert data["metrics"]["abs_rel"]["mean"] == pytest.approx(0.055)
    assert data["metrics"]["abs_rel"]["median"] == pytest.approx(0.055)
    assert data["metrics"]["abs_rel"]["n"] == 12
    assert data["metrics"]["delta1"] == {"mean": 1.0, "median": 1.0, "n": 11}  # NaN left out
    # latency 10 .. 21 ms: mean 15.5; p95 at position 0.95 * 11 = 10.45 -> 20 + 0.45 = 20.45
    assert data["latency_ms"]["mean"] == pytest.approx(15.5)
    assert data["latency_ms"]["p95"] == pytest.approx(20.45)
    # data time: 1.1 s span of 12 frames at 10 Hz + one period = 1.2 s; 1.2 / 0.6 = 2x real time
    assert data["real_time_factor"] == pytest.approx(2.0)
    assert data["extra"] == {"wall_time_s": 0.6, "dataset": "desk_bag"}
    assert data["figures"] == [
        "figures/frame_0100.png", "figures/frame_0105.png", "figures/frame_0110.png",
    ]  # fmt: skip


def test_report_writer_frames_csv(tmp_path):
    _write_report(tmp_path)
    with (tmp_path / "out" / "frames.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12
    assert list(rows[0]) == [
        "frame_index", "stamp_ns", "pipeline", "latency_ms", "abs_rel", "delta1", "extra.scene",
    ]  # fmt: skip
    assert [int(r["frame_index"]) for r in rows] == list(range(100, 112))
    assert int(rows[2]["stamp_ns"]) == 1_200_000_000
    assert float(rows[7]["abs_rel"]) == pytest.approx(0.07)
    assert float(rows[7]["latency_ms"]) == 17.0
    assert rows[3]["delta1"] == ""  # NaN -> empty cell
    assert rows[0]["extra.scene"] == "desk" and rows[1]["extra.scene"] == ""
    assert {r["pipeline"] for r in rows} == {"lingbot"}


def test_report_writer_markdown_and_figures(tmp_path):
    _write_report(tmp_path, real_time_factor=3.5, wall_time_s=0.6)
    out = tmp_path / "out"
    md = (out / "report.md").read_text()
    assert md.startswith("# Replay test\n")
    assert "| abs_rel | 0.0550 | 0.0550 | 12 |" in md
    assert "| delta1 | 1.0000 | 1.0000 | 11 |" in md
    assert "- real-time factor: 3.50" in md  # an explicit factor wins over wall_time_s
    assert "latency (ms): mean 15.5, median 15.5, p95 20.4" in md
    links = [line for line in md.splitlines() if line.startswith("![")]
    assert links == [f"![frame_{i:04d}](figures/frame_{i:04d}.png)" for i in (100, 105, 110)]
    assert sorted(p.name for p in (out / "figures").iterdir()) == [
        "frame_0100.png", "frame_0105.png", "frame_0110.png",
    ]  # fmt: skip

    fig = cv2.cvtColor(cv2.imread(str(out / "figures" / "frame_0105.png")), cv2.COLOR_BGR2RGB)
    # rgb | input depth | output | ground truth | error: 5 panels of W plus 4 gaps of 4 px
    assert fig.shape[1] == 5 * W + 4 * 4
    # The title strip on top (as side_by_side draws it alone), the colour bars below the panels.
    strip = side_by_side([np.zeros((H, W, 3), np.uint8)], ["t"]).shape[0] - H
    body = fig[strip : strip + H]
    panel = [body[:, k * (W + 4) : k * (W + 4) + W] for k in range(5)]
    assert (panel[0] == 128).all()
    assert panel[3][0, 0].tolist() == [0, 0, 0]  # gt NaN -> black
    assert panel[1][0, 1].tolist() == [0, 0, 0]  # sparse input depth: column 1 empty
    # error panel: frame 5 has AbsRel 0.05 everywhere valid: inferno(0.05 / 0.25 * 255 = 51)
    np.testing.assert_array_equal(panel[4][5, 5], _cv2_rgb(51, cv2.COLORMAP_INFERNO))
    assert panel[4][1, 1].tolist() == list(INVALID_ERROR_RGB)  # pred NaN -> dark grey


def test_report_writer_without_figures_or_latency(tmp_path):
    writer = ReportWriter(tmp_path, pipeline="raw", title="t", figure_every=0)
    for i in range(3):
        writer.add_frame(FrameResult(i, i, "raw", {"rmse": float(i)}), _frame_inputs(i))
    summary = writer.finish()
    assert summary.figures == [] and not (tmp_path / "figures").exists()
    assert summary.latency_ms is None and summary.real_time_factor is None
    assert summary.metrics["rmse"] == {"mean": 1.0, "median": 1.0, "n": 3}
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["latency_ms"] is None and "## Figures" not in (tmp_path / "report.md").read_text()


# --------------------------------------------------------------------------- compare_table


def test_higher_is_better():
    assert higher_is_better("delta1") and higher_is_better("boundary_f1")
    assert higher_is_better("foreground/delta1") and higher_is_better("pred_coverage")
    assert higher_is_better("abs_rel") is False and higher_is_better("rmse") is False
    assert higher_is_better("n_valid") is None


def test_compare_table_bold_best_per_column(tmp_path):
    _, summary = _write_report(tmp_path)
    summaries = {
        "lingbot": summary.to_dict(),  # abs_rel mean 0.055, delta1 1.0, no f1
        "raw": {"abs_rel": 0.2, "delta1": 0.7, "boundary_f1": 0.31, "n_valid": 10},
        "midas": {"metrics": {"abs_rel": {"mean": 0.1, "median": 0.09}}, "delta1": 1.0,
                  "boundary_f1": 0.45, "n_valid": 20},
    }  # fmt: skip
    table = compare_table(summaries, ["abs_rel", "delta1", "boundary_f1", "n_valid"])
    assert table == (
        "| pipeline | abs_rel | delta1 | boundary_f1 | n_valid |\n"
        "|---|---:|---:|---:|---:|\n"
        "| lingbot | **0.055** | 1.000 | – | – |\n"  # delta1: a tie, bold for no one
        "| raw | 0.200 | 0.700 | 0.310 | 10 |\n"
        "| midas | 0.100 | 1.000 | **0.450** | 20 |\n"
    )
    assert "| raw | 0.2 | 0.7 |" in compare_table(summaries, ["abs_rel", "delta1"], digits=1)
    # Millimetre errors from 1,000 on: whole numbers with separators, not 4.81e+03.
    mm = {"a": {"mae_mm_0-50m": 4810.4}, "b": {"mae_mm_0-50m": 12345.6}}
    assert "| a | **4,810** |" in compare_table(mm, ["mae_mm_0-50m"])
    assert "| b | 12,346 |" in compare_table(mm, ["mae_mm_0-50m"])
    # stat="median" reads the nested statistic where there is one.
    median = compare_table(summaries, ["abs_rel"], stat="median")
    assert "| midas | 0.090 |" in median and "| lingbot | **0.055** |" in median


def test_colour_bars_under_depth_and_error_panels():
    from depth_perception.eval.report import frame_figure

    gt = np.tile(np.linspace(1.0, 3.0, 64, dtype=np.float32), (48, 1))
    rgb = np.full((48, 64, 3), 100, np.uint8)
    fig = frame_figure({"rgb": rgb, "pred": gt * 1.1, "gt": gt})
    plain = side_by_side([rgb, rgb, rgb, rgb], ["rgb", "output", "ground truth", "AbsRel error"])
    assert fig.shape[1] == plain.shape[1] and fig.shape[0] > plain.shape[0]  # a footer strip
    ramp_row = plain.shape[0] + 4
    panel = slice(68 + 8, 68 + 56)  # inside the output panel, off its end labels
    row = fig[ramp_row, panel].astype(int)
    # Depth scale from near (warm: red) to far (cool: blue), as colorize_depth draws it.
    assert row[0, 0] > row[0, 2] and row[-1, 2] > row[-1, 0]
    assert (fig[ramp_row, :64] == 255).all()  # no bar under the colour image
    error_row = fig[ramp_row, 3 * 68 + 8 : 3 * 68 + 56].astype(int).sum(axis=1)
    assert error_row[0] < error_row[-1]  # error scale: 0 dark, 0.25 bright


def test_long_titles_stay_in_their_panel():
    img = np.zeros((48, 64, 3), np.uint8)
    long = "lingbot-depth/lingbot_depth_small:dinov2_vits14@1a2b3c4d+align"
    out = side_by_side([img, img], [long, ""])
    strip = out.shape[0] - 48
    assert (out[:strip, 68:] == 32).all()  # the second panel's title strip is untouched
    assert (out[:strip, 4:60] > 128).any()  # the first title was drawn (shrunk and cut) ...
    assert (out[:strip, 60:64] == 32).all()  # ... inside its margin, not clipped at the edge


def test_truncated_run_in_summary_and_report(tmp_path):
    writer = ReportWriter(tmp_path, "nearest", "cut short", figure_every=0)
    writer.add_frame(FrameResult(0, 1, "nearest", {"abs_rel": 0.1}))
    summary = writer.finish({}, truncated_reason="bag.db3: corrupt record")
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["truncated"] is True and data["truncated_reason"] == "bag.db3: corrupt record"
    assert summary.truncated
    report = (tmp_path / "report.md").read_text()
    assert "**Truncated run**: bag.db3: corrupt record. Only the 1 frame(s)" in report


def test_repeated_runs_table_mean_std_per_frame_and_overall(tmp_path):
    from depth_perception.eval.report import repeated_runs_table

    # Two runs (seeds) of two pipelines on two frames; rmse values chosen by hand.
    rmse = {"a": [[1.0, 3.0], [2.0, 5.0]], "b": [[1.5, 2.0], [1.5, 2.0]]}  # [run][frame]
    runs = [tmp_path / "seed_0", tmp_path / "seed_1"]
    for r, run in enumerate(runs):
        for p, vals in rmse.items():
            (run / p).mkdir(parents=True)
            lines = ["frame_index,rmse"] + [f"{i},{v}" for i, v in enumerate(vals[r])]
            (run / p / "frames.csv").write_text("\n".join(lines) + "\n")
    table = repeated_runs_table(runs, ["a", "b"], ["cap0", "cap1"], "rmse")
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}
    # cap0: a = mean(1, 2) = 1.5 ± 0.5, b = 1.5 ± 0: a tie at 3 decimals, nothing bold.
    assert rows["cap0"] == "| cap0 | 1.500 ± 0.500 | 1.500 ± 0.000 |"
    # cap1: a = 4 ± 1, b = 2 ± 0: b is best.
    assert rows["cap1"] == "| cap1 | 4.000 ± 1.000 | **2.000 ± 0.000** |"
    # all: per-run means a = 2.0, 3.5 -> 2.75 ± 0.75; b = 1.75, 1.75.
    assert rows["all 2"] == "| all 2 | 2.750 ± 0.750 | **1.750 ± 0.000** |"

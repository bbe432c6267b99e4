"""Replay evaluation: a tiny simulated bag through real nodes over DDS, and the same offline."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest

from depth_perception.core.metrics import valid_depth
from depth_perception.eval.evaluate import (
    EvalConfig,
    completion_metrics,
    evaluate,
    hide_and_seek,
    with_lidar_prompt,
)
from depth_perception.io.bag import write_sim_bag
from depth_perception.io.recording import bag_calibration, bag_info, read_rgbd_frames
from depth_perception.sim.sequence import SequenceConfig


@pytest.fixture(scope="module")
def tiny_bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("bags") / "tiny"
    cfg = SequenceConfig(scene_kind="tabletop", seed=3, n_frames=4, fps=10.0, width=96, height=72)
    write_sim_bag(path, cfg, progress=False)
    return path


def _read(path):
    return json.loads((path / "summary.json").read_text())


def test_dds_replay_writes_every_output_and_matches_offline(tiny_bag, tmp_path):
    frames = list(read_rgbd_frames(tiny_bag))
    assert len(frames) == 4 and frames[0].gt_depth is not None
    dds = evaluate(
        frames, EvalConfig("nearest", mode="dds", figure_every=2), tmp_path / "dds", "tiny", total=4
    )
    offline = evaluate(
        frames,
        EvalConfig("nearest", mode="offline", figure_every=2),
        tmp_path / "offline",
        "tiny",
        total=4,
    )
    out = tmp_path / "dds"
    summary = _read(out)
    assert summary["frames"] == 4 and summary["extra"]["frames_without_result"] == 0
    assert summary["extra"]["model_id"] == "classical/nearest"
    assert summary["real_time_factor"] > 0
    assert (out / "report.md").read_text().startswith("# tiny")
    rows = list(csv.DictReader((out / "frames.csv").open()))
    assert [int(r["frame_index"]) for r in rows] == [0, 1, 2, 3]
    assert sorted(p.name for p in (out / "figures").glob("*.png")) == [
        "frame_0000.png",
        "frame_0002.png",
    ]
    assert (out / "nearest_node.log").is_file()
    # The node and the in-process engine are the same code on the same (mm) input.
    for name in ("abs_rel", "rmse", "holes.abs_rel", "boundary_f1"):
        assert dds.metrics[name]["mean"] == pytest.approx(offline.metrics[name]["mean"], rel=1e-6)
    # FocusDepth region metrics over the run's targets.
    assert summary["extra"]["targets"]["n"] >= 1
    assert set(summary["extra"]["targets"]) >= {"foreground", "boundary", "global"}


def test_completion_metrics_by_hand():
    from depth_perception.core.camera import Intrinsics
    from depth_perception.io.frames import RGBDFrame

    gt = np.array([[1.0, 2.0], [4.0, 8.0]], np.float32)
    depth = np.array([[1.0, np.nan], [4.0, np.nan]], np.float32)  # two holes
    pred = np.array([[1.0, 2.5], [4.0, 6.0]], np.float32)
    frame = RGBDFrame(
        0, np.zeros((2, 2, 3), np.uint8), depth, Intrinsics(2, 2, 1, 1, 0.5, 0.5), gt_depth=gt
    )
    m = completion_metrics(frame, pred)
    # |2.5-2|/2 = 0.25, |6-8|/8 = 0.25 on the holes; 0 on the measured pixels
    assert m["holes.abs_rel"] == pytest.approx(0.25)
    assert m["abs_rel"] == pytest.approx(0.125)
    assert m["rmse"] == pytest.approx(np.sqrt((0.25 + 4.0) / 4))
    assert m["holes.fraction"] == pytest.approx(0.5)
    assert m["coverage"] == 1.0


def test_lidar_prompt_pipeline_uses_the_calibration(tiny_bag, tmp_path):
    calibration = bag_calibration(tiny_bag)
    frames = list(read_rgbd_frames(tiny_bag))
    prompted = list(with_lidar_prompt(frames, calibration))
    for frame, p in zip(frames, prompted, strict=True):
        ok = valid_depth(p.depth) & valid_depth(frame.gt_depth)
        assert 0 < ok.mean() < 0.5  # sparse
        # LiDAR points land on the surfaces the camera sees (most pixels; parallax aside).
        rel = np.abs(p.depth[ok] - frame.gt_depth[ok]) / frame.gt_depth[ok]
        assert np.median(rel) < 0.03
    summary = evaluate(
        frames,
        EvalConfig("jbu_lidar", mode="offline", figure_every=0),
        tmp_path / "jbu",
        "jbu",
        calibration=calibration,
    )
    assert summary.metrics["coverage"]["mean"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="calibration"):
        evaluate(frames, EvalConfig("jbu_lidar", mode="offline"), tmp_path / "x", "x")


def test_timed_replay_reports_real_time_factor(tiny_bag, tmp_path):
    summary = evaluate(
        read_rgbd_frames(tiny_bag),
        EvalConfig("passthrough", rate=2.0, figure_every=0),
        tmp_path / "timed",
        "timed",
        total=4,
    )
    assert summary.extra["rate"] == 2.0
    # Published at 2x the recorded 10 fps: the node keeps up with a pass-through, so every
    # frame comes back and the wall time is about half the recording's.
    assert summary.frames + summary.extra["frames_without_result"] == 4
    assert summary.frames >= 3
    assert summary.metrics["abs_rel"]["n"] == summary.frames


def test_hide_and_seek_scores_only_hidden_valid_pixels(tiny_bag):
    frames = list(read_rgbd_frames(tiny_bag))
    hidden = list(hide_and_seek(frames, seed=1, fraction=0.2))
    for raw, h in zip(frames, hidden, strict=True):
        gt_ok = valid_depth(h.gt_depth)
        assert not (gt_ok & valid_depth(h.depth)).any()  # hidden pixels are not in the input
        assert valid_depth(raw.depth)[gt_ok].all()  # ...and were valid raw depth
        np.testing.assert_array_equal(h.gt_depth[gt_ok], raw.depth[gt_ok])
        assert gt_ok.sum() >= 0.2 * valid_depth(raw.depth).sum()


def test_bag_info_counts_frames(tiny_bag):
    info = bag_info(tiny_bag)
    assert info["frames"] == 4
    assert info["topics"]["/targets"]["type"] == "depth_perception_msgs/msg/TargetPromptArray"


def test_corruption_protocol_input_comes_from_ground_truth(tiny_bag):
    from depth_perception.eval.evaluate import with_corruption

    frames = list(read_rgbd_frames(tiny_bag))
    easy = list(with_corruption(frames, "easy", seed=0))
    hard = list(with_corruption(frames, "hard", seed=0))
    again = list(with_corruption(frames, "hard", seed=0))
    for f, e, h, a in zip(frames, easy, hard, again, strict=True):
        np.testing.assert_array_equal(h.depth, a.depth)  # deterministic
        ok = valid_depth(h.depth)
        assert valid_depth(e.depth).sum() > ok.sum()  # harder level, more holes
        assert not (ok & ~valid_depth(f.gt_depth)).any()  # never depth where GT has none
        rel = np.abs(h.depth[ok] - f.gt_depth[ok]) / f.gt_depth[ok]
        assert 0 < np.median(rel) < 0.05  # noisy ground truth, not the sensor's depth


def test_complete_files_from_a_bag_and_real_captures(tiny_bag, tmp_path):
    import cv2

    from depth_perception.core.depth import depth_to_mm
    from depth_perception.engines.classical import ClassicalFillEngine
    from depth_perception.eval.complete_files import complete_files, frames_from, pipeline_items
    from depth_perception.eval.pipelines import get_pipeline
    from depth_perception.io.image_folder import find_real_captures

    engine = ClassicalFillEngine("nearest")
    pipeline = get_pipeline("nearest")
    items = pipeline_items(pipeline, frames_from(tiny_bag))
    written = complete_files(engine, items, tmp_path / "bag")
    assert [p.name for p in written] == [f"{i:06d}_depth.png" for i in range(4)]
    frame = next(iter(read_rgbd_frames(tiny_bag)))
    expected = engine.complete(frame.rgb, frame.depth, frame.intrinsics).depth
    png = cv2.imread(str(written[0]), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16
    np.testing.assert_array_equal(png, depth_to_mm(expected))
    np.testing.assert_array_equal(np.load(tmp_path / "bag" / "000000_depth.npy"), expected)
    assert (tmp_path / "bag" / "000000_preview.png").is_file()

    real = find_real_captures()
    if real is not None:  # ../shared beside the checkout (CI has it)
        items = pipeline_items(pipeline, frames_from(real))
        names = [p.name for p in complete_files(engine, items, tmp_path / "real")]
        assert names == [f"capture_{i}_depth.png" for i in range(4)]


# --------------------------------------------------------------------------- MetricAnything teacher


@pytest.fixture(scope="module")
def street_bag(tmp_path_factory):
    from depth_perception.cli import main

    path = tmp_path_factory.mktemp("bags") / "street"
    args = ["make-bag", str(path), "--kind", "street", "--frames", "3", "--width", "96"]
    assert main([*args, "--height", "72"]) == 0
    return path


def test_eval_bag_scores_the_teacher_and_the_radar_protocol(street_bag, tmp_path, capsys):
    from tiny_metric_anything import save_tiny_teacher

    from depth_perception.cli import main
    from depth_perception.eval.evaluate import RANGE_METRICS
    from depth_perception.models.checkpoints import weights_digest

    teacher = save_tiny_teacher(tmp_path / "teacher")
    out = tmp_path / "eval"
    names = ["ma_teacher_lidar", "ma_teacher_radar", "jbu_radar", "ma_teacher_down8"]
    args = ["eval-bag", str(street_bag), "--mode", "offline", "--checkpoint", str(teacher)]
    args += ["--out", str(out), "--figure-every", "0"]
    assert main([*args, *(a for n in names for a in ("--pipeline", n))]) == 0
    summaries = {n: _read(out / n) for n in names}
    digest = weights_digest(teacher)
    for name, summary in summaries.items():
        assert summary["frames"] == 3, name
        assert summary["extra"]["mode"] == "offline"
        assert summary["metrics"]["coverage"]["mean"] > 0, name
        assert ("radar" in name) == all(m in summary["metrics"] for m in RANGE_METRICS), name
        if name.startswith("ma_teacher"):  # --checkpoint reached the teacher
            assert f"metric-anything-teacher/teacher@{digest}" in summary["extra"]["model_id"]
    assert summaries["jbu_radar"]["extra"]["model_id"] == "classical/jbu"
    # Table 2's numbers: millimetres, growing with the range as far ground truth adds error.
    radar = summaries["ma_teacher_radar"]["metrics"]
    assert radar["rmse_mm_0-50m"]["n"] == 3
    assert radar["rmse_mm_0-50m"]["mean"] <= radar["rmse_mm_0-80m"]["mean"]
    assert radar["rmse_mm_0-80m"]["mean"] > 100.0  # a random network: metres off, in mm
    header = (out / "comparison.md").read_text().splitlines()[2]
    assert "rmse_mm_0-80m" in header and "abs_rel" in header
    table = capsys.readouterr().out
    assert "ma_teacher_down8" in table and "| jbu_radar |" in table


def test_synthetic_prompts_are_drawn_from_the_ground_truth_once_per_frame(street_bag):
    from depth_perception.eval.evaluate import pipeline_frames, synthetic_prompt_depth
    from depth_perception.eval.pipelines import MissingInputError, expand_pipelines, get_pipeline

    assert expand_pipelines(["ma_teacher"]) == [
        f"ma_teacher_{p}"
        for p in (
            *("lidar", "radar", "sensor", "extreme", "down8", "down16"),
            *("lidar_aligned", "radar_aligned"),
        )
    ]
    aligned = get_pipeline("ma_teacher_lidar_aligned", checkpoint="teacher_tiny")
    assert aligned.node_parameters["output_alignment"] == "global"
    assert get_pipeline("ma_teacher_lidar").node_parameters["output_alignment"] == "none"
    frames = list(read_rgbd_frames(street_bag))
    extreme = get_pipeline("ma_teacher_extreme")
    assert extreme.roles == ("rgb", "rgb_info", "depth")
    assert extreme.node_parameters["prompt_sources"] == ["sensor_depth"]
    fed = list(pipeline_frames(extreme, frames))
    again = list(pipeline_frames(extreme, frames))
    for (frame, inputs), (frame2, _), original in zip(fed, again, frames, strict=True):
        prompt = inputs.prompt
        assert np.isfinite(prompt).sum() == 100  # Table 1's extremely sparse prompt
        np.testing.assert_array_equal(frame.depth, prompt)  # what the replay publishes
        np.testing.assert_array_equal(frame2.depth, prompt)  # the same draw every run
        ok = np.isfinite(prompt)
        np.testing.assert_array_equal(prompt[ok], original.gt_depth[ok])  # as measured
        np.testing.assert_array_equal(frame.gt_depth, original.gt_depth)  # scored as before
    draws = [np.flatnonzero(np.isfinite(inputs.prompt)) for _, inputs in fed]
    assert max(np.nanmax(inputs.prompt) for _, inputs in fed) > 65.535  # beyond 16UC1 mm
    assert not np.array_equal(draws[0], draws[1])  # each frame its own draw
    down16 = synthetic_prompt_depth(frames[0], "down16")
    assert np.isfinite(down16).sum() == np.ceil(72 / 16) * np.ceil(96 / 16)
    blind = [replace(f, gt_depth=None) for f in frames]
    with pytest.raises(MissingInputError, match="ground truth .the down8 prompt is drawn"):
        pipeline_frames(get_pipeline("nearest_down8"), blind)


def test_synthetic_prompts_are_not_drawn_from_hidden_pixels(tiny_bag):
    from depth_perception.eval.evaluate import hide_and_seek
    from depth_perception.eval.pipelines import PIPELINES, missing_inputs

    frame = next(iter(read_rgbd_frames(tiny_bag)))
    assert missing_inputs(PIPELINES["ma_teacher_down8"], frame) == []
    hidden = next(hide_and_seek([frame]))
    assert "hidden pixels" in " ".join(missing_inputs(PIPELINES["ma_teacher_down8"], hidden))
    assert missing_inputs(PIPELINES["nearest"], hidden) == []

"""eval-depthlm on a tiny generated bag with a tiny DepthLM that always answers 2.5 m
(test/tiny_depthlm.py): the sampled pixels (keyed, ground truth valid, marker fits), the
constant, training-median and model δ1 by hand, failures counted, a dense pipeline read at the
same pixels as range, a pipeline the bag cannot feed skipped, and the official jsonl path."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from tiny_depthlm import ANSWER_M, build_fixed_answer_qwen

from depth_perception.cli import main
from depth_perception.core.depthlm import load_rgb
from depth_perception.engines.classical import ClassicalFillEngine
from depth_perception.eval.depthlm import eligible_mask
from depth_perception.eval.evaluate import chain_bags
from depth_perception.models.depthlm import DepthLM

MEDIAN_M = 1.8


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("depthlm_eval")
    bag = root / "bag"
    args = ["make-bag", str(bag), "--frames", "2", "--width", "64", "--height", "48"]
    assert main([*args, "--no-lidar", "--no-radar", "--seed", "4"]) == 0
    model = build_fixed_answer_qwen(root / "model")
    settings = json.loads((model / "depthlm.json").read_text())
    (model / "depthlm.json").write_text(json.dumps({**settings, "train_median_range_m": MEDIAN_M}))
    return bag, model, list(chain_bags([bag]))


def _rows(out):
    with (out / "pixels.csv").open() as f:
        return list(csv.DictReader(f))


def _delta1(value, truths):
    truths = np.asarray(truths)
    return float(np.mean(np.maximum(value / truths, truths / value) < 1.25))


def test_bag_scores_by_hand(setup, tmp_path):
    bag, model, frames = setup
    out = tmp_path / "out"
    argv = ["eval-depthlm", str(bag), "--checkpoint", str(model), "--device", "cpu"]
    argv += ["--pixels-per-image", "20", "--seed", "3", "--out", str(out)]
    assert main([*argv, "--dense", "nearest", "--dense", "jbu_lidar"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = _rows(out)
    assert summary["frames_scored"] == 2 and len(rows) == 40
    lm = DepthLM.from_dir(model)
    truths = []
    for index, frame in enumerate(frames):
        mine = [r for r in rows if int(r["frame"]) == index]
        uv = np.array([[int(r["u"]), int(r["v"])] for r in mine])
        assert len(np.unique(uv, axis=0)) == 20
        # every sampled pixel has ground truth and a marker that fits the model's view
        assert eligible_mask(
            frame.gt_depth, lm.prepare_frame(frame.rgb, frame.intrinsics), uv
        ).all()
        # its range by hand: z * |(x', y', 1)|
        k = frame.intrinsics
        z = frame.gt_depth[uv[:, 1], uv[:, 0]].astype(np.float64)
        x, y = (uv[:, 0] - k.cx) / k.fx, (uv[:, 1] - k.cy) / k.fy
        rng = z * np.sqrt(x * x + y * y + 1.0)
        np.testing.assert_allclose([float(r["truth_m"]) for r in mine], rng, rtol=1e-6)
        truths += rng.tolist()
        # the dense pipeline at the same pixels: nearest's depth there, as range
        filled = ClassicalFillEngine("nearest").complete(frame.rgb, frame.depth, k).depth
        dense = filled[uv[:, 1], uv[:, 0]] * np.sqrt(x * x + y * y + 1.0)
        np.testing.assert_allclose([float(r["nearest"]) for r in mine], dense, rtol=1e-5)
    methods = summary["methods"]
    assert methods["constant_2m"]["delta1"] == pytest.approx(_delta1(2.0, truths))
    assert methods["train_median"]["delta1"] == pytest.approx(_delta1(MEDIAN_M, truths))
    assert methods["depthlm"]["delta1"] == pytest.approx(_delta1(ANSWER_M, truths))
    assert methods["depthlm"]["n_failed"] == 0 and methods["depthlm"]["n"] == 40
    absrel = np.mean(np.abs(ANSWER_M - np.array(truths)) / np.array(truths))
    assert methods["depthlm"]["abs_rel"] == pytest.approx(absrel)
    assert "nearest" in methods and "jbu_lidar" not in methods
    assert any(n.startswith("jbu_lidar skipped: needs a LiDAR scan") for n in summary["notes"])
    report = (out / "report.md").read_text()
    assert "| train_median |" in report and "figures/frame_0000.png" in report
    assert (out / "figures" / "frame_0000.png").is_file()
    # the same seed draws the same pixels; another seed others
    again = tmp_path / "again"
    argv_again = [a if a != str(out) else str(again) for a in argv]
    assert main([*argv_again, "--max-frames", "1", "--max-new-tokens", "3"]) == 0
    assert [(r["u"], r["v"]) for r in _rows(again)] == [(r["u"], r["v"]) for r in rows[:20]]
    # ... and an answer cut short (3 tokens: no closing tag) is a failure, counted
    cut = json.loads((again / "summary.json").read_text())["methods"]["depthlm"]
    assert cut["n_failed"] == cut["n"] == 20 and cut["delta1"] == 0.0 and cut["abs_rel"] is None
    assert {r["status"] for r in _rows(again)} == {"failed"}


def test_official_jsonl(setup, tmp_path):
    _, model, frames = setup
    frame = frames[0]
    k = frame.intrinsics
    from depth_perception.core.visualize import save_png

    save_png(tmp_path / "images" / "a.png", frame.rgb)
    assert (load_rgb(tmp_path / "images" / "a.png") == frame.rgb).all()
    record = {
        "image": "/images/a.png",
        "intrinsics": [k.fx, k.fy, k.cx, k.cy, k.width, k.height],
        "pixel_coords": [[32, 24], [30, 20], [20, 28], [36, 26], [0, 0]],
        "depth": [2.0, 3.0, 2.6, 10.0, 2.5],
    }
    jsonl = tmp_path / "eval.jsonl"
    jsonl.write_text(json.dumps(record) + "\n")
    out = tmp_path / "out"
    argv = ["eval-depthlm", "--jsonl", str(jsonl), "--checkpoint", str(model), "--device", "cpu"]
    assert main([*argv, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    m = summary["methods"]["depthlm"]
    # 2.5 vs 2.0: ratio 1.25, not < 1.25; vs 3.0 and 2.6: hits; vs 10: miss; (0, 0): no marker
    assert m["delta1"] == pytest.approx(2 / 5) and m["n_failed"] == 1 and m["n"] == 5
    assert summary["pixels_too_close_to_border"] == 1
    assert summary["methods"]["constant_2m"]["delta1"] == pytest.approx(
        _delta1(2.0, record["depth"])
    )
    assert (out / "report.md").is_file()

"""The `depth-perception` CLI on bad data and user errors: partial results, one-line errors."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from bag_damage import flip_chunk_byte, garble_sqlite_message, tiny_bag

from depth_perception.cli import main


def run(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and "frame/s]" not in line]
    assert len(lines) == 1, err
    assert lines[0].startswith("depth-perception: error: ")
    return lines[0]


@pytest.fixture(scope="module")
def sqlite_bag(tmp_path_factory):
    return tiny_bag(tmp_path_factory.mktemp("bags") / "clean", frames=4)


def _eval_bag(capsys, bag, out, *extra):
    return run(capsys, "eval-bag", bag, "--mode", "offline", "--out", out,
               "--figure-every", "0", *extra)  # fmt: skip


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_eval_bag_keeps_what_it_scored_before_a_corrupt_record(tmp_path, capsys, storage):
    bag = tiny_bag(tmp_path / "bag", storage)
    if storage == "sqlite3":
        garble_sqlite_message(bag, 3)
        expected, where = 3, "cannot decode the /camera/rgb/image_rect_color message"
    else:
        _, chunk = flip_chunk_byte(bag, 1)
        expected = sum(t < chunk.message_start_ns for t in range(1_000_000_000, 1_600_000_000,
                                                                   100_000_000))  # fmt: skip
        where = f"MCAP chunk at byte offset {chunk.offset}: CRC mismatch"
    out = tmp_path / "out"
    code, stdout, err = _eval_bag(capsys, bag, out, "--pipeline", "nearest", "--pipeline",
                                  "ipbasic")  # fmt: skip
    assert code == 1
    assert where in one_error_line(err) and "partial results" in err
    for name in ("nearest", "ipbasic"):
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["frames"] == expected > 0
        assert summary["truncated"] is True and where in summary["truncated_reason"]
        rows = list(csv.DictReader((out / name / "frames.csv").open()))
        assert [int(r["frame_index"]) for r in rows] == list(range(expected))
        assert "**Truncated run**" in (out / name / "report.md").read_text()
    comparison = (out / "comparison.md").read_text()
    assert "Truncated run" in comparison and "exited with status 1" in comparison
    assert "| nearest |" in comparison and "| ipbasic |" in comparison


def test_clean_run_is_not_truncated(sqlite_bag, tmp_path, capsys):
    code, _, _ = _eval_bag(capsys, sqlite_bag, tmp_path, "--pipeline", "nearest")
    summary = json.loads((tmp_path / "nearest" / "summary.json").read_text())
    assert code == 0 and summary["truncated"] is False and summary["frames"] == 4
    assert "Truncated" not in (tmp_path / "comparison.md").read_text()


def _captures(root, n=2):
    for i in range(n):
        d = root / f"capture_{i}"
        d.mkdir(parents=True)
        depth = np.full((48, 64), 1500 + 100 * i, np.uint16)
        depth[:, :8] = 0
        assert cv2.imwrite(str(d / "rgb.png"), np.full((48, 64, 3), 90, np.uint8))
        assert cv2.imwrite(str(d / "raw_depth.png"), depth)
        (d / "intrinsics.txt").write_text("60 0 32\n0 60 24\n0 0 1\n")
    return root


def test_eval_folder_skips_a_pipeline_the_captures_cannot_feed(tmp_path, capsys):
    folder = _captures(tmp_path / "captures")
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, "eval-folder", folder, "--mode", "offline", "--out", out,
                          "--figure-every", "0", "--pipeline", "jbu_lidar", "--pipeline",
                          "nearest", "--pipeline", "inpaint_telea")  # fmt: skip
    assert code == 0
    assert "jbu_lidar skipped: pipeline jbu_lidar needs a LiDAR scan" in stdout
    comparison = (out / "comparison.md").read_text()
    header = next(line for line in comparison.splitlines() if line.startswith("| pipeline"))
    # Hide-and-seek: holes.* repeat the overall metrics, boundary F1 means nothing there.
    assert header == "| pipeline | abs_rel | rmse | mae | delta1 | delta2 | delta3 | coverage |"
    assert "| nearest |" in comparison and "| inpaint_telea |" in comparison
    assert "- jbu_lidar skipped: pipeline jbu_lidar needs a LiDAR scan" in comparison
    assert "**1.000**" not in comparison  # coverage ties at 1.000: bold for no one
    assert not (out / "jbu_lidar").exists()


def test_pipeline_groups(sqlite_bag, tmp_path, capsys):
    from depth_perception.eval.pipelines import LEARNED, PIPELINES, expand_pipelines

    assert expand_pipelines(["nearest", "all"]) == list(PIPELINES)
    assert expand_pipelines(["learned", "nearest", "lingbot"]) == [*LEARNED, "nearest"]


def test_complete_refuses_a_pipeline_whose_input_is_missing(tmp_path, capsys):
    bag = tiny_bag(tmp_path / "nolidar", frames=1, lidar=False)
    code, _, err = run(capsys, "complete", bag, "--pipeline", "jbu_lidar", "--out",
                       tmp_path / "out")  # fmt: skip
    assert code == 2
    assert "pipeline jbu_lidar needs a LiDAR scan" in one_error_line(err)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_complete_feeds_the_lidar_prompt_to_a_lidar_pipeline(sqlite_bag, tmp_path, capsys):
    from depth_perception.engines.classical import ClassicalFillEngine
    from depth_perception.eval.evaluate import chain_bags, with_lidar_prompt

    code, _, _ = run(capsys, "complete", sqlite_bag, "--pipeline", "jbu_lidar", "--out", tmp_path)
    assert code == 0
    frame = next(with_lidar_prompt(chain_bags([sqlite_bag])))
    expected = ClassicalFillEngine("jbu").complete(frame.rgb, frame.depth, frame.intrinsics)
    np.testing.assert_array_equal(np.load(tmp_path / "000000_depth.npy"), expected.depth)


@pytest.mark.parametrize(
    "case",
    ["missing bag", "missing folder", "output under a file", "corrupt bag", "zero frames",
     "negative frames", "unknown pipeline", "missing complete input"],
)  # fmt: skip
def test_user_errors_are_one_line_and_exit_2(case, sqlite_bag, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 9}\n")
    args = {
        "missing bag": ["eval-bag", tmp_path / "nope", "--out", tmp_path / "o"],
        "missing folder": ["eval-folder", tmp_path / "nope", "--out", tmp_path / "o"],
        "output under a file": ["eval-bag", sqlite_bag, "--out", tmp_path / "file.txt" / "o"],
        "corrupt bag": ["eval-bag", junk, "--out", tmp_path / "o"],
        "zero frames": ["eval-bag", sqlite_bag, "--max-frames", "0"],
        "negative frames": ["eval-bag", sqlite_bag, "--max-frames", "-3"],
        "unknown pipeline": ["eval-bag", sqlite_bag, "--pipeline", "magic"],
        "missing complete input": ["complete", tmp_path / "nope", "--out", tmp_path / "o"],
    }[case]
    code, _, err = run(capsys, *args)
    assert code == 2
    line = one_error_line(err)
    assert "Traceback" not in err
    if "missing" in case:
        assert "nope" in line
    if case == "corrupt bag":
        assert f"{junk}: not a readable rosbag" in line


def test_failed_image_writes_raise_naming_the_path(sqlite_bag, tmp_path):
    from depth_perception.engines.classical import ClassicalFillEngine
    from depth_perception.eval.complete_files import complete_files, frames_from, pipeline_items
    from depth_perception.eval.pipelines import get_pipeline

    (tmp_path / "000000_depth.png").mkdir()  # cv2.imwrite cannot write there: returns False
    items = pipeline_items(get_pipeline("nearest"), frames_from(sqlite_bag))
    with pytest.raises(OSError, match=r"could not write .*000000_depth\.png"):
        complete_files(ClassicalFillEngine("nearest"), items, tmp_path)


def test_depth_bins_add_abs_rel_by_range(tmp_path, capsys):
    folder = _captures(tmp_path / "captures")
    out = tmp_path / "out"
    code, _, _ = run(capsys, "eval-folder", folder, "--mode", "offline", "--out", out,
                     "--figure-every", "0", "--pipeline", "nearest",
                     "--depth-bins", "0,1,2")  # fmt: skip
    assert code == 0
    comparison = (out / "comparison.md").read_text()
    header = next(line for line in comparison.splitlines() if line.startswith("| pipeline"))
    assert header.endswith("| coverage | abs_rel_0-1m | abs_rel_1-2m | abs_rel_>2m |")
    metrics = json.loads((out / "nearest" / "summary.json").read_text())["metrics"]
    assert {"abs_rel_0-1m", "abs_rel_1-2m", "abs_rel_>2m"} <= set(metrics)
    code, _, err = run(capsys, "eval-folder", folder, "--depth-bins", "0,5,3")
    assert code == 2 and "increase" in err

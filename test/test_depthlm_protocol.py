"""DepthLM protocol (core): focal normalisation, marker, texts, parsing, scoring, jsonl.

Expected values are worked out by hand from the official ``utils/datasets.py`` formulas
(``normalizing_focal_length``, the pixel mapping of ``dataset_inference``, the arrow loops).
"""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from PIL import Image

from depth_perception.core.camera import Intrinsics
from depth_perception.core.depthlm import (
    RANGE_QUESTION,
    Z_QUESTION,
    ParsedAnswer,
    ProcessorGrid,
    TooCloseToBorder,
    delta1_per_sample,
    draw_marker,
    fit_to_grid,
    kind_of_question,
    marker_fits,
    marker_pixels,
    normalise_focal,
    parse_answer,
    pixel_distances,
    range_image,
    read_eval_jsonl,
    score_answers,
    target_text,
)


def _image(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 200, (height, width, 3), dtype=np.uint8)


# -- focal normalisation ------------------------------------------------------------------------


def test_normalise_halves_and_maps_pixels_by_hand():
    k = Intrinsics(200, 100, 100.0, 100.0, 99.5, 49.5)
    frame = normalise_focal(_image(200, 100), k, f_uni=50.0)
    # s = 0.5: 100x50, every intrinsic halved (no half-pixel term, unlike Intrinsics.scaled)
    assert frame.size == (100, 50)
    assert (frame.intrinsics.fx, frame.intrinsics.fy) == (50.0, 50.0)
    assert (frame.intrinsics.cx, frame.intrinsics.cy) == (49.75, 24.75)
    assert k.scaled(100, 50).cx == 49.5  # why we do not use `scaled` here
    # (10 - 99.5) * 0.5 + 49.75 = 5.0; (20 - 49.5) * 0.5 + 24.75 = 10.0
    assert frame.map_pixel(10, 20) == (5, 10)
    # (11 - 99.5) * 0.5 + 49.75 = 5.5 -> 5; (21 - 49.5) * 0.5 + 24.75 = 10.5 -> 10
    assert frame.map_pixel(11, 21) == (5, 10)
    # (-3 - 99.5) * 0.5 + 49.75 = -1.5 -> -1, not -2: int() truncates toward zero
    assert frame.map_pixel(-3, -3) == (-1, -1)
    # the image is Pillow's bicubic resize, as the official ``image.resize``
    expected = np.asarray(Image.fromarray(_image(200, 100)).resize((100, 50), Image.BICUBIC))
    np.testing.assert_array_equal(frame.image, expected)


def test_normalise_ibims_example_by_hand():
    # first record of the official examples/ibims1/ibims1_val.jsonl at the eval's f_uni = 750
    k = Intrinsics(640, 480, 559.62, 558.14, 361.87, 241.99)
    frame = normalise_focal(np.zeros((480, 640, 3), np.uint8), k, f_uni=750.0)
    # s = 750 / 559.62 = 1.3401951; 640 s = 857.72, 480 s = 643.29
    assert frame.size == (857, 643)
    assert frame.intrinsics.fx == pytest.approx(750.0)
    assert frame.intrinsics.fy == pytest.approx(558.14 * 1.3401951, abs=1e-4)
    # u: 157.13 s + 361.87 s = 695.56 -> 695; v: -112.99 s + 241.99 s = 172.89 -> 172
    assert frame.map_pixel(519, 129) == (695, 172)
    # u: -316.87 s + 484.98 = 60.31 -> 60; v: -185.99 s + 324.31 = 75.05 -> 75
    assert frame.map_pixel(45, 56) == (60, 75)
    np.testing.assert_array_equal(frame.map_pixels([[519, 129], [45, 56]]), [[695, 172], [60, 75]])


def test_fx_differs_from_fy_keeps_non_square_pixels_like_the_official_code():
    k = Intrinsics(200, 100, 100.0, 200.0, 100.0, 50.0)
    frame = normalise_focal(_image(200, 100), k, f_uni=50.0)
    # s = f_uni / fx = 0.5 on both axes: fx' = 50, fy' = 100 (not resampled to square pixels)
    assert frame.size == (100, 50)
    assert (frame.intrinsics.fx, frame.intrinsics.fy) == (50.0, 100.0)
    # v maps with fy' / fy = 0.5: (30 - 50) * 0.5 + 25 = 15
    assert frame.map_pixel(40, 30) == (20, 15)


def test_official_undistort_step_is_a_no_op_for_zero_distortion():
    # The official loader calls undistort_image when |fx - fy| > 1e-3; we skip it: a no-op.
    K = np.array([[559.62, 0, 361.87], [0, 558.14, 241.99], [0, 0, 1]])
    dist = np.zeros((4, 1))
    new_k, _ = cv2.getOptimalNewCameraMatrix(K, dist, (640, 480), 1, (640, 480))
    np.testing.assert_allclose(new_k, K, atol=1e-9)
    img = _image(640, 480)
    np.testing.assert_array_equal(cv2.undistort(img, K, dist, None, new_k), img)


def test_normalise_rejects_bad_inputs():
    k = Intrinsics(20, 10, 10.0, 10.0, 10.0, 5.0)
    with pytest.raises(ValueError, match="intrinsics are for"):
        normalise_focal(_image(21, 10), k, 10.0)
    with pytest.raises(ValueError, match="f_uni"):
        normalise_focal(_image(20, 10), k, 0.0)


def test_fit_to_grid_crops_to_multiples_and_keeps_the_focal():
    k = Intrinsics(200, 150, 120.0, 118.0, 99.5, 74.5)
    frame = normalise_focal(_image(200, 150), k, f_uni=100.0)  # 166 x 125
    fitted = fit_to_grid(frame, ProcessorGrid(multiple=28, min_pixels=3136, max_pixels=50176))
    # 166 -> 140 (offset 13), 125 -> 112 (offset 6); focal unchanged, principal point shifted
    assert fitted.size == (140, 112)
    assert (fitted.offset_x, fitted.offset_y) == (13, 6)
    assert fitted.intrinsics.fx == pytest.approx(100.0)
    assert fitted.intrinsics.cx == pytest.approx(frame.intrinsics.cx - 13)
    np.testing.assert_array_equal(fitted.image, frame.image[6:118, 13:153])
    x, y = frame.map_pixel(100, 75)
    assert fitted.map_pixel(100, 75) == (x - 13, y - 6)


def test_fit_to_grid_resizes_only_when_a_crop_does_not_fit():
    k = Intrinsics(200, 150, 100.0, 100.0, 100.0, 75.0)
    frame = normalise_focal(_image(200, 150), k, f_uni=100.0)
    grid = ProcessorGrid(multiple=28, max_pixels=28 * 28 * 20)  # 15680 px < 196 x 140
    fitted = fit_to_grid(frame, grid)
    assert grid.accepts(*fitted.size)
    w, h = fitted.size
    assert fitted.intrinsics.fx == pytest.approx(100.0 * w / 200)
    # one truncation from the source pixel: int((u - cx) * sx + cx * sx) = int(u * sx)
    assert fitted.map_pixel(150, 30) == (int(150 * w / 200), int(30 * h / 150))


# -- marker ---------------------------------------------------------------------------------------


def test_marker_pixels_exact():
    img = np.zeros((20, 20, 3), np.uint8)
    out = draw_marker(img, 10, 10)
    red = {(int(x), int(y)) for y, x in zip(*np.nonzero(out.any(axis=2)), strict=True)}
    expected = {(9, 10), (8, 10), (7, 10), (6, 10), (5, 10), (8, 9), (8, 11), (7, 8), (7, 12)}
    assert red == expected == set(marker_pixels(10, 10))
    for x, y in expected:
        assert tuple(out[y, x]) == (255, 0, 0)
    assert tuple(out[10, 10]) == (0, 0, 0)  # the target itself untouched
    assert not img.any()  # a copy


@pytest.mark.parametrize(
    ("x", "y", "fits"),
    [
        (5, 10, True),
        (4, 10, False),
        (14, 10, True),  # W - 6
        (15, 10, False),  # W - 5
        (10, 5, True),
        (10, 4, False),
        (10, 14, True),
        (10, 15, False),
        (-1, 10, False),
        (10, 100, False),
    ],
)
def test_marker_border(x, y, fits):
    img = np.zeros((20, 20, 3), np.uint8)
    assert marker_fits(x, y, 20, 20) is fits
    if fits:
        draw_marker(img, x, y)
    else:
        with pytest.raises(TooCloseToBorder, match="too close to the border") as info:
            draw_marker(img, x, y)
        assert isinstance(info.value, ValueError)
        assert (info.value.x, info.value.y) == (x, y)


# -- texts ----------------------------------------------------------------------------------------


def test_texts_exact():
    assert RANGE_QUESTION == (
        "Given this image, how far is the point pointed by the red arrow from the camera? Output "
        "the thinking process in <think> </think> and final answer (the meter number only, "
        "without the unit) in <answer> </answer> tags."
    )
    assert target_text(3.14159) == (
        "<think> The point is around 3.14 meters away from the camera. </think>\n\n"
        "<answer> 3.14 </answer>"
    )
    assert "<answer> 12.50 </answer>" in target_text(12.5, "z")
    assert kind_of_question(RANGE_QUESTION) == "range"
    assert kind_of_question(Z_QUESTION) == "z"
    assert kind_of_question("  " + RANGE_QUESTION.replace(" ", "\n", 1)) == "range"
    assert kind_of_question("what colour is it?") is None
    with pytest.raises(ValueError):
        target_text(1.0, "depth")  # type: ignore[arg-type]


# -- parsing and scoring ------------------------------------------------------------------------

PARSE_TABLE = [
    ("<think> x </think>\n\n<answer> 3.50 </answer>", 3.5, None),
    ("<answer>3.5</answer>", 3.5, None),
    ("<answer> 3.5 m </answer>", 3.5, None),
    ("<answer> 3.5 meters </answer>", 3.5, None),
    ("<answer>3.5metres.</answer>", 3.5, None),
    ("<ANSWER> 7 </ANSWER>", 7.0, None),
    ("<answer> .5 </answer>", 0.5, None),
    ("<answer> 1e1 </answer>", 10.0, None),
    ("<answer> 1.0 </answer> then <answer> 2.0 </answer>", 2.0, None),  # the last one
    ("<answer> 1.0 </answer> <answer> 2.0", 1.0, None),  # an unclosed later tag is ignored
    ("<answer> <answer> 4 </answer>", 4.0, None),
    ("The point is 3.5 meters away.", None, "no_answer"),
    ("<answer> 3.5", None, "no_answer"),
    ("3.5 </answer>", None, "no_answer"),
    ("", None, "no_answer"),
    ("<answer> </answer>", None, "unparsable"),
    ("<answer> about three </answer>", None, "unparsable"),
    ("<answer> 2 to 3 </answer>", None, "unparsable"),
    ("<answer> 3.5 feet </answer>", None, "unparsable"),
    ("<answer> -2.0 </answer>", None, "not_positive"),
    ("<answer> 0 </answer>", None, "not_positive"),
    ("<answer> 0.00 </answer>", None, "not_positive"),
    ("<answer> inf </answer>", None, "not_finite"),
    ("<answer> nan </answer>", None, "not_finite"),
    ("<answer> 1e999 </answer>", None, "not_finite"),
]


@pytest.mark.parametrize(("text", "value", "failure"), PARSE_TABLE)
def test_parse_answer_table(text, value, failure):
    parsed = parse_answer(text)
    assert parsed.value == value
    assert parsed.failure == failure
    assert parsed.ok is (value is not None)


def test_delta1_counts_failures_in_the_denominator():
    answers = [
        ParsedAnswer(2.0),  # exact
        ParsedAnswer(None, "no_answer"),  # failure -> 0
        1.0,  # ratio 2.0 -> 0
        ParsedAnswer(2.4),  # ratio 1.2 -> 1
        parse_answer("<answer> -2 </answer>"),  # negative: the official scorer would count it
        2.5,  # ratio exactly 1.25 -> not < 1.25 -> 0
        None,
    ]
    truths = [2.0] * 7
    np.testing.assert_array_equal(delta1_per_sample(answers, truths), [1, 0, 0, 1, 0, 0, 0])
    scores = score_answers(answers, truths)
    assert scores.n == 7
    assert scores.n_failed == 3
    assert scores.delta1 == pytest.approx(2 / 7)
    # AbsRel over the parsed answers 2.0, 1.0, 2.4, 2.5: (0 + 0.5 + 0.2 + 0.25) / 4
    assert scores.abs_rel == pytest.approx(0.2375)


def test_scores_all_failed_and_bad_truths():
    scores = score_answers([None, ParsedAnswer(None, "unparsable")], [1.0, 2.0])
    assert (scores.n, scores.n_failed, scores.delta1) == (2, 2, 0.0)
    assert math.isnan(scores.abs_rel)
    with pytest.raises(ValueError, match="ground-truth"):
        score_answers([1.0], [0.0])
    with pytest.raises(ValueError, match="answers"):
        score_answers([1.0, 2.0], [1.0])


# -- distances ------------------------------------------------------------------------------------


def test_range_and_z_of_pixels():
    k = Intrinsics(4, 3, 2.0, 2.0, 1.0, 1.0)
    depth = np.full((3, 4), 2.0, np.float32)
    depth[0, 3] = 0.0  # invalid
    rng, z = pixel_distances(depth, k, [[1, 1], [3, 1], [3, 0]])
    # centre: range = z; (3, 1): x = (3 - 1) / 2 * z = 2 -> sqrt(4 + 4)
    np.testing.assert_allclose(rng[:2], [2.0, math.sqrt(8.0)])
    np.testing.assert_allclose(z[:2], [2.0, 2.0])
    assert np.isnan(rng[2]) and np.isnan(z[2])
    dense = range_image(depth, k)
    assert dense[1, 3] == pytest.approx(math.sqrt(8.0))
    assert np.isnan(dense[0, 3])


# -- official jsonl -------------------------------------------------------------------------------


def test_read_eval_jsonl(tmp_path):
    lines = [
        {
            "image": "/rgb/a.png",
            "intrinsics": [559.62, 558.14, 361.87, 241.99, 640, 480],
            "pixel_coords": [[519, 129], [45, 56]],
            "depth": [2.417792019531548, 2.293430991073472],
        },
        {"image": "rgb/b.png", "intrinsics": [0.0, 500.0, 320, 240, 640, 480]},
    ]
    lines[1].update(pixel_coords=[[10, 20]], depth=[1.5])
    path = tmp_path / "val.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n\n")
    records = read_eval_jsonl(path)
    assert len(records) == 2
    assert records[0].image_path == tmp_path / "rgb" / "a.png"  # leading "/" stripped
    assert records[0].intrinsics == Intrinsics(640, 480, 559.62, 558.14, 361.87, 241.99)
    np.testing.assert_array_equal(records[0].pixels, [[519, 129], [45, 56]])
    np.testing.assert_allclose(records[0].distances, [2.417792019531548, 2.293430991073472])
    assert records[1].intrinsics.fx == 500.0  # official fix-up of a zero focal length
    assert read_eval_jsonl(path, image_folder="/data")[1].image_path.as_posix() == "/data/rgb/b.png"

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**lines[0], "depth": [1.0]}) + "\n")
    with pytest.raises(ValueError, match="2 pixel_coords but 1 depths"):
        read_eval_jsonl(bad)
    bad.write_text(json.dumps({"image": "x.png"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1"):
        read_eval_jsonl(bad)

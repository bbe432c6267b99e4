"""DepthLM engine: pixel queries on a frame (statuses, texts), the 3-D point of an answer by
hand, free questions, and the dense entry point refused. A tiny random Qwen2.5-VL built
locally (``build_tiny_qwen``); where a parsed answer is needed the generation is replaced by
a fixed text."""

from __future__ import annotations

import math

import numpy as np
import pytest

from depth_perception.core.camera import Intrinsics
from depth_perception.core.depthlm import RANGE_QUESTION, Z_QUESTION
from depth_perception.engines.base import FrameInputs
from depth_perception.engines.depthlm import (
    DenseDepthNotSupported,
    DepthLMEngine,
    DepthLMEngineConfig,
)
from depth_perception.models.depthlm import build_tiny_qwen

K = Intrinsics(200, 150, 120.0, 118.0, 99.5, 74.5)


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> DepthLMEngine:
    model_dir = build_tiny_qwen(tmp_path_factory.mktemp("depthlm_engine") / "tiny", f_uni=100.0)
    return DepthLMEngine(DepthLMEngineConfig(str(model_dir), device="cpu", max_new_tokens=6))


def _image() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 200, (150, 200, 3), dtype=np.uint8)


def test_contract_colour_only_and_no_dense_depth(engine):
    assert engine.inputs.names() == ["colour"]
    assert engine.f_uni == 100.0 and "f_uni=100" in engine.model_id
    with pytest.raises(DenseDepthNotSupported, match="pixel queries"):
        engine.run(FrameInputs(intrinsics=K, rgb=_image()))
    with pytest.raises(ValueError):
        DepthLMEngineConfig("x", kind="depth")


def test_query_statuses_texts_and_border_pixels(engine):
    pixels = [[100, 75], [1, 1], [150, 100], [199, 149], [3, 70]]
    res = engine.query(_image(), K, pixels)
    assert res.pixels.shape == (5, 2) and res.points.shape == (5, 3)
    assert res.status[1] == res.status[3] == res.status[4] == "too_close_to_border"
    for i in (1, 3, 4):
        assert res.text[i] is None and np.isnan(res.range_m[i]) and np.isnan(res.points[i]).all()
    for i in (0, 2):  # random weights: an answer may not parse, but it is reported cleanly
        assert isinstance(res.text[i], str) and res.status[i] in ("ok", "failed")
        assert (res.status[i] == "ok") == bool(np.isfinite(res.range_m[i]))
    # the marked pixel is the official mapping into the normalised, grid-fitted frame
    assert tuple(res.marked[0]) == engine.lm.prepare_frame(_image(), K).map_pixel(100, 75)


def test_point_is_range_times_the_unit_ray_by_hand(engine, monkeypatch):
    asked = []

    def fixed(images, questions, *args, **kwargs):
        asked.extend(questions)
        return [
            "<think> The point is around 5.00 meters away. </think>\n\n<answer> 5.00 </answer>"
        ] * len(images)

    monkeypatch.setattr(engine.lm, "generate", fixed)
    res = engine.query(_image(), K, [[150, 40], [99.5, 74.5]])
    assert res.status == ["ok", "ok"] and asked == [RANGE_QUESTION] * 2
    # pixel (150, 40): x' = (150 - 99.5) / 120, y' = (40 - 74.5) / 118
    xn, yn = 50.5 / 120.0, -34.5 / 118.0
    norm = math.sqrt(xn * xn + yn * yn + 1.0)
    assert res.range_m[0] == pytest.approx(5.0)
    assert res.z_m[0] == pytest.approx(5.0 / norm, rel=1e-6)
    expected = 5.0 * np.array([xn, yn, 1.0]) / norm  # range x unit ray
    np.testing.assert_allclose(res.points[0], expected, rtol=1e-6)
    assert np.linalg.norm(res.points[0]) == pytest.approx(5.0, rel=1e-6)
    # the principal point: the ray is the optical axis, z = range
    np.testing.assert_allclose(res.points[1], [0.0, 0.0, 5.0], atol=1e-6)
    # the z question: the answer is z, the range follows
    asked.clear()
    res_z = engine.query(_image(), K, [[150, 40]], kind="z")
    assert asked == [Z_QUESTION] and res_z.kind == "z"
    assert res_z.z_m[0] == pytest.approx(5.0)
    assert res_z.range_m[0] == pytest.approx(5.0 * norm, rel=1e-6)
    np.testing.assert_allclose(res_z.points[0], 5.0 * np.array([xn, yn, 1.0]), rtol=1e-6)


def test_free_question_about_a_marked_pixel(engine):
    answer = engine.ask(_image(), K, (100, 75), "What colour is the point under the arrow?")
    assert answer.status == "ok" and isinstance(answer.text, str)
    edge = engine.ask(_image(), K, (0, 0), "What is there?")
    assert edge.status == "too_close_to_border" and edge.text is None
    with pytest.raises(ValueError, match="empty"):
        engine.ask(_image(), K, (100, 75), "  ")

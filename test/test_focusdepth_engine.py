"""FocusDepthEngine offline, on a tiny random FocusDepth saved with save_focusdepth: per-target
masks, clouds and geometry equal to the pieces (model -> metric_from_relative -> target_cloud ->
target_geometry) run by hand; a known scale and shift recovered; malformed / empty / wrong
prompts as per-target errors while the other targets proceed; the composite depth is the
reference outside the masks; the missing default model is one clear line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_sam3_compat import _write_tiny_tokenizer

from depth_perception.core.camera import Intrinsics
from depth_perception.core.target_geometry import (
    metric_from_relative,
    target_cloud,
    target_geometry,
)
from depth_perception.engines.base import FrameInputs, missing_frame_inputs
from depth_perception.engines.focusdepth import (
    FocusDepthEngine,
    FocusDepthEngineConfig,
    default_focusdepth_path,
    target_prompt,
)
from depth_perception.io.frames import Target
from depth_perception.models.focusdepth import build_preset, save_focusdepth
from depth_perception.models.sam3_io import (
    da2_pixel_values,
    load_sam3_tokenizer,
    sam3_pixel_values,
)

W, H = 64, 48
INTR = Intrinsics(W, H, fx=50.0, fy=52.0, cx=31.5, cy=23.0, frame_id="cam_color_optical_frame")
CAR = Target(1, "car", (20, 15, 20, 15))


def save_tiny_focusdepth(directory: Path, seed: int = 0) -> Path:
    """A tiny random FocusDepth whose relative depth varies over the image (the random head's
    output is ~1e-8: scaled up and lifted off ReLU's zero), with the handmade tokenizer."""
    directory.mkdir(parents=True, exist_ok=True)
    _write_tiny_tokenizer(directory)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_preset("tiny", tokenizer=load_sam3_tokenizer(directory))
    head = model.depth_model.head.conv3
    with torch.no_grad():
        head.weight.mul_(3e7)
        head.bias.fill_(1.0)
    return save_focusdepth(model, directory / "focusdepth")


def relative(engine, rgb: np.ndarray, target: Target = CAR) -> np.ndarray:
    """The engine's relative depth of ``target`` on ``rgb``."""
    size = (engine.input_size, engine.input_size)
    pixels = (da2_pixel_values(rgb, size), sam3_pixel_values(rgb, size))
    return engine.predict(pixels, target_prompt(target, W, H), (W, H))[0]


def make_frame(engine, seed: int = 0, noise: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """(rgb, reference depth): random colour; the reference agrees with the network's relative
    depth (1 / (0.5 rel + 0.2), a random test network has no idea of the scene) up to
    ``noise`` (relative), with 20 % holes."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    depth = 1.0 / (0.5 * relative(engine, rgb).astype(np.float64) + 0.2)
    depth *= 1.0 + noise * rng.standard_normal((H, W))
    depth[rng.random((H, W)) < 0.2] = np.nan
    return rgb, depth.astype(np.float32)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_focusdepth(tmp_path_factory.mktemp("focusdepth"))


@pytest.fixture(scope="module")
def engine(checkpoint) -> FocusDepthEngine:
    torch.set_num_threads(1)
    return FocusDepthEngine(FocusDepthEngineConfig(str(checkpoint), device="cpu", num_threads=1))


def _by_hand(engine, rgb, reference, target):
    """One target through the pieces, outside the engine."""
    size = (engine.input_size, engine.input_size)
    pixels = (da2_pixel_values(rgb, size), sam3_pixel_values(rgb, size))
    rel, logits, score = engine.predict(pixels, target_prompt(target, W, H), (W, H))
    mask = logits > 0.0
    depth, fit = metric_from_relative(rel, reference, mask)
    points = target_cloud(depth, mask, INTR)
    return rel, mask, depth, fit, points, target_geometry(points), score


def test_per_target_outputs_equal_the_pieces_and_the_composite(engine):
    rgb, reference = make_frame(engine)
    targets = [CAR, Target(7, "person", (0, 0, 0, 0)), Target(9, "", (2, 3, 20, 30))]
    frame = FrameInputs(INTR, rgb=rgb, depth=reference, targets=targets)
    assert missing_frame_inputs(engine.inputs, frame) == []
    result = engine.run(frame)
    assert [t.target_id for t in result.targets] == [1, 7, 9]
    assert [t.text for t in result.targets] == ["car", "person", ""]
    for target, got in zip(targets, result.targets, strict=True):
        assert got.ok, got.error
        _, mask, depth, fit, points, geometry, score = _by_hand(engine, rgb, reference, target)
        assert got.mask.shape == (H, W) and got.mask.dtype == bool
        np.testing.assert_array_equal(got.mask, mask)
        np.testing.assert_array_equal(got.depth, depth)
        assert got.fit == fit and got.score == score and 0.0 <= score <= 1.0
        assert got.points.shape == (mask.sum() - np.isnan(depth[mask]).sum(), 3)
        assert got.points.dtype == np.float32
        np.testing.assert_array_equal(got.points, points)
        np.testing.assert_array_equal(got.geometry.centroid, geometry.centroid)
        np.testing.assert_array_equal(got.geometry.box_center, geometry.box_center)
        np.testing.assert_array_equal(got.geometry.box_rotation, geometry.box_rotation)
        np.testing.assert_array_equal(got.geometry.box_extent, geometry.box_extent)
        assert got.geometry.n_points == len(points)
    # Composite: the reference (NaN holes too) outside every mask, the nearest fit inside.
    union = np.logical_or.reduce([t.mask for t in result.targets])
    assert union.any() and not union.all()
    np.testing.assert_array_equal(result.depth[~union], reference[~union])
    nearest = np.fmin.reduce([np.where(t.mask, t.depth, np.nan) for t in result.targets])
    np.testing.assert_array_equal(result.depth[union], nearest[union])


def test_a_known_scale_and_shift_is_recovered(engine):
    """A reference that is exactly 1 / (0.5 rel + 0.2): the fit finds a and b, and the
    target's metric depth is the reference."""
    rgb, _ = make_frame(engine, 1)
    rel = relative(engine, rgb)
    assert np.ptp(rel) > 0.1  # the test model's relative depth varies
    reference = (1.0 / (0.5 * rel.astype(np.float64) + 0.2)).astype(np.float32)
    (got,) = engine.run(FrameInputs(INTR, rgb=rgb, depth=reference, targets=[CAR])).targets
    assert got.ok, got.error
    assert got.fit.scale == pytest.approx(0.5, rel=1e-4)
    assert got.fit.shift == pytest.approx(0.2, rel=1e-4)
    np.testing.assert_allclose(got.depth[got.mask], reference[got.mask], rtol=1e-4)


def test_malformed_and_empty_prompts_are_per_target_errors(engine):
    rgb, reference = make_frame(engine, 2)
    targets = [
        Target(1, "car", (200, 100, 10, 10)),  # outside the image
        Target(2, "car", (5, 5, 0, 12)),  # zero area
        Target(3, "", (0, 0, 0, 0)),  # empty prompt
        Target(4, "  ", (0, 0, 0, 0)),  # blank text: empty too
        CAR,
    ]
    result = engine.run(FrameInputs(INTR, rgb=rgb, depth=reference, targets=targets))
    kinds = [t.error_kind for t in result.targets]
    assert kinds == ["box_outside", "zero_area_box", "empty_prompt", "empty_prompt", None]
    assert "outside the 64x48 image" in result.targets[0].error
    assert "zero area" in result.targets[1].error
    assert all(t.geometry is None and t.points is None for t in result.targets[:4])
    # The good one is what it is alone.
    (alone,) = engine.run(FrameInputs(INTR, rgb=rgb, depth=reference, targets=[CAR])).targets
    np.testing.assert_array_equal(result.targets[4].points, alone.points)
    # Only the good target's mask changes the depth.
    np.testing.assert_array_equal(result.depth[~alone.mask], reference[~alone.mask])


def test_a_box_partly_outside_is_clipped():
    prompt = target_prompt(Target(1, "", (-10, 40, 30, 30)), W, H)
    assert prompt.box_xywh == (0.0, 40.0, 20.0, 8.0) and prompt.text is None


def test_too_few_reference_pixels_and_an_unfound_target(engine, checkpoint):
    rgb, reference = make_frame(engine, 3)
    sparse = np.full_like(reference, np.nan)
    sparse[::8, ::8] = 2.0  # 48 pixels < min_reference_pixels = 100
    result = engine.run(FrameInputs(INTR, rgb=rgb, depth=sparse, targets=[CAR]))
    (got,) = result.targets
    assert got.error_kind == "fit" and "too few reference pixels" in got.error
    assert got.mask is not None and got.score > 0  # what was computed before stays
    np.testing.assert_array_equal(result.depth, sparse)
    # A prompt SAM3 scores below min_score: reported as not found, the reference kept.
    strict = FocusDepthEngine(
        FocusDepthEngineConfig(str(checkpoint), device="cpu", num_threads=1, min_score=0.99)
    )
    result = strict.run(FrameInputs(INTR, rgb=rgb, depth=reference, targets=[CAR]))
    assert result.targets[0].error_kind == "not_found"
    assert "min_score" in result.targets[0].error
    np.testing.assert_array_equal(result.depth, reference)


def test_no_targets_gives_the_reference(engine):
    rgb, reference = make_frame(engine, 4)
    result = engine.run(FrameInputs(INTR, rgb=rgb, depth=reference, targets=[]))
    assert result.targets == [] and result.confidence is None
    np.testing.assert_array_equal(result.depth, reference)


def test_configuration_errors(checkpoint, tmp_path):
    if not default_focusdepth_path().exists():
        with pytest.raises(FileNotFoundError, match="no FocusDepth model at .*focusdepth_small"):
            FocusDepthEngine(FocusDepthEngineConfig(device="cpu"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FocusDepthEngine(FocusDepthEngineConfig(str(tmp_path / "nope"), device="cpu"))
    with pytest.raises(ValueError, match="not a multiple of 14"):
        FocusDepthEngine(FocusDepthEngineConfig(str(checkpoint), device="cpu", input_size=50))
    with pytest.raises(ValueError, match="box_method"):
        FocusDepthEngine(FocusDepthEngineConfig(str(checkpoint), box_method="sphere"))

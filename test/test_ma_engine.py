"""The MetricAnything teacher as an engine: prior -> PDSA/GMDR -> network with the frame's
focal length, on tiny random networks saved as checkpoints."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest
import torch
from tiny_metric_anything import save_tiny_student, save_tiny_teacher

import depth_perception.engines.metric_anything as ma
from depth_perception.core.camera import Intrinsics
from depth_perception.core.prompt_prep import prepare_prompt
from depth_perception.engines.base import FrameInputs
from depth_perception.engines.metric_anything import (
    MetricAnythingStudentConfig,
    MetricAnythingStudentEngine,
    MetricAnythingTeacherConfig,
    MetricAnythingTeacherEngine,
    align_output,
    prior_depth,
    recorded_prior,
    shrink_sparse,
)
from depth_perception.models.checkpoints import weights_digest

H, W = 72, 96
INTR = Intrinsics(W, H, fx=80.0, fy=80.0, cx=47.5, cy=35.5, frame_id="cam")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ma")
    return {
        "teacher": save_tiny_teacher(root / "teacher", prompt_std=1.0),
        "zero_prompt": save_tiny_teacher(root / "zero_prompt", prompt_std=0.0),
        "student": save_tiny_student(root / "student"),
    }


def _frame(intrinsics: Intrinsics = INTR, seed: int = 0, n: int = 300) -> FrameInputs:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    prompt = np.full((H, W), np.nan, np.float32)
    prompt.flat[rng.choice(H * W, n, replace=False)] = rng.uniform(2.0, 10.0, n)
    return FrameInputs(intrinsics=intrinsics, rgb=rgb, prompt=prompt)


def _engine(checkpoint, prior, **kwargs) -> MetricAnythingTeacherEngine:
    return MetricAnythingTeacherEngine(
        MetricAnythingTeacherConfig(checkpoint=str(checkpoint), prior=prior, device="cpu", **kwargs)
    )


def _image(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0


def test_dense_finite_positive_depth_and_a_model_id_with_the_weights_digest(checkpoints):
    engine = _engine(checkpoints["teacher"], "lingbot")
    assert engine.inputs.prompt and engine.inputs.colour and not engine.inputs.depth
    result = engine.run(_frame())
    assert result.depth.shape == (H, W) and result.depth.dtype == np.float32
    assert np.isfinite(result.depth).all() and (result.depth > 0).all()
    assert result.depth.max() < 100.0  # a few metres, not the 1 km clamp
    digest = weights_digest(checkpoints["teacher"])
    assert re.fullmatch(r"[0-9a-f]{8}", digest)
    assert engine.model_id.startswith(f"metric-anything-teacher/teacher@{digest}+prior:")
    assert "lingbot-depth/lingbot_depth_small" in engine.model_id


def test_output_alignment_recovers_an_affine_disparity_error_exactly():
    rng = np.random.default_rng(3)
    truth = rng.uniform(1.0, 80.0, (H, W))
    # A network output whose disparity is an affine function of the truth's: 1/d = (1/t - b) / a.
    a, b = 1.25, 0.004
    depth = (1.0 / ((1.0 / truth - b) / a)).astype(np.float32)
    prompt = np.full((H, W), np.nan, np.float32)
    prompt.flat[rng.choice(H * W, 200, replace=False)] = 1.0
    prompt = np.where(np.isfinite(prompt), truth, np.nan).astype(np.float32)
    aligned, fit = align_output(depth, prompt)
    assert fit.mode == "affine" and fit.n == 200
    assert fit.scale == pytest.approx(a, rel=1e-4) and fit.shift == pytest.approx(b, abs=1e-6)
    np.testing.assert_allclose(aligned, truth, rtol=1e-4)


def test_output_alignment_never_invalidates_a_pixel_and_needs_a_prompt_pixel():
    depth = np.array([[1.0, 4 / 3], [4.0, 400.0]], np.float32)
    # Prompt disparities 1 and 0.5 where the output's are 1 and 0.75: the fit is y = 2x - 1,
    # which turns the disparities 1/4 and 1/400 negative: clamped to 1e-3 (1 km).
    prompt = np.array([[1.0, 2.0], [np.nan, np.nan]], np.float32)
    aligned, fit = align_output(depth, prompt)
    assert fit.scale == pytest.approx(2.0) and fit.shift == pytest.approx(-1.0)
    np.testing.assert_allclose(aligned, [[1.0, 2.0], [1000.0, 1000.0]], rtol=1e-4)
    same, fit = align_output(depth, np.full((2, 2), np.nan, np.float32))
    assert fit.mode == "none"
    np.testing.assert_array_equal(same, depth)


def test_the_engine_refits_its_output_to_the_prompt_when_asked(checkpoints):
    frame = _frame(seed=4)
    raw = _engine(checkpoints["teacher"], "lingbot").run(frame).depth
    aligned = _engine(checkpoints["teacher"], "lingbot", output_alignment="global").run(frame)
    np.testing.assert_allclose(aligned.depth, align_output(raw, frame.prompt)[0], rtol=1e-6)
    assert not np.allclose(aligned.depth, raw)
    with pytest.raises(ValueError, match="output_alignment must be one of"):
        _engine(checkpoints["teacher"], "lingbot", output_alignment="local")


def test_the_network_is_given_the_prepared_prompt_and_the_frames_focal_length(checkpoints):
    prior = f"ma_student:{checkpoints['student']}"
    engine = _engine(checkpoints["teacher"], prior)
    for fx in (80.0, 160.0):
        frame = _frame(Intrinsics(W, H, fx=fx, fy=80.0, cx=47.5, cy=35.5))
        p_d = prior_depth(engine.prior, frame.rgb, frame.intrinsics)
        model_input, _ = prepare_prompt(p_d, frame.prompt, "disparity")
        prompt = torch.from_numpy(model_input.tensor)
        expected = engine.model.infer(_image(frame.rgb), f_px=fx, prompt=prompt)["depth"].numpy()
        got = engine.run(frame).depth
        np.testing.assert_allclose(got, expected, rtol=1e-6)
        # The prompt matters, and so does the focal length it is given with.
        blind = engine.model.infer(_image(frame.rgb), f_px=fx, prompt=None)["depth"].numpy()
        assert np.abs(got - blind).max() > 1e-5
        other = engine.model.infer(_image(frame.rgb), f_px=1000.0, prompt=prompt)["depth"].numpy()
        assert np.abs(got - other).max() > 1e-2


def test_depth_follows_the_focal_length_rule(checkpoints):
    """1/depth = canonical * W / f_px: a camera with twice the focal length (same image) sees
    everything twice as far. With the prompt injections still at zero (a teacher as
    initialised from a prompt-free network) the canonical output does not depend on the
    prompt, so the whole output doubles exactly."""
    engine = _engine(checkpoints["zero_prompt"], f"ma_student:{checkpoints['student']}")
    frame = _frame()
    doubled = FrameInputs(
        intrinsics=Intrinsics(W, H, fx=2 * INTR.fx, fy=INTR.fy, cx=INTR.cx, cy=INTR.cy),
        rgb=frame.rgb,
        prompt=frame.prompt,
    )
    near, far = engine.run(frame).depth, engine.run(doubled).depth
    np.testing.assert_allclose(far, 2.0 * near, rtol=1e-6)


def test_a_smaller_working_size_scales_the_focal_length_with_the_image(checkpoints):
    engine = _engine(checkpoints["teacher"], f"ma_student:{checkpoints['student']}")
    small = _engine(
        checkpoints["teacher"], f"ma_student:{checkpoints['student']}", max_input_side=48
    )
    frame = _frame()
    assert small.working_size(W, H) == (48, 36)
    rgb, intr, model_input, _ = small.prepare(frame.rgb, frame.prompt, frame.intrinsics)
    assert rgb.shape == (36, 48, 3) and intr.fx == pytest.approx(INTR.fx / 2)
    resized = cv2.resize(frame.rgb, (48, 36), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(rgb, resized)
    prompt = torch.from_numpy(model_input.tensor)
    out = engine.model.infer(_image(rgb), f_px=INTR.fx / 2, prompt=prompt)
    inverse = torch.nn.functional.interpolate(
        out["inverse_depth"][None, None], (H, W), mode="bilinear", align_corners=False
    )[0, 0]
    expected = (1.0 / inverse.clamp(1e-3, 1e3)).numpy()
    got = small.run(frame).depth
    assert got.shape == (H, W)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_shrinking_a_sparse_prompt_keeps_measured_values_nearest_first():
    prompt = np.full((4, 6), np.nan, np.float32)
    prompt[0, 0], prompt[1, 1] = 5.0, 3.0  # both land in (0, 0) of a 2 x 3 grid
    prompt[3, 5] = 7.0
    prompt[2, 2] = -1.0  # invalid: dropped
    out = shrink_sparse(prompt, 3, 2)
    expected = np.full((2, 3), np.nan, np.float32)
    expected[0, 0], expected[1, 2] = 3.0, 7.0
    np.testing.assert_array_equal(out, expected)


def test_the_prior_is_built_once_and_its_depth_is_what_gets_aligned(checkpoints, monkeypatch):
    built = []
    real = ma.build_prior

    def counting(*args, **kwargs):
        built.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(ma, "build_prior", counting)
    engine = _engine(checkpoints["teacher"], f"ma_student:{checkpoints['student']}")
    prior = engine.prior
    assert isinstance(prior, MetricAnythingStudentEngine) and not prior.inputs.prompt
    for seed in range(3):
        frame = _frame(seed=seed)
        engine.run(frame)
        _, _, model_input, alignment = engine.prepare(frame.rgb, frame.prompt, frame.intrinsics)
        p_d = prior.run(FrameInputs(intrinsics=INTR, rgb=frame.rgb)).depth
        expected, _ = prepare_prompt(p_d, frame.prompt, "disparity")
        np.testing.assert_array_equal(model_input.tensor, expected.tensor)
        assert alignment.n_fit == np.isfinite(frame.prompt).sum()
    assert len(built) == 1 and engine.prior is prior


def test_lingbot_prior_is_given_colour_only():
    from depth_perception.engines.lingbot import LingBotEngine

    prior = ma.build_prior("lingbot", device="cpu")
    assert isinstance(prior, LingBotEngine) and prior.cfg.fuse_measured == "none"
    depth = prior_depth(prior, _frame().rgb, INTR)
    assert depth.shape == (H, W) and np.isfinite(depth).all() and (depth > 0).all()


def test_the_checkpoint_records_its_prior(checkpoints, tmp_path):
    teacher = save_tiny_teacher(tmp_path / "with_prior", prior="ma_student:../student")
    (tmp_path / "student").symlink_to(checkpoints["student"], target_is_directory=True)
    assert recorded_prior(teacher) == f"ma_student:{(tmp_path / 'student').resolve()}"
    engine = _engine(teacher, "")
    assert engine.prior_spec == recorded_prior(teacher)
    assert isinstance(engine.prior, MetricAnythingStudentEngine)
    assert recorded_prior(checkpoints["teacher"]) is None
    assert _engine(checkpoints["teacher"], "").prior_spec == "lingbot"  # DEFAULT_PRIOR


def test_the_shipped_teachers_priors_resolve_to_shipped_models():
    """models/: the default teacher's prior is LingBot; the student-prior teacher names the
    shipped student relative to itself, so it resolves in a checkout and once installed."""
    models = ma.default_teacher_path().parent
    assert recorded_prior(models / "ma_teacher_small") == "lingbot"
    student = (models / "ma_student_small").resolve()
    assert recorded_prior(models / "ma_teacher_student_prior_small") == f"ma_student:{student}"
    assert student == ma.default_student_path().resolve()


def test_missing_or_wrong_checkpoints_say_what_in_one_line(checkpoints, tmp_path, monkeypatch):
    missing = tmp_path / "models" / "ma_teacher_small"
    monkeypatch.setattr(ma, "default_teacher_path", lambda: missing)
    with pytest.raises(FileNotFoundError) as err:
        MetricAnythingTeacherEngine(MetricAnythingTeacherConfig(device="cpu"))
    assert str(missing) in str(err.value) and "\n" not in str(err.value)
    assert "default model is missing" in str(err.value)
    with pytest.raises(FileNotFoundError, match="teacher checkpoint /nope/teacher does not exist"):
        _engine("/nope/teacher", "lingbot")
    with pytest.raises(ValueError, match="prompt-free .student. network"):
        _engine(checkpoints["student"], "lingbot")
    with pytest.raises(ValueError, match="prompted teacher, not a prompt-free student"):
        _engine(checkpoints["teacher"], f"ma_student:{checkpoints['teacher']}")
    with pytest.raises(ValueError, match="prior 'depth_anything'"):
        _engine(checkpoints["teacher"], "depth_anything")
    with pytest.raises(ValueError, match="needs a checkpoint"):
        _engine(checkpoints["teacher"], "ma_student")
    with pytest.raises(ValueError, match="bf16 needs a CUDA device"):
        _engine(checkpoints["teacher"], "lingbot", precision="bf16")
    engine = _engine(checkpoints["teacher"], "lingbot")
    with pytest.raises(ValueError, match="needs a prompt"):
        engine.run(FrameInputs(intrinsics=INTR, rgb=_frame().rgb))


def test_a_random_preset_runs_and_says_so(caplog):
    engine = MetricAnythingTeacherEngine(
        MetricAnythingTeacherConfig(checkpoint="teacher_tiny", prior="lingbot", device="cpu")
    )
    assert "@random+prior:" in engine.model_id
    assert "RANDOM weights" in caplog.text
    assert engine.run(_frame()).depth.shape == (H, W)


def test_student_engine_uses_the_focal_length(checkpoints):
    student = MetricAnythingStudentEngine(
        MetricAnythingStudentConfig(str(checkpoints["student"]), device="cpu")
    )
    rgb = _frame().rgb
    near = student.run(FrameInputs(intrinsics=INTR, rgb=rgb)).depth
    doubled = Intrinsics(W, H, fx=2 * INTR.fx, fy=INTR.fy, cx=INTR.cx, cy=INTR.cy)
    far = student.run(FrameInputs(intrinsics=doubled, rgb=rgb)).depth
    ok = near < 400  # away from the 1 km clamp
    assert ok.mean() > 0.9
    np.testing.assert_allclose(far[ok], 2.0 * near[ok], rtol=1e-6)
    assert json.loads((checkpoints["student"] / "config.json").read_text())["model_config"]

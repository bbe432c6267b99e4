"""MetricAnything student: the engine's checkpoints (ours, the official student_depthmap.pt
plain or under state_dict, a directory holding it, hf: from the offline Hub cache, a preset),
the focal length from camera_info, the constant-median baseline, the ma_student pipelines and
eval-bag over them with tiny random checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_metric_anything import save_tiny_teacher, tiny_network

import depth_perception.engines.metric_anything as ma
from depth_perception.core.camera import Intrinsics
from depth_perception.core.metrics import depth_metrics
from depth_perception.engines.base import FrameInputs
from depth_perception.engines.metric_anything import (
    OFFICIAL_STUDENT_FILE,
    OFFICIAL_STUDENT_REPO,
    TRAIN_MEDIAN_KEY,
    ConstantDepthConfig,
    ConstantDepthEngine,
    MetricAnythingStudentConfig,
    MetricAnythingStudentEngine,
    official_student_preset,
    training_median_depth,
)
from depth_perception.eval.pipelines import (
    MA_STUDENT,
    MA_TEACHER,
    PIPELINES,
    STUDENT_PRIOR_PIPELINE,
    TAKES_CHECKPOINT,
    MissingInputError,
    expand_pipelines,
    get_pipeline,
)
from depth_perception.models.checkpoints import CheckpointMismatchError, weights_digest
from depth_perception.models.metric_anything.checkpoints import (
    save_checkpoint,
    save_official_checkpoint,
)
from depth_perception.models.metric_anything.presets import PRESETS

ROOT = Path(__file__).resolve().parent.parent
H, W = 60, 80
INTR = Intrinsics(W, H, fx=70.0, fy=72.0, cx=39.5, cy=29.5, frame_id="cam")
MEDIAN = 2.5  # the training median the tiny student's config records


@pytest.fixture(scope="module")
def network():
    return tiny_network("student_tiny", seed=1)


@pytest.fixture(scope="module")
def checkpoints(network, tmp_path_factory):
    """The same tiny student as each kind of checkpoint the engine takes."""
    root = tmp_path_factory.mktemp("students")
    ours = save_checkpoint(network, root / "ours")
    config = json.loads((ours / "config.json").read_text())
    config[TRAIN_MEDIAN_KEY] = MEDIAN  # as training/ writes it
    (ours / "config.json").write_text(json.dumps(config))
    state = {k: v.detach().clone() for k, v in network.state_dict().items()}
    nested = root / "nested" / OFFICIAL_STUDENT_FILE
    nested.parent.mkdir()
    torch.save({"state_dict": state, "epoch": 7}, nested)
    return {
        "ours": ours,
        "official": save_official_checkpoint(network, root / "official" / OFFICIAL_STUDENT_FILE),
        "nested": nested,
        # a Hub snapshot: a directory holding student_depthmap.pt
        "snapshot": nested.parent,
    }


def _rgb(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)


def _engine(checkpoint, **kwargs) -> MetricAnythingStudentEngine:
    return MetricAnythingStudentEngine(
        MetricAnythingStudentConfig(str(checkpoint), device="cpu", **kwargs)
    )


def _expected(network, rgb: np.ndarray, f_px: float) -> np.ndarray:
    image = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0
    return network.infer(image, f_px=f_px)["depth"].numpy()


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ours", "official", "nested", "snapshot"])
def test_every_checkpoint_kind_gives_the_networks_depth_at_camera_info_fx(
    kind, network, checkpoints
):
    engine = _engine(checkpoints[kind])
    assert engine.inputs.names() == ["colour"]  # no depth, no prompt
    rgb = _rgb()
    got = engine.run(FrameInputs(intrinsics=INTR, rgb=rgb)).depth
    assert got.shape == (H, W) and got.dtype == np.float32
    np.testing.assert_array_equal(got, _expected(network, rgb, INTR.fx))
    # fx from camera_info, not the official code's 1,000 px default
    assert np.abs(got - _expected(network, rgb, 1000.0)).max() > 1.0
    file = checkpoints[kind] / OFFICIAL_STUDENT_FILE if kind == "snapshot" else checkpoints[kind]
    assert engine.model_id == f"metric-anything-student/{checkpoints[kind].name}@" + (
        weights_digest(file)
    )


def test_depth_scales_with_the_focal_length(checkpoints):
    engine = _engine(checkpoints["official"])
    rgb = _rgb(1)
    near = engine.run(FrameInputs(intrinsics=INTR, rgb=rgb)).depth
    far = engine.run(
        FrameInputs(intrinsics=Intrinsics(W, H, 3 * INTR.fx, INTR.fy, INTR.cx, INTR.cy), rgb=rgb)
    ).depth
    ok = near < 300  # away from the 1 km clamp
    assert ok.mean() > 0.9
    np.testing.assert_allclose(far[ok], 3.0 * near[ok], rtol=1e-6)


def test_official_layout_is_recognised_and_loaded_strictly(network, tmp_path):
    # The official student's own layout (meta device: no weights allocated).
    with torch.device("meta"):
        official = ma.MetricAnythingDepth(PRESETS["student_vith16plus"]).state_dict()
    assert official_student_preset(official) == "student_vith16plus"
    assert official_student_preset(network.state_dict()) == "student_tiny"
    # One key missing, one unexpected, one wrongly shaped: each named, with the file.
    state = dict(network.state_dict())
    missing = "head.0.weight"
    state.pop(missing)
    state["encoder.extra.weight"] = torch.zeros(3)
    shaped = next(k for k in state if k.startswith("decoder.") and k.endswith("weight"))
    state[shaped] = torch.zeros(1, 1)
    path = tmp_path / OFFICIAL_STUDENT_FILE
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError) as err:
        _engine(path)
    text = str(err.value)
    assert missing in text and "encoder.extra.weight" in text and shaped in text
    assert str(path) in text and "closest layout: student_tiny" in text
    # A teacher's state dict is not a student's: its prompt branch is named.
    teacher = save_tiny_teacher(tmp_path / "teacher")
    torch.save(ma.load_model(teacher).state_dict(), tmp_path / "teacher.pt")
    with pytest.raises(CheckpointMismatchError, match="prompt_branch"):
        _engine(tmp_path / "teacher.pt")
    with pytest.raises(ValueError, match="prompted teacher, not a prompt-free student"):
        _engine(teacher)
    # Not a state dict at all; weights_only refuses arbitrary objects.
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ma.CheckpointReadError, match="not a state dict"):
        _engine(tmp_path / "list.pt")


def test_the_shipped_student_is_the_default_and_records_its_training_median():
    shipped = ma.default_student_path()
    size = sum(f.stat().st_size for f in shipped.iterdir())
    assert size <= 25 * 2**20, size
    engine = MetricAnythingStudentEngine(MetricAnythingStudentConfig(device="cpu"))
    assert engine.model_id.startswith("metric-anything-student/ma_student_small@")
    config = json.loads((shipped / "config.json").read_text())
    assert config["train_labels"] == "pseudo" and config["pixel_loss"] == "dlog"
    value, origin = ma.training_median_depth(str(shipped))
    assert value == pytest.approx(config["train_median_depth_m"]) and 1.0 < value < 20.0
    frame = FrameInputs(
        intrinsics=Intrinsics(64, 48, fx=60.0, fy=60.0, cx=31.5, cy=23.5, frame_id="cam"),
        rgb=np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8),
    )
    depth = engine.run(frame).depth
    assert depth.shape == (48, 64) and np.isfinite(depth).all() and (depth > 0).all()


def test_missing_checkpoints_say_which_in_one_line(tmp_path, monkeypatch):
    missing = tmp_path / "models" / "ma_student_small"
    monkeypatch.setattr(ma, "default_student_path", lambda: missing)
    with pytest.raises(FileNotFoundError) as err:
        MetricAnythingStudentEngine(MetricAnythingStudentConfig(device="cpu"))
    text = str(err.value)
    assert str(missing) in text and "default model is missing" in text and "\n" not in text
    assert f"hf:{OFFICIAL_STUDENT_REPO}/{OFFICIAL_STUDENT_FILE}" in text
    with pytest.raises(FileNotFoundError, match="student checkpoint /nope/x.pt does not exist"):
        _engine("/nope/x.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither config.json .* nor student_depthmap"):
        _engine(tmp_path / "empty")
    with pytest.raises(ValueError, match="bf16 needs a CUDA device"):
        _engine("student_tiny", precision="bf16")


def test_a_random_preset_runs_and_says_so(caplog):
    engine = _engine("student_tiny", num_threads=torch.get_num_threads())
    assert engine.model_id == "metric-anything-student/student_tiny@random"
    assert "RANDOM weights" in caplog.text
    assert engine.run(FrameInputs(intrinsics=INTR, rgb=_rgb())).depth.shape == (H, W)


COMMIT = "89abcdef0123456789abcdef0123456789abcdef"

HF_LOAD = """
import sys, numpy as np, torch
from depth_perception.core.camera import Intrinsics
from depth_perception.engines.base import FrameInputs
from depth_perception.engines.metric_anything import (
    MetricAnythingStudentConfig, MetricAnythingStudentEngine)
spec, source = sys.argv[1], sys.argv[2]
rgb = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
intr = Intrinsics(80, 60, fx=70.0, fy=72.0, cx=39.5, cy=29.5)
a, b = (
    MetricAnythingStudentEngine(MetricAnythingStudentConfig(c, device="cpu"))
    for c in (spec, source)
)
frame = FrameInputs(intr, rgb)
np.testing.assert_array_equal(a.run(frame).depth, b.run(frame).depth)
print(a.model_id)
"""


def test_the_official_student_from_the_offline_hub_cache(checkpoints, tmp_path):
    """`models` lists the official student, `models fetch metricanything-student` returns it
    from the cache, and checkpoint:=hf:<repo>/<file> loads it (offline, a fresh process: the
    Hub client reads HF_HOME when imported)."""
    from test_hub import add_to_cache

    home = tmp_path / "hf_home"
    add_to_cache(
        home / "hub", OFFICIAL_STUDENT_REPO, OFFICIAL_STUDENT_FILE, checkpoints["official"]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1")

    def run(*args):
        return subprocess.run(
            [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )

    listed = run("-m", "depth_perception.cli", "models")
    assert listed.returncode == 0, listed.stderr
    spec = f"hf:{OFFICIAL_STUDENT_REPO}/{OFFICIAL_STUDENT_FILE}"
    assert "metricanything-student" in listed.stdout and spec in listed.stdout
    fetched = run("-m", "depth_perception.cli", "models", "fetch", "metricanything-student")
    assert fetched.returncode == 0, fetched.stderr
    assert Path(fetched.stdout.strip()).is_relative_to(home / "hub")
    loaded = run("-c", HF_LOAD, spec, str(checkpoints["official"]))
    assert loaded.returncode == 0, loaded.stderr
    digest = weights_digest(checkpoints["official"])
    assert loaded.stdout.strip() == f"metric-anything-student/{OFFICIAL_STUDENT_FILE}@{digest}"


# ---------------------------------------------------------------------------------------------
# The constant-median baseline
# ---------------------------------------------------------------------------------------------


def test_the_constant_comes_from_training_not_from_the_test_recording(checkpoints, tmp_path):
    assert training_median_depth("3.25") == (3.25, "parameter")
    value, origin = training_median_depth(str(checkpoints["ours"]))
    assert value == MEDIAN and origin == str(checkpoints["ours"] / "config.json")
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({TRAIN_MEDIAN_KEY: 7.5, "frames": 100}))
    assert training_median_depth(str(stats)) == (7.5, str(stats))
    engine = ConstantDepthEngine(ConstantDepthConfig(str(checkpoints["ours"])))
    depth = engine.run(FrameInputs(intrinsics=INTR, rgb=_rgb())).depth
    assert depth.shape == (H, W) and depth.dtype == np.float32 and (depth == MEDIAN).all()
    assert engine.model_id == "constant/2.5m"
    # No training median: named, one line.
    with pytest.raises(ValueError, match=f"no number {TRAIN_MEDIAN_KEY}"):
        training_median_depth(str(checkpoints["official"]))  # the official file has none
    (tmp_path / "bad.json").write_text(json.dumps({TRAIN_MEDIAN_KEY: "far"}))
    with pytest.raises(ValueError, match=f"no number {TRAIN_MEDIAN_KEY}"):
        training_median_depth(str(tmp_path / "bad.json"))
    with pytest.raises(FileNotFoundError, match="neither a number"):
        training_median_depth("/nope/stats.json")
    for bad in ("0", "-1", "nan", "inf"):
        with pytest.raises(ValueError, match="must be finite and > 0"):
            training_median_depth(bad)


# ---------------------------------------------------------------------------------------------
# Pipelines and eval-bag
# ---------------------------------------------------------------------------------------------


def test_the_ma_student_pipelines(checkpoints, tmp_path):
    assert expand_pipelines(["ma_student"]) == list(MA_STUDENT)
    assert MA_STUDENT == ("ma_student", "constant_median", "ma_teacher_lidar_student_prior")
    assert set(MA_STUDENT) <= set(TAKES_CHECKPOINT) and set(MA_STUDENT) <= set(PIPELINES)
    assert STUDENT_PRIOR_PIPELINE not in MA_TEACHER  # the teacher group is unchanged
    student = str(checkpoints["ours"])
    alone = get_pipeline("ma_student", student)
    assert (alone.executable, alone.params_file) == ("monocular_depth_node", "monocular_depth.yaml")
    assert alone.roles == ("rgb", "rgb_info") and alone.node_parameters == {"checkpoint": student}
    assert PIPELINES["ma_student"].node_parameters == {}  # the node's default: shipped student
    assert PIPELINES["constant_median"].node_parameters == {}  # read when asked for
    constant = get_pipeline("constant_median", student)
    assert constant.roles == ("rgb", "rgb_info")
    assert constant.node_parameters == {"constant_depth": 2.5}  # read once, handed over as metres
    assert constant.make_engine().depth_m == MEDIAN
    # An official student carries no training median: skipped with the reason.
    with pytest.raises(MissingInputError, match=TRAIN_MEDIAN_KEY):
        get_pipeline("constant_median", str(checkpoints["official"]))
    teacher = str(save_tiny_teacher(tmp_path / "teacher"))
    prior = get_pipeline(STUDENT_PRIOR_PIPELINE, student, teacher=teacher)
    assert prior.roles == ("rgb", "rgb_info", "lidar")
    assert prior.executable == "prompted_depth_node"
    assert prior.node_parameters["prior"] == f"ma_student:{student}"
    assert prior.node_parameters["checkpoint"] == teacher
    assert prior.node_parameters["prompt_sources"] == ["lidar"]
    engine = prior.make_engine()
    assert isinstance(engine.prior, MetricAnythingStudentEngine)
    assert engine.prior.checkpoint == student
    shipped = get_pipeline(STUDENT_PRIOR_PIPELINE, student)
    assert "checkpoint" not in shipped.node_parameters  # the node's default: shipped teacher
    assert str(ma.default_student_path()) in PIPELINES[STUDENT_PRIOR_PIPELINE].parameters["prior"]
    with pytest.raises(ValueError, match="takes no separate teacher"):
        get_pipeline("ma_student", student, teacher=teacher)


@pytest.fixture(scope="module")
def tabletop_bag(tmp_path_factory):
    from depth_perception.io.bag import write_sim_bag
    from depth_perception.sim.sequence import SequenceConfig

    path = tmp_path_factory.mktemp("bags") / "tabletop"
    cfg = SequenceConfig(scene_kind="tabletop", seed=4, n_frames=3, fps=10.0, width=80, height=60)
    write_sim_bag(path, cfg, progress=False)
    return path


def test_eval_bag_offline_runs_the_ma_student_group(
    tabletop_bag, checkpoints, tmp_path, monkeypatch, capsys
):
    """`eval-bag --pipeline ma_student --checkpoint STUDENT`: the student alone, the constant
    of its training median, and the (here: tiny) teacher with it as the prior."""
    from depth_perception.cli import main
    from depth_perception.eval.evaluate import chain_bags

    teacher = save_tiny_teacher(tmp_path / "teacher")
    monkeypatch.setattr(ma, "default_teacher_path", lambda: teacher)  # "the shipped teacher"
    student = checkpoints["ours"]
    out = tmp_path / "eval"
    args = ["eval-bag", str(tabletop_bag), "--mode", "offline", "--pipeline", "ma_student"]
    assert (
        main([*args, "--checkpoint", str(student), "--out", str(out), "--figure-every", "0"]) == 0
    )
    summaries = {n: json.loads((out / n / "summary.json").read_text()) for n in MA_STUDENT}
    digest = weights_digest(student)
    for name, summary in summaries.items():
        assert summary["frames"] == 3, name
        for metric in ("abs_rel", "delta1", "delta2", "delta3"):
            assert np.isfinite(summary["metrics"][metric]["mean"]), (name, metric)
    assert summaries["ma_student"]["extra"]["model_id"] == f"metric-anything-student/ours@{digest}"
    teacher_id = summaries[STUDENT_PRIOR_PIPELINE]["extra"]["model_id"]
    assert teacher_id.startswith(f"metric-anything-teacher/teacher@{weights_digest(teacher)}")
    assert teacher_id.endswith(f"+prior:metric-anything-student/ours@{digest}")
    # The constant is the training median, scored as any prediction: by hand here.
    frames = list(chain_bags([tabletop_bag]))
    gts = [f.gt_depth for f in frames]
    expected = [depth_metrics(np.full_like(gt, MEDIAN), gt) for gt in gts]
    constant = summaries["constant_median"]["metrics"]
    assert summaries["constant_median"]["extra"]["model_id"] == "constant/2.5m"
    assert constant["abs_rel"]["mean"] == pytest.approx(np.mean([m.abs_rel for m in expected]))
    assert constant["delta1"]["mean"] == pytest.approx(np.mean([m.delta1 for m in expected]))
    # ... and not the recording's own median (which would peek at the test set).
    assert abs(np.nanmedian(np.concatenate([g.ravel() for g in gts])) - MEDIAN) > 0.1
    table = (out / "comparison.md").read_text()
    assert all(f"| {name} |" in table for name in MA_STUDENT)
    # The official student has no training median: the constant is skipped, the rest runs.
    out2 = tmp_path / "eval_official"
    official = str(checkpoints["official"])
    args = ["eval-bag", str(tabletop_bag), "--mode", "offline", "--max-frames", "1"]
    args += ["--pipeline", "constant_median", "--pipeline", "ma_student", "--figure-every", "0"]
    assert main([*args, "--checkpoint", official, "--out", str(out2)]) == 0
    assert "constant_median skipped" in capsys.readouterr().out
    assert not (out2 / "constant_median").exists() and (out2 / "ma_student").is_dir()

"""FocusDepth in evaluation, on a tiny random FocusDepth and a tiny simulated tabletop bag:
per-target geometry of the ground truth itself is ~0 and a +10 mm depth offset moves the
centroid by the hand-computed ~10 mm; eval-bag writes targets.csv, per-target quartiles (all
and per material) and the prompt study's four kinds for both FocusDepth pipelines; a bag
without targets skips them with a note; the chain is offline only over DDS; the table."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from test_focusdepth_engine import save_tiny_focusdepth

from depth_perception.cli import main
from depth_perception.engines.base import CompletionResult, Engine, FrameInputs, TargetResult
from depth_perception.engines.focusdepth import default_focusdepth_path
from depth_perception.eval.evaluate import chain_bags
from depth_perception.eval.pipelines import (
    FOCUSDEPTH,
    PIPELINE_GROUPS,
    TAKES_CHECKPOINT,
    MissingInputError,
    expand_pipelines,
    get_pipeline,
)
from depth_perception.eval.prompt_study import (
    PROMPT_STUDY_KINDS,
    empty_box,
    study_frame,
    study_prompts,
)
from depth_perception.eval.targets import GEOMETRY_METRICS, target_figure, target_rows
from depth_perception.io.bag import bag_materials, write_frames_bag, write_sim_bag
from depth_perception.sim.sequence import SequenceConfig, generate_sequence


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _config(**kw) -> SequenceConfig:
    # seed 3: glasses (transparent) and metal (specular) among the targets
    base = dict(scene_kind="tabletop", seed=3, n_frames=2, width=112, height=84)
    return SequenceConfig(**{**base, **kw}, lidar=False, radar=False)


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bags") / "tabletop"
    write_sim_bag(path, _config(), progress=False)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_focusdepth(tmp_path_factory.mktemp("focusdepth"))


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_the_bag_keeps_the_materials(bag):
    materials = bag_materials(bag)
    assert {"diffuse", "specular", "transparent"} <= set(materials.values())
    frame = next(chain_bags([bag]))
    assert frame.extra["materials"] == materials
    assert {int(t.target_id) for t in frame.extra["targets"]} <= set(materials)


def test_geometry_of_the_ground_truth_is_zero_and_an_offset_moves_the_centroid(bag):
    frame = next(chain_bags([bag]))
    gt = frame.gt_depth
    rows = target_rows(frame, gt)
    assert len(rows) >= 3 and all(r["mask"] == "gt_instance" for r in rows)
    for row in rows:
        for metric in GEOMETRY_METRICS:
            assert abs(row[metric]) < 1e-6, (row["target_id"], metric, row[metric])
        assert row["fde.foreground.abs_rel"] < 1e-5 and row["fde.foreground.delta1"] == 1.0

    shifted = target_rows(frame, gt + np.float32(0.010))
    intr = frame.intrinsics
    for row in shifted:
        # By hand: every point moves by 10 mm along its pixel's ray ((u-cx)/fx, (v-cy)/fy, 1),
        # so the centroid moves by 10 mm times the mean ray.
        v, u = np.nonzero((frame.instance == row["target_id"]) & np.isfinite(gt))
        ray = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones(len(u))], 1)
        expected = 10.0 * np.linalg.norm(ray.mean(axis=0))
        assert row["centroid_mm"] == pytest.approx(expected, rel=1e-3)
        assert 10.0 <= row["centroid_mm"] < 11.0
        assert 0.0 < row["chamfer_mm"] <= 10.5


def test_fde_of_a_focusdepth_scores_each_targets_own_relative_prediction(bag):
    """FDE-Bench compares models: a target's row scores that target's relative disparity (any
    scale and shift: aligned away), not the composite depth (here a constant, which would
    score 1.0 off), also when the target then failed; without a prediction, NaN."""
    from depth_perception.engines.base import TargetResult

    frame = next(chain_bags([bag]))
    gt = frame.gt_depth
    ids = [int(t.target_id) for t in frame.extra["targets"]]
    with np.errstate(divide="ignore", invalid="ignore"):
        affine = (3.0 / gt + 0.2).astype(np.float32)  # exact after a disparity fit
    results = [TargetResult(target_id=ids[0], text="", relative=affine)]
    results.append(
        TargetResult(target_id=ids[1], text="", relative=affine, error="x", error_kind="fit")
    )
    composite = np.full_like(gt, 7.0)
    rows = {r["target_id"]: r for r in target_rows(frame, composite, results)}
    for tid in ids[:2]:
        assert rows[tid]["fde.foreground.abs_rel"] < 1e-5, tid
        assert rows[tid]["fde.global.delta1"] == 1.0
    assert rows[ids[1]]["error"] == "fit"
    for tid in ids[2:]:
        if tid in rows:  # no result: nothing of the model to score
            assert np.isnan(rows[tid]["fde.global.abs_rel"]) and rows[tid]["error"] == "no_result"


def test_the_target_figure_has_a_row_per_target_with_a_prediction(bag):
    """One row per target with a relative prediction (at most three), none without; an exact
    prediction leaves the error panel darker (AbsRel 0) than a wrong one."""
    from depth_perception.engines.base import TargetResult

    frame = next(chain_bags([bag]))
    gt = frame.gt_depth
    ids = [int(t.target_id) for t in frame.extra["targets"]]
    with np.errstate(divide="ignore", invalid="ignore"):
        affine = (3.0 / gt + 0.2).astype(np.float32)
    mask = frame.instance == ids[0]
    one = [TargetResult(target_id=ids[0], text="mug", relative=affine, mask=mask)]
    none = [TargetResult(target_id=i, text="") for i in ids]
    assert target_figure(frame, none) is None
    single = target_figure(frame, one)
    many = target_figure(frame, [*one, *one, *one, *one])
    assert single is not None and many is not None and single.dtype == np.uint8
    assert many.shape[0] == 3 * single.shape[0] and many.shape[1] == single.shape[1]
    # the error panel (the last one): an exact prediction is darker there than a wrong one
    wrong = [TargetResult(target_id=ids[0], text="mug", relative=gt.copy(), mask=mask)]
    bad = target_figure(frame, wrong)
    width = round(gt.shape[1] * max(240, gt.shape[0]) / gt.shape[0])
    assert single[:, -width:].mean() < bad[:, -width:].mean() - 1  # small target: ~4 levels


def test_eval_bag_writes_targets_quartiles_materials_and_the_prompt_study(
    bag, checkpoint, tmp_path
):
    out = tmp_path / "eval"
    args = ["eval-bag", str(bag), "--mode", "offline", "--out", str(out), "--figure-every", "0"]
    # "focusdepth" is the group (as "ma_student" is): focusdepth and focusdepth_chain
    args += ["--pipeline", "passthrough", "--pipeline", "focusdepth"]
    assert main([*args, "--checkpoint", str(checkpoint), "--prompt-study"]) == 0

    masks = {"passthrough": "gt_instance", "focusdepth": "engine", "focusdepth_chain": "engine"}
    for name, mask in masks.items():
        rows = _read_csv(out / name / "targets.csv")
        assert rows and {r["mask"] for r in rows} == {mask}
        assert {"transparent", "specular"} <= {r["material"] for r in rows}
        per_target = json.loads((out / name / "summary.json").read_text())["extra"]["per_target"]
        assert per_target["all"]["targets"] == len(rows)
        for group in (per_target["all"], *per_target["by_material"].values()):
            for metric in ("chamfer_mm", "fde.boundary.abs_rel", "fde.global.delta1"):
                stats = group[metric]
                if stats["n"]:
                    assert stats["q25"] <= stats["median"] <= stats["q75"]
        assert "## Per target" in (out / name / "report.md").read_text()
    # the raw sensor has no depth on glass: those targets fail, reported apart
    raw = json.loads((out / "passthrough" / "summary.json").read_text())["extra"]["per_target"]
    assert raw["by_material"]["transparent"]["failed"] >= 1

    assert (out / "focusdepth_chain" / "prompt_study.csv").exists()
    study = _read_csv(out / "focusdepth" / "prompt_study.csv")
    kinds = {r["kind"] for r in study}
    assert kinds == set(PROMPT_STUDY_KINDS)
    assert all(r["error"] == "empty_prompt" for r in study if r["kind"] == "empty")
    means = json.loads((out / "focusdepth" / "prompt_study.json").read_text())
    assert all(means[k]["n"] > 0 for k in PROMPT_STUDY_KINDS)
    assert means["empty"]["refused"] == 1.0
    assert means["empty"]["fg_coverage"] < 1.0  # the sensor depth it leaves has no glass
    correct = means["correct"]["per_target"]["fde.global.abs_rel"]
    assert correct["n"] > 0 and correct["q25"] <= correct["median"] <= correct["q75"]
    assert not (out / "passthrough" / "prompt_study.csv").exists()
    comparison = (out / "comparison.md").read_text()
    assert "## Per target" in comparison and "## Prompt correctness: focusdepth" in comparison


def test_study_prompts_of_each_kind(bag):
    frame = next(chain_bags([bag]))
    targets = frame.extra["targets"]
    occupied = np.isin(frame.instance, [t.target_id for t in targets])
    for target in targets:
        prompts = study_prompts(frame, target)
        assert list(prompts) == list(PROMPT_STUDY_KINDS)
        assert all(p.target_id == target.target_id for p in prompts.values())
        wrong = prompts["wrong_visible"]
        assert (wrong.text, wrong.box) in {(t.text, t.box) for t in targets if t is not target}
        x, y, w, h = prompts["absent"].box
        assert w > 0 and not occupied[y : y + h, x : x + w].any()
        assert prompts["absent"].text not in {t.text for t in targets}
        assert prompts["empty"].text == "" and prompts["empty"].box == (0, 0, 0, 0)
    assert empty_box(np.ones((4, 5), bool), (2, 2), (1, 1)) is None
    # no free 3x3 on the diagonal: halved to 2x2, the free one nearest the top right corner
    assert empty_box(np.eye(4, dtype=bool), (3, 3), (4, 0)) == (2, 0, 2, 2)


class _BoxEngine(Engine):
    """A FocusDepth stand-in whose relative output is 1 everywhere, plus 0.5 on the pixels of
    the instance whose box its prompt gives: only the prompted object's depth moves."""

    def __init__(self, frame) -> None:
        self.frame = frame

    def run(self, inputs: FrameInputs) -> CompletionResult:
        by_box = {tuple(t.box): int(t.target_id) for t in self.frame.extra["targets"]}
        results = []
        for target in inputs.targets:
            r = TargetResult(target_id=int(target.target_id), text=str(target.text))
            if target.text:  # the empty prompt is refused before the network
                rel = np.ones(inputs.depth.shape, np.float32)
                rel[self.frame.instance == by_box.get(tuple(target.box), -1)] += 0.5
                r.relative, r.depth = rel, self.frame.gt_depth
                r.mask = self.frame.instance == int(target.target_id)
            else:
                r.error, r.error_kind = "empty", "empty_prompt"
            results.append(r)
        return CompletionResult(depth=inputs.depth, targets=results)


def test_prompt_effect_is_the_change_against_the_correct_prompt(bag):
    frame = next(chain_bags([bag]))
    inputs = FrameInputs(intrinsics=frame.intrinsics, depth=frame.depth)
    rows = study_frame(frame, inputs, lambda i: i.depth, _BoxEngine(frame), 0)
    effect = {(r["target_id"], r["kind"]): r["prompt_effect"] for r in rows}
    assert len({tuple(t.box) for t in frame.extra["targets"]}) == len(frame.extra["targets"])
    checked = [int(t.target_id) for t in frame.extra["targets"]]
    checked = [tid for tid in checked if (tid, "correct") in effect]
    assert len(checked) >= 2  # targets with pixels in the frame, each with every prompt kind
    for tid in checked:
        assert effect[tid, "correct"] == 0.0
        # correct: 1.5 on the target; another target's box or an empty one: 1 there
        assert effect[tid, "wrong_visible"] == pytest.approx(abs(1 - 1.5) / 1.5)
        assert effect[tid, "absent"] == pytest.approx(1 / 3)
        assert np.isnan(effect[tid, "empty"])


def test_a_bag_without_targets_skips_focusdepth_with_a_note(checkpoint, tmp_path):
    frames = [f.to_rgbd_frame() for f in generate_sequence(_config(n_frames=1))]
    for f in frames:
        f.extra.pop("targets")
    bag = tmp_path / "no_targets"
    write_frames_bag(bag, frames)
    out = tmp_path / "eval"
    args = ["eval-bag", str(bag), "--mode", "offline", "--out", str(out), "--figure-every", "0"]
    args += ["--pipeline", "focusdepth", "--pipeline", "passthrough", "--prompt-study"]
    assert main([*args, "--checkpoint", str(checkpoint)]) == 0
    comparison = (out / "comparison.md").read_text()
    for name in FOCUSDEPTH:
        assert f"{name} skipped: pipeline {name} needs targets" in comparison
    assert (out / "passthrough" / "summary.json").exists()
    assert not (out / "passthrough" / "targets.csv").exists()


def test_the_chain_runs_offline_only(bag, checkpoint, tmp_path):
    out = tmp_path / "eval"
    args = ["eval-bag", str(bag), "--mode", "dds", "--out", str(out)]
    assert main([*args, "--pipeline", "focusdepth_chain", "--checkpoint", str(checkpoint)]) == 0
    assert not (out / "focusdepth_chain").exists()  # no node launched, nothing written
    assert "focusdepth_chain skipped: pipeline focusdepth_chain runs offline only" in (
        (out / "comparison.md").read_text()
    )


def test_the_pipeline_table(checkpoint):
    assert PIPELINE_GROUPS["focusdepth"] == FOCUSDEPTH == ("focusdepth", "focusdepth_chain")
    assert expand_pipelines(["focusdepth"]) == list(FOCUSDEPTH)  # the group wins, as ma_student
    assert set(FOCUSDEPTH) <= set(TAKES_CHECKPOINT)
    for name in FOCUSDEPTH:
        pipeline = get_pipeline(name, str(checkpoint))
        assert pipeline.parameters == {"checkpoint": str(checkpoint)}
        assert "targets" in pipeline.roles and "depth" in pipeline.roles
    assert get_pipeline("focusdepth_chain", str(checkpoint)).offline_only
    assert not get_pipeline("focusdepth", str(checkpoint)).offline_only
    if not default_focusdepth_path().exists():  # until models/ ships one: skipped with a note
        with pytest.raises(MissingInputError, match="--checkpoint"):
            get_pipeline("focusdepth")


def test_the_chain_takes_lingbot_aligned_as_its_reference(bag, checkpoint):
    from depth_perception.eval.evaluate import pipeline_frames

    pipeline = get_pipeline("focusdepth_chain", str(checkpoint))
    engine = pipeline.make_engine()
    frame, inputs = next(pipeline_frames(pipeline, chain_bags([bag])))
    completed = get_pipeline("lingbot_aligned").make_engine().run(inputs).depth
    np.testing.assert_array_equal(engine.reference(inputs), completed)
    result = engine.run(replace(inputs, targets=inputs.targets[:1]))
    outside = ~result.targets[0].mask if result.targets[0].mask is not None else True
    np.testing.assert_array_equal(
        np.where(outside, result.depth, 0), np.where(outside, completed, 0)
    )

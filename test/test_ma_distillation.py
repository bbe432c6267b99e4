"""Distillation of the MetricAnything student: pseudo-labels and the student task.

``python -m training.pseudo_label``: labels are the teacher engine's depth for the sample's
LiDAR prompt (its pixel count checked against an independent pinhole projection), every
original member is kept byte for byte, provenance names the teacher's weights by their
SHA-256; finished shards are skipped and redone when the prompt changes; rank groups split the
shards; samples without the prompt are left out and counted. The dataset's ``pseudo`` target
and its ground-truth mix. The student task: the paper's loss on a step, its two parameter
groups, the export (the trainer's prediction; the training labels' median, computed here
independently), initialisation from a teacher, the Table 14 loss switch.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tiny_metric_anything import micro_config

from depth_perception.core.prompts import points_to_sparse_depth
from depth_perception.engines.base import FrameInputs
from depth_perception.engines.metric_anything import (
    ConstantDepthConfig,
    ConstantDepthEngine,
    MetricAnythingStudentConfig,
    MetricAnythingStudentEngine,
    MetricAnythingTeacherConfig,
    MetricAnythingTeacherEngine,
)
from depth_perception.io.bag import write_sim_bag
from depth_perception.models.ma_losses import student_distillation_loss
from depth_perception.models.metric_anything import MetricAnythingDepth
from depth_perception.models.metric_anything.checkpoints import save_checkpoint
from depth_perception.sim.sequence import SequenceConfig
from training.config import load_config
from training.dataset import ShardDataset
from training.extract import ExtractConfig, extract
from training.pseudo_label import PseudoLabelConfig, main, pseudo_label
from training.shards import PSEUDO_EXT, ShardReader, decode_sample, iter_shard, read_manifest
from training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "training" / "configs"
STUDENT = CONFIGS / "ma_student_tiny_cpu.yaml"


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Shards (64 x 48, LiDAR, radar on the street bag, the prior): train = 4 street + 4 room
    frames in shards of 2; val = 2 room frames; a random micro teacher; the labelled train."""
    root = tmp_path_factory.mktemp("distill")
    out: dict[str, Path] = {}
    for name, bags in (("train", (("street", 1, 4), ("room", 2, 4))), ("val", (("room", 3, 2),))):
        for kind, seed, n in bags:
            cfg = SequenceConfig(
                scene_kind=kind, seed=seed, n_frames=n, width=64, height=48, radar=kind == "street"
            )
            write_sim_bag(root / "bags" / name / kind, cfg, progress=False)
        out[name] = root / "shards" / name
        ex = ExtractConfig(
            out=out[name], shard_size=2, lidar=True, radar=True, prior="lingbot", progress=False
        )
        assert not extract([root / "bags" / name], ex).failed
    torch.manual_seed(0)
    teacher = MetricAnythingDepth.from_config(micro_config(teacher=True))
    with torch.no_grad():  # a non-zero prompt branch: labels that depend on the prompt
        for p in teacher.prompt_branch.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_checkpoint(teacher, root / "teacher")
    out["teacher"] = root / "teacher"
    out["labels"] = root / "labels"
    report = pseudo_label([out["train"]], label_cfg(out["labels"], out["teacher"]))
    assert report.samples == 8 and report.without_prompt == 0 and len(report.done) == 4
    return out


def label_cfg(out: Path, teacher: Path, **kw) -> PseudoLabelConfig:
    return PseudoLabelConfig(out=out, teacher=str(teacher), device="cpu", progress=False, **kw)


def teacher_engine(teacher: Path) -> MetricAnythingTeacherEngine:
    return MetricAnythingTeacherEngine(MetricAnythingTeacherConfig(str(teacher), device="cpu"))


# ---------------------------------------------------------------------------------------------
# Pseudo-labels
# ---------------------------------------------------------------------------------------------


def test_labels_are_the_teacher_engines_depth_with_provenance(data):
    engine = teacher_engine(data["teacher"])
    weights = (data["teacher"] / "model.safetensors").read_bytes()
    sha = hashlib.sha256(weights).hexdigest()
    src_root, src_records = read_manifest(data["train"])
    root, records = read_manifest(data["labels"])
    assert [r["path"] for r in records] == [r["path"] for r in src_records]  # same names
    assert all(r["n_pseudo"] == r["n"] for r in records)
    checked = 0
    for src, rec in zip(src_records, records, strict=True):
        originals = dict(iter_shard(src_root / src["path"]))
        for key, members in iter_shard(root / rec["path"]):
            before = originals[key]
            # Every original member unchanged but the metadata, which gains pseudo_label.
            assert set(members) == set(before) | {PSEUDO_EXT}
            assert all(members[m] == before[m] for m in before if m != "json")
            sample = decode_sample(members)
            meta = sample["meta"]
            info = meta.pop("pseudo_label")
            assert meta == json.loads(before["json"])
            assert info["teacher_sha256"] == sha and info["prompt"] == "lidar"
            assert info["source_sha256"] == src["sha256"]
            assert info["teacher"] == engine.model_id
            # The prompt's pixel count from an independent pinhole projection of the scan.
            intr = sample["intrinsics"]
            pts = sample["lidar"].astype(np.float64)
            pts = pts[pts[:, 2] > 0]
            u = np.rint(intr.fx * pts[:, 0] / pts[:, 2] + intr.cx)
            v = np.rint(intr.fy * pts[:, 1] / pts[:, 2] + intr.cy)
            inside = (u >= 0) & (u < intr.width) & (v >= 0) & (v < intr.height)
            pixels = len(set(zip(u[inside].astype(int), v[inside].astype(int), strict=True)))
            assert info["prompt_points"] == pixels > 0
            prompt = points_to_sparse_depth(sample["lidar"], intr)
            expected = engine.run(FrameInputs(intrinsics=intr, rgb=sample["rgb"], prompt=prompt))
            # (the labels were made with the threads of the module fixture: float rounding)
            np.testing.assert_allclose(sample["pseudo"], expected.depth, rtol=1e-5)
            assert np.isfinite(sample["pseudo"]).all()
            checked += 1
    assert checked == 8


def test_finished_shards_are_skipped_and_redone_when_the_prompt_changes(data, tmp_path):
    out = tmp_path / "labels"
    shutil_copy(data["labels"], out)
    again = pseudo_label([data["train"]], label_cfg(out, data["teacher"]))
    assert again.done == [] and len(again.skipped) == 4
    # The sensor-depth prompt gives other labels: every shard is redone.
    redone = pseudo_label([data["train"]], label_cfg(out, data["teacher"], prompt="sensor"))
    assert len(redone.done) == 4 and not redone.skipped
    with ShardReader() as reader:
        root, records = read_manifest(out)
        _, members = reader.read(root / records[0]["path"], 0)
    assert decode_sample(members)["meta"]["pseudo_label"]["prompt"] == "sensor"


def shutil_copy(src: Path, dst: Path) -> None:
    import shutil

    shutil.copytree(src, dst)


def test_rank_groups_split_the_shards_and_merge(data, tmp_path):
    out = tmp_path / "labels"
    parts = []
    for rank in range(2):
        report = pseudo_label(
            [data["train"]], label_cfg(out, data["teacher"]), rank_group=(rank, 2)
        )
        parts.append(set(report.done))
    assert parts[0] and parts[1] and not parts[0] & parts[1] and len(parts[0] | parts[1]) == 4
    assert main(["--out", str(out), "--merge-only"]) == 0
    _, records = read_manifest(out)
    assert sorted(Path(r["path"]).name for r in records) == sorted(parts[0] | parts[1])


def test_samples_without_the_prompt_are_left_out_and_counted(data, tmp_path):
    # Only the street bag has radar: the room bag's 4 samples have no radar prompt.
    report = pseudo_label(
        [data["train"]], label_cfg(tmp_path / "radar", data["teacher"], prompt="radar")
    )
    assert report.samples == 4 and report.without_prompt == 4
    _, records = read_manifest(tmp_path / "radar")
    assert sum(r["n"] for r in records) == 4
    # The command line: nothing to label is an error, a missing input too.
    room_only = tmp_path / "room_only"
    assert (
        main(
            [
                str(data["val"]),
                "--out",
                str(room_only),
                "--teacher",
                str(data["teacher"]),
                "--prompt",
                "radar",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 1
    )
    assert main([str(tmp_path / "nope"), "--out", str(tmp_path / "x"), "--no-progress"]) == 2


def test_pseudo_target_and_ground_truth_mix(data):
    with ShardReader() as reader:
        pseudo = ShardDataset(data["labels"], target="pseudo")
        gt = ShardDataset(data["labels"], target="pseudo", gt_fraction=1.0)
        half = ShardDataset(data["labels"], target="pseudo", gt_fraction=0.5, seed=3)
        for i in range(pseudo.num_samples):
            path, pos = pseudo.locate(i)
            raw = decode_sample(reader.read(path, pos)[1])
            a, b = pseudo.load(i, 0, reader), gt.load(i, 0, reader)
            assert bool(a["pseudo"]) and not bool(b["pseudo"])
            assert not bool(a["self_supervised"]) and not bool(b["self_supervised"])
            np.testing.assert_array_equal(a["target"][0].numpy(), np.nan_to_num(raw["pseudo"]))
            np.testing.assert_array_equal(b["target"][0].numpy(), np.nan_to_num(raw["gt"]))
        draws = [bool(half.load(i, e, reader)["pseudo"]) for e in range(4) for i in range(8)]
        again = [bool(half.load(i, e, reader)["pseudo"]) for e in range(4) for i in range(8)]
        assert draws == again and 0 < sum(draws) < len(draws)
    with pytest.raises(ValueError, match="no shards"):
        ShardDataset(data["train"], target="pseudo")  # extract's shards hold no labels


# ---------------------------------------------------------------------------------------------
# The student task
# ---------------------------------------------------------------------------------------------


def student_cfg(run_dir: Path, data: dict, **extra):
    values = {
        "run_dir": str(run_dir),
        "threads": 1,
        "iterations": 3,
        "data.train": [str(data["labels"])],
        "data.batch_size": 2,
        "data.num_workers": 0,
        "data.augment.out_size": [64, 48],
        "optim.groups.0.warmup_iters": 0,
        "optim.warmup_iters": 0,
        "val.data": [str(data["val"])],
        "val.every": 3,
        "log.progress": False,
        "log.every": 1,
        "log.image_every": 0,
        "checkpoint.every": 3,
        # (the shipped config starts from the shipped teacher: the tests bring their own)
        "student.init_teacher": None,
        "student.teacher_network": False,
        **extra,
    }
    network = values.pop("model.config", micro_config(teacher=False))
    cfg = load_config(STUDENT, [f"{k}={json.dumps(v)}" for k, v in values.items()])
    cfg.model.config = network  # (set here: YAML would read its 1e-05 as a string)
    return cfg


def records(run: Path, key: str) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r[key] for r in map(json.loads, lines) if key in r]


@pytest.fixture(scope="module")
def student(data, tmp_path_factory) -> tuple[Path, Trainer]:
    run = tmp_path_factory.mktemp("student") / "run"
    trainer = Trainer(student_cfg(run, data))
    try:
        assert [g["name"] for g in trainer.optimizer.param_groups] == ["backbone", "head"]
        trainer.fit()
    finally:
        trainer.close()
    return run, trainer


def test_student_step_is_the_papers_loss(data, tmp_path):
    trainer = Trainer(student_cfg(tmp_path / "run", data, **{"iterations": 1}))
    try:
        batch = next(iter(trainer.train_loader))
        assert batch["pseudo"].all()
        loss, scalars, view = trainer.task.loss(trainer, batch)
        # The loss is the paper's student loss of the prediction: 10 L1(D_log) + 2 SSI-MAGE.
        expected = student_distillation_loss(view["pred"], batch["target"], batch["valid"])
        assert float(loss) == pytest.approx(float(expected.total), rel=1e-5)
        per_image = 10.0 * expected.pixel + 2.0 * expected.ssi_mage
        assert float(loss) == pytest.approx(float(per_image.mean()), rel=1e-5)
        assert scalars["pseudo_fraction"] == 1.0
        assert scalars["loss/dlog"] == pytest.approx(float(expected.pixel.mean()), rel=1e-5)
        # The prediction as infer makes it, by hand: ImageNet normalisation, bilinear to the
        # 512 px input, canonical inverse depth back at the image size, depth = fx / (W c).
        model, image = trainer.model, batch["image"]
        fx = batch["intrinsics"][:, 0, 0]
        mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
        std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
        x = F.interpolate((image - mean) / std, size=(512, 512), mode="bilinear")
        model.eval()
        with torch.no_grad():
            c = model(x, fx * 512 / 64)["canonical_inverse_depth"]
            c = F.interpolate(c, size=(48, 64), mode="bilinear")
            depth = 1.0 / (c * 64 / fx.reshape(-1, 1, 1, 1)).clamp(1e-3, 1e3)
            pred = trainer.predict(image, None, fx)
        torch.testing.assert_close(depth[:, 0], pred, rtol=1e-4, atol=1e-4)
    finally:
        trainer.close()


def test_student_trains_and_exports_what_the_node_runs(student, data):
    run, trainer = student
    losses = records(run, "train/loss")
    assert len(losses) == 3 and all(np.isfinite(v) and v > 0 for v in losses)
    assert len(records(run, "val/abs_rel")) == 1
    final = load_file(run / "export" / "model.safetensors")
    assert "prompt_branch" not in " ".join(final)
    config = json.loads((run / "export" / "config.json").read_text())
    # The training labels' median, independently: every pseudo-label pixel of every sample.
    root, recs = read_manifest(data["labels"])
    values = []
    for rec in recs:
        for _, members in iter_shard(root / rec["path"]):
            label = decode_sample(members)["pseudo"]
            values.append(label[np.isfinite(label) & (label > 0)])
    assert config["train_median_depth_m"] == pytest.approx(float(np.median(np.concatenate(values))))
    assert config["train_median_samples"] == 8 and config["train_labels"] == "pseudo"
    assert config["pixel_loss"] == "dlog"
    constant = ConstantDepthEngine(ConstantDepthConfig(str(run / "export")))
    assert constant.depth_m == pytest.approx(config["train_median_depth_m"])
    # The engine (the monocular_depth_node's) runs exactly the trainer's prediction.
    engine = MetricAnythingStudentEngine(
        MetricAnythingStudentConfig(str(run / "export"), device="cpu")
    )
    with ShardReader() as reader:
        item = ShardDataset(data["val"]).load(0, 0, reader)
    fx = item["intrinsics"][0, 0]
    ours = trainer.predict(item["image"][None], None, fx[None])[0].numpy()
    rgb = (item["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    raw = decode_sample(ShardReader().read(*ShardDataset(data["val"]).locate(0))[1])
    theirs = engine.run(FrameInputs(intrinsics=raw["intrinsics"], rgb=rgb)).depth
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)


def test_student_from_a_teacher_and_the_table14_switch(data, tmp_path):
    cfg = student_cfg(
        tmp_path / "run",
        data,
        **{"student.init_teacher": str(data["teacher"]), "student.pixel_loss": "inverse_depth"},
    )
    trainer = Trainer(cfg)
    try:
        teacher = load_file(data["teacher"] / "model.safetensors")
        state = trainer.model.state_dict()
        assert set(state) == {k for k in teacher if not k.startswith("prompt_branch.")}
        assert all(torch.equal(state[k], teacher[k]) for k in state)
        _, scalars, _ = trainer.task.loss(trainer, next(iter(trainer.train_loader)))
        assert "loss/inverse_depth" in scalars
    finally:
        trainer.close()
    # The official inverted skip order: the ViT (encoder.patch_encoder.*) carries over; some of
    # its projections have other shapes there, which the full encoder.* pattern names.
    inverted = {**micro_config(teacher=False), "encodings_forward_ids": [4, 3, 2, 1, 0, 5, 6]}
    cfg = student_cfg(
        tmp_path / "inv",
        data,
        **{
            "student.init_teacher": str(data["teacher"]),
            "student.init_teacher_patterns": ["encoder.patch_encoder.*"],
            "model.config": inverted,
        },
    )
    trainer = Trainer(cfg)
    try:
        state = trainer.model.state_dict()
        encoder = [k for k in state if k.startswith("encoder.patch_encoder.")]
        assert encoder and all(torch.equal(state[k], teacher[k]) for k in encoder)
        assert float(state["head.12.bias"][0]) == pytest.approx(0.1)  # from scratch: the bias
    finally:
        trainer.close()
    cfg.student.init_teacher_patterns = ["encoder.*"]
    with pytest.raises(ValueError, match="upsample"):
        Trainer(cfg)
    # teacher_network: the teacher's own network without its prompt branch, every weight its.
    cfg = student_cfg(
        tmp_path / "own",
        data,
        **{
            "student.init_teacher": str(data["teacher"]),
            "student.teacher_network": True,
            "model.config": inverted,  # ignored: the teacher's network
        },
    )
    trainer = Trainer(cfg)
    try:
        state = trainer.model.state_dict()
        assert trainer.model.config.encodings_forward_ids == (0, 1, 2, 3, 4, 5, 6)
        assert set(state) == {k for k in teacher if not k.startswith("prompt_branch.")}
        assert all(torch.equal(state[k], teacher[k]) for k in state)
    finally:
        trainer.close()
    with pytest.raises(ValueError, match="select 0 weights"):
        Trainer(
            student_cfg(
                tmp_path / "none",
                data,
                **{
                    "student.init_teacher": str(data["teacher"]),
                    "student.init_teacher_patterns": ["nothing.*"],
                },
            )
        )
    with pytest.raises(ValueError, match="pixel_loss"):
        Trainer(student_cfg(tmp_path / "x", data, **{"student.pixel_loss": "l2"}))
    with pytest.raises(ValueError, match="prompted teacher"):
        Trainer(student_cfg(tmp_path / "y", data, **{"model.config": micro_config(True)}))


def test_shipped_student_configs():
    tiny = load_config(STUDENT)
    assert tiny.task == "ma_student" and tiny.model.preset == "student_tiny"
    assert tiny.data.target == "pseudo" and tiny.student.pixel_loss == "dlog"
    assert (tiny.student.student_weight, tiny.student.ssi_mage_weight) == (10.0, 2.0)
    assert tiny.student.log_depth_range == 400.0
    for name in ("ma_student_vith16plus_paper", "ma_student_vith16plus_finetune"):
        cfg = load_config(CONFIGS / f"{name}.yaml")
        assert cfg.model.preset == "student_vith16plus" and cfg.device == "cuda"
        assert {g.name: g.lr for g in cfg.optim.groups} == {"backbone": 1e-6}
        assert (cfg.optim.rest_name, cfg.optim.lr) == ("head", 1e-5)
    finetune = load_config(CONFIGS / "ma_student_vith16plus_finetune.yaml")
    assert finetune.model.init_checkpoint.endswith("student_depthmap.pt")

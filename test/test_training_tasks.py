"""Training tasks: the MetricAnything teacher on the one trainer loop.

The LingBot task's contract is the existing trainer / distributed / cluster tests (bitwise
runs, resume, DDP, FSDP, signals). Here: the teacher's per-sample prompts (the paper's N range,
keyed draws, LiDAR / radar / fallback, the prior check), extraction of the prior and radar
members, its parameter groups and learning rates, a few steps on tiny shards (finite losses,
every group trained, export = the trainer's prediction, the prior recorded), exact resume, and
the radar fine-tuning config starting from a teacher checkpoint.

A network smaller than ``teacher_tiny`` (same 512 px input, narrower everything) keeps a step
at about half a second on one thread.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from tiny_metric_anything import micro_config
from train_runs import fit, records

from depth_perception.core.camera import Intrinsics
from depth_perception.io.bag import write_sim_bag
from depth_perception.models.metric_anything import PRESETS
from depth_perception.models.metric_anything.checkpoints import load_model, save_checkpoint
from depth_perception.sim.sequence import SequenceConfig
from training import checkpoint as ckpt
from training.config import load_config
from training.dataset import Collate, ShardDataset
from training.extract import ExtractConfig, extract
from training.shards import ShardReader, decode_sample
from training.tasks.ma_teacher import PROMPT_KINDS, TeacherPrompts
from training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "training" / "configs"
TEACHER = CONFIGS / "ma_teacher_tiny_cpu.yaml"
RADAR = CONFIGS / "ma_teacher_radar_cpu.yaml"
PAPER = CONFIGS / "ma_teacher_vith16plus_paper.yaml"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, Path]:
    """train: 6 street frames; val: 2 room frames; 64 x 48, LiDAR, radar and the prior."""
    root = tmp_path_factory.mktemp("teacher_data")
    out = {}
    for name, kind, seed, n in (("train", "street", 1, 6), ("val", "room", 2, 2)):
        cfg = SequenceConfig(
            scene_kind=kind, seed=seed, n_frames=n, width=64, height=48, radar=kind == "street"
        )
        write_sim_bag(root / "bags" / name / kind, cfg, progress=False)
        out[name] = root / "shards" / name
        ex = ExtractConfig(
            out=out[name], shard_size=4, lidar=True, radar=True, prior="lingbot", progress=False
        )
        assert not extract([root / "bags" / name], ex).failed
    out["bags"] = root / "bags"
    return out


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def teacher_cfg(run_dir: Path, shards: dict, config: Path = TEACHER, **extra):
    values = {
        "run_dir": str(run_dir),
        "threads": 1,
        "iterations": 4,
        "data.train": [str(shards["train"])],
        "data.batch_size": 2,
        "data.num_workers": 0,
        "data.augment.out_size": [64, 48],
        "teacher.prompt.n_range": [50, 400],
        "optim.groups.0.warmup_iters": 2,
        "optim.groups.1.warmup_iters": 0,
        "optim.warmup_iters": 0,
        "val.data": [str(shards["val"])],
        "val.every": 2,
        "log.progress": False,
        "log.every": 1,
        "log.image_every": 2,
        "checkpoint.every": 2,
        **extra,
    }
    cfg = load_config(config, [f"{k}={json.dumps(v)}" for k, v in values.items()])
    if cfg.model.init_checkpoint is None:
        cfg.model.config = micro_config()
    return cfg


# ---------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------


def synthetic_item(rng: np.random.Generator, key: str = "bag_0000001", epoch: int = 0) -> dict:
    """A collated-style sample at 320 x 240: 70 % valid target, a LiDAR band, no radar."""
    h, w = 240, 320
    target = rng.uniform(1.0, 20.0, (h, w)).astype(np.float32)
    target[rng.random((h, w)) < 0.3] = 0
    lidar = np.zeros((h, w), np.float32)
    lidar[100:140:4, 40:280] = target[100:140:4, 40:280]
    return {
        "image": torch.rand(3, h, w),
        "depth": torch.from_numpy(np.where(rng.random((h, w)) < 0.5, target, 0))[None],
        "target": torch.from_numpy(target)[None],
        "valid": torch.from_numpy(target > 0)[None],
        "intrinsics": torch.from_numpy(
            Intrinsics.from_K([[300, 0, 160], [0, 300, 120], [0, 0, 1]], w, h).K.astype(np.float32)
        ),
        "prompt": torch.from_numpy(lidar)[None],
        "radar_prompt": torch.zeros(1, h, w),
        "prior": torch.from_numpy(rng.uniform(2.0, 9.0, (h, w)).astype(np.float32))[None],
        "prior_name": "lingbot",
        "self_supervised": torch.tensor(False),
        "key": key,
        "epoch": torch.tensor(epoch),
    }


def prompts(kinds=("random",), n_range=(2_000, 40_000), **kw) -> TeacherPrompts:
    weights = tuple(1.0 / len(kinds) for _ in kinds)
    return TeacherPrompts(
        seed=0, kinds=kinds, weights=weights, n_range=n_range, prior="lingbot", **kw
    )


def test_teacher_prompts_paper_range_keyed_and_prepared():
    rng = np.random.default_rng(0)
    item = synthetic_item(rng)
    target = item["target"][0].numpy()
    draw = prompts()
    counts = []
    for i in range(12):
        out = draw({**item, "key": f"bag_{i:07d}"})
        sparse = out["prompt_depth"][0].numpy()
        n = int((sparse > 0).sum())
        counts.append(n)
        assert int(out["prompt_points"]) == n
        assert out["prompt_kind"] == PROMPT_KINDS.index("random")
        # The paper's N in [2,000, 40,000] distinct valid target pixels, their exact values.
        assert 2_000 <= n <= 40_000
        on = sparse > 0
        assert (target[on] > 0).all() and np.array_equal(sparse[on], target[on])
        # [PDSA, GMDR, mask] in metric disparity: the mask is the prompt, PDSA keeps it.
        ma = out["ma_prompt"].numpy()
        assert ma.shape == (3, 240, 320) and np.isfinite(ma).all()
        assert np.array_equal(ma[2] > 0, on)
        np.testing.assert_allclose(ma[0][on], 1.0 / target[on], rtol=1e-6)
        assert (ma[1] > 0).all()  # GMDR: the prior, aligned, everywhere
    assert len(set(counts)) > 6  # N is drawn per sample
    # Keyed by (seed, epoch, key): the same draw again, another one in another epoch.
    again = draw(item)
    assert torch.equal(again["prompt_depth"], draw(item)["prompt_depth"])
    other = draw({**item, "epoch": torch.tensor(1)})
    assert not torch.equal(other["prompt_depth"], again["prompt_depth"])
    assert torch.equal(
        prompts(fixed_epoch=0)({**item, "epoch": torch.tensor(5)})["prompt_depth"],
        again["prompt_depth"],
    )
    # Fewer valid pixels than N: all of them.
    sparse_target = torch.zeros_like(item["target"])
    sparse_target[0, ::20, ::20] = 3.0
    few = draw({**item, "target": sparse_target})
    assert int(few["prompt_points"]) == int((sparse_target > 0).sum())

    # LiDAR: the sample's own scan; radar without points falls back to the random kind.
    lidar = prompts(("lidar",))(item)
    assert torch.equal(lidar["prompt_depth"], item["prompt"])
    assert lidar["prompt_kind"] == PROMPT_KINDS.index("lidar")
    radar = prompts(("radar",), n_range=(100, 200))(item)
    assert radar["prompt_kind"] == PROMPT_KINDS.index("random")
    assert 100 <= int(radar["prompt_points"]) <= 200
    sensor = prompts(("sensor",))(item)
    assert torch.equal(sensor["prompt_depth"], item["depth"])
    # A mix: both kinds drawn over samples.
    mixed = prompts(("random", "lidar"))
    kinds = {int(mixed({**item, "key": f"k{i}"})["prompt_kind"]) for i in range(20)}
    assert kinds == {PROMPT_KINDS.index("random"), PROMPT_KINDS.index("lidar")}

    with pytest.raises(ValueError, match="prior"):
        draw({**item, "prior_name": "ma_student:x"})


# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------


def test_extract_stores_prior_and_radar_and_redoes_bags_without(shards, tmp_path):
    _, members = ShardReader().read(next(shards["train"].glob("*.tar")), 0)
    sample = decode_sample(members)
    assert sample["meta"]["prior"] == "lingbot" and "@" in sample["meta"]["prior_model"]
    prior = sample["prior"]
    assert prior.dtype == np.float32 and prior.shape == sample["depth"].shape
    assert np.isfinite(prior).mean() > 0.9 and np.nanmin(prior) > 0
    assert sample["radar"].shape[1] == 3 and len(sample["radar"]) > 0

    # A bag extracted without the prior is redone when the prior is asked for.
    out = tmp_path / "shards"
    bags = shards["bags"] / "val"
    first = extract([bags], ExtractConfig(out=out, shard_size=4, progress=False))
    assert first.done == ["room"]
    with pytest.raises(ValueError, match="no prior member"), ShardReader() as reader:
        ShardDataset(out, prior=True).load(0, 0, reader)
    again = extract([bags], ExtractConfig(out=out, shard_size=4, progress=False))
    assert again.skipped == ["room"]
    with_prior = ExtractConfig(out=out, shard_size=4, prior="lingbot", progress=False)
    redone = extract([bags], with_prior)
    assert redone.done == ["room"] and not redone.skipped
    with ShardReader() as reader:
        item = ShardDataset(out, prior=True).load(0, 0, reader)
    assert item["prior_name"] == "lingbot" and bool((item["prior"] > 0).any())


# ---------------------------------------------------------------------------------------------
# Configs, groups, learning rates
# ---------------------------------------------------------------------------------------------


def test_shipped_teacher_configs():
    paper = load_config(PAPER)
    assert paper.task == "ma_teacher" and paper.model.preset == "teacher_vith16plus"
    lrs = {g.name: (g.lr, g.patterns) for g in paper.optim.groups}
    assert lrs == {
        "backbone": (1e-6, ["encoder.patch_encoder.*"]),
        "prompt": (1e-5, ["prompt_branch.*"]),
    }
    assert (paper.optim.rest_name, paper.optim.lr) == ("head", 1e-5)
    assert all(g.warmup_iters > 0 for g in paper.optim.groups) and paper.optim.warmup_iters > 0
    assert paper.teacher.prompt.n_range == [2_000, 40_000]
    assert (paper.teacher.mae_weight, paper.teacher.ssi_mage_weight) == (15.0, 5.0)
    assert paper.dist.strategy == "fsdp" and paper.device == "cuda"

    small = load_config(TEACHER)
    assert small.model.preset == "teacher_tiny" and small.device == "auto"
    # Scaled x100 with the paper's 1:10 backbone ratio.
    assert {g.name: g.lr for g in small.optim.groups} == {"backbone": 1e-4, "prompt": 1e-3}
    assert small.optim.lr == 1e-3
    radar = load_config(RADAR)
    assert radar.teacher.prompt.kinds == {"radar": 1.0} and radar.data.target == "gt"
    assert radar.model.init_checkpoint == "models/ma_teacher_small"

    with pytest.raises(ValueError, match="kind"):
        from training.tasks.ma_teacher import MetricAnythingTeacherTask

        MetricAnythingTeacherTask(load_config(TEACHER, ["teacher.prompt.kinds={laser: 1}"]))


def test_wrong_groups_are_rejected(shards, tmp_path):
    cfg = teacher_cfg(tmp_path / "run", shards, **{"optim.groups.0.patterns": ["*blocks*"]})
    with pytest.raises(ValueError, match="backbone"):
        Trainer(cfg)


# ---------------------------------------------------------------------------------------------
# Training, export, resume
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(shards, tmp_path_factory) -> tuple[Path, dict, dict]:
    """4 steps of batch 2 (val at 2 and 4); the initial and final weights."""
    run = tmp_path_factory.mktemp("teacher_run") / "run"
    cfg = teacher_cfg(run, shards)
    trainer = Trainer(cfg)
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    try:
        assert [g["name"] for g in trainer.optimizer.param_groups] == ["backbone", "prompt", "head"]
        groups = trainer.model.parameter_groups()
        for g in trainer.optimizer.param_groups:
            assert {id(p) for p in g["params"]} == {id(p) for p in groups[g["name"]]}
        trainer.fit()
    finally:
        trainer.close()
    return run, initial, trainer


def test_teacher_trains_every_group_with_its_lr(trained):
    run, initial, trainer = trained
    losses = records(run, "train/loss")
    assert [s for s, _ in losses] == [1, 2, 3, 4]
    assert all(np.isfinite(v) and v > 0 for _, v in losses)
    assert all(np.isfinite(v) for _, v in records(run, "train/grad_norm"))
    # Learning rates as configured: backbone 1e-4 warmed up over 2 steps, prompt / head 1e-3,
    # cosine to 10 % at the end.
    for group in ("backbone", "prompt", "head"):
        logged = [v for _, v in records(run, f"train/lr/{group}")]
        assert logged == pytest.approx([trainer.schedule.lr(group, t) for t in range(4)])
    assert records(run, "train/lr/backbone")[0][1] == pytest.approx(1e-4 / 2)
    assert records(run, "train/lr/backbone")[1][1] == pytest.approx(
        1e-4 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi / 4)))
    )
    assert records(run, "train/lr/prompt")[0][1] == pytest.approx(1e-3)
    assert records(run, "train/lr/head")[0][1] == pytest.approx(1e-3)
    # Every group moved: the ViT, the prompt branch (stem too: it gets a gradient once the
    # zero convolution is non-zero) and the head.
    final = load_file(run / "export" / "model.safetensors")
    for prefix in (
        "encoder.patch_encoder.blocks.0.attn.qkv.weight",
        "prompt_branch.stages.0.zero_conv.weight",
        "prompt_branch.stages.0.stem.weight",
        "decoder.convs.0.weight",
        "head.0.weight",
    ):
        assert not torch.equal(final[prefix], initial[prefix]), prefix
    assert len(records(run, "val/abs_rel")) == 2


def test_teacher_export_is_the_trainers_prediction(trained, shards):
    run, _, trainer = trained
    config = json.loads((run / "export" / "config.json").read_text())
    assert config["prior"] == "lingbot" and config["prompt_space"] == "disparity"
    model = load_model(run / "export")
    assert model.is_teacher
    task = trainer.task
    dataset = ShardDataset(shards["val"], batch_size=2, **task.dataset_options(False))
    with ShardReader() as reader:
        items = [dataset.load(i, 0, reader) for i in range(2)]
    batch = Collate(transform=task.sample_transform(False))(items)
    assert (batch["prompt_kind"] == PROMPT_KINDS.index("lidar")).all()
    fx = batch["intrinsics"][:, 0, 0]
    ours = trainer.predict(batch["image"], batch["ma_prompt"], fx)
    theirs = model.infer(batch["image"], f_px=fx, prompt=batch["ma_prompt"])["depth"]
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    assert ours.shape == (2, 48, 64) and torch.isfinite(ours).all()


def test_teacher_resume_is_exact(trained, shards, tmp_path):
    """Stop after step 2 (its checkpoint), resume in a new trainer: the uninterrupted run's
    losses and final weights, bitwise."""
    run, _, _ = trained
    cfg = teacher_cfg(tmp_path / "run", shards)
    fit(cfg, max_steps=2)
    assert (tmp_path / "run" / ckpt.CHECKPOINTS / ckpt.LATEST).read_text().strip() == (
        ckpt.step_name(2)
    )
    fit(teacher_cfg(tmp_path / "run", shards), resume=True)
    assert records(tmp_path / "run", "train/loss") == records(run, "train/loss")
    ref = load_file(run / "export" / "model.safetensors")
    res = load_file(tmp_path / "run" / "export" / "model.safetensors")
    assert ref.keys() == res.keys() and all(torch.equal(ref[k], res[k]) for k in ref)


def test_radar_config_starts_from_the_teacher(trained, shards, tmp_path):
    run, _, _ = trained
    cfg = teacher_cfg(
        tmp_path / "radar",
        shards,
        config=RADAR,
        **{"model.init_checkpoint": str(run / "export"), "iterations": 1},
    )
    trainer = Trainer(cfg)
    try:
        start = load_file(run / "export" / "model.safetensors")
        state = trainer.model.state_dict()
        assert all(torch.equal(state[k], start[k]) for k in start)  # no re-initialisation
        assert trainer.train_loader.dataset.radar and not trainer.train_loader.dataset.lidar
        batch = next(iter(trainer.train_loader))
        kinds = {PROMPT_KINDS[int(k)] for k in batch["prompt_kind"]}
        assert kinds <= {"radar", "random"} and "radar" in kinds
        trainer.fit()
    finally:
        trainer.close()
    assert np.isfinite(records(tmp_path / "radar", "train/loss")[0][1])
    # A prompt-free network is no teacher to fine-tune.
    student = PRESETS["teacher_tiny"].as_student()
    from depth_perception.models.metric_anything import MetricAnythingDepth

    save_checkpoint(MetricAnythingDepth(student), tmp_path / "student")
    with pytest.raises(ValueError, match="prompt-free"):
        Trainer(
            teacher_cfg(
                tmp_path / "x",
                shards,
                config=RADAR,
                **{"model.init_checkpoint": str(tmp_path / "student")},
            )
        )


def test_teacher_under_fsdp_is_the_single_process_run(shards, tmp_path):
    """2 ranks x batch 1 under torchrun (FSDP over the ViT blocks, gloo) compute the losses of
    1 process x batch 2: the prompts are keyed by sample, the RoPE draws by iteration."""
    cfg = teacher_cfg(
        tmp_path / "single",
        shards,
        **{"iterations": 2, "val.data": [], "teacher.channels_last": False},
    )
    fit(cfg)
    config = yaml.safe_load((tmp_path / "single" / "config.yaml").read_text())
    config.update(run_dir=str(tmp_path / "fsdp"))
    config["data"]["batch_size"] = 1
    config["dist"]["strategy"] = "fsdp"
    (tmp_path / "fsdp.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "-m", "training.train"]
    command += ["--config", str(tmp_path / "fsdp.yaml")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    single = [v for _, v in records(tmp_path / "single", "train/loss")]
    fsdp = [v for _, v in records(tmp_path / "fsdp", "train/loss")]
    assert len(single) == len(fsdp) == 2
    np.testing.assert_allclose(fsdp, single, rtol=1e-4)
    assert load_model(tmp_path / "fsdp" / "export").is_teacher

"""Trainer: config loading, parameter groups and the paper schedule, loss, masks, a full run
(checkpoints, TensorBoard, validation, export), and SIGKILL + resume ending bitwise equal.

Everything runs the shipped tiny CPU config on a few simulated 64x48 frames, shrunk further
by overrides (56x42 crops, 6-12 tokens, one thread) so a step takes a few milliseconds.
The multi-process (DDP / FSDP) checks live in test_training_distributed.py.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from depth_perception.io.bag import write_sim_bag
from depth_perception.models.checkpoints import load_model
from depth_perception.models.lingbot import build_preset, patch_valid_counts, valid_depth
from depth_perception.sim.sequence import SequenceConfig
from training import checkpoint as ckpt
from training.config import (
    LossConfig,
    MaskingConfig,
    TrainConfig,
    apply_override,
    dump_config,
    load_config,
)
from training.dataset import Collate, ShardDataset
from training.distributed import DistInfo
from training.extract import ExtractConfig, extract
from training.optim import REST, LRSchedule, assign_groups, build_optimizer
from training.shards import ShardReader
from training.tasks.lingbot import corrupt_inputs, lingbot_loss, sample_token_masks
from training.train import main as train_main
from training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "training" / "configs"
TINY = CONFIGS / "lingbot_tiny_cpu.yaml"
PAPER = CONFIGS / "lingbot_vitl14_paper.yaml"
SMALL = CONFIGS / "lingbot_small.yaml"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, Path]:
    """train: 10 tabletop frames; val: 3 room frames (shard size 4: several shards)."""
    root = tmp_path_factory.mktemp("trainer_data")
    out = {}
    for name, kind, seed, n in (("train", "tabletop", 1, 10), ("val", "room", 2, 3)):
        cfg = SequenceConfig(
            scene_kind=kind, seed=seed, n_frames=n, width=64, height=48, lidar=False
        )
        write_sim_bag(root / "bags" / name / kind, cfg, progress=False)
        out[name] = root / "shards" / name
        extract([root / "bags" / name], ExtractConfig(out=out[name], shard_size=4, progress=False))
    return out


@pytest.fixture(autouse=True)
def _keep_threads():
    """The trainer sets torch's thread count (threads=1 here); give the session its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def small_overrides(run_dir: Path, train: Path, **extra) -> list[str]:
    """The tiny config made smaller still, as --set assignments."""
    values = {
        "run_dir": str(run_dir),
        "threads": 1,
        "iterations": 6,
        "data.train": [str(train)],
        "data.batch_size": 2,
        "data.num_workers": 0,
        "data.augment.out_size": [56, 42],
        "model.num_tokens": [6, 12],
        "optim.groups.0.warmup_iters": 3,
        "schedule.step_size": 4,
        "val.data": [],
        "log.progress": False,
        "log.every": 1,
        "log.image_every": 3,
        "checkpoint.every": 2,
        "checkpoint.keep": 2,
    }
    values.update(extra)
    return [f"{k}={json.dumps(v)}" for k, v in values.items()]


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


def test_config_yaml_overrides_and_errors(tmp_path):
    cfg = load_config(
        TINY,
        [
            "optim.lr=3e-4",  # YAML 1.1 reads this as a string: coerced to float
            "data.augment.out_size=[56, 42]",
            "optim.groups.0.warmup_iters=7",
            "model.num_tokens=32",
            "val.data=[]",
        ],
    )
    assert isinstance(cfg, TrainConfig)
    assert cfg.optim.lr == 3e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.data.augment.out_size == (56, 42)  # AugmentConfig's tuple field
    assert cfg.data.augment.crop_scale == (0.5, 1.0)  # from the YAML file
    assert cfg.data.augment.p_flip == 0.5  # AugmentConfig default
    assert cfg.optim.groups[0].warmup_iters == 7 and cfg.optim.groups[0].lr == 3e-4
    assert cfg.model.num_tokens == 32 and cfg.val.data == []
    assert cfg.model.preset == "tiny" and cfg.iterations == 300

    with pytest.raises(ValueError, match="learning_rate"):
        load_config(TINY, ["optim.learning_rate=1"])
    with pytest.raises(ValueError, match="key=value"):
        load_config(TINY, ["iterations"])
    with pytest.raises(ValueError):
        load_config(TINY, ["iterations=many"])
    with pytest.raises(ValueError, match="index"):
        load_config(TINY, ["optim.groups.3.lr=1"])
    with pytest.raises(ValueError, match="precision"):
        load_config(TINY, ["precision=fp8"])
    data = {"a": {"b": [1, {"c": 2}]}}
    apply_override(data, "a.b.1.c=[3, 4]")
    apply_override(data, "a.new.x=null")
    assert data == {"a": {"b": [1, {"c": [3, 4]}], "new": {"x": None}}}

    # The resolved config printed by the CLI loads back to the same config.
    out = tmp_path / "resolved.yaml"
    out.write_text(dump_config(cfg))
    assert load_config(out) == cfg


def test_shipped_configs(capsys):
    paper = load_config(PAPER)
    # 8 per GPU on 16 nodes x 8 GPUs (the sbatch defaults) = the paper's global batch 1,024.
    assert paper.data.batch_size * 16 * 8 == 1024
    assert paper.iterations == 250_000 and paper.model.preset == "vitl14"
    assert paper.dist.strategy == "fsdp" and paper.precision == "bf16"
    assert (paper.optim.lr, paper.optim.weight_decay, paper.optim.betas) == (
        1e-4,
        0.05,
        [0.9, 0.999],
    )
    (encoder,) = paper.optim.groups
    assert (encoder.patterns, encoder.lr, encoder.warmup_iters) == (["*backbone*"], 1e-5, 2000)
    assert (paper.schedule.kind, paper.schedule.step_size, paper.schedule.gamma) == (
        "step",
        25_000,
        0.5,
    )
    assert paper.optim.grad_clip == 1.0
    small = load_config(SMALL)
    assert small.model.preset == "vits14" and small.dist.strategy == "ddp"
    # GPU configs fail loudly without CUDA instead of training on the CPU; CPU ones say auto.
    assert paper.device == small.device == "cuda"
    assert load_config(TINY).device == load_config(CONFIGS / "lingbot_default.yaml").device
    assert load_config(TINY).device == "auto"
    with pytest.raises(ValueError, match="device"):
        load_config(TINY, ["device=gpu"])

    assert train_main(["--config", str(TINY), "--set", "iterations=5", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "iterations: 5" in printed and "preset: tiny" in printed


# ---------------------------------------------------------------------------------------------
# Parameter groups and schedule
# ---------------------------------------------------------------------------------------------


def test_param_groups_and_paper_schedule():
    paper = load_config(PAPER)
    model = build_preset("tiny")
    model.encoder.backbone.mask_token.requires_grad_(False)
    groups = assign_groups(model.named_parameters(), paper.optim)
    names = {g: [n for n, _ in members] for g, members in groups.items()}
    assert set(names) == {"encoder", REST}
    assert names["encoder"] and all("backbone" in n for n in names["encoder"])
    assert names[REST] and not any("backbone" in n for n in names[REST])
    assert "encoder.backbone.depth_patch_embed.proj.weight" in names["encoder"]
    assert "encoder.output_projections.0.weight" in names[REST]
    assert "encoder.backbone.mask_token" not in names["encoder"]  # frozen: in no group
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(names["encoder"] + names[REST]) == sorted(trainable)

    optimizer = build_optimizer(model, paper.optim)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [g["name"] for g in optimizer.param_groups] == ["encoder", REST]
    for g in optimizer.param_groups:
        assert g["betas"] == (0.9, 0.999) and g["weight_decay"] == 0.05

    schedule = LRSchedule(paper.optim, paper.schedule, paper.iterations)
    # Hand-computed: encoder 1e-5 * min(1, (t+1)/2000) * 0.5**(t // 25000), rest 1e-4 * 0.5**(...)
    expected = {
        0: (5e-9, 1e-4),
        999: (5e-6, 1e-4),
        1999: (1e-5, 1e-4),
        2000: (1e-5, 1e-4),
        24_999: (1e-5, 1e-4),
        25_000: (5e-6, 5e-5),
        50_000: (2.5e-6, 2.5e-5),
        249_999: (1e-5 / 512, 1e-4 / 512),
    }
    for t, (enc, rest) in expected.items():
        assert schedule.lr("encoder", t) == pytest.approx(enc, rel=1e-12)
        assert schedule.lr(REST, t) == pytest.approx(rest, rel=1e-12)
    lrs = schedule.apply(optimizer, 25_000)
    assert lrs == {"encoder": pytest.approx(5e-6), REST: pytest.approx(5e-5)}
    assert [g["lr"] for g in optimizer.param_groups] == [lrs["encoder"], lrs[REST]]

    cosine = LRSchedule(
        paper.optim, replace(paper.schedule, kind="cosine", min_lr_ratio=0.1), iterations=1000
    )
    assert cosine.lr(REST, 0) == pytest.approx(1e-4)
    assert cosine.lr(REST, 500) == pytest.approx(1e-4 * (0.1 + 0.9 * 0.5))
    assert cosine.lr(REST, 1000) == pytest.approx(1e-5)


# ---------------------------------------------------------------------------------------------
# Loss, masks, corruption
# ---------------------------------------------------------------------------------------------


def test_loss_hand_computed():
    pred = torch.tensor([[[1.0, 2.0]], [[3.0, 5.0]]], requires_grad=True)  # (B=2, H=1, W=2)
    conf = torch.tensor([[[0.8, 0.3]], [[0.9, 0.6]]])
    target = torch.tensor([[[[1.5, 0.0]]], [[[2.0, 4.0]]]])  # (B, 1, H, W), 0 = invalid
    valid = target > 0
    has_gt = torch.tensor([True, False])  # sample 1 is self-supervised: no mask supervision
    loss, parts = lingbot_loss(
        {"depth": pred, "confidence": conf},
        target,
        valid,
        has_gt,
        LossConfig(depth_weight=1.0, mask_weight=0.1),
        DistInfo(),
    )
    l1 = (0.5 + 1.0 + 1.0) / 3  # |1 - 1.5|, |3 - 2|, |5 - 4|; the 0 target is skipped
    bce = (-math.log(0.8) - math.log(1 - 0.3)) / 2  # sample 0 only: valid -> 1, invalid -> 0
    assert parts["loss/depth"] == pytest.approx(l1)
    assert parts["loss/mask"] == pytest.approx(bce)
    assert parts["loss"] == pytest.approx(l1 + 0.1 * bce)
    assert float(loss.detach()) == pytest.approx(l1 + 0.1 * bce, rel=1e-6)
    loss.backward()
    expected_grad = torch.tensor([[[-1 / 3, 0.0]], [[1 / 3, 1 / 3]]])
    assert torch.allclose(pred.grad, expected_grad)


def test_token_masks_and_corruption_are_per_sample(shards):
    dataset = ShardDataset(shards["train"], seed=0, batch_size=4)
    with ShardReader() as reader:
        items = [dataset.load(i, 0, reader) for i in range(4)]
    batch = Collate()(items)
    batch["epoch"] = torch.tensor([3, 3, 3, 3])
    # Holes: sample 0 loses its left half, so its left patches must always be masked.
    batch["depth"][0, :, :, :32] = 0
    masking = MaskingConfig()
    grid, patch = (3, 4), 14
    masks = sample_token_masks(
        batch["depth"], batch["key"], batch["epoch"], grid, patch, 0, masking
    )
    assert masks.shape == (4, 12) and masks.dtype == torch.bool
    # The same sample gets the same mask whatever batch it is in (DDP splits batches).
    for i in range(4):
        alone = sample_token_masks(
            batch["depth"][i : i + 1],
            batch["key"][i : i + 1],
            batch["epoch"][i : i + 1],
            grid,
            patch,
            0,
            masking,
        )
        assert torch.equal(alone[0], masks[i])
    # The paper rule: at least ceil(0.6 * 12) = 8 tokens hidden; at most floor(0.9 * 12) = 10
    # unless invalid + mixed patches alone (never unmasked) already exceed that.
    resized = torch.nn.functional.interpolate(batch["depth"], (42, 56), mode="nearest")
    patch_counts = patch_valid_counts(valid_depth(resized), patch)
    not_full = (patch_counts < patch * patch).sum(dim=1)
    counts = masks.sum(dim=1)
    assert (counts >= 8).all() and (counts <= torch.clamp(not_full, min=10)).all()
    assert masks[patch_counts == 0].all()  # patches without a valid pixel: always hidden
    # Sample 0: its 6 patches in the left half (nearest resize of 64 -> 56 columns) are empty.
    left = torch.zeros(3, 4, dtype=torch.bool)
    left[:, :2] = True
    assert masks[0][left.flatten()].all()
    # Another epoch, another mask.
    other = sample_token_masks(
        batch["depth"], batch["key"], batch["epoch"] + 1, grid, patch, 0, masking
    )
    assert not torch.equal(other, masks)

    spec = load_config(TINY).data.corrupt
    spec = replace(spec, p=1.0, levels=["hard"])
    depth = corrupt_inputs(batch, 0, spec)
    target = batch["target"]
    hole = depth == 0
    assert hole.float().mean() > 0.3  # "hard": half of the area in blocks, plus dropout
    kept = ~hole
    # Kept pixels are the target with ~2 % relative noise, never the raw sensor value.
    rel = (depth[kept] - target[kept]).abs() / target[kept]
    assert rel.max() < 0.2 and rel.mean() > 1e-3
    assert torch.equal(corrupt_inputs(batch, 0, spec), depth)  # keyed by sample: repeatable
    assert corrupt_inputs(batch, 0, replace(spec, p=0.0)) is batch["depth"]


# ---------------------------------------------------------------------------------------------
# A full run
# ---------------------------------------------------------------------------------------------


def test_training_run_checkpoints_logs_and_export(shards, tmp_path):
    run = tmp_path / "run"
    overrides = small_overrides(
        run,
        shards["train"],
        **{"val.data": [str(shards["val"])], "val.every": 3, "data.corrupt.p": 0.5},
    )
    cfg = load_config(TINY, overrides)
    trainer = Trainer(cfg)
    try:
        last = trainer.fit()
    finally:
        trainer.close()
    assert trainer.step == 6 and math.isfinite(last["loss"])
    assert trainer.steps_per_epoch == 5 and trainer.epoch == 1  # 10 samples / batch 2

    # metrics.jsonl: one train record per step with the schedule's learning rates.
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "train/loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    schedule = trainer.schedule
    for r in train:
        assert r["train/lr/encoder"] == pytest.approx(schedule.lr("encoder", r["step"] - 1))
        assert r["train/lr/rest"] == pytest.approx(schedule.lr(REST, r["step"] - 1))
    assert train[0]["train/lr/encoder"] == pytest.approx(3e-4 / 3)  # warm-up 1/3
    assert train[-1]["train/lr/rest"] == pytest.approx(1e-3 * 0.5)  # decayed at t = 4
    val = [r for r in records if "val/abs_rel" in r]
    assert [r["step"] for r in val] == [3, 6]

    # Checkpoints: keep 2 -> steps 4 and 6; latest -> 6; weights_only-loadable.
    root = run / ckpt.CHECKPOINTS
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step-00000004", "step-00000006"]
    assert (root / ckpt.LATEST).read_text().strip() == "step-00000006"
    state = torch.load(root / "step-00000006" / ckpt.TRAINER_FILE, weights_only=True)
    # Step 6 = the first step of epoch 1: one batch of 2 consumed there.
    assert state["step"] == 6 and state["epoch"] == 1 and state["data"]["consumed"] == 2
    assert set(state["model"]) == set(trainer.model.state_dict())
    rng = torch.load(root / "step-00000006" / ckpt.rng_file(0), weights_only=True)
    assert set(rng) == {"python", "numpy", "torch", "cuda"}

    # The export reproduces the trainer's predictions exactly.
    exported = load_model(run / "export")
    val_ds = ShardDataset(shards["val"], batch_size=3)
    with ShardReader() as reader:
        batch = Collate()([val_ds.load(i, 0, reader) for i in range(3)])
    ours = trainer.predict(batch["image"], batch["depth"])
    exported.eval()
    with torch.no_grad():
        theirs = exported(batch["image"], batch["depth"], exported.num_tokens_range[1])["depth"]
    assert torch.equal(ours, theirs)

    # The step-6 validation, recomputed by hand from the exported model's predictions.
    gt = batch["target"][:, 0].numpy()
    pred = theirs.numpy()
    abs_rel, delta1 = [], []
    for p, g in zip(pred, gt, strict=True):
        ok = g > 0
        abs_rel.append(np.mean(np.abs(p[ok] - g[ok]) / g[ok]))
        delta1.append(np.mean(np.maximum(p[ok] / g[ok], g[ok] / p[ok]) < 1.25))
    assert val[-1]["val/abs_rel"] == pytest.approx(np.mean(abs_rel), rel=1e-5)
    assert val[-1]["val/delta1"] == pytest.approx(np.mean(delta1))
    assert (run / "best" / "model.safetensors").is_file()
    assert trainer.best["step"] in (3, 6)

    # TensorBoard: scalars and sample images.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    scalars, images = set(events.Tags()["scalars"]), set(events.Tags()["images"])
    assert {
        "train/loss",
        "train/lr/encoder",
        "train/lr/rest",
        "train/grad_norm",
        "train/samples_per_s",
        "train/memory_gib",
        "val/abs_rel",
        "val/rmse",
        "val/delta1",
    } <= scalars
    assert {"train/sample0", "train/sample1", "val/sample0"} <= images
    image = events.Images("train/sample0")[-1]
    assert (image.width, image.height) == (4 * 56, 42)  # rgb | input | prediction | target
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]


INTERRUPTED_ITERATIONS = 30
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def long_overrides(run: Path, train: Path, **extra) -> list[str]:
    """The small config for 30 iterations (5 steps per epoch), checkpoints every 3."""
    values = {
        "iterations": INTERRUPTED_ITERATIONS,
        "checkpoint.every": 3,
        "log.image_every": 0,
        "data.corrupt.p": 0.5,
        **extra,
    }
    return small_overrides(run, train, **values)


def train_command(run: Path, train: Path, *extra: str, **sets) -> list[str]:
    args = [sys.executable, "-m", "training.train", "--config", str(TINY)]
    overrides = long_overrides(run, train, **sets)
    return args + [a for s in overrides for a in ("--set", s)] + list(extra)


def logged_losses(run: Path) -> list[tuple[int, float]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["train/loss"]) for r in map(json.loads, lines)]


def assert_bitwise_same_run(run: Path, reference: Path) -> None:
    """Identical final weights, the same losses step by step, each step logged once."""
    ref_w = load_file(reference / "export" / "model.safetensors")
    res_w = load_file(run / "export" / "model.safetensors")
    assert ref_w.keys() == res_w.keys()
    assert all(torch.equal(ref_w[k], res_w[k]) for k in ref_w)
    assert logged_losses(run) == logged_losses(reference)
    assert [s for s, _ in logged_losses(run)] == list(range(1, INTERRUPTED_ITERATIONS + 1))


@pytest.fixture(scope="module")
def uninterrupted(shards, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    command = train_command(run, shards["train"])
    subprocess.run(command, cwd=ROOT, env=ENV, check=True, capture_output=True)
    return run


def test_sigkill_and_resume_is_bitwise(shards, uninterrupted, tmp_path):
    """Kill a run with SIGKILL after its step-3 checkpoint (mid-epoch: 5 steps per epoch),
    resume it, and compare with an uninterrupted run: identical weights and losses."""
    killed = tmp_path / "killed"
    latest = killed / ckpt.CHECKPOINTS / ckpt.LATEST
    proc = subprocess.Popen(
        train_command(killed, shards["train"]),
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if latest.is_file() and latest.read_text().strip() >= "step-00000003":
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "export").exists()  # really interrupted
    resumed_from = int(latest.read_text().strip().removeprefix(ckpt.PREFIX))
    assert 3 <= resumed_from < INTERRUPTED_ITERATIONS
    # Debris of a write cut short must neither confuse nor survive the resumed run.
    debris = killed / ckpt.CHECKPOINTS / ".tmp-step-00000099"
    debris.mkdir()
    (debris / ckpt.TRAINER_FILE).write_bytes(b"truncated")

    command = train_command(killed, shards["train"], "--resume")
    subprocess.run(command, cwd=ROOT, env=ENV, check=True, capture_output=True)
    # Records written after the checkpoint were dropped: each step logged once.
    assert_bitwise_same_run(killed, uninterrupted)
    assert not debris.exists()


def test_sigterm_checkpoints_the_step_and_resumes_bitwise(shards, uninterrupted, tmp_path):
    """SIGTERM mid-run (periodic checkpoints off): the run checkpoints the step it is in,
    exits with 143 (128 + SIGTERM), and --resume ends bitwise equal to the uninterrupted run.
    The process is paused while the signal is sent, so the stop lands mid-run, not at the end.
    (SIGUSR1 takes the same path: test_training_cluster.py checks the handler.)"""
    signum = signal.SIGTERM
    run = tmp_path / "run"
    no_periodic = {"checkpoint.every": 0}
    proc = subprocess.Popen(
        train_command(run, shards["train"], **no_periodic),
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 4:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGSTOP)
    proc.send_signal(signum)
    proc.send_signal(signal.SIGCONT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, stderr[-2000:]
    stopped = logged_losses(run)[-1][0]
    assert 4 <= stopped < INTERRUPTED_ITERATIONS
    name = signal.Signals(signum).name
    assert f"stopped by {name} at step {stopped} of {INTERRUPTED_ITERATIONS}" in stderr
    # The signal's checkpoint is the only one, and it is the last step trained.
    assert [p.name for p in ckpt.list_checkpoints(run / ckpt.CHECKPOINTS)] == [
        ckpt.step_name(stopped)
    ]
    assert not (run / "export").exists()

    # In this process, to the end: the uninterrupted run's weights and losses, bitwise.
    trainer = Trainer(load_config(TINY, long_overrides(run, shards["train"], **no_periodic)))
    try:
        assert trainer.resume() == run / ckpt.CHECKPOINTS / ckpt.step_name(stopped)
        trainer.fit()
    finally:
        trainer.close()
    assert trainer.stopped_by is None
    assert_bitwise_same_run(run, uninterrupted)

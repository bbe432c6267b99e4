"""DepthLM SFT on the one trainer: the per-sample draws (keyed, labels from ground truth /
LiDAR / sensor depth, markers inside the crop, one image per pixel, ranges by hand), one step
(loss = the answer tokens' cross-entropy, gradients into the vision tower), the parameter
groups, a 2-step run through ``python -m training.train`` whose export ``DepthLM.from_dir``
loads and queries, exact resume, and LoRA merged into the export.

Data: two simulated bags at 128 x 96 (street with LiDAR for training, room for validation);
the tiny random Qwen2.5-VL at f_uni = 80 (normalised frames 83-160 px wide)."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from train_runs import fit, records

from depth_perception.core.camera import Intrinsics
from depth_perception.core.depthlm import (
    MARKER_COLOR,
    RANGE_QUESTION,
    Z_QUESTION,
    marker_pixels,
    target_text,
)
from depth_perception.io.bag import write_sim_bag
from depth_perception.models.depthlm import IGNORE_INDEX, DepthLM
from depth_perception.sim.sequence import SequenceConfig
from training import checkpoint as ckpt
from training.config import load_config
from training.dataset import ShardDataset
from training.extract import ExtractConfig, extract
from training.shards import ShardReader
from training.tasks.depthlm import DepthLMSamples, batch_rows, model_parts
from training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "training" / "configs" / "depthlm_tiny_cpu.yaml"
PAPER = ROOT / "training" / "configs" / "depthlm_qwen25vl_3b_paper.yaml"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("depthlm_data")
    out = {}
    for name, kind, seed, n in (("train", "street", 1, 6), ("val", "room", 2, 2)):
        cfg = SequenceConfig(scene_kind=kind, seed=seed, n_frames=n, width=128, height=96)
        write_sim_bag(root / "bags" / name / kind, cfg, progress=False)
        out[name] = root / "shards" / name
        ex = ExtractConfig(out=out[name], shard_size=4, lidar=True, progress=False)
        assert not extract([root / "bags" / name], ex).failed
    return out


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def overrides(run_dir: Path, shards: dict, **extra) -> list[str]:
    values = {
        "run_dir": str(run_dir),
        "threads": 1,
        "iterations": 4,
        "data.train": [str(shards["train"])],
        "data.batch_size": 2,
        "data.num_workers": 0,
        "depthlm.f_uni": 80.0,
        "depthlm.crop_width": [60.0, 100.0],
        "depthlm.crop_height": [56.0, 80.0],
        "depthlm.tiny_max_pixels": 28 * 28 * 16,
        "depthlm.val_pixels_per_image": 2,
        "depthlm.max_new_tokens": 6,
        "optim.warmup_iters": 2,
        "optim.groups.0.warmup_iters": 2,
        "optim.groups.1.warmup_iters": 2,
        "val.data": [str(shards["val"])],
        "val.every": 2,
        "log.progress": False,
        "log.every": 1,
        "checkpoint.every": 2,
        **extra,
    }
    return [f"{k}={json.dumps(v)}" for k, v in values.items()]


def make_cfg(run_dir: Path, shards: dict, **extra):
    return load_config(CONFIG, overrides(run_dir, shards, **extra))


@pytest.fixture(scope="module")
def trainer(shards, tmp_path_factory) -> Trainer:
    """A built (untrained) trainer: the task, its grid and the tiny model."""
    t = Trainer(make_cfg(tmp_path_factory.mktemp("depthlm_step") / "run", shards))
    yield t
    t.close()


def raw_items(shards: dict, task, n: int = 3, train: bool = True) -> list[dict]:
    dataset = ShardDataset(shards["train"], **task.dataset_options(train))
    with ShardReader() as reader:
        items = [dataset.load(i, 0, reader) for i in range(n)]
    for item in items:
        item["epoch"] = torch.tensor(0)
    return items


# ---------------------------------------------------------------------------------------------
# Per-sample draws
# ---------------------------------------------------------------------------------------------


def test_draws_keyed_inside_the_crop_one_image_per_pixel(trainer, shards):
    task = trainer.task
    transform = task.sample_transform(True)
    item = raw_items(shards, task, 1)[0]
    h, w = item["image"].shape[-2:]
    k = Intrinsics.from_K(item["intrinsics"].numpy().astype(np.float64), w, h)
    gt = item["target"][0].numpy()
    seen = []
    for epoch in range(4):
        a = transform({**item, "epoch": torch.tensor(epoch)})
        b = transform({**item, "epoch": torch.tensor(epoch)})
        ea, eb = a["depthlm"], b["depthlm"]
        # same (seed, epoch, key): the same pixels, crop, images
        assert np.array_equal(ea["pixels"], eb["pixels"]) and ea["size"] == eb["size"]
        assert all(np.array_equal(x, y) for x, y in zip(ea["images"], eb["images"], strict=True))
        n = len(ea["pixels"])
        assert 1 <= n <= 4 and len(ea["images"]) == len(ea["targets"]) == n
        assert a["label_source"] == "gt"  # the simulator's ground truth first
        cw, ch = ea["size"]
        assert cw % 28 == 0 and ch % 28 == 0 and cw <= 100 and ch <= 80
        for j in range(n):
            x, y = (int(v) for v in ea["marked"][j])
            assert 5 <= x < cw - 5 and 5 <= y < ch - 5
            image = ea["images"][j]
            assert image.shape == (ch, cw, 3)
            assert all(tuple(image[py, px]) == MARKER_COLOR for px, py in marker_pixels(x, y))
            # the range by hand from the source ground truth and intrinsics
            u, v = (int(c) for c in ea["pixels"][j])
            z = float(gt[v, u])
            r = z * math.sqrt(((u - k.cx) / k.fx) ** 2 + ((v - k.cy) / k.fy) ** 2 + 1.0)
            assert ea["distances"][j] == pytest.approx(r, rel=1e-5)
            assert ea["targets"][j] == target_text(ea["distances"][j])
            assert ea["questions"][j] == RANGE_QUESTION
        seen.append(ea["pixels"].tolist())
    assert len({json.dumps(s) for s in seen}) > 1  # other epochs, other pixels


def test_label_sources_lidar_then_sensor_depth(trainer, shards):
    task = trainer.task
    transform = task.sample_transform(True)
    item = raw_items(shards, task, 1)[0]
    item["self_supervised"] = torch.tensor(True)  # as a bag without ground truth
    assert item["prompt"].gt(0).any()
    assert transform(item)["label_source"] == "lidar"
    out = transform({**item, "prompt": torch.zeros_like(item["prompt"])})
    assert out["label_source"] == "depth"
    entry = out["depthlm"]
    depth = item["depth"][0].numpy()
    for u, v in entry["pixels"]:
        assert depth[v, u] > 0  # a valid sensor pixel
    none = transform(
        {**item, "prompt": torch.zeros_like(item["prompt"]), "depth": item["depth"] * 0}
    )
    assert none["label_source"] == "none" and none["depthlm"]["images"] == []
    # the z variant: its own question, z as the label
    cfg = trainer.cfg.depthlm
    z_only = DepthLMSamples(
        type(cfg)(**{**cfg.__dict__, "distances": {"z": 1.0}}), 0, task.grid, True
    )
    entry = z_only(raw_items(shards, task, 1)[0])["depthlm"]
    assert entry["questions"] == [Z_QUESTION] * len(entry["pixels"])
    np.testing.assert_allclose(entry["distances"], entry["z"])


# ---------------------------------------------------------------------------------------------
# One step
# ---------------------------------------------------------------------------------------------


def test_one_step_loss_on_answer_tokens_reaches_the_vision_tower(trainer, shards):
    task = trainer.task
    transform = task.sample_transform(True)
    items = [transform(it) for it in raw_items(shards, task, 2)]
    batch = {
        "depthlm": [it["depthlm"] for it in items],
        "label_source": [it["label_source"] for it in items],
    }
    images, questions, targets, _ = batch_rows(batch)
    model = trainer.model
    model.zero_grad(set_to_none=True)
    loss, scalars, _ = task.loss(trainer, batch)
    value = float(loss.detach())
    assert math.isfinite(value) and scalars["loss"] == pytest.approx(value, rel=1e-6)
    # The label mask: exactly each answer's tokens (target + end of turn)...
    inputs = task.wrapper(trainer).sft_batch(images, questions, targets)
    tok = task.processor.tokenizer
    answers = [tok(t + "<|im_end|>", add_special_tokens=False)["input_ids"] for t in targets]
    for i, answer in enumerate(answers):
        labels = inputs["labels"][i]
        assert labels[labels != IGNORE_INDEX].tolist() == answer
    assert scalars["answer_tokens"] == sum(len(a) for a in answers)
    # ... and the loss is transformers' own mean cross-entropy over those labels.
    with torch.no_grad():
        reference = model(**inputs).loss
    assert value == pytest.approx(float(reference), rel=1e-5)
    loss.backward()
    visual = model.model.visual
    assert visual.patch_embed.proj.weight.grad.abs().sum() > 0
    assert visual.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert visual.merger.mlp[0].weight.grad.abs().sum() > 0
    assert model.model.language_model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_parameter_groups_match_the_model(trainer, shards, tmp_path):
    groups = {g["name"]: g["params"] for g in trainer.optimizer.param_groups}
    assert list(groups) == ["projector", "vision", "language"]
    parts = model_parts(trainer.model)
    by_id = {id(p): n for n, p in trainer.model.named_parameters()}
    for name, params in groups.items():
        assert params and {parts[by_id[id(p)]] for p in params} == {name}
    assert any("visual.merger" in n for n, part in parts.items() if part == "projector")
    assert parts["lm_head.weight"] == "language"
    bad = overrides(tmp_path / "bad", shards) + ['optim.groups.1.patterns=["*visual.blocks.0.*"]']
    with pytest.raises(ValueError, match="another part"):
        Trainer(load_config(CONFIG, bad))
    # the paper config: the official learning rate, clipping, warm-up, FSDP, the crop ranges
    paper = load_config(PAPER)
    assert paper.task == "depthlm" and paper.dist.strategy == "fsdp" and paper.precision == "bf16"
    assert paper.optim.lr == 1e-5 and all(g.lr == 1e-5 for g in paper.optim.groups)
    assert paper.optim.grad_clip == 0.1 and paper.schedule.kind == "cosine"
    assert paper.optim.warmup_iters == paper.iterations // 10
    assert paper.depthlm.f_uni == 1000.0 and paper.depthlm.crop_width == [1000.0, 1400.0]
    assert paper.depthlm.crop_height == [700.0, 1200.0] and paper.depthlm.pixels_per_image == [1, 4]


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory) -> Path:
    """4 steps of batch 2 (validation and checkpoints at 2 and 4)."""
    run = tmp_path_factory.mktemp("depthlm_ref") / "run"
    fit(make_cfg(run, shards))
    return run


def test_two_steps_through_the_command_line_export_loads_and_answers(shards, tmp_path):
    from training.train import main

    run = tmp_path / "cli"
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    try:
        args = ["--config", str(CONFIG), "--run-dir", str(run)]
        for o in overrides(run, shards, iterations=2):
            args += ["--set", o]
        assert main(args) == 0
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    val = records(run, "val/delta1")
    assert [s for s, _ in val] == [2] and 0.0 <= val[0][1] <= 1.0
    assert records(run, "val/pixels")[0][1] == 4.0  # 2 frames x 2 pixels
    export = run / "export"
    assert json.loads((export / "depthlm.json").read_text())["f_uni"] == 80.0
    lm = DepthLM.from_dir(export)
    assert lm.settings.f_uni == 80.0 and lm.settings.max_new_tokens == 6
    # the training labels' median range, eval-depthlm's train_median baseline
    from training.config import load_config
    from training.tasks.depthlm import training_label_median_range
    from training.trainer import merged_manifest

    cfg = load_config(CONFIG, overrides(run, shards, iterations=2))
    manifest = merged_manifest(cfg.data.train, run / "data", "train")
    median, n = training_label_median_range(manifest, cfg)
    assert n > 0 and median > 0 and lm.settings.train_median_range_m == pytest.approx(median)
    rgb = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    k = Intrinsics(128, 96, 90.0, 90.0, 63.5, 47.5)
    answers = lm.query(rgb, k, [[64, 48], [0, 0]], max_new_tokens=4)
    assert answers[0].status in ("ok", "failed") and isinstance(answers[0].text, str)
    assert answers[1].status == "too_close_to_border"


def test_resume_is_exact(reference, shards, tmp_path):
    """Stop after step 2 (its checkpoint), resume in a new trainer: the uninterrupted run's
    losses, validation and final weights, bitwise."""
    run = tmp_path / "run"
    fit(make_cfg(run, shards), max_steps=2)
    assert (run / ckpt.CHECKPOINTS / ckpt.LATEST).read_text().strip() == ckpt.step_name(2)
    fit(make_cfg(run, shards), resume=True)
    losses = records(reference, "train/loss")
    assert [s for s, _ in losses] == [1, 2, 3, 4] and all(np.isfinite(v) for _, v in losses)
    assert records(run, "train/loss") == losses
    assert records(run, "train/answer_tokens") == records(reference, "train/answer_tokens")
    for key in ("val/delta1", "val/failed", "val/pixels"):
        assert records(run, key) == records(reference, key) and len(records(run, key)) == 2
    ref = load_file(reference / "export" / "model.safetensors")
    res = load_file(run / "export" / "model.safetensors")
    assert ref.keys() == res.keys() and all(torch.equal(ref[k], res[k]) for k in ref)


def test_lora_trains_adapters_only_and_merges_into_the_export(reference, shards, tmp_path):
    run = tmp_path / "lora"
    cfg = make_cfg(run, shards, iterations=1, **{"depthlm.lora.enabled": True, "val.data": []})
    cfg.optim.lr = 1e-2
    trainer = fit(cfg)
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "language_model" in n for n in trainable)
    assert [g["name"] for g in trainer.optimizer.param_groups] == ["language"]
    assert not any("lora" in k for k in load_file(run / "export" / "model.safetensors"))
    merged = DepthLM.from_dir(run / "export").model.state_dict()
    initial = Trainer(make_cfg(tmp_path / "init", shards, iterations=1))
    try:
        start = initial.model.state_dict()
    finally:
        initial.close()
    assert merged.keys() == start.keys()
    q = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged[q], start[q])  # the adapter merged in
    patch = "model.visual.patch_embed.proj.weight"
    assert torch.equal(merged[patch], start[patch])  # the vision tower untouched

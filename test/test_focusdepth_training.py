"""FocusDepth training: triplet extraction, the keyed target draw, the stages, export, pretraining.

Two simulated tabletop bags (80 x 60; train 6 frames, val 2) extracted with ``--instances``.
The instance ids and targets in the shards are checked against the bag read independently
(``read_rgbd_frames``); the target draw against :func:`choose_target` with the sample's keyed
seed and the box against the augmented mask (a flip checked against the mirrored stored box);
two steps of stage 1 / stage 2 / da2_ft change exactly their parameters (everything else
bitwise equal) with frozen modules in eval mode; the export, loaded with ``load_focusdepth``
and run image by image through the inference path, reproduces the trainer's validation
prediction; the pretraining tasks export transformers directories that FocusDepth starts
from. The tiny preset at S = 56 on one thread.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from depth_perception.io.bag import write_sim_bag
from depth_perception.io.recording import read_rgbd_frames
from depth_perception.models.focusdepth import STAGE_PREFIXES, load_focusdepth
from depth_perception.models.sam3_io import (
    Sam3Prompt,
    da2_pixel_values,
    load_sam3_model,
    load_sam3_tokenizer,
    sam3_pixel_values,
)
from depth_perception.sim.sequence import SequenceConfig
from training.augment import AugmentConfig
from training.config import load_config
from training.dataset import (
    STREAM_TARGET,
    ShardDataset,
    TargetChoice,
    choose_target,
    mask_box,
)
from training.extract import ExtractConfig, extract
from training.shards import ShardReader, decode_sample, read_manifest
from training.tasks import build_task
from training.tasks.base import sample_seed
from training.tasks.focusdepth import aligned_depth, batch_prompts, branch_inputs, sam3_prompted
from training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "training" / "configs"
STAGE1 = CONFIGS / "focusdepth_tiny_cpu_stage1.yaml"
STAGE2 = CONFIGS / "focusdepth_tiny_cpu_stage2.yaml"
DA2_FT = CONFIGS / "da2_ft_tiny_cpu.yaml"
S = 56


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("focus_data")
    out = {}
    for name, seed, n in (("train", 1, 6), ("val", 2, 2)):
        cfg = SequenceConfig(
            scene_kind="tabletop", seed=seed, n_frames=n, width=80, height=60, lidar=False
        )
        write_sim_bag(root / "bags" / name / "table", cfg, progress=False)
        out[name] = root / "shards" / name
        ex = ExtractConfig(out=out[name], shard_size=4, instances=True, progress=False)
        assert not extract([root / "bags" / name], ex).failed
    out["bags"] = root / "bags"
    out["root"] = root
    return out


def run_cfg(config: Path, data: dict, run_dir: Path, **extra):
    values = {
        "run_dir": str(run_dir),
        "threads": 1,
        "iterations": 2,
        "focus.input_size": S,  # the tests' tiny parts (the CPU configs train at 112)
        "model.init_checkpoint": None,
        "focus.init_da2": None,
        "focus.init_sam3": None,
        "data.train": [str(data["train"])],
        "data.batch_size": 2,
        "data.num_workers": 0,
        "data.augment.out_size": [80, 60],
        "optim.warmup_iters": 0,
        "val.data": [str(data["val"])],
        "val.every": 0,
        "val.batch_size": 2,
        "log.progress": False,
        "log.tensorboard": False,
        "log.every": 1,
        "checkpoint.every": 100,
        **extra,
    }
    return load_config(config, [f"{k}={json.dumps(v)}" for k, v in values.items()])


# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------


def test_extraction_stores_instances_and_targets(data) -> None:
    frames = list(read_rgbd_frames(data["bags"] / "train" / "table"))
    root, records = read_manifest(data["train"])
    assert sum(r["n"] for r in records) == len(frames) == 6
    assert all(r["n_instances"] == r["n"] for r in records)
    with ShardReader() as reader:
        for rec in records:
            for position in range(rec["n"]):
                key, members = reader.read(root / rec["path"], position)
                sample = decode_sample(members)
                frame = frames[sample["meta"]["index"]]
                assert sample["instance"].dtype == np.uint16
                np.testing.assert_array_equal(sample["instance"], frame.instance)
                want = [
                    {"id": t.target_id, "text": t.text, "box": list(t.box)}
                    for t in frame.extra["targets"]
                ]
                assert want and sample["targets"] == want
                assert "material" not in json.dumps(sample["meta"])
    # Without --instances: no member, no targets; asking for them later redoes the bag.
    out = data["root"] / "plain"
    bags = [data["bags"] / "val"]
    assert extract(bags, ExtractConfig(out=out, progress=False)).done == ["table"]
    _, plain = read_manifest(out)
    assert plain[0]["n_instances"] == 0
    again = extract(bags, ExtractConfig(out=out, instances=True, progress=False))
    assert again.done == ["table"] and not again.skipped
    assert read_manifest(out)[1][0]["n_instances"] == 2
    assert extract(bags, ExtractConfig(out=out, instances=True, progress=False)).skipped


# ---------------------------------------------------------------------------------------------
# The target draw
# ---------------------------------------------------------------------------------------------


def test_target_choice_is_keyed_and_follows_the_augmentation(data) -> None:
    choice = TargetChoice(kinds={"box": 1.0, "text": 2.0, "box_text": 1.0}, min_pixels=5)
    crop = AugmentConfig(out_size=(80, 60), crop_scale=(0.3, 0.6), p_flip=0.5)
    ds = ShardDataset(data["train"], crop, seed=3, instances=True, target_choice=choice)
    kinds = set()
    with ShardReader() as reader:
        for epoch in (0, 1):
            for i in range(ds.num_samples):
                item = ds.load(i, epoch, reader)
                again = ds.load(i, epoch, reader)
                assert item["target_id"] == again["target_id"]
                assert item["prompt_kind"] == again["prompt_kind"]
                eligible = [t for t in item["targets"] if t["pixels"] >= 5]
                seq = sample_seed(3, epoch, item["key"], STREAM_TARGET)
                chosen, kind = choose_target(item["targets"], choice, seq)
                assert kind == item["prompt_kind"]
                kinds.add(kind)
                if not eligible:
                    assert chosen is None and not item["has_target"]
                    continue
                assert item["has_target"] and chosen["id"] == int(item["target_id"])
                mask = item["target_mask"][0].numpy()
                assert np.array_equal(mask, item["instance"][0].numpy() == chosen["id"])
                assert mask.sum() >= 5 and item["target_text"] == chosen["text"]
                assert tuple(item["target_box"].int().tolist()) == mask_box(mask)
    assert kinds == {"box", "text", "box_text"}

    # A flip only: the ids mirror, and every box is the mirrored stored box.
    flip = AugmentConfig(p_crop=0.0, p_flip=1.0, p_color=0, p_jpeg=0, p_blur=0, p_noise=0)
    ds = ShardDataset(data["train"], flip, instances=True, target_choice=choice)
    plain = ShardDataset(data["train"], None, instances=True)
    with ShardReader() as reader:
        for i in range(ds.num_samples):
            item, raw = ds.load(i, 0, reader), plain.load(i, 0, reader)
            np.testing.assert_array_equal(item["instance"][0], raw["instance"][0].flip(-1))
            np.testing.assert_array_equal(item["target"][0], raw["target"][0].flip(-1))
            for t, r in zip(item["targets"], raw["targets"], strict=True):
                x, y, w, h = r["box"]
                assert t["id"] == r["id"] and t["box"] == (80 - x - w, y, w, h)


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------


def _steps(cfg) -> tuple[Trainer, dict, dict]:
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    try:
        trainer.fit()
    finally:
        trainer.close()
    return trainer, before, trainer.model.state_dict()


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


STAGE_GROUPS = {
    1: {"mssa": ("mssa.",)},
    2: {
        "mssa": ("mssa.",),
        "depth decoder": ("depth_model.neck.", "depth_model.head."),
        "prompt transformer": ("sam3.detr_encoder.", "sam3.detr_decoder."),
        "mask decoder": ("sam3.mask_decoder.",),
    },
    "da2_ft": {
        "depth encoder": ("depth_model.backbone.",),
        "depth decoder": ("depth_model.neck.", "depth_model.head."),
    },
}
# focus.stage2_train_depth_encoder: stage 2's parts and DA2's encoder
STAGE_GROUPS["stage2_encoder"] = {
    **STAGE_GROUPS[2],
    "depth encoder": ("depth_model.backbone.",),
}
STAGE2_ENCODER = {
    "focus.stage2_train_depth_encoder": True,
    "model.freeze": ["depth_model.backbone.embeddings.mask_token"],
}


@pytest.mark.parametrize(
    ("config", "stage"),
    [(STAGE1, 1), (STAGE2, 2), (STAGE2, "stage2_encoder"), (DA2_FT, "da2_ft")],
    ids=["stage1", "stage2", "stage2_encoder", "da2_ft"],
)
def test_stage_trains_exactly_its_parameters(data, tmp_path, config, stage) -> None:
    overrides = STAGE2_ENCODER if stage == "stage2_encoder" else {}
    trainer, before, after = _steps(run_cfg(config, data, tmp_path / "run", **overrides))
    changed = _changed(before, after)
    prefixes = tuple(p for group in STAGE_GROUPS[stage].values() for p in group)
    if stage in (1, 2):
        assert prefixes == STAGE_PREFIXES[stage]
    assert changed and all(k.startswith(prefixes) for k in changed)
    for name, group in STAGE_GROUPS[stage].items():
        assert any(k.startswith(group) for k in changed), f"{name} did not change"
    optimised = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    trainable = {id(p) for n, p in trainer.model.named_parameters() if n.startswith(prefixes)}
    frozen = {id(p) for n, p in trainer.model.named_parameters() if "mask_token" in n}
    assert optimised == trainable - frozen
    # Frozen modules in eval mode, trained ones in train mode (as after every step's loss).
    model = trainer.model
    assert not model.sam3.vision_encoder.training and not model.sam3.text_encoder.training
    assert model.depth_model.backbone.training == (stage in ("da2_ft", "stage2_encoder"))
    assert model.mssa.training == (stage != "da2_ft")
    assert model.depth_model.head.training == (stage != 1)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert all(np.isfinite(r["train/loss"]) for r in records if "train/loss" in r)
    if stage == "da2_ft":  # closed gates: MSSA never moves, the export's depth is DA2's
        assert all((b.gate.bias == -1e4).all() for b in model.mssa)


def test_mssa_init_trains_the_experts_to_reproduce_da2_tokens(data, tmp_path) -> None:
    trainer, before, after = _steps(
        run_cfg(STAGE1, data, tmp_path / "run", **{"focus.stage": "mssa_init"})
    )
    changed = _changed(before, after)
    assert changed and all(k.startswith("mssa.") and ".gate." not in k for k in changed)
    for part in (".proj.", ".router.", ".experts."):
        assert any(part in k for k in changed), part
    optimised = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert optimised == {
        id(p)
        for n, p in trainer.model.named_parameters()
        if n.startswith("mssa.") and ".gate." not in n
    }
    # The loss by hand on one batch (eval mode: no dropout): F = sum_e softmax(router(Z))_e
    # expert_e(Z), Z = [X_g || X_p Wp], MSE against X_g per image and scale, mean over both.
    model = trainer.model.eval()
    trainer.val_loader.dataset.load_state_dict({"epoch": 0, "consumed": 0})
    batch = next(iter(trainer.val_loader))
    with torch.no_grad():
        loss, scalars, _ = trainer.task._reconstruction_loss(trainer, batch)
        h, w = batch["image"].shape[-2:]
        da2, sam3 = branch_inputs(batch["image"], S)
        tokens = sam3_prompted(model.sam3, sam3, batch_prompts(batch), model.tokenizer, (w, h))
        maps = model.depth_model.backbone(da2).feature_maps
        per_image = torch.zeros(da2.shape[0])
        for feats, block in zip(maps, model.mssa, strict=True):
            x_g = feats[:, 1:]
            z = torch.cat([x_g, tokens.tokens @ block.proj.weight.T], dim=-1)
            weights = torch.softmax(z @ block.router.weight.T + block.router.bias, dim=-1)
            mix = sum(weights[..., e : e + 1] * ex(z) for e, ex in enumerate(block.experts))
            per_image += ((mix - x_g) ** 2).mean(dim=(1, 2)) / len(model.mssa)
    torch.testing.assert_close(loss, per_image.mean(), rtol=1e-5, atol=1e-7)
    assert scalars["loss/recon"] == pytest.approx(float(per_image.mean()), rel=1e-5)


def _export_prediction(export: Path, batch: dict) -> torch.Tensor:
    """The export through the inference path: one image and one prompt at a time."""
    model = load_focusdepth(export)
    depths = []
    with torch.no_grad():
        for i in range(batch["image"].shape[0]):
            rgb = (batch["image"][i].permute(1, 2, 0) * 255).round().byte().numpy()
            h, w = rgb.shape[:2]
            box = tuple(batch["target_box"][i].tolist())
            prompt = Sam3Prompt(box_xywh=box, text=batch["target_text"][i])
            out = model(
                da2_pixel_values(rgb, (S, S)),
                sam3_pixel_values(rgb, (S, S)),
                prompt,
                prompt_image_size=(w, h),
            )
            disparity = F.interpolate(
                out.depth[:, None], size=(h, w), mode="bilinear", align_corners=False
            )
            depths.append(disparity)
    return aligned_depth(torch.cat(depths), batch["target"], batch["valid"])


@pytest.mark.parametrize("config", [STAGE1, DA2_FT], ids=["stage1", "da2_ft"])
def test_export_reproduces_the_trainer(data, tmp_path, config) -> None:
    cfg = run_cfg(config, data, tmp_path / "run", iterations=1)
    trainer, _, _ = _steps(cfg)
    trainer.val_loader.dataset.load_state_dict({"epoch": 0, "consumed": 0})
    batch = next(iter(trainer.val_loader))
    assert all(batch["has_target"]) and set(batch["prompt_kind"]) == {"box_text"}
    pred, _ = trainer.task.predict_batch(trainer, batch)
    exported = _export_prediction(tmp_path / "run" / "export", batch)
    torch.testing.assert_close(exported, pred, rtol=1e-5, atol=1e-6)
    valid = batch["valid"][:, 0]
    rel = ((pred - batch["target"][:, 0]).abs() / batch["target"][:, 0])[valid]
    assert torch.isfinite(rel).all()


def test_one_prompt_per_image_equals_sam3_forward(tmp_path) -> None:
    """Mixed box / text / box+text prompts in one batch: each image gets what sam3_forward
    gives it alone."""
    from depth_perception.models.focusdepth import build_preset
    from depth_perception.models.sam3_io import sam3_forward
    from training.tasks.focusdepth import resolve_tokenizer, sam3_prompted

    torch.manual_seed(0)
    tokenizer = resolve_tokenizer(None)
    sam3 = build_preset("tiny", input_size=S, vocab_size=len(tokenizer)).sam3
    pixels = torch.randn(3, 3, S, S)
    prompts = [
        Sam3Prompt(text="mug"),
        Sam3Prompt(box_xywh=(10.0, 5.0, 30.0, 20.0)),
        Sam3Prompt(box_xywh=(2.0, 8.0, 40.0, 30.0), text="bottle"),
    ]
    with torch.no_grad():
        batched = sam3_prompted(sam3, pixels, prompts, tokenizer, (80, 60))
        for i, prompt in enumerate(prompts):
            alone = sam3_forward(sam3, pixels[i : i + 1], prompt, tokenizer, (80, 60))
            torch.testing.assert_close(batched.tokens[i : i + 1], alone.tokens)
            torch.testing.assert_close(batched.mask_logits[i : i + 1], alone.mask_logits)
            assert int(batched.query_index[i]) == int(alone.query_index[0])


# ---------------------------------------------------------------------------------------------
# Pretraining and initialisation from the parts
# ---------------------------------------------------------------------------------------------


def test_pretrained_parts_start_focusdepth(data, tmp_path) -> None:
    from transformers import DepthAnythingForDepthEstimation

    da2_cfg = run_cfg(CONFIGS / "da2_pretrain_tiny_cpu.yaml", data, tmp_path / "da2")
    _, before, after = _steps(da2_cfg)
    assert _changed(before, after)
    sam3_cfg = run_cfg(
        CONFIGS / "sam3_pretrain_tiny_cpu.yaml", data, tmp_path / "sam3", **{"val.data": []}
    )
    _, before, after = _steps(sam3_cfg)
    assert _changed(before, after)
    da2_dir, sam3_dir = tmp_path / "da2" / "export", tmp_path / "sam3" / "export"
    da2 = DepthAnythingForDepthEstimation.from_pretrained(da2_dir, local_files_only=True)
    assert load_sam3_tokenizer(sam3_dir) is not None
    sam3 = load_sam3_model(sam3_dir)
    cfg = run_cfg(
        STAGE1,
        data,
        tmp_path / "focus",
        **{"focus.init_da2": str(da2_dir), "focus.init_sam3": str(sam3_dir)},
    )
    model = build_task(cfg).build_model()
    for name, value in da2.state_dict().items():
        assert torch.equal(model.depth_model.state_dict()[name], value), name
    for name, value in sam3.state_dict().items():
        assert torch.equal(model.sam3.state_dict()[name], value), name
    assert model.tokenizer is not None


# ---------------------------------------------------------------------------------------------
# Config validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"focus.stage": 3}, "focus.stage"),
        ({"focus.input_size": 50}, "multiple of 14"),
        ({"focus.init_da2": "x"}, "go together"),
        ({"focus.prompt_kinds": {"mask": 1.0}}, "unknown prompt kind"),
        ({"focus.prompt_kinds": {"box": 0.0}}, "positive sum"),
        ({"focus.val_prompt": "points"}, "val_prompt"),
        ({"data.size": [80, 60]}, "data.augment.out_size"),
        ({"focus.band_radius": 0}, "band_radius"),
        ({"focus.seg_weight": -1.0}, "weights"),
    ],
    ids=str,
)
def test_config_errors(data, tmp_path, override, message) -> None:
    with pytest.raises(ValueError, match=message):
        build_task(run_cfg(STAGE1, data, tmp_path, **override))


def test_sam3_pretrain_refuses_validation(data, tmp_path) -> None:
    with pytest.raises(ValueError, match="val.data"):
        build_task(run_cfg(CONFIGS / "sam3_pretrain_tiny_cpu.yaml", data, tmp_path))

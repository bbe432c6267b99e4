"""DepthLM's vision-tower pretraining (``task: depthlm_vision``): the marker token by hand, the
loss against its formula recomputed from the network's output, only the tower and merger
trained (the language model bitwise unchanged), and an export that ``DepthLM.from_dir`` loads
with the trained tower.

Data and model: test_depthlm_training.py's bags and tiny random Qwen2.5-VL (f_uni = 80)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from test_depthlm_training import overrides, raw_items, shards  # noqa: F401 (fixture)
from train_runs import fit, records

from depth_perception.models.depthlm import DepthLM
from training.config import load_config
from training.tasks.depthlm import token_log_distances
from training.tasks.depthlm_vision import marker_tokens
from training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "training" / "configs" / "depthlm_vision_small_cpu.yaml"


def make_cfg(run_dir: Path, shards: dict, **extra):  # noqa: F811
    values = overrides(run_dir, shards, **extra)
    values = [v for v in values if not v.startswith("optim.groups.1")]
    return load_config(CONFIG, [*values, "model.preset=tiny_qwen", "log.image_every=0"])


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_marker_token_by_hand():
    # merged grids 2 x 3 and 3 x 2 tokens of 28 px (patch 14, merge 2)
    grid = torch.tensor([[1, 4, 6], [1, 6, 4]])
    marked = np.array([[30, 29], [55, 83]])
    # (30, 29): row 1, column 1 of 3 -> 4; (55, 83): row 2, column 1 of 2 -> 5
    assert marker_tokens(marked, grid, merge=2, patch=14) == [4, 5]


def test_token_log_distances_by_hand():
    # a 60 x 30 image in 28-px tokens: 2 x 1 tokens (the last 4 columns, 2 rows belong to none)
    xy = np.array([[0, 0], [27, 27], [28, 5], [57, 10], [10, 28]])
    d = np.array([1.0, 4.0, 3.0, 2.0, 9.0])
    log, count = token_log_distances(xy, d, (60, 30), 28)
    assert count.tolist() == [2.0, 1.0]  # (57, 10) is column 2 of 2, (10, 28) row 1 of 1
    np.testing.assert_allclose(log, [(math.log(1) + math.log(4)) / 2, math.log(3)], rtol=1e-6)
    log, count = token_log_distances(xy[:1], d[:1], (84, 56), 28)
    assert count.tolist() == [1, 0, 0, 0, 0, 0] and log.tolist() == [0.0] * 6


def test_step_loss_formula_and_only_the_tower_trains(shards, tmp_path):  # noqa: F811
    w = 0.5
    trainer = Trainer(make_cfg(tmp_path / "step", shards, **{"depthlm.token_depth_weight": w}))
    try:
        task = trainer.task
        transform = task.sample_transform(True)
        items = [transform(it) for it in raw_items(shards, task, 2)]
        batch = {"depthlm": [it["depthlm"] for it in items]}
        images, marked, values, tokens = task._rows(batch)
        assert images and len(images) == len(marked) == len(values) == len(tokens)
        model = trainer.model
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        loss, scalars, _ = task.loss(trainer, batch)
        # the formula, from the network's own per-token output
        enc = task.processor.image_processor(
            images=[Image.fromarray(im) for im in images],
            return_tensors="pt",
        )
        with torch.no_grad():
            out = model(enc["pixel_values"], enc["image_grid_thw"])
        index = marker_tokens(marked, enc["image_grid_thw"], 2, 14)
        ce = [
            F.cross_entropy(o[:, 0][None], torch.tensor([t]))
            for o, t in zip(out, index, strict=True)
        ]
        l1 = [abs(float(o[t, 1]) - math.log(v)) for o, t, v in zip(out, index, values, strict=True)]
        dense = []
        for o, t, (log, count) in zip(out, index, tokens, strict=True):
            # the marked pixel is itself a label: its token is never empty
            assert len(log) == len(o) and count[t] >= 1
            labelled = count > 0
            dense.append(float(np.abs(o[:, 1].numpy() - log)[labelled].mean()))
        expected = (sum(float(c) for c in ce) + sum(l1) + w * sum(dense)) / len(images)
        assert float(loss) == pytest.approx(expected, rel=1e-5)
        assert scalars["loss"] == pytest.approx(expected, rel=1e-5)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()
        for name, param in model.named_parameters():
            changed = not torch.equal(param, before[name])
            if name.startswith(("vlm.model.language_model.", "vlm.lm_head.")):
                assert not param.requires_grad and not changed, name
        visual = model.vlm.model.visual
        assert not torch.equal(
            visual.patch_embed.proj.weight, before["vlm.model.visual.patch_embed.proj.weight"]
        )
        assert not torch.equal(
            visual.merger.mlp[0].weight, before["vlm.model.visual.merger.mlp.0.weight"]
        )
        assert not torch.equal(model.probe.weight, before["probe.weight"])
        groups = [g["name"] for g in trainer.optimizer.param_groups]
        assert groups == ["vision", "probe"]
    finally:
        trainer.close()


def test_run_validates_and_exports_the_trained_tower(shards, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    trainer = fit(make_cfg(run, shards))
    val = records(run, "val/marker_acc")
    assert [s for s, _ in val] == [2, 4] and all(0.0 <= v <= 1.0 for _, v in val)
    assert records(run, "val/pixels")[0][1] == 4.0  # 2 frames x 2 pixels
    assert 0.0 <= records(run, "val/delta1")[-1][1] <= 1.0
    export = run / "export"
    weights = load_file(str(export / "model.safetensors"))
    assert not any("probe" in k for k in weights)
    lm = DepthLM.from_dir(export)
    assert json.loads((export / "depthlm.json").read_text())["f_uni"] == 80.0
    trained = trainer.model.vlm.state_dict()
    for name, value in lm.model.state_dict().items():
        assert torch.equal(value, trained[name]), name

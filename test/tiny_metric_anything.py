"""Tiny random MetricAnything networks saved as our checkpoints, for the teacher's tests.

A freshly initialised head ends in ReLU with a zero bias, so a random network's canonical
inverse depth is mostly 0 (clamped to 1 km). The last bias is set so its depth is a few metres,
and the teacher's zero-initialised prompt projections can be given random weights so that the
prompt changes the output (as after training)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from depth_perception.models.metric_anything import PRESETS, build_preset
from depth_perception.models.metric_anything.checkpoints import save_checkpoint


def tiny_network(preset: str, seed: int, prompt_std: float = 0.0):
    torch.manual_seed(seed)
    model = build_preset(preset).eval()
    with torch.no_grad():
        model.head[-2].bias.fill_(0.5)
        if model.prompt_branch is not None and prompt_std > 0:
            for stage in model.prompt_branch.stages:
                torch.nn.init.normal_(stage.zero_conv.weight, std=prompt_std)
                torch.nn.init.normal_(stage.zero_conv.bias, std=prompt_std)
    return model


def save_tiny_teacher(
    directory: Path, seed: int = 0, prompt_std: float = 1.0, prior: str | None = None
) -> Path:
    """A ``teacher_tiny`` checkpoint; ``prior``: recorded in its config.json as a trainer
    would."""
    save_checkpoint(tiny_network("teacher_tiny", seed, prompt_std), directory)
    if prior is not None:
        config = json.loads((directory / "config.json").read_text())
        config["prior"] = prior
        (directory / "config.json").write_text(json.dumps(config))
    return directory


def save_tiny_student(directory: Path, seed: int = 1) -> Path:
    return save_checkpoint(tiny_network("student_tiny", seed), directory)


def micro_config(teacher: bool = True) -> dict:
    """teacher_tiny made narrower (a 512 px input still, ~90 k parameters): a training step in
    about half a second on one thread; ``teacher=False``: the same network without its prompt
    branch (the teacher's skip order)."""
    base = PRESETS["teacher_tiny"]
    vit = dataclasses.replace(base.vit, embed_dim=32, num_heads=2, ffn_ratio=2.0)
    config = base.replace(
        vit=vit,
        encoder_feature_dims=(8, 8, 8, 8),
        decoder_features=8,
        last_dims=(4, 1),
        prompt_dims=(2,) * 7,
        prompt_res_blocks=0,
    )
    return (config if teacher else config.as_student()).to_dict()

"""Model sizes, from a CPU-test network to the paper's.

``student_vith16plus`` is the official student exactly (DINOv3 ViT-H+/16, hooks 7/13/19/25,
encoder dims 320/256/320/640, decoder 256, head 32 -> 1, inverted skip order): 876.66 M
parameters, as the official README states. The paper's teacher is the same network with the
conventional skip order and the prompt branch (``teacher_vith16plus``); its width of prompt
layers is chosen so they add ~5 % parameters, the paper's figure (the exact teacher layout is
unreleased). Smaller DINOv3 backbones (ViT-S/16, ViT-L/16) keep the official tiling (1536 px
input, 384 px tiles) with narrower projections. ``*_small`` (6 blocks, 192 wide, ~3.9 M
parameters) and ``*_tiny`` (4 blocks, 64 wide, ~0.35 M) use 128 px tiles (a 512 px input): CPU
training and tests.

:func:`count_parameters` counts a preset without allocating its weights (meta device).
"""

from __future__ import annotations

import torch

from depth_perception.models.blocks.dinov3 import DINOV3_ARCHS
from depth_perception.models.metric_anything.config import (
    PROMPT_CHANNELS,
    STUDENT_FORWARD_IDS,
    TEACHER_FORWARD_IDS,
    MetricAnythingConfig,
)
from depth_perception.models.metric_anything.model import MetricAnythingDepth


def _pair(
    backbone: str,
    hooks: tuple[int, ...],
    dims: tuple[int, ...],
    decoder: int,
    last_dims: tuple[int, int],
    prompt_dims: tuple[int, ...],
    prompt_res_blocks: int,
) -> tuple[MetricAnythingConfig, MetricAnythingConfig]:
    student = MetricAnythingConfig(
        vit=DINOV3_ARCHS[backbone],
        hook_block_ids=hooks,
        encoder_feature_dims=dims,
        decoder_features=decoder,
        last_dims=last_dims,
        encodings_forward_ids=STUDENT_FORWARD_IDS,
    )
    teacher = student.replace(
        encodings_forward_ids=TEACHER_FORWARD_IDS,
        prompt_channels=PROMPT_CHANNELS,
        prompt_dims=prompt_dims,
        prompt_res_blocks=prompt_res_blocks,
    )
    return student, teacher


_SIZES = {
    # The official student (and the paper-size teacher built on it).
    "vith16plus": _pair(
        "dinov3_vith16plus",
        (7, 13, 19, 25),
        (320, 256, 320, 640),
        256,
        (32, 1),
        (64, 128, 128, 128, 256, 512, 896),
        2,
    ),
    "vitl16": _pair(
        "dinov3_vitl16",
        (5, 11, 17, 23),
        (256, 256, 256, 512),
        256,
        (32, 1),
        (32, 64, 64, 64, 128, 256, 576),
        2,
    ),
    "vits16": _pair(
        "dinov3_vits16",
        (2, 5, 8, 11),
        (96, 96, 96, 192),
        128,
        (32, 1),
        (16, 32, 32, 32, 64, 96, 128),
        2,
    ),
    "small": _pair(
        "dinov3_vitxs16",
        (1, 2, 3, 4),
        (48, 48, 48, 96),
        48,
        (16, 1),
        (8, 16, 16, 16, 32, 48, 80),
        1,
    ),
    "tiny": _pair(
        "dinov3_vitt16",
        (0, 1, 2, 3),
        (16, 16, 16, 32),
        16,
        (8, 1),
        (4, 4, 4, 4, 8, 12, 24),
        1,
    ),
}

PRESETS: dict[str, MetricAnythingConfig] = {}
for _size, (_student, _teacher) in _SIZES.items():
    PRESETS[f"student_{_size}"] = _student
    PRESETS[f"teacher_{_size}"] = _teacher
OFFICIAL_STUDENT = "student_vith16plus"


def preset_config(name: str) -> MetricAnythingConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown MetricAnything preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name]


def build_preset(name: str) -> MetricAnythingDepth:
    """A preset with fresh (random) weights."""
    return MetricAnythingDepth(preset_config(name))


def count_parameters(config: MetricAnythingConfig | str) -> dict[str, int]:
    """Parameters per group (``backbone``, ``head``, ``prompt``) and ``total``, counted on
    the meta device (no memory for the weights)."""
    if isinstance(config, str):
        config = preset_config(config)
    with torch.device("meta"):
        model = MetricAnythingDepth(config)
    counts = {name: sum(p.numel() for p in ps) for name, ps in model.parameter_groups().items()}
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts

"""MetricAnything model configuration: one dataclass for the teacher and the student.

The network is DepthPro-style: one DINOv3 ViT encodes the image at three scales (5 x 5 tiles at
full, 3 x 3 at half, one at quarter resolution of a square input four tiles wide) and four of
its intermediate blocks on the full-resolution tiles; the seven resulting feature maps are
projected and upsampled to the resolutions of seven decoder fusion stages:

    stage        0     1     2     3     4     5      6
    resolution  S/2   S/4   S/4   S/4   S/8   S/16   S/32      (S = input size, patch 16)

``encodings_forward_ids[i]`` names the encoder level fused at stage i. Levels are
``[latent0, latent1, latent2, latent3, x0, x1, global]`` (latent k: hook block k on the
full-resolution tiles; x0 / x1: the final tokens of the full / half-resolution tiles; global:
the quarter-resolution image fused with its own upsampled tokens).

- student (official): ``(4, 3, 2, 1, 0, 5, 6)`` -- the *inverted* skip order: the final tokens
  (x0) reach the output stage, then the hooks from the deepest to the shallowest;
- teacher: ``(0, 1, 2, 3, 4, 5, 6)`` -- the conventional DPT order of DepthPro: the shallowest
  hook nearest the output.

How many 2x upsamplings each level's projection has follows from the stage it is fused at, so
the official student's layout (``upsample_latent0`` with 1 transposed conv, ``upsample0`` with
3, ...) comes out of the same rule that gives the teacher DepthPro's (3 and 1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from depth_perception.models.blocks.dinov3 import DinoV3Config

NUM_LEVELS = 7
STUDENT_FORWARD_IDS = (4, 3, 2, 1, 0, 5, 6)
TEACHER_FORWARD_IDS = (0, 1, 2, 3, 4, 5, 6)
# Transposed-conv (2x) upsampling in the decoder fusion stages (official ``deconv_flags``).
DECODER_DECONV = (False, True, False, False, True, True, True)
# log2 of each stage's resolution relative to the merged full-resolution token grid (S / p).
STAGE_LOG2_SCALE = (3, 2, 2, 2, 1, 0, -1)
# log2 of each encoder level's own grid relative to the same: hooks and x0 come from the full
# resolution tiles, x1 from the half, the global level from the quarter-resolution image.
LEVEL_LOG2_SCALE = (0, 0, 0, 0, 0, -1, -2)
PROMPT_CHANNELS = 3  # [PDSA, GMDR, prompt mask]


def _tuple(value: Any) -> Any:
    return tuple(_tuple(v) for v in value) if isinstance(value, list | tuple) else value


@dataclass(frozen=True)
class MetricAnythingConfig:
    """Teacher (``prompt_channels = 3``) or student (``0``) of MetricAnything.

    ``vit``: the one shared DINOv3 ViT (its ``img_size`` is the tile size; the network input is
    four tiles wide). ``hook_block_ids``: the four blocks tapped on the full-resolution tiles.
    ``encoder_feature_dims`` ``(d0, d1, d2, d3)``: channels of the hook levels, of x0, of x1 and
    of the global level. ``last_dims``: the head's last hidden width and output channels.
    ``prompt_dims[i]`` / ``prompt_res_blocks``: width and residual blocks of the prompt branch
    entering decoder stage i (teacher only).
    """

    vit: DinoV3Config = field(default_factory=DinoV3Config)
    hook_block_ids: tuple[int, ...] = (7, 13, 19, 25)
    encoder_feature_dims: tuple[int, ...] = (320, 256, 320, 640)
    decoder_features: int = 256
    last_dims: tuple[int, int] = (32, 1)
    encodings_forward_ids: tuple[int, ...] = STUDENT_FORWARD_IDS
    prompt_channels: int = 0
    prompt_dims: tuple[int, ...] = ()
    prompt_res_blocks: int = 0

    def __post_init__(self) -> None:
        if len(self.hook_block_ids) != 4 or list(self.hook_block_ids) != sorted(
            set(self.hook_block_ids)
        ):
            raise ValueError(
                f"hook_block_ids must be 4 increasing blocks, got {self.hook_block_ids}"
            )
        if not all(0 <= i < self.vit.depth for i in self.hook_block_ids):
            raise ValueError(f"hook_block_ids {self.hook_block_ids} do not fit {self.vit.depth}")
        if len(self.encoder_feature_dims) != 4:
            raise ValueError("encoder_feature_dims must have 4 entries (hooks, x0, x1, global)")
        ids = self.encodings_forward_ids
        if sorted(ids) != list(range(NUM_LEVELS)) or ids[-1] != NUM_LEVELS - 1:
            raise ValueError(
                f"encodings_forward_ids {ids} must be a permutation of 0..6 ending with 6 "
                "(the global level feeds the lowest-resolution stage)"
            )
        tokens = self.vit.img_size // self.vit.patch_size
        if tokens % 8:
            raise ValueError(
                f"a tile of {tokens} tokens: the tile merge crops tokens/8 (full resolution) and "
                "tokens/4 (half) on inner edges, so tokens must be a multiple of 8"
            )
        if self.vit.patch_size != 16:
            raise ValueError("the decoder and head upsample 16x: patch_size must be 16")
        if self.prompt_channels not in (0, PROMPT_CHANNELS):
            raise ValueError(f"prompt_channels must be 0 (student) or {PROMPT_CHANNELS} (teacher)")
        if self.prompt_channels and len(self.prompt_dims) != NUM_LEVELS:
            raise ValueError(f"a teacher needs {NUM_LEVELS} prompt_dims (one per decoder stage)")
        if not self.prompt_channels and (self.prompt_dims or self.prompt_res_blocks):
            raise ValueError("prompt_dims / prompt_res_blocks given without prompt_channels")
        if self.decoder_features % 2:
            raise ValueError("decoder_features must be even (the head halves it)")

    # -- derived ------------------------------------------------------------------------------

    @property
    def img_size(self) -> int:
        """The network's (square) input size: four tiles."""
        return 4 * self.vit.img_size

    @property
    def is_teacher(self) -> bool:
        return self.prompt_channels > 0

    @property
    def level_dims(self) -> tuple[int, ...]:
        d0, d1, d2, d3 = self.encoder_feature_dims
        return (d0, d0, d0, d0, d1, d2, d3)

    @property
    def stage_of_level(self) -> tuple[int, ...]:
        stage = [0] * NUM_LEVELS
        for i, level in enumerate(self.encodings_forward_ids):
            stage[level] = i
        return tuple(stage)

    @property
    def level_upsamplings(self) -> tuple[int, ...]:
        """2x transposed convolutions in each level's projection (``upsample_latent0..3``,
        ``upsample0``, ``upsample1``, ``upsample2``)."""
        return tuple(
            STAGE_LOG2_SCALE[self.stage_of_level[level]] - LEVEL_LOG2_SCALE[level]
            for level in range(NUM_LEVELS)
        )

    @property
    def decoder_in_dims(self) -> tuple[int, ...]:
        """Input channels of ``decoder.convs[i]``: the level fused at stage i."""
        return tuple(self.level_dims[level] for level in self.encodings_forward_ids)

    def stage_sizes(self, size: int | None = None) -> tuple[int, ...]:
        """Feature-map side of each decoder stage (before its upsampling) for an input side."""
        grid = (size or self.img_size) // self.vit.patch_size
        return tuple(int(grid * 2.0**s) for s in STAGE_LOG2_SCALE)

    # -- (de)serialisation -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricAnythingConfig:
        """The inverse of ``to_dict``; unknown keys raise ValueError naming them."""
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown MetricAnything config key(s): {', '.join(unknown)}")
        vit = dict(data.pop("vit", {}))
        vit_known = {f.name for f in dataclasses.fields(DinoV3Config)}
        unknown = sorted(set(vit) - vit_known)
        if unknown:
            raise ValueError(f"unknown ViT config key(s): {', '.join(unknown)}")
        return cls(vit=DinoV3Config(**vit), **{k: _tuple(v) for k, v in data.items()})

    def replace(self, **changes: Any) -> MetricAnythingConfig:
        return dataclasses.replace(self, **changes)

    def as_student(self) -> MetricAnythingConfig:
        """The same network without the prompt branch (same skip order)."""
        return self.replace(prompt_channels=0, prompt_dims=(), prompt_res_blocks=0)

"""The depth head and the teacher's prompt branch (the conditioned DPT head).

``build_depth_head``: the official student's ``head`` Sequential (``depth_model.py``): 3x3 conv
to half width, 2x transposed conv, 3x3 conv to ``last_dims[0]`` + ReLU, four 3x3 + ReLU
refinements, 1x1 conv to ``last_dims[1]`` + ReLU (canonical inverse depth >= 0); the last conv's
bias starts at 0 as in the official code.

``PromptStage`` (one per decoder fusion stage): the 3-channel prompt map ([PDSA, GMDR, mask],
disparities already in canonical units, see ``model.py``) is area-resampled to the stage's
resolution, encoded by a 3x3 stem and ``prompt_res_blocks`` residual blocks, and projected to the
decoder width by a 1x1 ``zero_conv`` whose kernel and bias start at exactly zero. Only the
projection into the decoder starts at zero (as ControlNet's zero convolutions): were the stem
and blocks zero too, no gradient would reach them and the first steps could move only the
projection's bias, which does not depend on the prompt. So at initialisation a teacher's
output equals the prompt-free network's bit for bit, and one optimizer step on the prompt
layers makes it depend on the prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from depth_perception.models.metric_anything.decoder import residual_conv_block


def build_depth_head(dim_decoder: int, last_dims: Sequence[int]) -> nn.Sequential:
    """The official ``MetricAnythingDepthMap._build_head`` (keys ``head.0`` .. ``head.12``)."""
    half = dim_decoder // 2
    hidden, out = int(last_dims[0]), int(last_dims[1])
    layers: list[nn.Module] = [
        nn.Conv2d(dim_decoder, half, kernel_size=3, padding=1),
        nn.ConvTranspose2d(half, half, kernel_size=2, stride=2, bias=True),
        nn.Conv2d(half, hidden, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
    ]
    for _ in range(4):
        layers += [nn.Conv2d(hidden, hidden, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
    layers += [nn.Conv2d(hidden, out, kernel_size=1), nn.ReLU(inplace=True)]
    head = nn.Sequential(*layers)
    nn.init.zeros_(head[-2].bias)
    return head


class PromptStage(nn.Module):
    """Prompt map -> features added at one decoder fusion stage (zero at initialisation)."""

    def __init__(self, in_channels: int, width: int, num_blocks: int, out_channels: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        self.blocks = nn.Sequential(*(residual_conv_block(width) for _ in range(num_blocks)))
        self.zero_conv = nn.Conv2d(width, out_channels, kernel_size=1)
        self.reset_zero_conv()

    def reset_zero_conv(self) -> None:
        nn.init.zeros_(self.zero_conv.weight)
        nn.init.zeros_(self.zero_conv.bias)

    def forward(self, prompt: torch.Tensor) -> torch.Tensor:
        return self.zero_conv(F.relu(self.blocks(self.stem(prompt))))


def resample_prompt(prompt: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Area (box) averaging to ``size``: the mask channel becomes the prompt density."""
    size = (int(size[0]), int(size[1]))
    if tuple(prompt.shape[-2:]) == size:
        return prompt
    return F.interpolate(prompt, size=size, mode="area")


class PromptBranch(nn.Module):
    """One :class:`PromptStage` per decoder stage (model keys ``prompt_branch.stages.i.*``)."""

    def __init__(
        self, in_channels: int, widths: Sequence[int], num_blocks: int, out_channels: int
    ) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            PromptStage(in_channels, w, num_blocks, out_channels) for w in widths
        )

    def forward(self, prompt: torch.Tensor, sizes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """prompt (B, C, S, S) -> per-stage features (B, out, h_i, w_i) for ``sizes[i]``."""
        resampled: dict[tuple[int, int], torch.Tensor] = {}
        out = []
        for stage, size in zip(self.stages, sizes, strict=True):
            key = (int(size[0]), int(size[1]))
            if key not in resampled:
                resampled[key] = resample_prompt(prompt, key)
            out.append(stage(resampled[key]))
        return out

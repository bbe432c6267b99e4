"""Multi-resolution convolutional decoder (DepthPro / MetricAnything).

State-dict names as the official ``MultiresConvDecoder`` (``network/decoder.py``): ``convs.i``
(3x3, no bias) bring the level fused at stage i to ``dim_decoder`` channels; ``fusions.i``
(``resnet1``, ``resnet2`` as ``residual.1`` / ``residual.3`` convs, ``deconv``, ``out_conv``)
fuse from the lowest-resolution stage (6) to the output stage (0).

Which level each stage fuses is ``encodings_forward_ids`` (the student's inverted order or the
teacher's conventional one). A teacher adds one prompt feature map per stage to the sum of the
running features and the refined skip, before ``resnet2`` (as Prompt Depth Anything's fusion
blocks do); at a stage's zero-initialised prompt output this is an exact no-op.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from depth_perception.models.metric_anything.config import DECODER_DECONV


class ResidualBlock(nn.Module):
    """x + residual(x) (the official ``ResidualBlock`` without shortcut)."""

    def __init__(self, residual: nn.Module) -> None:
        super().__init__()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual(x)


def residual_conv_block(num_features: int) -> ResidualBlock:
    """ReLU -> 3x3 conv -> ReLU -> 3x3 conv, plus the input (keys ``residual.1`` / ``.3``)."""
    return ResidualBlock(
        nn.Sequential(
            nn.ReLU(False),
            nn.Conv2d(num_features, num_features, kernel_size=3, padding=1, bias=True),
            nn.ReLU(False),
            nn.Conv2d(num_features, num_features, kernel_size=3, padding=1, bias=True),
        )
    )


class FeatureFusionBlock2d(nn.Module):
    """x0 (+ resnet1(x1)) (+ prompt) -> resnet2 -> optional 2x deconv -> 1x1 out_conv."""

    def __init__(self, num_features: int, deconv: bool, disable_resnet1: bool) -> None:
        super().__init__()
        self.resnet1 = nn.Identity() if disable_resnet1 else residual_conv_block(num_features)
        self.resnet2 = residual_conv_block(num_features)
        self.use_deconv = deconv
        if deconv:
            self.deconv = nn.ConvTranspose2d(
                num_features, num_features, kernel_size=2, stride=2, bias=False
            )
        self.out_conv = nn.Conv2d(num_features, num_features, kernel_size=1, bias=True)

    def forward(
        self,
        x0: torch.Tensor,
        x1: torch.Tensor | None = None,
        prompt: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x0
        if x1 is not None:
            x = x + self.resnet1(x1)
        if prompt is not None:
            x = x + prompt
        x = self.resnet2(x)
        if self.use_deconv:
            x = self.deconv(x)
        return self.out_conv(x)


class MultiresConvDecoder(nn.Module):
    """Seven encoder levels -> (features at stage 0's output, the projected global level)."""

    def __init__(
        self, in_dims: Sequence[int], dim_decoder: int, encodings_forward_ids: Sequence[int]
    ) -> None:
        super().__init__()
        if len(in_dims) != len(DECODER_DECONV) or len(encodings_forward_ids) != len(in_dims):
            raise ValueError(f"the decoder has {len(DECODER_DECONV)} stages")
        self.dim_decoder = dim_decoder
        self.encodings_forward_ids = [int(i) for i in encodings_forward_ids]
        self.convs = nn.ModuleList(
            nn.Conv2d(dim_in, dim_decoder, kernel_size=3, padding=1, bias=False)
            for dim_in in in_dims
        )
        last = len(in_dims) - 1
        self.fusions = nn.ModuleList(
            FeatureFusionBlock2d(dim_decoder, deconv=flag, disable_resnet1=i == last)
            for i, flag in enumerate(DECODER_DECONV)
        )

    def forward(
        self,
        encodings: Sequence[torch.Tensor],
        prompt_features: Sequence[torch.Tensor | None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``prompt_features[i]``: added at stage i (None: nothing added there)."""
        levels = len(self.convs)
        if len(encodings) != levels:
            raise ValueError(f"got {len(encodings)} encoder levels, expected {levels}")
        prompts = list(prompt_features) if prompt_features is not None else [None] * levels
        ids = self.encodings_forward_ids
        features = self.convs[-1](encodings[ids[-1]])
        lowres_features = features
        features = self.fusions[-1](features, None, prompts[-1])
        for i in range(levels - 2, -1, -1):
            skip = self.convs[i](encodings[ids[i]])
            features = self.fusions[i](features, skip, prompts[i])
        return features, lowres_features

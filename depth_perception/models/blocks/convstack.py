"""MoGe-style convolutional decoder pieces: residual conv blocks, 2x resamplers, ConvStack, MLP.

A ConvStack walks a feature pyramid from coarse to fine: at each level it adds the level's
(1x1-projected) input to the running feature map, applies residual blocks, emits an output
(1x1 conv or the map itself) and resamples 2x for the next level. Module layout (``layers.N``,
``resamplers.N.M``, ...) matches the official MoGe/LingBot-Depth code so checkpoints load.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat

import torch
from torch import nn

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(negative_slope=0.2),
    "silu": nn.SiLU,
    "elu": nn.ELU,
}


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group_norm":
        return nn.GroupNorm(channels // 32, channels)
    if kind == "layer_norm":
        return nn.GroupNorm(1, channels)  # normalises over (C, H, W), per sample
    if kind == "instance_norm":
        return nn.InstanceNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


class ResidualConvBlock(nn.Module):
    """x + conv(act(norm(conv(act(norm(x)))))), with a 1x1 skip when the width changes."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        hidden_channels: int | None = None,
        kernel_size: int = 3,
        padding_mode: str = "replicate",
        activation: str = "relu",
        in_norm: str = "layer_norm",
        hidden_norm: str = "group_norm",
    ) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        hidden_channels = hidden_channels or in_channels
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}")
        act = _ACTIVATIONS[activation]
        pad = kernel_size // 2
        self.layers = nn.Sequential(
            _norm(in_norm, in_channels),
            act(),
            nn.Conv2d(
                in_channels, hidden_channels, kernel_size, padding=pad, padding_mode=padding_mode
            ),
            _norm(hidden_norm, hidden_channels),
            act(),
            nn.Conv2d(
                hidden_channels, out_channels, kernel_size, padding=pad, padding_mode=padding_mode
            ),
        )
        self.skip_connection = (
            nn.Conv2d(in_channels, out_channels, 1)
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x) + self.skip_connection(x)


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, padding=1, padding_mode="replicate")


def make_resampler(kind: str, in_channels: int, out_channels: int, scale: int = 2) -> nn.Sequential:
    """2x up- (or down-) sampler followed/preceded by a 3x3 conv.

    The learnable up-samplers start out as nearest-neighbour upsampling (every output pixel of
    a 2x2 cell gets the same kernel), the official initialisation.
    """
    s2 = scale**2
    if kind == "conv_transpose":
        up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=scale, stride=scale)
        with torch.no_grad():
            up.weight.copy_(up.weight[:, :, :1, :1].expand_as(up.weight).clone())
        return nn.Sequential(up, _conv3(out_channels, out_channels))
    if kind in ("nearest", "bilinear"):
        align = False if kind == "bilinear" else None
        return nn.Sequential(
            nn.Upsample(scale_factor=scale, mode=kind, align_corners=align),
            _conv3(in_channels, out_channels),
        )
    if kind == "pixel_shuffle":
        conv = _conv3(in_channels, out_channels * s2)
        with torch.no_grad():  # the s^2 sub-pixel filters of a channel start identical
            for i in range(1, s2):
                conv.weight[i::s2] = conv.weight[0::s2]
                conv.bias[i::s2] = conv.bias[0::s2]
        return nn.Sequential(conv, nn.PixelShuffle(scale), _conv3(out_channels, out_channels))
    if kind == "pixel_unshuffle":
        return nn.Sequential(nn.PixelUnshuffle(scale), _conv3(in_channels * s2, out_channels))
    if kind == "avg_pool":
        return nn.Sequential(_conv3(in_channels, out_channels), nn.AvgPool2d(scale, scale))
    if kind == "max_pool":
        return nn.Sequential(_conv3(in_channels, out_channels), nn.MaxPool2d(scale, scale))
    raise ValueError(f"unknown resampler {kind!r}")


def _per_level(value, n: int) -> list:
    """A per-level list from a list, or one value repeated for every level."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) < n:
            raise ValueError(f"{value!r} has fewer than {n} levels")
        return list(value)[:n]
    return list(repeat(value, n))


class ConvStack(nn.Module):
    """Coarse-to-fine conv pyramid; ``dim_res_blocks`` sets the number of levels and widths.

    ``dim_in[i]`` None means level i takes no input (its entry in ``forward``'s list is None);
    ``dim_out[i]`` None means level i outputs its feature map as is.
    """

    def __init__(
        self,
        dim_in: int | None | Sequence[int | None],
        dim_res_blocks: Sequence[int],
        dim_out: int | None | Sequence[int | None],
        resamplers: str | Sequence[str],
        dim_times_res_block_hidden: int = 1,
        num_res_blocks: int | Sequence[int] = 1,
        res_block_in_norm: str = "layer_norm",
        res_block_hidden_norm: str = "group_norm",
        activation: str = "relu",
    ) -> None:
        super().__init__()
        dims = list(dim_res_blocks)
        n = len(dims)
        ins, outs = _per_level(dim_in, n), _per_level(dim_out, n)
        kinds, counts = _per_level(resamplers, n - 1), _per_level(num_res_blocks, n)
        self.input_blocks = nn.ModuleList(
            nn.Conv2d(c_in, c, 1) if c_in is not None else nn.Identity()
            for c_in, c in zip(ins, dims, strict=True)
        )
        self.resamplers = nn.ModuleList(
            make_resampler(kind, a, b)
            for kind, a, b in zip(kinds, dims[:-1], dims[1:], strict=True)
        )
        self.res_blocks = nn.ModuleList(
            nn.Sequential(
                *(
                    ResidualConvBlock(
                        c,
                        c,
                        dim_times_res_block_hidden * c,
                        activation=activation,
                        in_norm=res_block_in_norm,
                        hidden_norm=res_block_hidden_norm,
                    )
                    for _ in range(count)
                )
            )
            for c, count in zip(dims, counts, strict=True)
        )
        self.output_blocks = nn.ModuleList(
            nn.Conv2d(c, c_out, 1) if c_out is not None else nn.Identity()
            for c_out, c in zip(outs, dims, strict=True)
        )

    def forward(self, features: Sequence[torch.Tensor | None]) -> list[torch.Tensor]:
        """features[i]: (B, dim_in[i], h * 2^i, w * 2^i) or None; features[0] is required.
        Returns one map per level, (B, dim_out[i] or dim_res_blocks[i], h * 2^i, w * 2^i)."""
        outputs = []
        x = None
        for i, res_block in enumerate(self.res_blocks):
            feature = features[i]
            if feature is not None:
                feature = self.input_blocks[i](feature)
                x = feature if x is None else x + feature
            if x is None:
                raise ValueError("the first level of a ConvStack needs an input")
            x = res_block(x)
            outputs.append(self.output_blocks[i](x))
            if i < len(self.resamplers):
                x = self.resamplers[i](x)
        return outputs


class MLP(nn.Sequential):
    """Linear layers with ReLU between them: dims = (in, hidden..., out)."""

    def __init__(self, dims: Sequence[int]) -> None:
        layers: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-2], dims[1:-1], strict=True):
            layers += [nn.Linear(d_in, d_out), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(dims[-2], dims[-1]))
        super().__init__(*layers)

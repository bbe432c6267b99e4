"""The DepthPro-style multi-resolution encoder around ONE shared ViT.

Layout and state-dict names as the official ``MetricAnythingEncoder``
(``models/student_depthmap/network/encoder.py``): ``patch_encoder`` (the ViT),
``upsample_latent0..3``, ``upsample0..2`` (1x1 projection + 2x transposed convs, no biases),
``upsample_lowres`` and ``fuse_lowres``. The same ViT encodes the full-, half- and
quarter-resolution tiles in one batch (the paper's shared patch / image encoder).

Tiling of a square input of side S = 4T (T = the ViT's tile, 384 in the official model):
full resolution: tiles T x T at stride 3T/4 (5 x 5); half: stride T/2 (3 x 3); quarter: the
whole image (1). Merging crops, on every edge shared with a neighbour, half of the overlap
(T/8 tokens at full, T/4 at half resolution: 3 and 6 officially) and concatenates, so each
merged token comes from the tile where it lies farthest from an edge.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from depth_perception.models.blocks.dinov3 import DinoV3VisionTransformer
from depth_perception.models.metric_anything.config import MetricAnythingConfig


def project_upsample(dim_in: int, dim_out: int, upsample_layers: int) -> nn.Sequential:
    """1x1 conv to ``dim_out`` then ``upsample_layers`` 2x transposed convs (no biases)."""
    layers: list[nn.Module] = [nn.Conv2d(dim_in, dim_out, kernel_size=1, bias=False)]
    layers += [
        nn.ConvTranspose2d(dim_out, dim_out, kernel_size=2, stride=2, bias=False)
        for _ in range(upsample_layers)
    ]
    return nn.Sequential(*layers)


def split_tiles(x: torch.Tensor, tile: int, overlap_ratio: float) -> torch.Tensor:
    """(B, C, S, S) -> (n*n*B, C, tile, tile), tile-major (row j, column i), then batch."""
    stride = int(tile * (1 - overlap_ratio))
    size = x.shape[-1]
    steps = int(math.ceil((size - tile) / stride)) + 1
    tiles = []
    for j in range(steps):
        for i in range(steps):
            tiles.append(x[..., j * stride : j * stride + tile, i * stride : i * stride + tile])
    return torch.cat(tiles, dim=0)


def merge_tiles(x: torch.Tensor, batch_size: int, padding: int) -> torch.Tensor:
    """Inverse of :func:`split_tiles` on feature maps: crop ``padding`` on inner edges, concat."""
    steps = math.isqrt(x.shape[0] // batch_size)
    if steps * steps * batch_size != x.shape[0]:
        raise ValueError(f"{x.shape[0]} tiles is not a square grid for batch {batch_size}")
    rows = []
    idx = 0
    for j in range(steps):
        cols = []
        for i in range(steps):
            tile = x[batch_size * idx : batch_size * (idx + 1)]
            top = padding if j != 0 else 0
            bottom = tile.shape[-2] - (padding if j != steps - 1 else 0)
            left = padding if i != 0 else 0
            right = tile.shape[-1] - (padding if i != steps - 1 else 0)
            cols.append(tile[..., top:bottom, left:right])
            idx += 1
        rows.append(torch.cat(cols, dim=-1))
    return torch.cat(rows, dim=-2)


def tokens_to_map(tokens: torch.Tensor, prefix: int, side: int) -> torch.Tensor:
    """(B, prefix + side*side, C) -> (B, C, side, side), dropping the prefix tokens."""
    batch, _, channels = tokens.shape
    return tokens[:, prefix:].reshape(batch, side, side, channels).permute(0, 3, 1, 2)


class MetricAnythingEncoder(nn.Module):
    """Image (B, 3, S, S) normalised -> the seven level feature maps (see ``config.py``)."""

    def __init__(self, config: MetricAnythingConfig) -> None:
        super().__init__()
        self.dims_encoder = list(config.encoder_feature_dims)
        self.hook_block_ids = list(config.hook_block_ids)
        self.patch_encoder = DinoV3VisionTransformer(config.vit)
        dim = config.vit.embed_dim
        self.tile = config.vit.img_size
        self.out_size = config.vit.img_size // config.vit.patch_size  # tokens per tile side
        d0, d1, d2, d3 = self.dims_encoder
        ups = config.level_upsamplings
        self.upsample_latent0 = project_upsample(dim, d0, ups[0])
        self.upsample_latent1 = project_upsample(dim, d0, ups[1])
        self.upsample_latent2 = project_upsample(dim, d0, ups[2])
        self.upsample_latent3 = project_upsample(dim, d0, ups[3])
        self.upsample0 = project_upsample(dim, d1, ups[4])
        self.upsample1 = project_upsample(dim, d2, ups[5])
        self.upsample2 = project_upsample(dim, d3, ups[6])
        self.upsample_lowres = nn.ConvTranspose2d(dim, d3, kernel_size=2, stride=2, bias=True)
        self.fuse_lowres = nn.Conv2d(2 * d3, d3, kernel_size=1, bias=True)

    @property
    def img_size(self) -> int:
        return 4 * self.tile

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        batch = x.shape[0]
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"input {tuple(x.shape[-2:])} is not {self.img_size}x{self.img_size}")
        x1 = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
        x2 = F.interpolate(x, scale_factor=0.25, mode="bilinear", align_corners=False)
        x0_tiles = split_tiles(x, self.tile, overlap_ratio=0.25)
        x1_tiles = split_tiles(x1, self.tile, overlap_ratio=0.5)
        tokens, hooks = self.patch_encoder(
            torch.cat([x0_tiles, x1_tiles, x2], dim=0), self.hook_block_ids
        )
        n0, n1 = x0_tiles.shape[0], x1_tiles.shape[0]
        prefix = self.patch_encoder.num_prefix_tokens
        side = self.out_size
        pad0, pad1 = side // 8, side // 4  # half the tile overlap, in tokens

        latents = [merge_tiles(tokens_to_map(h[:n0], prefix, side), batch, pad0) for h in hooks]
        maps = tokens_to_map(tokens, prefix, side)
        x0_maps, x1_maps, x2_maps = torch.split(maps, [n0, n1, batch], dim=0)
        x0_features = merge_tiles(x0_maps, batch, pad0)
        x1_features = merge_tiles(x1_maps, batch, pad1)

        global_features = self.fuse_lowres(
            torch.cat([self.upsample2(x2_maps), self.upsample_lowres(x2_maps)], dim=1)
        )
        return [
            self.upsample_latent0(latents[0]),
            self.upsample_latent1(latents[1]),
            self.upsample_latent2(latents[2]),
            self.upsample_latent3(latents[3]),
            self.upsample0(x0_features),
            self.upsample1(x1_features),
            global_features,
        ]

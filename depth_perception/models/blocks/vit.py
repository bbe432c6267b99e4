"""DINOv2-compatible Vision Transformer pieces, extended with a depth patch embedding (RGB-D).

Parameter names follow the original DINOv2 code (``patch_embed.proj``, ``blocks.N.attn.qkv``,
``blocks.N.ls1.gamma``, ``norm``, ``cls_token``, ``pos_embed``, ``mask_token``) so DINOv2 and
LingBot-Depth checkpoints load without renaming. Attention runs through PyTorch's
``scaled_dot_product_attention``; sequences of different lengths in one batch are padded and
the padding is excluded with a boolean key mask (no xformers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, H/p * W/p, D) with one strided convolution (row-major tokens)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"input {height}x{width} is not a multiple of {self.patch_size}")
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (DINOv2 layout)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, L, D); attn_mask: None or bool (B, 1, 1, L), True = key may be attended."""
        batch, length, dim = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, L, head_dim)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(x.transpose(1, 2).reshape(batch, length, dim))


class Mlp(nn.Module):
    """Linear -> GELU -> Linear feed-forward."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUFFN(nn.Module):
    """SwiGLU feed-forward as DINOv2's ViT-g uses it (hidden width 2/3, rounded up to 8)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)


class LayerScale(nn.Module):
    """Per-channel learnable residual scaling."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class DropPath(nn.Module):
    """Stochastic depth: drops a sample's whole residual branch while training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)


class Block(nn.Module):
    """Pre-norm transformer block with layer scale (DINOv2 ``Block``)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        ffn: str = "mlp",
        init_values: float | None = 1.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        if ffn == "mlp":
            self.mlp: nn.Module = Mlp(dim, hidden)
        elif ffn in ("swiglu", "swiglufused"):
            self.mlp = SwiGLUFFN(dim, hidden)
        else:
            raise ValueError(f"unknown ffn {ffn!r} (mlp | swiglu)")
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x), attn_mask)))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


@dataclass(frozen=True)
class ViTArch:
    """Shape of a DINOv2 backbone (what the hub name ``dinov2_vitl14`` stands for)."""

    embed_dim: int
    depth: int
    num_heads: int
    ffn: str = "mlp"
    num_register_tokens: int = 0
    patch_size: int = 14
    img_size: int = 518  # pretraining resolution: sets the positional-embedding grid (37 x 37)
    # The ``_reg`` models interpolate positions by output size with antialiasing; the others
    # keep DINOv2's historical +0.1 scale-factor offset.
    interpolate_antialias: bool = False
    interpolate_offset: float = 0.1


def _reg(arch: ViTArch) -> ViTArch:
    return ViTArch(
        arch.embed_dim,
        arch.depth,
        arch.num_heads,
        ffn=arch.ffn,
        num_register_tokens=4,
        interpolate_antialias=True,
        interpolate_offset=0.0,
    )


_VITS = ViTArch(384, 12, 6)
_VITB = ViTArch(768, 12, 12)
_VITL = ViTArch(1024, 24, 16)
_VITG = ViTArch(1536, 40, 24, ffn="swiglu")

# Hub names as the official ``model_config`` spells them, plus one tiny CPU backbone of ours.
VIT_ARCHS: dict[str, ViTArch] = {
    "dinov2_vits14": _VITS,
    "dinov2_vitb14": _VITB,
    "dinov2_vitl14": _VITL,
    "dinov2_vitl16": _VITL,  # the official hub builds this exactly like vitl14 (patch 14)
    "dinov2_vitg14": _VITG,
    "dinov2_vits14_reg": _reg(_VITS),
    "dinov2_vitb14_reg": _reg(_VITB),
    "dinov2_vitl14_reg": _reg(_VITL),
    "dinov2_vitg14_reg": _reg(_VITG),
    # Not a DINOv2 release: a 4-block, 96-wide ViT for CPU tests and quick experiments.
    "dinov2_vitt14": ViTArch(96, 4, 3, img_size=224),
}


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT with a second (1-channel) patch embedding for depth.

    RGB-D sequence (LingBot-Depth): ``[cls, registers, rgb tokens, kept depth tokens]``, where
    rgb tokens get ``pos + 1`` and depth tokens ``pos + 2`` (the modality term) on top of their
    patch embedding, and the cls token gets the cls position.
    """

    def __init__(self, arch: ViTArch, in_chans: int = 3, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        dim, p = arch.embed_dim, arch.patch_size
        self.embed_dim = dim
        self.patch_size = p
        self.num_register_tokens = arch.num_register_tokens
        self.interpolate_antialias = arch.interpolate_antialias
        self.interpolate_offset = arch.interpolate_offset
        num_patches = (arch.img_size // p) ** 2

        self.patch_embed = PatchEmbed(p, in_chans, dim)
        self.depth_patch_embed = PatchEmbed(p, 1, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        if arch.num_register_tokens:
            self.register_tokens = nn.Parameter(torch.zeros(1, arch.num_register_tokens, dim))
        # Stochastic depth grows linearly with block index (0 for the first block).
        rates = [drop_path_rate * i / max(arch.depth - 1, 1) for i in range(arch.depth)]
        self.blocks = nn.ModuleList(
            Block(dim, arch.num_heads, ffn=arch.ffn, drop_path=r) for r in rates
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # DINOv2's; unused at inference
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DINOv2's initialisation (timm ViT): truncated-normal positions and linears."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.num_register_tokens:
            nn.init.normal_(self.register_tokens, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def interpolate_pos_embed(self, rows: int, cols: int) -> torch.Tensor:
        """Patch positional embedding (1, rows*cols, D) resized to a rows x cols token grid.

        Bicubic like DINOv2; the pretrained grid is returned untouched when it already matches
        (square and same size). With ``interpolate_offset`` > 0 the resize is given as a scale
        factor ``(n + offset) / M``, DINOv2's historical choice, which samples slightly
        differently from giving the output size; kept so pretrained weights behave as trained.
        """
        pos = self.pos_embed[:, 1:]
        n = pos.shape[1]
        m = math.isqrt(n)
        if rows * cols == n and rows == cols:
            return pos
        grid = pos.float().reshape(1, m, m, -1).permute(0, 3, 1, 2)
        if self.interpolate_offset > 0:
            scale = ((rows + self.interpolate_offset) / m, (cols + self.interpolate_offset) / m)
            grid = F.interpolate(
                grid, scale_factor=scale, mode="bicubic", antialias=self.interpolate_antialias
            )
        else:
            grid = F.interpolate(
                grid, size=(rows, cols), mode="bicubic", antialias=self.interpolate_antialias
            )
        if grid.shape[-2:] != (rows, cols):
            raise RuntimeError(f"position grid {tuple(grid.shape[-2:])} != {(rows, cols)}")
        return grid.permute(0, 2, 3, 1).flatten(1, 2).to(pos.dtype)

    def _prefix(self, batch: int) -> torch.Tensor:
        """cls (with its position) followed by the register tokens: (B, 1 + R, D)."""
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(batch, -1, -1)
        if not self.num_register_tokens:
            return cls
        return torch.cat([cls, self.register_tokens.expand(batch, -1, -1)], dim=1)

    def prepare_rgbd_tokens(
        self, image: torch.Tensor, depth: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embedded tokens before the blocks.

        image (B, 3, 14r, 14c) normalised, depth (B, 1, 14r, 14c) encoded.
        Returns prefix (B, 1 + R, D), rgb tokens (B, r*c, D), depth tokens (B, r*c, D).
        """
        rows, cols = image.shape[-2] // self.patch_size, image.shape[-1] // self.patch_size
        rgb = self.patch_embed(image)
        dep = self.depth_patch_embed(depth)
        pos = self.interpolate_pos_embed(rows, cols).to(rgb.dtype)
        return self._prefix(image.shape[0]), rgb + (pos + 1), dep + (pos + 2)

    def resolve_layers(self, layers: int | Sequence[int]) -> list[int]:
        """An int n means the last n blocks (as DINOv2's ``get_intermediate_layers``)."""
        n = len(self.blocks)
        chosen = list(range(n - layers, n)) if isinstance(layers, int) else [int(i) for i in layers]
        if not chosen or any(not 0 <= i < n for i in chosen):
            raise ValueError(f"intermediate layers {layers!r} do not fit {n} blocks")
        return chosen

    def forward_rgbd(
        self,
        image: torch.Tensor,
        depth: torch.Tensor,
        drop_depth: torch.Tensor,
        layers: int | Sequence[int],
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Run the RGB-D sequence; drop the depth tokens where ``drop_depth`` (B, r*c) is True.

        Every sample keeps all its rgb tokens; kept depth tokens are packed to the front (in
        patch order) and padded to the batch maximum, the padding excluded as attention keys,
        so a sample's result does not depend on what else is in the batch.
        Returns, per chosen layer, (final-normed rgb tokens (B, r*c, D), normed cls (B, D)).
        """
        prefix, rgb, dep = self.prepare_rgbd_tokens(image, depth)
        dep, dep_valid = pack_tokens(dep, ~drop_depth)
        x = torch.cat([prefix.to(rgb.dtype), rgb, dep], dim=1)
        attn_mask = None
        if not bool(dep_valid.all()):
            head = dep_valid.new_ones(x.shape[0], prefix.shape[1] + rgb.shape[1])
            attn_mask = torch.cat([head, dep_valid], dim=1)[:, None, None]
        return self._run_blocks(x, attn_mask, layers, prefix.shape[1], rgb.shape[1])

    def forward_rgb(self, image: torch.Tensor) -> torch.Tensor:
        """Plain DINOv2 on RGB (no modality term): final-normed tokens (B, 1 + R + N, D)."""
        rows, cols = image.shape[-2] // self.patch_size, image.shape[-1] // self.patch_size
        rgb = self.patch_embed(image)
        rgb = rgb + self.interpolate_pos_embed(rows, cols).to(rgb.dtype)
        x = torch.cat([self._prefix(image.shape[0]).to(rgb.dtype), rgb], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def _run_blocks(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None,
        layers: int | Sequence[int],
        num_prefix: int,
        num_rgb: int,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        chosen = self.resolve_layers(layers)
        outputs = []
        for i, block in enumerate(self.blocks[: max(chosen) + 1]):
            x = block(x, attn_mask)
            if i in chosen:
                # LayerNorm is per token, so normalising only what is kept is equivalent.
                normed = self.norm(x[:, : num_prefix + num_rgb])
                outputs.append((normed[:, num_prefix:], normed[:, 0]))
        return outputs


def pack_tokens(tokens: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the kept tokens (B, N, D) of each sample to the front, in order, and cut to the
    batch's largest count K. Returns (packed (B, K, D), valid (B, K) bool); entries past a
    sample's own count are filler that must be masked out."""
    counts = keep.sum(dim=1)
    k = int(counts.max()) if keep.numel() else 0
    # A stable sort of "not kept" puts kept indices first, in their original order.
    order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices[:, :k]
    packed = torch.gather(tokens, 1, order[..., None].expand(-1, -1, tokens.shape[-1]))
    valid = torch.arange(k, device=keep.device)[None] < counts[:, None]
    return packed, valid

"""DINOv3 Vision Transformer with the original DINOv3 parameter names.

Parameter and buffer names follow Meta's DINOv3 code as MetricAnything ships it
(``cls_token``, ``storage_tokens``, ``mask_token``, ``rope_embed.periods``,
``patch_embed.proj``, ``blocks.N.attn.qkv`` with its ``bias_mask`` buffer, ``blocks.N.ls1.gamma``,
``blocks.N.mlp.w1/w2/w3`` for SwiGLU or ``fc1/fc2`` for the MLP, ``norm``), so DINOv3 and
MetricAnything checkpoints load without renaming. What the architecture has that LingBot's
DINOv2 ViT (``vit.py``) lacks: axial RoPE on the patch tokens (no learned position embedding),
"storage" (register) tokens, SwiGLU with separate ``w1``/``w2``, and a key bias masked to zero.

Numerics as the original in evaluation mode: RoPE angles in float32 over pixel-centre
coordinates normalised per axis to [-1, 1], applied to the patch tokens only (the class and
storage tokens are not rotated); PyTorch SDPA with the default 1/sqrt(head_dim) scale; LayerNorm
eps 1e-5 ("layernormbf16"). In training mode the RoPE coordinates get DINOv3's random
shift / jitter / rescale augmentation (drawn per block, as the original does); the official
presets set rescale = 2. Stochastic depth is not implemented (every released DINOv3 and the
MetricAnything student build with ``drop_path_rate = 0``).

``state_dict_from_transformers`` converts a ``transformers`` ``DINOv3ViTModel`` state dict
(``embeddings.*``, ``[model.]layer.N.*``) into this layout, for initialising a backbone from
the public DINOv3 weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from depth_perception.models.blocks.vit import LayerScale, Mlp, PatchEmbed

_SWIGLU_ALIGN = {"swiglu": 8, "swiglu32": 32, "swiglu64": 64, "swiglu128": 128}
_NORMALIZE_COORDS = ("min", "max", "separate")


@dataclass(frozen=True)
class DinoV3Config:
    """Shape of a DINOv3 ViT (the kwargs of the original ``DinoVisionTransformer``).

    ``img_size`` is what the original stores in ``patch_embed.img_size`` and only sets the tile
    size of the DepthPro-style encoder (MetricAnything sets it to 384); RoPE works at any grid.
    """

    embed_dim: int = 1280
    depth: int = 32
    num_heads: int = 20
    ffn_ratio: float = 6.0
    ffn_layer: str = "swiglu"  # mlp | swiglu | swiglu32 | swiglu64 | swiglu128
    patch_size: int = 16
    img_size: int = 384
    in_chans: int = 3
    n_storage_tokens: int = 4
    layerscale_init: float | None = 1.0e-5
    norm_eps: float = 1.0e-5  # "layernormbf16"
    qkv_bias: bool = True
    proj_bias: bool = True
    ffn_bias: bool = True
    mask_k_bias: bool = True
    rope_base: float = 100.0
    rope_normalize_coords: str = "separate"
    rope_shift_coords: float | None = None
    rope_jitter_coords: float | None = None
    rope_rescale_coords: float | None = 2.0

    def __post_init__(self) -> None:
        if self.embed_dim % (4 * self.num_heads):
            raise ValueError(
                f"embed_dim {self.embed_dim} must be a multiple of 4 * num_heads "
                f"({4 * self.num_heads}) for the axial RoPE"
            )
        if self.ffn_layer != "mlp" and self.ffn_layer not in _SWIGLU_ALIGN:
            raise ValueError(
                f"unknown ffn_layer {self.ffn_layer!r} (mlp | {' | '.join(_SWIGLU_ALIGN)})"
            )
        if self.rope_normalize_coords not in _NORMALIZE_COORDS:
            raise ValueError(f"rope_normalize_coords must be one of {_NORMALIZE_COORDS}")
        if self.img_size % self.patch_size:
            raise ValueError(
                f"img_size {self.img_size} is not a multiple of patch {self.patch_size}"
            )

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def ffn_hidden(self) -> int:
        """Hidden width of the feed-forward layer, rounded as the original rounds it."""
        hidden = int(self.embed_dim * self.ffn_ratio)
        if self.ffn_layer == "mlp":
            return hidden
        d = int(hidden * 2 / 3)
        return d + (-d % _SWIGLU_ALIGN[self.ffn_layer])

    def to_dict(self) -> dict:
        return asdict(self)


def _arch(embed_dim: int, depth: int, heads: int, ratio: float, ffn: str) -> DinoV3Config:
    return DinoV3Config(embed_dim, depth, heads, ratio, ffn)


# The released DINOv3 ViTs (``dinov3/hub/backbones.py``), plus one CPU-sized ViT of ours.
DINOV3_ARCHS: dict[str, DinoV3Config] = {
    "dinov3_vits16": _arch(384, 12, 6, 4.0, "mlp"),
    "dinov3_vits16plus": _arch(384, 12, 6, 6.0, "swiglu"),
    "dinov3_vitb16": _arch(768, 12, 12, 4.0, "mlp"),
    "dinov3_vitl16": _arch(1024, 24, 16, 4.0, "mlp"),
    "dinov3_vitl16plus": _arch(1024, 24, 16, 6.0, "swiglu"),
    "dinov3_vith16plus": _arch(1280, 32, 20, 6.0, "swiglu"),
    # Not DINOv3 releases: CPU-sized ViTs on 128 px tiles (a 512 px network input).
    "dinov3_vitt16": DinoV3Config(64, 4, 4, 3.0, "swiglu", img_size=128),
    "dinov3_vitxs16": DinoV3Config(192, 6, 3, 4.0, "swiglu", img_size=128),
}


class RopePositionEmbedding(nn.Module):
    """Axial RoPE without learnable weights; ``periods`` is a persistent buffer as in DINOv3."""

    def __init__(self, config: DinoV3Config) -> None:
        super().__init__()
        self.head_dim = config.head_dim
        self.base = config.rope_base
        self.normalize_coords = config.rope_normalize_coords
        self.shift_coords = config.rope_shift_coords
        self.jitter_coords = config.rope_jitter_coords
        self.rescale_coords = config.rope_rescale_coords
        self.register_buffer("periods", torch.empty(self.head_dim // 4), persistent=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        exponent = 2 * torch.arange(self.head_dim // 4, dtype=torch.float32) / (self.head_dim // 2)
        self.periods.data = (self.base**exponent).to(self.periods.device)

    def forward(self, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(sin, cos), each (rows * cols, head_dim), float32, for a row-major token grid."""
        dd = {"device": self.periods.device, "dtype": torch.float32}
        if self.normalize_coords == "max":
            norm_h = norm_w = max(rows, cols)
        elif self.normalize_coords == "min":
            norm_h = norm_w = min(rows, cols)
        else:
            norm_h, norm_w = rows, cols
        coords_h = torch.arange(0.5, rows, **dd) / norm_h
        coords_w = torch.arange(0.5, cols, **dd) / norm_w
        coords = torch.stack(torch.meshgrid(coords_h, coords_w, indexing="ij"), dim=-1)
        coords = 2.0 * coords.flatten(0, 1) - 1.0  # (HW, 2) in [-1, 1]
        if self.training:
            if self.shift_coords is not None:
                coords = coords + torch.empty(2, **dd).uniform_(
                    -self.shift_coords, self.shift_coords
                )
            if self.jitter_coords is not None:
                bound = float(np.log(self.jitter_coords))
                coords = coords * torch.empty(2, **dd).uniform_(-bound, bound).exp()
            if self.rescale_coords is not None:
                bound = float(np.log(self.rescale_coords))
                coords = coords * torch.empty(1, **dd).uniform_(-bound, bound).exp()
        angles = 2 * math.pi * coords[:, :, None] / self.periods.float()[None, None, :]
        angles = angles.flatten(1, 2).tile(2)  # (HW, head_dim)
        return torch.sin(angles), torch.cos(angles)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Rotate the last ``sin.shape[-2]`` tokens of x (B, heads, N, d); the prefix stays."""
    prefix = x.shape[-2] - sin.shape[-2]
    if prefix < 0:
        raise ValueError(f"{x.shape[-2]} tokens but RoPE for {sin.shape[-2]} patches")
    dtype = x.dtype
    patches = x[:, :, prefix:].to(sin.dtype)
    patches = patches * cos + _rotate_half(patches) * sin
    return torch.cat([x[:, :, :prefix], patches.to(dtype)], dim=-2)


class LinearKMaskedBias(nn.Linear):
    """The qkv projection whose key bias is multiplied by a (persistent) mask of zeros.

    The original creates ``bias_mask`` full of NaN and relies on the checkpoint to fill it; a
    fresh model here gets the mask the checkpoints hold (1 for q and v, 0 for k).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if out_features % 3:
            raise ValueError(f"qkv width {out_features} is not a multiple of 3")
        if self.bias is not None:
            mask = torch.ones(out_features)
            mask[out_features // 3 : 2 * out_features // 3] = 0.0
            self.register_buffer("bias_mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias * self.bias_mask.to(self.bias.dtype)
        return F.linear(x, self.weight, bias)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection and RoPE on the patch tokens."""

    def __init__(self, config: DinoV3Config) -> None:
        super().__init__()
        dim = config.embed_dim
        self.num_heads = config.num_heads
        linear = LinearKMaskedBias if config.mask_k_bias else nn.Linear
        self.qkv = linear(dim, 3 * dim, bias=config.qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=config.proj_bias)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        batch, length, dim = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, dim // self.num_heads)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))  # each (B, heads, N, d)
        if rope is not None:
            sin, cos = rope
            q, k = apply_rope(q, sin, cos), apply_rope(k, sin, cos)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(batch, length, dim))


class SwiGLUFFN(nn.Module):
    """SwiGLU with separate gate (``w1``) and value (``w2``) projections, as DINOv3."""

    def __init__(self, dim: int, hidden: int, bias: bool = True) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=bias)
        self.w2 = nn.Linear(dim, hidden, bias=bias)
        self.w3 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


class SelfAttentionBlock(nn.Module):
    """Pre-norm block with layer scale (DINOv3 ``SelfAttentionBlock``)."""

    def __init__(self, config: DinoV3Config) -> None:
        super().__init__()
        dim = config.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=config.norm_eps)
        self.attn = SelfAttention(config)
        init = config.layerscale_init
        self.ls1 = LayerScale(dim, init) if init else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=config.norm_eps)
        if config.ffn_layer == "mlp":
            if not config.ffn_bias:
                raise ValueError("the MLP feed-forward is built with biases only")
            self.mlp: nn.Module = Mlp(dim, config.ffn_hidden)
        else:
            self.mlp = SwiGLUFFN(dim, config.ffn_hidden, bias=config.ffn_bias)
        self.ls2 = LayerScale(dim, init) if init else nn.Identity()

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), rope))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoV3VisionTransformer(nn.Module):
    """DINOv3 ViT: ``[cls, storage tokens, patch tokens]`` through the blocks, then ``norm``."""

    def __init__(self, config: DinoV3Config) -> None:
        super().__init__()
        self.config = config
        dim = config.embed_dim
        self.embed_dim = dim
        self.patch_size = config.patch_size
        self.img_size = config.img_size
        self.n_storage_tokens = config.n_storage_tokens
        self.patch_embed = PatchEmbed(config.patch_size, config.in_chans, dim)
        self.cls_token = nn.Parameter(torch.empty(1, 1, dim))
        if config.n_storage_tokens:
            self.storage_tokens = nn.Parameter(torch.empty(1, config.n_storage_tokens, dim))
        self.rope_embed = RopePositionEmbedding(config)
        self.blocks = nn.ModuleList(SelfAttentionBlock(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(dim, eps=config.norm_eps)
        self.mask_token = nn.Parameter(torch.empty(1, dim))  # DINOv3's; kept for its key
        self.reset_parameters()

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + self.n_storage_tokens

    def reset_parameters(self) -> None:
        """DINOv3's ``init_weights``: truncated-normal linears, N(0, 0.02) tokens, zero mask."""
        self.rope_embed.reset_parameters()
        nn.init.normal_(self.cls_token, std=0.02)
        if self.n_storage_tokens:
            nn.init.normal_(self.storage_tokens, std=0.02)
        nn.init.zeros_(self.mask_token)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()

    def forward(
        self, x: torch.Tensor, hook_block_ids: Sequence[int] = ()
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x (B, 3, p*r, p*c) -> (final-normed tokens (B, 1 + S + r*c, D), the raw outputs of
        the blocks in ``hook_block_ids`` (B, 1 + S + r*c, D), in that order)."""
        rows, cols = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        tokens = self.patch_embed(x)
        batch = tokens.shape[0]
        # "+ 0 * mask_token" as the original: the unused mask token still gets a (zero)
        # gradient, so distributed training does not see an unused parameter.
        cls = (self.cls_token + 0 * self.mask_token).expand(batch, -1, -1)
        parts = [cls]
        if self.n_storage_tokens:
            parts.append(self.storage_tokens.expand(batch, -1, -1))
        x = torch.cat([*(p.to(tokens.dtype) for p in parts), tokens], dim=1)
        wanted = {int(i): n for n, i in enumerate(hook_block_ids)}
        if any(not 0 <= i < len(self.blocks) for i in wanted):
            raise ValueError(f"hook blocks {list(hook_block_ids)} do not fit {len(self.blocks)}")
        hooks: list[torch.Tensor | None] = [None] * len(hook_block_ids)
        for i, block in enumerate(self.blocks):
            x = block(x, self.rope_embed(rows, cols))  # per block: training draws differ
            if i in wanted:
                hooks[wanted[i]] = x
        return self.norm(x), hooks  # type: ignore[return-value]


def state_dict_from_transformers(
    hf: Mapping[str, torch.Tensor], config: DinoV3Config
) -> dict[str, torch.Tensor]:
    """A ``transformers`` DINOv3ViTModel state dict -> this module's (original DINOv3) names.

    q/k/v are fused into ``attn.qkv`` (the key bias, absent there, is zero and masked),
    ``periods`` is recomputed from the config (transformers does not store it). Raises
    KeyError naming the first missing tensor.
    """
    # transformers >= 5 nests the blocks as "model.layer.N", older releases as "layer.N".
    hf = {k.removeprefix("model.") if k.startswith("model.layer.") else k: v for k, v in hf.items()}

    def get(key: str) -> torch.Tensor:
        if key not in hf:
            raise KeyError(f"{key} not in the transformers DINOv3 state dict")
        return hf[key]

    dim = config.embed_dim
    out = {
        "cls_token": get("embeddings.cls_token").reshape(1, 1, dim),
        "mask_token": get("embeddings.mask_token").reshape(1, dim),
        "patch_embed.proj.weight": get("embeddings.patch_embeddings.weight"),
        "patch_embed.proj.bias": get("embeddings.patch_embeddings.bias"),
        "norm.weight": get("norm.weight"),
        "norm.bias": get("norm.bias"),
        "rope_embed.periods": RopePositionEmbedding(config).periods.clone(),
    }
    if config.n_storage_tokens:
        out["storage_tokens"] = get("embeddings.register_tokens")
    for i in range(config.depth):
        src, dst = f"layer.{i}.", f"blocks.{i}."
        q, k, v = (get(f"{src}attention.{n}_proj.weight") for n in "qkv")
        out[dst + "attn.qkv.weight"] = torch.cat([q, k, v])
        if config.qkv_bias:
            k_bias = hf.get(f"{src}attention.k_proj.bias", torch.zeros(dim, dtype=q.dtype))
            out[dst + "attn.qkv.bias"] = torch.cat(
                [get(f"{src}attention.q_proj.bias"), k_bias, get(f"{src}attention.v_proj.bias")]
            )
            if config.mask_k_bias:
                mask = torch.ones(3 * dim, dtype=q.dtype)
                mask[dim : 2 * dim] = 0.0
                out[dst + "attn.qkv.bias_mask"] = mask
        for part in ("weight", "bias"):
            out[dst + f"attn.proj.{part}"] = get(f"{src}attention.o_proj.{part}")
            out[dst + f"norm1.{part}"] = get(f"{src}norm1.{part}")
            out[dst + f"norm2.{part}"] = get(f"{src}norm2.{part}")
            if config.ffn_layer == "mlp":
                out[dst + f"mlp.fc1.{part}"] = get(f"{src}mlp.up_proj.{part}")
                out[dst + f"mlp.fc2.{part}"] = get(f"{src}mlp.down_proj.{part}")
            else:
                out[dst + f"mlp.w1.{part}"] = get(f"{src}mlp.gate_proj.{part}")
                out[dst + f"mlp.w2.{part}"] = get(f"{src}mlp.up_proj.{part}")
                out[dst + f"mlp.w3.{part}"] = get(f"{src}mlp.down_proj.{part}")
        if config.layerscale_init:
            out[dst + "ls1.gamma"] = get(f"{src}layer_scale1.lambda1")
            out[dst + "ls2.gamma"] = get(f"{src}layer_scale2.lambda1")
    return out

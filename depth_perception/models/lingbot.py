"""LingBot-Depth (masked depth modeling): RGB-D ViT encoder + MoGe-style ConvStack decoder.

Faithful to the official ``MDMModel`` (v2): same ``model_config`` keys, same state_dict keys,
same numerics, with these deliberate differences:

- a depth token is dropped when its 14x14 patch (of the nearest-resized depth) holds no valid
  pixel, valid meaning finite and > 0.01 m, decided from the raw metres. The official code
  decides on the log depth where it stored invalid pixels as 0, so a depth of exactly 1.0 m
  (log 0) also counts as invalid there;
- samples in a batch that keep different numbers of depth tokens are padded and the padding is
  masked out of PyTorch SDPA (the official code needs xformers' block-diagonal attention);
- ``forward`` returns ``depth`` and ``confidence``; ``infer`` marks rejected pixels NaN (not inf).

Inputs: image (B, 3, H, W) RGB in [0, 1]; depth (B, H, W) or (B, 1, H, W) metres, holes as
0 / NaN / inf / negative. Everything else (resizing to the token grid, ImageNet normalisation,
log depth) happens inside, as in the official encoder.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from depth_perception.core.camera import Intrinsics
from depth_perception.models.blocks.convstack import ConvStack
from depth_perception.models.blocks.vit import VIT_ARCHS, DinoVisionTransformer

MIN_VALID_DEPTH = 0.01  # metres; the official encoder's validity threshold
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------------------------
# Geometry helpers
# ---------------------------------------------------------------------------------------------


def normalized_view_plane_uv(
    width: int,
    height: int,
    aspect_ratio: float | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(height, width, 2) pixel-centre coordinates on a view plane whose diagonal is 2.

    The image spans u in [-a, a], v in [-b, b] with a = r / sqrt(1 + r^2), b = 1 / sqrt(1 + r^2)
    (r = aspect ratio), so the map encodes the aspect ratio but not the resolution; pixel
    centres sit half a pixel inside the border.
    """
    if aspect_ratio is None:
        aspect_ratio = width / height
    diag = math.sqrt(1.0 + aspect_ratio**2)
    span_u = aspect_ratio / diag * (width - 1) / width
    span_v = 1.0 / diag * (height - 1) / height
    u = torch.linspace(-span_u, span_u, width, dtype=dtype, device=device)
    v = torch.linspace(-span_v, span_v, height, dtype=dtype, device=device)
    return torch.stack(torch.meshgrid(u, v, indexing="xy"), dim=-1)


def token_grid(height: int, width: int, num_tokens: int) -> tuple[int, int]:
    """(rows, cols) of the ViT token grid: ~num_tokens tokens at the image's aspect ratio."""
    aspect = width / height
    return round((num_tokens / aspect) ** 0.5), round((num_tokens * aspect) ** 0.5)


def num_tokens_for_level(num_tokens_range: Sequence[int], resolution_level: int = 9) -> int:
    """The official ``infer`` token budget: level 0..9 spans the model's token range."""
    lo, hi = num_tokens_range
    return int(lo + (resolution_level / 9) * (hi - lo))


def depth_to_points(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Depth (B, H, W) and pixel-unit intrinsics (B, 3, 3) -> points (B, H, W, 3) in the
    optical frame, ``x = (u - cx) z / fx`` with u the column index; NaN depth gives NaN."""
    _, height, width = depth.shape
    v, u = torch.meshgrid(
        torch.arange(height, dtype=depth.dtype, device=depth.device),
        torch.arange(width, dtype=depth.dtype, device=depth.device),
        indexing="ij",
    )
    fx, fy = K[:, 0, 0, None, None], K[:, 1, 1, None, None]
    cx, cy = K[:, 0, 2, None, None], K[:, 1, 2, None, None]
    return torch.stack([(u - cx) * depth / fx, (v - cy) * depth / fy, depth], dim=-1)


# ---------------------------------------------------------------------------------------------
# Depth tokens: validity, inference and training masks
# ---------------------------------------------------------------------------------------------


def valid_depth(depth: torch.Tensor) -> torch.Tensor:
    """Pixels that carry a measurement: finite and above 0.01 m."""
    return torch.isfinite(depth) & (depth > MIN_VALID_DEPTH)


def encode_depth(depth: torch.Tensor, mode: str = "log") -> tuple[torch.Tensor, torch.Tensor]:
    """Depth (metres) -> (network input, validity). Invalid pixels become 0 in either mode."""
    valid = valid_depth(depth)
    if mode == "log":
        # log of a safe value, then select: no NaN/inf even in gradients.
        encoded = torch.where(valid, torch.log(torch.where(valid, depth, 1.0)), 0.0)
    elif mode == "linear":
        encoded = torch.where(valid, depth, 0.0)
    else:
        raise ValueError(f"unknown depth encoding {mode!r} (log | linear)")
    return encoded, valid


def patch_valid_counts(valid: torch.Tensor, patch_size: int = 14) -> torch.Tensor:
    """Valid-pixel count per patch: (B, 1, r*p, c*p) bool -> (B, r*c) long, row-major."""
    batch, _, height, width = valid.shape
    rows, cols = height // patch_size, width // patch_size
    cells = valid.reshape(batch, rows, patch_size, cols, patch_size)
    return cells.sum(dim=(2, 4), dtype=torch.long).reshape(batch, rows * cols)


def inference_token_mask(valid_counts: torch.Tensor) -> torch.Tensor:
    """True (= drop the depth token) where a patch has no valid pixel."""
    return valid_counts == 0


def training_token_mask(
    valid_counts: torch.Tensor,
    patch_pixels: int,
    generator: torch.Generator,
    mixed_mask_prob: float = 0.75,
    ratio_range: tuple[float, float] = (0.6, 0.9),
) -> torch.Tensor:
    """Masked-depth-modeling mask (B, N) bool, True = depth token hidden from the encoder.

    Per sample: fully invalid patches are always masked; mixed patches (some valid pixels) are
    masked with probability ``mixed_mask_prob``; then a target ratio is drawn uniformly from
    ``ratio_range`` and random still-visible patches are masked until the masked count reaches
    ceil/floor-clamped ``target * N`` (fully valid patches first, then mixed ones). Patches are
    never unmasked, so when invalid patches alone exceed the upper bound the ratio stays above it.
    """
    batch, n = valid_counts.shape
    device = valid_counts.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=generator, device=generator.device).to(device)

    invalid = valid_counts == 0
    mixed = ~invalid & (valid_counts < patch_pixels)
    masked = invalid | (mixed & (rand(batch, n) < mixed_mask_prob))

    lo, hi = ratio_range
    lo_count, hi_count = math.ceil(lo * n - 1e-9), math.floor(hi * n + 1e-9)
    target = torch.round((lo + (hi - lo) * rand(batch)) * n).long().clamp(lo_count, hi_count)
    need = (target - masked.sum(dim=1)).clamp_min(0)
    # Random order among visible patches, fully valid ones ranked before mixed ones.
    score = rand(batch, n) + mixed.float()
    score = score.masked_fill(masked, float("inf"))
    rank = score.argsort(dim=1).argsort(dim=1)
    return masked | (rank < need[:, None])


# ---------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------


def depth_l1_loss(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean |pred - target| over the batch's valid ground-truth pixels (finite, > 0, and
    ``valid`` if given). No valid pixel: 0, still connected to ``pred``'s graph."""
    ok = torch.isfinite(target) & (target > 0)
    if valid is not None:
        ok = ok & valid
    # Select before subtracting so NaN targets cannot leak NaN into the gradient.
    diff = torch.where(ok, pred - torch.where(ok, target, 0.0), 0.0).abs()
    return diff.sum() / ok.sum().clamp_min(1)


# ---------------------------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------------------------


class RGBDEncoder(nn.Module):
    """DINOv2 RGB-D encoder; constructor kwargs are the official ``model_config["encoder"]``.

    ``ignore_layers``, ``strict`` and ``depth_mask_ratio`` only steered the official training
    initialisation and are accepted for config compatibility.
    """

    def __init__(
        self,
        backbone: str,
        intermediate_layers: int | Sequence[int],
        dim_out: int,
        ignore_layers: str | Sequence[str] = (),
        in_chans: int = 3,
        strict: bool = True,
        img_depth_fuse_mode: str = "cat_token",
        depth_emb_mode: str = "conv_1c",
        depth_mask_ratio: float | Sequence[float] = 0.6,
        img_mask_ratio: float = 0.0,
        **deprecated_kwargs: Any,
    ) -> None:
        super().__init__()
        if deprecated_kwargs:
            warnings.warn(f"encoder: ignoring unknown arguments {deprecated_kwargs}", stacklevel=2)
        if backbone not in VIT_ARCHS:
            raise ValueError(f"unknown backbone {backbone!r}; known: {sorted(VIT_ARCHS)}")
        if img_depth_fuse_mode != "cat_token" or depth_emb_mode != "conv_1c":
            warnings.warn(
                f"img_depth_fuse_mode={img_depth_fuse_mode!r}, depth_emb_mode={depth_emb_mode!r}:"
                " only token concatenation with a 1-channel conv depth embedding exists; using it",
                stacklevel=2,
            )
        self.backbone_name = backbone
        self.backbone = DinoVisionTransformer(VIT_ARCHS[backbone], in_chans=in_chans)
        dim = self.backbone.embed_dim
        self.intermediate_layers = self.backbone.resolve_layers(intermediate_layers)
        if img_mask_ratio > 0:  # the official encoder owns this (unused) parameter then
            self.mask_token_mae = nn.Parameter(torch.zeros(1, 1, dim))
            nn.init.normal_(self.mask_token_mae, std=0.02)
        self.output_projections = nn.ModuleList(
            nn.Conv2d(dim, dim_out, kernel_size=1) for _ in self.intermediate_layers
        )
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    @property
    def patch_size(self) -> int:
        return self.backbone.patch_size

    def prepare_inputs(
        self, image: torch.Tensor, depth: torch.Tensor, rows: int, cols: int, depth_mode: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Resize to the token grid (bilinear+antialias image, nearest depth), normalise.
        Returns (image (B,3,14r,14c), encoded depth (B,1,14r,14c), validity (B,1,14r,14c))."""
        size = (rows * self.patch_size, cols * self.patch_size)
        image = F.interpolate(image, size, mode="bilinear", align_corners=False, antialias=True)
        image = (image - self.image_mean) / self.image_std
        depth = F.interpolate(depth, size, mode="nearest")
        encoded, valid = encode_depth(depth, depth_mode)
        return image, encoded, valid

    def forward(
        self,
        image: torch.Tensor,
        depth: torch.Tensor,
        rows: int,
        cols: int,
        depth_mode: str = "log",
        depth_token_mask: torch.Tensor | None = None,
        mask_generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (summed projected features (B, dim_out, rows, cols), cls token (B, D)).

        Depth tokens dropped: ``depth_token_mask`` (B, rows*cols) if given (True = drop, used
        as is), else the training rule when ``mask_generator`` is given, else the patches
        without any valid pixel.
        """
        image, encoded, valid = self.prepare_inputs(image, depth, rows, cols, depth_mode)
        if depth_token_mask is None:
            counts = patch_valid_counts(valid, self.patch_size)
            if mask_generator is not None:
                depth_token_mask = training_token_mask(counts, self.patch_size**2, mask_generator)
            else:
                depth_token_mask = inference_token_mask(counts)
        elif depth_token_mask.shape != (image.shape[0], rows * cols):
            expected = (image.shape[0], rows * cols)
            raise ValueError(f"depth_token_mask {tuple(depth_token_mask.shape)} != {expected}")
        layers = self.backbone.forward_rgbd(
            image, encoded, depth_token_mask.to(torch.bool), self.intermediate_layers
        )
        features = sum(
            proj(tokens.transpose(1, 2).unflatten(2, (rows, cols)))
            for proj, (tokens, _) in zip(self.output_projections, layers, strict=True)
        )
        return features, layers[-1][1]


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """Tuples -> lists (recursively), so configs survive JSON and ``torch.load(weights_only)``."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class LingBotDepth(nn.Module):
    """LingBot-Depth; constructor kwargs are the official ``MDMModel`` ``model_config``.

    ``normal_head`` and ``scale_head`` are accepted (and kept in ``model_config``) but, as in
    the official model, not built; ``remap_output`` is recorded only.
    """

    def __init__(
        self,
        encoder: dict[str, Any],
        neck: dict[str, Any],
        depth_head: dict[str, Any] | None = None,
        mask_head: dict[str, Any] | None = None,
        normal_head: dict[str, Any] | None = None,
        scale_head: dict[str, Any] | None = None,
        remap_output: str = "linear",
        remap_depth_in: str = "log",
        remap_depth_out: str = "exp",
        num_tokens_range: Sequence[int] = (1200, 3600),
        **deprecated_kwargs: Any,
    ) -> None:
        super().__init__()
        if deprecated_kwargs:
            warnings.warn(
                f"The following deprecated/invalid arguments are ignored: {deprecated_kwargs}",
                stacklevel=2,
            )
        if depth_head is None:
            raise ValueError("LingBotDepth needs a depth_head config")
        if remap_depth_in not in ("log", "linear") or remap_depth_out not in ("exp", "linear"):
            raise ValueError(f"unsupported remap: in={remap_depth_in!r}, out={remap_depth_out!r}")
        config = {
            "encoder": encoder,
            "neck": neck,
            "depth_head": depth_head,
            "mask_head": mask_head,
            "normal_head": normal_head,
            "scale_head": scale_head,
            "remap_output": remap_output,
            "remap_depth_in": remap_depth_in,
            "remap_depth_out": remap_depth_out,
            "num_tokens_range": num_tokens_range,
        }
        self.model_config: dict[str, Any] = _jsonable(
            copy.deepcopy({k: v for k, v in config.items() if v is not None})
        )
        self.remap_depth_in = remap_depth_in
        self.remap_depth_out = remap_depth_out
        self.num_tokens_range = tuple(int(t) for t in num_tokens_range)

        self.encoder = RGBDEncoder(**encoder)
        # The cls token is broadcast-added to the projected features, so widths must agree.
        dim, dim_out = self.encoder.backbone.embed_dim, encoder["dim_out"]
        if dim != dim_out:
            raise ValueError(f"encoder dim_out ({dim_out}) must equal the ViT width ({dim})")
        self.neck = ConvStack(**neck)
        self.depth_head = ConvStack(**depth_head)
        self.mask_head = ConvStack(**mask_head) if mask_head is not None else None

    @classmethod
    def from_config(cls, model_config: dict[str, Any]) -> LingBotDepth:
        """Build from an official-style ``model_config`` (unknown top-level keys warn)."""
        return cls(**copy.deepcopy(model_config))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def describe(self) -> str:
        """Short identity for logs and diagnostics, e.g. ``dinov2_vitl14``."""
        return self.encoder.backbone_name

    @property
    def num_levels(self) -> int:
        return len(self.neck.res_blocks)

    def token_grid(self, height: int, width: int, num_tokens: int | None = None) -> tuple[int, int]:
        """(rows, cols) the encoder uses for an image of this size (default: most tokens)."""
        return token_grid(height, width, num_tokens or self.num_tokens_range[1])

    def forward(
        self,
        image: torch.Tensor,
        depth: torch.Tensor,
        num_tokens: int | None = None,
        *,
        depth_token_mask: torch.Tensor | None = None,
        mask_generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """image (B, 3, H, W) in [0, 1], depth (B, H, W) / (B, 1, H, W) metres.

        Returns ``depth`` (B, H, W) metres and, with a mask head, ``confidence`` (B, H, W) in
        (0, 1). ``num_tokens`` defaults to the top of ``num_tokens_range``; see
        ``RGBDEncoder.forward`` for ``depth_token_mask`` / ``mask_generator`` (training).
        """
        batch, _, height, width = image.shape
        if depth.dim() == 3:
            depth = depth[:, None]
        rows, cols = self.token_grid(height, width, num_tokens)
        features, cls = self.encoder(
            image,
            depth,
            rows,
            cols,
            depth_mode=self.remap_depth_in,
            depth_token_mask=depth_token_mask,
            mask_generator=mask_generator,
        )
        features = features + cls[..., None, None]

        # Each pyramid level gets the view-plane UV map (aspect-ratio cue) as extra channels.
        pyramid = []
        for level in range(self.num_levels):
            uv = normalized_view_plane_uv(
                cols * 2**level, rows * 2**level, width / height, image.dtype, image.device
            )
            uv = uv.permute(2, 0, 1)[None].expand(batch, -1, -1, -1)
            pyramid.append(torch.cat([features, uv], dim=1) if level == 0 else uv)
        levels = self.neck(pyramid)

        def head_out(head: ConvStack) -> torch.Tensor:
            out = head(levels)[-1]
            return F.interpolate(out, (height, width), mode="bilinear", align_corners=False)

        pred = head_out(self.depth_head).squeeze(1)
        result = {"depth": pred.exp() if self.remap_depth_out == "exp" else pred}
        if self.mask_head is not None:
            result["confidence"] = head_out(self.mask_head).squeeze(1).sigmoid()
        return result

    @torch.inference_mode()
    def infer(
        self,
        image: torch.Tensor,
        depth: torch.Tensor,
        intrinsics: torch.Tensor | Intrinsics | None = None,
        *,
        num_tokens: int | None = None,
        resolution_level: int = 9,
        apply_mask: bool = True,
        use_bf16: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Convenience inference like the official ``infer`` (float32 results).

        image (3, H, W) or (B, 3, H, W) in [0, 1]; depth (H, W), (B, H, W) or (B, 1, H, W).
        ``intrinsics``: a ``core.camera.Intrinsics`` (pixel units; rescaled if its size differs
        from the image) or a tensor (3, 3) / (B, 3, 3) *normalised* like the official one
        (fx/W, cx/W, fy/H, cy/H). bf16 autocast on CUDA when ``use_bf16``.
        Returns ``depth`` (NaN where rejected if ``apply_mask``), ``confidence`` and ``mask``
        (confidence > 0.5) when the model has a mask head, ``points`` (..., H, W, 3) with
        intrinsics.
        """
        unbatched = image.dim() == 3
        if unbatched:
            image, depth = image[None], depth[None]
        image = image.to(self.device, self.dtype)
        depth = depth.to(self.device, self.dtype)
        batch, _, height, width = image.shape
        if num_tokens is None:
            num_tokens = num_tokens_for_level(self.num_tokens_range, resolution_level)
        amp = use_bf16 and self.device.type == "cuda" and self.dtype != torch.bfloat16
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
            out = self(image, depth, num_tokens)

        pred = out["depth"].float()
        result: dict[str, torch.Tensor] = {}
        mask = None
        if "confidence" in out:
            result["confidence"] = out["confidence"].float()
            mask = result["confidence"] > 0.5
            result["mask"] = mask
        if apply_mask and mask is not None:
            pred = torch.where(mask, pred, torch.nan)
        result["depth"] = pred
        if intrinsics is not None:
            K = _pixel_intrinsics(intrinsics, batch, height, width, pred.device)
            result["points"] = depth_to_points(pred, K)
        if unbatched:
            result = {k: v[0] for k, v in result.items()}
        return result


def _pixel_intrinsics(
    intrinsics: torch.Tensor | Intrinsics, batch: int, height: int, width: int, device: torch.device
) -> torch.Tensor:
    """(B, 3, 3) float32 pixel-unit K for an image of height x width."""
    if not isinstance(intrinsics, Intrinsics):
        K = torch.as_tensor(intrinsics).to(device, torch.float32)
        K = (K.expand(batch, 3, 3) if K.dim() == 2 else K).clone()  # never scale the caller's
        K[:, 0] *= width  # rows 0 and 1 hold (fx, 0, cx) and (0, fy, cy); row 2 is (0, 0, 1)
        K[:, 1] *= height
        return K
    if (intrinsics.width, intrinsics.height) != (width, height):
        intrinsics = intrinsics.scaled(width, height)
    K = torch.as_tensor(intrinsics.K, dtype=torch.float32, device=device)
    return K.expand(batch, 3, 3)


# ---------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LingBotConfig:
    """A model size; ``model_config()`` gives the official-style dict ``from_config`` takes.

    The decoder follows MoGe-2's layout: level 0 is the ViT width, then ``decoder_dims``,
    each level 2x the previous resolution (transposed-conv resamplers, bilinear last).
    """

    backbone: str = "dinov2_vitl14"
    intermediate_layers: int | tuple[int, ...] = (5, 11, 17, 23)  # int n: the last n blocks
    decoder_dims: tuple[int, ...] = (256, 128, 64, 32)
    neck_res_blocks: tuple[int, ...] = (0, 2, 2, 2, 0)
    head_res_blocks: tuple[int, ...] = (0, 1, 1, 1, 0)
    resamplers: tuple[str, ...] = ("conv_transpose", "conv_transpose", "conv_transpose", "bilinear")
    num_tokens_range: tuple[int, int] = (1200, 3600)
    remap_depth_in: str = "log"
    remap_depth_out: str = "exp"
    extra: dict[str, Any] = field(default_factory=dict)  # more top-level model_config entries

    def model_config(self) -> dict[str, Any]:
        dim = VIT_ARCHS[self.backbone].embed_dim
        widths = [dim, *self.decoder_dims]
        n = len(widths)

        def head(res_blocks: Sequence[int]) -> dict[str, Any]:
            return {
                "dim_in": widths,
                "dim_out": [None] * (n - 1) + [1],
                "dim_res_blocks": widths,
                "num_res_blocks": list(res_blocks),
                "res_block_in_norm": "none",
                "res_block_hidden_norm": "none",
                "resamplers": list(self.resamplers),
            }

        config = {
            "encoder": {
                "backbone": self.backbone,
                "intermediate_layers": self.intermediate_layers,
                "dim_out": dim,
                "img_depth_fuse_mode": "cat_token",
                "depth_emb_mode": "conv_1c",
            },
            "neck": {
                "dim_in": [dim + 2] + [2] * (n - 1),
                "dim_out": [None] * n,
                "dim_res_blocks": widths,
                "num_res_blocks": list(self.neck_res_blocks),
                "res_block_in_norm": "none",
                "res_block_hidden_norm": "none",
                "resamplers": list(self.resamplers),
            },
            "depth_head": head(self.head_res_blocks),
            "mask_head": head(self.head_res_blocks),
            "remap_output": "exp",
            "remap_depth_in": self.remap_depth_in,
            "remap_depth_out": self.remap_depth_out,
            "num_tokens_range": list(self.num_tokens_range),
        }
        return _jsonable({**config, **copy.deepcopy(self.extra)})


PRESETS: dict[str, LingBotConfig] = {
    # The paper's model: DINOv2 ViT-L/14, MoGe-2-style decoder.
    "vitl14": LingBotConfig(),
    "vitb14": LingBotConfig(backbone="dinov2_vitb14", intermediate_layers=(2, 5, 8, 11)),
    "vits14": LingBotConfig(
        backbone="dinov2_vits14", intermediate_layers=(2, 5, 8, 11), decoder_dims=(128, 64, 32, 16)
    ),
    # CPU-sized: 96-wide 4-block ViT, narrow decoder, few tokens.
    "tiny": LingBotConfig(
        backbone="dinov2_vitt14",
        intermediate_layers=(0, 1, 2, 3),
        decoder_dims=(48, 32, 16, 16),
        neck_res_blocks=(0, 1, 1, 1, 0),
        head_res_blocks=(0, 1, 1, 1, 0),
        num_tokens_range=(64, 256),
    ),
}


def build_preset(name: str) -> LingBotDepth:
    """A randomly initialised model of a named preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return LingBotDepth.from_config(PRESETS[name].model_config())

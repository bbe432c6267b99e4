"""FocusDepth (arXiv 2605.11756): prompt-focused refinement of Depth Anything V2.

Two branches run on the same input size S (a multiple of 14; 1008 in the paper -> 72 x 72
tokens):

- geometry: ``transformers.DepthAnythingForDepthEstimation`` (Depth Anything V2). Its Dinov2
  backbone returns four feature maps (B, 1 + N, C_g) -- CLS first, then the N patch tokens,
  after the final LayerNorm (``apply_layernorm=True``) and *not* reshaped to images
  (``reshape_hidden_states=False``); the neck's reassemble stage drops the CLS token itself.
- prompt: ``transformers.Sam3Model``. The prompt-conditioned image tokens (B, N, C_p) are the
  DETR encoder's output (see :func:`depth_perception.models.sam3_io.sam3_forward`); the
  auxiliary mask M-hat is SAM3's own mask decoder output for its best query.

Injection point (read off ``DepthAnythingForDepthEstimation.forward``): that method is
``backbone -> outputs.feature_maps -> neck(feature_maps, patch_h, patch_w) -> head(...,
patch_h, patch_w)``. :meth:`FocusDepthModel.depth` calls those three pieces itself and puts
one :class:`MSSA` on each of the four feature maps between the backbone and the neck. No
monkeypatching: with every gate closed (G = 0) the result is bit-identical to DA2's own
``predicted_depth`` (tested).

MSSA (per scale, independent parameters), on the N patch tokens:

    X~p = Xp Wp                  (C_p -> C_g, no bias)
    Z   = [Xg || X~p]            (token-wise concatenation, 2 C_g)
    F   = sum_e softmax(Z Wr)_e * expert_e(Z)      (E = 4, soft routing per token)
    G   = sigmoid(F Wg + b)      (Wg in R^{C_g x 1})
    Y   = G * F + (1 - G) * Xg

Training stages (paper Sec. 3.5) -- :meth:`FocusDepthModel.stage_parameters`:

- stage 1: ``mssa.*`` only.
- stage 2: ``mssa.*`` + the depth decoder (``depth_model.neck.*``, ``depth_model.head.*``) +
  SAM3's prompt-guided transformer (``sam3.detr_encoder.*``, ``sam3.detr_decoder.*``; the
  decoder includes its box head and presence head) + SAM3's segmentation decoder
  (``sam3.mask_decoder.*``).
- always frozen: the depth encoder (``depth_model.backbone.*``), SAM3's image encoder
  (``sam3.vision_encoder.*``: ViT backbone + FPN neck) and its prompt encoders
  (``sam3.text_encoder.*``, ``sam3.text_projection.*``, ``sam3.geometry_encoder.*``), and
  ``sam3.dot_product_scoring.*`` -- the query/prompt scoring head is named by neither stage
  of the paper, and with the mask taken from the arg-max query no mask or depth loss reaches
  it anyway.

Checkpoints: the pretrained parts come from local ``transformers`` directories
(:meth:`FocusDepthModel.from_pretrained_parts`); ours (:func:`save_focusdepth` /
:func:`load_focusdepth`) are a directory with ``model.safetensors`` (the whole model, so tuned
DA2 / SAM3 parts travel with the MSSA weights) and ``config.json`` holding both transformers
configs, the MSSA config and the format version, plus ``tokenizer/`` when the model has one.
Loading is strict: a mismatch raises ``CheckpointMismatchError`` naming the keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from depth_perception.models.blocks.roi_align import install_roi_align
from depth_perception.models.checkpoints import (
    CheckpointReadError,
    _load_safetensors_dir,
    _save_safetensors_dir,
)
from depth_perception.models.sam3_io import (
    Sam3Prompt,
    Sam3Result,
    load_sam3_model,
    load_sam3_tokenizer,
    sam3_forward,
)

if TYPE_CHECKING:
    from transformers import (
        CLIPTokenizer,
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Sam3Config,
        Sam3Model,
    )

FORMAT_NAME = "depth_perception.focusdepth"
FORMAT_VERSION = 1
TOKENIZER_DIR = "tokenizer"
Stage = Literal[1, 2]

# Parameter-name prefixes of the trainable groups (see the module docstring).
MSSA_PREFIXES = ("mssa.",)
DEPTH_DECODER_PREFIXES = ("depth_model.neck.", "depth_model.head.")
PROMPT_TRANSFORMER_PREFIXES = ("sam3.detr_encoder.", "sam3.detr_decoder.")
SEGMENTATION_DECODER_PREFIXES = ("sam3.mask_decoder.",)
STAGE_PREFIXES: dict[int, tuple[str, ...]] = {
    1: MSSA_PREFIXES,
    2: MSSA_PREFIXES
    + DEPTH_DECODER_PREFIXES
    + PROMPT_TRANSFORMER_PREFIXES
    + SEGMENTATION_DECODER_PREFIXES,
}
# Never trained (documentation and a completeness check in the tests).
FROZEN_PREFIXES = (
    "depth_model.backbone.",
    "sam3.vision_encoder.",
    "sam3.text_encoder.",
    "sam3.text_projection.",
    "sam3.geometry_encoder.",
    "sam3.dot_product_scoring.",
)


# ---------------------------------------------------------------------------------------------
# MSSA
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MSSAConfig:
    """Hyper-parameters shared by the four MSSA blocks (the widths come from the branches).

    ``hidden``: the experts' hidden width; None means C_g. The paper only calls the experts
    "small MLPs 2C_g -> C_g"; C_g keeps each expert a 2:1 bottleneck at 3 C_g^2 weights (ViT-S
    C_g = 384: 0.44 M per expert, ~7.5 M for all four blocks; ViT-L, C_g = 1024: ~51 M).
    ``dropout``: inside each expert, after the GELU, so the formulas for F, G and Y hold as
    written. ``gate_bias_init``: the constant the gate bias starts at (0 -> G ~ 0.5, a
    half-and-half mix; the paper prescribes no init, every other weight keeps PyTorch's
    default initialisation).
    """

    experts: int = 4
    hidden: int | None = None
    dropout: float = 0.1
    gate_bias_init: float = 0.0

    def __post_init__(self) -> None:
        if self.experts < 1:
            raise ValueError(f"MSSA needs at least one expert, got {self.experts}")
        if self.hidden is not None and self.hidden < 1:
            raise ValueError(f"MSSA expert hidden width must be positive, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"MSSA dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: MSSAConfig | Mapping[str, Any] | None) -> MSSAConfig:
        """A config, a dict from :meth:`to_dict` (unknown keys raise ValueError), or None."""
        if config is None:
            return cls()
        if isinstance(config, MSSAConfig):
            return config
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown MSSA config key(s): {', '.join(unknown)}")
        return cls(**dict(config))


class MSSA(nn.Module):
    """Mixture-of-experts fusion of SAM3 prompt tokens into one DA2 feature scale.

    ``forward(x_g (B, N_g, C_g), x_p (B, N, C_p))``: the last N tokens of ``x_g`` are the patch
    tokens that correspond one-to-one (row-major) with ``x_p``; the leading N_g - N tokens
    (DA2's CLS) are returned unchanged.
    """

    def __init__(
        self,
        c_g: int,
        c_p: int,
        experts: int = 4,
        hidden: int | None = None,
        dropout: float = 0.1,
        gate_bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.config = MSSAConfig(experts, hidden, dropout, gate_bias_init)
        self.c_g, self.c_p = c_g, c_p
        width = hidden if hidden is not None else c_g
        self.proj = nn.Linear(c_p, c_g, bias=False)  # Wp
        self.router = nn.Linear(2 * c_g, experts)
        self.experts = nn.ModuleList(
            nn.Sequential(
                nn.Linear(2 * c_g, width), nn.GELU(), nn.Dropout(dropout), nn.Linear(width, c_g)
            )
            for _ in range(experts)
        )
        self.gate = nn.Linear(c_g, 1)  # Wg (+ a bias: the only handle on the starting mix)
        nn.init.constant_(self.gate.bias, gate_bias_init)

    @classmethod
    def from_config(cls, c_g: int, c_p: int, config: MSSAConfig) -> MSSA:
        return cls(c_g, c_p, **config.to_dict())

    def mixture(self, x_g: Tensor, x_p: Tensor) -> Tensor:
        """F = MoE([X_g || X_p Wp]) on patch tokens: (B, N, C_g), (B, N, C_p) -> (B, N, C_g)
        (the experts are all evaluated: a dense soft mixture, as the router weights are soft)."""
        z = torch.cat([x_g, self.proj(x_p)], dim=-1)
        weights = self.router(z).softmax(dim=-1)  # (B, N, E)
        outputs = torch.stack([expert(z) for expert in self.experts], dim=-1)  # (B, N, C_g, E)
        return (outputs * weights.unsqueeze(-2)).sum(dim=-1)

    def fuse(self, x_g: Tensor, x_p: Tensor) -> tuple[Tensor, Tensor]:
        """(Y, G) on patch tokens: x_g (B, N, C_g), x_p (B, N, C_p) -> (B, N, C_g), (B, N, 1)."""
        fused = self.mixture(x_g, x_p)
        gate = torch.sigmoid(self.gate(fused))
        return gate * fused + (1.0 - gate) * x_g, gate

    def forward(
        self, x_g: Tensor, x_p: Tensor, return_gate: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Y (B, N_g, C_g), prefix tokens passed through; with ``return_gate`` also G (B, N, 1)."""
        if x_g.ndim != 3 or x_p.ndim != 3:
            raise ValueError(f"MSSA works on (B, N, C) tokens, got {x_g.shape} and {x_p.shape}")
        if x_g.shape[-1] != self.c_g or x_p.shape[-1] != self.c_p:
            raise ValueError(
                f"MSSA built for C_g={self.c_g}, C_p={self.c_p}; got {x_g.shape[-1]} and "
                f"{x_p.shape[-1]} channels"
            )
        prefix = x_g.shape[1] - x_p.shape[1]
        if prefix < 0 or x_g.shape[0] != x_p.shape[0]:
            raise ValueError(
                f"geometry tokens {tuple(x_g.shape)} do not end with one token per prompt token "
                f"{tuple(x_p.shape)}"
            )
        fused, gate = self.fuse(x_g[:, prefix:], x_p.to(x_g.dtype))
        out = torch.cat([x_g[:, :prefix], fused], dim=1) if prefix else fused
        return (out, gate) if return_gate else out


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


@dataclass
class FocusDepthOutput:
    """depth: (B, H, W) relative depth (DA2's disparity-like output) at the input size.
    mask_logits: (B, 1, H, W) SAM3's mask logits of its best query (M-hat), same size.
    score / query_index: (B,) that query's score and index. gates: one (B, N, 1) G per scale."""

    depth: Tensor
    mask_logits: Tensor
    score: Tensor
    query_index: Tensor
    gates: tuple[Tensor, ...]


def _patch_size(value: int | list[int] | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class FocusDepthModel(nn.Module):
    """DA2 + SAM3 + four MSSA blocks. Build from parts, :meth:`from_config`, a preset
    (:func:`build_preset`), :meth:`from_pretrained_parts` or :func:`load_focusdepth`.

    ``tokenizer``: SAM3's CLIP tokenizer, used when :meth:`forward` gets a :class:`Sam3Prompt`
    and no tokenizer of its own (a plain attribute, not saved in the weights).
    """

    def __init__(
        self,
        depth_model: DepthAnythingForDepthEstimation,
        sam3: Sam3Model,
        mssa: MSSAConfig | Mapping[str, Any] | None = None,
        tokenizer: CLIPTokenizer | None = None,
    ) -> None:
        super().__init__()
        backbone_config = depth_model.config.backbone_config
        if backbone_config.reshape_hidden_states:
            raise ValueError(
                "DA2's backbone must return (B, 1 + N, C) tokens (reshape_hidden_states=False): "
                "its neck removes the CLS token itself"
            )
        install_roi_align()  # SAM3's box path without torchvision
        self.depth_model = depth_model
        self.sam3 = sam3
        self.mssa_config = MSSAConfig.from_config(mssa)
        self.tokenizer = tokenizer
        c_g = int(backbone_config.hidden_size)
        c_p = int(sam3.config.detr_encoder_config.hidden_size)
        scales = len(depth_model.config.neck_hidden_sizes)
        self.mssa = nn.ModuleList(
            MSSA.from_config(c_g, c_p, self.mssa_config) for _ in range(scales)
        )

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FocusDepthModel:
        """From ``model_config`` (``{"da2": ..., "sam3": ..., "mssa": ...}``): random weights."""
        from transformers import DepthAnythingForDepthEstimation, Sam3Model

        da2_config, sam3_config = _transformers_configs(config)
        return cls(
            DepthAnythingForDepthEstimation(da2_config).eval(),
            Sam3Model(sam3_config).eval(),
            config.get("mssa"),
        )

    @classmethod
    def from_pretrained_parts(
        cls,
        da2_dir: str | Path,
        sam3_dir: str | Path,
        mssa: MSSAConfig | Mapping[str, Any] | None = None,
        input_size: tuple[int, int] | None = None,
    ) -> FocusDepthModel:
        """DA2 and SAM3 from local ``transformers`` directories (``local_files_only``: no
        network), fresh MSSA; in eval mode. ``input_size`` = (W, H) presets SAM3's RoPE grid.
        The tokenizer is read from ``sam3_dir`` when its files are there."""
        from transformers import DepthAnythingForDepthEstimation

        depth_model = DepthAnythingForDepthEstimation.from_pretrained(
            str(da2_dir), local_files_only=True
        ).eval()
        sam3 = load_sam3_model(sam3_dir, input_size=input_size)
        try:
            tokenizer = load_sam3_tokenizer(sam3_dir)
        except FileNotFoundError:
            tokenizer = None
        return cls(depth_model, sam3, mssa, tokenizer).eval()

    @property
    def model_config(self) -> dict[str, Any]:
        """JSON-able config (``config.json`` of our checkpoints)."""
        return {
            "da2": self.depth_model.config.to_dict(),
            "sam3": self.sam3.config.to_dict(),
            "mssa": self.mssa_config.to_dict(),
        }

    @property
    def patch_size(self) -> tuple[int, int]:
        return _patch_size(self.depth_model.config.patch_size)

    # -- forward ----------------------------------------------------------------------------

    def prompt_branch(
        self,
        pixel_values: Tensor,
        prompt: Sam3Prompt,
        tokenizer: CLIPTokenizer | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> Sam3Result:
        """SAM3 on (B, 3, S, S') with ``prompt`` (box in pixels of ``image_size`` = (W, H))."""
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        if tokenizer is None:
            raise ValueError("a Sam3Prompt needs SAM3's tokenizer: pass tokenizer=...")
        return sam3_forward(self.sam3, pixel_values, prompt, tokenizer, image_size)

    def mssa_reconstruction(
        self, pixel_values: Tensor, prompt_tokens: Tensor, prompt_grid: tuple[int, int]
    ) -> Tensor:
        """(B,) per image, the mean over the scales of the mean squared error between each
        MSSA block's expert mixture F and the DA2 patch tokens X_g it fuses into. Training F
        towards X_g first (``focus.stage: mssa_init``, not the paper's) lets the gates start
        open without the untrained experts replacing half of every DA2 feature with noise."""
        grid = self._check_grid(pixel_values, prompt_tokens, prompt_grid)
        with torch.no_grad():  # DA2's encoder is frozen in every FocusDepth stage
            feature_maps = self.depth_model.backbone(pixel_values).feature_maps
        errors = []
        for tokens, block in zip(feature_maps, self.mssa, strict=True):
            x_g = tokens[:, -grid[0] * grid[1] :]
            mixture = block.mixture(x_g, prompt_tokens.to(x_g.dtype))
            errors.append((mixture.float() - x_g.float()).pow(2).mean(dim=(1, 2)))
        return torch.stack(errors).mean(dim=0)

    def _check_grid(
        self, pixel_values: Tensor, prompt_tokens: Tensor, prompt_grid: tuple[int, int]
    ) -> tuple[int, int]:
        """DA2's patch grid of ``pixel_values``, checked against the prompt tokens'."""
        _, _, height, width = pixel_values.shape
        patch_h, patch_w = self.patch_size
        if height % patch_h or width % patch_w:
            raise ValueError(
                f"DA2 input {height}x{width} is not a multiple of its patch size {patch_h}"
            )
        grid = (height // patch_h, width // patch_w)
        if tuple(prompt_grid) != grid:
            raise ValueError(
                f"DA2 patch grid {grid[0]}x{grid[1]} (input {height}x{width}, patch "
                f"{patch_h}) != SAM3 token grid {prompt_grid[0]}x{prompt_grid[1]}: the tokens "
                "correspond one-to-one only when both branches run at the same input size"
            )
        if prompt_tokens.shape[:2] != (pixel_values.shape[0], grid[0] * grid[1]):
            raise ValueError(
                f"prompt tokens {tuple(prompt_tokens.shape)} do not fit a batch of "
                f"{pixel_values.shape[0]} on a {grid[0]}x{grid[1]} grid"
            )
        return grid

    def depth(
        self, pixel_values: Tensor, prompt_tokens: Tensor, prompt_grid: tuple[int, int]
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """DA2 with MSSA between backbone and neck: ((B, H, W) depth, per-scale gates).

        ``prompt_tokens`` (B, N, C_p) row-major over ``prompt_grid`` = (h, w), which must be
        DA2's patch grid of ``pixel_values``.
        """
        grid = self._check_grid(pixel_values, prompt_tokens, prompt_grid)
        dm = self.depth_model
        feature_maps = dm.backbone(pixel_values).feature_maps  # each (B, 1 + N, C_g)
        fused, gates = [], []
        for tokens, block in zip(feature_maps, self.mssa, strict=True):
            if tokens.shape[1] != 1 + grid[0] * grid[1]:
                raise ValueError(
                    f"DA2 feature map of {tokens.shape[1]} tokens, expected CLS + "
                    f"{grid[0]}x{grid[1]} patches (a backbone with register tokens?)"
                )
            y, gate = block(tokens, prompt_tokens, return_gate=True)
            fused.append(y)
            gates.append(gate)
        hidden = dm.neck(fused, grid[0], grid[1])
        return dm.head(hidden, grid[0], grid[1]), tuple(gates)

    def forward(
        self,
        da2_pixel_values: Tensor,
        sam3_pixel_values: Tensor | None = None,
        prompt: Sam3Prompt | None = None,
        *,
        sam3_result: Sam3Result | None = None,
        tokenizer: CLIPTokenizer | None = None,
        prompt_image_size: tuple[int, int] | None = None,
    ) -> FocusDepthOutput:
        """Either SAM3's inputs (``sam3_pixel_values`` + ``prompt``; the box in pixels of
        ``prompt_image_size`` = (W, H), default the SAM3 input) or a precomputed
        ``sam3_result`` (e.g. cached for stage 1, where SAM3 is frozen)."""
        if (sam3_result is None) == (sam3_pixel_values is None or prompt is None):
            raise ValueError("give either sam3_pixel_values and prompt, or sam3_result")
        if sam3_result is None:
            sam3_result = self.prompt_branch(
                sam3_pixel_values, prompt, tokenizer, prompt_image_size
            )
        depth, gates = self.depth(da2_pixel_values, sam3_result.tokens, sam3_result.grid_hw)
        mask = sam3_result.mask_logits
        if mask.shape[-2:] != depth.shape[-2:]:
            mask = F.interpolate(mask, size=depth.shape[-2:], mode="bilinear", align_corners=False)
        return FocusDepthOutput(
            depth=depth,
            mask_logits=mask,
            score=sam3_result.score,
            query_index=sam3_result.query_index,
            gates=gates,
        )

    # -- training stages --------------------------------------------------------------------

    def stage_parameters(self, stage: Stage) -> list[tuple[str, nn.Parameter]]:
        """The (name, parameter) pairs trained in ``stage`` (1: MSSA; 2: MSSA, depth decoder,
        SAM3 prompt-guided transformer and mask decoder), whatever requires_grad says now."""
        if stage not in STAGE_PREFIXES:
            raise ValueError(f"FocusDepth has training stages 1 and 2, not {stage!r}")
        prefixes = STAGE_PREFIXES[stage]
        return [(n, p) for n, p in self.named_parameters() if n.startswith(prefixes)]

    def freeze_for_stage(self, stage: Stage) -> list[tuple[str, nn.Parameter]]:
        """requires_grad on exactly :meth:`stage_parameters` (returned), off everywhere else.

        Only gradients are switched; train/eval mode stays the caller's choice (frozen parts
        build no autograd graph, as none of their inputs or weights require grad)."""
        trainable = self.stage_parameters(stage)
        names = {n for n, _ in trainable}
        for name, param in self.named_parameters():
            param.requires_grad_(name in names)
        return trainable


def _transformers_configs(config: Mapping[str, Any]) -> tuple[DepthAnythingConfig, Sam3Config]:
    from transformers import DepthAnythingConfig, Sam3Config

    missing = [k for k in ("da2", "sam3") if not isinstance(config.get(k), Mapping)]
    if missing:
        raise KeyError(f"FocusDepth model_config lacks {', '.join(missing)}")
    return (
        DepthAnythingConfig.from_dict(dict(config["da2"])),
        Sam3Config.from_dict(dict(config["sam3"])),
    )


# ---------------------------------------------------------------------------------------------
# Checkpoints (ours)
# ---------------------------------------------------------------------------------------------


def _build(config: Mapping[str, Any], source: Path) -> FocusDepthModel:
    try:
        return FocusDepthModel.from_config(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointReadError(f"{source}: unusable model_config ({exc!r})") from exc


def save_focusdepth(model: FocusDepthModel, directory: str | Path) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (+ ``tokenizer/``) into ``directory``."""
    directory = _save_safetensors_dir(model, directory, FORMAT_NAME, FORMAT_VERSION)
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(str(directory / TOKENIZER_DIR))
    return directory


def load_focusdepth(path: str | Path, device: str | torch.device = "cpu") -> FocusDepthModel:
    """Our checkpoint (its directory, or its ``model.safetensors`` / ``config.json``), strictly:
    a mismatch raises ``CheckpointMismatchError`` naming the keys. Returned in eval mode."""
    model = _load_safetensors_dir(path, FORMAT_NAME, FORMAT_VERSION, _build, "cpu")
    path = Path(path)
    tokenizer_dir = (path if path.is_dir() else path.parent) / TOKENIZER_DIR
    if tokenizer_dir.is_dir():
        model.tokenizer = load_sam3_tokenizer(tokenizer_dir)
    return model.to(device).eval()


# ---------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------

PRESETS = ("tiny",)


def tiny_configs(
    input_size: int | tuple[int, int] = 56, vocab_size: int = 128
) -> tuple[DepthAnythingConfig, Sam3Config]:
    """CPU-test sizes: DA2 with a 4-layer, 32-wide Dinov2 (patch 14, all four layers tapped)
    and a 32-wide SAM3 (the config of ``test/test_sam3_compat.py``), SAM3's RoPE grid set to
    ``input_size`` (S, or (W, H)); ``vocab_size`` must cover the tokenizer used with it."""
    from transformers import DepthAnythingConfig, Sam3Config

    width, height = (input_size, input_size) if isinstance(input_size, int) else input_size
    if width % 14 or height % 14:
        raise ValueError(f"input size {width}x{height} is not a multiple of 14")
    hidden = 32
    da2 = DepthAnythingConfig(
        backbone_config={
            "model_type": "dinov2",
            "hidden_size": hidden,
            "num_hidden_layers": 4,
            "num_attention_heads": 2,
            "mlp_ratio": 2,
            "image_size": max(width, height),
            "patch_size": 14,
            "out_indices": [1, 2, 3, 4],
            "reshape_hidden_states": False,
            "apply_layernorm": True,
        },
        patch_size=14,
        reassemble_hidden_size=hidden,
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        head_hidden_size=8,
    )
    small = {"hidden_size": hidden, "num_attention_heads": 2, "intermediate_size": 64}
    grid_w, grid_h = width // 14, height // 14
    sam3 = Sam3Config(
        vision_config={
            "backbone_config": {
                "model_type": "sam3_vit_model",
                **small,
                "num_hidden_layers": 2,
                "image_size": [width, height],
                "patch_size": 14,
                "window_size": 2,
                "global_attn_indexes": [1],
                "pretrain_image_size": 28,
            },
            "fpn_hidden_size": hidden,
            "backbone_feature_sizes": [
                [4 * grid_h, 4 * grid_w],
                [2 * grid_h, 2 * grid_w],
                [grid_h, grid_w],
            ],
        },
        text_config={
            **small,
            "vocab_size": vocab_size,
            "projection_dim": hidden,
            "num_hidden_layers": 1,
            "max_position_embeddings": 32,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        geometry_encoder_config={**small, "num_layers": 1},
        detr_encoder_config={**small, "num_layers": 1},
        detr_decoder_config={**small, "num_layers": 1, "num_queries": 5},
        mask_decoder_config={"hidden_size": hidden, "num_attention_heads": 2},
    )
    return da2, sam3


def build_preset(
    name: str = "tiny",
    input_size: int | tuple[int, int] = 56,
    vocab_size: int = 128,
    mssa: MSSAConfig | Mapping[str, Any] | None = None,
    tokenizer: CLIPTokenizer | None = None,
) -> FocusDepthModel:
    """A preset with random weights, in eval mode (the only one: ``tiny``, for tests and CPU
    training; real sizes come from :meth:`FocusDepthModel.from_pretrained_parts`)."""
    from transformers import DepthAnythingForDepthEstimation, Sam3Model

    if name not in PRESETS:
        raise ValueError(f"unknown FocusDepth preset {name!r} (known: {', '.join(PRESETS)})")
    da2, sam3 = tiny_configs(input_size, vocab_size)
    model = FocusDepthModel(DepthAnythingForDepthEstimation(da2), Sam3Model(sam3), mssa, tokenizer)
    return model.eval()

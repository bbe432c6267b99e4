"""LingBot-Depth as an engine: numpy RGB-D in, completed metric depth + confidence out.

Pre/post-processing follows the official ``MDMModel.infer``: RGB in [0, 1] (the model normalises
with ImageNet statistics and resizes to its token grid itself), raw depth in metres with holes,
a token budget of 1200-3600 tokens at the image's aspect ratio, output upsampled to the input
size. fp32 on the CPU, bf16 autocast on CUDA, ``torch.inference_mode``, optional torch.compile.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from depth_perception.core.camera import Intrinsics
from depth_perception.core.fusion import FUSION_MODES, fuse_measured, fused_confidence
from depth_perception.engines.base import CompletionEngine, CompletionResult
from depth_perception.engines.device import resolve_device, use_bf16
from depth_perception.models.checkpoints import load_model, weights_digest
from depth_perception.models.lingbot import PRESETS

log = logging.getLogger(__name__)


@dataclass
class LingBotEngineConfig:
    checkpoint: str  # our model dir, an official model.pt (or a dir holding it), or a preset name
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_tokens: int = 2400  # ViT token budget; clamped to the model's num_tokens_range
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    compile: bool = False  # torch.compile the model (first frame is slow)
    max_input_side: int = 0  # > 0: downscale larger inputs first (output at the input size)
    confidence_threshold: float = 0.0  # output NaN where the published confidence is lower
    # Confidence in a hole falls to 1/e at this fraction of the image's longer side away from
    # the nearest measurement (core.fusion.fused_confidence).
    hole_confidence_scale: float = 0.05
    # How the model's depth and the sensor's are combined (core.fusion.FUSION_MODES): "none"
    # the model everywhere, "keep" the sensor where it measured, "align" as keep with the
    # model's depth in the holes rescaled to the measurements around them.
    fuse_measured: str = "align"

    def __post_init__(self) -> None:
        if self.fuse_measured not in FUSION_MODES:
            raise ValueError(
                f"fuse_measured {self.fuse_measured!r}: choose from {list(FUSION_MODES)}"
            )


class LingBotEngine(CompletionEngine):
    """Completes holey sensor depth with a LingBot-Depth model."""

    def __init__(self, cfg: LingBotEngineConfig) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        if cfg.checkpoint in PRESETS and not Path(cfg.checkpoint).exists():
            log.warning("LingBot-Depth preset %r has RANDOM weights (tests only)", cfg.checkpoint)
        self.model = load_model(cfg.checkpoint).to(self.device).eval()
        name = Path(cfg.checkpoint).name or cfg.checkpoint
        # @<weights hash>: which bytes were loaded (a garbled weights file loads silently).
        digest = weights_digest(cfg.checkpoint)
        self.model_id = f"lingbot-depth/{name}:{self.model.describe()}@{digest}"
        if cfg.fuse_measured != "none":  # status readers should see what was published
            self.model_id += f"+{cfg.fuse_measured}"
        lo, hi = self.model.num_tokens_range
        self.num_tokens = int(min(max(cfg.num_tokens, lo), hi))
        self.autocast_dtype = torch.bfloat16 if use_bf16(cfg.precision, self.device) else None
        self._forward = torch.compile(self.model) if cfg.compile else self.model

    def _to_tensors(self, rgb: np.ndarray, depth: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device)
        image = image.permute(2, 0, 1)[None].float().div_(255.0)
        depth_t = torch.from_numpy(np.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0))
        return image, depth_t.to(self.device)[None, None].float()

    @torch.inference_mode()
    def complete(
        self, rgb: np.ndarray, depth: np.ndarray, intrinsics: Intrinsics
    ) -> CompletionResult:
        height, width = depth.shape
        work_rgb, work_depth = rgb, depth
        side = self.cfg.max_input_side
        if side > 0 and max(height, width) > side:
            # Work at a smaller size (the ViT sees at most ~3600 tokens anyway); the depth is
            # resized with nearest so no invented depth values reach the model.
            scale = side / max(height, width)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            work_rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            work_depth = cv2.resize(depth, size, interpolation=cv2.INTER_NEAREST)
        image, depth_t = self._to_tensors(work_rgb, work_depth)
        with torch.autocast(
            self.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        ):
            out = self._forward(image, depth_t, num_tokens=self.num_tokens)
        pred = out["depth"][0].float()
        conf = out["confidence"][0].float() if out.get("confidence") is not None else None
        if pred.shape != (height, width):
            pred = _resize(pred, height, width)
            conf = _resize(conf, height, width) if conf is not None else None
        pred_np = pred.cpu().numpy().astype(np.float32)
        conf_np = conf.cpu().numpy().astype(np.float32) if conf is not None else None
        pred_np[~np.isfinite(pred_np) | (pred_np <= 0)] = np.nan
        mode = self.cfg.fuse_measured
        pred_np = fuse_measured(pred_np, depth, mode)
        conf_np = fused_confidence(conf_np, depth, mode, self.cfg.hole_confidence_scale)
        conf_np[~np.isfinite(pred_np)] = 0.0
        if self.cfg.confidence_threshold > 0:
            pred_np[conf_np < self.cfg.confidence_threshold] = np.nan
        return CompletionResult(depth=pred_np, confidence=conf_np)


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return torch.nn.functional.interpolate(
        x[None, None], (height, width), mode="bilinear", align_corners=False
    )[0, 0]

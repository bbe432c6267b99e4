"""MetricAnything network: teacher (prompted) and student (prompt-free) in one class.

``MetricAnythingDepth(config)`` = ``encoder`` (one shared DINOv3 ViT, DepthPro tiling) +
``decoder`` (multi-resolution convs, skip order ``config.encodings_forward_ids``) + ``head``,
and for a teacher ``prompt_branch`` (zero-initialised prompt injections into every decoder
fusion stage). With a student config its state dict has exactly the official student's keys
(``models/student_depthmap/depth_model.py``: ``encoder.*``, ``decoder.*``, ``head.*``).

Units. The network predicts *canonical* inverse depth c; the official ``infer`` turns it into
inverse depth with the focal length: ``1/depth = c * W / f_px`` (W and f_px of the same image:
the caller's image, or the network input after the square resize, the ratio is the same).
There is no default focal length here: the official one (1,000 px) silently gives wrong metric
depth for any other camera, so every call takes ``f_px`` (camera_info's fx).

Prompt. ``prompt`` is (B, 3, H, W): [PDSA, GMDR, mask] with PDSA and GMDR as metric disparity
(1/m) and the mask in {0, 1} (``core/prompts.py`` builds it). The teacher converts the two
disparity channels to the canonical units of its output with the same ``f_px``
(``d * f_px / W``), so prompt and prediction live in one space whatever the camera. A teacher
given no prompt sees an all-zero map (no prompt points); a student refuses a prompt.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from depth_perception.models.metric_anything.config import PROMPT_CHANNELS, MetricAnythingConfig
from depth_perception.models.metric_anything.decoder import MultiresConvDecoder
from depth_perception.models.metric_anything.encoder import MetricAnythingEncoder
from depth_perception.models.metric_anything.head import PromptBranch, build_depth_head

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The official ``infer`` clamps inverse depth to [1e-3, 1e3] 1/m: depth within 1 mm .. 1 km.
MIN_INVERSE_DEPTH = 1e-3
MAX_INVERSE_DEPTH = 1e3

FocalLength = float | int | Sequence[float] | torch.Tensor


def normalize_image(image: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] (..., 3, H, W) -> ImageNet-normalised, as the official transform."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=image.dtype, device=image.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=image.dtype, device=image.device)[:, None, None]
    return (image - mean) / std


def width_over_focal(
    f_px: FocalLength | None, width: int, batch: int, device: torch.device
) -> torch.Tensor:
    """(B, 1, 1, 1) float32 ``width / f_px``: canonical -> metric inverse depth factor."""
    if f_px is None:
        raise TypeError(
            "f_px is required: the camera's focal length in pixels (camera_info fx) for the "
            "image given; there is no default focal length"
        )
    f = torch.as_tensor(f_px, dtype=torch.float32, device=device).reshape(-1)
    if f.numel() == 1:
        f = f.expand(batch)
    if f.numel() != batch:
        raise ValueError(f"f_px has {f.numel()} values for a batch of {batch}")
    if not bool(torch.isfinite(f).all()) or bool((f <= 0).any()):
        raise ValueError(f"f_px must be finite and positive, got {f.tolist()}")
    return (width / f).reshape(batch, 1, 1, 1)


def canonical_prompt(prompt: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Disparity channels (0: PDSA, 1: GMDR) divided by ``W / f_px``; the mask unchanged."""
    scale = scale.to(prompt.dtype)
    return torch.cat([prompt[:, :2] / scale, prompt[:, 2:]], dim=1)


def metric_from_canonical(
    canonical: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inverse depth = c * W / f_px, depth = 1 / clamp(inverse depth, 1e-3, 1e3))."""
    inverse = canonical * scale.to(canonical.dtype)
    return inverse, 1.0 / inverse.clamp(MIN_INVERSE_DEPTH, MAX_INVERSE_DEPTH)


class MetricAnythingDepth(nn.Module):
    """The MetricAnything depth network (teacher or student, per ``config.prompt_channels``)."""

    def __init__(self, config: MetricAnythingConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = MetricAnythingEncoder(config)
        self.decoder = MultiresConvDecoder(
            config.decoder_in_dims, config.decoder_features, config.encodings_forward_ids
        )
        self.head = build_depth_head(config.decoder_features, config.last_dims)
        self.prompt_branch = (
            PromptBranch(
                config.prompt_channels,
                config.prompt_dims,
                config.prompt_res_blocks,
                config.decoder_features,
            )
            if config.is_teacher
            else None
        )

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: MetricAnythingConfig | Mapping[str, Any]) -> MetricAnythingDepth:
        if not isinstance(config, MetricAnythingConfig):
            config = MetricAnythingConfig.from_dict(copy.deepcopy(dict(config)))
        return cls(config)

    @property
    def model_config(self) -> dict[str, Any]:
        """JSON-able config (``config.json`` of our checkpoints)."""
        return self.config.to_dict()

    @property
    def img_size(self) -> int:
        return self.config.img_size

    @property
    def is_teacher(self) -> bool:
        return self.prompt_branch is not None

    @property
    def device(self) -> torch.device:
        return self.head[0].weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.head[0].weight.dtype

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``backbone`` (the ViT), ``prompt`` (prompt branch), ``head`` (the rest: encoder
        projections, decoder, depth head) -- the groups the paper gives learning rates."""
        backbone = list(self.encoder.patch_encoder.parameters())
        prompt = list(self.prompt_branch.parameters()) if self.prompt_branch is not None else []
        taken = {id(p) for p in backbone + prompt}
        head = [p for p in self.parameters() if id(p) not in taken]
        return {"backbone": backbone, "prompt": prompt, "head": head}

    # -- forward -----------------------------------------------------------------------------

    def _check_prompt(self, prompt: torch.Tensor | None, image: torch.Tensor) -> None:
        if prompt is None:
            return
        if not self.is_teacher:
            raise ValueError("this is a prompt-free (student) model: it takes no prompt")
        batch, _, height, width = image.shape
        if prompt.shape != (batch, PROMPT_CHANNELS, height, width):
            raise ValueError(
                f"prompt {tuple(prompt.shape)} != {(batch, PROMPT_CHANNELS, height, width)} "
                "([PDSA, GMDR, mask] at the image's size)"
            )
        if not bool(torch.isfinite(prompt).all()):
            raise ValueError("prompt has NaN / inf: use 0 with mask 0 where there is no value")

    def predict_canonical(
        self, image: torch.Tensor, prompt: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The raw network (the official ``forward``): image (B, 3, S, S) normalised, prompt
        (B, 3, S, S) already in canonical units or None -> canonical inverse depth (B, 1, S, S)."""
        self._check_prompt(prompt, image)
        encodings = self.encoder(image)
        prompt_features = None
        if self.prompt_branch is not None:
            if prompt is None:
                prompt = image.new_zeros(image.shape[0], PROMPT_CHANNELS, *image.shape[-2:])
            ids = self.config.encodings_forward_ids
            sizes = [encodings[level].shape[-2:] for level in ids]
            prompt_features = self.prompt_branch(prompt.to(image.dtype), sizes)
        features, _ = self.decoder(encodings, prompt_features)
        return self.head(features)

    def forward(
        self,
        image: torch.Tensor,
        f_px: FocalLength,
        prompt: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """At the network resolution S (``img_size``).

        image (B, 3, S, S) ImageNet-normalised; ``f_px`` (B,) or a scalar: the focal length in
        pixels *of this S x S image* (fx * S / W for a W-wide camera image); prompt (B, 3, S, S)
        [PDSA, GMDR (1/m), mask] or None. Returns (B, 1, S, S) tensors ``canonical_inverse_depth``,
        ``inverse_depth`` (1/m, unclamped) and ``depth`` (m, inverse depth clamped to
        [1e-3, 1e3] first, as the official ``infer``).
        """
        scale = width_over_focal(f_px, image.shape[-1], image.shape[0], image.device)
        self._check_prompt(prompt, image)
        if prompt is not None:
            prompt = canonical_prompt(prompt, scale)
        canonical = self.predict_canonical(image, prompt)
        inverse, depth = metric_from_canonical(canonical, scale)
        return {"canonical_inverse_depth": canonical, "inverse_depth": inverse, "depth": depth}

    @torch.inference_mode()
    def infer(
        self,
        image: torch.Tensor,
        f_px: FocalLength,
        prompt: torch.Tensor | None = None,
        *,
        interpolation_mode: str = "bilinear",
        use_bf16: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Any image size, as the official ``infer``.

        image (3, H, W) or (B, 3, H, W) RGB in [0, 1]; ``f_px``: fx in pixels of this image;
        prompt (B, 3, H, W) or (3, H, W) or None. ImageNet normalisation, then a bilinear
        resize to S x S (aspect ratio not kept, as the official), canonical inverse depth times
        ``W / f_px``, resized back, depth = 1 / clamp(inverse depth, 1e-3, 1e3). bf16 autocast
        on CUDA with ``use_bf16``. Returns float32 ``depth`` and ``inverse_depth``, (B, H, W)
        (or (H, W) for an unbatched image).
        """
        unbatched = image.dim() == 3
        if unbatched:
            image = image[None]
            prompt = prompt[None] if prompt is not None else None
        image = image.to(self.device, self.dtype)
        batch, _, height, width = image.shape
        size = (self.img_size, self.img_size)
        x = normalize_image(image)
        resize = (height, width) != size
        if resize:
            x = F.interpolate(x, size=size, mode=interpolation_mode, align_corners=False)
        scale = width_over_focal(f_px, width, batch, image.device)
        if prompt is not None:
            prompt = prompt.to(self.device, self.dtype)
            self._check_prompt(prompt, image)
            if resize:
                prompt = F.interpolate(
                    prompt, size=size, mode=interpolation_mode, align_corners=False
                )
            prompt = canonical_prompt(prompt, scale)
        amp = use_bf16 and self.device.type == "cuda" and self.dtype != torch.bfloat16
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
            canonical = self.predict_canonical(x, prompt)
        inverse = canonical.float() * scale
        if resize:
            inverse = F.interpolate(
                inverse, size=(height, width), mode=interpolation_mode, align_corners=False
            )
        depth = 1.0 / inverse.clamp(MIN_INVERSE_DEPTH, MAX_INVERSE_DEPTH)
        result = {"depth": depth[:, 0], "inverse_depth": inverse[:, 0]}
        return {k: v[0] for k, v in result.items()} if unbatched else result

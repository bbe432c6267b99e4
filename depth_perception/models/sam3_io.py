"""SAM3 prompt branch I/O for FocusDepth: preprocessing, loading and one prompted forward pass.

Why this module exists: the official SAM3 and Depth Anything V2 image processors (and SAM3's box
pooling) need torchvision, which cannot be installed next to the CPU torch build here. So the
pixels are prepared with plain torch, the CLIP tokenizer is read from the model directory's own
files (no network), and the box path runs on :mod:`depth_perception.models.blocks.roi_align`.

Sizes: SAM3 takes any input whose height and width are multiples of its patch size (14 for
``facebook/sam3``); the paper uses S = 1008 (72 x 72 tokens). The ViT tiles its position
embeddings, windowed attention pads to whole windows, and the global-attention layers build
their RoPE grid from ``config.image_size`` given as ``[W, H]`` -- :func:`set_sam3_input_size`
rebuilds that grid, and :func:`sam3_forward` calls it for every new input size, so square and
non-square inputs both work. The DETR encoder runs on the stride-patch FPN level: N = (H / 14) *
(W / 14) tokens of width ``detr_encoder_config.hidden_size`` (256).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from depth_perception.models.blocks.roi_align import install_roi_align

if TYPE_CHECKING:
    from transformers import CLIPTokenizer, Sam3Config, Sam3Model

SAM3_MEAN = (0.5, 0.5, 0.5)  # Sam3ImageProcessor: IMAGENET_STANDARD_MEAN / STD
SAM3_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # DPT / Depth Anything V2 image processor
IMAGENET_STD = (0.229, 0.224, 0.225)
BOX_ONLY_TEXT = "visual"  # what Sam3Processor puts in the text slot for a box-only prompt
Resample = Literal["bilinear", "bicubic"]


def _pixel_values(
    rgb: np.ndarray,
    size: tuple[int, int],
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    resample: Resample,
) -> Tensor:
    """(H0, W0, 3) uint8 -> (1, 3, H, W) float32 normalised, ``size`` = (W, H).

    Resizes like the torchvision backend of the official processors (antialiased, on uint8, so
    the result is rounded back to whole grey levels) before rescaling by 1/255 and normalising.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    width, height = size
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
    if image.shape[-2:] != (height, width):
        image = F.interpolate(
            image, size=(height, width), mode=resample, align_corners=False, antialias=True
        )
        image = image.round().clamp(0, 255)
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)
    return (image / 255.0 - mean_t) / std_t


def sam3_pixel_values(
    rgb: np.ndarray, size: tuple[int, int], resample: Resample = "bilinear"
) -> Tensor:
    """SAM3 input: resize to ``size`` = (W, H) (bilinear like Sam3ImageProcessor), mean=std=0.5."""
    return _pixel_values(rgb, size, SAM3_MEAN, SAM3_STD, resample)


def da2_pixel_values(
    rgb: np.ndarray, size: tuple[int, int], resample: Resample = "bicubic"
) -> Tensor:
    """Depth Anything V2 input: resize to ``size`` = (W, H) (bicubic, as DPT), ImageNet mean/std."""
    return _pixel_values(rgb, size, IMAGENET_MEAN, IMAGENET_STD, resample)


def load_sam3_tokenizer(model_dir: str | Path) -> CLIPTokenizer:
    """The CLIP tokenizer from ``model_dir`` (tokenizer.json, or vocab.json + merges.txt)."""
    from transformers import CLIPTokenizer

    model_dir = Path(model_dir)
    has_json = (model_dir / "tokenizer.json").is_file()
    has_bpe = (model_dir / "vocab.json").is_file() and (model_dir / "merges.txt").is_file()
    if not (has_json or has_bpe):
        raise FileNotFoundError(
            f"{model_dir}: no tokenizer.json or vocab.json + merges.txt for the SAM3 CLIP tokenizer"
        )
    return CLIPTokenizer.from_pretrained(str(model_dir), local_files_only=True)


def _sam3_config(model_dir: Path) -> Sam3Config:
    """Sam3Config from a ``sam3`` config.json or the detector part of a ``sam3_video`` one."""
    from transformers import Sam3Config

    raw = json.loads((model_dir / "config.json").read_text())
    if isinstance(raw.get("detector_config"), dict):  # facebook/sam3 ships the video config
        return Sam3Config(**{k: v for k, v in raw["detector_config"].items() if k != "model_type"})
    return Sam3Config.from_pretrained(str(model_dir), local_files_only=True)


def load_sam3_model(
    model_dir: str | Path,
    input_size: tuple[int, int] | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Sam3Model:
    """``Sam3Model`` from a local directory, in eval mode, with the roi_align fallback installed.

    ``input_size`` = (W, H) sets the RoPE grid up front (otherwise the first forward does it).
    Tracker weights of a ``sam3_video`` checkpoint are ignored by ``Sam3Model`` itself.
    """
    from transformers import Sam3Model

    install_roi_align()
    model_dir = Path(model_dir)
    config = _sam3_config(model_dir)
    if input_size is not None:
        config.image_size = [int(input_size[0]), int(input_size[1])]
    model = Sam3Model.from_pretrained(
        str(model_dir), config=config, local_files_only=True, dtype=dtype
    )
    return model.to(device).eval()


def set_sam3_input_size(model: Sam3Model, size: tuple[int, int]) -> None:
    """Configure the ViT's global-attention RoPE grid for inputs of ``size`` = (W, H).

    Those layers precompute their position ids from ``config.image_size`` (read as [W, H]) at
    construction; a different input size would not broadcast (or, transposed, be silently
    wrong). Windowed layers use the window grid and need nothing. No-op when already set.
    """
    width, height = int(size[0]), int(size[1])
    backbone = model.vision_encoder.backbone
    patch = backbone.config.patch_size
    patch_w, patch_h = (patch, patch) if isinstance(patch, int) else (patch[1], patch[0])
    if width % patch_w or height % patch_h:
        raise ValueError(f"SAM3 input {width}x{height} is not a multiple of the patch size {patch}")
    current = backbone.config.image_size
    current = [current, current] if isinstance(current, int) else list(current)
    if current == [width, height]:
        return
    model.config.image_size = [width, height]
    backbone.config.image_size = [width, height]
    for layer in backbone.layers:
        if layer.window_size == 0:
            ids = layer.precompute_positions(layer.config, 0)
            layer.position_ids = ids.to(layer.position_ids.device, layer.position_ids.dtype)


@dataclass(frozen=True)
class Sam3Prompt:
    """A target prompt: a pixel box (x, y, w, h) and/or a text phrase.

    SAM3 always conditions on text; a box-only prompt uses the phrase "visual", as the official
    processor does. The box is in the pixels of the image it was drawn on (``image_size``).
    """

    box_xywh: tuple[float, float, float, float] | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        if self.box_xywh is None and not self.text:
            raise ValueError("a SAM3 prompt needs a box, a text, or both")
        if self.box_xywh is not None and (self.box_xywh[2] <= 0 or self.box_xywh[3] <= 0):
            raise ValueError(f"box width and height must be positive: {self.box_xywh}")

    @property
    def sam3_text(self) -> str:
        return self.text if self.text else BOX_ONLY_TEXT

    def box_cxcywh(self, image_size: tuple[int, int]) -> tuple[float, float, float, float]:
        """The box as ``Sam3Model`` wants it: (cx, cy, w, h) normalised by ``image_size`` (W, H)."""
        if self.box_xywh is None:
            raise ValueError("prompt has no box")
        x, y, w, h = (float(v) for v in self.box_xywh)
        width, height = image_size
        return ((x + w / 2) / width, (y + h / 2) / height, w / width, h / height)


@dataclass
class Sam3Result:
    """What FocusDepth takes from SAM3 for one batch.

    tokens: (B, N, C_p) prompt-conditioned image tokens, the DETR encoder's last hidden state,
        row-major over ``grid_hw`` (N = grid_h * grid_w).
    mask_logits: (B, 1, H, W) mask logits of the best query, bilinearly resized to the input.
    score: (B,) sigmoid(query logit) * sigmoid(presence logit) of that query.
    query_index: (B,) which of the DETR queries was taken.
    """

    tokens: Tensor
    grid_hw: tuple[int, int]
    mask_logits: Tensor
    score: Tensor
    query_index: Tensor


def sam3_forward(
    model: Sam3Model,
    pixel_values: Tensor,
    prompt: Sam3Prompt,
    tokenizer: CLIPTokenizer,
    image_size: tuple[int, int] | None = None,
) -> Sam3Result:
    """Run ``Sam3Model`` once with ``prompt`` on every image of ``pixel_values`` (B, 3, H, W).

    ``image_size`` = (W, H) of the image the prompt box refers to (default: the input itself);
    boxes are normalised, so the original camera frame can be given. The model's RoPE grid is
    set to the input size first (see :func:`set_sam3_input_size`). Gradients are not disabled
    here: wrap the call in ``torch.no_grad()`` for inference.
    """
    install_roi_align()
    batch, _, height, width = pixel_values.shape
    set_sam3_input_size(model, (width, height))
    param = next(model.parameters())
    pixel_values = pixel_values.to(param.device, param.dtype)

    text_len = model.config.text_config.max_position_embeddings  # the processor pads to 32
    text = tokenizer(
        [prompt.sam3_text] * batch,
        padding="max_length",
        max_length=text_len,
        truncation=True,
        return_tensors="pt",
    )
    inputs: dict[str, Tensor] = {
        "input_ids": text["input_ids"].to(param.device),
        "attention_mask": text["attention_mask"].to(param.device),
    }
    if prompt.box_xywh is not None:
        box = prompt.box_cxcywh(image_size or (width, height))
        inputs["input_boxes"] = torch.tensor(
            [[box]] * batch, dtype=param.dtype, device=param.device
        )
        inputs["input_boxes_labels"] = torch.ones(batch, 1, dtype=torch.long, device=param.device)

    captured: dict[str, object] = {}
    hook = model.detr_encoder.register_forward_hook(
        lambda _module, _args, output: captured.__setitem__("encoder", output)
    )
    try:
        outputs = model(pixel_values=pixel_values, **inputs)
    finally:
        hook.remove()
    encoder = captured["encoder"]
    grid_h, grid_w = (int(v) for v in encoder.spatial_shapes[0])

    scores = outputs.pred_logits.sigmoid() * outputs.presence_logits.sigmoid()  # (B, Q)
    best = scores.argmax(dim=1)
    rows = torch.arange(batch, device=best.device)
    masks = outputs.pred_masks[rows, best][:, None]  # (B, 1, h, w) at 4x the token grid
    masks = F.interpolate(masks, size=(height, width), mode="bilinear", align_corners=False)
    return Sam3Result(
        tokens=encoder.last_hidden_state,
        grid_hw=(grid_h, grid_w),
        mask_logits=masks,
        score=scores[rows, best],
        query_index=best,
    )

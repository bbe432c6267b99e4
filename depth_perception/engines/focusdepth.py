"""FocusDepth as an engine: colour + a metric reference depth + target prompts -> per-target
metric depth, mask, cloud and geometry, and one refined depth image.

Per frame (:meth:`FocusDepthEngine.run`), for each target on its own (the method is
single-target: one forward per target):

1. the prompt (:func:`target_prompt`): the target's box (clipped to the image) and/or its text;
   a box entirely outside the image, a zero-area box (any box with width or height 0 except
   the all-zero "no box" of ``TargetPrompt``) or an empty prompt (no box, no text) is that
   target's error, never an exception;
2. the network on the colour image resized to S x S (``input_size``; DA2's bicubic /
   ImageNet and SAM3's bilinear / 0.5 preprocessing of :mod:`depth_perception.models.sam3_io`),
   the box given in the camera image's pixels: FocusDepth's relative (disparity-like) depth and
   SAM3's mask logits of its best query, both resized back bilinearly; mask = logits >
   ``mask_threshold``. SAM3's score below ``min_score`` (a prompt naming something that is not
   there) or an empty mask is that target's error;
3. metric depth: :func:`depth_perception.core.target_geometry.metric_from_relative` fits
   ``1 / depth = a rel + b`` robustly to the reference depth (the frame's ``depth``: the
   sensor's valid pixels, or a completed depth from LingBot / the MetricAnything teacher),
   pixels on the target weighted ``fit_weights[0]``, the rest of its boundary band (radius
   ``band_radius``) ``fit_weights[1]``, the background ``fit_weights[2]``; too few reference
   pixels (``min_reference_pixels``) or a failed fit is that target's error;
4. the target cloud (the mask's pixels with valid fitted depth, back-projected into the
   camera's optical frame) and its geometry (centroid, oriented box, point count).

The result's ``depth`` composites the refinements: **outside every target mask the reference
depth as given (NaN where it has none); inside the masks of the processed targets the
metric-fitted FocusDepth depth of that target** -- where masks overlap, the nearer depth wins
(what the camera sees); a mask pixel whose fitted depth is not valid is NaN, never the
reference (a target's surface comes from one model and one fit). Targets with an error leave
the reference untouched. ``targets`` holds one :class:`TargetResult` per target, in order.

``checkpoint``: our FocusDepth directory (:func:`depth_perception.models.focusdepth.
save_focusdepth`: config.json + model.safetensors + tokenizer/), empty = the model shipped in
models/focusdepth_small (absent: one line naming the path), or the preset ``tiny`` (random
weights with a character-level tokenizer: tests only, with a warning).
"""

from __future__ import annotations

import contextlib
import logging
import string
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from depth_perception.core.camera import Intrinsics
from depth_perception.core.target_geometry import (
    BOX_METHODS,
    DEFAULT_THRESHOLD,
    DEFAULT_WEIGHTS,
    metric_from_relative,
    target_cloud,
    target_geometry,
)
from depth_perception.engines.base import (
    CompletionResult,
    Engine,
    EngineInputs,
    FrameInputs,
    TargetResult,
)
from depth_perception.engines.device import resolve_device, use_bf16
from depth_perception.io.frames import Target
from depth_perception.models.checkpoints import weights_digest
from depth_perception.models.focusdepth import (
    PRESETS,
    FocusDepthModel,
    build_preset,
    load_focusdepth,
)
from depth_perception.models.sam3_io import (
    Sam3Prompt,
    da2_pixel_values,
    load_sam3_tokenizer,
    sam3_pixel_values,
)
from depth_perception.paths import share_dir

log = logging.getLogger(__name__)

#: The FocusDepth model shipped in the package's models/ directory (the node's default).
DEFAULT_FOCUSDEPTH = "focusdepth_small"
#: What the FocusDepth engine takes: colour, the metric reference depth, target prompts.
FOCUS_INPUTS = EngineInputs(colour=True, depth=True, targets=True)


def default_focusdepth_path() -> Path:
    return share_dir() / "models" / DEFAULT_FOCUSDEPTH


@dataclass
class FocusDepthEngineConfig:
    # Our FocusDepth checkpoint directory; empty: models/focusdepth_small; "tiny": a preset
    # with random weights (tests only).
    checkpoint: str = ""
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on the CPU) | fp32 | bf16
    # S: both branches run on S x S (a multiple of 14; 1008 in the paper). 0: the size the
    # checkpoint was built for (its SAM3 RoPE grid).
    input_size: int = 0
    band_radius: int = 10  # px, the boundary band of the fit's weights
    fit_weights: tuple[float, float, float] = DEFAULT_WEIGHTS  # (target, band, background)
    fit_threshold: float = DEFAULT_THRESHOLD  # inlier / Tukey cutoff, relative residual
    min_reference_pixels: int = 100  # fewer valid reference pixels: no metric fit
    mask_threshold: float = 0.0  # on SAM3's mask logits
    min_score: float = 0.0  # SAM3's score below this: the target is reported as not found
    box_method: str = "minimal"  # oriented box: minimal (minimum volume) | pca
    num_threads: int = 0  # > 0: pin torch's CPU threads (bit-identical node and offline runs)
    seed: int = 0  # of the fit's RANSAC (deterministic per frame and target)


class TargetError(ValueError):
    """One target that cannot be processed; ``kind`` names why (diagnostics key)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def target_prompt(target: Target, width: int, height: int) -> Sam3Prompt:
    """The SAM3 prompt of ``target`` on a ``width`` x ``height`` image: its box clipped to the
    image and/or its text (module docstring, step 1); TargetError when there is none."""
    text = (target.text or "").strip()
    x, y, w, h = (int(v) for v in target.box)
    box = None
    if (x, y, w, h) != (0, 0, 0, 0):
        if w <= 0 or h <= 0:
            raise TargetError(
                "zero_area_box",
                f"target {target.target_id}: box (x {x}, y {y}, w {w}, h {h}) has zero area "
                "(all four 0 means no box)",
            )
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
        if x1 <= x0 or y1 <= y0:
            raise TargetError(
                "box_outside",
                f"target {target.target_id}: box (x {x}, y {y}, w {w}, h {h}) lies outside "
                f"the {width}x{height} image",
            )
        box = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
    if box is None and not text:
        raise TargetError(
            "empty_prompt", f"target {target.target_id}: empty prompt (no box and no text)"
        )
    return Sam3Prompt(box_xywh=box, text=text or None)


def _tiny_tokenizer():
    """A character-level CLIP tokenizer (a-z; no merges) for the random ``tiny`` preset."""
    import json

    letters = list(string.ascii_lowercase)
    tokens = ["<|startoftext|>", "<|endoftext|>", *letters, *(f"{c}</w>" for c in letters)]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory)
        (path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
        (path / "merges.txt").write_text("#version: 0.2\n")
        return load_sam3_tokenizer(path)


def _load(checkpoint: str, seed: int) -> tuple[FocusDepthModel, str]:
    """(model in eval mode on the CPU, weights digest) of a checkpoint dir or preset."""
    if checkpoint in PRESETS and not Path(checkpoint).exists():
        log.warning("FocusDepth preset %r has RANDOM weights (tests only)", checkpoint)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = build_preset(checkpoint, tokenizer=_tiny_tokenizer())
        return model, "random"
    if not Path(checkpoint).exists():
        raise FileNotFoundError(
            f"FocusDepth checkpoint {checkpoint} does not exist (our directory with config.json "
            f"and model.safetensors, or a preset: {', '.join(PRESETS)})"
        )
    model = load_focusdepth(checkpoint)
    if model.tokenizer is None:
        raise ValueError(f"FocusDepth checkpoint {checkpoint} has no tokenizer/ directory")
    return model, weights_digest(checkpoint)


def _checkpoint_size(model: FocusDepthModel) -> int:
    size = model.sam3.vision_encoder.backbone.config.image_size
    return int(size if isinstance(size, int) else max(size))


class FocusDepthEngine(Engine):
    """Target-focused metric depth with FocusDepth (module docstring)."""

    inputs = FOCUS_INPUTS

    def __init__(self, cfg: FocusDepthEngineConfig) -> None:
        self.cfg = cfg
        if cfg.num_threads < 0:
            raise ValueError(f"num_threads must be >= 0, got {cfg.num_threads}")
        if cfg.num_threads > 0 and torch.get_num_threads() != cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)  # process-wide, as torch's setting is
        if cfg.box_method not in BOX_METHODS:
            raise ValueError(f"box_method {cfg.box_method!r}: choose one of {BOX_METHODS}")
        if cfg.band_radius < 1:
            raise ValueError(f"band_radius must be >= 1 px, got {cfg.band_radius}")
        if len(cfg.fit_weights) != 3 or min(cfg.fit_weights) < 0:
            raise ValueError(f"fit_weights must be 3 numbers >= 0, got {cfg.fit_weights}")
        self.device = resolve_device(cfg.device)
        self.use_bf16 = use_bf16(cfg.precision, self.device)
        checkpoint = cfg.checkpoint or str(default_focusdepth_path())
        if not cfg.checkpoint and not Path(checkpoint).exists():
            raise FileNotFoundError(
                f"no FocusDepth model at {checkpoint} (the default model is not shipped yet): "
                "set checkpoint to a FocusDepth directory (config.json + model.safetensors + "
                "tokenizer/)"
            )
        model, digest = _load(checkpoint, cfg.seed)
        self.input_size = cfg.input_size or _checkpoint_size(model)
        patch = model.patch_size[0]
        if self.input_size % patch:
            raise ValueError(f"input_size {self.input_size} is not a multiple of {patch}")
        self.model = model.to(self.device).eval()
        self.checkpoint = checkpoint
        self.model_id = f"focusdepth/{Path(checkpoint).name or checkpoint}@{digest}"

    # -- one target ------------------------------------------------------------------------
    def _autocast(self):
        if self.use_bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def predict(
        self, pixels: tuple[torch.Tensor, torch.Tensor], prompt: Sam3Prompt, size: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """(relative depth (H, W) float32, mask logits (H, W) float32, SAM3 score) of one
        prompt; ``pixels`` = (DA2, SAM3) inputs of the frame, ``size`` = the frame's (W, H)."""
        width, height = size
        with self._autocast():
            out = self.model(pixels[0], pixels[1], prompt, prompt_image_size=size)
        both = torch.cat([out.depth[:, None].float(), out.mask_logits.float()], dim=1)
        both = F.interpolate(both, size=(height, width), mode="bilinear", align_corners=False)
        both = both[0].cpu().numpy()
        return both[0], both[1], float(out.score[0])

    def _target(
        self,
        target: Target,
        pixels: tuple[torch.Tensor, torch.Tensor],
        reference: np.ndarray,
        intrinsics: Intrinsics,
    ) -> TargetResult:
        height, width = reference.shape
        result = TargetResult(target_id=int(target.target_id), text=str(target.text or ""))
        try:
            prompt = target_prompt(target, width, height)
            rel, logits, result.score = self.predict(pixels, prompt, (width, height))
            result.relative = rel
            result.mask = logits > self.cfg.mask_threshold
            if result.score < self.cfg.min_score:
                raise TargetError(
                    "not_found",
                    f"target {target.target_id}: SAM3 score {result.score:.3f} < min_score "
                    f"{self.cfg.min_score:g} (the prompt names nothing in the image?)",
                )
            if not result.mask.any():
                raise TargetError("no_mask", f"target {target.target_id}: the mask is empty")
            try:
                depth, result.fit = metric_from_relative(
                    rel,
                    reference,
                    result.mask,
                    r=self.cfg.band_radius,
                    weights=tuple(self.cfg.fit_weights),
                    threshold=self.cfg.fit_threshold,
                    min_pixels=self.cfg.min_reference_pixels,
                    seed=self.cfg.seed,
                )
            except ValueError as exc:
                raise TargetError("fit", f"target {target.target_id}: {exc}") from None
            result.depth = depth
            result.points = target_cloud(depth, result.mask, intrinsics)
            if len(result.points) == 0:
                raise TargetError(
                    "no_points", f"target {target.target_id}: no mask pixel has a valid depth"
                )
            result.geometry = target_geometry(result.points, self.cfg.box_method)
        except TargetError as exc:
            result.error, result.error_kind = str(exc), exc.kind
        return result

    # -- one frame -------------------------------------------------------------------------
    def run(self, frame: FrameInputs) -> CompletionResult:
        height, width = frame.shape
        if frame.rgb is None or frame.rgb.shape[:2] != (height, width):
            got = None if frame.rgb is None else frame.rgb.shape[:2]
            raise ValueError(f"colour {got} must be the camera's {frame.shape}")
        if frame.depth is None or frame.depth.shape != (height, width):
            got = None if frame.depth is None else frame.depth.shape
            raise ValueError(f"reference depth {got} must be the camera's {frame.shape}")
        reference = np.asarray(frame.depth, dtype=np.float32)
        targets = list(frame.targets or [])
        results: list[TargetResult] = []
        if targets:
            size = (self.input_size, self.input_size)
            pixels = (
                da2_pixel_values(frame.rgb, size).to(self.device),
                sam3_pixel_values(frame.rgb, size).to(self.device),
            )
            results = [self._target(t, pixels, reference, frame.intrinsics) for t in targets]
        return CompletionResult(depth=composite_depth(reference, results), targets=results)


def composite_depth(reference: np.ndarray, targets: list[TargetResult]) -> np.ndarray:
    """The refined depth (module docstring): the reference outside the processed targets'
    masks, inside them the nearest of their fitted depths (NaN where none is valid)."""
    out = np.array(reference, dtype=np.float32, copy=True)
    done = [t for t in targets if t.ok]
    if not done:
        return out
    union = np.zeros(out.shape, dtype=bool)
    nearest = np.full(out.shape, np.nan, dtype=np.float32)
    for t in done:
        union |= t.mask
        nearest = np.fmin(nearest, np.where(t.mask, t.depth, np.float32(np.nan)))
    out[union] = nearest[union]
    return out

"""DepthLM supervised fine-tuning as a task of the one trainer (issue 13).

A vision-language model (Qwen2.5-VL, the paper's default; LLaVA-Pixtral from a checkpoint
directory) learns to answer, in text, the metric distance of the pixel a red arrow points at.
The protocol is :mod:`depth_perception.core.depthlm`, the model wrapper
:mod:`depth_perception.models.depthlm`; this module only feeds them from extracted shards.

Per sample and epoch (:class:`DepthLMSamples`, in the DataLoader workers; every draw from
``sample_seed(seed, epoch, key, STREAM_DEPTHLM)``, so the same on every rank, in every process
layout and after a resume):

1. focal normalisation of the frame to ``depthlm.f_uni`` (:func:`normalise_focal`);
2. a crop of a size drawn from ``crop_width`` x ``crop_height`` (pixels at ``f_uni``), centred
   as the official ``dataset_train`` crops (``crop_position: random`` moves it), then fitted
   to the processor grid (:func:`fit_to_grid`: sides multiples of 28 for Qwen, no resize by
   the processor, so the marker stays on its pixel). A crop the grid does not accept (too
   few or too many pixels) is replaced by the whole normalised frame, fitted;
3. the labels: the first of ``label_sources`` for which the sample has an eligible pixel:
   ``gt`` (its ground truth, or the pseudo-label with ``data.target: pseudo``), ``lidar``
   (the LiDAR points projected into the frame; ``python -m training.extract --lidar``),
   ``depth`` (the valid raw sensor depth). Eligible: a valid label at a source pixel (u, v)
   whose mapped pixel in the fitted crop leaves room for the marker
   (:func:`marker_fits`), with the range in ``[min_distance, max_distance]``. The sample
   records which source it used (``label_source``; logged as ``train/labels/<source>``);
4. N ~ U[``pixels_per_image``] (1-4, the paper: image diversity beats label density) of them,
   without replacement, and per pixel a distance kind by ``distances``' weights: ``range``
   (Euclidean, the paper's default; :func:`pixel_distances` from the source z-depth and the
   source intrinsics) or ``z`` (the principal-axis variant, its own question);
5. ONE image per labelled pixel, the marker drawn (:func:`draw_marker`), question and target
   text (:func:`question_for`, :func:`target_text`).

A step (:meth:`DepthLMTask.loss`): :meth:`DepthLM.sft_batch` over every marked image of this
rank's samples (labels on the answer tokens only: target text + end of turn), the forward pass
through the trainer's (DDP / FSDP) network under its autocast (bf16 on CUDA), logits only at
the positions that predict an answer token (``logits_to_keep``: a 150k vocabulary times a
1,500-token sequence would not fit otherwise), token cross-entropy **summed, then divided by
the number of answer tokens of the global batch** (all-reduced). Token mean rather than a mean
per sample: it is what the official SFT (TRL's causal-LM loss) computes, every answer has
nearly the same length (~25 tokens: only the digits differ), and a global token count makes
2 processes x batch 2 compute the gradient of 1 x 4 exactly. A sample without any eligible
pixel adds nothing (logged as ``labels/none``).

Parameter groups: ``vision`` (the vision tower), ``projector`` (Qwen's patch merger /
LLaVA's multi-modal projector), ``language`` (the language model and its head,
``optim.rest_name: language``), each configured group checked against the network's modules
(:func:`model_parts`). LoRA (``depthlm.lora.enabled``, ``peft``): adapters on the language
model's projections, everything else frozen; merged into the export. FSDP units: the decoder
layers and the vision blocks.

Validation (:meth:`DepthLMTask.validate`): ``val_pixels_per_image`` pixels per validation frame
(keyed, the same at every validation), the whole frame normalised and fitted as
:meth:`DepthLM.query` prepares it, greedy answers (``max_new_tokens``) scored by
:func:`score_answers`: ``delta1`` (a failed answer counts 0), ``abs_rel`` (over parsed
answers), ``failed`` (the share that did not parse), over all ranks.

Export (``RUN/export``, ``RUN/best``): ``save_pretrained`` of the model (LoRA merged), the
tokenizer, the image processor, the chat template and ``depthlm.json`` (``f_uni``,
``max_new_tokens``, ``train_median_range_m``: the median range of the training labels over up
to :data:`MEDIAN_SAMPLES` samples spread over the training set, each sample's labels from the
first of ``label_sources`` it has -- the constant baseline eval-depthlm scores beside the
model): what :meth:`DepthLM.from_dir` and the DepthLM engine load.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from depth_perception.core.camera import Intrinsics
from depth_perception.core.depthlm import (
    NormalisedFrame,
    ProcessorGrid,
    draw_marker,
    fit_to_grid,
    normalise_focal,
    parse_answer,
    pixel_distances,
    question_for,
    range_image,
    score_answers,
    target_text,
)
from depth_perception.models.depthlm import (
    IGNORE_INDEX,
    QWEN_PRESETS,
    DepthLM,
    DepthLMSettings,
    build_tiny_qwen,
)
from training.config import DepthLMConfig, TrainConfig
from training.distributed import all_reduce_max, all_reduce_sum
from training.optim import assign_groups
from training.tasks.base import Task, sample_seed

if TYPE_CHECKING:
    from training.trainer import Trainer

log = logging.getLogger("training.tasks.depthlm")

#: Random streams of this task (continuing base.py's 0-7 and the dataset's 8).
STREAM_DEPTHLM, STREAM_DEPTHLM_VAL = 9, 10
LABEL_SOURCES = ("gt", "lidar", "depth")
DISTANCE_KINDS = ("range", "z")
CROP_POSITIONS = ("center", "random")
PARTS = ("vision", "projector", "language")
#: Presets that name the architecture of ``model.init_checkpoint`` (the weights come from it).
CHECKPOINT_PRESETS = ("qwen2_5_vl", "llava")
#: Training samples read for the export's train_median_range_m (as ma_student's median).
MEDIAN_SAMPLES = 256
#: Per-sample entries a transformed item keeps (the dense maps are not needed after it).
_KEEP = ("key", "index", "epoch", "intrinsics", "self_supervised", "pseudo")


def _check_config(d: DepthLMConfig) -> None:
    lo, hi = d.pixels_per_image
    if not 1 <= lo <= hi:
        raise ValueError(
            f"depthlm.pixels_per_image must be [lo, hi] with 1 <= lo <= hi: {[lo, hi]}"
        )
    for name in ("crop_width", "crop_height"):
        r = getattr(d, name)
        if len(r) != 2 or not 0 < r[0] <= r[1]:
            raise ValueError(f"depthlm.{name} must be [lo, hi] with 0 < lo <= hi, got {r}")
    if d.crop_position not in CROP_POSITIONS:
        raise ValueError(f"depthlm.crop_position must be one of {CROP_POSITIONS}")
    unknown = sorted(set(d.label_sources) - set(LABEL_SOURCES))
    if not d.label_sources or unknown:
        raise ValueError(
            f"depthlm.label_sources: choose from {LABEL_SOURCES}, got {d.label_sources}"
        )
    kinds = sorted(set(d.distances) - set(DISTANCE_KINDS))
    weights = list(d.distances.values())
    if kinds or not weights or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(
            f"depthlm.distances: weights >= 0 (positive sum) of {DISTANCE_KINDS}, got {d.distances}"
        )
    if d.val_distance not in DISTANCE_KINDS:
        raise ValueError(f"depthlm.val_distance must be one of {DISTANCE_KINDS}")
    if not (math.isfinite(d.f_uni) and d.f_uni > 0):
        raise ValueError(f"depthlm.f_uni must be > 0, got {d.f_uni}")
    if d.val_pixels_per_image < 1 or d.max_new_tokens < 1 or d.val_generate_batch < 1:
        raise ValueError("depthlm.val_pixels_per_image, max_new_tokens, val_generate_batch >= 1")


# ---------------------------------------------------------------------------------------------
# Samples (DataLoader workers)
# ---------------------------------------------------------------------------------------------


def crop_frame(
    frame: NormalisedFrame, x0: int, y0: int, width: int, height: int
) -> NormalisedFrame:
    """``frame`` cropped to [x0, x0 + width) x [y0, y0 + height) (pixel mapping kept)."""
    return replace(
        frame,
        image=frame.image[y0 : y0 + height, x0 : x0 + width].copy(),
        intrinsics=frame.intrinsics.cropped(x0, y0, width, height),
        offset_x=frame.offset_x + x0,
        offset_y=frame.offset_y + y0,
    )


def draw_crop(
    frame: NormalisedFrame, d: DepthLMConfig, grid: ProcessorGrid, rng: np.random.Generator
) -> tuple[NormalisedFrame, bool]:
    """(the crop fitted to the grid, whether it is a crop): size drawn from the configured
    ranges (capped by the frame), centred as the official loader or at a random position."""
    width, height = frame.size
    cw = int(min(width, rng.uniform(*d.crop_width)))
    ch = int(min(height, rng.uniform(*d.crop_height)))
    if d.crop_position == "random":
        x0 = int(rng.integers(0, width - cw + 1))
        y0 = int(rng.integers(0, height - ch + 1))
    else:
        x0, y0 = max(0, (width - cw) // 2), max(0, (height - ch) // 2)
    m = grid.multiple
    if cw >= 1 and ch >= 1 and grid.accepts((cw // m) * m, (ch // m) * m):
        return fit_to_grid(crop_frame(frame, x0, y0, cw, ch), grid), True
    return fit_to_grid(frame, grid), False


def label_maps(item: dict, sources: Iterable[str]) -> list[tuple[str, np.ndarray]]:
    """(source name, (H, W) z-depth in metres, 0 = none) of the sample, in ``sources`` order,
    for those it has: ``gt`` (``pseudo`` when the target is the pseudo-label), ``lidar``,
    ``depth``."""
    out = []
    for source in sources:
        if source == "gt":
            if bool(item["self_supervised"]):
                continue
            name = "pseudo" if bool(item.get("pseudo", False)) else "gt"
            out.append((name, item["target"][0].numpy()))
        elif source == "lidar" and "prompt" in item:
            out.append(("lidar", item["prompt"][0].numpy()))
        elif source == "depth":
            out.append(("depth", item["depth"][0].numpy()))
    return out


def eligible_pixels(
    label: np.ndarray,
    source_k: Intrinsics,
    frame: NormalisedFrame,
    min_distance: float = 0.0,
    max_distance: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(uv (N, 2) source pixels, xy (N, 2) their pixels in ``frame``, range (N,), z (N,)) of
    the valid labels whose marker fits ``frame`` and whose range is in the bounds."""
    rows, cols = np.nonzero(np.isfinite(label) & (label > 0))
    uv = np.stack([cols, rows], axis=1).astype(np.int64)
    xy = frame.map_pixels(uv)
    width, height = frame.size
    x, y = xy[:, 0], xy[:, 1]
    fits = (x >= 5) & (x < width - 5) & (y >= 5) & (y < height - 5)  # marker_fits, vectorised
    uv, xy = uv[fits], xy[fits]
    rng_m, z = pixel_distances(label, source_k, uv)
    keep = np.isfinite(rng_m) & (rng_m >= min_distance)
    if max_distance is not None:
        keep &= rng_m <= max_distance
    return uv[keep], xy[keep], rng_m[keep], z[keep]


def training_label_median_range(
    manifest: str | Path, cfg: TrainConfig, samples: int = MEDIAN_SAMPLES
) -> tuple[float, int]:
    """(median range of the training labels in metres, samples read) over up to ``samples``
    samples spread evenly over the manifest, read as the trainer reads them (no augmentation):
    per sample the first of ``label_sources`` with a valid label (:func:`label_maps`), its
    z-depths turned into ranges through the sample's intrinsics, within ``min_distance`` /
    ``max_distance`` as the drawn labels are."""
    from training.dataset import ShardDataset, spread_items

    d = cfg.depthlm
    dataset = ShardDataset(
        manifest, seed=cfg.seed, target=cfg.data.target, lidar="lidar" in d.label_sources
    )
    read, items = spread_items(dataset, samples)
    values = []
    for item in items:
        for _, label in label_maps(item, d.label_sources):
            h, w = label.shape
            k = Intrinsics.from_K(item["intrinsics"].numpy().astype(np.float64), w, h)
            r = range_image(label, k)
            r = r[np.isfinite(r) & (r >= d.min_distance)]
            if d.max_distance is not None:
                r = r[r <= d.max_distance]
            if r.size:
                values.append(r)
                break
    ranges = np.concatenate(values) if values else np.zeros(0)
    if not ranges.size:
        raise ValueError(f"{manifest}: no valid training label to take the median range of")
    return float(np.median(ranges)), read


def token_log_distances(
    xy: np.ndarray, distances: np.ndarray, size: tuple[int, int], side: int
) -> tuple[np.ndarray, np.ndarray]:
    """(mean log distance, label count) per ``side`` x ``side`` token of an image of ``size``
    (w, h), row-major; 0 / 0 where a token holds no label. ``xy`` (N, 2) image pixels."""
    width_t, height_t = size[0] // side, size[1] // side
    tx, ty = xy[:, 0] // side, xy[:, 1] // side
    inside = (tx < width_t) & (ty < height_t)
    index = (ty * width_t + tx)[inside]
    n = width_t * height_t
    count = np.bincount(index, minlength=n).astype(np.float32)
    total = np.bincount(index, weights=np.log(distances[inside]), minlength=n)
    log = np.divide(total, count, out=np.zeros(n), where=count > 0).astype(np.float32)
    return log, count


@dataclass
class DepthLMSamples:
    """The per-sample transform (module docstring): marked images, questions, targets.

    Adds ``depthlm``: {``images`` (list of (h, w, 3) uint8, one per pixel), ``questions``,
    ``targets`` (texts), ``kinds``, ``distances`` (the labelled value, metres), ``range``,
    ``z``, ``pixels`` (source (u, v)), ``marked`` ((x, y) in the image), ``size`` (w, h),
    ``cropped``}; ``label_source`` (gt / pseudo / lidar / depth / none). The dense maps are
    dropped and ``image`` becomes an empty tensor (crops differ in size; the batch keeps
    lists)."""

    cfg: DepthLMConfig
    seed: int
    grid: ProcessorGrid
    train: bool = True
    # > 0: also ``token_log`` / ``token_count`` (:func:`token_log_distances`) over tokens of
    # this many pixels (the vision pretraining's dense target).
    token_side: int = 0

    def __call__(self, item: dict) -> dict:
        d = self.cfg
        key, epoch = item["key"], int(item["epoch"])
        h, w = item["image"].shape[-2:]
        rgb = (item["image"].permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255)
        rgb = np.ascontiguousarray(rgb.astype(np.uint8))
        source_k = Intrinsics.from_K(item["intrinsics"].numpy().astype(np.float64), w, h)
        normalised = normalise_focal(rgb, source_k, d.f_uni)
        if self.train:
            rng = np.random.default_rng(sample_seed(self.seed, epoch, key, STREAM_DEPTHLM))
            frame, cropped = (
                draw_crop(normalised, d, self.grid, rng)
                if d.crop
                else (fit_to_grid(normalised, self.grid), False)
            )
        else:  # validation: the whole frame as DepthLM.query prepares it, fixed draws
            rng = np.random.default_rng(sample_seed(self.seed, 0, key, STREAM_DEPTHLM_VAL))
            frame, cropped = fit_to_grid(normalised, self.grid), False
        maps = label_maps(item, d.label_sources)
        chosen = self._eligible(maps, source_k, frame)
        if chosen is None and cropped:  # nothing labelled in the crop: the whole frame
            frame, cropped = fit_to_grid(normalised, self.grid), False
            chosen = self._eligible(maps, source_k, frame)
        out = {k: item[k] for k in _KEEP if k in item}
        out["image"] = torch.zeros(0)
        if chosen is None:
            out["label_source"] = "none"
            out["depthlm"] = self._entry(frame, cropped, [], [], [], [], [], [], [])
            return out
        name, (uv, xy, rng_m, z) = chosen
        if self.train:
            lo, hi = d.pixels_per_image
            n = min(int(rng.integers(lo, hi + 1)), len(uv))
        else:
            n = min(d.val_pixels_per_image, len(uv))
        idx = rng.choice(len(uv), size=n, replace=False)
        if self.train:
            kinds_all = list(d.distances)
            p = np.array([d.distances[k] for k in kinds_all], dtype=np.float64)
            kinds = [kinds_all[int(i)] for i in rng.choice(len(kinds_all), size=n, p=p / p.sum())]
        else:
            kinds = [d.val_distance] * n
        images, questions, targets, values = [], [], [], []
        for j, kind in zip(idx, kinds, strict=True):
            x, y = int(xy[j, 0]), int(xy[j, 1])
            value = float(rng_m[j] if kind == "range" else z[j])
            images.append(draw_marker(frame.image, x, y))
            questions.append(question_for(kind))  # type: ignore[arg-type]
            targets.append(target_text(value, kind))  # type: ignore[arg-type]
            values.append(value)
        out["label_source"] = name
        out["depthlm"] = self._entry(
            frame, cropped, images, questions, targets, kinds, values, uv[idx], xy[idx]
        )
        out["depthlm"]["range"] = rng_m[idx].astype(np.float64)
        out["depthlm"]["z"] = z[idx].astype(np.float64)
        if self.token_side:
            dense = rng_m if "range" in d.distances else z
            log, count = token_log_distances(xy, dense, frame.size, self.token_side)
            out["depthlm"]["token_log"], out["depthlm"]["token_count"] = log, count
        return out

    def _eligible(self, maps, source_k, frame):
        d = self.cfg
        for name, label in maps:
            found = eligible_pixels(label, source_k, frame, d.min_distance, d.max_distance)
            if len(found[0]):
                return name, found
        return None

    @staticmethod
    def _entry(frame, cropped, images, questions, targets, kinds, values, uv, xy):
        return {
            "images": images,
            "questions": questions,
            "targets": targets,
            "kinds": kinds,
            "distances": np.asarray(values, dtype=np.float64),
            "range": np.zeros(0),
            "z": np.zeros(0),
            "pixels": np.asarray(uv, dtype=np.int64).reshape(-1, 2),
            "marked": np.asarray(xy, dtype=np.int64).reshape(-1, 2),
            "size": frame.size,
            "cropped": cropped,
        }


def batch_rows(batch: dict) -> tuple[list[np.ndarray], list[str], list[str], np.ndarray]:
    """(marked images, questions, targets, distances) of every labelled pixel of a batch."""
    images, questions, targets, values = [], [], [], []
    for entry in batch["depthlm"]:
        images += entry["images"]
        questions += entry["questions"]
        targets += entry["targets"]
        values.append(entry["distances"])
    return images, questions, targets, np.concatenate(values) if values else np.zeros(0)


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------


def _model_classes(architecture: str) -> type[nn.Module]:
    from transformers import LlavaForConditionalGeneration, Qwen2_5_VLForConditionalGeneration

    if architecture == "qwen2_5_vl":
        return Qwen2_5_VLForConditionalGeneration
    if architecture == "llava":
        return LlavaForConditionalGeneration
    raise ValueError(f"unknown DepthLM architecture {architecture!r}")


def _fsdp_units() -> tuple[type[nn.Module], ...]:
    from transformers.models.mistral.modeling_mistral import MistralDecoderLayer
    from transformers.models.pixtral.modeling_pixtral import PixtralAttentionLayer
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
        Qwen2_5_VLDecoderLayer,
        Qwen2_5_VLVisionBlock,
    )

    # As the official train.sh wraps (Qwen2_5_VLDecoderLayer; Pixtral: MistralDecoderLayer,
    # PixtralAttentionLayer), plus Qwen's vision blocks.
    return (
        Qwen2_5_VLDecoderLayer,
        Qwen2_5_VLVisionBlock,
        MistralDecoderLayer,
        PixtralAttentionLayer,
    )


def base_model(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft wrapper (or the model itself)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def model_parts(model: nn.Module) -> dict[str, str]:
    """Parameter name -> part (``vision``, ``projector``, ``language``), by module: Qwen's
    ``visual`` minus its ``merger`` / LLaVA's ``vision_tower``; the merger / the
    ``multi_modal_projector``; everything else (language model, head)."""
    inner = base_model(model).model
    if hasattr(inner, "visual"):
        vision, projector = inner.visual, inner.visual.merger
    elif hasattr(inner, "vision_tower"):
        vision, projector = inner.vision_tower, inner.multi_modal_projector
    else:
        raise TypeError(f"{type(inner).__name__}: no vision tower found")
    proj_ids = {id(p) for p in projector.parameters()}
    vision_ids = {id(p) for p in vision.parameters()} - proj_ids
    parts = {}
    for name, p in model.named_parameters():
        parts[name] = (
            "projector" if id(p) in proj_ids else "vision" if id(p) in vision_ids else "language"
        )
    return parts


def _lora_config(d: DepthLMConfig):
    from peft import LoraConfig

    lora = d.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        modules_to_save=list(lora.modules_to_save) or None,
        bias="none",
    )


def _apply_lora(model: nn.Module, d: DepthLMConfig) -> nn.Module:
    try:
        from peft import get_peft_model
    except ImportError as exc:  # pragma: no cover - peft is in requirements-ml.txt
        raise ImportError("depthlm.lora.enabled needs peft (pip install peft)") from exc
    return get_peft_model(model, _lora_config(d))


@contextlib.contextmanager
def _gathered_root(model: nn.Module):
    """FSDP: the root unit's parameters gathered for the duration (``generate`` runs the
    vision tower's patch embedding and merger outside the root's forward, where FSDP would
    gather them); the block units gather in their own forward as usual. Else nothing."""
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        yield
        return
    model.unshard()
    try:
        yield
    finally:
        model.reshard()


class DepthLMTask(Task):
    """DepthLM SFT (module docstring)."""

    name = "depthlm"

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        _check_config(cfg.depthlm)
        if cfg.val.metric not in ("delta1", "abs_rel"):
            raise ValueError("task depthlm: val.metric must be delta1 or abs_rel")
        self.shard_modules = _fsdp_units()
        self.processor: Any = None
        self.architecture: str | None = None
        self.grid: ProcessorGrid | None = None

    # --- the network -----------------------------------------------------------------------

    def _load(self) -> DepthLM:
        mc, d = self.cfg.model, self.cfg.depthlm
        if mc.init_checkpoint:
            lm = DepthLM.from_dir(mc.init_checkpoint)
            if lm.settings.f_uni != d.f_uni:
                log.warning(
                    "%s was trained at f_uni=%g; this run trains (and exports) f_uni=%g",
                    mc.init_checkpoint,
                    lm.settings.f_uni,
                    d.f_uni,
                )
            return lm
        if mc.preset in QWEN_PRESETS:
            return self._tiny(mc.preset)
        if mc.preset in CHECKPOINT_PRESETS:
            raise ValueError(
                f"task depthlm: model.preset {mc.preset!r} takes its weights from "
                "model.init_checkpoint (a transformers directory), which is not set"
            )
        raise ValueError(
            f"task depthlm: set model.init_checkpoint (a DepthLM / Qwen2.5-VL directory) or "
            f"model.preset: one of {sorted(QWEN_PRESETS)} (got preset {mc.preset!r})"
        )

    def _tiny(self, preset: str) -> DepthLM:
        """A random ``preset`` (``tiny_qwen``, ``small_qwen``), built from ``seed`` (identical
        on every rank). Under torch.distributed transformers' ``save_pretrained`` writes on
        rank 0 only, so rank 0 builds it into ``RUN/<preset>`` and the others load it after a
        barrier; a single process uses a private temporary directory."""
        import torch.distributed as dist

        d = self.cfg.depthlm

        def build(directory: Path) -> Path:
            return build_tiny_qwen(
                directory,
                f_uni=d.f_uni,
                seed=self.cfg.seed,
                max_pixels=d.tiny_max_pixels,
                preset=preset,
            )

        if dist.is_available() and dist.is_initialized():
            path = Path(self.cfg.run_dir) / preset
            if dist.get_rank() == 0:
                build(path)
            dist.barrier()
            lm = DepthLM.from_dir(path)
        else:
            with tempfile.TemporaryDirectory(prefix="depthlm_tiny_") as tmp:
                lm = DepthLM.from_dir(build(Path(tmp) / "tiny"))
        lm.model.name_or_path = preset
        return lm

    def build_model(self) -> nn.Module:
        lm = self._load()
        self.processor, self.architecture, self.grid = lm.processor, lm.architecture, lm.grid
        model = lm.model.train()
        if self.cfg.depthlm.gradient_checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        if self.cfg.depthlm.lora.enabled:
            model = _apply_lora(model, self.cfg.depthlm)
        return model

    def model_config(self, model: nn.Module) -> dict:
        return {
            "architecture": self.architecture,
            "hf_config": base_model(model).config.to_dict(),
            "lora": asdict(self.cfg.depthlm.lora) if self.cfg.depthlm.lora.enabled else None,
        }

    def build_from_config(self, model_config: dict) -> nn.Module:
        from transformers.initialization import no_init_weights

        cls = _model_classes(model_config["architecture"])
        config = cls.config_class.from_dict(model_config["hf_config"])
        with no_init_weights():  # every weight comes from the state dict loaded next
            model = cls(config)
        if model_config.get("lora"):
            model = _apply_lora(model, self.cfg.depthlm)
        return model

    def save_export(self, model: nn.Module, directory: Path) -> None:
        """The model directory :meth:`DepthLM.from_dir` loads (LoRA merged)."""
        import json

        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        directory.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(directory)
        processor = self.processor
        processor.tokenizer.save_pretrained(directory)
        processor.image_processor.save_pretrained(directory)
        template = getattr(processor, "chat_template", None)
        if template:
            (directory / "chat_template.jinja").write_text(template, encoding="utf-8")
        if self.architecture == "llava":
            keys = ("patch_size", "spatial_merge_size", "image_token", "image_break_token")
            extra = {k: getattr(processor, k) for k in (*keys, "image_end_token")}
            text = json.dumps(extra, indent=2) + "\n"
            (directory / "processor_config.json").write_text(text, encoding="utf-8")
        d = self.cfg.depthlm
        median = self._train_median_range()
        DepthLMSettings(
            f_uni=d.f_uni, max_new_tokens=d.max_new_tokens, train_median_range_m=median
        ).save(directory)

    def _train_median_range(self) -> float | None:
        """The training labels' median range for the export (None, logged, without labels)."""
        from training.trainer import merged_manifest

        cfg = self.cfg
        try:
            manifest = merged_manifest(cfg.data.train, Path(cfg.run_dir) / "data", "train")
            median, n = training_label_median_range(manifest, cfg)
        except (OSError, ValueError) as exc:
            log.warning("export: no train_median_range_m (%s)", exc)
            return None
        log.info("export: train_median_range_m %.4g m over %d samples", median, n)
        return median

    # --- optimisation ----------------------------------------------------------------------

    def parameter_groups(self, model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """``optim.groups`` by pattern, each checked against :func:`model_parts`: a group
        named ``vision`` / ``projector`` / ``language`` (the rest) holds parameters of that
        part only, and every trainable part's parameters are in its group."""
        optim = self.cfg.optim
        groups = assign_groups(model.named_parameters(), optim)
        names = list(groups)
        if set(names) - set(PARTS):
            raise ValueError(
                f"task depthlm: parameter groups are named {PARTS} (rest_name: language), got "
                f"{names}"
            )
        parts = model_parts(model)
        for group, params in groups.items():
            wrong = [n for n, _ in params if parts[n] != group]
            if wrong:
                raise ValueError(
                    f"optim group {group!r} matches parameters of another part: "
                    f"{[(n, parts[n]) for n in wrong[:3]]} (check the patterns against "
                    f"the model's names)"
                )
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        for part in PARTS:
            if part not in groups and any(parts[n] == part for n in trainable):
                raise ValueError(f"no optim group for the trainable {part} parameters")
        return groups

    # --- data ------------------------------------------------------------------------------

    def dataset_options(self, train: bool) -> dict[str, Any]:
        return {"lidar": "lidar" in self.cfg.depthlm.label_sources}

    def sample_transform(self, train: bool) -> DepthLMSamples:
        if self.grid is None:
            raise RuntimeError("DepthLMTask.sample_transform before build_model")
        return DepthLMSamples(self.cfg.depthlm, self.cfg.seed, self.grid, train)

    # --- a step ----------------------------------------------------------------------------

    def wrapper(self, trainer: Trainer) -> DepthLM:
        """:class:`DepthLM` around the trainer's (unwrapped) model: its texts and batches."""
        d = self.cfg.depthlm
        settings = DepthLMSettings(f_uni=d.f_uni, max_new_tokens=d.max_new_tokens)
        return DepthLM(trainer.model, self.processor, settings, self.architecture)

    def _dummy_row(self) -> tuple[np.ndarray, str, str]:
        """One marked grey image of the smallest accepted size (weight 0): a rank without a
        labelled pixel still runs the forward and backward DDP / FSDP expect."""
        grid = self.grid
        m = grid.multiple
        side = m * max(2, math.ceil(math.sqrt(max(grid.min_pixels, m * m)) / m))
        image = draw_marker(np.full((side, side, 3), 128, np.uint8), side // 2, side // 2)
        return image, question_for("range"), target_text(1.0)

    def loss(self, trainer: Trainer, batch: dict) -> tuple[torch.Tensor, dict[str, float], dict]:
        info = trainer.info
        images, questions, targets, _ = batch_rows(batch)
        weight = 1.0
        if not images:
            image, question, target = self._dummy_row()
            images, questions, targets, weight = [image], [question], [target], 0.0
        inputs = self.wrapper(trainer).sft_batch(images, questions, targets)
        labels = inputs.pop("labels")
        following = labels[:, 1:]  # the token each position predicts
        keep = (following != IGNORE_INDEX).any(dim=0).nonzero().flatten()
        with trainer.autocast():
            out = trainer.net(**inputs, logits_to_keep=keep, use_cache=False)
        logits = out.logits.float()
        wanted = following[:, keep]
        token_sum = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            wanted.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        supervised = wanted != IGNORE_INDEX
        correct = ((logits.argmax(-1) == wanted) & supervised).sum()
        sources = list(batch["label_source"])
        counts = [sources.count(s) for s in ("gt", "pseudo", "lidar", "depth", "none")]
        stats = torch.tensor(
            [
                float(token_sum.detach()) * weight,
                float(supervised.sum()) * weight,
                float(correct) * weight,
                float(len(images)) * weight,
                float(len(sources)),
                *counts,
            ],
            dtype=torch.float64,
            device=trainer.device,
        )
        all_reduce_sum(stats, info)
        n_tokens = stats[1].clamp_min(1.0)
        # Mean over the global batch's answer tokens; x world size undoes DDP's averaging.
        loss = info.world_size * weight * token_sum / n_tokens.float()
        n_samples = float(stats[4].clamp_min(1.0))
        scalars = {
            "loss": float(stats[0] / n_tokens),
            "token_accuracy": float(stats[2] / n_tokens),
            "answer_tokens": float(stats[1]),
            "pixels_per_sample": float(stats[3]) / n_samples,
        }
        for i, name in enumerate(("gt", "pseudo", "lidar", "depth", "none")):
            scalars[f"labels/{name}"] = float(stats[5 + i]) / n_samples
        empty = torch.zeros(0, 3, 1, 1)  # no dense view to log
        return loss, scalars, {"image": empty, "depth": empty, "pred": empty, "target": empty}

    # --- validation ------------------------------------------------------------------------

    def predict_batch(self, trainer: Trainer, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(
            "DepthLM answers pixel queries in text and has no dense depth output: its "
            "validation is DepthLMTask.validate"
        )

    @torch.no_grad()
    def validate(self, trainer: Trainer, batches: Iterable[dict]) -> dict[str, float]:
        """Greedy answers at the validation pixels: delta1, AbsRel and the failure share over
        every rank's pixels (module docstring)."""
        d, info = self.cfg.depthlm, trainer.info
        model = trainer.model
        was_training = model.training
        model.eval()
        lm = self.wrapper(trainer)
        synced = info.distributed and self.cfg.dist.strategy == "fsdp"
        sums = torch.zeros(5, dtype=torch.float64, device=trainer.device)
        try:
            for batch in batches:
                images, questions, _, truths = batch_rows(batch)
                n_real = len(images)
                if synced:
                    # A sharded forward is collective: every rank runs as many generate calls.
                    most = torch.tensor([n_real], dtype=torch.int64, device=trainer.device)
                    all_reduce_max(most, info)
                    pad = int(most.item()) - n_real
                    if pad:
                        image, question, _ = self._dummy_row()
                        images, questions = images + [image] * pad, questions + [question] * pad
                if not images:
                    continue
                with trainer.autocast(), _gathered_root(model):
                    texts = lm.generate(
                        images, questions, d.max_new_tokens, d.val_generate_batch, synced
                    )
                if not n_real:
                    continue
                parsed = [parse_answer(t) for t in texts[:n_real]]
                s = score_answers(parsed, truths)
                parsed_n = s.n - s.n_failed
                sums += torch.tensor(
                    [
                        s.delta1 * s.n,
                        s.n,
                        s.abs_rel * parsed_n if parsed_n else 0.0,
                        parsed_n,
                        len(batch["depthlm"]),
                    ],
                    dtype=torch.float64,
                    device=trainer.device,
                )
        finally:
            model.train(was_training)
        all_reduce_sum(sums, info)
        sums = sums.cpu()
        n, parsed_n = float(sums[1]), float(sums[3])
        return {
            "delta1": float(sums[0]) / n if n else math.nan,
            "abs_rel": float(sums[2]) / parsed_n if parsed_n else math.nan,
            "failed": (n - parsed_n) / n if n else math.nan,
            "pixels": n,
            "images": float(sums[4]),
        }


__all__ = [
    "DepthLMSamples",
    "DepthLMTask",
    "batch_rows",
    "draw_crop",
    "eligible_pixels",
    "label_maps",
    "training_label_median_range",
    "model_parts",
    "token_log_distances",
]

"""FocusDepth (arXiv 2605.11756) as a training task: prompt-focused refinement of DA2.

Data: image-target-depth triplets from bags with the simulator's instance ids and target
prompts (``python -m training.extract --instances``), one target per sample and epoch, drawn
in the DataLoader workers with its prompt kind (box, text or both) by ``focus.prompt_kinds``
(:class:`training.dataset.TargetChoice`); the box is the augmented mask's, so crops and flips
keep it right. Split by bag: the train and val manifests come from different bags.

Per step (:meth:`FocusDepthTask.loss`): the augmented image goes through DA2's and SAM3's
preprocessing (:func:`da2_pixel_values` / :func:`sam3_pixel_values`, exactly as inference
prepares a camera image) at ``focus.input_size`` S x S; FocusDepth's relative disparity and
mask logits come back at S and are resized (bilinear) to the sample; then
:func:`~depth_perception.models.focusdepth_losses.focusdepth_loss` on the chosen target, per
image: ``glb L_glb + fg L_fg + bd L_bd + seg L_seg`` (weights ``focus.*_weight``, 1 in the
paper), each term's mean taken over the images of the *global* batch that have pixels in its
region (what the loss module does for one batch, with counts all-reduced over ranks). A
sample whose augmentation left no target (none with ``min_target_pixels``) is prompted with
the whole image as box and left out of every term.

SAM3 is given one prompt per image (its own box / text): :func:`sam3_prompted` runs the images
with a box and those without in two groups inside the same forward, so each image sees
exactly what :func:`~depth_perception.models.sam3_io.sam3_forward` gives it alone (a text-only
prompt has no geometry token; padding boxes would add SAM3's geometry CLS token).

Stages (``focus.stage``, paper §3.5, Table 5): 1 trains MSSA only (SAM3 then runs without
autograd: nothing in it trains and L_seg is a constant); 2 trains MSSA, the depth decoder,
SAM3's prompt-guided transformer and its mask decoder
(:meth:`~depth_perception.models.focusdepth.FocusDepthModel.stage_parameters`), and with
``focus.stage2_train_depth_encoder`` (not the paper's) DA2's encoder too; ``da2_ft`` is
Table 6's DA2 fine-tuning baseline: DA2 alone (MSSA *bypassed*: the training forward is DA2's
own ``predicted_depth``, SAM3 not run), the whole DA2 or, with ``da2_ft_train_encoder:
false``, its decoder; loss ``L_glb + L_fg + L_bd`` on the same triplets (no mask head). Its
MSSA gates are *closed* at build time (gate weight 0, bias -1e4: G = 0 exactly, Y = X_g bit for
bit), so the export is an ordinary FocusDepth checkpoint whose depth is DA2-ft's. Parameters
outside the stage are frozen (requires_grad off) and their modules kept in eval mode (dropout
off) every step; the optimizer sees exactly the stage's parameters (checked).

``mssa_init`` (not the paper's; the paper prescribes no MSSA initialisation) comes before
stage 1: MSSA's projection, router and experts (not the gates) are trained, SAM3 and DA2
without autograd, so that each block's expert mixture F reproduces the DA2 tokens X_g it fuses
into (:meth:`~depth_perception.models.focusdepth.FocusDepthModel.mssa_reconstruction`, MSE per
image). Stage 1 from its export then starts with open gates (G ~ 0.5) and Y ~ X_g: the
untrained experts no longer replace half of every DA2 feature with noise (which cost the
foreground with open gates), and the experts get half the gradient (not ~2 % as through
closed gates, which never opened; training/README.md, FocusDepth).

Initialisation: ``model.init_checkpoint`` (our FocusDepth checkpoint, e.g. stage 1's export for
stage 2), or ``focus.init_da2`` + ``focus.init_sam3`` (transformers directories: the tiny
parts that ``da2_pretrain`` / ``sam3_pretrain`` export, or the official ones), or
``model.preset: tiny`` at S (random weights; tests).

Validation (:meth:`FocusDepthTask.predict_batch`): the model's relative disparity, aligned per
image to the ground truth's disparity by least squares (scale and shift over the valid pixels,
:func:`~depth_perception.models.focusdepth_losses.scale_shift_align`), then inverted to metres:
the paper's protocol aligns before scoring, and the trainer's AbsRel is then the aligned
error. Validation prompts with ``focus.val_prompt``. The export is :func:`save_focusdepth`
with the tokenizer.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from depth_perception.models.blocks.roi_align import install_roi_align
from depth_perception.models.focusdepth import (
    STAGE_PREFIXES,
    FocusDepthModel,
    FocusDepthOutput,
    load_focusdepth,
    save_focusdepth,
    tiny_configs,
)
from depth_perception.models.focusdepth_losses import (
    boundary_band,
    focusdepth_loss,
    scale_shift_align,
)
from depth_perception.models.sam3_io import (
    Sam3Prompt,
    Sam3Result,
    da2_pixel_values,
    load_sam3_tokenizer,
    sam3_pixel_values,
    set_sam3_input_size,
)
from training.config import TrainConfig
from training.dataset import PROMPT_KINDS, TargetChoice
from training.distributed import all_reduce_sum
from training.optim import assign_groups
from training.tasks.base import Task

if TYPE_CHECKING:
    from transformers import CLIPTokenizer, Sam3Model

    from training.trainer import Trainer

log = logging.getLogger("training.tasks.focusdepth")

STAGES = (1, 2, "da2_ft", "mssa_init")
#: Words the tiny tokenizer spells as single tokens: the simulator's graspable classes
#: (``depth_perception.sim.sequence.GRASPABLE_CLASSES``) and SAM3's box-only phrase.
CLASS_WORDS = ("box", "book", "can", "mug", "ball", "bottle", "glass", "visual")
#: Validation depth from aligned disparity: disparities below this (1/m) are clamped (1 km).
MIN_DISPARITY = 1e-3
DA2_ENCODER = ("depth_model.backbone.",)
DA2_DECODER = ("depth_model.neck.", "depth_model.head.")


# ---------------------------------------------------------------------------------------------
# Tokenizer, preprocessing, prompts
# ---------------------------------------------------------------------------------------------


def write_class_tokenizer(directory: str | Path, words: Sequence[str] = CLASS_WORDS) -> int:
    """A CLIP BPE tokenizer small enough for the tiny SAM3 (``vocab.json`` + ``merges.txt``):
    the two specials, every letter (alone and word-final) and merges that spell each of
    ``words`` as one token. Returns the vocabulary size (the tiny text vocab must cover it)."""
    import json

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = ["<|startoftext|>", "<|endoftext|>", *letters, *(f"{c}</w>" for c in letters)]
    merges: list[str] = []
    for word in words:
        piece = word[0]
        for i, char in enumerate(word[1:], start=1):
            last = i == len(word) - 1
            merged = piece + char + ("</w>" if last else "")
            rule = f"{piece} {char}</w>" if last else f"{piece} {char}"
            if rule not in merges:
                merges.append(rule)
            tokens.append(merged)
            piece = merged
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return len(vocab)


def resolve_tokenizer(path: str | None) -> CLIPTokenizer:
    """``path``'s tokenizer, or the tiny class tokenizer (written to a private temporary
    directory and read back, so ranks never write the same files)."""
    if path:
        return load_sam3_tokenizer(path)
    with tempfile.TemporaryDirectory(prefix="focus_tokenizer_") as tmp:
        write_class_tokenizer(tmp)
        return load_sam3_tokenizer(tmp)


def _uint8_images(image: torch.Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) float in [0, 1] (a uint8 image / 255, as the dataset makes it) -> the
    uint8 (H, W, 3) images, exactly."""
    rgb = (image.detach().float().cpu() * 255.0).round().clamp(0, 255).to(torch.uint8)
    return [np.ascontiguousarray(x.permute(1, 2, 0).numpy()) for x in rgb]


def branch_inputs(image: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(DA2 pixels, SAM3 pixels), each (B, 3, S, S), of a batch of images, image by image
    through the inference preprocessing (:mod:`depth_perception.models.sam3_io`)."""
    images = _uint8_images(image)
    da2 = torch.cat([da2_pixel_values(x, (size, size)) for x in images])
    sam3 = torch.cat([sam3_pixel_values(x, (size, size)) for x in images])
    return da2, sam3


def batch_prompts(batch: dict, kind: str | None = None) -> list[Sam3Prompt]:
    """Each sample's prompt for its chosen target (``kind`` overrides the drawn one); a sample
    without a target gets the whole image as box (and no weight in the loss)."""
    _, _, h, w = batch["image"].shape
    out = []
    for i, drawn in enumerate(batch["prompt_kind"]):
        k = kind or drawn
        if not bool(batch["has_target"][i]):
            out.append(Sam3Prompt(box_xywh=(0.0, 0.0, float(w), float(h))))
            continue
        box = tuple(float(v) for v in batch["target_box"][i].tolist())
        text = batch["target_text"][i]
        out.append(
            Sam3Prompt(
                box_xywh=box if k in ("box", "box_text") else None,
                text=text if k in ("text", "box_text") else None,
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# SAM3 with one prompt per image
# ---------------------------------------------------------------------------------------------


def sam3_outputs(
    sam3: Sam3Model,
    pixel_values: torch.Tensor,
    prompts: Sequence[Sam3Prompt],
    tokenizer: CLIPTokenizer,
    image_size: tuple[int, int],
    call: nn.Module | None = None,
) -> dict[str, Any]:
    """SAM3 on (B, 3, S, S') with one prompt per image, box in pixels of ``image_size`` (W, H);
    ``call``: the module to run instead of ``sam3`` itself (its DDP wrapper in training).

    Images with a box and images without run as two groups (each image gets what
    ``sam3_forward`` gives it alone); returns, in the input order, ``tokens`` (B, N, C_p) (the
    DETR encoder's output), ``grid_hw``, ``pred_masks`` (B, Q, h, w), ``pred_logits`` (B, Q),
    ``presence_logits`` (B, 1)."""
    install_roi_align()
    batch, _, height, width = pixel_values.shape
    if len(prompts) != batch:
        raise ValueError(f"{len(prompts)} prompts for {batch} images")
    set_sam3_input_size(sam3, (width, height))
    param = next(sam3.parameters())
    pixel_values = pixel_values.to(param.device, param.dtype)
    text_len = sam3.config.text_config.max_position_embeddings
    with_box = [i for i, p in enumerate(prompts) if p.box_xywh is not None]
    without = [i for i, p in enumerate(prompts) if p.box_xywh is None]
    parts: list[dict[str, Any]] = []
    order: list[int] = []
    for idx in (with_box, without):
        if not idx:
            continue
        text = tokenizer(
            [prompts[i].sam3_text for i in idx],
            padding="max_length",
            max_length=text_len,
            truncation=True,
            return_tensors="pt",
        )
        inputs: dict[str, torch.Tensor] = {
            "input_ids": text["input_ids"].to(param.device),
            "attention_mask": text["attention_mask"].to(param.device),
        }
        if idx is with_box:
            boxes = [[prompts[i].box_cxcywh(image_size)] for i in idx]
            inputs["input_boxes"] = torch.tensor(boxes, dtype=param.dtype, device=param.device)
            inputs["input_boxes_labels"] = torch.ones(
                len(idx), 1, dtype=torch.long, device=param.device
            )
        captured: dict[str, Any] = {}
        hook = sam3.detr_encoder.register_forward_hook(
            lambda _m, _a, output, store=captured: store.__setitem__("encoder", output)
        )
        try:
            out = (call or sam3)(pixel_values=pixel_values[idx], **inputs)
        finally:
            hook.remove()
        encoder = captured["encoder"]
        parts.append(
            {
                "tokens": encoder.last_hidden_state,
                "grid_hw": tuple(int(v) for v in encoder.spatial_shapes[0]),
                "pred_masks": out.pred_masks,
                "pred_logits": out.pred_logits,
                "presence_logits": out.presence_logits.reshape(len(idx), -1),
            }
        )
        order += idx
    inverse = torch.argsort(torch.tensor(order, device=param.device))
    result: dict[str, Any] = {"grid_hw": parts[0]["grid_hw"]}
    for key in ("tokens", "pred_masks", "pred_logits", "presence_logits"):
        result[key] = torch.cat([p[key] for p in parts])[inverse]
    return result


def best_query(outputs: dict[str, Any], size: tuple[int, int]) -> Sam3Result:
    """``sam3_forward``'s choice: the query with the highest score sigmoid(logit) x
    sigmoid(presence), its mask logits bilinearly resized to ``size`` = (H, W)."""
    scores = outputs["pred_logits"].sigmoid() * outputs["presence_logits"][:, :1].sigmoid()
    best = scores.argmax(dim=1)
    rows = torch.arange(best.shape[0], device=best.device)
    masks = outputs["pred_masks"][rows, best][:, None]
    masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
    return Sam3Result(
        tokens=outputs["tokens"],
        grid_hw=outputs["grid_hw"],
        mask_logits=masks,
        score=scores[rows, best],
        query_index=best,
    )


def sam3_prompted(
    sam3: Sam3Model,
    pixel_values: torch.Tensor,
    prompts: Sequence[Sam3Prompt],
    tokenizer: CLIPTokenizer,
    image_size: tuple[int, int],
) -> Sam3Result:
    """:func:`~depth_perception.models.sam3_io.sam3_forward` with one prompt per image."""
    outputs = sam3_outputs(sam3, pixel_values, prompts, tokenizer, image_size)
    return best_query(outputs, tuple(pixel_values.shape[-2:]))


class FocusDepthNet(FocusDepthModel):
    """:class:`FocusDepthModel` whose ``forward`` also takes one prompt per image
    (``prompts=``, :func:`sam3_prompted`) or runs DA2 alone (``da2_only=True``), so the
    trainer's (DDP-wrapped) network does a training step in one call. Same parameters and
    names as the model: its state dict is a FocusDepth checkpoint's."""

    def forward(  # type: ignore[override]
        self,
        da2_pixel_values: torch.Tensor,
        sam3_pixel_values: torch.Tensor | None = None,
        prompt: Sam3Prompt | None = None,
        *,
        prompts: Sequence[Sam3Prompt] | None = None,
        image_size: tuple[int, int] | None = None,
        sam3_no_grad: bool = False,
        da2_only: bool = False,
        reconstruction: bool = False,
        **kwargs: Any,
    ) -> FocusDepthOutput | torch.Tensor:
        """``reconstruction``: (B,) :meth:`FocusDepthModel.mssa_reconstruction` instead
        (with ``prompts``; SAM3 without autograd)."""
        if da2_only:
            depth = self.depth_model(pixel_values=da2_pixel_values).predicted_depth
            return FocusDepthOutput(depth, None, None, None, ())  # type: ignore[arg-type]
        if prompts is None:
            return super().forward(da2_pixel_values, sam3_pixel_values, prompt, **kwargs)
        if self.tokenizer is None:
            raise ValueError("prompts need SAM3's tokenizer (model.tokenizer)")
        size = image_size or tuple(sam3_pixel_values.shape[-1:-3:-1])
        with torch.set_grad_enabled(
            torch.is_grad_enabled() and not (sam3_no_grad or reconstruction)
        ):
            result = sam3_prompted(self.sam3, sam3_pixel_values, prompts, self.tokenizer, size)
        if reconstruction:
            return self.mssa_reconstruction(da2_pixel_values, result.tokens, result.grid_hw)
        return super().forward(da2_pixel_values, sam3_result=result)


def reset_decoder_init(depth_model: nn.Module, output_bias: float = 0.1) -> None:
    """PyTorch's default initialisation for the convolutions of a from-scratch DA2's neck and
    head. transformers draws them from N(0, 0.02), which at the tiny widths makes the output
    ~1e-7 everywhere: a constant to the per-image scale-and-shift fit, so no gradient would
    ever flow (the fit gives a constant prediction scale 0). Kaiming-uniform gives a spread
    the fit can use; the last convolution's bias is then set to ``output_bias`` (> 0) because
    a negative draw leaves the output ReLU dead for every pixel (seen for 3 of 5 seeds)."""
    for module in [*depth_model.neck.modules(), *depth_model.head.modules()]:
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            module.reset_parameters()
    with torch.no_grad():
        depth_model.head.conv3.bias.fill_(output_bias)


def close_gates(model: FocusDepthModel) -> None:
    """G = 0 in every MSSA block (gate weight 0, bias -1e4; sigmoid underflows to exactly 0),
    so the depth is DA2's own, bit for bit."""
    with torch.no_grad():
        for block in model.mssa:
            block.gate.weight.zero_()
            block.gate.bias.fill_(-1e4)


def aligned_depth(
    disparity: torch.Tensor, target: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Metric depth (B, H, W) of relative disparity (B, 1, H, W): per image the least-squares
    scale and shift onto the target's disparity 1 / depth over ``valid`` (target > 0), then
    1 / max(aligned, :data:`MIN_DISPARITY`)."""
    ok = valid.bool() & (target > 0)
    target_disp = torch.where(ok, 1.0 / torch.where(ok, target, 1.0), 0.0)
    aligned, _, _ = scale_shift_align(disparity.float(), target_disp.float(), ok)
    return (1.0 / aligned.clamp_min(MIN_DISPARITY))[:, 0]


def _trainable_modules(prefixes: Sequence[str]) -> list[str]:
    return [p.rstrip(".") for p in prefixes]


def set_modes(model: nn.Module, prefixes: Sequence[str]) -> None:
    """Eval mode everywhere (frozen parts: no dropout, fixed statistics), train mode on the
    modules of the trained ``prefixes``."""
    model.eval()
    for name in _trainable_modules(prefixes):
        model.get_submodule(name).train()


def check_groups(
    groups: dict[str, list[tuple[str, nn.Parameter]]], wanted: Sequence[tuple[str, nn.Parameter]]
) -> None:
    """The optimizer's groups must hold exactly ``wanted`` (the stage's parameters)."""
    got = {n for members in groups.values() for n, _ in members}
    want = {n for n, _ in wanted}
    if got != want:
        raise ValueError(
            "optim.groups must cover exactly the stage's trainable parameters; missing "
            f"{sorted(want - got)[:5]}, extra {sorted(got - want)[:5]}"
        )


# ---------------------------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------------------------


class FocusDepthTask(Task):
    """FocusDepth stage 1 / stage 2 / the DA2-ft baseline (module docstring)."""

    name = "focusdepth"

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        f = cfg.focus
        if f.stage not in STAGES:
            raise ValueError(f"focus.stage must be one of {STAGES}, got {f.stage!r}")
        validate_focus(cfg)
        if f.val_prompt not in PROMPT_KINDS:
            raise ValueError(f"focus.val_prompt {f.val_prompt!r}: one of {PROMPT_KINDS}")
        if bool(f.init_da2) != bool(f.init_sam3):
            raise ValueError("focus.init_da2 and focus.init_sam3 go together (both or neither)")
        if f.init_da2 and cfg.model.init_checkpoint:
            raise ValueError("give model.init_checkpoint or focus.init_da2 + init_sam3, not both")
        weights = (f.glb_weight, f.fg_weight, f.bd_weight, f.seg_weight, f.grad_weight)
        if any(w < 0 for w in weights):
            raise ValueError("focus loss weights must be >= 0")
        self.tokenizer: CLIPTokenizer | None = None

    @property
    def stage(self) -> int | str:
        return self.cfg.focus.stage

    @property
    def prefixes(self) -> tuple[str, ...]:
        """Parameter-name prefixes trained in this stage."""
        if self.stage == "da2_ft":
            train_encoder = self.cfg.focus.da2_ft_train_encoder
            return DA2_ENCODER + DA2_DECODER if train_encoder else DA2_DECODER
        if self.stage == "mssa_init":
            return STAGE_PREFIXES[1]
        if self.stage == 2 and self.cfg.focus.stage2_train_depth_encoder:
            return STAGE_PREFIXES[2] + DA2_ENCODER
        return STAGE_PREFIXES[int(self.stage)]

    def stage_parameters(self, model: FocusDepthModel) -> list[tuple[str, nn.Parameter]]:
        if self.stage == "mssa_init":  # the gates are not in the reconstruction
            return [
                (n, p)
                for n, p in model.named_parameters()
                if n.startswith("mssa.") and ".gate." not in n
            ]
        if self.stage == "da2_ft" or self.prefixes != STAGE_PREFIXES[int(self.stage)]:
            return [(n, p) for n, p in model.named_parameters() if n.startswith(self.prefixes)]
        return model.stage_parameters(int(self.stage))

    # --- the network -----------------------------------------------------------------------

    def build_model(self) -> FocusDepthNet:
        cfg, f = self.cfg, self.cfg.focus
        size = (f.input_size, f.input_size)
        if cfg.model.init_checkpoint:
            loaded = load_focusdepth(cfg.model.init_checkpoint)
            model = FocusDepthNet(
                loaded.depth_model, loaded.sam3, loaded.mssa_config, loaded.tokenizer
            )
            model.mssa.load_state_dict(loaded.mssa.state_dict())
            log.info("initialised from FocusDepth %s", cfg.model.init_checkpoint)
        elif f.init_da2:
            parts = FocusDepthModel.from_pretrained_parts(f.init_da2, f.init_sam3, input_size=size)
            mssa = cfg.model.config.get("mssa") if cfg.model.config else None
            model = FocusDepthNet(parts.depth_model, parts.sam3, mssa, parts.tokenizer)
            log.info("DA2 from %s, SAM3 from %s, fresh MSSA", f.init_da2, f.init_sam3)
        elif cfg.model.config is not None:
            model = FocusDepthNet.from_config(cfg.model.config)
        else:
            if cfg.model.preset != "tiny":
                raise ValueError(f"unknown FocusDepth preset {cfg.model.preset!r} (known: tiny)")
            from transformers import DepthAnythingForDepthEstimation, Sam3Model

            tokenizer = resolve_tokenizer(f.tokenizer)
            da2, sam3 = tiny_configs(f.input_size, max(128, len(tokenizer)))
            model = FocusDepthNet(
                DepthAnythingForDepthEstimation(da2), Sam3Model(sam3), None, tokenizer
            )
            reset_decoder_init(model.depth_model)
        if f.tokenizer:  # an explicit tokenizer wins over a checkpoint's
            model.tokenizer = load_sam3_tokenizer(f.tokenizer)
        elif model.tokenizer is None:
            model.tokenizer = resolve_tokenizer(None)
        self.tokenizer = model.tokenizer
        if self.stage == "da2_ft":
            close_gates(model)
        trainable = {n for n, _ in self.stage_parameters(model)}
        for name, param in model.named_parameters():
            param.requires_grad_(name in trainable)
        set_modes(model, self.prefixes)
        return model

    def build_from_config(self, model_config: dict) -> FocusDepthNet:
        return FocusDepthNet.from_config(model_config)

    def save_export(self, model: FocusDepthModel, directory: Path) -> None:
        """Our FocusDepth checkpoint (``load_focusdepth``), with SAM3's tokenizer."""
        model.tokenizer = self.tokenizer
        save_focusdepth(model, directory)

    # --- optimisation ----------------------------------------------------------------------

    def parameter_groups(self, model: FocusDepthModel) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """``optim.groups`` patterns (usually none: one group, ``optim.rest_name``) over the
        stage's parameters (less those ``model.freeze`` names), checked to be exactly them."""
        groups = assign_groups(model.named_parameters(), self.cfg.optim)
        wanted = [(n, p) for n, p in self.stage_parameters(model) if p.requires_grad]
        check_groups(groups, wanted)  # model.freeze may hold back some of them
        return groups

    # --- data ------------------------------------------------------------------------------

    def dataset_options(self, train: bool) -> dict[str, Any]:
        f = self.cfg.focus
        kinds = dict(f.prompt_kinds) if train else {f.val_prompt: 1.0}
        return {
            "instances": True,
            "target_choice": TargetChoice(kinds=kinds, min_pixels=f.min_target_pixels),
        }

    # --- a step ----------------------------------------------------------------------------

    def forward(
        self, trainer: Trainer, net: nn.Module, batch: dict, train: bool, kind: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(relative disparity (B, 1, H, W), mask logits (B, 1, H, W) or None for da2_ft) at
        the sample's size, float32."""
        image = batch["image"]
        _, _, h, w = image.shape
        dev = trainer.device
        da2, sam3 = branch_inputs(image, self.cfg.focus.input_size)
        with trainer.autocast():
            if self.stage == "da2_ft":
                out = net(da2.to(dev), da2_only=True)
            else:
                out = net(
                    da2.to(dev),
                    sam3.to(dev),
                    prompts=batch_prompts(batch, kind),
                    image_size=(w, h),
                    sam3_no_grad=train and self.stage == 1,
                )
        disparity = F.interpolate(
            out.depth[:, None].float(), size=(h, w), mode="bilinear", align_corners=False
        )
        logits = None
        if out.mask_logits is not None:
            logits = F.interpolate(
                out.mask_logits.float(), size=(h, w), mode="bilinear", align_corners=False
            )
        return disparity, logits

    def _reconstruction_loss(
        self, trainer: Trainer, batch: dict
    ) -> tuple[torch.Tensor, dict[str, float], dict]:
        """``mssa_init``: the mean of :meth:`FocusDepthModel.mssa_reconstruction` over the
        global batch's images (every image: the reconstruction needs no target)."""
        image = batch["image"]
        _, _, h, w = image.shape
        da2, sam3 = branch_inputs(image, self.cfg.focus.input_size)
        with trainer.autocast():
            per_image = trainer.net(
                da2.to(trainer.device),
                sam3.to(trainer.device),
                prompts=batch_prompts(batch),
                image_size=(w, h),
                reconstruction=True,
            )
        total = per_image.float().sum()
        stats = torch.stack([total.detach(), total.new_tensor(float(len(per_image)))]).double()
        all_reduce_sum(stats, trainer.info)
        loss = trainer.info.world_size * total / float(stats[1].clamp_min(1))
        value = float(stats[0] / stats[1].clamp_min(1))
        empty = torch.zeros(0, 3, 1, 1)
        return (
            loss,
            {"loss": value, "loss/recon": value},
            {"image": empty, "depth": empty, "pred": empty, "target": empty},
        )

    def loss(self, trainer: Trainer, batch: dict) -> tuple[torch.Tensor, dict[str, float], dict]:
        f, dev, info = self.cfg.focus, trainer.device, trainer.info
        set_modes(trainer.model, self.prefixes)  # the trainer put everything in train mode
        if self.stage == "mssa_init":
            return self._reconstruction_loss(trainer, batch)
        disparity, logits = self.forward(trainer, trainer.net, batch, train=True)
        target = batch["target"].to(dev)
        valid = batch["valid"].to(dev)
        mask = batch["target_mask"].to(dev)
        has = batch["has_target"].to(dev)
        sums, counts, seg_parts, aligned = [], [], [], []
        for i in range(disparity.shape[0]):
            sl = slice(i, i + 1)
            parts = focusdepth_loss(
                disparity[sl],
                target[sl],
                valid[sl],
                mask[sl],
                None if logits is None else logits[sl],
                r=f.band_radius,
                grad_weight=f.grad_weight,
                detach_alignment=f.detach_alignment,
            )
            ok = valid[sl] & (target[sl] > 0)
            m = mask[sl]
            use = has[i].float()
            flags = torch.stack(
                [
                    ok.any(),
                    (ok & m).any(),
                    (ok & boundary_band(m, f.band_radius)).any(),
                    torch.ones((), dtype=torch.bool, device=dev),
                ]
            ).float()
            flags = flags * use
            sums.append(torch.stack([parts.glb, parts.fg, parts.bd, parts.seg]) * flags)
            counts.append(flags)
            seg_parts.append(torch.stack([parts.bce, parts.dice]).detach() * use)
            aligned.append(
                parts.scale.reshape(1, 1, 1, 1) * disparity[sl].detach()
                + parts.shift.reshape(1, 1, 1, 1)
            )
        sums_t, counts_t = torch.stack(sums), torch.stack(counts)  # (B, 4)
        if logits is None:
            counts_t[:, 3] = 0.0
        local = sums_t.sum(dim=0)
        stats = torch.cat(
            [local.detach(), counts_t.sum(dim=0), torch.stack(seg_parts).sum(dim=0)]
        ).double()
        all_reduce_sum(stats, info)
        n = stats[4:8].clamp_min(1).float()
        w = torch.tensor([f.glb_weight, f.fg_weight, f.bd_weight, f.seg_weight], device=dev)
        # Each term: mean over the global batch's images with pixels in its region; x world
        # size undoes DDP's gradient averaging.
        loss = info.world_size * (w * local / n).sum()
        terms = stats[:4] / stats[4:8].clamp_min(1)
        n_img = float(stats[7].clamp_min(1))
        scalars = {
            "loss": float((w.double().cpu() * terms.cpu()).sum()),
            "loss/glb": float(terms[0]),
            "loss/fg": float(terms[1]),
            "loss/bd": float(terms[2]),
            "loss/seg": float(terms[3]),
            "loss/bce": float(stats[8] / n_img),
            "loss/dice": float(stats[9] / n_img),
            "targets": float(stats[7]) if logits is not None else float(stats[4]),
        }
        disp = torch.cat(aligned).clamp_min(MIN_DISPARITY)
        view = {
            "image": batch["image"],
            "depth": batch["depth"],
            "pred": 1.0 / disp,
            "target": target,
        }
        return loss, scalars, view

    # --- validation ------------------------------------------------------------------------

    @torch.no_grad()
    def predict_batch(self, trainer: Trainer, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Metric depth: the relative output aligned to the ground truth per image (module
        docstring), prompted with ``focus.val_prompt``."""
        model = trainer.model
        model.eval()
        disparity, _ = self.forward(
            trainer, model, batch, train=False, kind=self.cfg.focus.val_prompt
        )
        set_modes(model, self.prefixes)
        dev = trainer.device
        depth = aligned_depth(disparity, batch["target"].to(dev), batch["valid"].to(dev))
        return depth.cpu(), batch["depth"]


def validate_focus(cfg: TrainConfig) -> None:
    """Checks shared by the FocusDepth tasks: the input size, the band, the target draw, and
    no Collate resizing (instance masks are sized by the augmentation)."""
    f = cfg.focus
    if f.input_size < 14 or f.input_size % 14:
        raise ValueError(f"focus.input_size must be a positive multiple of 14, got {f.input_size}")
    if f.band_radius < 1:
        raise ValueError("focus.band_radius must be >= 1 pixel")
    TargetChoice(kinds=dict(f.prompt_kinds), min_pixels=f.min_target_pixels)  # raises
    if cfg.task != "da2_pretrain" and (cfg.data.size or cfg.val.size):
        raise ValueError(
            "data.size / val.size resize after the target's mask and box are drawn: size the "
            "samples with data.augment.out_size instead"
        )

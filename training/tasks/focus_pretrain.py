"""FocusDepth's two pretrained parts, trained here because no pretrained weights exist on this
machine: a tiny Depth Anything V2 on our synthetic depth (``task: da2_pretrain``) and a tiny
SAM3 on our synthetic instance masks (``task: sam3_pretrain``). Both export a
``transformers`` directory (``save_pretrained``; SAM3 with its tokenizer), what
``focus.init_da2`` / ``focus.init_sam3`` and ``FocusDepthModel.from_pretrained_parts`` read.
The networks are :func:`~depth_perception.models.focusdepth.tiny_configs` at
``focus.input_size`` unless ``model.config`` gives another transformers config (as a dict) or
``model.init_checkpoint`` a transformers directory to continue from.

``da2_pretrain``: the image through DA2's preprocessing at S x S, DA2's relative disparity
resized back to the sample; per image the scale-and-shift-invariant disparity loss of MiDaS
/ DA2: least-squares scale and shift onto the target's disparity over its valid pixels
(detached or not by ``focus.detach_alignment``, as FocusDepth's L_glb), then masked MSE +
``focus.grad_weight`` x the 4-scale gradient matching loss, i.e. exactly FocusDepth's L_glb;
the mean over the global batch's images with a valid pixel. Validation: the aligned
prediction in metres, as the focusdepth task scores it. Trainable: everything but Dinov2's
unused ``mask_token``.

``sam3_pretrain``: the image through SAM3's preprocessing at S x S with the sample's target
prompt (box, text or both, drawn as for FocusDepth); every query's mask is resized to the
sample and scored against the target's mask with BCE + Dice; the best query (lowest cost,
detached: a one-object DETR matching) is trained with BCE + Dice, and the scores
(``focus.score_weight``) with BCE: its query logit towards 1, the other queries' towards 0,
the presence logit towards 1, so that inference's arg-max query is the matched one. No depth
validation (``val.data`` must be empty): the logged ``iou`` of the arg-max query is its
measure.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from depth_perception.models.focusdepth import tiny_configs
from depth_perception.models.focusdepth_losses import (
    gradient_loss,
    masked_mse,
    scale_shift_align,
    segmentation_loss,
)
from depth_perception.models.sam3_io import load_sam3_model, sam3_pixel_values
from training.config import TrainConfig
from training.dataset import TargetChoice
from training.distributed import all_reduce_sum
from training.tasks.base import Task
from training.tasks.focusdepth import (
    MIN_DISPARITY,
    _uint8_images,
    aligned_depth,
    batch_prompts,
    reset_decoder_init,
    resolve_tokenizer,
    sam3_outputs,
    validate_focus,
)

if TYPE_CHECKING:
    from transformers import DepthAnythingForDepthEstimation, Sam3Model

    from training.trainer import Trainer

log = logging.getLogger("training.tasks.focus_pretrain")


class Da2PretrainTask(Task):
    """A tiny DA2 on synthetic depth (module docstring)."""

    name = "da2_pretrain"

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        validate_focus(cfg)

    def build_model(self) -> DepthAnythingForDepthEstimation:
        from transformers import DepthAnythingForDepthEstimation

        mc = self.cfg.model
        if mc.init_checkpoint:
            model = DepthAnythingForDepthEstimation.from_pretrained(
                mc.init_checkpoint, local_files_only=True
            )
        elif mc.config is not None:
            model = self.build_from_config(mc.config)
        else:
            if mc.preset != "tiny":
                raise ValueError(f"unknown DA2 preset {mc.preset!r} (known: tiny)")
            model = DepthAnythingForDepthEstimation(tiny_configs(self.cfg.focus.input_size)[0])
        if not mc.init_checkpoint:
            reset_decoder_init(model)
        return model.train()

    def frozen(self, model: nn.Module) -> list[str]:
        # Dinov2's mask_token takes no part in depth estimation (no gradient would stall DDP).
        return [*self.cfg.model.freeze, "backbone.embeddings.mask_token"]

    def model_config(self, model: DepthAnythingForDepthEstimation) -> dict:
        return model.config.to_dict()

    def build_from_config(self, model_config: dict) -> DepthAnythingForDepthEstimation:
        from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation

        return DepthAnythingForDepthEstimation(DepthAnythingConfig.from_dict(dict(model_config)))

    def save_export(self, model: DepthAnythingForDepthEstimation, directory: Path) -> None:
        model.save_pretrained(str(directory))

    def disparity(self, trainer: Trainer, net: nn.Module, image: torch.Tensor) -> torch.Tensor:
        """DA2's relative disparity (B, 1, H, W) float32 at the sample's size."""
        from depth_perception.models.sam3_io import da2_pixel_values

        size = self.cfg.focus.input_size
        _, _, h, w = image.shape
        pixels = torch.cat([da2_pixel_values(x, (size, size)) for x in _uint8_images(image)])
        with trainer.autocast():
            out = net(pixel_values=pixels.to(trainer.device)).predicted_depth
        return F.interpolate(
            out[:, None].float(), size=(h, w), mode="bilinear", align_corners=False
        )

    def loss(self, trainer: Trainer, batch: dict) -> tuple[torch.Tensor, dict[str, float], dict]:
        dev, info = trainer.device, trainer.info
        disparity = self.disparity(trainer, trainer.net, batch["image"])
        target = batch["target"].to(dev)
        ok = batch["valid"].to(dev) & (target > 0)
        target_disp = torch.where(ok, 1.0 / torch.where(ok, target, 1.0), 0.0)
        # focus.detach_alignment: false in the CPU config -- from scratch, a detached fit's
        # scale explodes as the prediction flattens, and the output ReLU died within 300-600
        # steps at lr 1e-3, 3e-4 and 1e-4 (grad norm 20, then 0).
        detach = self.cfg.focus.detach_alignment
        aligned, _, _ = scale_shift_align(disparity, target_disp, ok, detach=detach)
        per_image = masked_mse(aligned, target_disp, ok) + self.cfg.focus.grad_weight * (
            gradient_loss(aligned, target_disp, ok)
        )
        has = ok.flatten(1).any(dim=1).float()
        loss_sum = (per_image * has).sum()
        stats = torch.stack([loss_sum.detach(), has.sum()]).double()
        all_reduce_sum(stats, info)
        n = stats[1].clamp_min(1)
        loss = info.world_size * loss_sum / n.float()
        pred = 1.0 / aligned.detach().clamp_min(MIN_DISPARITY)
        view = {"image": batch["image"], "depth": batch["depth"], "pred": pred, "target": target}
        return loss, {"loss": float(stats[0] / n)}, view

    @torch.no_grad()
    def predict_batch(self, trainer: Trainer, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        model = trainer.model
        model.eval()
        disparity = self.disparity(trainer, model, batch["image"])
        model.train()
        dev = trainer.device
        depth = aligned_depth(disparity, batch["target"].to(dev), batch["valid"].to(dev))
        return depth.cpu(), batch["depth"]


class Sam3PretrainTask(Task):
    """A tiny SAM3 on synthetic instance masks with box / text prompts (module docstring)."""

    name = "sam3_pretrain"

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        validate_focus(cfg)
        if cfg.val.data:
            raise ValueError("sam3_pretrain has no depth to validate: leave val.data empty")
        if cfg.focus.score_weight < 0:
            raise ValueError("focus.score_weight must be >= 0")
        self.tokenizer = None

    def build_model(self) -> Sam3Model:
        from transformers import Sam3Config, Sam3Model

        mc, f = self.cfg.model, self.cfg.focus
        size = (f.input_size, f.input_size)
        tokenizer = None
        if mc.init_checkpoint:
            model = load_sam3_model(mc.init_checkpoint, input_size=size)
            try:
                tokenizer = resolve_tokenizer(f.tokenizer or mc.init_checkpoint)
            except FileNotFoundError:
                tokenizer = None
        elif mc.config is not None:
            model = Sam3Model(Sam3Config.from_dict(dict(mc.config)))
        else:
            if mc.preset != "tiny":
                raise ValueError(f"unknown SAM3 preset {mc.preset!r} (known: tiny)")
            tokenizer = resolve_tokenizer(f.tokenizer)
            model = Sam3Model(tiny_configs(f.input_size, max(128, len(tokenizer)))[1])
        self.tokenizer = tokenizer or resolve_tokenizer(f.tokenizer)
        if len(self.tokenizer) > model.config.text_config.vocab_size:
            raise ValueError(
                f"the tokenizer's {len(self.tokenizer)} tokens exceed SAM3's text vocabulary "
                f"of {model.config.text_config.vocab_size}"
            )
        return model.train()

    def model_config(self, model: Sam3Model) -> dict:
        return model.config.to_dict()

    def build_from_config(self, model_config: dict) -> Sam3Model:
        from transformers import Sam3Config, Sam3Model

        return Sam3Model(Sam3Config.from_dict(dict(model_config)))

    def save_export(self, model: Sam3Model, directory: Path) -> None:
        """A transformers directory with the tokenizer's files next to the weights
        (``load_sam3_model`` / ``load_sam3_tokenizer`` read both from it)."""
        model.save_pretrained(str(directory))
        self.tokenizer.save_pretrained(str(directory))

    def dataset_options(self, train: bool) -> dict[str, Any]:
        f = self.cfg.focus
        choice = TargetChoice(kinds=dict(f.prompt_kinds), min_pixels=f.min_target_pixels)
        return {"instances": True, "target_choice": choice}

    def loss(self, trainer: Trainer, batch: dict) -> tuple[torch.Tensor, dict[str, float], dict]:
        dev, info, size = trainer.device, trainer.info, self.cfg.focus.input_size
        image = batch["image"]
        _, _, h, w = image.shape
        pixels = torch.cat([sam3_pixel_values(x, (size, size)) for x in _uint8_images(image)])
        with trainer.autocast():
            out = sam3_outputs(
                trainer.model,
                pixels.to(dev),
                batch_prompts(batch),
                self.tokenizer,
                (w, h),
                call=trainer.net,
            )
        masks = F.interpolate(
            out["pred_masks"].float(), size=(h, w), mode="bilinear", align_corners=False
        )  # (B, Q, H, W)
        batch_n, queries = masks.shape[:2]
        target = batch["target_mask"].to(dev).expand(-1, queries, -1, -1)
        flat = masks.reshape(batch_n * queries, 1, h, w)
        bce, dice = segmentation_loss(flat, target.reshape(batch_n * queries, 1, h, w))
        cost = (bce + dice).reshape(batch_n, queries)
        matched = cost.detach().argmin(dim=1)
        rows = torch.arange(batch_n, device=dev)
        seg = cost[rows, matched]
        logits = out["pred_logits"].float()
        onehot = F.one_hot(matched, queries).to(logits.dtype)
        score = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none").mean(dim=1)
        presence = out["presence_logits"][:, 0].float()
        score = score + F.binary_cross_entropy_with_logits(
            presence, torch.ones_like(presence), reduction="none"
        )
        has = batch["has_target"].to(dev).float()
        per_image = seg + self.cfg.focus.score_weight * score
        loss_sum = (per_image * has).sum()
        with torch.no_grad():  # IoU of inference's choice, the arg-max score
            best = (logits.sigmoid() * presence.sigmoid()[:, None]).argmax(dim=1)
            pred = masks[rows, best] > 0
            gt = batch["target_mask"].to(dev)[:, 0]
            inter = (pred & gt).flatten(1).sum(1).float()
            union = (pred | gt).flatten(1).sum(1).float().clamp_min(1)
            iou = inter / union
        stats = torch.stack(
            [loss_sum.detach(), has.sum(), (seg.detach() * has).sum(), (iou * has).sum()]
        ).double()
        all_reduce_sum(stats, info)
        n = stats[1].clamp_min(1)
        loss = info.world_size * loss_sum / n.float()
        scalars = {
            "loss": float(stats[0] / n),
            "loss/seg": float(stats[2] / n),
            "iou": float(stats[3] / n),
        }
        shown = (masks[rows, best].detach() > 0).float()[:, None]
        view = {
            "image": image,
            "depth": batch["depth"],
            "pred": shown,
            "target": gt[:, None].float(),
        }
        return loss, scalars, view

    def predict_batch(self, trainer: Trainer, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        raise ValueError("sam3_pretrain has no depth prediction to validate")

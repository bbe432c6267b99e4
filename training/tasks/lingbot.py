"""LingBot-Depth as a training task: RGB-D completion by masked depth modeling.

Per step (:meth:`LingBotTask.loss`):

1. the model input depth is the raw sensor depth, or with probability ``data.corrupt.p``
   ``corrupt_depth(target, random level)`` (:func:`corrupt_inputs`);
2. every sample gets its masked-depth-modeling token mask (``training_token_mask``) from a
   generator seeded by (seed, epoch, sample key), and the step's token budget is drawn from
   (seed, iteration) (:func:`sample_token_masks`, :meth:`LingBotTask.num_tokens`);
3. loss = L1 on valid target pixels + BCE of the confidence head, each normalised by its
   pixel count over the *global* batch (:func:`lingbot_loss`).

Validation runs the model as inference does (top of the token range, no training mask) on the
raw depth or ``corrupt_depth(gt, val.corrupt_level)``; the export is LingBot's
``save_checkpoint`` format (``load_model``, ``eval-bag --pipeline lingbot``, the ROS node).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from depth_perception.models.blocks.vit import Block
from depth_perception.models.checkpoints import (
    init_encoder_from_dinov2,
    load_model,
    save_checkpoint,
)
from depth_perception.models.lingbot import (
    PRESETS,
    LingBotDepth,
    depth_l1_loss,
    patch_valid_counts,
    training_token_mask,
    valid_depth,
)
from depth_perception.sim.sensors import corrupt_depth
from training.config import CorruptConfig, LossConfig, MaskingConfig, ModelConfig
from training.distributed import DistInfo, all_reduce_sum
from training.tasks.base import (
    STREAM_CORRUPT,
    STREAM_MASK,
    STREAM_TOKENS,
    STREAM_VAL,
    Task,
    sample_seed,
    torch_generator,
)

if TYPE_CHECKING:
    from training.trainer import Trainer

log = logging.getLogger("training.tasks.lingbot")


def build_model(cfg: ModelConfig) -> LingBotDepth:
    """Initial weights: a fine-tuning checkpoint, or a fresh preset / model_config; then
    optionally the DINOv2 encoder weights (the paper starts from DINOv2 ViT-L/14)."""
    if cfg.init_checkpoint:
        model = load_model(cfg.init_checkpoint)
    elif cfg.config is not None:
        model = LingBotDepth.from_config(cfg.config)
    else:
        if cfg.preset not in PRESETS:
            raise ValueError(f"unknown preset {cfg.preset!r}; known: {sorted(PRESETS)}")
        model = LingBotDepth.from_config(PRESETS[cfg.preset].model_config())
    if cfg.init_dinov2:
        untouched = init_encoder_from_dinov2(model, cfg.init_dinov2)
        log.info("encoder initialised from %s (kept fresh: %s)", cfg.init_dinov2, untouched)
    return model


def corrupt_inputs(batch: dict, seed: int, spec: CorruptConfig) -> torch.Tensor:
    """The depth the model sees: the raw depth, or with probability ``spec.p`` per sample
    ``corrupt_depth(target, random level)`` (the evaluation protocol's holes and noise).
    (B, 1, H, W) metres, 0 = hole; draws keyed by (seed, epoch, sample key)."""
    if spec.p <= 0:
        return batch["depth"]
    out = batch["depth"].clone()
    for i, key in enumerate(batch["key"]):
        rng = np.random.default_rng(sample_seed(seed, int(batch["epoch"][i]), key, STREAM_CORRUPT))
        if rng.random() < spec.p:
            level = spec.levels[int(rng.integers(len(spec.levels)))]
            out[i, 0] = _corrupted(batch["target"][i, 0], level, rng)
    return out


def sample_token_masks(
    depth: torch.Tensor,
    keys: list[str],
    epochs: torch.Tensor,
    grid: tuple[int, int],
    patch_size: int,
    seed: int,
    masking: MaskingConfig,
) -> torch.Tensor:
    """(B, rows * cols) masked-depth-modeling masks (True = depth token hidden), each from
    its sample's own generator. Valid-pixel counts per patch are computed exactly as the
    encoder does: nearest resize of the input depth to the token grid, then ``valid_depth``."""
    rows, cols = grid
    p = patch_size
    valid = valid_depth(F.interpolate(depth, (rows * p, cols * p), mode="nearest"))
    counts = patch_valid_counts(valid, p)
    masks = [
        training_token_mask(
            counts[i : i + 1],
            p * p,
            torch_generator(sample_seed(seed, int(epochs[i]), key, STREAM_MASK)),
            mixed_mask_prob=masking.mixed_mask_prob,
            ratio_range=tuple(masking.ratio_range),
        )
        for i, key in enumerate(keys)
    ]
    return torch.cat(masks)


def lingbot_loss(
    out: dict[str, torch.Tensor],
    target: torch.Tensor,
    valid: torch.Tensor,
    has_gt: torch.Tensor,
    cfg: LossConfig,
    info: DistInfo,
) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss to back-propagate on this rank, means over the global batch for logging).

    ``depth_weight`` x L1 over valid target pixels (``depth_l1_loss``) + ``mask_weight`` x
    BCE of ``confidence`` against target validity over the pixels of samples with ground
    truth (``has_gt``; a self-supervised target's holes are sensor failures, not places to
    reject). Each term is normalised by its pixel count over all ranks; the factor
    ``world_size`` undoes the gradient averaging of DDP / FSDP, so the update equals the
    single-process update on the global batch.
    """
    pred = out["depth"].float()
    target, valid = target[:, 0], valid[:, 0]
    ok = torch.isfinite(target) & (target > 0) & valid
    n_depth = ok.sum()
    depth_sum = depth_l1_loss(pred, target, valid) * n_depth
    if "confidence" in out and cfg.mask_weight > 0:
        conf = out["confidence"].float()
        weight = has_gt[:, None, None].to(conf.dtype).expand_as(conf)
        bce = F.binary_cross_entropy(conf, ok.to(conf.dtype), reduction="none")
        mask_sum, n_mask = (bce * weight).sum(), weight.sum()
    else:
        mask_sum = n_mask = pred.new_zeros(())
    stats = torch.stack([t.detach().double() for t in (n_depth, n_mask, depth_sum, mask_sum)])
    all_reduce_sum(stats, info)
    n_d, n_m = stats[0].clamp_min(1), stats[1].clamp_min(1)
    loss = info.world_size * (
        cfg.depth_weight * depth_sum / n_d.float() + cfg.mask_weight * mask_sum / n_m.float()
    )
    depth_mean, mask_mean = float(stats[2] / n_d), float(stats[3] / n_m)
    total = cfg.depth_weight * depth_mean + cfg.mask_weight * mask_mean
    return loss, {"loss": total, "loss/depth": depth_mean, "loss/mask": mask_mean}


def _corrupted(target: torch.Tensor, level: str, rng: np.random.Generator) -> torch.Tensor:
    """``corrupt_depth`` of a (H, W) target tensor (0 = invalid) -> (H, W), 0 = hole."""
    t = target.numpy()
    z = corrupt_depth(np.where(t > 0, t, np.nan).astype(np.float32), level, rng)
    return torch.from_numpy(np.nan_to_num(z, nan=0.0))


class LingBotTask(Task):
    """LingBot-Depth (module docstring)."""

    name = "lingbot"
    shard_modules = (Block,)

    def build_model(self) -> LingBotDepth:
        return build_model(self.cfg.model)

    def frozen(self, model: LingBotDepth) -> list[str]:
        patterns = list(self.cfg.model.freeze)
        if self.cfg.loss.mask_weight == 0 or model.mask_head is None:
            patterns.append("mask_head.*")  # untrained: keep it out of DDP's reduction
        return patterns

    def setup(self, model: LingBotDepth) -> None:
        self.patch_size = model.encoder.patch_size

    def build_from_config(self, model_config: dict) -> LingBotDepth:
        return LingBotDepth.from_config(model_config)

    def save_export(self, model: LingBotDepth, directory: Path) -> None:
        save_checkpoint(model, directory)

    # --- per-step randomness ------------------------------------------------------------

    def num_tokens(self, trainer: Trainer, step: int) -> int:
        """The step's token budget (drawn from (seed, step): the same on every rank)."""
        spec = self.cfg.model.num_tokens
        if isinstance(spec, int):
            return spec
        lo, hi = spec if spec is not None else trainer.model.num_tokens_range
        return int(np.random.default_rng([self.cfg.seed, step, STREAM_TOKENS]).integers(lo, hi + 1))

    # --- a step ---------------------------------------------------------------------------

    def loss(self, trainer: Trainer, batch: dict) -> tuple[torch.Tensor, dict[str, float], dict]:
        cfg, dev = self.cfg, trainer.device
        image = batch["image"].to(dev, non_blocking=True)
        target = batch["target"].to(dev, non_blocking=True)
        valid = batch["valid"].to(dev, non_blocking=True)
        has_gt = (~batch["self_supervised"]).to(dev)
        depth_in = corrupt_inputs(batch, cfg.seed, cfg.data.corrupt).to(dev, non_blocking=True)
        num_tokens = self.num_tokens(trainer, trainer.step)
        rows, cols = trainer.model.token_grid(image.shape[-2], image.shape[-1], num_tokens)
        mask = sample_token_masks(
            depth_in,
            batch["key"],
            batch["epoch"],
            (rows, cols),
            self.patch_size,
            cfg.seed,
            cfg.masking,
        )
        with trainer.autocast():
            out = trainer.net(image, depth_in, num_tokens, depth_token_mask=mask)
        loss, scalars = lingbot_loss(out, target, valid, has_gt, cfg.loss, trainer.info)
        scalars["num_tokens"] = num_tokens
        view = {"image": image, "depth": depth_in, "pred": out["depth"].detach(), "target": target}
        return loss, scalars, view

    # --- inference and validation -------------------------------------------------------

    @torch.no_grad()
    def predict(
        self,
        trainer: Trainer,
        image: torch.Tensor,
        depth: torch.Tensor,
        num_tokens: int | None = None,
    ) -> torch.Tensor:
        """Dense depth (B, H, W) float32 as validation computes it: inference token rule,
        the top of the token range unless ``num_tokens``; no confidence masking."""
        model = trainer.model
        model.eval()
        num_tokens = num_tokens or self.cfg.val.num_tokens or model.num_tokens_range[1]
        with trainer.autocast():
            out = model(image.to(trainer.device), depth.to(trainer.device), num_tokens)
        model.train()
        return out["depth"].float()

    def predict_batch(self, trainer: Trainer, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Input: the raw depth, or ``corrupt_depth(gt, val.corrupt_level)`` drawn per sample
        from (seed, sample key)."""
        depth = batch["depth"]
        level = self.cfg.val.corrupt_level
        if level:
            depth = depth.clone()
            for i, key in enumerate(batch["key"]):
                rng = np.random.default_rng(sample_seed(self.cfg.seed, 0, key, STREAM_VAL))
                depth[i, 0] = _corrupted(batch["target"][i, 0], level, rng)
        return self.predict(trainer, batch["image"], depth), depth

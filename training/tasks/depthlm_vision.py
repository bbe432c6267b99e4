"""Pretraining a DepthLM vision tower to see the marker and the depth under it (issue 13).

DepthLM fine-tunes a VLM whose vision tower already sees: a web-pretrained ViT knows where a
red arrow is and has a sense of depth. A tiny Qwen2.5-VL built from random weights does not,
and three SFT runs from random weights learnt the answer template and each scene's scale but
never the arrow (training/README.md, DepthLM). This task gives the tiny model's tower that
prior on our own synthetic data first, as ``da2_pretrain`` / ``sam3_pretrain`` do for
FocusDepth; the SFT (``task: depthlm``) then starts from its export.

The samples are exactly the SFT's (:class:`~training.tasks.depthlm.DepthLMSamples`: focal
normalisation, crop fitted to the processor grid, one marked image per labelled pixel). The
images go through the processor and the vision tower including its patch merger -- the tokens
the language model reads -- and a linear probe on each merged token gives two numbers:

- a marker logit: cross-entropy over the image's tokens against the token that holds the
  marked pixel (``(y // m) * W_t + x // m``, ``m`` = patch x merge = 28 for Qwen2.5-VL);
- the log distance (the SFT's own label: range or z) read at that token: L1 in log space.

With ``depthlm.token_depth_weight`` w > 0 the same log-distance output is also trained at
every merged token against the mean log distance of all the frame's eligible labels inside it
(:func:`~training.tasks.depthlm.token_log_distances`): L1 averaged over the labelled tokens. A
marker and one label per image teach the tower little about depth; the dense target gives it
the whole frame's.

``loss = CE + L1 + w * dense L1`` per marked image, averaged over the global batch's marked
images. Only the
vision tower and merger train (``model.freeze`` also applies); the language model is frozen
and untouched. The probe is not exported: the export is the DepthLM directory
(:meth:`DepthLMTask.save_export`) with the pretrained tower and the language model as built.

Validation (the SFT's validation pixels and frames): ``delta1`` and ``abs_rel`` of the probe's
distance at the true marker token, and ``marker_acc``, the share of images whose arg-max token
is the marker's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from training.distributed import all_reduce_sum
from training.optim import assign_groups
from training.tasks.depthlm import DepthLMSamples, DepthLMTask, batch_rows

if TYPE_CHECKING:
    from training.trainer import Trainer

#: Parameters the pretraining never changes: the language model and its head.
LANGUAGE_PATTERNS = ("vlm.model.language_model.*", "vlm.lm_head.*")


class VisionProbeNet(nn.Module):
    """The VLM plus a linear probe (marker logit, log distance) on its merged vision tokens."""

    def __init__(self, vlm: nn.Module) -> None:
        super().__init__()
        self.vlm = vlm
        width = vlm.config.vision_config.out_hidden_size
        self.probe = nn.Linear(width, 2)

    def forward(
        self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """Per image, (tokens, 2): [:, 0] marker logit, [:, 1] log distance (row-major tokens of
        the merged grid)."""
        out = self.vlm.model.get_image_features(pixel_values, image_grid_thw=image_grid_thw)
        return tuple(self.probe(tokens) for tokens in out.pooler_output)


def marker_tokens(marked: np.ndarray, grid_thw: torch.Tensor, merge: int, patch: int) -> list[int]:
    """Index of the merged token holding each marked pixel (x, y), row-major per image."""
    side = merge * patch
    width = (grid_thw[:, 2] // merge).tolist()
    return [
        int(y) // side * int(w) + int(x) // side for (x, y), w in zip(marked, width, strict=True)
    ]


class DepthLMVisionTask(DepthLMTask):
    """``task: depthlm_vision`` (module docstring). Qwen2.5-VL only."""

    name = "depthlm_vision"

    def build_model(self) -> nn.Module:
        vlm = super().build_model()
        if self.architecture != "qwen2_5_vl" or self.cfg.depthlm.lora.enabled:
            raise ValueError("task depthlm_vision: a Qwen2.5-VL model without LoRA")
        return VisionProbeNet(vlm)

    def frozen(self, model: nn.Module) -> list[str]:
        return [*self.cfg.model.freeze, *LANGUAGE_PATTERNS]

    def model_config(self, model: nn.Module) -> dict:
        return super().model_config(model.vlm)

    def build_from_config(self, model_config: dict) -> nn.Module:
        return VisionProbeNet(super().build_from_config(model_config))

    def save_export(self, model: nn.Module, directory: Path) -> None:
        super().save_export(model.vlm, directory)

    def parameter_groups(self, model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """``optim.groups`` by pattern (e.g. ``vision``: ``*visual.*``), the rest (the probe)
        in ``optim.rest_name``."""
        return assign_groups(model.named_parameters(), self.cfg.optim)

    def sample_transform(self, train: bool) -> DepthLMSamples:
        samples = super().sample_transform(train)
        if self.cfg.depthlm.token_depth_weight > 0:
            samples.token_side = samples.grid.multiple
        return samples

    # --- a step ----------------------------------------------------------------------------

    def _rows(
        self, batch: dict
    ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
        """(marked images, marked pixels (n, 2), distances, per image its frame's (token_log,
        token_count) -- empty without the dense target) of every labelled pixel."""
        images, _, _, values = batch_rows(batch)
        marked = [entry["marked"].reshape(-1, 2) for entry in batch["depthlm"]]
        tokens = [
            (entry["token_log"], entry["token_count"])
            for entry in batch["depthlm"]
            if "token_log" in entry
            for _ in entry["images"]
        ]
        xy = np.concatenate(marked) if marked else np.zeros((0, 2), np.int64)
        return images, xy, values, tokens

    def _forward(
        self, trainer: Trainer, images: list[np.ndarray], marked: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(marker logits per image: list padded to (n, T_max) with -inf, log distance at the
        marker token (n,), marker token index (n,), log distance per token of each image)."""
        enc = self.processor.image_processor(
            images=[Image.fromarray(im) for im in images], return_tensors="pt"
        )
        pixel_values = enc["pixel_values"].to(trainer.device)
        grid_thw = enc["image_grid_thw"].to(trainer.device)
        vision = trainer.model.vlm.config.vision_config
        targets = marker_tokens(
            marked, grid_thw.cpu(), vision.spatial_merge_size, vision.patch_size
        )
        with trainer.autocast():
            per_image = trainer.net(pixel_values, grid_thw)
        longest = max(len(p) for p in per_image)
        logits = torch.full((len(per_image), longest), -math.inf, device=trainer.device)
        log_at = []
        for i, (p, t) in enumerate(zip(per_image, targets, strict=True)):
            logits[i, : len(p)] = p[:, 0].float()
            log_at.append(p[t, 1].float())
        index = torch.tensor(targets, device=trainer.device)
        return logits, torch.stack(log_at), index, [p[:, 1].float() for p in per_image]

    @staticmethod
    def _token_l1(
        per_token: list[torch.Tensor], tokens: list[tuple[np.ndarray, np.ndarray]]
    ) -> torch.Tensor:
        """Sum over images of the mean |log distance - token target| over labelled tokens."""
        total = per_token[0].new_zeros(())
        for pred, (log, count) in zip(per_token, tokens, strict=True):
            if len(log) != len(pred):
                raise ValueError(f"token target of {len(log)} tokens for {len(pred)} tokens")
            labelled = torch.as_tensor(count > 0, device=pred.device)
            if labelled.any():
                target = torch.as_tensor(log, device=pred.device)
                total = total + (pred - target).abs()[labelled].mean()
        return total

    def loss(self, trainer: Trainer, batch: dict) -> tuple[torch.Tensor, dict[str, float], dict]:
        info = trainer.info
        images, marked, values, tokens = self._rows(batch)
        weight = 1.0
        if not images:  # DDP needs a forward on every rank: one weightless dummy image
            image, _, _ = self._dummy_row()
            side = image.shape[0]
            images, marked, values, weight = [image], np.array([[side // 2, side // 2]]), [1.0], 0.0
        logits, log_pred, index, per_token = self._forward(trainer, images, marked)
        log_true = torch.log(torch.as_tensor(values, dtype=torch.float32, device=trainer.device))
        ce = F.cross_entropy(logits, index, reduction="sum")
        l1 = (log_pred - log_true).abs().sum()
        w_dense = self.cfg.depthlm.token_depth_weight
        dense = self._token_l1(per_token, tokens) if tokens and weight else l1.new_zeros(())
        hits = (logits.argmax(-1) == index).sum()
        stats = torch.tensor(
            [
                float(ce.detach()) * weight,
                float(l1.detach()) * weight,
                float(hits) * weight,
                len(images) * weight,
                float(dense.detach()) * weight,
            ],
            dtype=torch.float64,
            device=trainer.device,
        )
        all_reduce_sum(stats, info)
        n = stats[3].clamp_min(1.0)
        loss = info.world_size * weight * (ce + l1 + w_dense * dense) / n.float()
        scalars = {
            "loss": float((stats[0] + stats[1] + w_dense * stats[4]) / n),
            "marker_ce": float(stats[0] / n),
            "log_l1": float(stats[1] / n),
            "marker_acc": float(stats[2] / n),
        }
        if w_dense > 0:
            scalars["token_l1"] = float(stats[4] / n)
        empty = torch.zeros(0, 3, 1, 1)
        return loss, scalars, {"image": empty, "depth": empty, "pred": empty, "target": empty}

    @torch.no_grad()
    def validate(self, trainer: Trainer, batches: Iterable[dict]) -> dict[str, Any]:
        model = trainer.model
        was_training = model.training
        model.eval()
        sums = torch.zeros(4, dtype=torch.float64, device=trainer.device)
        try:
            for batch in batches:
                images, marked, values, _ = self._rows(batch)
                if not images:
                    continue
                logits, log_pred, index, _ = self._forward(trainer, images, marked)
                pred = log_pred.exp().double().cpu().numpy()
                ratio = np.maximum(pred / values, values / pred)
                sums += torch.tensor(
                    [
                        float((ratio < 1.25).sum()),
                        float((np.abs(pred - values) / values).sum()),
                        float((logits.argmax(-1) == index).sum()),
                        len(images),
                    ],
                    dtype=torch.float64,
                    device=trainer.device,
                )
        finally:
            model.train(was_training)
        all_reduce_sum(sums, trainer.info)
        n = float(sums[3])
        if not n:
            return {"delta1": math.nan, "abs_rel": math.nan, "marker_acc": math.nan, "pixels": 0}
        return {
            "delta1": float(sums[0]) / n,
            "abs_rel": float(sums[1]) / n,
            "marker_acc": float(sums[2]) / n,
            "pixels": n,
        }


__all__ = ["DepthLMVisionTask", "VisionProbeNet", "marker_tokens"]

"""The MetricAnything prompt-free student as a training task: distillation (paper §3.3, §7.6).

Data: shards pseudo-labelled by the teacher (``python -m training.pseudo_label``) with
``data.target: pseudo`` (a sample with ground truth trains on it instead with probability
``data.gt_fraction``), or any extracted shards (``auto``: ground truth, else the sensor depth).

Per step (:meth:`MetricAnythingStudentTask.loss`): the image goes through the network as
``MetricAnythingDepth.infer`` sends it (:mod:`training.tasks.metric_anything`, shared with the
teacher) with the sample's own focal length; the canonical inverse depth comes back at the
sample's size and becomes metric depth ``fx / (W * canonical)``; the loss is
:func:`depth_perception.models.ma_losses.student_distillation_loss` per image: ``10 *
L_student + 2 * SSI-MAGE``, L_student the L1 between the distance-balanced log depths
``D_log = 1 - ln(D) / ln(C)`` (C = 400 m) of prediction and label, SSI-MAGE on D_log (on
pseudo-labels and ground truth; not on a raw sensor-depth target, whose edges are noise). The
batch loss is the mean over the images with a valid pixel of the *global* batch.
``student.pixel_loss`` swaps L_student for the paper's Table 14 comparisons (L1 on depth, on
log depth, on inverse depth).

Parameter groups: ``backbone`` (the ViT) and ``head`` (projections, decoder, depth head), named
by fnmatch patterns and ``optim.rest_name: head`` and checked against the network's own.
Fine-tuning starts from ``model.init_checkpoint``: our student directory, or the official
``student_depthmap.pt`` (loaded strictly, as the engine loads it). ``student.init_teacher``
starts a student from a teacher: every weight but the prompt branch (same shape and skip
order), or only those ``student.init_teacher_patterns`` select (``encoder.patch_encoder.*``: the
ViT, for the official inverted skip order). ``student.teacher_network`` makes the student the
teacher's own network without its prompt branch (the teacher's conventional skip order, not the
official student's), every weight starting as the teacher's: the CPU student's recipe, since a
0.34 M-parameter network with the inverted order, trained for 600 steps from the teacher's ViT,
stayed worse than the constant training median on validation.

The export is the MetricAnything checkpoint format with, in ``config.json``,
``train_median_depth_m``: the median of the training labels' valid depths over up to
``student.median_samples`` samples spread over the training set, the constant baseline's value
(:class:`depth_perception.engines.metric_anything.ConstantDepthEngine`).
"""

from __future__ import annotations

import json
import logging
from fnmatch import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from depth_perception.engines.metric_anything import TRAIN_MEDIAN_KEY
from depth_perception.models.ma_losses import STUDENT_PIXEL_LOSSES, student_distillation_loss
from depth_perception.models.metric_anything import MetricAnythingDepth
from depth_perception.models.metric_anything.checkpoints import load_model, save_checkpoint
from training.config import TrainConfig
from training.distributed import all_reduce_sum
from training.tasks.metric_anything import MetricAnythingTask, depth_from_canonical

if TYPE_CHECKING:
    from training.trainer import Trainer

log = logging.getLogger("training.tasks.ma_student")


def training_label_median(
    manifest: str | Path, target: str, samples: int, seed: int = 0
) -> tuple[float, int]:
    """(median of the valid label depths, samples read) over up to ``samples`` samples spread
    evenly over the manifest's training set, read as the trainer reads its targets."""
    from training.dataset import ShardDataset, spread_items

    read, items = spread_items(ShardDataset(manifest, seed=seed, target=target), samples)
    values = [item["target"][item["valid"]].numpy() for item in items]
    depths = np.concatenate(values) if values else np.zeros(0)
    if not depths.size:
        raise ValueError(f"{manifest}: no valid training label to take the median of")
    return float(np.median(depths)), read


class MetricAnythingStudentTask(MetricAnythingTask):
    """The MetricAnything student (module docstring)."""

    name = "ma_student"
    section = "student"

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        s = cfg.student
        if s.pixel_loss not in STUDENT_PIXEL_LOSSES:
            raise ValueError(
                f"student.pixel_loss {s.pixel_loss!r}: choose one of {list(STUDENT_PIXEL_LOSSES)}"
            )
        if s.median_samples < 1:
            raise ValueError("student.median_samples must be >= 1")
        if s.teacher_network:
            if not s.init_teacher:
                raise ValueError("student.teacher_network needs student.init_teacher")
            # The teacher's own network without its prompt branch (its skip order, its widths):
            # every weight of the student then starts as the teacher's.
            cfg.model.config = load_model(s.init_teacher).config.as_student().to_dict()
            cfg.model.init_checkpoint = None

    # --- the network -----------------------------------------------------------------------

    def load_checkpoint(self, checkpoint: str) -> MetricAnythingDepth:
        """Our student directory or the official ``student_depthmap.pt`` (strictly)."""
        from depth_perception.engines.metric_anything import load_student

        model, _ = load_student(checkpoint)
        return model

    def check_network(self, model: MetricAnythingDepth) -> None:
        if model.is_teacher:
            mc = self.cfg.model
            raise ValueError(
                f"{mc.init_checkpoint or mc.preset or 'model.config'} is a prompted teacher; "
                "the student task trains a prompt-free network (a student_* preset)"
            )

    def initialise(self, model: MetricAnythingDepth) -> bool:
        """Weights from a teacher (``student.init_teacher``), if configured: those whose names
        match ``student.init_teacher_patterns`` (fnmatch; default every weight but the prompt
        branch, for a student of the teacher's exact shape and skip order).
        ``encoder.patch_encoder.*`` takes the ViT only, which means the same whatever the
        decoder's skip order: how a student with the official inverted order starts from a
        teacher (some of the encoder's projections have other shapes there). True
        (trained weights, no output-bias reset) only when every weight was copied."""
        s = self.cfg.student
        if not s.init_teacher:
            return False
        teacher = load_model(s.init_teacher)
        source = {
            k: v for k, v in teacher.state_dict().items() if not k.startswith("prompt_branch.")
        }
        own = model.state_dict()
        chosen = [k for k in source if any(fnmatch(k, p) for p in s.init_teacher_patterns)]
        wrong = sorted(k for k in chosen if k not in own or source[k].shape != own[k].shape)
        if not chosen or wrong:
            raise ValueError(
                f"student.init_teacher {s.init_teacher}: patterns {s.init_teacher_patterns} "
                f"select {len(chosen)} weights; missing in the student or of another shape: "
                f"{wrong[:5]}"
            )
        if len(chosen) == len(own) and set(chosen) == set(own):
            model.load_state_dict({k: source[k] for k in chosen}, strict=True)
        else:
            with torch.no_grad():
                for k in chosen:
                    own[k].copy_(source[k])
        log.info(
            "student: %d of %d weights from the teacher %s (%s)",
            len(chosen),
            len(own),
            s.init_teacher,
            ", ".join(s.init_teacher_patterns),
        )
        return len(chosen) == len(own)

    def save_export(self, model: MetricAnythingDepth, directory: Path) -> None:
        """Our MetricAnything checkpoint; config.json adds the training labels' median depth
        (the constant baseline's value), the loss and the labels it was trained on."""
        from training.trainer import merged_manifest

        save_checkpoint(model, directory)
        cfg = self.cfg
        manifest = merged_manifest(cfg.data.train, Path(cfg.run_dir) / "data", "train")
        median, n = training_label_median(
            manifest, cfg.data.target, cfg.student.median_samples, cfg.seed
        )
        path = directory / "config.json"
        config = json.loads(path.read_text())
        config[TRAIN_MEDIAN_KEY] = median
        config["train_median_samples"] = n
        config["train_labels"] = cfg.data.target
        config["pixel_loss"] = cfg.student.pixel_loss
        path.write_text(json.dumps(config, indent=2) + "\n")

    # --- a step ----------------------------------------------------------------------------

    def loss(self, trainer: Trainer, batch: dict) -> tuple[torch.Tensor, dict[str, float], dict]:
        s, dev, info = self.cfg.student, trainer.device, trainer.info
        image = batch["image"].to(dev, non_blocking=True)
        target = batch["target"].to(dev, non_blocking=True)
        valid = batch["valid"].to(dev, non_blocking=True)
        fx = batch["intrinsics"][:, 0, 0].to(dev)
        dense = (~batch["self_supervised"]).to(dev)  # pseudo-label or ground truth
        canonical = self.training_canonical(trainer, image, None, fx)
        ratio = (fx / image.shape[-1]).reshape(-1, 1, 1, 1)
        pred = depth_from_canonical(canonical, ratio)
        parts = student_distillation_loss(
            pred,
            target,
            valid,
            use_ssi_mage=dense,
            student_weight=s.student_weight,
            ssi_mage_weight=s.ssi_mage_weight,
            c=s.log_depth_range,
            pixel_loss=s.pixel_loss,
        )
        has = valid.flatten(1).any(dim=1).to(pred.dtype)
        per_image = s.student_weight * parts.pixel + s.ssi_mage_weight * parts.ssi_mage
        loss_sum = (per_image * has).sum()
        with_grad = dense.to(pred.dtype) * has
        pseudo = batch.get("pseudo")
        pseudo = torch.zeros_like(has) if pseudo is None else pseudo.to(dev).to(has.dtype)
        stats = torch.stack(
            [
                loss_sum.detach(),
                has.sum(),
                (parts.pixel * has).sum().detach(),
                (parts.ssi_mage * with_grad).sum().detach(),
                with_grad.sum(),
                (pseudo * has).sum(),
            ]
        ).double()
        all_reduce_sum(stats, info)
        n = stats[1].clamp_min(1)
        # Mean over the images of the global batch; x world size undoes DDP's averaging.
        loss = info.world_size * loss_sum / n.float()
        scalars = {
            "loss": float(stats[0] / n),
            f"loss/{s.pixel_loss}": float(stats[2] / n),
            "loss/ssi_mage": float(stats[3] / stats[4].clamp_min(1)),
            "pseudo_fraction": float(stats[5] / n),
        }
        depth = batch["depth"].to(dev)
        view = {"image": image, "depth": depth, "pred": pred.detach(), "target": target}
        return loss, scalars, view

    # --- validation ------------------------------------------------------------------------

    def predict_batch(self, trainer: Trainer, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        fx = batch["intrinsics"][:, 0, 0]
        return self.predict(trainer, batch["image"], None, fx), batch["depth"]

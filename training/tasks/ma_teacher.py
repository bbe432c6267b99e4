"""The MetricAnything prompted teacher as a training task (paper §3.2, §7.2, §7.6).

Per sample, in the DataLoader workers (:class:`TeacherPrompts`, after augmentation):

1. a sparse metric prompt, drawn anew every epoch from (seed, epoch, sample key): a kind picked
   by ``teacher.prompt.kinds``' weights, then, for the paper's ``random`` kind, N ~ U[n_range]
   pixels (2,000 to 40,000 in the paper) of the ground truth, or of the sensor's own depth when
   the sample has no ground truth (self-supervised, as masked depth modeling); ``lidar`` /
   ``radar``: the sample's own scan projected into the augmented image; ``sensor``: the
   sensor's valid depth; ``lidar_like`` / ``extreme`` / ``down8`` / ``down16``: the paper's
   test-time variants drawn from the target (:func:`depth_perception.core.prompt_prep.make_prompt`).
   A ``lidar`` / ``radar`` draw for a sample without points of that sensor falls back to
   ``random``;
2. the prior P_d: the prompt-free model's depth stored with the sample (``extract --prior``,
   computed once per frame as the teacher engine computes it; augmented with the image);
3. PDSA and GMDR of P_d to the prompt and the [PDSA, GMDR, mask] input in metric disparity
   (:func:`depth_perception.core.prompt_prep.prepare_prompt`, ``space="disparity"``, as the
   engine's ``PROMPT_SPACE``).

Per step (:meth:`MetricAnythingTeacherTask.loss`): image and prompt go through the network as
``MetricAnythingDepth.infer`` sends them (:mod:`training.tasks.metric_anything`, shared with
the student), the canonical inverse depth comes back to the sample's size (bilinear), and the
loss is
``metric_anything_loss`` against the target's canonical inverse depth ``fx / (W * depth)``:
per image 15 * MAE + 5 * SSI-MAGE, full MAE and SSI-MAGE on ground truth from our simulator
(``teacher.synthetic_gt``), trimmed MAE alone on a self-supervised (sensor) target; the mean
over the images with a valid pixel of the *global* batch.

Parameter groups are the network's own (``MetricAnythingDepth.parameter_groups``): ``backbone``
(the ViT), ``prompt`` (the prompt branch) and ``head`` (projections, decoder, depth head); the
config names them with fnmatch patterns and ``optim.rest_name: head``, and the task checks that
the patterns give exactly the network's groups. Validation predicts as ``infer`` does with the
``teacher.prompt.val_kind`` prompt (drawn per sample with a fixed seed). The export is the
MetricAnything checkpoint format (``model.safetensors`` + ``config.json``) with the prior it was
trained with (``"prior"``), which the teacher engine then uses by default.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from depth_perception.core.prompt_prep import make_prompt, prepare_prompt, training_prompt
from depth_perception.core.prompts import sensor_depth_prompt
from depth_perception.models.ma_losses import metric_anything_loss
from depth_perception.models.metric_anything import MetricAnythingDepth
from depth_perception.models.metric_anything.checkpoints import (
    init_teacher_from_prompt_free,
    load_model,
    save_checkpoint,
)
from training.config import TrainConfig
from training.distributed import all_reduce_sum
from training.tasks.base import STREAM_PROMPT, STREAM_VAL_PROMPT, sample_seed
from training.tasks.metric_anything import MetricAnythingTask, depth_from_canonical

if TYPE_CHECKING:
    from training.trainer import Trainer

log = logging.getLogger("training.tasks.ma_teacher")

#: Prompt kinds a teacher can be trained with (module docstring).
PROMPT_KINDS = ("random", "lidar", "radar", "sensor", "lidar_like", "extreme", "down8", "down16")
#: The network's parameter groups (``MetricAnythingDepth.parameter_groups``).
GROUPS = ("backbone", "prompt", "head")
#: The teacher's prompt input space (the engine's ``PROMPT_SPACE``).
PROMPT_SPACE = "disparity"


def _nan_depth(t: torch.Tensor) -> np.ndarray:
    """(1, H, W) tensor, 0 = none -> (H, W) float32 metres, NaN = none."""
    d = t[0].numpy()
    return np.where(d > 0, d, np.nan).astype(np.float32)


def _zero_depth(d: np.ndarray) -> torch.Tensor:
    """(H, W) metres, NaN = none -> (1, H, W) float32 tensor, 0 = none."""
    return torch.from_numpy(np.where(np.isfinite(d) & (d > 0), d, 0.0).astype(np.float32))[None]


@dataclass
class TeacherPrompts:
    """The per-sample prompt draw and preparation (module docstring), a ``Collate`` transform:
    adds ``ma_prompt`` (3, H, W) [PDSA, GMDR, mask] in metric disparity, ``prompt_depth``
    (1, H, W) the sparse prompt (metres, 0 = none), ``prompt_kind`` (index into
    :data:`PROMPT_KINDS`) and ``prompt_points``. ``fixed_epoch``: draw as in this epoch
    whatever the sample's (validation)."""

    seed: int
    kinds: tuple[str, ...]
    weights: tuple[float, ...]
    n_range: tuple[int, int]
    prior: str
    stream: int = STREAM_PROMPT
    fixed_epoch: int | None = None

    def draw(self, kind: str, item: dict, rng: np.random.Generator) -> tuple[str, np.ndarray]:
        """(the kind drawn, after a fallback; the sparse prompt (H, W), NaN = none)."""
        if kind in ("lidar", "radar"):
            points = item["prompt" if kind == "lidar" else "radar_prompt"]
            if bool((points > 0).any()):
                return kind, _nan_depth(points)
            kind = "random"  # no scan for this sample
        target = _nan_depth(item["target"])
        if kind == "random":
            return kind, training_prompt(target, rng, self.n_range)
        if kind == "sensor":
            return kind, sensor_depth_prompt(_nan_depth(item["depth"]))
        return kind, make_prompt("lidar" if kind == "lidar_like" else kind, target, rng)

    def __call__(self, item: dict) -> dict:
        key = item["key"]
        name = item.get("prior_name")
        if name != self.prior:
            raise ValueError(
                f"sample {key}: its prior was computed with {name!r}, the config says "
                f"teacher.prior={self.prior!r} (re-extract with --prior {self.prior})"
            )
        epoch = self.fixed_epoch if self.fixed_epoch is not None else int(item.get("epoch", 0))
        rng = np.random.default_rng(sample_seed(self.seed, epoch, key, self.stream))
        choice = int(rng.choice(len(self.kinds), p=np.asarray(self.weights)))
        kind, sparse = self.draw(self.kinds[choice], item, rng)
        model_input, _ = prepare_prompt(_nan_depth(item["prior"]), sparse, space=PROMPT_SPACE)
        out = dict(item)
        out["ma_prompt"] = torch.from_numpy(model_input.tensor)
        out["prompt_depth"] = _zero_depth(sparse)
        out["prompt_kind"] = torch.tensor(PROMPT_KINDS.index(kind))
        out["prompt_points"] = torch.tensor(int(np.isfinite(sparse).sum()))
        return out


class MetricAnythingTeacherTask(MetricAnythingTask):
    """The MetricAnything teacher (module docstring)."""

    name = "ma_teacher"
    section = "teacher"

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        t = cfg.teacher
        unknown = sorted(set(t.prompt.kinds) - set(PROMPT_KINDS))
        if unknown or t.prompt.val_kind not in PROMPT_KINDS:
            raise ValueError(
                f"teacher.prompt: unknown kind(s) {unknown or [t.prompt.val_kind]}; "
                f"known: {PROMPT_KINDS}"
            )
        weights = np.array([float(w) for w in t.prompt.kinds.values()])
        if not len(weights) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"teacher.prompt.kinds needs positive weights, got {t.prompt.kinds}")
        lo, hi = t.prompt.n_range
        if not 0 < lo <= hi:
            raise ValueError(f"teacher.prompt.n_range must be 0 < low <= high, got {[lo, hi]}")
        self.kinds = tuple(t.prompt.kinds)
        self.weights = tuple(float(w) for w in weights / weights.sum())

    # --- the network -----------------------------------------------------------------------

    def load_checkpoint(self, checkpoint: str) -> MetricAnythingDepth:
        """A teacher checkpoint to fine-tune (e.g. the LiDAR teacher for the radar protocol)."""
        return load_model(checkpoint)

    def check_network(self, model: MetricAnythingDepth) -> None:
        if not model.is_teacher:
            mc = self.cfg.model
            raise ValueError(
                f"{mc.init_checkpoint or mc.preset or 'model.config'} is a prompt-free network; "
                "the teacher task trains a teacher (prompt_channels 3, a teacher_* preset)"
            )

    def initialise(self, model: MetricAnythingDepth) -> bool:
        """Every weight but the prompt branch from a prompt-free network of the same shape
        (``teacher.init_prompt_free``), if configured."""
        source = self.cfg.teacher.init_prompt_free
        if not source:
            return False
        init_teacher_from_prompt_free(model, load_model(source), source)
        log.info("teacher initialised from the prompt-free %s", source)
        return True

    def save_export(self, model: MetricAnythingDepth, directory: Path) -> None:
        """Our MetricAnything checkpoint, its config.json naming the prior (the engine's
        default prior for it) and the prompt space."""
        save_checkpoint(model, directory)
        path = directory / "config.json"
        config = json.loads(path.read_text())
        config["prior"] = self.cfg.teacher.prior
        config["prompt_space"] = PROMPT_SPACE
        path.write_text(json.dumps(config, indent=2) + "\n")

    # --- data ------------------------------------------------------------------------------

    def dataset_options(self, train: bool) -> dict:
        t = self.cfg.teacher.prompt
        kinds = set(self.kinds) if train else {t.val_kind}
        return {"lidar": "lidar" in kinds, "radar": "radar" in kinds, "prior": True}

    def sample_transform(self, train: bool) -> TeacherPrompts:
        t = self.cfg.teacher
        if train:
            kinds, weights, stream, epoch = self.kinds, self.weights, STREAM_PROMPT, None
        else:
            kinds, weights, stream, epoch = (t.prompt.val_kind,), (1.0,), STREAM_VAL_PROMPT, 0
        return TeacherPrompts(
            seed=self.cfg.seed,
            kinds=kinds,
            weights=weights,
            n_range=(int(t.prompt.n_range[0]), int(t.prompt.n_range[1])),
            prior=t.prior,
            stream=stream,
            fixed_epoch=epoch,
        )

    # --- a step ----------------------------------------------------------------------------

    def loss(self, trainer: Trainer, batch: dict) -> tuple[torch.Tensor, dict[str, float], dict]:
        t, dev, info = self.cfg.teacher, trainer.device, trainer.info
        image = batch["image"].to(dev, non_blocking=True)
        prompt = batch["ma_prompt"].to(dev, non_blocking=True)
        target = batch["target"].to(dev, non_blocking=True)
        valid = batch["valid"].to(dev, non_blocking=True)
        fx = batch["intrinsics"][:, 0, 0].to(dev)
        synthetic = (~batch["self_supervised"]).to(dev) & t.synthetic_gt
        w = image.shape[-1]
        canonical = self.training_canonical(trainer, image, prompt, fx)
        # The target in the same units: fx / (W * depth) (the sample's own fx and W).
        ratio = (fx / w).reshape(-1, 1, 1, 1)
        target_c = torch.where(valid, ratio / target.clamp_min(1e-6), 0.0)
        parts = metric_anything_loss(
            canonical,
            target_c,
            valid,
            synthetic,
            mae_weight=t.mae_weight,
            ssi_mage_weight=t.ssi_mage_weight,
            trim=t.trim,
        )
        has = valid.flatten(1).any(dim=1).to(canonical.dtype)
        per_image = t.mae_weight * parts.mae + t.ssi_mage_weight * parts.ssi_mage
        loss_sum = (per_image * has).sum()
        synth = synthetic.to(canonical.dtype) * has
        stats = torch.stack(
            [
                loss_sum.detach(),
                has.sum(),
                (parts.mae * has).sum().detach(),
                (parts.ssi_mage * synth).sum().detach(),
                synth.sum(),
                batch["prompt_points"].to(dev).to(canonical.dtype).sum(),
            ]
        ).double()
        all_reduce_sum(stats, info)
        n = stats[1].clamp_min(1)
        # Mean over the images of the global batch; x world size undoes DDP's averaging.
        loss = info.world_size * loss_sum / n.float()
        scalars = {
            "loss": float(stats[0] / n),
            "loss/mae": float(stats[2] / n),
            "loss/ssi_mage": float(stats[3] / stats[4].clamp_min(1)),
            "prompt_points": float(stats[5]) / (info.world_size * image.shape[0]),
        }
        with torch.no_grad():
            pred = depth_from_canonical(canonical.detach(), ratio)
        view = {
            "image": image,
            "depth": batch["prompt_depth"].to(dev),
            "pred": pred,
            "target": target,
        }
        return loss, scalars, view

    # --- inference and validation ----------------------------------------------------------

    def predict_batch(self, trainer: Trainer, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        fx = batch["intrinsics"][:, 0, 0]
        pred = self.predict(trainer, batch["image"], batch["ma_prompt"], fx)
        return pred, batch["prompt_depth"]

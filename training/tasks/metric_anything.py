"""What the MetricAnything tasks share: the network's construction, its parameter groups, and
its forward pass as ``MetricAnythingDepth.infer`` runs it (teacher: with a prompt; student:
without one).

The forward pass: image (and prompt) go through the network as ``infer`` sends them (ImageNet
normalisation, bilinear resize to the square network input, the prompt's disparities to
canonical units with the focal length of that input); the canonical inverse depth
``f / (W * depth)`` comes back at the network's size. In training mode the DINOv3 backbone's
RoPE draws a random coordinate rescale per block from torch's generator; the training forward
runs with that generator seeded from (seed, iteration), forked so the process's own stream is
untouched: the draws are the same on every rank and after a resume.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from depth_perception.models.blocks.dinov3 import SelfAttentionBlock, state_dict_from_transformers
from depth_perception.models.checkpoints import _read_hf_weights
from depth_perception.models.metric_anything import PRESETS, MetricAnythingDepth, normalize_image
from depth_perception.models.metric_anything.model import (
    MAX_INVERSE_DEPTH,
    MIN_INVERSE_DEPTH,
    width_over_focal,
)
from training.config import TrainConfig
from training.optim import assign_groups
from training.tasks.base import STREAM_FORWARD, Task, step_seed

if TYPE_CHECKING:
    from training.trainer import Trainer

log = logging.getLogger("training.tasks.metric_anything")


def network_input(
    model: MetricAnythingDepth,
    image: torch.Tensor,
    prompt: torch.Tensor | None,
    fx: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """As ``MetricAnythingDepth.infer`` prepares them: (normalised image at the square network
    input S, prompt at S (metric disparity) or None, the focal length of the S x S image (B,))."""
    size = (model.img_size, model.img_size)
    x = normalize_image(image)
    if tuple(image.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if prompt is not None:
            prompt = F.interpolate(prompt, size=size, mode="bilinear", align_corners=False)
    return x, prompt, fx * (model.img_size / image.shape[-1])


def depth_from_canonical(canonical: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """Metric depth of canonical inverse depth, ``ratio`` = fx / W per image (B, 1, 1, 1),
    clamped to the network's range as ``infer`` clamps it."""
    inverse = canonical / ratio
    return 1.0 / inverse.clamp(MIN_INVERSE_DEPTH, MAX_INVERSE_DEPTH)


class MetricAnythingTask(Task):
    """Base of the teacher and student tasks. Subclasses set :attr:`section` (the config
    section with ``init_output_bias`` and ``channels_last``) and implement
    :meth:`load_checkpoint` and :meth:`check_network`."""

    shard_modules: ClassVar[tuple[type[nn.Module], ...]] = (SelfAttentionBlock,)
    #: TrainConfig attribute of the method's own section.
    section: ClassVar[str] = ""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        if cfg.model.init_dinov2:
            raise ValueError(
                f"model.init_dinov2 is LingBot's; the {self.section} takes model.init_dinov3"
            )
        if self.options.channels_last and cfg.dist.strategy == "fsdp":
            raise ValueError(
                f"{self.section}.channels_last is for single-process / DDP runs, not FSDP"
            )

    @property
    def options(self):
        return getattr(self.cfg, self.section)

    # --- the network -----------------------------------------------------------------------

    @abstractmethod
    def load_checkpoint(self, checkpoint: str) -> MetricAnythingDepth:
        """The network of ``model.init_checkpoint`` (fine-tuning)."""

    @abstractmethod
    def check_network(self, model: MetricAnythingDepth) -> None:
        """Raise if ``model`` is not the kind this task trains (teacher / student)."""

    def initialise(self, model: MetricAnythingDepth) -> bool:
        """Task-specific initialisation of a built network; True when it set trained weights
        (then the from-scratch output bias is not applied)."""
        return False

    def build_model(self) -> MetricAnythingDepth:
        """A checkpoint to fine-tune (``model.init_checkpoint``), or a fresh preset / config,
        then the task's own initialisation and / or DINOv3 weights (``model.init_dinov3``); a
        network trained from scratch gets the head's last bias ``init_output_bias``."""
        mc = self.cfg.model
        if mc.init_checkpoint:
            model = self.load_checkpoint(mc.init_checkpoint)
            log.info("initialised from %s", mc.init_checkpoint)
        elif mc.config is not None:
            model = MetricAnythingDepth.from_config(mc.config)
        else:
            if mc.preset not in PRESETS:
                raise ValueError(
                    f"unknown MetricAnything preset {mc.preset!r}; known: {sorted(PRESETS)}"
                )
            model = MetricAnythingDepth(PRESETS[mc.preset])
        self.check_network(model)
        trained = self.initialise(model)
        if mc.init_dinov3:
            backbone = model.encoder.patch_encoder
            hf = _read_hf_weights(Path(mc.init_dinov3))
            weights = state_dict_from_transformers(hf, model.config.vit)
            backbone.load_state_dict(weights, strict=True)
            log.info("backbone initialised from DINOv3 %s", mc.init_dinov3)
        if not (mc.init_checkpoint or trained):
            with torch.no_grad():
                model.head[-2].bias.fill_(self.options.init_output_bias)
        if self.options.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model.train()

    def build_from_config(self, model_config: dict) -> MetricAnythingDepth:
        return MetricAnythingDepth.from_config(model_config)

    # --- optimisation ----------------------------------------------------------------------

    def parameter_groups(
        self, model: MetricAnythingDepth
    ) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """The config's pattern groups, checked to be exactly the network's backbone / prompt /
        head groups (trainable parameters only; a student has no prompt group)."""
        groups = assign_groups(model.named_parameters(), self.cfg.optim)
        names = {id(p): n for n, p in model.named_parameters()}
        wanted = {
            g: {id(p) for p in ps if p.requires_grad} for g, ps in model.parameter_groups().items()
        }
        wanted = {g: ids for g, ids in wanted.items() if ids}
        got = {g: {id(p) for _, p in members} for g, members in groups.items() if members}
        if got != wanted:
            wrong = {
                g: sorted(names[i] for i in got.get(g, set()) ^ wanted.get(g, set()))[:5]
                for g in set(got) | set(wanted)
                if got.get(g, set()) != wanted.get(g, set())
            }
            raise ValueError(
                "optim.groups must give the network's groups backbone (encoder.patch_encoder.*), "
                f"prompt (prompt_branch.*, teachers only) and, as optim.rest_name, head; "
                f"differences: {wrong}"
            )
        return groups

    # --- the forward pass ------------------------------------------------------------------

    def canonical(
        self,
        trainer: Trainer,
        net: nn.Module,
        image: torch.Tensor,
        prompt: torch.Tensor | None,
        fx: torch.Tensor,
    ) -> torch.Tensor:
        """Canonical inverse depth (B, 1, S, S) of ``net`` (the wrapped network in training,
        so DDP / FSDP see the forward)."""
        x, p, f_s = network_input(trainer.model, image, prompt, fx)
        if self.options.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
            if p is not None:
                p = p.contiguous(memory_format=torch.channels_last)
        with trainer.autocast():
            out = net(x, f_s) if p is None else net(x, f_s, p)
        return out["canonical_inverse_depth"]

    def training_canonical(
        self, trainer: Trainer, image: torch.Tensor, prompt: torch.Tensor | None, fx
    ) -> torch.Tensor:
        """The training forward (seeded RoPE draws, module docstring), float32, resized to the
        image (bilinear)."""
        dev = trainer.device
        devices = [dev] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(step_seed(self.cfg.seed, trainer.step, STREAM_FORWARD))
            canonical = self.canonical(trainer, trainer.net, image, prompt, fx).float()
        size = tuple(image.shape[-2:])
        return F.interpolate(canonical, size=size, mode="bilinear", align_corners=False)

    @torch.no_grad()
    def predict(
        self,
        trainer: Trainer,
        image: torch.Tensor,
        prompt: torch.Tensor | None,
        fx: torch.Tensor,
    ) -> torch.Tensor:
        """Dense depth (B, H, W) float32 as ``MetricAnythingDepth.infer``: image (B, 3, H, W)
        in [0, 1], prompt (B, 3, H, W) [PDSA, GMDR, mask] in metric disparity or None, fx (B,)."""
        model = trainer.model
        dev = trainer.device
        image, fx = image.to(dev), fx.to(dev)
        prompt = None if prompt is None else prompt.to(dev)
        h, w = image.shape[-2:]
        model.eval()
        canonical = self.canonical(trainer, model, image, prompt, fx)
        model.train()
        inverse = canonical.float() * width_over_focal(fx, w, image.shape[0], dev)
        if (h, w) != tuple(inverse.shape[-2:]):
            inverse = F.interpolate(inverse, size=(h, w), mode="bilinear", align_corners=False)
        return (1.0 / inverse.clamp(MIN_INVERSE_DEPTH, MAX_INVERSE_DEPTH))[:, 0]

"""AdamW with parameter groups by name pattern, and the paper's learning-rate schedule.

LingBot-Depth: the pretrained encoder (``*backbone*``) at 1e-5 with a 2,000-iteration linear
warm-up, everything else at 1e-4, all halved every 25,000 iterations; AdamW with betas
(0.9, 0.999) and weight decay 0.05. The schedule is a pure function of the iteration, so
resuming needs only the iteration number, and the value at any iteration can be checked
against the formula::

    lr_g(t) = lr_g * min(1, (t + 1) / warmup_g) * gamma ** (t // step_size)

(t = 0-based index of the iteration about to run; no warm-up factor when warmup_g = 0).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

import torch
from torch import nn

from training.config import OptimConfig, ScheduleConfig

log = logging.getLogger("training.optim")

REST = "rest"  # the default name of the group of parameters no pattern matches


@dataclass(frozen=True)
class GroupSpec:
    """One optimizer group as the schedule sees it."""

    name: str
    lr: float
    warmup_iters: int
    weight_decay: float


def group_specs(cfg: OptimConfig) -> list[GroupSpec]:
    """The configured groups, then the rest (``cfg.rest_name``); in matching order."""
    specs = [
        GroupSpec(
            g.name,
            g.lr,
            g.warmup_iters,
            cfg.weight_decay if g.weight_decay is None else g.weight_decay,
        )
        for g in cfg.groups
    ]
    specs.append(GroupSpec(cfg.rest_name, cfg.lr, cfg.warmup_iters, cfg.weight_decay))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(
            f"parameter group names must be unique (and not {cfg.rest_name!r}): {names}"
        )
    return specs


def assign_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]], cfg: OptimConfig
) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Group name -> its (name, parameter) pairs; the first group with a matching pattern
    wins, unmatched parameters go to the rest group; frozen parameters are left out."""
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {s.name: [] for s in group_specs(cfg)}
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        for g in cfg.groups:
            if any(fnmatchcase(name, pattern) for pattern in g.patterns):
                groups[g.name].append((name, param))
                break
        else:
            groups[cfg.rest_name].append((name, param))
    return groups


def build_optimizer(
    model: nn.Module,
    cfg: OptimConfig,
    groups: dict[str, list[tuple[str, nn.Parameter]]] | None = None,
) -> torch.optim.AdamW:
    """AdamW over ``model``'s trainable parameters in the configured groups (``groups``: an
    assignment already made, e.g. checked by a task; default :func:`assign_groups`). Each
    group dict carries its ``name`` (kept in the optimizer's state dict); empty groups are
    dropped."""
    specs = {s.name: s for s in group_specs(cfg)}
    if groups is None:
        groups = assign_groups(model.named_parameters(), cfg)
    param_groups = []
    for name, members in groups.items():
        if not members:
            log.warning("parameter group %r matches no trainable parameter", name)
            continue
        spec = specs[name]
        param_groups.append(
            {
                "name": name,
                "params": [p for _, p in members],
                "lr": spec.lr,
                "weight_decay": spec.weight_decay,
            }
        )
    if not param_groups:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(param_groups, betas=tuple(cfg.betas), eps=cfg.eps)


class LRSchedule:
    """Per-group learning rate as a function of the iteration (see the module docstring)."""

    def __init__(self, optim_cfg: OptimConfig, cfg: ScheduleConfig, iterations: int) -> None:
        self.specs = {s.name: s for s in group_specs(optim_cfg)}
        self.cfg = cfg
        self.iterations = int(iterations)
        if cfg.kind == "step" and cfg.step_size < 1:
            raise ValueError("schedule.step_size must be positive")

    def factor(self, step: int) -> float:
        """The decay multiplier shared by all groups."""
        cfg = self.cfg
        if cfg.kind == "step":
            return cfg.gamma ** (step // cfg.step_size)
        if cfg.kind == "cosine":
            progress = min(step / max(self.iterations, 1), 1.0)
            cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
            return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine
        return 1.0

    def lr(self, group: str, step: int) -> float:
        spec = self.specs[group]
        warm = min(1.0, (step + 1) / spec.warmup_iters) if spec.warmup_iters > 0 else 1.0
        return spec.lr * warm * self.factor(step)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> dict[str, float]:
        """Set every group's lr for iteration ``step``; returns {group: lr}."""
        lrs = {}
        for group in optimizer.param_groups:
            group["lr"] = lrs[group["name"]] = self.lr(group["name"], step)
        return lrs

    def state_dict(self) -> dict:
        """Recorded in checkpoints for reference: the schedule itself is stateless (a function
        of the iteration, which the checkpoint stores)."""
        return {"kind": self.cfg.kind, "iterations": self.iterations}

"""The training loop: one ``Trainer`` for every model config, one CPU process to many GPUs.

Per iteration (identical code in a single process, under DDP and under FSDP):

1. the learning rate of every parameter group is set from the iteration number
   (:class:`training.optim.LRSchedule`);
2. the model input depth is the raw sensor depth, or with probability ``data.corrupt.p``
   ``corrupt_depth(target, random level)``;
3. every sample gets its masked-depth-modeling token mask (``training_token_mask``) from a
   generator seeded by (seed, epoch, sample key), and the step's token budget is drawn from
   (seed, iteration). Randomness keyed by the *sample* rather than by a per-rank stream makes
   a step independent of how the global batch is split over ranks (a 2-GPU run computes what
   a 1-GPU run with the same global batch computes) and leaves no generator state that a
   resume could lose;
4. loss = L1 on valid target pixels + BCE of the confidence head, each normalised by its
   pixel count over the *global* batch (one all-reduce of four numbers), so DDP's gradient
   averaging yields exactly the single-process gradient of the global batch;
5. bf16 autocast on CUDA (fp16 with a grad scaler if asked), gradient clipping at 1.0,
   AdamW; a step with a non-finite gradient norm is skipped.

Every epoch all ranks run ``ShardLoader.steps_left()`` steps (floor(samples / global batch)
in a whole epoch), so no rank waits in an all-reduce for one that ran out; the samples are
dealt out interleaved (:mod:`training.dataset`), so step k holds the same samples for every
split of the same global batch: 2 processes x batch 2 compute what 1 process x batch 4
computes, step for step. Checkpoints (:mod:`training.checkpoint`) hold everything needed to
continue bitwise-identically on CPU, and the data position as a position in the epoch's
permutation, so a resume with another process count neither repeats nor skips a sample.

At every step boundary the ranks agree on whether any of them received a stop signal
(SIGTERM / SIGUSR1, :mod:`training.lifecycle`); if so, all of them checkpoint that step and
``fit`` returns with ``stopped_by`` set.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import random
import resource
import shutil
import time
import zlib
from fnmatch import fnmatchcase
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from tqdm import tqdm

from depth_perception.core.metrics import depth_metrics
from depth_perception.core.visualize import colorize_depth, depth_range
from depth_perception.models.blocks.vit import Block
from depth_perception.models.checkpoints import init_encoder_from_dinov2, load_model
from depth_perception.models.lingbot import (
    PRESETS,
    LingBotDepth,
    depth_l1_loss,
    patch_valid_counts,
    training_token_mask,
    valid_depth,
)
from depth_perception.sim.sensors import corrupt_depth
from training import checkpoint as ckpt
from training.config import (
    CorruptConfig,
    LossConfig,
    MaskingConfig,
    ModelConfig,
    TrainConfig,
    dump_config,
    to_dict,
)
from training.dataset import PARTITION, Collate, ShardDataset, ShardLoader
from training.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_max,
    all_reduce_sum,
    barrier,
    resolve_device,
    unwrap,
    wrap_model,
)
from training.lifecycle import (
    StopRequest,
    collective_failure_message,
    is_collective_failure,
    signal_name,
)
from training.optim import LRSchedule, build_optimizer
from training.shards import read_manifest

log = logging.getLogger("training.trainer")

METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
CONFIG_FILE = "config.yaml"
EXPORT_DIR = "export"
BEST_DIR = "best"
# Independent random streams derived from (seed, ...): one number per purpose.
STREAM_CORRUPT, STREAM_MASK, STREAM_TOKENS, STREAM_PROCESS, STREAM_VAL = range(5)


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


def sample_seed(seed: int, epoch: int, key: str, stream: int) -> np.random.SeedSequence:
    """Seed of one sample's draws in one epoch (same on every rank, whatever the partition)."""
    return np.random.SeedSequence([seed, epoch, zlib.crc32(key.encode()), stream])


def torch_generator(seq: np.random.SeedSequence) -> torch.Generator:
    return torch.Generator().manual_seed(int(seq.generate_state(1, np.uint64)[0] >> np.uint64(1)))


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


def freeze(model: torch.nn.Module, patterns: list[str]) -> list[str]:
    """Stop training parameters matching any fnmatch pattern; returns their names."""
    frozen = []
    for name, param in model.named_parameters():
        if any(fnmatchcase(name, p) for p in patterns):
            param.requires_grad_(False)
            frozen.append(name)
    return frozen


def merged_manifest(paths: list[str], out_dir: Path, label: str) -> Path:
    """One manifest for ``ShardDataset``: the given one, or several merged into ``out_dir``
    with absolute shard paths (named by content, so every rank may write it concurrently)."""
    if len(paths) == 1:
        return Path(paths[0])
    records = []
    for p in paths:
        root, recs = read_manifest(p)
        records += [{**r, "path": str((root / r["path"]).resolve())} for r in recs]
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    out_dir.mkdir(parents=True, exist_ok=True)
    return ckpt.write_text_atomic(text, out_dir / f"{label}-{digest}.jsonl")


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


def sample_panel(
    image: torch.Tensor, depth_in: torch.Tensor, pred: torch.Tensor, target: torch.Tensor
) -> np.ndarray:
    """rgb | input depth | prediction | target, side by side (H, 4W, 3) uint8; the three
    depth maps share the target's colour range so they can be compared."""
    rgb = (image.detach().float().permute(1, 2, 0).clamp(0, 1) * 255).round().byte().cpu().numpy()

    def metres(t: torch.Tensor) -> np.ndarray:
        d = t.detach().float().reshape(rgb.shape[:2]).cpu().numpy()
        return np.where(d > 0, d, np.nan).astype(np.float32)

    d_in, d_pred, d_gt = metres(depth_in), metres(pred), metres(target)
    lo, hi = depth_range(d_gt if np.isfinite(d_gt).any() else d_pred)
    maps = [colorize_depth(d, lo, hi) for d in (d_in, d_pred, d_gt)]
    return np.concatenate([rgb, *maps], axis=1)


def _memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


# ---------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------


class Trainer:
    """Builds model, optimizer, schedule and data from a :class:`TrainConfig` and trains.

    ``info`` says where this process sits (:func:`training.distributed.init_distributed`);
    without it the trainer runs as one process on ``cfg.device``. ``stop``: the stop requests
    (signals) this process has received, checked at every step boundary.
    """

    def __init__(
        self, cfg: TrainConfig, info: DistInfo | None = None, stop: StopRequest | None = None
    ) -> None:
        self.cfg = cfg.validate()
        self.info = info or DistInfo(device=resolve_device(cfg.device))
        self.stop = stop or StopRequest()
        self.stopped_by: int | None = None  # the signal fit() stopped for
        self.device = self.info.device
        self.run_dir = Path(cfg.run_dir)
        self.ckpt_root = self.run_dir / ckpt.CHECKPOINTS
        if cfg.threads:
            torch.set_num_threads(cfg.threads)

        precision = cfg.precision
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        self.precision = precision
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

        # The same initial weights on every rank (DDP broadcasts them anyway; FSDP does not).
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model)
        self.model_config = model.model_config
        patterns = list(cfg.model.freeze)
        if cfg.loss.mask_weight == 0 or model.mask_head is None:
            patterns.append("mask_head.*")  # untrained: keep it out of DDP's reduction
        self.frozen = freeze(model, patterns)
        self.patch_size = model.encoder.patch_size
        model.to(self.device)
        self.net = wrap_model(
            model,
            self.info,
            cfg.dist.strategy,
            bf16_params=self.amp_dtype == torch.bfloat16,
            shard_modules=(Block,),
            find_unused_parameters=cfg.dist.find_unused_parameters,
        )
        self.model = unwrap(self.net)  # the LingBotDepth (sharded in place under FSDP)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.schedule = LRSchedule(cfg.optim, cfg.schedule, cfg.iterations)
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        self._seed_process(cfg.seed)

        self.train_loader = self._loader(cfg.data.train, "train")
        # A whole epoch: the first floor(N / global batch) * global batch samples of its
        # permutation; the rest (fewer than a global batch) waits for another epoch.
        self.steps_per_epoch = self.train_loader.steps_per_epoch()
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"{self.info.world_size} rank(s) x batch {cfg.data.batch_size} need more "
                f"samples than the {self.train_loader.dataset.num_samples} in data.train"
            )
        self.val_loader = self._loader(cfg.val.data, "val") if cfg.val.data else None

        self.step = 0
        self.epoch = 0
        self.best: dict | None = None
        self.writer = None
        self._last_log = (time.perf_counter(), 0)
        self._saved_step: int | None = None  # the step of the last checkpoint written

    # --- setup helpers -------------------------------------------------------------------

    def _seed_process(self, seed: int, salt: int = 0) -> None:
        """Per-rank global generators (only libraries drawing from them rely on these)."""
        state = sample_seed(seed, salt, f"rank{self.info.rank}", STREAM_PROCESS).generate_state(2)
        random.seed(int(state[0]))
        np.random.seed(int(state[0]))  # noqa: NPY002 (the global one, for other libraries)
        torch.manual_seed(int(state[1]))

    def _loader(self, paths: list[str], label: str) -> ShardLoader:
        cfg = self.cfg
        train = label == "train"
        manifest = merged_manifest(paths, self.run_dir / "data", label)
        batch_size = cfg.data.batch_size if train else (cfg.val.batch_size or cfg.data.batch_size)
        size = cfg.data.size if train else cfg.val.size
        dataset = ShardDataset(
            manifest,
            augment_cfg=cfg.data.augment if train else None,
            seed=cfg.seed,
            rank=self.info.rank,
            world_size=self.info.world_size,
            target=cfg.data.target if train else cfg.val.target,
            batch_size=batch_size,
        )
        return ShardLoader(
            dataset,
            batch_size=batch_size,
            num_workers=cfg.data.num_workers,
            collate_fn=Collate(size=tuple(size) if size else None),
            pin_memory=self.device.type == "cuda",
        )

    @property
    def global_batch(self) -> int:
        return self.cfg.data.batch_size * self.info.world_size

    def _autocast(self):
        return torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=bool(self.amp_dtype)
        )

    # --- per-step randomness ------------------------------------------------------------

    def num_tokens(self, step: int) -> int:
        """The step's token budget (drawn from (seed, step): the same on every rank)."""
        spec = self.cfg.model.num_tokens
        if isinstance(spec, int):
            return spec
        lo, hi = spec if spec is not None else self.model.num_tokens_range
        return int(np.random.default_rng([self.cfg.seed, step, STREAM_TOKENS]).integers(lo, hi + 1))

    def input_depth(self, batch: dict) -> torch.Tensor:
        return corrupt_inputs(batch, self.cfg.seed, self.cfg.data.corrupt)

    # --- one step ------------------------------------------------------------------------

    def train_step(self, batch: dict) -> tuple[dict[str, float], dict]:
        """One optimisation step on this rank's part of the global batch. Returns the logged
        scalars and what the image logger needs."""
        dev = self.device
        lrs = self.schedule.apply(self.optimizer, self.step)
        self.net.train()
        image = batch["image"].to(dev, non_blocking=True)
        target = batch["target"].to(dev, non_blocking=True)
        valid = batch["valid"].to(dev, non_blocking=True)
        has_gt = (~batch["self_supervised"]).to(dev)
        depth_in = self.input_depth(batch).to(dev, non_blocking=True)
        num_tokens = self.num_tokens(self.step)
        rows, cols = self.model.token_grid(image.shape[-2], image.shape[-1], num_tokens)
        mask = sample_token_masks(
            depth_in,
            batch["key"],
            batch["epoch"],
            (rows, cols),
            self.patch_size,
            self.cfg.seed,
            self.cfg.masking,
        )
        with self._autocast():
            out = self.net(image, depth_in, num_tokens, depth_token_mask=mask)
        loss, scalars = lingbot_loss(out, target, valid, has_gt, self.cfg.loss, self.info)

        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = self.cfg.optim.grad_clip or math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a replicated DTensor
            grad_norm = grad_norm.full_tensor()
        grad_norm = float(grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skips non-finite steps itself
            self.scaler.update()
        elif math.isfinite(grad_norm):
            self.optimizer.step()
        else:
            log.warning("step %d: non-finite gradient norm, update skipped", self.step)
        self.optimizer.zero_grad(set_to_none=True)

        scalars["grad_norm"] = grad_norm
        scalars["num_tokens"] = num_tokens
        scalars.update({f"lr/{k}": v for k, v in lrs.items()})
        view = {"image": image, "depth": depth_in, "pred": out["depth"].detach(), "target": target}
        return scalars, view

    # --- inference and validation -------------------------------------------------------

    @torch.no_grad()
    def predict(
        self, image: torch.Tensor, depth: torch.Tensor, num_tokens: int | None = None
    ) -> torch.Tensor:
        """Dense depth (B, H, W) float32 as validation computes it: inference token rule,
        the top of the token range unless ``num_tokens``; no confidence masking."""
        self.model.eval()
        num_tokens = num_tokens or self.cfg.val.num_tokens or self.model.num_tokens_range[1]
        with self._autocast():
            out = self.model(image.to(self.device), depth.to(self.device), num_tokens)
        self.model.train()
        return out["depth"].float()

    def validate(self) -> dict[str, float]:
        """Mean per-image AbsRel / RMSE / delta1 (and MAE) over the held-out shards. Every rank
        runs the same number of batches (the shortest rank's, rounded up), which FSDP's
        collective forward needs; a longer rank skips at most one sample."""
        loader = self.val_loader
        if loader is None:
            return {}
        cfg = self.cfg.val
        loader.dataset.load_state_dict({"epoch": 0, "consumed": 0})
        n_batches = loader.steps_per_epoch(drop_last=False)
        if cfg.max_batches is not None:
            n_batches = min(n_batches, cfg.max_batches)
        sums = torch.zeros(5, dtype=torch.float64)
        first = None
        for batch in itertools.islice(loader, n_batches):
            depth = batch["depth"]
            if cfg.corrupt_level:
                depth = depth.clone()
                for i, key in enumerate(batch["key"]):
                    rng = np.random.default_rng(sample_seed(self.cfg.seed, 0, key, STREAM_VAL))
                    depth[i, 0] = _corrupted(batch["target"][i, 0], cfg.corrupt_level, rng)
            pred = self.predict(batch["image"], depth)
            target = batch["target"][:, 0].numpy()
            pred_np = pred.cpu().numpy()
            for j in range(pred_np.shape[0]):
                gt = np.where(target[j] > 0, target[j], np.nan)
                m = depth_metrics(pred_np[j], gt, max_depth=cfg.max_depth)
                if m.n_valid:
                    sums += torch.tensor([m.abs_rel, m.rmse, m.delta1, m.mae, 1.0]).double()
            if first is None:
                first = {"image": batch["image"], "depth": depth, "pred": pred.cpu()}
                first["target"] = batch["target"]
        all_reduce_sum(sums, self.info)
        n = float(sums[4])
        names = ("abs_rel", "rmse", "delta1", "mae")
        metrics = {k: (float(sums[i]) / n if n else math.nan) for i, k in enumerate(names)}
        metrics["images"] = n
        if first is not None:
            self._log_images("val", first)
        return metrics

    # --- state ---------------------------------------------------------------------------

    def full_model_state(self) -> dict[str, torch.Tensor]:
        """The whole model's weights on the CPU (collective under FSDP: call on every rank;
        rank 0 receives them)."""
        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(self.net, options=opts)

    def export(self, directory: str | Path | None = None) -> Path:
        """Write the current model in the ``save_checkpoint`` format (all ranks call this)."""
        directory = Path(directory or self.run_dir / EXPORT_DIR)
        state = self.full_model_state()
        if self.info.is_main:
            ckpt.export_model(self.model_config, state, directory)
        barrier(self.info)
        return directory

    def save_checkpoint(self) -> Path:
        """Write ``RUN/checkpoints/step-N`` atomically, point ``latest`` at it, prune old ones
        (all ranks call this: each stores its RNG state, rank 0 the rest)."""
        name = ckpt.step_name(self.step)
        staging = self.ckpt_root / f"{ckpt.TMP_PREFIX}{name}"
        final = self.ckpt_root / name
        if self.info.is_main:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        barrier(self.info)
        ckpt.save_atomic(ckpt.capture_rng(), staging / ckpt.rng_file(self.info.rank))
        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state = get_model_state_dict(self.net, options=opts)
        optim_state = get_optimizer_state_dict(self.net, self.optimizer, options=opts)
        barrier(self.info)  # every rank's RNG file is in place
        if self.info.is_main:
            dataset = self.train_loader.dataset
            state = {
                "format": ckpt.FORMAT,
                "format_version": ckpt.FORMAT_VERSION,
                "step": self.step,
                "epoch": self.epoch,
                # Global samples of the epoch's permutation already trained on (also in
                # data.position): where another process count or batch size continues.
                "epoch_step": dataset.position // self.global_batch,
                "world_size": self.info.world_size,
                "batch_size": self.cfg.data.batch_size,
                "seed": self.cfg.seed,
                "data": self.train_loader.state_dict(),
                "model": model_state,
                "optimizer": optim_state,
                "schedule": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "best": self.best,
                "model_config": self.model_config,
                "config": to_dict(self.cfg),
            }
            ckpt.save_atomic(state, staging / ckpt.TRAINER_FILE)
            ckpt.publish_dir(staging, final)
            ckpt.write_text_atomic(name + "\n", self.ckpt_root / ckpt.LATEST)
            ckpt.prune(self.ckpt_root, self.cfg.checkpoint.keep)
        barrier(self.info)
        self._saved_step = self.step
        return final

    def resume(self, spec: str | Path = "auto") -> Path | None:
        """Continue from a checkpoint (``auto``: the run directory's latest; none there yet:
        start fresh). Same world size and batch: the exact data position and every rank's
        RNG; otherwise the same epoch from the same position in its permutation (the samples
        not yet trained on, dealt out over the new ranks: none repeated, none skipped)."""
        path = ckpt.resolve_resume(spec, self.run_dir)
        if path is None:
            log.info("no checkpoint in %s: starting from scratch", self.ckpt_root)
            return None
        state = ckpt.load_file(path / ckpt.TRAINER_FILE)
        if state.get("format") != ckpt.FORMAT:
            raise ValueError(f"{path}: not a trainer checkpoint")
        set_model_state_dict(
            self.net, state["model"], options=StateDictOptions(full_state_dict=True)
        )
        set_optimizer_state_dict(
            self.net,
            self.optimizer,
            state["optimizer"],
            options=StateDictOptions(full_state_dict=True),
        )
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.best = int(state["step"]), int(state["epoch"]), state["best"]

        dataset = self.train_loader.dataset
        data = state["data"]
        for name in ("seed", "num_samples"):
            if data[name] != getattr(dataset, name):
                raise ValueError(
                    f"{path}: cannot resume, data {name} was {data[name]}, is "
                    f"{getattr(dataset, name)} (another seed or manifest)"
                )
        same_layout = (state["world_size"], state["batch_size"]) == (
            self.info.world_size,
            self.cfg.data.batch_size,
        )
        if data.get("partition") != PARTITION and self.info.is_main:
            log.warning(
                "%s was written with contiguous rank blocks: the rest of epoch %d may repeat "
                "or skip some samples (later epochs are unaffected)",
                path,
                self.epoch,
            )
        if same_layout:
            self.train_loader.load_state_dict(data)
        else:
            old_global = int(state["world_size"]) * int(state["batch_size"])
            position = int(data.get("position", int(state["epoch_step"]) * old_global))
            if self.info.is_main:
                log.warning(
                    "resuming %d process(es) x batch %d from %d x %d: epoch %d continues "
                    "after the %d samples of its permutation already trained on",
                    self.info.world_size,
                    self.cfg.data.batch_size,
                    state["world_size"],
                    state["batch_size"],
                    self.epoch,
                    position,
                )
            dataset.seek(self.epoch, position)
        rng_path = path / ckpt.rng_file(self.info.rank)
        if same_layout and rng_path.is_file():
            ckpt.restore_rng(ckpt.load_file(rng_path))
        else:
            self._seed_process(self.cfg.seed, salt=self.step)
        if self.info.is_main:
            for name in (METRICS_FILE, SAMPLES_FILE):
                self._truncate_records(self.run_dir / name, self.step)
        self._saved_step = self.step
        log.info("resumed from %s at step %d (epoch %d)", path, self.step, self.epoch)
        return path

    # --- logging -------------------------------------------------------------------------

    @staticmethod
    def _truncate_records(path: Path, step: int) -> None:
        """Drop records newer than ``step`` (written after the checkpoint we resumed from)."""
        if path.is_file():
            keep = [
                line
                for line in path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= step
            ]
            ckpt.write_text_atomic("".join(line + "\n" for line in keep), path)

    def _open_logs(self) -> None:
        if not self.info.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        ckpt.write_text_atomic(dump_config(self.cfg), self.run_dir / CONFIG_FILE)
        if self.cfg.log.tensorboard and self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides events a previous attempt wrote after the resumed step.
            self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step)

    def _record(self, scalars: dict[str, float], prefix: str = "") -> None:
        if not self.info.is_main:
            return
        named = {f"{prefix}{k}": float(v) for k, v in scalars.items()}
        if self.writer is not None:
            for k, v in named.items():
                self.writer.add_scalar(k, v, self.step)
        with open(self.run_dir / METRICS_FILE, "a") as f:
            f.write(json.dumps({"step": self.step, **named}) + "\n")

    def _log_samples(self, keys: list[str], epoch: int) -> None:
        """``log.samples``: the keys of this step's global batch, per rank, to
        ``RUN/samples.jsonl`` (one gather per step; for auditing the data order)."""
        if not self.cfg.log.samples:
            return
        per_rank = all_gather_objects(list(keys), self.info)
        if self.info.is_main:
            record = {"step": self.step, "epoch": epoch, "keys": per_rank}
            with open(self.run_dir / SAMPLES_FILE, "a") as f:
                f.write(json.dumps(record) + "\n")

    def _log_images(self, tag: str, view: dict) -> None:
        if self.writer is None or not self.info.is_main:
            return
        n = min(self.cfg.log.images, view["image"].shape[0])
        for i in range(n):
            panel = sample_panel(
                view["image"][i], view["depth"][i], view["pred"][i], view["target"][i]
            )
            self.writer.add_image(f"{tag}/sample{i}", panel, self.step, dataformats="HWC")

    def _log_train(self, scalars: dict[str, float]) -> None:
        now = time.perf_counter()
        last_time, last_step = self._last_log
        if self.step > last_step:
            scalars["samples_per_s"] = (
                self.global_batch * (self.step - last_step) / (now - last_time)
            )
        scalars["memory_gib"] = _memory_gib(self.device)
        scalars["epoch"] = self.epoch
        self._last_log = (now, self.step)
        self._record(scalars, "train/")

    # --- the loop ------------------------------------------------------------------------

    def _due(self, every: int, stop: int) -> bool:
        return self.step == stop or (every > 0 and self.step % every == 0)

    def fit(self, max_steps: int | None = None) -> dict[str, float]:
        """Train until ``cfg.iterations`` (or until iteration ``max_steps`` of the schedule,
        to run a long schedule in chunks); checkpoint and export at the end. Returns the last
        logged scalars."""
        cfg = self.cfg
        stop = min(cfg.iterations, max_steps) if max_steps else cfg.iterations
        self._open_logs()
        self._last_log = (time.perf_counter(), self.step)
        bar = tqdm(
            total=cfg.iterations,
            initial=self.step,
            desc=cfg.name,
            unit="it",
            disable=not (self.info.is_main and cfg.log.progress),
            dynamic_ncols=True,
        )
        dataset = self.train_loader.dataset
        scalars: dict[str, float] = {}
        try:
            while self.step < stop and self.stopped_by is None:
                dataset.set_epoch(self.epoch)  # keeps a resumed epoch's position
                left = self.train_loader.steps_left()
                if left < 1:
                    self.epoch += 1
                    continue
                for batch in self.train_loader:
                    keys, batch_epoch = batch["key"], int(batch["epoch"][0])
                    scalars, view = self.train_step(batch)
                    self.step += 1
                    left -= 1
                    if left == 0:
                        # Move on now, so a checkpoint taken here resumes in the next epoch.
                        self.epoch += 1
                        dataset.set_epoch(self.epoch)
                    bar.update()
                    bar.set_postfix(loss=f"{scalars['loss']:.4f}", epoch=self.epoch)
                    self._log_samples(keys, batch_epoch)
                    self._after_step(scalars, view, stop)
                    if self.step < stop and self._stop_agreed():
                        self._stop_here()
                        break
                    if left == 0 or self.step >= stop:
                        break
            if self.stopped_by is None:
                self.export()
        except Exception as exc:
            if self.info.distributed and is_collective_failure(exc):
                log.error(
                    collective_failure_message(
                        exc,
                        self.info.rank,
                        self.info.world_size,
                        self.step,
                        self.cfg.dist.timeout_min,
                    )
                )
            raise
        finally:
            bar.close()
        return scalars

    def _stop_agreed(self) -> bool:
        """Whether any rank received a stop signal (one all-reduce, so all ranks agree)."""
        flag = torch.tensor([self.stop.signum or 0], dtype=torch.int64, device=self.device)
        all_reduce_max(flag, self.info)
        signum = int(flag.item())
        if signum and self.stop.signum is None:
            self.stop.request(signum)  # another rank's signal: remember which one
        return signum != 0

    def _stop_here(self) -> None:
        """Checkpoint this step on every rank (unless that just happened) and stop."""
        if self._saved_step != self.step:
            self.save_checkpoint()
        self.stopped_by = self.stop.signum
        if self.info.is_main:
            log.warning(
                "stopped by %s at step %d of %d: checkpoint %s written; continue with --resume",
                signal_name(self.stopped_by),
                self.step,
                self.cfg.iterations,
                self.ckpt_root / ckpt.step_name(self.step),
            )

    def _after_step(self, scalars: dict[str, float], view: dict, stop: int) -> None:
        cfg = self.cfg
        if self._due(cfg.log.every, stop):
            self._log_train(dict(scalars))
        if cfg.log.image_every > 0 and self.step % cfg.log.image_every == 0:
            self._log_images("train", view)
        if self.val_loader is not None and self._due(cfg.val.every, stop):
            metrics = self.validate()
            self._record(metrics, "val/")
            log.info("step %d validation: %s", self.step, metrics)
            self._maybe_export_best(metrics)
        if self._due(cfg.checkpoint.every, stop):
            self.save_checkpoint()

    def _maybe_export_best(self, metrics: dict[str, float]) -> None:
        name = self.cfg.val.metric
        value = metrics.get(name, math.nan)
        if not math.isfinite(value):
            return
        higher_better = name == "delta1"
        best = None if self.best is None else self.best["value"]
        if best is None or (value > best if higher_better else value < best):
            self.best = {"metric": name, "value": value, "step": self.step}
            self.export(self.run_dir / BEST_DIR)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _corrupted(target: torch.Tensor, level: str, rng: np.random.Generator) -> torch.Tensor:
    """``corrupt_depth`` of a (H, W) target tensor (0 = invalid) -> (H, W), 0 = hole."""
    t = target.numpy()
    z = corrupt_depth(np.where(t > 0, t, np.nan).astype(np.float32), level, rng)
    return torch.from_numpy(np.nan_to_num(z, nan=0.0))

"""The training loop: one ``Trainer`` for every method, one CPU process to many GPUs.

A method is a *task* (:mod:`training.tasks`, chosen by the config's ``task``): it builds the
network, names its parameter groups, says what each sample carries and how a batch becomes a
loss, what validation predicts, and how the model is exported. The loop around it is the same
for every task. Per iteration (identical code in a single process, under DDP and under FSDP):

1. the learning rate of every parameter group is set from the iteration number
   (:class:`training.optim.LRSchedule`);
2. the task's :meth:`~training.tasks.base.Task.loss` runs the forward pass on this rank's part
   of the global batch and returns the loss normalised over the *global* batch (so DDP's
   gradient averaging yields exactly the single-process gradient of the global batch). Its
   randomness is keyed by (seed, epoch, sample key) or (seed, iteration), never drawn from a
   per-rank stream, so a step does not depend on how the global batch is split over ranks and
   leaves no generator state that a resume could lose (LingBot: corruption, token masks and
   the token budget, :mod:`training.tasks.lingbot`; the MetricAnything teacher: the prompt,
   drawn in the DataLoader workers, and the backbone's RoPE jitter, :mod:`training.tasks.
   ma_teacher`);
3. bf16 autocast on CUDA (fp16 with a grad scaler if asked), gradient clipping, AdamW; a step
   with a non-finite gradient norm is skipped.

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
from fnmatch import fnmatchcase
from pathlib import Path

import numpy as np
import torch
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
from training import checkpoint as ckpt
from training.config import TrainConfig, dump_config, to_dict
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
from training.tasks import build_task
from training.tasks.base import STREAM_PROCESS, sample_seed

log = logging.getLogger("training.trainer")

METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
CONFIG_FILE = "config.yaml"
EXPORT_DIR = "export"
BEST_DIR = "best"


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


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
    """Builds the task (``cfg.task``), model, optimizer, schedule and data from a
    :class:`TrainConfig` and trains.

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

        self.task = build_task(cfg)
        # The same initial weights on every rank (DDP broadcasts them anyway; FSDP does not).
        torch.manual_seed(cfg.seed)
        model = self.task.build_model()
        self.model_config = self.task.model_config(model)
        self.frozen = freeze(model, self.task.frozen(model))
        self.task.setup(model)
        model.to(self.device)
        self.net = wrap_model(
            model,
            self.info,
            cfg.dist.strategy,
            bf16_params=self.amp_dtype == torch.bfloat16,
            shard_modules=self.task.shard_modules,
            find_unused_parameters=cfg.dist.find_unused_parameters,
        )
        self.model = unwrap(self.net)  # the task's network (sharded in place under FSDP)
        groups = self.task.parameter_groups(self.model)
        self.optimizer = build_optimizer(self.model, cfg.optim, groups)
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
            gt_fraction=cfg.data.gt_fraction if train else 0.0,
            batch_size=batch_size,
            **self.task.dataset_options(train),
        )
        collate = Collate(
            size=tuple(size) if size else None, transform=self.task.sample_transform(train)
        )
        return ShardLoader(
            dataset,
            batch_size=batch_size,
            num_workers=cfg.data.num_workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
        )

    @property
    def global_batch(self) -> int:
        return self.cfg.data.batch_size * self.info.world_size

    def autocast(self):
        """The forward pass's precision context (bf16 / fp16 autocast, or nothing)."""
        return torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=bool(self.amp_dtype)
        )

    # --- one step ------------------------------------------------------------------------

    def train_step(self, batch: dict) -> tuple[dict[str, float], dict]:
        """One optimisation step on this rank's part of the global batch. Returns the logged
        scalars and what the image logger needs."""
        lrs = self.schedule.apply(self.optimizer, self.step)
        self.net.train()
        loss, scalars, view = self.task.loss(self, batch)

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
        scalars.update({f"lr/{k}": v for k, v in lrs.items()})
        return scalars, view

    # --- inference and validation -------------------------------------------------------

    def predict(self, *inputs, **options) -> torch.Tensor:
        """Dense depth (B, H, W) float32 as validation computes it, from the task's inputs
        (LingBot: ``image, depth[, num_tokens]``; the teacher: ``image, prompt, fx``)."""
        return self.task.predict(self, *inputs, **options)

    def validate(self) -> dict[str, float]:
        """Mean per-image AbsRel / RMSE / delta1 (and MAE) over the held-out shards, of the
        task's predictions (:meth:`~training.tasks.base.Task.predict_batch`). Every rank
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
        own = self.task.validate(self, itertools.islice(loader, n_batches))
        if own is not None:
            return own
        sums = torch.zeros(5, dtype=torch.float64)
        first = None
        for batch in itertools.islice(loader, n_batches):
            pred, depth = self.task.predict_batch(self, batch)
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
            model = self.task.build_from_config(self.model_config)
            model.load_state_dict(state, strict=True)
            ckpt.export_model(model, directory, self.task.save_export)
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

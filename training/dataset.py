"""Distributed-aware loading of tar shards: every sample at most once per epoch, exact resume.

Partition. Each epoch draws one permutation of all N samples of the manifest from
``SeedSequence([seed, epoch])`` (the same on every rank, no communication needed) and deals it
out *interleaved*: rank r of W takes positions r, r + W, r + 2W, ... (``perm[r::W]``). Step k
of a run with batch b per rank therefore holds positions [k*W*b, (k+1)*W*b) of the permutation
on the ranks together, the same samples as step k of one process with batch W*b: the
partition depends on the global batch only, not on how it is split over processes. (A
contiguous split, rank r taking the r-th block, would not: 2 x 2 and 1 x 4 would see
different samples from step 2 on.) Inside a rank, the DataLoader workers take whole batches in
turn: worker w gets batches w, w + K, w + 2K, ... of the rank's stream (K workers). torch's
DataLoader asks its workers for batches round-robin and returns them in order, so the batches
arrive exactly in stream order, which makes the state of a rank one number: how many samples
of its stream were consumed. No sample is repeated to pad anything.

Remainder. Ranks in lockstep (DDP) run ``ShardLoader.steps_left()`` = floor((N - start) / (W*b))
steps per epoch (``start`` = 0 unless a resume changed the layout mid-epoch, below), so a fresh
epoch uses the first floor(N / B) * B positions of its permutation, B = W*b the global batch,
and leaves the last N mod B out. Those are the same samples for every split of the same global
batch (2 x 2 and 1 x 4 drop the same ones), and other ones every epoch, since the permutation
changes. (Without lockstep, e.g. evaluation, a rank may read one sample more than another.)

Resume. :class:`ShardLoader` (a DataLoader wrapper) counts the samples it hands out into the
dataset, so ``dataset.state_dict()`` after a step is ``{epoch, start, consumed, position, ...}``
(``position`` = start + W * consumed: how far the ranks together got in the permutation); a
new dataset with ``load_state_dict`` continues with exactly the samples (and, augmentation
being seeded per sample and epoch, exactly the tensors) an uninterrupted run would have
produced. Ranks run in lockstep, so rank 0's state may be loaded on every rank mid-epoch.
Another process count (or batch size) continues the epoch with :meth:`ShardDataset.seek`:
the rest of the permutation from ``position`` on, dealt out interleaved over the new ranks
(``perm[position + r::W']``, ``start`` = position), so within that epoch no sample is
repeated and none is skipped except the final remainder of fewer than one global batch.
Requirements: build the DataLoader through :class:`ShardLoader` (it tells the dataset the
batch size, and refuses ``persistent_workers``, whose long-lived worker copies of the dataset
would miss ``set_epoch`` / ``load_state_dict``); keep seed and manifest when resuming.

Targets (FocusDepth). With ``instances=True`` a sample also carries its instance ids, augmented
with the image (nearest, :mod:`training.augment`), and its target prompts re-measured on the
augmented ids (:func:`visible_targets`: a crop or flip moves or cuts the boxes stored at
extraction, so every box is recomputed from the augmented mask). With a
:class:`TargetChoice` the dataset picks ONE of them per sample and epoch, keyed by (seed,
epoch, sample key) as every other draw (:func:`training.tasks.base.sample_seed`, stream
:data:`STREAM_TARGET`), among those with at least ``min_pixels`` pixels left, and a prompt kind
(box, text or both) by the configured weights.

Samples are read by random access (one ``pread`` per member, offsets from each shard's sidecar
index); keep shards on storage that serves random reads well (local NVMe, a parallel file
system), since a global permutation touches every shard every epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from depth_perception.core.camera import Intrinsics
from depth_perception.core.prompts import points_to_sparse_depth
from training.augment import AugmentConfig, augment
from training.shards import ShardReader, decode_sample, read_manifest
from training.tasks.base import sample_seed

TARGETS = ("auto", "gt", "depth", "pseudo")
# How an epoch's permutation is dealt out over ranks (recorded in the resume state).
PARTITION = "interleaved"
#: How a chosen target is prompted: its box, its class name, or both.
PROMPT_KINDS = ("box", "text", "box_text")
#: The target draw's random stream (continues :mod:`training.tasks.base`'s numbering, 0-7).
STREAM_TARGET = 8


# ---------------------------------------------------------------------------------------------
# Partition
# ---------------------------------------------------------------------------------------------


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The epoch's order of all samples; identical on every rank."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def rank_order(
    n: int, seed: int, epoch: int, rank: int, world_size: int, start: int = 0
) -> np.ndarray:
    """Global sample ids of rank ``rank``'s stream for this epoch, in order: the epoch's
    permutation from position ``start`` on, dealt out interleaved (``perm[start + rank::W]``)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} not in [0, {world_size})")
    if not 0 <= start <= n:
        raise ValueError(f"start {start} not in [0, {n}]")
    return epoch_permutation(n, seed, epoch)[start + rank :: world_size]


def stream_lengths(n: int, world_size: int, start: int = 0) -> list[int]:
    """Length of every rank's stream (``rank_order``): they differ by at most one."""
    base, extra = divmod(n - start, world_size)
    return [base + (r < extra) for r in range(world_size)]


def worker_positions(
    n: int, start: int, batch_size: int, worker_id: int, num_workers: int
) -> np.ndarray:
    """Positions of a rank's stream (length ``n``, from ``start`` on) that one worker reads:
    whole batches, dealt round-robin as the DataLoader collects them."""
    positions = np.arange(start, n)
    batch = (positions - start) // batch_size
    return positions[batch % num_workers == worker_id]


# ---------------------------------------------------------------------------------------------
# Tensors
# ---------------------------------------------------------------------------------------------


def _depth_tensor(depth: np.ndarray) -> torch.Tensor:
    """float32 metres, NaN / non-positive -> 0 (the model-side "invalid"), shape (1, H, W)."""
    d = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)
    return torch.from_numpy(d)[None]


def to_tensors(sample: dict) -> dict:
    """An (augmented) sample dict -> the tensors the trainer receives."""
    out = {
        "image": torch.from_numpy(np.ascontiguousarray(sample["rgb"].transpose(2, 0, 1))).float()
        / 255.0,
        "depth": _depth_tensor(sample["depth"]),
        "target": _depth_tensor(sample["target"]),
        "intrinsics": torch.from_numpy(sample["intrinsics"].K.astype(np.float32)),
    }
    out["valid"] = out["target"] > 0
    for key in ("prompt", "radar_prompt", "prior"):
        if key in sample:
            out[key] = _depth_tensor(sample[key])
    return out


# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetChoice:
    """How a sample's one training target is drawn (module docstring).

    ``kinds``: prompt kind (:data:`PROMPT_KINDS`) -> relative weight; ``min_pixels``: the least
    number of mask pixels a target must keep after augmentation to be chosen (a sliver at the
    crop's edge has no depth structure to learn and no meaningful box)."""

    kinds: dict[str, float] = field(default_factory=lambda: {k: 1.0 for k in PROMPT_KINDS})
    min_pixels: int = 20

    def __post_init__(self) -> None:
        unknown = sorted(set(self.kinds) - set(PROMPT_KINDS))
        if unknown:
            raise ValueError(f"unknown prompt kind(s) {unknown}; known: {list(PROMPT_KINDS)}")
        weights = list(self.kinds.values())
        if not weights or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"prompt kind weights must be >= 0 with a positive sum: {self.kinds}")
        if self.min_pixels < 1:
            raise ValueError(f"min_pixels must be >= 1, got {self.min_pixels}")


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the tightest pixel box around a non-empty boolean mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def visible_targets(instance: np.ndarray, stored: list[dict]) -> list[dict]:
    """The stored targets (metadata ``targets``) still in the (augmented) instance map, sorted
    by id: ``{"id", "text", "box": (x, y, w, h) of the mask, "pixels"}``. The stored box is not
    used: it describes the image before augmentation."""
    out = []
    for t in sorted(stored, key=lambda t: int(t["id"])):
        mask = instance == int(t["id"])
        pixels = int(mask.sum())
        if pixels:
            out.append(
                {
                    "id": int(t["id"]),
                    "text": str(t["text"]),
                    "box": mask_box(mask),
                    "pixels": pixels,
                }
            )
    return out


def choose_target(
    targets: list[dict], choice: TargetChoice, seq: np.random.SeedSequence
) -> tuple[dict | None, str]:
    """(one of ``targets`` with >= ``min_pixels`` pixels, uniformly, or None; a prompt kind by
    ``choice.kinds``' weights), both from ``seq`` (the sample's keyed seed)."""
    rng = np.random.default_rng(seq)
    eligible = [t for t in targets if t["pixels"] >= choice.min_pixels]
    chosen = eligible[int(rng.integers(len(eligible)))] if eligible else None
    kinds = list(choice.kinds)
    weights = np.array([choice.kinds[k] for k in kinds], dtype=np.float64)
    kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    return chosen, kind


def target_tensors(
    instance: np.ndarray, chosen: dict | None, kind: str
) -> dict[str, torch.Tensor | str]:
    """The chosen target as the trainer receives it: ``has_target``, ``target_mask`` (1, H, W)
    bool, ``target_box`` (4,) float32 pixels (x, y, w, h; zeros without a target),
    ``target_id`` (0 without), ``target_text`` ("" without), ``prompt_kind``."""
    if chosen is None:
        mask = np.zeros(instance.shape, bool)
        box, tid, text = (0.0, 0.0, 0.0, 0.0), 0, ""
    else:
        mask = instance == chosen["id"]
        box, tid, text = chosen["box"], chosen["id"], chosen["text"]
    return {
        "has_target": torch.tensor(chosen is not None),
        "target_mask": torch.from_numpy(mask)[None],
        "target_box": torch.tensor(box, dtype=torch.float32),
        "target_id": torch.tensor(int(tid)),
        "target_text": text,
        "prompt_kind": kind,
    }


# ---------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------


class ShardDataset(IterableDataset):
    """Samples of the shards listed in a manifest, split over ranks and workers.

    Each yielded item: ``image`` (3, H, W) float in [0, 1]; ``depth`` (1, H, W) raw sensor
    metres, 0 = hole; ``target`` (1, H, W) metres, 0 = invalid; ``valid`` (1, H, W) bool
    (target > 0); ``intrinsics`` (3, 3); ``self_supervised`` (target is the raw depth);
    ``key``; ``index`` (position in this rank's epoch stream, counted from ``start``);
    ``epoch``; with ``lidar=True``
    also ``prompt`` (1, H, W), the LiDAR points projected into the (augmented) image, 0 = none;
    with ``radar=True`` ``radar_prompt``, the same for the radar points; with ``prior=True``
    ``prior`` (1, H, W), the stored prior depth (``extract --prior``; 0 = none), augmented with
    the image, and ``prior_name``, the prior it was computed with; with ``instances=True``
    ``instance`` (1, H, W) int32 ids augmented with the image (0 = background; extract with
    ``--instances``) and ``targets`` (:func:`visible_targets` of the augmented ids); with a
    ``target_choice`` also the chosen target (:func:`target_tensors`).

    ``target``: "auto" = ground truth where the sample has it, else the raw depth (the
    self-supervised mode); "gt" = only shards whose every sample has ground truth; "depth" =
    always the raw depth; "pseudo" = the teacher's pseudo-label (``training.pseudo_label``
    shards), or, with probability ``gt_fraction`` (drawn per sample and epoch), the sample's
    ground truth where it has one. Items then carry ``pseudo`` (bool: the target is the
    pseudo-label). ``batch_size`` is set by :class:`ShardLoader`: workers deal out
    whole batches, so it must equal the DataLoader's.
    """

    def __init__(
        self,
        manifest_or_dir: str | Path,
        augment_cfg: AugmentConfig | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        target: str = "auto",
        batch_size: int = 1,
        lidar: bool = False,
        radar: bool = False,
        prior: bool = False,
        gt_fraction: float = 0.0,
        instances: bool = False,
        target_choice: TargetChoice | None = None,
    ) -> None:
        super().__init__()
        if target_choice is not None and not instances:
            raise ValueError("target_choice needs instances=True")
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        if not 0.0 <= gt_fraction <= 1.0:
            raise ValueError(f"gt_fraction must be in [0, 1], got {gt_fraction}")
        root, records = read_manifest(manifest_or_dir)
        if target == "gt":
            records = [r for r in records if r["n_gt"] == r["n"]]
        if target == "pseudo":
            records = [r for r in records if r.get("n_pseudo", 0) == r["n"]]
        if not records:
            raise ValueError(f"{manifest_or_dir}: no shards (target={target!r})")
        self.paths = [root / r["path"] for r in records]
        self.counts = np.array([r["n"] for r in records], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)])
        self.num_samples = int(self.offsets[-1])
        self.augment_cfg = augment_cfg
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.target = target
        self.batch_size = int(batch_size)
        self.lidar = lidar
        self.radar = radar
        self.prior = prior
        self.gt_fraction = float(gt_fraction)
        self.instances = instances
        self.target_choice = target_choice
        self.epoch = 0
        self.start = 0  # position in the epoch's permutation where the rank streams begin
        self.consumed = 0  # samples of this rank's stream handed to the trainer
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {rank} not in [0, world_size={world_size})")

    # --- epochs and state ---------------------------------------------------------------

    def epoch_lengths(self) -> list[int]:
        """Samples per rank in this epoch's streams, from ``start`` on (they differ by at most
        one)."""
        return stream_lengths(self.num_samples, self.world_size, self.start)

    def __len__(self) -> int:
        return self.epoch_lengths()[self.rank]

    @property
    def position(self) -> int:
        """Samples of the epoch's permutation the ranks together consumed (ranks in lockstep:
        each consumed as many as this one)."""
        return min(self.start + self.world_size * self.consumed, self.num_samples)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; a different epoch starts from its beginning, the current one keeps
        its progress (so a resumed trainer may call ``set_epoch`` as usual)."""
        if epoch != self.epoch:
            self.epoch, self.start, self.consumed = int(epoch), 0, 0

    def seek(self, epoch: int, position: int) -> None:
        """Continue ``epoch`` after the first ``position`` samples of its permutation, dealt
        out over this dataset's ranks: how a run resumes with another process count or batch
        size without repeating or skipping a sample of the epoch."""
        if not 0 <= position <= self.num_samples:
            raise ValueError(f"position {position} not in [0, {self.num_samples}]")
        self.epoch, self.start, self.consumed = int(epoch), int(position), 0

    def advance(self, n: int) -> None:
        """Record that ``n`` more samples of this epoch reached the trainer."""
        self.consumed = min(self.consumed + int(n), len(self))

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "start": self.start,
            "consumed": self.consumed,
            "position": self.position,
            "partition": PARTITION,
            "seed": self.seed,
            "world_size": self.world_size,
            "num_samples": self.num_samples,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where ``state`` (same seed, process count and manifest) was."""
        for name in ("seed", "world_size", "num_samples"):
            if name in state and state[name] != getattr(self, name):
                raise ValueError(
                    f"cannot resume: {name} was {state[name]}, is {getattr(self, name)} "
                    "(the sample streams would differ; another process count: seek)"
                )
        self.epoch = int(state["epoch"])
        self.start = int(state.get("start", 0))
        self.consumed = min(int(state["consumed"]), len(self))

    # --- reading ------------------------------------------------------------------------

    def locate(self, sample_id: int) -> tuple[Path, int]:
        """(shard path, position inside the shard) of a global sample id."""
        shard = int(np.searchsorted(self.offsets, sample_id, side="right")) - 1
        return self.paths[shard], int(sample_id - self.offsets[shard])

    def load(self, sample_id: int, epoch: int, reader: ShardReader) -> dict:
        """Decode, augment and tensorize one sample (deterministic in (seed, epoch, id))."""
        path, position = self.locate(sample_id)
        key, members = reader.read(path, position)
        raw = decode_sample(members)
        has_gt = raw["gt"] is not None
        if self.target == "gt" and not has_gt:
            raise ValueError(f"{key} has no ground truth (target='gt')")
        pseudo = False
        if self.target == "pseudo":
            if raw["pseudo"] is None:
                raise ValueError(f"{key} has no pseudo-label (python -m training.pseudo_label)")
            draw = np.random.default_rng([self.seed, epoch, sample_id, 1]).random()
            pseudo = not (has_gt and draw < self.gt_fraction)
        self_supervised = not pseudo and (self.target == "depth" or not has_gt)
        if pseudo:
            label = raw["pseudo"]
        else:
            label = raw["depth"].copy() if self_supervised else raw["gt"]
        sample = {
            "rgb": raw["rgb"],
            "depth": raw["depth"],
            "target": label,
            "intrinsics": raw["intrinsics"],
        }
        if self.lidar:
            pts = raw["lidar"]
            sample["points"] = np.zeros((0, 3), np.float32) if pts is None else pts
        if self.radar:
            pts = raw["radar"]
            sample["radar_points"] = np.zeros((0, 3), np.float32) if pts is None else pts
        if self.prior:
            if raw["prior"] is None:
                raise ValueError(
                    f"{key} has no prior member: extract the shards with --prior "
                    "(python -m training.extract --prior lingbot ...)"
                )
            sample["prior"] = raw["prior"]
        if self.instances:
            if raw["instance"] is None:
                raise ValueError(
                    f"{key} has no instance ids: extract the shards with --instances "
                    "(python -m training.extract --instances ...) from bags with "
                    "/ground_truth/instances"
                )
            sample["instance"] = raw["instance"]
        if self.augment_cfg is not None:
            # Per sample, not per worker: the same draw whoever loads it (exact resume).
            rng = np.random.default_rng([self.seed, epoch, sample_id])
            sample = augment(sample, self.augment_cfg, rng)
        if self.lidar:
            sample["prompt"] = points_to_sparse_depth(sample["points"], sample["intrinsics"])
        if self.radar:
            intr = sample["intrinsics"]
            sample["radar_prompt"] = points_to_sparse_depth(sample["radar_points"], intr)
        out = to_tensors(sample)
        out["self_supervised"] = torch.tensor(self_supervised)
        if self.target == "pseudo":
            out["pseudo"] = torch.tensor(pseudo)
        out["key"] = key
        if self.prior:
            out["prior_name"] = str(raw["meta"].get("prior", ""))
        if self.instances:
            instance = sample["instance"]
            out["instance"] = torch.from_numpy(instance.astype(np.int32))[None]
            out["targets"] = visible_targets(instance, raw["targets"])
            if self.target_choice is not None:
                seq = sample_seed(self.seed, epoch, key, STREAM_TARGET)
                chosen, kind = choose_target(out["targets"], self.target_choice, seq)
                out.update(target_tensors(instance, chosen, kind))
        return out

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker_id, num_workers = (info.id, info.num_workers) if info else (0, 1)
        epoch = self.epoch
        order = rank_order(
            self.num_samples, self.seed, epoch, self.rank, self.world_size, self.start
        )
        positions = worker_positions(
            len(order), self.consumed, self.batch_size, worker_id, num_workers
        )
        with ShardReader() as reader:
            for p in positions:
                item = self.load(int(order[p]), epoch, reader)
                item["index"] = torch.tensor(int(p))
                item["epoch"] = torch.tensor(epoch)
                yield item


# ---------------------------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------------------------


def spread_items(dataset: ShardDataset, samples: int) -> tuple[int, Iterator[dict]]:
    """(how many, the items) of up to ``samples`` samples spread evenly over ``dataset``, each
    loaded as the trainer reads it in epoch 0: what an export's training-label statistics
    (a median for a baseline) are taken over."""
    n = dataset.num_samples
    ids = np.unique(np.linspace(0, n - 1, num=min(samples, n)).round().astype(int))

    def items() -> Iterator[dict]:
        with ShardReader() as reader:
            for i in ids:
                yield dataset.load(int(i), 0, reader)

    return len(ids), items()


def _reproject_sparse(prompt: torch.Tensor, old: Intrinsics, new: Intrinsics) -> torch.Tensor:
    """Move a sparse depth map to new intrinsics through 3-D (no point is smeared or lost to
    interpolation, unlike resizing it as an image)."""
    depth = prompt[0].numpy()
    points = old.backproject(np.where(depth > 0, depth, np.nan)).reshape(-1, 3)
    points = points[np.isfinite(points[:, 2])]
    return _depth_tensor(points_to_sparse_depth(points, new))


def fit_to_size(item: dict, size: tuple[int, int]) -> dict:
    """Scale a sample (keeping its aspect) until it covers ``size`` = (W, H), then crop the
    centre; images bilinear (antialiased), depth-like maps nearest, intrinsics updated."""
    W, H = size
    _, h, w = item["image"].shape
    if (w, h) == (W, H):
        return item
    if "instance" in item:
        # Boxes and chosen masks would have to be re-measured after the resize: give the
        # samples one size with the augmentation (data.augment.out_size) instead.
        raise ValueError(
            f"samples with instance ids must already be {W}x{H} (got {w}x{h}): set "
            "data.augment.out_size, not data.size / val.size"
        )
    s = max(W / w, H / h)
    sw, sh = max(W, round(w * s)), max(H, round(h * s))
    x0, y0 = (sw - W) // 2, (sh - H) // 2
    K = item["intrinsics"].numpy().astype(np.float64)
    old = Intrinsics.from_K(K, w, h)
    new = old.scaled(sw, sh).cropped(x0, y0, W, H)
    out = dict(item)

    def crop(t: torch.Tensor) -> torch.Tensor:
        return t[..., y0 : y0 + H, x0 : x0 + W].contiguous()

    image = F.interpolate(
        item["image"][None], size=(sh, sw), mode="bilinear", align_corners=False, antialias=True
    )[0]
    out["image"] = crop(image.clamp(0.0, 1.0))
    for key in ("depth", "target", "prior"):
        if key not in item:
            continue
        # "nearest-exact" is centre-aligned, the convention of Intrinsics.scaled.
        out[key] = crop(F.interpolate(item[key][None], size=(sh, sw), mode="nearest-exact")[0])
    out["valid"] = out["target"] > 0
    for key in ("prompt", "radar_prompt"):
        if key in item:
            out[key] = _reproject_sparse(item[key], old, new)
    out["intrinsics"] = torch.from_numpy(new.K.astype(np.float32))
    return out


@dataclass
class Collate:
    """Batch samples, bringing them to ``size`` = (W, H) first when given (variable-size data:
    mixed cameras, no fixed-size augmentation); without ``size`` all must already match.
    ``transform``: a per-sample step after that (a training task's per-sample work, e.g. the
    MetricAnything teacher's prompt preparation); it runs in the DataLoader workers."""

    size: tuple[int, int] | None = None
    transform: Callable[[dict], dict] | None = None

    def __call__(self, items: list[dict]) -> dict:
        if self.size is not None:
            items = [fit_to_size(it, self.size) for it in items]
        if self.transform is not None:
            items = [self.transform(it) for it in items]
        shapes = {tuple(it["image"].shape) for it in items}
        if len(shapes) > 1:
            raise ValueError(f"samples of different sizes {sorted(shapes)}: set Collate(size=...)")
        batch = {}
        for key, value in items[0].items():
            if isinstance(value, torch.Tensor):
                batch[key] = torch.stack([it[key] for it in items])
            else:
                batch[key] = [it[key] for it in items]
        return batch


class ShardLoader:
    """A torch DataLoader over a :class:`ShardDataset` that keeps the dataset's resume state.

    Every batch handed out is counted into ``dataset.consumed``; when the epoch's stream is
    exhausted the dataset moves to the next epoch. Checkpoint ``dataset.state_dict()`` (also
    available as ``loader.state_dict()``) with the model.
    """

    def __init__(
        self,
        dataset: ShardDataset,
        batch_size: int,
        num_workers: int = 0,
        collate_fn=None,
        **loader_kwargs,
    ) -> None:
        if loader_kwargs.get("persistent_workers"):
            raise ValueError("persistent_workers would keep a stale copy of the epoch state")
        dataset.batch_size = int(batch_size)
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=collate_fn or Collate(),
            **loader_kwargs,
        )

    def steps_per_epoch(self, drop_last: bool = True) -> int:
        """Batches every rank can run in lockstep in a whole epoch (from its first sample):
        floor(N / global batch), or with ``drop_last=False`` the shortest rank's batches
        rounded up."""
        shortest = min(stream_lengths(self.dataset.num_samples, self.dataset.world_size))
        return shortest // self.batch_size if drop_last else math.ceil(shortest / self.batch_size)

    def steps_left(self) -> int:
        """Full batches every rank can still run in lockstep in the current epoch (the DDP step
        count): floor((N - position) / global batch) while ranks are in lockstep."""
        shortest = min(self.dataset.epoch_lengths())
        return max(shortest // self.batch_size - self.dataset.consumed // self.batch_size, 0)

    def __len__(self) -> int:
        """Batches left in the current epoch of this rank."""
        return math.ceil((len(self.dataset) - self.dataset.consumed) / self.batch_size)

    def __iter__(self) -> Iterator[dict]:
        for batch in self.loader:
            self.dataset.advance(len(batch["key"]))
            yield batch
        # Reached only when the stream ran out (not when the trainer broke out of the loop).
        self.dataset.set_epoch(self.dataset.epoch + 1)

    def state_dict(self) -> dict:
        return self.dataset.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.dataset.load_state_dict(state)

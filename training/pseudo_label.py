"""Pseudo-label extracted shards with the MetricAnything teacher (distillation, paper §3.3).

Usage::

    python -m training.pseudo_label SHARDS [SHARDS ...] --out DIR
        [--teacher CHECKPOINT] [--prompt lidar|radar|sensor|sensor_sampled] [--n-range LO HI]
        [--device auto|cpu|cuda] [--rank-group i/n] [--force] [--merge-only] [--no-progress]

``SHARDS``: manifests or directories of ``python -m training.extract``. Every sample goes
through the teacher engine exactly as the ``prompted_depth_node`` runs it
(:class:`depth_perception.engines.metric_anything.MetricAnythingTeacherEngine`: its prior, PDSA
/ GMDR, the network) with the prompt ``--prompt`` names:

- ``lidar`` / ``radar``: the sample's stored scan (``extract --lidar`` / ``--radar``) projected
  into the image (the LiDAR-prompted teacher; the paper's radar protocol);
- ``sensor``: the RGB-D sensor's valid depth;
- ``sensor_sampled``: N ~ U[``--n-range``] random valid pixels of the sensor depth (the paper's
  training prompt, self-supervised), drawn from the sample key, so a re-run draws the same.

A sample without the prompt (no scan, no valid depth) is left out and counted. Each input shard
``X.tar`` becomes ``DIR/X.tar``: its samples' members unchanged, plus ``{key}.pseudo.npy``
(float32 metres, NaN where the teacher has no depth) and, in ``{key}.json``, ``pseudo_label``:
the teacher (model id, SHA-256 of its weights), the prompt kind and its pixel count, and the
source shard's SHA-256. The output is a shard directory like extract's, so the student trains on
it with ``data.target: pseudo`` (optionally mixed with ground truth, ``data.gt_fraction``).

Resumable: ``DIR/X.done`` (the shard's manifest record and provenance, written last and
atomically) marks a finished shard; a re-run skips it unless the teacher, its weights or the
prompt changed (then it is redone). ``DIR/manifest.jsonl`` is rebuilt from the ``.done``
records at the end of every run.

Distributed: shards are dealt out over ranks (shard i, i+n, ...), from ``--rank-group i/n`` or
from torchrun's ``RANK`` / ``WORLD_SIZE`` (``torchrun --nproc-per-node 8 -m
training.pseudo_label ...``: each process on ``cuda:LOCAL_RANK``). Ranks never talk to each
other; run ``--merge-only`` once after all of them to rebuild the manifest from every rank's
records (ranks finishing together may each have written one that misses the other's shards).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from depth_perception.core.prompt_prep import training_prompt
from depth_perception.core.prompts import points_to_sparse_depth, sensor_depth_prompt
from depth_perception.engines.base import FrameInputs
from depth_perception.models.checkpoints import weights_file
from training.extract import parse_group, select_group
from training.shards import (
    PSEUDO_EXT,
    ShardWriter,
    _npy_bytes,
    decode_sample,
    iter_shard,
    read_manifest,
    sha256_file,
    write_manifest,
)
from training.tasks.base import sample_seed

log = logging.getLogger("training.pseudo_label")

PROMPTS = ("lidar", "radar", "sensor", "sensor_sampled")
DONE_SUFFIX = ".done"
#: sample_seed stream of the ``sensor_sampled`` draw.
STREAM_PSEUDO_PROMPT = 8


@dataclass
class PseudoLabelConfig:
    out: Path
    teacher: str = ""  # teacher checkpoint; empty: the shipped one
    prompt: str = "lidar"
    n_range: tuple[int, int] = (2_000, 40_000)  # sensor_sampled
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0  # sensor_sampled draws
    progress: bool = True


@dataclass
class PseudoLabelReport:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    samples: int = 0
    without_prompt: int = 0
    manifest: Path | None = None


def teacher_provenance(engine) -> dict:
    """What made the labels: the engine's model id, the teacher weights' SHA-256."""
    file = weights_file(engine.checkpoint) if Path(engine.checkpoint).exists() else None
    return {
        "teacher": engine.model_id,
        "teacher_checkpoint": str(engine.checkpoint),
        "teacher_sha256": "random" if file is None else sha256_file(file),
    }


def sample_prompt(raw: dict, key: str, cfg: PseudoLabelConfig) -> np.ndarray | None:
    """The sparse prompt (H, W) metres, NaN = none, of one decoded sample; None without one."""
    intr = raw["intrinsics"]
    if cfg.prompt in ("lidar", "radar"):
        points = raw[cfg.prompt]
        if points is None or not len(points):
            return None
        prompt = points_to_sparse_depth(points, intr)
    elif cfg.prompt == "sensor":
        prompt = sensor_depth_prompt(raw["depth"])
    else:
        rng = np.random.default_rng(sample_seed(cfg.seed, 0, key, STREAM_PSEUDO_PROMPT))
        prompt = training_prompt(raw["depth"], rng, cfg.n_range)
    return prompt if bool(np.isfinite(prompt).any()) else None


def _shard_name(path: Path) -> tuple[str, int]:
    """(prefix, number) of ``{prefix}-{k:06d}.tar``."""
    stem = path.name.removesuffix(".tar")
    prefix, sep, number = stem.rpartition("-")
    if not sep or not number.isdigit():
        return stem, 0
    return prefix, int(number)


def label_shard(
    path: Path, record: dict, engine, provenance: dict, cfg: PseudoLabelConfig, bar
) -> dict:
    """Write ``cfg.out / path.name`` with pseudo-labels and its ``.done`` record (returned)."""
    prefix, number = _shard_name(path)
    out = Path(cfg.out)
    source_sha = record.get("sha256") or sha256_file(path)
    n, missing = 0, 0
    bag = record.get("bag", prefix)
    with ShardWriter(out, prefix, shard_size=1 << 30, bag=bag, first=number) as w:
        for key, members in iter_shard(path):
            bar.update()
            raw = decode_sample(members)
            prompt = sample_prompt(raw, key, cfg)
            if prompt is None:
                missing += 1
                continue
            frame = FrameInputs(intrinsics=raw["intrinsics"], rgb=raw["rgb"], prompt=prompt)
            depth = engine.run(frame).depth.astype(np.float32)
            meta = dict(raw["meta"])
            meta["pseudo_label"] = {
                **provenance,
                "prompt": cfg.prompt,
                "prompt_points": int(np.isfinite(prompt).sum()),
                "source_shard": path.name,
                "source_sha256": source_sha,
            }
            members = dict(members)
            members[PSEUDO_EXT] = _npy_bytes(depth)
            members["json"] = json.dumps(meta, sort_keys=True).encode()
            w.write(key, members, int(meta.get("stamp_ns", 0)))
            n += 1
    done = {
        "shard": path.name,
        "source_sha256": source_sha,
        "options": _options(provenance, cfg),
        "samples": n,
        "without_prompt": missing,
        "records": [json.loads(r.to_json()) for r in w.records],
    }
    target = out / f"{path.name}{DONE_SUFFIX}"
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(done, indent=1, sort_keys=True))
    os.replace(tmp, target)
    return done


def _options(provenance: dict, cfg: PseudoLabelConfig) -> dict:
    """What decides a shard's labels (a change redoes it)."""
    options = {"teacher_sha256": provenance["teacher_sha256"], "prompt": cfg.prompt}
    options["teacher"] = provenance["teacher"]
    if cfg.prompt == "sensor_sampled":
        options["n_range"] = list(cfg.n_range)
        options["seed"] = cfg.seed
    return options


def build_manifest(out: str | Path) -> Path:
    """``manifest.jsonl`` from every ``.done`` record in ``out`` (sorted by shard)."""
    out = Path(out)
    records = []
    for done in sorted(out.glob(f"*.tar{DONE_SUFFIX}")):
        records.extend(json.loads(done.read_text())["records"])
    return write_manifest(out, records)


def build_teacher(cfg: PseudoLabelConfig):
    from depth_perception.engines.metric_anything import (
        MetricAnythingTeacherConfig,
        MetricAnythingTeacherEngine,
    )

    return MetricAnythingTeacherEngine(
        MetricAnythingTeacherConfig(cfg.teacher, device=cfg.device, precision=cfg.precision)
    )


def pseudo_label(
    inputs: Sequence[str | Path],
    cfg: PseudoLabelConfig,
    rank_group: tuple[int, int] | None = None,
    force: bool = False,
    engine=None,
) -> PseudoLabelReport:
    """Label this rank's shards of ``inputs`` that are not finished (module docstring)."""
    if cfg.prompt not in PROMPTS:
        raise ValueError(f"prompt {cfg.prompt!r}: choose one of {PROMPTS}")
    out = Path(cfg.out)
    shards: list[tuple[Path, dict]] = []
    for source in inputs:
        root, records = read_manifest(source)
        if root.resolve() == out.resolve():
            raise ValueError(f"--out {out} is an input directory: write the labels beside it")
        shards.extend((root / r["path"], r) for r in records)
    names = [p.name for p, _ in shards]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"shards of the same name in different inputs: {duplicates[:5]}")
    shards = select_group(sorted(shards, key=lambda s: s[0].name), rank_group)
    out.mkdir(parents=True, exist_ok=True)
    engine = engine or build_teacher(cfg)
    provenance = teacher_provenance(engine)
    options = _options(provenance, cfg)
    report = PseudoLabelReport()
    todo = []
    for path, record in shards:
        done = out / f"{path.name}{DONE_SUFFIX}"
        if done.is_file() and not force:
            previous = json.loads(done.read_text())
            if previous.get("options") == options and previous.get("source_sha256") == record.get(
                "sha256", previous.get("source_sha256")
            ):
                report.skipped.append(path.name)
                continue
            log.info("%s: redone (teacher, prompt or source changed)", path.name)
        done.unlink(missing_ok=True)
        todo.append((path, record))
    if report.skipped:
        log.info("skipping %d finished shard(s)", len(report.skipped))
    total = sum(int(r["n"]) for _, r in todo)
    with tqdm(total=total, desc="pseudo-labels", unit="sample", disable=not cfg.progress) as bar:
        for path, record in todo:
            done = label_shard(path, record, engine, provenance, cfg, bar)
            report.done.append(path.name)
            report.samples += done["samples"]
            report.without_prompt += done["without_prompt"]
            bar.set_postfix(without_prompt=report.without_prompt)
    report.manifest = build_manifest(out)
    return report


def _rank_from_env() -> tuple[int, int] | None:
    """torchrun's (RANK, WORLD_SIZE), or None outside torchrun."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.pseudo_label",
        description="extracted shards -> the same shards with the MetricAnything teacher's "
        "pseudo-labels (pseudo.npy) for distilling a student",
    )
    parser.add_argument("inputs", nargs="*", help="manifests or shard directories (extract's)")
    parser.add_argument("--out", required=True, type=Path, help="output shard directory")
    parser.add_argument(
        "--teacher", default="", help="teacher checkpoint directory (default: the shipped one)"
    )
    parser.add_argument("--prompt", choices=PROMPTS, default="lidar")
    parser.add_argument(
        "--n-range",
        type=int,
        nargs=2,
        default=(2_000, 40_000),
        metavar=("LO", "HI"),
        help="sensor_sampled: pixels per prompt",
    )
    parser.add_argument("--seed", type=int, default=0, help="sensor_sampled: draw seed")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--precision", default="auto", help="auto, fp32, bf16")
    parser.add_argument("--rank-group", default=None, help="i/n: only shards i, i+n, ...")
    parser.add_argument("--force", action="store_true", help="redo finished shards too")
    parser.add_argument("--merge-only", action="store_true", help="only rebuild the manifest")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.merge_only:
        log.info("wrote %s", build_manifest(args.out))
        return 0
    if not args.inputs:
        parser.error("give at least one shard directory or manifest (or --merge-only)")
    group = parse_group(args.rank_group) if args.rank_group else _rank_from_env()
    device = args.device
    if group is not None and device in ("auto", "cuda") and "LOCAL_RANK" in os.environ:
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    cfg = PseudoLabelConfig(
        out=args.out,
        teacher=args.teacher,
        prompt=args.prompt,
        n_range=(int(args.n_range[0]), int(args.n_range[1])),
        device=device,
        precision=args.precision,
        seed=args.seed,
        progress=not args.no_progress,
    )
    try:
        report = pseudo_label(args.inputs, cfg, rank_group=group, force=args.force)
    except (FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    log.info(
        "%d shard(s) labelled (%d samples, %d without a %s prompt left out), %d skipped as "
        "finished; manifest %s",
        len(report.done),
        report.samples,
        report.without_prompt,
        cfg.prompt,
        len(report.skipped),
        report.manifest,
    )
    if report.done and report.samples == 0:
        log.error("no sample had a %s prompt: nothing labelled", cfg.prompt)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

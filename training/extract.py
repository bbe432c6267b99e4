"""Turn recordings (rosbag2, ROS 1 bags, MCAP files) into tar shards for training.

Usage::

    python -m training.extract BAG_OR_DIR [BAG_OR_DIR ...] --out DIR
        [--shard-size N] [--workers K] [--bag-group i/n] [--topic ROLE=TOPIC ...] [--slop S]
        [--calibration YAML] [--lidar] [--radar] [--prior SPEC] [--instances]
        [--gt-topic TOPIC]
        [--stride S] [--rgb-format png|jpg] [--force] [--merge-only]

Recordings under the inputs: directories holding a ``metadata.yaml`` (rosbag2, sqlite3 or
MCAP), ROS 1 ``.bag`` files and ``.mcap`` files. Topics are found by role as every verb of
``depth-perception`` finds them (:mod:`depth_perception.io.topics`: colour, depth registered
or not, camera_infos, LiDAR; ``--topic`` overrides), depth that is not registered to the colour
camera is registered into it, and colour / depth pair by nearest stamp within ``--slop``.
Each recording's synchronized frames (:func:`depth_perception.io.recording.read_rgbd_frames`)
become samples in
``DIR/{bag}-{k:06d}.tar`` (see :mod:`training.shards` for the members); ``{bag}`` is the bag's
path below its input with ``/`` -> ``__``. A sample is flagged ``self_supervised`` when its
frame has no ground truth: training then uses the raw sensor depth as the target on its valid
pixels. ``--gt-topic`` points the ground truth at another topic, e.g. pseudo-label depth that a
teacher model recorded into the bag.

``--lidar`` / ``--radar`` store each frame's LiDAR / radar points in the camera's optical frame.
``--prior SPEC`` stores a prompt-free model's depth of the colour image as the ``prior`` member,
the prior P_d the MetricAnything teacher aligns its prompt to (PDSA / GMDR): computed once per
frame here, because running the prior model at every training step is too slow on a CPU, and
computed exactly as the teacher engine computes it at inference
(:func:`depth_perception.engines.metric_anything.prior_depth`; SPEC as its ``prior``:
``lingbot`` = the shipped LingBot-Depth model on colour alone, ``lingbot:<checkpoint>``,
``ma_student:<checkpoint>``). Each sample's metadata names the prior (``prior``) and its
model (``prior_model``, with the weights' digest); the trainer refuses samples whose prior is
not the configured one.

``--instances`` stores the frame's instance ids (the simulator's ``/ground_truth/instances``,
16UC1, 0 = background) as ``{key}.instance.png`` (16-bit PNG, lossless) and its target prompts
(``/targets``: per object the instance id, the class name as text and the pixel box) as
``targets`` in the sample's metadata: image-target-depth triplets for FocusDepth
(``task: focusdepth``, ``sam3_pretrain``). Materials (diffuse / specular / transparent) are
*not* stored: the bags carry no material topic, and the simulator does not map a class to one
material (a bottle is specular or diffuse, a table has metal legs and a glass top; see
``depth_perception/sim/scenes.py``), so the class name cannot stand in for it. A frame without
instance ids (a real bag) gets no ``instance.png``; its targets are stored when it has them.

Resumable: a bag is finished when ``DIR/{bag}.done`` exists (a JSON record of its shards,
written last and atomically); a re-run skips finished bags and redoes the others from scratch
(a crashed bag's partial shards are deleted first). ``DIR/manifest.jsonl`` is rebuilt from the
``.done`` records at the end of every run.

Scaling out:

- one machine: ``--workers K`` processes bags in parallel (one bag per process);
- a cluster: a Slurm array task per bag group; ``--bag-group i/n`` takes bags i, i+n, i+2n, ...
  of the sorted bag list, so n tasks cover every bag exactly once::

      #SBATCH --array=0-63
      python -m training.extract /data/bags --out /data/shards --workers 8 \\
          --bag-group ${SLURM_ARRAY_TASK_ID}/64

  then, once the array is done (``sbatch --dependency=afterok:<jobid>``), rebuild the manifest
  once from every task's ``.done`` records (tasks finishing together may each have written a
  manifest that misses the other's bags)::

      python -m training.extract --out /data/shards --merge-only
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import multiprocessing as mp
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from depth_perception.core.depth import sanitize_depth
from depth_perception.core.prompts import transform_points
from depth_perception.io.calibration import load_calibration
from depth_perception.io.frames import RGBDFrame, Target
from depth_perception.io.recording import (
    RECORDING_FILE_SUFFIXES,
    PairingStats,
    ReadOptions,
    bag_calibration,
    is_recording,
    plan_recording,
    read_rgbd_frames,
)
from depth_perception.io.topics import parse_overrides
from training.shards import (
    INDEX_SUFFIX,
    ShardWriter,
    encode_sample,
    intrinsics_to_meta,
    write_manifest,
)

log = logging.getLogger("training.extract")

DONE_SUFFIX = ".done"


@dataclass
class ExtractConfig:
    """How to turn one bag into shards."""

    out: Path
    shard_size: int = 256
    read: ReadOptions = field(default_factory=ReadOptions)  # role overrides, slop, calibration
    lidar: bool = False  # also store LiDAR points (camera optical frame) as {key}.lidar.npy
    radar: bool = False  # also store radar points (camera optical frame) as {key}.radar.npy
    prior: str | None = None  # store this prior's depth as {key}.prior.npy (module docstring)
    prior_device: str = "cpu"  # where the prior model runs
    instances: bool = False  # store instance ids ({key}.instance.png) and targets (metadata)
    stride: int = 1  # keep every stride-th frame (robot bags at 30 fps are very redundant)
    rgb_format: str = "png"  # "png" (lossless) or "jpg"
    jpeg_quality: int = 95
    progress: bool = True


@dataclass
class ExtractReport:
    """What a run did."""

    done: list[str] = field(default_factory=list)  # bags extracted by this run
    skipped: list[str] = field(default_factory=list)  # already finished before
    failed: dict[str, str] = field(default_factory=dict)  # bag -> error
    frames: int = 0  # samples written by this run
    manifest: Path | None = None


# ---------------------------------------------------------------------------------------------
# Finding bags
# ---------------------------------------------------------------------------------------------


def find_bags(inputs: Iterable[str | Path]) -> list[tuple[Path, str]]:
    """(recording, id) of every recording under ``inputs`` (rosbag2 directories, ROS 1 ``.bag``
    and ``.mcap`` files; :func:`~depth_perception.io.recording.is_recording`), sorted by id.

    The id is the bag's path relative to its input (the bag's own name when the input is the
    bag), ``/`` -> ``__``, other characters outside ``[A-Za-z0-9_-]`` -> ``_``. Ids that still
    collide (equal relative paths under different inputs) get a hash of the absolute path.
    """
    found: list[tuple[Path, str]] = []
    seen: set[Path] = set()

    def add(bag: Path, rel: str) -> None:
        if bag.resolve() not in seen:  # the same bag reached through two inputs
            seen.add(bag.resolve())
            found.append((bag, rel))

    for root in map(Path, inputs):
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such file or directory")
        if is_recording(root):
            add(root, root.resolve().name)
            continue
        if not root.is_dir():
            raise FileNotFoundError(
                f"{root}: not a recording (a rosbag2 directory, a ROS 1 .bag or an .mcap file)"
            )
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            here = Path(dirpath)
            if here != root and is_recording(here):
                add(here, here.relative_to(root).as_posix())
                dirnames.clear()  # a bag's subdirectories and files are not bags
                continue
            for name in sorted(filenames):
                if Path(name).suffix.lower() in RECORDING_FILE_SUFFIXES:
                    add(here / name, (here / name).relative_to(root).as_posix())
    ids = [re.sub(r"[^A-Za-z0-9_-]", "_", rel.replace("/", "__")) for _, rel in found]
    out = []
    for (path, _), bag_id in zip(found, ids, strict=True):
        if ids.count(bag_id) > 1:
            bag_id += "-" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
        out.append((path, bag_id))
    return sorted(out, key=lambda item: item[1])


def parse_group(spec: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec)
    if not m or not int(m[1]) < int(m[2]):
        raise ValueError(f"bag group must be 'i/n' with 0 <= i < n, got {spec!r}")
    return int(m[1]), int(m[2])


def select_group(items: Sequence, group: tuple[int, int] | None) -> list:
    """Items i, i + n, i + 2n, ... for group (i, n); all of them for None."""
    if group is None:
        return list(items)
    i, n = group
    return list(items[i::n])


# ---------------------------------------------------------------------------------------------
# One bag
# ---------------------------------------------------------------------------------------------


def _bag_files(out: Path, bag_id: str) -> list[Path]:
    """This bag's shards, indexes and temporaries (not another bag sharing the prefix)."""
    pattern = re.compile(
        re.escape(bag_id) + r"-\d{6}(\.tar|" + re.escape(INDEX_SUFFIX) + r")(\.tmp)?"
    )
    return [p for p in out.iterdir() if pattern.fullmatch(p.name)]


def _lidar_transform(
    bag: Path, optical: str, lidar_frame: str, cache: dict, what: str = "LiDAR"
) -> np.ndarray | None:
    """4x4 optical_T_<sensor> from the bag's calibration (None, with one warning, if unknown)."""
    if (optical, lidar_frame) not in cache:
        cal = bag_calibration(bag)
        try:
            if cal is None:
                raise KeyError("the bag has no calibration.yaml and no /tf_static")
            cache[optical, lidar_frame] = cal.transform(optical, lidar_frame)
        except KeyError as e:
            log.warning(
                "%s: %s not stored (%s -> %s unknown: %s)", bag, what, lidar_frame, optical, e
            )
            cache[optical, lidar_frame] = None
    return cache[optical, lidar_frame]


_PRIORS: dict = {}  # (spec, device) -> the prior engine, built once per process


def prior_engine(spec: str, device: str = "cpu"):
    """The teacher engine's prompt-free prior model named by ``spec`` (cached per process)."""
    if (spec, device) not in _PRIORS:
        from depth_perception.engines.metric_anything import build_prior

        _PRIORS[spec, device] = build_prior(spec, device=device)
    return _PRIORS[spec, device]


def compute_prior(frame: RGBDFrame, spec: str, device: str = "cpu") -> tuple[np.ndarray, str]:
    """(P_d of the frame's colour image, float32 metres NaN = none; the prior's model id),
    exactly as the teacher engine computes it at inference."""
    from depth_perception.engines.metric_anything import prior_depth

    engine = prior_engine(spec, device)
    return prior_depth(engine, frame.rgb, frame.intrinsics), engine.model_id


def _cloud_points(frame: RGBDFrame, kind: str, T: np.ndarray) -> np.ndarray:
    cloud = frame.extra[kind]
    xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=-1).astype(np.float32)
    return transform_points(xyz[np.isfinite(xyz).all(axis=1)], T).astype(np.float32)


def frame_to_sample(
    frame: RGBDFrame,
    bag_id: str,
    index: int,
    cfg: ExtractConfig,
    optical_T_lidar: np.ndarray | None = None,
    roles: dict[str, str] | None = None,
    optical_T_radar: np.ndarray | None = None,
) -> tuple[str, dict[str, bytes]]:
    """(key, members) of one frame; LiDAR / radar only when ``optical_T_lidar`` /
    ``optical_T_radar`` is given; the prior when ``cfg.prior`` names one; ``roles`` (role ->
    topic, as resolved) are recorded in the sample's metadata."""
    key = f"{bag_id}_{index:07d}"
    t = roles or {}
    gt = None if frame.gt_depth is None else sanitize_depth(frame.gt_depth)
    topics = {"rgb": t.get("rgb"), "depth": t.get("depth"), "camera_info": t.get("rgb_info")}
    if frame.extra.get("registered"):
        topics["depth_registered_by"] = "depth_perception.core.registration.register_depth"
    lidar = radar = prior = instance = None
    if optical_T_lidar is not None and frame.extra.get("lidar") is not None:
        lidar = _cloud_points(frame, "lidar", optical_T_lidar)
        topics["lidar"] = t.get("lidar")
    if optical_T_radar is not None and frame.extra.get("radar") is not None:
        radar = _cloud_points(frame, "radar", optical_T_radar)
        topics["radar"] = t.get("radar")
    if gt is not None:
        topics["gt_depth"] = t.get("gt_depth")
    meta = {
        "key": key,
        "bag": bag_id,
        "index": index,
        "stamp_ns": int(frame.stamp_ns),
        "intrinsics": intrinsics_to_meta(frame.intrinsics),
        "topics": topics,
        "self_supervised": gt is None,
    }
    if cfg.prior:
        prior, meta["prior_model"] = compute_prior(frame, cfg.prior, cfg.prior_device)
        meta["prior"] = cfg.prior
    if cfg.instances:
        if frame.instance is not None:
            instance = frame.instance
            topics["gt_instances"] = t.get("gt_instances")
        if frame.extra.get("targets") is not None:
            topics["targets"] = t.get("targets")
        meta["targets"] = [target_to_meta(x) for x in frame.extra.get("targets") or []]
    members = encode_sample(
        frame.rgb,
        frame.depth,
        meta,
        gt,
        lidar,
        cfg.rgb_format,
        cfg.jpeg_quality,
        radar=radar,
        prior=prior,
        instance=instance,
    )
    return key, members


def target_to_meta(target: Target) -> dict:
    """A target prompt as stored in a sample's metadata (JSON)."""
    return {
        "id": int(target.target_id),
        "text": str(target.text),
        "box": [int(v) for v in target.box],
    }


_SLOT = 0  # this process's row for its per-bag progress bar (set by _init_worker)


def _init_worker(counter) -> None:
    global _SLOT
    with counter.get_lock():
        _SLOT = counter.value
        counter.value += 1


def extract_bag(bag: Path, bag_id: str, cfg: ExtractConfig) -> dict:
    """Write one bag's shards and its ``.done`` record (returned)."""
    out = Path(cfg.out)
    for stale in _bag_files(out, bag_id):  # a crashed earlier attempt
        stale.unlink()
    read = cfg.read
    plan = plan_recording(bag, read.topics, read.calibration)
    roles = dict(plan.roles.topics)
    total = None
    if cfg.progress:
        total = plan.message_counts.get(roles["rgb"])  # one frame per colour image at most
    transforms: dict = {}
    stats = PairingStats()
    n = 0
    bar = tqdm(
        total=total,
        desc=bag_id,
        unit="frame",
        position=_SLOT + 1,  # row 0 is the overall bar
        leave=False,
        disable=not cfg.progress,
    )
    with bar, ShardWriter(out, bag_id, cfg.shard_size) as writer:
        frames = read_rgbd_frames(bag, slop_ns=read.slop_ns, stats=stats, plan=plan)
        for index, frame in enumerate(frames):
            bar.update()
            if index % cfg.stride:
                continue
            T = T_radar = None
            if cfg.lidar and frame.extra.get("lidar") is not None:
                T = _lidar_transform(bag, frame.frame_id, frame.extra["lidar_frame_id"], transforms)
            if cfg.radar and frame.extra.get("radar") is not None:
                T_radar = _lidar_transform(
                    bag, frame.frame_id, frame.extra["radar_frame_id"], transforms, "radar"
                )
            key, members = frame_to_sample(frame, bag_id, index, cfg, T, roles, T_radar)
            writer.write(key, members, frame.stamp_ns)
            n += 1
    if n == 0:
        raise ValueError(f"{bag}: no synchronized RGB-D frames: {stats.why_none()}")
    record = {
        "bag": bag_id,
        "source": str(bag.resolve()),
        "frames": n,
        "topics": roles,
        "pairing": stats.summary(),
        "registration": plan.registration,
        "options": extraction_options(cfg),
        "shards": [json.loads(r.to_json()) for r in writer.records],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    done = out / f"{bag_id}{DONE_SUFFIX}"
    tmp = done.with_name(done.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    os.replace(tmp, done)
    return record


# ---------------------------------------------------------------------------------------------
# Many bags
# ---------------------------------------------------------------------------------------------


def extraction_options(cfg: ExtractConfig) -> dict:
    """What a bag's samples hold besides colour and depth (recorded in its ``.done``)."""
    return {"lidar": cfg.lidar, "radar": cfg.radar, "prior": cfg.prior, "instances": cfg.instances}


def _outdated(done: Path, cfg: ExtractConfig) -> str | None:
    """Why a finished bag must be redone for ``cfg`` (radar, prior or instances asked for but
    not stored, or stored differently), or None. Records without options predate radar and
    prior, records without ``instances`` predate instances (none stored)."""
    options = json.loads(done.read_text()).get("options", {})
    for name in ("radar", "prior", "instances"):
        was = options.get(name, None if name == "prior" else False)
        if was != getattr(cfg, name):
            return f"{name} was {was!r}, is {getattr(cfg, name)!r}"
    return None


def build_manifest(out: str | Path) -> Path:
    """``manifest.jsonl`` from every ``.done`` record in ``out`` (bags sorted by id)."""
    out = Path(out)
    records = []
    for done in sorted(out.glob(f"*{DONE_SUFFIX}")):
        records.extend(json.loads(done.read_text())["shards"])
    return write_manifest(out, records)


def extract(
    inputs: Iterable[str | Path],
    cfg: ExtractConfig,
    workers: int = 1,
    bag_group: tuple[int, int] | None = None,
    force: bool = False,
) -> ExtractReport:
    """Extract every (selected) bag under ``inputs`` that is not finished yet."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    bags = select_group(find_bags(inputs), bag_group)
    report = ExtractReport()
    todo = []
    for path, bag_id in bags:
        done = out / f"{bag_id}{DONE_SUFFIX}"
        why = _outdated(done, cfg) if done.is_file() and not force else None
        if why:
            log.info("%s: redone (%s)", bag_id, why)
        if done.is_file() and not force and not why:
            report.skipped.append(bag_id)
        else:
            done.unlink(missing_ok=True)
            todo.append((path, bag_id))
    if report.skipped:
        log.info("skipping %d finished bag(s)", len(report.skipped))

    overall = tqdm(total=len(todo), desc="bags", unit="bag", position=0, disable=not cfg.progress)

    def finished(bag_id: str, record: dict | None, error: BaseException | None) -> None:
        if error is None:
            report.done.append(bag_id)
            report.frames += record["frames"]
        else:
            report.failed[bag_id] = f"{type(error).__name__}: {error}"
            log.error("%s failed: %s", bag_id, report.failed[bag_id])
        overall.update()
        overall.set_postfix(frames=report.frames, failed=len(report.failed))

    if workers <= 1 or len(todo) <= 1:
        for path, bag_id in todo:
            try:
                finished(bag_id, extract_bag(path, bag_id, cfg), None)
            except Exception as e:  # keep going: the bag stays without .done and is redone
                finished(bag_id, None, e)
    else:
        # spawn, not fork: the parent may hold ROS / sqlite / thread state that must not be
        # duplicated into the children.
        ctx = mp.get_context("spawn")
        counter = ctx.Value("i", 0)
        with ProcessPoolExecutor(
            max_workers=min(workers, len(todo)),
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(counter,),
        ) as pool:
            futures = {pool.submit(extract_bag, p, b, cfg): b for p, b in todo}
            for fut in as_completed(futures):
                err = fut.exception()
                finished(futures[fut], None if err else fut.result(), err)
    overall.close()
    report.done.sort()
    report.manifest = build_manifest(out)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.extract",
        description="rosbag2 recordings -> WebDataset-style tar shards + manifest.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Slurm: one array task per bag group, e.g. --bag-group $SLURM_ARRAY_TASK_ID/64, "
        "then one final run with --merge-only.",
    )
    parser.add_argument(
        "inputs",
        nargs="*",
        help="recordings (rosbag2 directories, ROS 1 .bag, .mcap files) or directories of them",
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--shard-size", type=int, default=256, help="samples per shard")
    parser.add_argument("--workers", type=int, default=1, help="bags processed in parallel")
    parser.add_argument("--bag-group", default=None, help="i/n: only bags i, i+n, ... (Slurm)")
    parser.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="ROLE=TOPIC",
        help="use TOPIC for ROLE (rgb, depth, rgb_info, depth_info, lidar, ...); repeatable; "
        "default: found by message type and driver layout (depth-perception bag-info shows it)",
    )
    parser.add_argument(
        "--slop", type=float, default=0.02, help="seconds between paired colour and depth"
    )
    parser.add_argument(
        "--calibration", type=Path, default=None, help="YAML with the depth->colour extrinsic"
    )
    parser.add_argument("--gt-topic", default=None, help="ground-truth / pseudo-label topic")
    parser.add_argument("--lidar", action="store_true", help="store LiDAR points per sample")
    parser.add_argument("--radar", action="store_true", help="store radar points per sample")
    parser.add_argument(
        "--prior",
        default=None,
        metavar="SPEC",
        help="store a prompt-free model's depth per sample (the MetricAnything teacher's prior): "
        "lingbot, lingbot:<checkpoint> or ma_student:<checkpoint>",
    )
    parser.add_argument(
        "--prior-device", default="cpu", help="where the prior model runs (cpu, cuda, auto)"
    )
    parser.add_argument(
        "--instances",
        action="store_true",
        help="store instance ids (16-bit PNG) and target prompts per sample (FocusDepth)",
    )
    parser.add_argument("--stride", type=int, default=1, help="keep every stride-th frame")
    parser.add_argument("--rgb-format", choices=("png", "jpg"), default="png")
    parser.add_argument("--jpeg-quality", type=int, default=95)
    parser.add_argument("--force", action="store_true", help="redo finished bags too")
    parser.add_argument("--merge-only", action="store_true", help="only rebuild the manifest")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.merge_only:
        path = build_manifest(args.out)
        log.info("wrote %s", path)
        return 0
    if not args.inputs:
        parser.error("give at least one bag or directory (or --merge-only)")
    if args.shard_size < 1 or args.stride < 1:
        parser.error("--shard-size and --stride must be >= 1")
    try:
        topics = parse_overrides(args.topic)
    except ValueError as exc:
        parser.error(str(exc))
    if args.gt_topic:
        topics["gt_depth"] = args.gt_topic
    if args.slop < 0:
        parser.error("--slop must be >= 0")
    calibration = load_calibration(args.calibration) if args.calibration else None
    cfg = ExtractConfig(
        out=args.out,
        shard_size=args.shard_size,
        read=ReadOptions(topics, int(round(args.slop * 1e9)), calibration),
        lidar=args.lidar,
        radar=args.radar,
        prior=args.prior,
        prior_device=args.prior_device,
        instances=args.instances,
        stride=args.stride,
        rgb_format=args.rgb_format,
        jpeg_quality=args.jpeg_quality,
        progress=not args.no_progress,
    )
    group = parse_group(args.bag_group) if args.bag_group else None
    try:
        report = extract(args.inputs, cfg, workers=args.workers, bag_group=group, force=args.force)
    except FileNotFoundError as exc:
        log.error("%s", exc)
        return 2
    if not (report.done or report.skipped or report.failed):
        log.error("no recordings found under %s: nothing extracted", ", ".join(args.inputs))
        return 1
    log.info(
        "%d bag(s) extracted (%d frames), %d skipped as finished, %d failed; manifest %s",
        len(report.done),
        report.frames,
        len(report.skipped),
        len(report.failed),
        report.manifest,
    )
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())

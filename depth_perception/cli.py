"""`depth-perception` — the command-line verbs of the suite.

depth-perception demo [--out out/demo]                 the main job, end to end over DDS
depth-perception make-bag OUT [--kind tabletop] ...    a synthetic rosbag2 with ground truth
depth-perception bag-info BAG [--topic ROLE=TOPIC]     roles, rates, frames it gives (or why not)
depth-perception folder-to-bag DIR OUT                 image-folder captures -> rosbag2
depth-perception eval-bag BAG --pipeline NAME ...      replay a bag through a pipeline, score it
depth-perception eval-folder DIR --pipeline NAME ...   hide-and-seek on real captures
depth-perception eval-depthlm BAG... --checkpoint DIR  DepthLM pixel queries vs baselines
depth-perception pipelines                             list the pipelines
depth-perception models [fetch NAME|hf:REPO[/FILE]]    official checkpoints on the Hugging Face Hub
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import NoReturn

from depth_perception.eval.pipelines import (
    BASELINES,
    FOCUSDEPTH,
    PIPELINE_GROUPS,
    PIPELINES,
    STUDENT_PRIOR_PIPELINE,
    TAKES_CHECKPOINT,
    MissingInputError,
    expand_pipelines,
)
from depth_perception.models.hub import add_models_verb

PROG = "depth-perception"


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (``depth-perception: error: ...``), exit status 2."""

    def error(self, message: str) -> NoReturn:
        verb = self.prog.removeprefix(PROG).strip()
        self.exit(2, f"{PROG}: error: {verb + ': ' if verb else ''}{message}\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {value}")
    return value


def _existing(path: Path) -> Path:
    """``path``, which must exist: a missing input is named before any work starts."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    return Path(path)


def _output_dir(path: Path) -> Path:
    """``path`` created and writable, checked before hours of evaluation are spent."""
    path.mkdir(parents=True, exist_ok=True)
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"{path}: output directory is not writable")
    return path


def _add_recording_args(p: argparse.ArgumentParser) -> None:
    """The options of every verb that reads a recording (one mechanism: ReadOptions)."""
    p.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="ROLE=TOPIC",
        help="use TOPIC for ROLE (rgb, depth, rgb_info, depth_info, lidar, radar, extrinsic, "
        "tf_static, ...); repeatable; default: found by message type and driver layout",
    )
    p.add_argument(
        "--slop",
        type=float,
        default=0.02,
        help="seconds: pair a colour image with the nearest depth image at most this far apart "
        "(default 0.02)",
    )
    p.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="calibration YAML (calibration/README.md) with the depth->colour extrinsic, for "
        "recordings whose depth is not registered and that carry no extrinsic",
    )


def _read_options(args: argparse.Namespace):
    from depth_perception.io.calibration import load_calibration
    from depth_perception.io.recording import ReadOptions
    from depth_perception.io.topics import parse_overrides

    if args.slop < 0:
        raise _UserError(f"--slop {args.slop}: must be >= 0")
    try:
        topics = parse_overrides(args.topic)
    except ValueError as exc:
        raise _UserError(str(exc)) from None
    calibration = load_calibration(_existing(args.calibration)) if args.calibration else None
    return ReadOptions(topics, int(round(args.slop * 1e9)), calibration)


def _existing_recording(path: Path) -> Path:
    from depth_perception.io.recording import is_recording

    if not is_recording(_existing(path)):
        raise _UserError(
            f"{path}: not a recording (a rosbag2 directory with metadata.yaml, a ROS 1 .bag "
            "file or an .mcap file)"
        )
    return path


class _UserError(OSError):
    """A wrong argument found after parsing: one line, exit status 2."""


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pipeline",
        action="append",
        choices=[*sorted(PIPELINES), *PIPELINE_GROUPS],
        help="pipeline to evaluate (repeat for several; 'all': every pipeline, 'learned': the "
        "learned ones, 'focusdepth': FocusDepth on the sensor depth and on lingbot_aligned's; "
        "default: the classical baselines)",
    )
    p.add_argument("--out", type=Path, default=Path("out/eval"), help="report directory")
    p.add_argument(
        "--mode",
        choices=("dds", "offline"),
        default="dds",
        help="dds: launch the node and replay over DDS (default); offline: call the engine",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="dds: publish at RATE x the recorded speed without waiting (default: lockstep)",
    )
    p.add_argument("--max-frames", type=_positive_int, default=None)
    p.add_argument(
        "--checkpoint",
        default=None,
        help="learned, ma_teacher_* and focusdepth* pipelines: model dir, official model.pt or "
        "preset (default: the shipped model; one method's pipelines at a time)",
    )
    p.add_argument(
        "--teacher",
        default=None,
        help=f"{STUDENT_PRIOR_PIPELINE}: the teacher checkpoint (default: the shipped teacher; "
        "--checkpoint names its student prior)",
    )
    p.add_argument("--figure-every", type=int, default=10)
    p.add_argument(
        "--depth-bins",
        type=_depth_bins,
        default=(),
        metavar="E0,E1,...",
        help="also AbsRel per ground-truth range [E0,E1), ..., [En,inf) in metres (MetricAnything "
        "Table 14: 0,10,20,30,40,50)",
    )


def _depth_bins(text: str) -> tuple[float, ...]:
    try:
        edges = tuple(float(e) for e in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated metres, e.g. 0,10") from None
    if any(b <= a for a, b in zip(edges[:-1], edges[1:], strict=True)) or edges[0] < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: edges must be >= 0 and increase")
    return edges


def _run_eval(
    frames_factory, total, args, title: str, hidden: bool = False, out: Path | None = None
) -> int:
    """Evaluate each pipeline into ``out`` (default ``args.out``), write comparison.md; the
    exit status (1: the data ended early).

    A pipeline whose inputs the recording lacks is skipped with a note; a corrupt record ends
    every pipeline's run there, and the frames scored before it are still reported.
    """
    from depth_perception.eval.evaluate import EvalConfig, evaluate, table_metrics
    from depth_perception.eval.prompt_study import evaluate_prompts, study_table
    from depth_perception.eval.report import compare_table
    from depth_perception.eval.targets import per_target_table

    out = _output_dir(out or args.out)
    summaries, notes, truncated = {}, [], None
    studies: dict[str, dict] = {}
    for name in expand_pipelines(args.pipeline or list(BASELINES)):
        cfg = EvalConfig(
            pipeline=name,
            mode=args.mode,
            rate=args.rate,
            max_frames=args.max_frames,
            figure_every=args.figure_every,
            checkpoint=args.checkpoint if name in TAKES_CHECKPOINT else None,
            depth_bins_m=args.depth_bins,
            teacher=args.teacher if name == STUDENT_PRIOR_PIPELINE else None,
        )
        try:
            summary = evaluate(frames_factory(), cfg, out / name, f"{title}: {name}", total)
        except MissingInputError as exc:
            notes.append(f"{name} skipped: {exc}")
            print(notes[-1])
            continue
        summaries[name] = summary.to_dict()
        truncated = summary.truncated_reason or truncated
        if getattr(args, "prompt_study", False) and name in FOCUSDEPTH:
            studies[name] = evaluate_prompts(frames_factory(), cfg, out / name)
            print(f"{name}: prompt study -> {out / name / 'prompt_study.md'}")
        rtf = summary.real_time_factor
        print(
            f"{name}: {summary.frames} frames, real-time factor {rtf:.2f}"
            if rtf
            else f"{name}: {summary.frames} frames"
        )
    metrics = table_metrics(summaries, hidden)
    table = compare_table(summaries, metrics) if summaries else "No pipeline could run.\n"
    text = f"# {title}\n\n"
    if truncated:
        text += (
            f"**Truncated run**: {truncated}. Only the frames read before it are scored; "
            f"`{PROG}` exited with status 1.\n\n"
        )
    text += table + "".join(f"\n- {note}" for note in notes)
    per_target = {
        n: s["extra"]["per_target"] for n, s in summaries.items() if s["extra"].get("per_target")
    }
    if per_target:
        text += (
            "\n\n## Per target (median [Q25, Q75] over targets; each pipeline's targets.csv)\n\n"
            + per_target_table(per_target)
        )
    for name, study in studies.items():
        text += f"\n\n## Prompt correctness: {name} (means over targets)\n\n" + study_table(study)
    (out / "comparison.md").write_text(text + "\n")
    print(table)
    if truncated:
        print(
            f"{PROG}: error: {truncated}; partial results written to {out} (marked truncated)",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_make_bag(args: argparse.Namespace) -> None:
    from depth_perception.io.bag import write_sim_bag
    from depth_perception.sim.sequence import SequenceConfig

    cfg = SequenceConfig(
        scene_kind=args.kind,
        seed=args.seed,
        n_frames=args.frames,
        fps=args.fps,
        width=args.width,
        height=args.height,
        lidar=not args.no_lidar,
        radar=not args.no_radar,
    )
    summary = write_sim_bag(args.out, cfg, storage=args.storage, progress=True)
    print(summary)


def cmd_bag_info(args: argparse.Namespace) -> None:
    from depth_perception.io.recording import bag_info

    options = _read_options(args)
    info = bag_info(
        _existing_recording(args.bag), options.topics, options.slop_ns, options.calibration
    )
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return
    print(format_bag_info(info))


def format_bag_info(info: dict) -> str:
    """``bag-info``'s report: the roles it resolved, rates, pairing, and why no frames."""
    from depth_perception.io.topics import ROLES

    lines = [
        f"recording: {info['path']}  ({info.get('storage') or '?'}, {info['message_count']} "
        f"messages, {info['duration_ns'] / 1e9:.2f} s)",
        f"layout:    {info.get('layout', 'unknown')}",
        "roles:",
    ]
    rates = info.get("pairing", {}).get("rates_hz", {})
    topics, transports = info.get("topics", {}), info.get("transports", {})
    for role, topic in sorted(info.get("roles", {}).items(), key=lambda r: list(ROLES).index(r[0])):
        t = topics.get(topic, {})
        rate = f", {rates[role]:.1f} Hz" if role in rates else ""
        via = f", {transports[role]}" if role in transports else ""
        lines.append(
            f"  {role:13s}{topic}  [{t.get('type', '?')}{via}; {t.get('count', '?')} msgs{rate}]"
        )
    if info.get("registration"):
        lines.append(f"registration: {info['registration']}")
        lines.append(f"  -> registered into the colour camera with {info.get('extrinsic')}")
    pairing = info.get("pairing")
    if pairing:
        gaps = (
            f"colour-depth gap max {pairing['max_gap_ms']:g} ms, mean "
            f"{pairing['mean_gap_ms']:g} ms; "
            if pairing["pairs"]
            else ""
        )
        lines.append(
            f"pairing (slop {pairing['slop_ms']:g} ms): {pairing['pairs']} pairs; {gaps}"
            f"unpaired: {pairing['colour_unpaired']} colour, {pairing['depth_unpaired']} depth"
        )
    lines.append(f"frames:    {info.get('frames', 0)}")
    if info.get("why_no_frames"):
        lines.append(f"no frames: {info['why_no_frames']}")
    lines += [f"note:      {n}" for n in info.get("notes", [])]
    others = sorted(set(topics) - set(info.get("roles", {}).values()))
    if others:
        shown = ", ".join(others[:8]) + (f" and {len(others) - 8} more" if len(others) > 8 else "")
        lines.append(f"unused:    {shown} (--json lists every topic)")
    return "\n".join(lines)


def cmd_folder_to_bag(args: argparse.Namespace) -> None:
    from depth_perception.io.bag import write_frames_bag
    from depth_perception.io.image_folder import read_image_folder

    captures = read_image_folder(_existing(args.folder))
    print(write_frames_bag(args.out, captures, storage=args.storage))


def cmd_eval_bag(args: argparse.Namespace) -> int:
    from depth_perception.eval.evaluate import chain_bags, hide_and_seek, with_corruption
    from depth_perception.io.bag import BagOpenError, BagReadError
    from depth_perception.io.recording import bag_info

    options = _read_options(args)
    bags = [_existing_recording(b) for b in args.bag]
    total: int | None = 0
    for bag in bags:
        try:
            info = bag_info(bag, options.topics, options.slop_ns, options.calibration)
        except BagOpenError:
            raise
        except BagReadError:  # a corrupt record: the run scores the frames before it
            total = None
            continue
        if not info["frames"]:
            raise _UserError(f"{bag}: no synchronized RGB-D frames: {info['why_no_frames']}")
        total = None if total is None else total + info["frames"]

    def frames():
        stream = chain_bags(bags, options)
        if args.hide_and_seek:
            return hide_and_seek(stream, seed=args.seed)
        if args.corrupt:
            return with_corruption(stream, args.corrupt, seed=args.seed)
        return stream

    names = ", ".join(Path(b).name for b in args.bag[:3]) + (" ..." if len(args.bag) > 3 else "")
    title = f"Replay of {names}"
    if args.corrupt:
        title += f" (corruption: {args.corrupt})"
    return _run_eval(frames, total, args, title, hidden=args.hide_and_seek)


def cmd_eval_folder(args: argparse.Namespace) -> int:
    from depth_perception.eval.evaluate import hide_and_seek
    from depth_perception.eval.report import repeated_runs_table
    from depth_perception.io.image_folder import read_image_folder

    captures = read_image_folder(_existing(args.folder))
    seeds = range(args.seed, args.seed + args.seeds)
    out, title = args.out, f"Hide-and-seek on {Path(args.folder).name}"
    status = 0
    for seed in seeds:
        # One draw of hidden blocks per seed; several draws show how much a ranking depends on
        # which pixels happened to be hidden.
        status |= _run_eval(
            lambda seed=seed: hide_and_seek(captures, seed=seed),
            len(captures),
            args,
            f"{title} (seed {seed})",
            hidden=True,
            out=out / f"seed_{seed}" if args.seeds > 1 else out,
        )
    if args.seeds > 1:
        runs = [out / f"seed_{s}" for s in seeds]
        done = [
            p
            for p in expand_pipelines(args.pipeline or list(BASELINES))
            if all((r / p / "frames.csv").exists() for r in runs)
        ]
        names = [c.extra.get("name", str(i)) for i, c in enumerate(captures)]
        text = f"# {title}, per capture, seeds {seeds.start}-{seeds.stop - 1}\n"
        for metric in ("rmse", "abs_rel"):
            text += "\n" + repeated_runs_table(runs, done, names, metric)
        (out / "per_capture.md").write_text(text)
        print(text)
    return status


def cmd_eval_depthlm(args: argparse.Namespace) -> int:
    """DepthLM at sampled pixels of recordings (and/or an official jsonl) beside the constant,
    training-median and dense baselines (depth_perception.eval.depthlm)."""
    from depth_perception.engines.depthlm import (
        DepthLMEngine,
        DepthLMEngineConfig,
        resolve_depthlm_checkpoint,
    )
    from depth_perception.eval.depthlm import DepthLMEvalConfig, evaluate_frames, evaluate_jsonl
    from depth_perception.eval.evaluate import chain_bags
    from depth_perception.eval.report import compare_table

    if not args.bag and args.jsonl is None:
        raise _UserError("give recordings (BAG ...) and/or --jsonl FILE")
    options = _read_options(args)
    bags = [_existing_recording(b) for b in args.bag]
    jsonl = _existing(args.jsonl) if args.jsonl is not None else None
    try:
        checkpoint = resolve_depthlm_checkpoint(args.checkpoint and _existing(args.checkpoint))
    except FileNotFoundError as exc:
        raise _UserError(str(exc)) from None
    engine = DepthLMEngine(
        DepthLMEngineConfig(
            checkpoint,
            device=args.device,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
        )
    )
    out = _output_dir(args.out)
    runs = []
    if bags:
        names = ", ".join(Path(b).name for b in bags[:3]) + (" ..." if len(bags) > 3 else "")
        cfg = DepthLMEvalConfig(
            pixels_per_image=args.pixels_per_image,
            seed=args.seed,
            dense=tuple(args.dense),
            max_frames=args.max_frames,
        )
        title = f"DepthLM pixel queries on {names}"
        runs.append((out, evaluate_frames(engine, chain_bags(bags, options), cfg, out, title)))
    if jsonl is not None:
        where = out / "jsonl" if bags else out
        runs.append((where, evaluate_jsonl(engine, jsonl, where, args.image_folder)))
    for where, summary in runs:
        print(f"{summary['title']} -> {where / 'report.md'}")
        print(compare_table(summary["methods"], ("delta1", "abs_rel", "failed", "n")))
        for note in summary["notes"]:
            print(f"- {note}")
    return 0


def cmd_complete(args: argparse.Namespace) -> None:
    from depth_perception.eval.complete_files import complete_files, frames_from, pipeline_items
    from depth_perception.eval.pipelines import get_pipeline

    pipeline = get_pipeline(args.pipeline, args.checkpoint)
    # Inputs first (a pipeline the captures cannot feed is refused before a model loads).
    items = pipeline_items(pipeline, frames_from(_existing(args.input), _read_options(args)))
    engine = pipeline.make_engine()
    written = complete_files(engine, items, _output_dir(args.out))
    print(f"{len(written)} frames completed with {engine.model_id} -> {args.out}")


def cmd_pipelines(args: argparse.Namespace) -> None:
    for name, p in PIPELINES.items():
        print(f"{name:16s} {p.description}  [node: {p.executable}, config/{p.params_file}]")


def cmd_demo(args: argparse.Namespace) -> None:
    from depth_perception.demo import run_demo

    run_demo(args.out, n_frames=args.frames)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("demo", help="the main job end to end on generated and real data")
    p.add_argument("--out", type=Path, default=Path("out/demo"))
    p.add_argument("--frames", type=int, default=20, help="frames in the generated sample bag")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("make-bag", help="write a synthetic rosbag2 with ground truth")
    p.add_argument("out", type=Path)
    p.add_argument("--kind", choices=("tabletop", "room", "street"), default="tabletop")
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    p.add_argument("--no-lidar", action="store_true", help="leave out /lidar/points")
    p.add_argument("--no-radar", action="store_true", help="leave out /radar/points")
    p.set_defaults(func=cmd_make_bag)

    p = sub.add_parser(
        "bag-info", help="roles found, rates, synchronized frames (and why none), topics"
    )
    p.add_argument("bag", type=Path, help="rosbag2 directory, ROS 1 .bag or .mcap file")
    _add_recording_args(p)
    p.add_argument("--json", action="store_true", help="everything as JSON, every topic")
    p.set_defaults(func=cmd_bag_info)

    p = sub.add_parser("folder-to-bag", help="image-folder captures (rgb, raw_depth) -> rosbag2")
    p.add_argument("folder", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    p.set_defaults(func=cmd_folder_to_bag)

    p = sub.add_parser("eval-bag", help="replay bags through pipelines and score them")
    p.add_argument(
        "bag", type=Path, nargs="+", help="recordings: rosbag2 directories, .bag or .mcap files"
    )
    _add_eval_args(p)
    _add_recording_args(p)
    p.add_argument(
        "--hide-and-seek",
        action="store_true",
        help="bag without ground truth: hide blocks of raw depth and score on them",
    )
    p.add_argument(
        "--corrupt",
        choices=("easy", "medium", "hard", "extreme"),
        help="LingBot-Depth protocol: the input is the ground truth corrupted at this level",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--prompt-study",
        action="store_true",
        help="focusdepth pipelines: also rerun each target with a correct, a wrong-but-visible, "
        "an absent and an empty prompt (offline; <out>/<pipeline>/prompt_study.md)",
    )
    p.set_defaults(func=cmd_eval_bag)

    p = sub.add_parser("eval-folder", help="hide-and-seek evaluation on image-folder captures")
    p.add_argument("folder", type=Path)
    _add_eval_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--seeds",
        type=_positive_int,
        default=1,
        help="repeat with seeds SEED..SEED+N-1 (under OUT/seed_S) and write per_capture.md",
    )
    p.set_defaults(func=cmd_eval_folder)

    p = sub.add_parser(
        "eval-depthlm",
        help="DepthLM at sampled pixels of recordings with ground truth (or an official jsonl) "
        "beside the constant, training-median and dense baselines",
    )
    p.add_argument(
        "bag", type=Path, nargs="*", help="recordings with ground truth (rosbag2, .bag, .mcap)"
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="DepthLM model directory (default: the shipped models/depthlm_small)",
    )
    p.add_argument(
        "--pixels-per-image",
        type=_positive_int,
        default=100,
        help="pixels drawn per frame among those with ground truth whose marker fits (100)",
    )
    p.add_argument("--seed", type=int, default=0, help="key of the per-frame pixel draws")
    p.add_argument(
        "--dense",
        action="append",
        default=[],
        metavar="NAME[=CHECKPOINT]",
        help="also score this pipeline's depth at the same pixels, as range (e.g. "
        "lingbot_aligned, ma_student); repeatable",
    )
    p.add_argument("--jsonl", type=Path, default=None, help="an official evaluation jsonl")
    p.add_argument(
        "--image-folder",
        type=Path,
        default=None,
        help="--jsonl: the folder its image paths are relative to (default: the jsonl's)",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--max-new-tokens", type=_positive_int, default=None)
    p.add_argument("--batch-size", type=_positive_int, default=16)
    p.add_argument("--max-frames", type=_positive_int, default=None)
    p.add_argument("--out", type=Path, default=Path("out/eval_depthlm"), help="report directory")
    _add_recording_args(p)
    p.set_defaults(func=cmd_eval_depthlm)

    p = sub.add_parser("complete", help="complete depth of image captures or a bag into files")
    p.add_argument(
        "input",
        type=Path,
        help="a recording (rosbag2 dir, .bag, .mcap), a capture dir, or a folder of captures",
    )
    _add_recording_args(p)
    p.add_argument("--pipeline", choices=sorted(PIPELINES), default="lingbot_aligned")
    p.add_argument("--checkpoint", default=None, help="learned pipelines: the model to load")
    p.add_argument("--out", type=Path, default=Path("out/complete"))
    p.set_defaults(func=cmd_complete)

    p = sub.add_parser("pipelines", help="list the pipelines")
    p.set_defaults(func=cmd_pipelines)

    add_models_verb(sub)  # `models [fetch ...]`: depth_perception/models/hub.py
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a verb; user errors (missing or unreadable files, unwritable output, a corrupt bag,
    a pipeline the data cannot feed) print one line and return 2, without a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (OSError, MissingInputError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        from depth_perception.io.recording import RecordingError

        if not isinstance(exc, RecordingError):
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""`make demo`: the main job end to end, on data the project makes or ships.

1. a synthetic tabletop rosbag2 (colour, 16UC1 raw depth, camera_info, LiDAR, radar, targets,
   ground truth) is generated once under data/;
2. the real RGB-D captures of ../shared/data/real_rgbd become a bag too;
3. each pipeline's node is launched as its own process and both bags are replayed through it over
   DDS; the published depth is scored (ground truth on the synthetic bag, hide-and-seek on the real
   captures) and reports with figures are written under the output directory;
4. the real recordings of ../shared/data/real_bags (a RealSense SDK bag: ROS 1, depth not
   registered to colour, 6 fps depth) are read as users' bags are — topics found by role, depth
   registered into the colour camera, colour paired with the nearest depth within
   ``REAL_BAG_SLOP_S`` — and replayed the same way (hide-and-seek).
"""

from __future__ import annotations

import time
from pathlib import Path

from depth_perception.eval.evaluate import (
    HEADLINE_METRICS,
    HIDE_AND_SEEK_METRICS,
    EvalConfig,
    chain_bags,
    evaluate,
    hide_and_seek,
)
from depth_perception.eval.pipelines import BASELINES, LEARNED, PROMPT_BASELINES
from depth_perception.eval.report import compare_table
from depth_perception.io.bag import write_frames_bag, write_sim_bag
from depth_perception.io.image_folder import find_real_captures, read_image_folder
from depth_perception.io.recording import ReadOptions, bag_info, is_recording
from depth_perception.paths import REPO_ROOT, default_model_path
from depth_perception.sim.sequence import SequenceConfig

DATA_DIR = Path("data")


def sample_bag(n_frames: int, data_dir: Path = DATA_DIR) -> Path:
    """The demo's synthetic bag, generated once (deterministic for its seed)."""
    path = data_dir / f"sample_tabletop_{n_frames}f"
    if not (path / "metadata.yaml").is_file():
        cfg = SequenceConfig(
            scene_kind="tabletop",
            seed=0,
            n_frames=n_frames,
            fps=10.0,
            width=320,
            height=240,
            lidar=True,
            radar=True,
        )
        print(f"writing the sample bag {path} ...")
        write_sim_bag(path, cfg, storage="sqlite3", progress=True)
    return path


def real_captures_bag(data_dir: Path = DATA_DIR) -> Path | None:
    folder = find_real_captures()
    if folder is None:
        return None
    path = data_dir / "real_rgbd"
    if not (path / "metadata.yaml").is_file():
        print(f"converting the real captures in {folder} into {path} ...")
        write_frames_bag(path, read_image_folder(folder), storage="sqlite3")
    return path


#: The shared RealSense recording's colour frame is 101.6 ms from its nearest depth frame.
REAL_BAG_SLOP_S = 0.12


def real_recordings() -> list[Path]:
    """The shared real recordings (``shared/data/real_bags`` in or beside the repository)."""
    for root in (REPO_ROOT / "shared", REPO_ROOT.parent / "shared"):
        folder = root / "data" / "real_bags"
        if folder.is_dir():
            return sorted(p for p in folder.iterdir() if is_recording(p))
    return []


def _evaluate_bag(
    bag: Path,
    out: Path,
    title: str,
    pipelines: tuple[str, ...],
    hidden: bool,
    options: ReadOptions | None = None,
) -> dict[str, dict]:
    options = options or ReadOptions()
    total = bag_info(bag, options.topics, options.slop_ns).get("frames")
    summaries = {}
    for name in pipelines:
        frames = chain_bags([bag], options)  # as `eval-bag`: frames carry the calibration
        if hidden:
            frames = hide_and_seek(frames, seed=0)
        cfg = EvalConfig(pipeline=name, mode="dds", figure_every=5)
        summary = evaluate(frames, cfg, out / name, f"{title}: {name}", total=total)
        summaries[name] = summary.to_dict()
        print(
            f"  {name:14s} {summary.frames} frames, "
            f"{summary.extra.get('frames_without_result', 0)} without result, "
            f"real-time factor {summary.real_time_factor or float('nan'):.2f}"
        )
    return summaries


def run_demo(out: str | Path = "out/demo", n_frames: int = 20) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    sections = []

    learned: tuple[str, ...] = ()
    if (default_model_path() / "config.json").is_file():
        learned = LEARNED
    else:
        print(f"no shipped model at {default_model_path()}: evaluating the baselines only")

    bag = sample_bag(n_frames)
    print(f"replaying {bag} through each pipeline's node over DDS ...")
    synthetic = _evaluate_bag(
        bag,
        out / "synthetic",
        f"Synthetic tabletop ({bag.name})",
        learned + BASELINES + PROMPT_BASELINES,
        hidden=False,
    )
    table = compare_table(synthetic, list(HEADLINE_METRICS))
    sections.append(f"## Synthetic tabletop bag `{bag}` (ground truth)\n\n{table}\n")
    print(table)

    real = real_captures_bag()
    if real is not None:
        print(f"replaying {real} (hide-and-seek: 10 % of valid raw depth hidden) ...")
        scores = _evaluate_bag(
            real,
            out / "real",
            "Real RGB-D captures (hide-and-seek)",
            learned + BASELINES,
            hidden=True,
        )
        table = compare_table(scores, list(HIDE_AND_SEEK_METRICS))
        sections.append(
            f"## Real captures `{real}` (hide-and-seek on hidden valid raw depth)\n\n{table}\n"
        )
        print(table)
    else:
        sections.append("## Real captures\n\nnot found (set DEPTH_PERCEPTION_REAL_RGBD)\n")

    options = ReadOptions(slop_ns=int(REAL_BAG_SLOP_S * 1e9))
    for recording in real_recordings():
        info = bag_info(recording, slop_ns=options.slop_ns)
        print(
            f"replaying the real recording {recording.name} ({info.get('layout')}; "
            f"{info['frames']} frame(s) within {REAL_BAG_SLOP_S} s; registration: "
            f"{info.get('registration') or 'none needed'}) ..."
        )
        scores = _evaluate_bag(
            recording,
            out / "recordings" / recording.stem,
            f"Real recording {recording.name} (hide-and-seek)",
            learned + BASELINES,
            hidden=True,
            options=options,
        )
        table = compare_table(scores, list(HIDE_AND_SEEK_METRICS))
        roles = "\n".join(f"- {role}: `{topic}`" for role, topic in info["roles"].items())
        sections.append(
            f"## Real recording `{recording.name}` ({info.get('layout')}, hide-and-seek)\n\n"
            f"Topics found by role:\n{roles}\n\nRegistration: "
            f"{info.get('registration') or 'none needed'}. Pairing: {info['pairing']}.\n\n"
            f"{table}\n"
        )
        print(table)

    figures = sorted(out.glob("*/*/figures/*.png"))
    figure_links = "\n".join(f"- [{p.relative_to(out)}]({p.relative_to(out)})" for p in figures)
    report = out / "report.md"
    report.write_text(
        "# depth_perception demo\n\n"
        "Each pipeline ran as its own ROS 2 node; frames were replayed over DDS in lockstep.\n\n"
        + "\n".join(sections)
        + f"\n## Figures\n\n{figure_links}\n\nTotal time: {time.monotonic() - t0:.0f} s\n"
    )
    print(f"report: {report}")
    return report

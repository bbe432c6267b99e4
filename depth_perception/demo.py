"""`make demo`: the main job end to end, on data the project makes or ships.

1. a synthetic tabletop rosbag2 (colour, 16UC1 raw depth, camera_info, LiDAR, radar, targets,
   ground truth) is generated once under data/;
2. the real RGB-D captures of ../shared/data/real_rgbd become a bag too;
3. each pipeline's node is launched as its own process and both bags are replayed through it over
   DDS; the published depth is scored (ground truth on the synthetic bag, hide-and-seek on the real
   captures) and reports with figures are written under the output directory.
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
from depth_perception.io.recording import bag_info
from depth_perception.paths import default_model_path
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


def _evaluate_bag(
    bag: Path, out: Path, title: str, pipelines: tuple[str, ...], hidden: bool
) -> dict[str, dict]:
    total = bag_info(bag).get("frames")
    summaries = {}
    for name in pipelines:
        frames = chain_bags([bag])  # as `eval-bag`: frames carry the bag's calibration
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

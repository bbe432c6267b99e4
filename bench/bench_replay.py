"""Benchmark: replay evaluation of the data path alone (no model), as x real time.

A simulated 640x480 bag at 30 fps is replayed three ways; each is reported as recorded time /
wall time (> 1 = faster than the camera):

- read:     rosbag2 -> decoded frames (rosbags + our conversions), nothing else;
- offline:  read + the `passthrough` engine + scoring against ground truth (what `--mode offline`
            costs beyond a model);
- replay:   read + publish over DDS to the `depth_fill_node` (method passthrough) launched as its
            own process + completed depth and status back, in lockstep, without scoring;
- dds:      replay + scoring against ground truth (`eval-bag`'s whole path).

Usage: ``python bench/bench_replay.py [--frames 30] [--json out.json]`` (after ``source env.sh``)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from depth_perception.eval.evaluate import EvalConfig, evaluate
from depth_perception.eval.pipelines import get_pipeline
from depth_perception.io.bag import write_sim_bag
from depth_perception.io.recording import bag_info, read_rgbd_frames
from depth_perception.ros.launcher import NodeProcess
from depth_perception.ros.replay import ReplayClient
from depth_perception.sim.sequence import SequenceConfig


def replay_only(bag: Path, n: int) -> float:
    """Seconds for the lockstep DDS round trip of every frame (after the node is up)."""
    pipeline = get_pipeline("passthrough")
    node = NodeProcess(
        pipeline.executable,
        params_file=pipeline.params_path,
        namespace="/camera",
        parameters=pipeline.parameters,
    )
    with node, ReplayClient("/camera") as client:
        if not client.wait_for_node(30.0):
            raise RuntimeError("depth_fill_node did not come up")
        t0 = time.perf_counter()
        got = sum(r.depth is not None for r in client.run(read_rgbd_frames(bag)))
        seconds = time.perf_counter() - t0
    assert got == n, f"replay: {got} of {n} frames came back"
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        bag = Path(tmp) / "bench_bag"
        cfg = SequenceConfig(
            scene_kind="room",
            seed=0,
            n_frames=args.frames,
            fps=args.fps,
            width=640,
            height=480,
            lidar=True,
            radar=False,
        )
        write_sim_bag(bag, cfg, progress=False)
        recorded_s = args.frames / args.fps
        info = bag_info(bag)

        t0 = time.perf_counter()
        n = sum(1 for _ in read_rgbd_frames(bag))
        read_s = time.perf_counter() - t0
        assert n == args.frames

        results = {
            "frames": n,
            "resolution": "640x480",
            "recorded_s": recorded_s,
            "bag_MB": sum(f.stat().st_size for f in bag.rglob("*")) / 2**20,
            "read_x_realtime": recorded_s / read_s,
        }
        results["replay_x_realtime"] = recorded_s / replay_only(bag, n)
        for mode in ("offline", "dds"):
            t0 = time.perf_counter()
            summary = evaluate(
                read_rgbd_frames(bag),
                EvalConfig("passthrough", mode=mode, figure_every=0),
                Path(tmp) / mode,
                mode,
                total=n,
            )
            wall = time.perf_counter() - t0
            assert summary.frames == n, f"{mode}: {summary.frames} of {n} frames came back"
            # evaluate() times from the first frame on: node start-up and discovery (about
            # 1-2 s, once per run) are reported apart from the steady-state rate.
            results[f"{mode}_x_realtime"] = summary.real_time_factor
            results[f"{mode}_wall_s"] = wall
        results["topics"] = len(info["topics"])

    print(
        f"data path at 640x480, {n} frames recorded at {args.fps:g} fps "
        f"({results['bag_MB']:.0f} MB bag):"
    )
    for key in ("read", "replay", "offline", "dds"):
        line = f"  {key:8s} {results[f'{key}_x_realtime']:6.2f} x real time"
        if f"{key}_wall_s" in results:
            line += f"  (whole run incl. start-up {results[f'{key}_wall_s']:.1f} s)"
        print(line)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Soak benchmark: a node fed 640x480 RGB-D at 30 Hz for N minutes, as a camera driver would.

Per node (its own process, launched like `ros2 run`): frames sent / completed / skipped by the
node's newest-frame policy / lost, latency p50 / p99 (node: synchronized input -> publication,
from CompletionStatus; round trip: publication of the input -> completed depth received), CPU
cores used by the node, and its resident memory after warm-up and at the end (growth in %).

Usage: ``python bench/bench_soak.py [--minutes 0.25] [--nodes fill,lingbot] [--json out.json]``
(after ``source env.sh``). Skipped frames are not lost: a model slower than the camera always
works on the newest frame and counts the ones it skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from depth_perception_msgs.msg import CompletionStatus
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from depth_perception.core.camera import Intrinsics
from depth_perception.eval.pipelines import get_pipeline
from depth_perception.ros.completion_node import OUTPUT_PREFIX
from depth_perception.ros.conversions import (
    intrinsics_to_camera_info,
    metres_to_depth_image,
    ns_to_stamp,
    numpy_to_image,
    stamp_to_ns,
)
from depth_perception.ros.launcher import NodeProcess
from depth_perception.ros.qos import reliable_qos
from depth_perception.ros.replay import ReplayClient

W, H, FPS = 640, 480, 30.0
INTR = Intrinsics(W, H, fx=525.0, fy=525.0, cx=319.5, cy=239.5, frame_id="camera_optical")
NODES = {"fill": "nearest", "lingbot": "lingbot_aligned"}


def _frames(n: int = 8) -> list[tuple[np.ndarray, np.ndarray]]:
    """A tilted floor with a box and 25 % holes, n variants (no simulator: cheap and fixed)."""
    rng = np.random.default_rng(0)
    v, u = np.mgrid[0:H, 0:W].astype(np.float32)
    out = []
    for i in range(n):
        depth = 1.5 + 0.002 * v + 0.001 * u
        depth[150:330, 200 + 10 * i : 400 + 10 * i] -= 0.4
        depth[rng.random((H, W)) < 0.25] = np.nan
        rgb = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        out.append((rgb, depth.astype(np.float32)))
    return out


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def soak(name: str, minutes: float, log_dir: Path) -> dict:
    pipeline = get_pipeline(NODES[name])
    namespace = f"/soak_{name}"
    node = NodeProcess(
        pipeline.executable,
        params_file=pipeline.params_path,
        namespace=namespace,
        parameters=pipeline.parameters,
        log_path=log_dir / f"{name}.log",
    )
    sent: dict[int, float] = {}
    round_trip: dict[int, float] = {}  # stamp -> ms
    statuses: list[CompletionStatus] = []
    with node, ReplayClient(namespace, node_name=f"soak_{name}") as client:
        if not client.wait_for_node(60.0):
            raise RuntimeError(f"{pipeline.executable} did not come up: see {node.log_path}")

        def on_depth(msg: Image) -> None:
            stamp = stamp_to_ns(msg.header.stamp)
            if stamp in sent:
                round_trip[stamp] = (time.monotonic() - sent[stamp]) * 1e3

        qos = reliable_qos(depth=50)
        client.node.create_subscription(Image, f"{OUTPUT_PREFIX}/image", on_depth, qos)
        client.node.create_subscription(
            CompletionStatus, f"{OUTPUT_PREFIX}/status", statuses.append, qos
        )
        frames = [
            (numpy_to_image(rgb, "rgb8"), metres_to_depth_image(depth, None, "16UC1"))
            for rgb, depth in _frames()
        ]
        pid = node.process.pid
        duration = minutes * 60.0
        warm_up = min(10.0, 0.2 * duration)
        t0 = time.monotonic()
        stamp0 = time.time_ns()
        rss_start = cpu_start = t_cpu = None
        measured_from = None  # first stamp after warm-up
        i = 0
        last_progress = t0
        while (now := time.monotonic()) - t0 < duration:
            due = t0 + i / FPS
            if now < due:
                client.executor.spin_once(timeout_sec=min(0.005, due - now))
                continue
            stamp = stamp0 + int(i * 1e9 / FPS)
            if rss_start is None and now - t0 >= warm_up:
                rss_start, cpu_start, t_cpu, measured_from = _rss_mb(pid), _cpu_s(pid), now, stamp
            header = Header(stamp=ns_to_stamp(stamp), frame_id=INTR.frame_id)
            rgb, depth = frames[i % len(frames)]
            rgb.header = depth.header = header
            client.publish_messages(rgb, depth, intrinsics_to_camera_info(INTR, header))
            sent[stamp] = time.monotonic()
            i += 1
            if now - last_progress > 10.0:
                print(f"  {name}: {now - t0:.0f}/{duration:.0f} s, {i} frames sent", flush=True)
                last_progress = now
        rss_end, cpu_end, t_end = _rss_mb(pid), _cpu_s(pid), time.monotonic()
        client.spin_for(2.0)  # results still on their way
    if not statuses or measured_from is None:
        raise RuntimeError(f"no frame completed after warm-up: see {node.log_path}")
    last = statuses[-1]
    node_latency = [s.latency_ms for s in statuses if stamp_to_ns(s.header.stamp) >= measured_from]
    rt = [ms for stamp, ms in round_trip.items() if stamp >= measured_from]
    return {
        "node": pipeline.executable,
        "pipeline": pipeline.name,
        "minutes": minutes,
        "frames_sent": i,
        "frames_completed": len(statuses),
        "frames_skipped": int(last.frames_skipped),
        "frames_lost": i - len(statuses) - int(last.frames_skipped),
        "messages_unmatched": int(last.messages_unmatched),
        "node_latency_ms_p50": float(np.percentile(node_latency, 50)),
        "node_latency_ms_p99": float(np.percentile(node_latency, 99)),
        "round_trip_ms_p50": float(np.percentile(rt, 50)),
        "round_trip_ms_p99": float(np.percentile(rt, 99)),
        "node_cpu_cores": (cpu_end - cpu_start) / (t_end - t_cpu),
        "rss_mb_after_warm_up": rss_start,
        "rss_mb_end": rss_end,
        "rss_growth_pct": 100.0 * (rss_end - rss_start) / rss_start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=0.25, help="per node")
    parser.add_argument("--nodes", default="fill,lingbot", help=f"from {sorted(NODES)}")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--logs", type=Path, default=Path("out/bench_soak"))
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.nodes.split(","):
        print(f"soak {name} for {args.minutes} min at {FPS:.0f} Hz {W}x{H}", flush=True)
        result = soak(name, args.minutes, args.logs)
        results.append(result)
        print(json.dumps(result, indent=2), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

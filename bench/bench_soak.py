"""Soak benchmark: a node fed 640x480 RGB-D at 30 Hz for N minutes, as a camera driver would.

Per node (its own process, launched like `ros2 run`): frames sent / completed / skipped by the
node's newest-frame policy / lost, latency p50 / p99 (node: synchronized input -> publication,
from CompletionStatus; round trip: publication of the input -> completed depth received), CPU
cores used by the node, and its resident memory after warm-up and at the end (growth in %).

Usage: ``python bench/bench_soak.py [--minutes 0.25] [--nodes fill,lingbot] [--json out.json]``
(after ``source env.sh``). Skipped frames are not lost: a model slower than the camera always
works on the newest frame and counts the ones it skipped.

The node base's two stages (``pipeline``, issue 14): ``--pipeline both`` soaks each node with
``pipeline: true`` and ``false`` in one run, ``--all-outputs`` subscribes to every output
(16UC1 depth and the 9.8 MB cloud too, the publishing work the second stage takes off the
model's thread), and ``--engine-threads N`` pins torch's threads in the node (and in the
engine-alone reference) so the other core is left to the second stage. Printed per node: the
completed frame rate of each mode, their ratio, and the engine alone on the same frames in this
process (``engine_ms``): pipelined, the frame rate approaches 1000 / engine_ms.

``--executors single_threaded,events`` soaks each node under each executor (the nodes'
``executor`` parameter, depth_perception.ros.spin) in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from depth_perception_msgs.msg import CompletionStatus
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
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
from depth_perception.ros.spin import EXECUTORS

W, H, FPS = 640, 480, 30.0
INTR = Intrinsics(W, H, fx=525.0, fy=525.0, cx=319.5, cy=239.5, frame_id="camera_optical")
NODES = {"fill": "nearest", "lingbot": "lingbot_aligned"}
#: ``--all-outputs``: the outputs besides depth and status (topic under depth_completed/).
ALL_OUTPUTS = {"image_mm": Image, "camera_info": CameraInfo, "points": PointCloud2}


def _drop(_msg) -> None:
    pass


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


def engine_ms(name: str, repeats: int = 5) -> float:
    """Median ms of the node's engine alone (``run``) on the soak's frames, in this process."""
    from depth_perception.engines.base import FrameInputs

    engine = get_pipeline(NODES[name]).make_engine()
    frames = _frames()
    times = []
    for i in range(repeats + 1):
        rgb, depth = frames[i % len(frames)]
        t = time.perf_counter()
        engine.run(FrameInputs(intrinsics=INTR, rgb=rgb, depth=depth.copy()))
        if i:  # the first run warms up
            times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def soak(
    name: str,
    minutes: float,
    log_dir: Path,
    pipelined: bool | None = None,
    all_outputs: bool = False,
    executor: str | None = None,
) -> dict:
    pipeline = get_pipeline(NODES[name])
    namespace = f"/soak_{name}"
    parameters = dict(pipeline.parameters)
    if pipelined is not None:
        parameters["pipeline"] = pipelined
    if executor is not None:
        parameters["executor"] = executor
    if all_outputs:
        parameters.update(publish_cloud=True, publish_depth_mm=True)
    mode = "" if pipelined is None else ("_pipelined" if pipelined else "_serial")
    mode += "" if executor is None else f"_{executor}"
    node = NodeProcess(
        pipeline.executable,
        params_file=pipeline.params_path,
        namespace=namespace,
        parameters=parameters,
        log_path=log_dir / f"{name}{mode}.log",
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
        if all_outputs:  # received and dropped: the node builds and publishes them all
            for topic, kind in ALL_OUTPUTS.items():
                client.node.create_subscription(kind, f"{OUTPUT_PREFIX}/{topic}", _drop, qos)
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
    measured = [s for s in statuses if stamp_to_ns(s.header.stamp) >= measured_from]
    return {
        "node": pipeline.executable,
        "pipeline": pipeline.name,
        "pipelined": parameters.get("pipeline", True),
        "executor": executor or "config",
        "all_outputs": all_outputs,
        "minutes": minutes,
        "frames_sent": i,
        "frames_completed": len(statuses),
        "completed_per_s_after_warm_up": len(measured) / (t_end - t_cpu),
        "frames_skipped": int(last.frames_skipped),
        "frames_lost": i - len(statuses) - int(last.frames_skipped),
        # Of those: never processed by the node (inputs lost in transport, all three of a frame:
        # one alone would be counted unmatched) vs processed but their status not received.
        "frames_lost_before_node": i - int(last.frames_processed) - int(last.frames_skipped),
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
    parser.add_argument(
        "--pipeline",
        choices=("default", "true", "false", "both"),
        default="default",
        help="the nodes' pipeline parameter (default: their config's)",
    )
    parser.add_argument(
        "--executors",
        default="",
        help="the nodes' executor parameter, each node soaked under each (comma-separated "
        f"from {', '.join(EXECUTORS)}; empty: their config's)",
    )
    parser.add_argument("--all-outputs", action="store_true", help="subscribe to every output")
    parser.add_argument("--engine-threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    if args.engine_threads > 0:  # the node processes inherit it; torch reads it at import
        os.environ["OMP_NUM_THREADS"] = str(args.engine_threads)
        import torch

        torch.set_num_threads(args.engine_threads)
    modes = {"default": [None], "true": [True], "false": [False], "both": [True, False]}
    executors = [k for k in args.executors.split(",") if k] or [None]
    if set(executors) - {None, *EXECUTORS}:
        parser.error(f"unknown executors {args.executors!r}; choose from {', '.join(EXECUTORS)}")
    if args.pipeline == "both" and len(executors) > 1:
        parser.error("--pipeline both compares the two modes under one executor")
    results = []
    for name in args.nodes.split(","):
        rates = {}
        for pipelined, executor in [(p, e) for p in modes[args.pipeline] for e in executors]:
            print(
                f"soak {name} for {args.minutes} min at {FPS:.0f} Hz {W}x{H}"
                + ("" if pipelined is None else f", pipeline {str(pipelined).lower()}")
                + ("" if executor is None else f", executor {executor}"),
                flush=True,
            )
            result = soak(name, args.minutes, args.logs, pipelined, args.all_outputs, executor)
            results.append(result)
            rates[pipelined] = result["completed_per_s_after_warm_up"]
            print(json.dumps(result, indent=2), flush=True)
        if args.pipeline == "both":
            ms = engine_ms(name)
            summary = {
                "node": name,
                "engine_ms": ms,
                "engine_alone_per_s": 1e3 / ms,
                "pipelined_per_s": rates[True],
                "serial_per_s": rates[False],
                "pipelined_over_serial": rates[True] / rates[False],
                "pipelined_over_engine_alone": rates[True] * ms / 1e3,
            }
            results.append(summary)
            print(json.dumps(summary, indent=2), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

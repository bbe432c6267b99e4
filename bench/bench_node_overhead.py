"""Benchmark: the shared node's CPU per frame without a model, against the memcpy floor.

``depth_fill_node`` with ``method: passthrough`` (the node base's plumbing alone: decode,
sync, conversions, cloud, publication) runs as its own process, launched like ``ros2 run``. A
driver stand-in publishes N 640x480 frames (rgb8 colour, 16UC1 depth, camera_info) over DDS
at ``--rate`` Hz, after a warm-up, and the node's CPU time (utime + stime of every thread, from
``/proc/<pid>/stat``) over those frames is divided by the frames it completed. Three cases, a
fresh node each:

- ``all``:   every output subscribed (depth, 16UC1 depth, camera_info, cloud, status);
- ``depth``: only ``depth_completed/image`` subscribed;
- ``none``:  no output subscribed (``/diagnostics`` only, where the frame counters are read);
- ``bare``:  not our node: a minimal rclpy process that subscribes to the same three inputs with
  the same QoS, counts the depth frames and does nothing else (``rclpy.spin``). What any Python
  node pays to receive the frames; ``none`` minus ``bare`` is our node's own plumbing.

The floor of each case is one ``np.copyto`` of all the bytes the node receives and publishes
for a frame *in that case* (the published outputs are the subscribed ones), measured in the
same run from memory beyond the caches (a node's messages arrive in fresh memory; a warm copy
of a few MB within the cache is printed beside it); the ratio is node CPU / floor.

Each case runs once per ``--executors`` kind (the nodes' ``executor`` parameter: rclpy's Python
``single_threaded`` executor and its C++ ``events`` executor, the default), so both are measured
in one run.

``--profile``: the node runs under cProfile (its executor thread and its worker thread; DDS's
own threads are C++ and not seen by it) and the top functions are printed per case; the
per-thread CPU split from ``/proc/<pid>/task`` is printed either way.

Usage: ``python bench/bench_node_overhead.py [--frames 150] [--rate 15] [--cases all,depth,none]
[--executors single_threaded,events] [--profile] [--json out.json]`` (after ``source env.sh``).
On a loaded machine compare ratios from one run, not milliseconds across runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from bench.timing import median_ms, synthetic_rgb, write_json  # noqa: E402
from depth_perception.ros.spin import EXECUTORS  # noqa: E402

W, H = 640, 480
CASES = ("all", "depth", "none", "bare")
PREFIX = "depth_completed"


def _outputs(case: str) -> dict[str, type]:
    from depth_perception_msgs.msg import CompletionStatus
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    every = {
        f"{PREFIX}/image": Image,
        f"{PREFIX}/image_mm": Image,
        f"{PREFIX}/camera_info": CameraInfo,
        f"{PREFIX}/points": PointCloud2,
        f"{PREFIX}/status": CompletionStatus,
    }
    if case == "all":
        return every
    if case == "depth":
        return {f"{PREFIX}/image": Image}
    return {}


def _frame_bytes(case: str) -> tuple[int, dict[str, int]]:
    """Bytes the node receives and publishes per frame in ``case`` (payloads; the few hundred
    bytes of headers, camera_info and status are left out of the floor)."""
    received = {"rgb8 in": W * H * 3, "16UC1 in": W * H * 2}
    published = {
        "all": {"32FC1 out": W * H * 4, "16UC1 out": W * H * 2, "cloud out": W * H * 32},
        "depth": {"32FC1 out": W * H * 4},
        "none": {},
        "bare": {},
    }[case]
    parts = {**received, **published}
    return sum(parts.values()), parts


def _memcpy_ms(nbytes: int, repeats: int = 30) -> tuple[float, float]:
    """(cold, warm) median ms of one ``np.copyto`` of ``nbytes``. Cold: source and destination
    rotate through 96 MB, beyond the caches, as a node's fresh messages are; warm: the same
    preallocated pair every time (for a few MB, a copy within the cache)."""
    pairs = max(1, -(-96_000_000 // (2 * nbytes)))
    rng = np.random.default_rng(0)
    bufs = [(rng.integers(0, 255, nbytes, dtype=np.uint8), np.empty(nbytes, np.uint8))]
    bufs += [(np.ones(nbytes, np.uint8), np.ones(nbytes, np.uint8)) for _ in range(pairs - 1)]
    turn = iter(range(1 << 62))

    def cold() -> None:
        src, dst = bufs[next(turn) % len(bufs)]
        np.copyto(dst, src)

    src, dst = bufs[0]
    return (
        median_ms(cold, 2 * len(bufs), max(repeats, len(bufs))),
        median_ms(lambda: np.copyto(dst, src), 5, repeats),
    )


def _cpu_s(path: str) -> float:
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _threads_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread of ``pid`` ('main' for the main thread, else comm:tid)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            cpu = _cpu_s(str(task / "stat"))
        except OSError:
            continue
        out["main" if int(task.name) == pid else f"{comm}:{task.name}"] = cpu
    return out


#: The /diagnostics status name of the ``bare`` receiver.
BARE_NAME = "bench_bare_receiver"


def _diag_counters(collector, name: str = "depth_fill_node") -> dict[str, str]:
    """The newest status values of ``name`` seen on /diagnostics."""
    for array in reversed(collector["/diagnostics"]):
        for status in array.status:
            if name in status.name:
                return {kv.key: kv.value for kv in status.values}
    return {}


def run_case(case: str, executor_kind: str, args, log_dir: Path) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import Header

    from depth_perception.core.camera import Intrinsics
    from depth_perception.eval.pipelines import get_pipeline
    from depth_perception.ros.conversions import (
        intrinsics_to_camera_info,
        metres_to_depth_image,
        ns_to_stamp,
        numpy_to_image,
    )
    from depth_perception.ros.launcher import NodeProcess
    from depth_perception.ros.qos import reliable_qos
    from depth_perception.ros.replay import ReplayClient

    intr = Intrinsics(W, H, fx=525.0, fy=525.0, cx=319.5, cy=239.5, frame_id="camera_optical")
    pipeline = get_pipeline("passthrough")
    namespace = f"/overhead_{case}_{executor_kind}_{os.getpid()}"
    parameters = {
        **pipeline.parameters,
        "executor": executor_kind,
        "publish_depth_mm": True,
        "publish_cloud": True,
        "diagnostics_period": 0.5,
    }
    node = NodeProcess(
        pipeline.executable,
        params_file=pipeline.params_path,
        namespace=namespace,
        parameters=parameters,
        log_path=log_dir / f"{case}_{executor_kind}.log",
    )
    prof_path = log_dir / f"{case}_{executor_kind}.prof"
    ros_args = node.command[node.command.index("--ros-args") :]
    if case == "bare":
        node.command = [sys.executable, __file__, "--bare-node", executor_kind, *ros_args]
    elif args.profile:
        node.command = [sys.executable, __file__, "--profiled-node", str(prof_path), *ros_args]
    status_name = BARE_NAME if case == "bare" else "depth_fill_node"

    rng = np.random.default_rng(1)
    v, u = np.mgrid[0:H, 0:W].astype(np.float32)
    frames = []
    for i in range(4):
        depth = 1.5 + 0.002 * v + 0.001 * u
        depth[150:330, 200 + 10 * i : 400 + 10 * i] -= 0.4
        depth[rng.random((H, W)) < 0.25] = np.nan
        frames.append((synthetic_rgb(W, H, seed=i), depth.astype(np.float32)))
    msgs = [
        (numpy_to_image(rgb, "rgb8"), metres_to_depth_image(d, None, "16UC1")) for rgb, d in frames
    ]

    with node, ReplayClient(namespace, node_name=f"overhead_{case}") as client:
        # The client subscribes to depth and status itself: a separate context for the case's
        # subscribers, and the client's own output subscriptions removed.
        for sub in list(client.node.subscriptions):
            client.node.destroy_subscription(sub)
        context = rclpy.Context()
        rclpy.init(context=context)
        listener = rclpy.create_node(
            f"overhead_listener_{case}", namespace=namespace, context=context
        )
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(listener)
        got: dict[str, list] = {}
        qos = reliable_qos(depth=20)
        for topic, kind in {**_outputs(case), "/diagnostics": DiagnosticArray}.items():
            got[topic] = []
            listener.create_subscription(kind, topic, got[topic].append, qos)

        def spin(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                client.executor.spin_once(timeout_sec=0.001)
                executor.spin_once(timeout_sec=0.001)

        try:
            end = time.monotonic() + 60.0
            pubs = list(client._pubs.values())
            topics = [listener.resolve_topic_name(t) for t in _outputs(case)]
            while time.monotonic() < end and not (
                all(p.get_subscription_count() > 0 for p in pubs)
                and all(listener.count_publishers(t) > 0 for t in topics)
            ):
                if not node.alive():
                    raise RuntimeError(f"the node exited: see {node.log_path}")
                spin(0.05)
            spin(1.0)  # let the matching settle both ways
            pid = node.process.pid
            period = 1.0 / args.rate
            stamp0 = time.time_ns()

            def feed(first: int, count: int) -> None:
                t0 = time.monotonic()
                for k in range(count):
                    i = first + k
                    due = t0 + k * period
                    while (now := time.monotonic()) < due:
                        executor.spin_once(timeout_sec=min(0.002, due - now))
                    stamp = ns_to_stamp(stamp0 + i * 33_333_333)
                    header = Header(stamp=stamp, frame_id="camera_optical")
                    rgb, depth = msgs[i % len(msgs)]
                    rgb.header = depth.header = header
                    client.publish_messages(rgb, depth, intrinsics_to_camera_info(intr, header))

            feed(0, args.warmup)
            spin(1.5)
            before = _diag_counters(got, status_name)
            cpu0, threads0, t0 = _cpu_s(f"/proc/{pid}/stat"), _threads_cpu(pid), time.monotonic()
            feed(args.warmup, args.frames)
            spin(1.5)  # the last frames complete; the next diagnostics message comes
            cpu1, threads1, t1 = _cpu_s(f"/proc/{pid}/stat"), _threads_cpu(pid), time.monotonic()
            spin(1.0)
            after = _diag_counters(got, status_name)
        finally:
            executor.shutdown()
            listener.destroy_node()
            rclpy.shutdown(context=context)
    processed = int(after.get("frames_processed", 0)) - int(before.get("frames_processed", 0))
    skipped = int(after.get("frames_skipped", 0)) - int(before.get("frames_skipped", 0))
    if processed <= 0:
        raise RuntimeError(f"case {case}: no frame completed; see {node.log_path}")
    floor_bytes, parts = _frame_bytes(case)
    threads = {
        k: round(1e3 * (threads1[k] - threads0.get(k, 0.0)) / processed, 2)
        for k in threads1
        if threads1[k] - threads0.get(k, 0.0) > 0
    }
    result = {
        "case": case,
        "executor": executor_kind,
        "frames_sent": args.frames,
        "frames_processed": processed,
        "frames_skipped": skipped,
        "wall_s": t1 - t0,
        "cpu_ms_per_frame": 1e3 * (cpu1 - cpu0) / processed,
        "cpu_ms_per_frame_by_thread": dict(sorted(threads.items(), key=lambda kv: -kv[1])),
        "floor_bytes": floor_bytes,
        "floor_parts": parts,
        "lazy_counters": {k: v for k, v in after.items() if k.startswith("outputs_")},
        "received": {t: len(m) for t, m in got.items()},
    }
    if args.profile and case != "bare":
        import pstats

        if prof_path.exists():
            print(f"--- profile of the node, case {case} ({prof_path}) ---")
            pstats.Stats(str(prof_path)).sort_stats("tottime").print_stats(args.profile_top)
    return result


def profiled_node(prof_path: str, ros_args: list[str]) -> None:
    """Run depth_fill_node with cProfile on its executor (main) thread and on each stage of its
    frames (``_safely``: the worker's and the publisher's), one profiler per thread."""
    import cProfile
    import threading

    from depth_perception.ros.completion_node import DepthCompletionNode
    from depth_perception.ros.nodes.depth_fill_node import DepthFillNode
    from depth_perception.ros.spin import spin_node

    main_prof = cProfile.Profile()
    stage_profs: dict[int, cProfile.Profile] = {}
    safely = DepthCompletionNode._safely

    def profiled(self, stage, item):
        prof = stage_profs.setdefault(threading.get_ident(), cProfile.Profile())
        prof.enable()
        try:
            return safely(self, stage, item)
        finally:
            prof.disable()

    DepthCompletionNode._safely = profiled
    main_prof.enable()
    try:
        spin_node(DepthFillNode, [sys.argv[0], *ros_args])
    finally:
        main_prof.disable()
        import pstats

        stats = pstats.Stats(main_prof)
        for prof in stage_profs.values():
            stats.add(prof)
        stats.dump_stats(prof_path)


def bare_node(executor_kind: str, ros_args: list[str]) -> None:
    """The ``bare`` case: subscribe to the node's colour, depth and camera_info topics with its
    QoS, count depth frames, report the count on /diagnostics every 0.5 s; nothing else. Spun by
    the nodes' executor of that kind, as the nodes spin."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from sensor_msgs.msg import CameraInfo, Image

    from depth_perception.ros.completion_node import ROLE_TOPICS
    from depth_perception.ros.qos import sensor_data_qos
    from depth_perception.ros.spin import make_executor, spin_until_shutdown

    rclpy.init(args=[sys.argv[0], *ros_args])
    node = rclpy.create_node("bare_receiver")
    count = [0]
    qos = sensor_data_qos(5)
    node.create_subscription(Image, ROLE_TOPICS["rgb"], lambda m: None, qos)
    node.create_subscription(CameraInfo, ROLE_TOPICS["rgb_info"], lambda m: None, qos)
    node.create_subscription(
        Image, ROLE_TOPICS["depth"], lambda m: count.__setitem__(0, count[0] + 1), qos
    )
    pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def report() -> None:
        value = KeyValue(key="frames_processed", value=str(count[0]))
        pub.publish(DiagnosticArray(status=[DiagnosticStatus(name=BARE_NAME, values=[value])]))

    node.create_timer(0.5, report)
    executor, _ = make_executor(executor_kind)
    executor.add_node(node)
    try:
        spin_until_shutdown(executor)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def main() -> None:
    if "--bare-node" in sys.argv:  # the receiver process of the bare case
        at = sys.argv.index("--bare-node")
        bare_node(sys.argv[at + 1], sys.argv[at + 2 :])
        return
    if "--profiled-node" in sys.argv:  # the node process of --profile
        at = sys.argv.index("--profiled-node")
        profiled_node(sys.argv[at + 1], sys.argv[at + 2 :])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150, help="measured frames per case")
    parser.add_argument("--warmup", type=int, default=20, help="frames before measuring")
    parser.add_argument("--rate", type=float, default=15.0, help="frames per second fed")
    parser.add_argument("--cases", default=",".join(CASES), help=f"any of {', '.join(CASES)}")
    parser.add_argument(
        "--executors",
        default="single_threaded,events",
        help="the nodes' executor parameter, each case run under each (any of "
        f"{', '.join(EXECUTORS)})",
    )
    parser.add_argument("--profile", action="store_true", help="run the node under cProfile")
    parser.add_argument("--profile-top", type=int, default=30)
    parser.add_argument("--logs", type=Path, default=Path("out/bench_node_overhead"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    cases = [c for c in args.cases.split(",") if c]
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; choose from {', '.join(CASES)}")
    kinds = [k for k in args.executors.split(",") if k]
    if set(kinds) - set(EXECUTORS):
        parser.error(f"unknown executors {sorted(set(kinds) - set(EXECUTORS))}")
    print(
        f"depth_fill_node (passthrough) at {W}x{H}, {args.frames} frames at {args.rate:g} Hz "
        f"per case (+{args.warmup} warm-up), load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    results = []
    floors: dict[int, tuple[float, float]] = {}
    for case, kind in [(c, k) for c in cases for k in kinds]:
        result = run_case(case, kind, args, args.logs)
        if result["floor_bytes"] not in floors:  # one floor per case, shared by the executors
            floors[result["floor_bytes"]] = _memcpy_ms(result["floor_bytes"])
        result["memcpy_ms"], result["memcpy_warm_ms"] = floors[result["floor_bytes"]]
        result["ratio"] = result["cpu_ms_per_frame"] / result["memcpy_ms"]
        result["ratio_warm"] = result["cpu_ms_per_frame"] / result["memcpy_warm_ms"]
        results.append(result)
        print(
            f"  {case:>5} {kind:>15}: node CPU {result['cpu_ms_per_frame']:7.2f} ms/frame "
            f"({result['frames_processed']} completed, {result['frames_skipped']} skipped)   "
            f"memcpy of {result['floor_bytes'] / 1e6:5.2f} MB {result['memcpy_ms']:6.3f} ms   "
            f"ratio {result['ratio']:5.1f}x   (warm memcpy {result['memcpy_warm_ms']:.3f} ms, "
            f"{result['ratio_warm']:.0f}x)",
            flush=True,
        )
        print(f"         per thread (ms/frame): {result['cpu_ms_per_frame_by_thread']}")
        if result["lazy_counters"]:
            print(f"         lazy outputs: {result['lazy_counters']}")
    write_json(args.json, {"width": W, "height": H, "rate": args.rate, "cases": results})


if __name__ == "__main__":
    main()

"""Fault injection over real DDS: every bad input a robot can send to a completion node.

One depth_fill_node process (the shared node base) is fed each fault, then a good frame. For
every case: the process survives; /diagnostics says what happened (level + message); nothing
wrong is published for the bad frame (no output at all for a rejected frame, NaN depth for a
blind one, out-of-range pixels invalid); and the next good frame equals the offline engine's
result. Start-up failures of both nodes end in one clear error and a non-zero exit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus
from node_harness import INTR, H, W, by_stamp, make_frame, running_node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from depth_perception.core.baselines import fill_nearest
from depth_perception.paths import config_file
from depth_perception.ros.conversions import (
    depth_image_to_metres,
    intrinsics_to_camera_info,
    metres_to_depth_image,
    ns_to_stamp,
    numpy_to_image,
)
from depth_perception.ros.launcher import NodeProcess
from depth_perception.ros.replay import ReplayClient

MAX_PIXELS = 10_000  # the node under test rejects images larger than this (64x48 = 3072 pass)
MAX_DEPTH = 20.0


@dataclass
class Fault:
    name: str
    # (stamp_ns, previous good stamp_ns) -> (rgb, depth, info) messages to publish
    build: Callable[[int, int], tuple[Image | None, Image | None, CameraInfo | None]]
    outcome: str  # "rejected" | "blind" | "published"
    level: int  # expected diagnostics level
    says: str  # expected text in the diagnostics message
    # "published": the depth the node should have completed from (metres, NaN = hole)
    expected_input: np.ndarray | None = None
    stamp: Callable[[int, int], int] | None = None  # the bad frame's stamp (default: fresh)


def _header(stamp_ns: int) -> Header:
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=INTR.frame_id)


def _frame_for(stamp_ns: int):
    """Each stamp its own content (holes and colour), so a mispaired frame shows."""
    return make_frame((stamp_ns // 1_000_000) % 997)


def _good(stamp_ns: int):
    frame = _frame_for(stamp_ns)
    h = _header(stamp_ns)
    return (
        numpy_to_image(frame.rgb, "rgb8", h),
        metres_to_depth_image(frame.depth, h, "16UC1"),
        intrinsics_to_camera_info(INTR, h),
    )


def _with_info(**changes) -> Callable:
    """A good frame whose camera_info has K entries / size replaced."""

    def build(stamp_ns: int, _prev: int):
        rgb, depth, info = _good(stamp_ns)
        k = list(info.k)
        for name, index in (("fx", 0), ("fy", 4), ("cx", 2), ("cy", 5)):
            if name in changes:
                k[index] = changes[name]
        if changes.get("k_zero"):
            k = [0.0] * 9
        info.k = k
        info.width = changes.get("width", info.width)
        info.height = changes.get("height", info.height)
        return rgb, depth, info

    return build


def _with_depth(make: Callable[[Header], Image]) -> Callable:
    def build(stamp_ns: int, _prev: int):
        rgb, _, info = _good(stamp_ns)
        return rgb, make(_header(stamp_ns)), info

    return build


def _with_rgb(make: Callable[[Header], Image]) -> Callable:
    def build(stamp_ns: int, _prev: int):
        _, depth, info = _good(stamp_ns)
        return make(_header(stamp_ns)), depth, info

    return build


def _float_depth(values: np.ndarray) -> Callable[[Header], Image]:
    return lambda h: numpy_to_image(values.astype(np.float32), "32FC1", h)


def _raw_image(width: int, height: int, encoding: str, step: int, nbytes: int) -> Callable:
    def make(h: Header) -> Image:
        return Image(
            header=h, width=width, height=height, encoding=encoding, step=step, data=bytes(nbytes)
        )

    return make


def _partly(value: float) -> np.ndarray:
    depth = make_frame(0).gt_depth.copy()
    depth[::7, ::5] = value
    return depth


def _expected_partly(value: float) -> np.ndarray:
    depth = _partly(value)
    depth[~((depth > 0) & (depth <= MAX_DEPTH))] = np.nan
    return depth


def _good_at(stamp_ns: int, _prev: int):
    return _good(stamp_ns)


OK, ERROR, WARN = DiagnosticStatus.OK[0], DiagnosticStatus.ERROR[0], DiagnosticStatus.WARN[0]
FAR_FUTURE = 2_100_000_000 * 10**9  # 2036, within the int32 seconds of a ROS stamp

FAULTS = [
    # camera_info
    Fault("fx_nan", _with_info(fx=float("nan")), "rejected", ERROR, "non-finite fx"),
    Fault("fy_inf", _with_info(fy=float("inf")), "rejected", ERROR, "non-finite fy"),
    Fault("cx_nan", _with_info(cx=float("nan")), "rejected", ERROR, "non-finite cx"),
    Fault("cy_minus_inf", _with_info(cy=float("-inf")), "rejected", ERROR, "non-finite cy"),
    Fault("fx_negative", _with_info(fx=-50.0), "rejected", ERROR, "fx = -50.0"),
    Fault("fy_zero", _with_info(fy=0.0), "rejected", ERROR, "uncalibrated"),
    Fault("k_zero", _with_info(k_zero=True), "rejected", ERROR, "uncalibrated"),
    Fault("info_size_0x0", _with_info(width=0, height=0), "rejected", ERROR, "size 0x0"),
    Fault("info_height_0", _with_info(height=0), "rejected", ERROR, f"size {W}x0"),
    # images
    Fault("depth_0x0", _with_depth(_raw_image(0, 0, "16UC1", 0, 0)), "rejected", ERROR, "0x0"),
    Fault(
        "depth_height_0",
        _with_depth(_raw_image(W, 0, "16UC1", 2 * W, 0)),
        "rejected",
        ERROR,
        f"depth image is {W}x0",
    ),
    Fault("rgb_0x0", _with_rgb(_raw_image(0, 0, "rgb8", 0, 0)), "rejected", ERROR, "colour"),
    Fault(
        "depth_is_colour",
        _with_depth(lambda h: numpy_to_image(np.zeros((H, W, 3), np.uint8), "bgr8", h)),
        "rejected",
        ERROR,
        "bgr8",
    ),
    Fault(
        "rgb_is_depth",
        _with_rgb(lambda h: numpy_to_image(np.ones((H, W), np.float32), "32FC1", h)),
        "rejected",
        ERROR,
        "32FC1",
    ),
    Fault(
        "depth_unknown_encoding",
        _with_depth(_raw_image(W, H, "yuv-magic", 2 * W, 2 * W * H)),
        "rejected",
        ERROR,
        "yuv-magic",
    ),
    Fault(
        "depth_truncated_data",
        _with_depth(_raw_image(W, H, "16UC1", 2 * W, 2 * W * H - 10)),
        "rejected",
        ERROR,
        "bytes",
    ),
    Fault(
        "depth_step_too_small",
        _with_depth(_raw_image(W, H, "16UC1", W, 2 * W * H)),
        "rejected",
        ERROR,
        "step",
    ),
    Fault(
        "depth_too_large",
        _with_depth(_raw_image(128, 96, "16UC1", 256, 256 * 96)),
        "rejected",
        ERROR,
        "max_input_pixels",
    ),
    Fault(
        "rgb_too_large",
        _with_rgb(_raw_image(128, 96, "rgb8", 384, 384 * 96)),
        "rejected",
        ERROR,
        "max_input_pixels",
    ),
    # blind frames: no metric anchor -> NaN published, WARN
    Fault(
        "depth_16uc1_all_zero",
        _with_depth(lambda h: numpy_to_image(np.zeros((H, W), np.uint16), "16UC1", h)),
        "blind",
        WARN,
        "valid ratio 0.0000",
    ),
    Fault("depth_all_nan", _with_depth(_float_depth(np.full((H, W), np.nan))), "blind", WARN, ""),
    Fault("depth_all_inf", _with_depth(_float_depth(np.full((H, W), np.inf))), "blind", WARN, ""),
    Fault(
        "depth_all_negative", _with_depth(_float_depth(np.full((H, W), -1.0))), "blind", WARN, ""
    ),
    Fault("depth_all_zero", _with_depth(_float_depth(np.zeros((H, W)))), "blind", WARN, ""),
    Fault("depth_all_1e30", _with_depth(_float_depth(np.full((H, W), 1e30))), "blind", WARN, ""),
    # absurd values among good ones: invalid, counted, the rest completed
    Fault(
        "depth_some_1e30",
        _with_depth(_float_depth(_partly(1e30))),
        "published",
        WARN,
        "outside [0.0, 20.0] m",
        expected_input=_expected_partly(1e30),
    ),
    Fault(
        "depth_some_inf",
        _with_depth(_float_depth(_partly(np.inf))),
        "published",
        OK,  # REP-117: +inf is "no return" — invalid like NaN, nothing to warn about
        "completing depth",
        expected_input=_expected_partly(np.inf),
    ),
    # stamps: processed (bag replays jump too) but counted and named
    Fault("stamp_zero", _good_at, "published", WARN, "zero header stamp", stamp=lambda s, p: 0),
    Fault(
        "stamp_far_future",
        _good_at,
        "published",
        WARN,
        "ahead of the node's clock",
        stamp=lambda s, p: FAR_FUTURE,
    ),
    Fault(
        "stamp_duplicate",
        _good_at,
        "published",
        WARN,
        "repeats the previous frame's",
        stamp=lambda s, p: p,
    ),
    Fault(
        "stamp_backwards",
        _good_at,
        "published",
        WARN,
        "went back 0.500 s",
        stamp=lambda s, p: p - 500_000_000,
    ),
]


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    log = tmp_path_factory.mktemp("faults") / "node.log"
    parameters = {"diagnostics_period": 0.1, "max_input_pixels": MAX_PIXELS, "max_depth": MAX_DEPTH}
    with running_node("depth_fill_node", "depth_fill.yaml", "/fault_test", log, parameters) as (
        node,
        client,
        collector,
    ):
        yield node, client, collector, log, {"stamp": 1_700_000_000_000_000_000}


def _node_statuses(collector, since: int):
    return [
        s
        for arr in collector.msgs["/diagnostics"][since:]
        for s in arr.status
        if "depth_fill_node" in s.name
    ]


def _wait_depth(collector, stamp_ns: int, count: int = 1, timeout: float = 15.0):
    msgs = collector.msgs["depth_completed/image"]
    ok = collector.spin_until(
        lambda: sum(1 for m in msgs if _ns(m.header.stamp) == stamp_ns) >= count, timeout
    )
    return [m for m in msgs if _ns(m.header.stamp) == stamp_ns] if ok else []


def _ns(stamp: Time) -> int:
    return stamp.sec * 10**9 + stamp.nanosec


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault_is_reported_nothing_wrong_is_published_and_the_next_frame_is_right(faulty, fault):
    node, client, collector, log, state = faulty
    prev = state["stamp"]
    fresh = prev + 33_000_000
    stamp = fault.stamp(fresh, prev) if fault.stamp else fresh
    seen_before = sum(
        1 for m in collector.msgs["depth_completed/image"] if _ns(m.header.stamp) == stamp
    )
    diag_start = len(collector.msgs["/diagnostics"])
    client.publish_messages(*fault.build(stamp, prev))

    if fault.outcome != "rejected":
        (out, *_) = _wait_depth(collector, stamp, count=seen_before + 1)[seen_before:] or [None]
        assert out is not None, log.read_text()
        depth = depth_image_to_metres(out)
        if fault.outcome == "blind":
            assert np.isnan(depth).all()  # no fabricated depth without a metric anchor
        elif fault.expected_input is not None:
            np.testing.assert_array_equal(depth, fill_nearest(fault.expected_input))
        else:  # a good frame with a suspicious stamp: completed as usual
            np.testing.assert_array_equal(depth, fill_nearest(_frame_for(stamp).depth))

    # Diagnostics said what happened (waited for before the next frame: a frame arriving while
    # the worker is busy would replace the bad one, as the newest-frame policy wants).
    def said() -> bool:
        return any(
            s.level[0] == fault.level and fault.says in s.message
            for s in _node_statuses(collector, diag_start)
        )

    assert collector.spin_until(said, timeout=5.0), [
        (s.level, s.message) for s in _node_statuses(collector, diag_start)
    ]
    # The next good frame (fresh stamp) is completed exactly like the offline engine does.
    good_stamp = max(fresh, prev) + 66_000_000
    state["stamp"] = good_stamp
    client.publish_messages(*_good(good_stamp))
    outs = _wait_depth(collector, good_stamp)
    assert outs, log.read_text()
    np.testing.assert_array_equal(
        depth_image_to_metres(outs[0]), fill_nearest(_frame_for(good_stamp).depth)
    )
    if fault.outcome == "rejected":  # nothing at all went out for the bad frame
        for topic in ("depth_completed/image", "depth_completed/points"):
            assert by_stamp(collector.msgs[topic], stamp) is None, topic

    assert node.alive()


def test_pairing_leftover_depth_does_not_steal_the_next_frame(faulty):
    """At 30 Hz a depth image whose colour was lost must not be paired with the next colour."""
    node, client, collector, log, state = faulty
    lost = state["stamp"] + 33_000_000
    nxt = lost + 33_000_000
    state["stamp"] = nxt
    rgb, depth, info = _good(lost)
    client.publish_messages(None, depth, info)  # the colour image of this frame was dropped
    client.spin_for(0.05)
    client.publish_messages(*_good(nxt))
    outs = _wait_depth(collector, nxt)
    assert outs, log.read_text()
    np.testing.assert_array_equal(
        depth_image_to_metres(outs[0]), fill_nearest(_frame_for(nxt).depth)
    )
    assert by_stamp(collector.msgs["depth_completed/image"], lost) is None


def test_errors_are_throttled_per_kind_not_all_together(tmp_path):
    """A second, different error within the throttle period is logged; a repeat is not."""
    namespace = "/throttle_test"
    log = tmp_path / "node.log"
    node = NodeProcess(
        "depth_fill_node",
        params_file=config_file("depth_fill.yaml"),
        namespace=namespace,
        log_path=log,
    ).start()
    client = ReplayClient(namespace)
    try:
        assert client.wait_for_node(20.0), log.read_text()
        stamp = 1_700_000_000_000_000_000
        for name in ("fx_nan", "depth_is_colour", "fx_nan"):  # all within ~1 s < 5 s throttle
            stamp += 33_000_000
            fault = next(f for f in FAULTS if f.name == name)
            client.publish_messages(*fault.build(stamp, stamp - 33_000_000))
            client.spin_for(0.3)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and "bgr8" not in log.read_text():
            time.sleep(0.1)
        text = log.read_text()
        assert text.count("non-finite fx") == 1, text  # the repeat is throttled
        assert text.count("bgr8") == 1, text  # a different error still gets through
        assert node.alive()
    finally:
        client.close()
        node.stop()


START_FAILURES = [
    ("rgbd_completion_node", {"checkpoint": "/nonexistent/model.pt"}, "/nonexistent/model.pt"),
    ("rgbd_completion_node", {"device": "cuda:7", "checkpoint": "tiny"}, "CUDA is not available"),
    ("depth_fill_node", {"method": "magic"}, "unknown method 'magic'"),
    ("depth_fill_node", {"sync": "sometimes"}, "sync is 'sometimes'"),
    ("depth_fill_node", {"min_depth": 5.0, "max_depth": 1.0}, "min_depth"),
]


@pytest.mark.parametrize(
    "executable,params,says", START_FAILURES, ids=[s[2][:24] for s in START_FAILURES]
)
def test_a_node_that_cannot_start_says_why_once_and_exits_non_zero(
    tmp_path, executable, params, says
):
    if params.get("device", "").startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA: the no-GPU start-up error cannot happen")
    log = tmp_path / "node.log"
    config = "rgbd_completion.yaml" if executable == "rgbd_completion_node" else "depth_fill.yaml"
    node = NodeProcess(
        executable, params_file=config_file(config), parameters=params, log_path=log
    ).start()
    node.process.wait(timeout=60)
    text = log.read_text()
    assert node.process.returncode == 1, text
    assert says in text, text
    assert "Traceback" not in text and "AttributeError" not in text, text
    errors = [line for line in text.splitlines() if "[FATAL]" in line or "[ERROR]" in line]
    assert len(errors) == 1, text

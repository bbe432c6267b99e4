"""Lazy outputs of the node base (depth_image_proc's behaviour) and the per-frame fast paths.

Over real DDS: an output nobody subscribes to is not built (counted on /diagnostics as
``outputs_skipped_<output>``), and once subscribed the cloud is byte for byte the cloud an
independent numpy reference builds (its message buffer is reused from frame to frame, so two
different frames are checked). Offline: the fast depth encoders equal the core functions bit
for bit, on every uint16 and on the special float values.
"""

from __future__ import annotations

import numpy as np
import pytest
from node_harness import (
    COMPLETION_ALWAYS,
    COMPLETION_OUTPUTS,
    INTR,
    Collector,
    H,
    W,
    by_stamp,
    make_frame,
    running_node,
    status_value,
    statuses,
)
from sensor_msgs.msg import Image, PointCloud2

from depth_perception.core.depth import depth_from_mm, depth_to_mm, sanitize_depth, valid_mask
from depth_perception.ros import conversions
from depth_perception.ros.conversions import depth_image_to_metres
from depth_perception.ros.replay import ReplayClient

NODE = "depth_fill_node"


def reference_cloud_bytes(depth: np.ndarray, rgb: np.ndarray) -> bytes:
    """depth_image_proc's organized xyzrgb layout, computed plainly: x, y, z float32, a zero
    word, packed B, G, R, 0, three zero words; NaN x/y/z where depth is invalid."""
    z = np.where(np.isfinite(depth) & (depth > 0), depth, np.nan).astype(np.float32)
    u = np.arange(W, dtype=np.float32)
    v = np.arange(H, dtype=np.float32)
    xf = (u - np.float32(INTR.cx)) * np.float32(1.0 / INTR.fx)
    yf = (v - np.float32(INTR.cy)) * np.float32(1.0 / INTR.fy)
    out = np.zeros((H, W, 32), np.uint8)
    out[..., 0:4] = (xf[None, :] * z)[..., None].view(np.uint8)
    out[..., 4:8] = (yf[:, None] * z)[..., None].view(np.uint8)
    out[..., 8:12] = z[..., None].view(np.uint8)
    out[..., 16:19] = rgb[..., ::-1]
    return out.tobytes()


def _skipped(collector, output: str) -> int | None:
    found = statuses(collector, NODE)
    if not found:
        return None
    value = status_value(found[-1], f"outputs_skipped_{output}")
    return None if value is None else int(value)


def _processed(collector) -> int:
    found = statuses(collector, NODE)
    return int(status_value(found[-1], "frames_processed") or 0) if found else 0


def test_unsubscribed_outputs_are_not_built_and_the_cloud_is_unchanged_when_subscribed(
    tmp_path,
):
    log = tmp_path / "node.log"
    namespace = f"/lazy_test_{id(object()) % 100000}"
    parameters = {
        "method": "passthrough",
        "publish_cloud": True,
        "publish_depth_mm": True,
        "diagnostics_period": 0.2,
    }
    always = {t: COMPLETION_OUTPUTS[t] for t in COMPLETION_ALWAYS}
    collector = Collector(namespace, outputs=always)
    with running_node(NODE, "depth_fill.yaml", namespace, log, parameters, collector=collector):
        client = ReplayClient(namespace, node_name="lazy_driver")
        try:
            assert client.wait_for_node(20.0), log.read_text()
            # 1. Nobody subscribes to the cloud or the 16UC1 depth: neither is built.
            first = make_frame(0)
            assert client.run([first], timeout_s=20.0).__next__().depth is not None, log.read_text()
            assert collector.spin_until(lambda: _processed(collector) >= 1, 10.0)
            assert collector.spin_until(lambda: (_skipped(collector, "points") or 0) >= 1, 10.0)
            skipped_cloud = _skipped(collector, "points")
            assert skipped_cloud == _processed(collector), log.read_text()
            assert _skipped(collector, "image_mm") == skipped_cloud
            assert _skipped(collector, "image") == 0  # the client and the collector listen
            assert _skipped(collector, "status") == 0

            # 2. A subscriber comes: clouds (two different frames through the one reused
            # buffer) are exactly the reference's, and no more frames are skipped.
            clouds, depth_mm = [], []
            collector.node.create_subscription(
                PointCloud2, "depth_completed/points", clouds.append, 10
            )
            collector.node.create_subscription(
                Image, "depth_completed/image_mm", depth_mm.append, 10
            )
            assert collector.wait_for_publishers(
                ("depth_completed/points", "depth_completed/image_mm")
            )
            frames = [make_frame(1, seed=5), make_frame(2, seed=9)]
            results = list(client.run(frames, timeout_s=20.0))
            for frame in frames:
                assert collector.spin_until(
                    lambda f=frame: (
                        by_stamp(clouds, f.stamp_ns) is not None
                        and by_stamp(depth_mm, f.stamp_ns) is not None
                    )
                ), log.read_text()
            for frame, result in zip(frames, results, strict=True):
                cloud = by_stamp(clouds, frame.stamp_ns)
                assert (cloud.height, cloud.width, cloud.point_step) == (H, W, 32)
                assert bytes(cloud.data) == reference_cloud_bytes(result.depth, frame.rgb)
                mm = by_stamp(depth_mm, frame.stamp_ns)
                np.testing.assert_array_equal(
                    np.frombuffer(bytes(mm.data), np.uint16).reshape(H, W),
                    depth_to_mm(result.depth),
                )
            assert collector.spin_until(lambda: _processed(collector) >= 3, 10.0)
            assert _skipped(collector, "points") == skipped_cloud
        finally:
            client.close()


# -- the fast paths equal the core functions bit for bit ------------------------------------

SPECIAL = np.array(
    [np.nan, np.inf, -np.inf, 0.0, -0.0, -1.0, 1e-45, 4e-4, 5e-4, 6e-4, 0.0015, 0.0025, 1.0],
    dtype=np.float32,
)


def _floats(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = np.concatenate(
        [
            SPECIAL,
            np.float32([65.534, 65.5345, 65.535, 65.5355, 65.536, 70.0, 3e38]),
            rng.uniform(0, 70, 5000).astype(np.float32),
            (rng.integers(0, 65536, 5000) / 1000 + 0.0005).astype(np.float32),  # half mm
        ]
    )
    return values.reshape(1, -1)


def test_mm_decoding_by_table_equals_depth_from_mm_for_every_uint16():
    every = np.arange(1 << 16, dtype=np.uint16).reshape(256, 256)
    fast = conversions._mm_to_metres(every)
    assert fast.dtype == np.float32 and fast.flags.writeable
    np.testing.assert_array_equal(fast.view(np.uint32), depth_from_mm(every).view(np.uint32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_encoders_equal_sanitize_depth_and_depth_to_mm(dtype):
    values = _floats().astype(dtype)
    if dtype == np.float64:
        values = np.concatenate([values, [[1e300, -1e300, 5e-324]]], axis=1)
    # The 32FC1 encoder against the definition: the value where valid, NaN elsewhere.
    with np.errstate(over="ignore"):
        as_f32 = values.astype(np.float32)
    encoded = conversions.metres_to_depth_image(values, None, "32FC1")
    np.testing.assert_array_equal(
        np.frombuffer(bytes(encoded.data), np.float32).reshape(values.shape),
        np.where(valid_mask(as_f32), as_f32, np.float32(np.nan)),
    )
    np.testing.assert_array_equal(conversions._metres_to_mm(values), depth_to_mm(values))


def test_32fc1_images_decode_as_before():
    header = None
    values = _floats(1)
    msg = conversions.numpy_to_image(values, "32FC1", header)
    np.testing.assert_array_equal(
        depth_image_to_metres(msg).view(np.uint32), sanitize_depth(values).view(np.uint32)
    )

"""rgbd_completion_node (LingBot-Depth) over real DDS, fed by a generated bag."""

from __future__ import annotations

import numpy as np
import pytest
from node_harness import by_stamp, running_node

from depth_perception.core.fusion import align_to_measured
from depth_perception.engines.lingbot import LingBotEngine, LingBotEngineConfig
from depth_perception.io.bag import write_sim_bag
from depth_perception.io.recording import read_rgbd_frames
from depth_perception.models.checkpoints import save_checkpoint
from depth_perception.models.lingbot import build_preset
from depth_perception.ros.conversions import depth_image_to_metres, image_to_numpy
from depth_perception.sim.sequence import SequenceConfig


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lingbot_node")
    model = build_preset("tiny")
    checkpoint = tmp / "tiny_model"
    save_checkpoint(model, checkpoint)
    bag = tmp / "bag"
    write_sim_bag(
        bag,
        SequenceConfig(scene_kind="tabletop", seed=5, n_frames=3, width=112, height=84),
        progress=False,
    )
    frames = list(read_rgbd_frames(bag))
    parameters = {"checkpoint": str(checkpoint), "device": "cpu"}
    log = tmp / "node.log"
    with running_node(
        "rgbd_completion_node", "rgbd_completion.yaml", "/lingbot_test", log, parameters, 60.0
    ) as (node, client, collector):
        yield checkpoint, frames, node, client, collector, log


def test_outputs_match_the_engine_with_encodings_frames_and_stamps(setup):
    checkpoint, frames, node, client, collector, log = setup
    results = list(client.run(frames, timeout_s=60.0))
    assert all(r.depth is not None for r in results), log.read_text()
    engine = LingBotEngine(LingBotEngineConfig(checkpoint=str(checkpoint), device="cpu"))
    topics = (
        "depth_completed/image",
        "depth_completed/confidence",
        "depth_completed/points",
        "depth_completed/camera_info",
        "depth_completed/status",
    )
    for frame, result in zip(frames, results, strict=True):
        stamp = frame.stamp_ns
        assert collector.spin_until(
            lambda s=stamp: all(by_stamp(collector.msgs[t], s) is not None for t in topics)
        )
        expected = engine.complete(frame.rgb, frame.depth, frame.intrinsics)
        np.testing.assert_allclose(result.depth, expected.depth, rtol=1e-5, atol=1e-6)
        depth_msg = by_stamp(collector.msgs["depth_completed/image"], stamp)
        assert depth_msg.encoding == "32FC1"
        assert depth_msg.header.frame_id == frame.frame_id == "camera_color_optical_frame"
        np.testing.assert_array_equal(depth_image_to_metres(depth_msg), result.depth)
        conf_msg = by_stamp(collector.msgs["depth_completed/confidence"], stamp)
        assert conf_msg.encoding == "32FC1"
        conf = image_to_numpy(conf_msg)
        assert conf.shape == frame.depth.shape
        assert np.all((conf >= 0) & (conf <= 1))
        np.testing.assert_allclose(conf, expected.confidence, rtol=1e-5, atol=1e-6)
        cloud = by_stamp(collector.msgs["depth_completed/points"], stamp)
        assert (cloud.height, cloud.width, cloud.point_step) == (*frame.depth.shape, 32)
        status = by_stamp(collector.msgs["depth_completed/status"], stamp)
        assert status.model_id == engine.model_id
        assert status.model_id.startswith("lingbot-depth/tiny_model:")
        assert status.model_id.endswith("+align")  # the fusion the shipped config publishes
        assert status.output_valid_ratio == pytest.approx(np.isfinite(result.depth).mean())
    # A model output covers the whole image, holes included.
    assert np.isfinite(results[0].depth).all()


def test_engine_points_follow_the_intrinsics(setup):
    checkpoint, frames, *_ = setup
    engine = LingBotEngine(
        LingBotEngineConfig(checkpoint=str(checkpoint), device="cpu", max_input_side=64)
    )
    frame = frames[0]
    result = engine.complete(frame.rgb, frame.depth, frame.intrinsics)
    assert result.depth.shape == frame.depth.shape  # back at the input size
    points = result.points(frame.intrinsics)
    v, u = 10, 20
    z = result.depth[v, u]
    np.testing.assert_allclose(
        points[v, u],
        [
            (u - frame.intrinsics.cx) * z / frame.intrinsics.fx,
            (v - frame.intrinsics.cy) * z / frame.intrinsics.fy,
            z,
        ],
        rtol=1e-5,
    )


def test_fusion_modes_keep_sensor_depth_and_fill_holes_from_the_model(setup):
    checkpoint, frame = setup[0], setup[1][0]

    def run(mode: str) -> np.ndarray:
        cfg = LingBotEngineConfig(checkpoint=str(checkpoint), device="cpu", fuse_measured=mode)
        return LingBotEngine(cfg).complete(frame.rgb, frame.depth, frame.intrinsics).depth

    full, kept, aligned = run("none"), run("keep"), run("align")
    measured = np.isfinite(frame.depth)
    assert 0 < measured.mean() < 1
    np.testing.assert_array_equal(kept[measured], frame.depth[measured])
    np.testing.assert_array_equal(kept[~measured], full[~measured])
    np.testing.assert_array_equal(aligned, align_to_measured(full, frame.depth))
    with pytest.raises(ValueError, match="fuse_measured"):
        LingBotEngineConfig(checkpoint=str(checkpoint), fuse_measured="blend")


def test_shipped_model_confidence_ranks_measured_easy_and_hopeless_pixels(setup):
    """The published confidence is not 1.0 everywhere: threshold it to cut hopeless holes."""
    from depth_perception.paths import default_model_path

    frame = setup[1][0]
    depth = frame.depth.copy()
    h, w = depth.shape
    depth[: h // 2, : w // 2] = np.nan  # a blind quarter: the hopeless hole
    cfg = LingBotEngineConfig(checkpoint=str(default_model_path()), device="cpu")
    result = LingBotEngine(cfg).complete(frame.rgb, depth, frame.intrinsics)
    measured = np.isfinite(depth)
    conf = result.confidence
    assert np.all(conf[measured] == 1.0)
    easy = ~measured
    easy[: h // 2, : w // 2] = False  # the sensor's own small holes elsewhere
    assert easy.any()
    hopeless = conf[h // 8 : h // 4, w // 8 : w // 4]  # deep inside the blind quarter
    assert 0.3 < np.median(conf[easy]) < 1.0
    assert hopeless.max() < 0.2 < np.median(conf[easy])
    cut = LingBotEngine(
        LingBotEngineConfig(
            checkpoint=str(default_model_path()), device="cpu", confidence_threshold=0.2
        )
    ).complete(frame.rgb, depth, frame.intrinsics)
    assert np.isnan(cut.depth[h // 8 : h // 4, w // 8 : w // 4]).all()
    np.testing.assert_array_equal(cut.depth[measured], depth[measured])


def test_blind_frame_publishes_no_depth_and_the_next_frame_is_completed(setup):
    """All-zero 16UC1 depth: the model has no metric anchor, so the node publishes NaN (not a
    confident 1.5-2.8 m guess), warns on /diagnostics, and completes the next frame as usual."""
    from dataclasses import replace

    checkpoint, frames, node, client, collector, log = setup
    blind = replace(frames[0], stamp_ns=frames[-1].stamp_ns + 10**9)
    blind.depth = np.full_like(frames[0].depth, np.nan)  # 16UC1 zeros on the wire
    good = replace(frames[1], stamp_ns=blind.stamp_ns + 10**8)
    blind_result, good_result = list(client.run([blind, good], timeout_s=60.0))
    assert blind_result.depth is not None and np.isnan(blind_result.depth).all()
    assert blind_result.status.output_valid_ratio == 0.0
    conf = by_stamp(collector.msgs["depth_completed/confidence"], blind.stamp_ns)
    assert conf is None or not image_to_numpy(conf).any()
    assert collector.spin_until(
        lambda: any(
            s.level[0] == 1 and "min_input_valid_ratio" in s.message
            for arr in collector.msgs["/diagnostics"]
            for s in arr.status
            if "rgbd_completion_node" in s.name
        )
    )
    engine = LingBotEngine(LingBotEngineConfig(checkpoint=str(checkpoint), device="cpu"))
    expected = engine.complete(good.rgb, good.depth, good.intrinsics).depth
    np.testing.assert_allclose(good_result.depth, expected, rtol=1e-5, atol=1e-6)
    assert node.alive()

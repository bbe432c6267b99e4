"""Prompts from real sensors (pure): projection of LiDAR / radar clouds into the camera checked
against an independent computation, the counts of discarded points, merging sources, the engine
input contract and the offline builder's rules (the node's, see test_node_inputs.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import transforms3d.affines as ta
import transforms3d.euler as te

from depth_perception.core.camera import Intrinsics
from depth_perception.core.prompts import (
    cloud_prompt,
    cloud_xyz,
    merge_prompts,
    points_to_sparse_depth,
    project_points,
)
from depth_perception.engines.base import (
    PROMPT_INPUTS,
    RGBD_INPUTS,
    CompletionEngine,
    CompletionResult,
    EngineInputs,
    FrameInputs,
    input_roles,
    missing_frame_inputs,
)
from depth_perception.engines.classical import DEPTH_ONLY_INPUTS, ClassicalFillEngine
from depth_perception.eval.evaluate import FrameInputsBuilder, pipeline_frames, run_offline
from depth_perception.eval.pipelines import (
    MissingInputError,
    Pipeline,
    frame_cloud,
    get_pipeline,
    missing_inputs,
)
from depth_perception.io.calibration import Calibration, Extrinsic
from depth_perception.io.frames import RGBDFrame

INTR = Intrinsics(80, 60, fx=60.0, fy=62.0, cx=39.5, cy=29.5, frame_id="cam_optical")
CLOUD_DTYPE = np.dtype(  # a Velodyne-like layout: padding, intensity and ring around x, y, z
    {
        "names": ["x", "y", "z", "intensity", "ring"],
        "formats": ["<f4", "<f4", "<f4", "<f4", "<u2"],
        "offsets": [0, 4, 8, 16, 20],
        "itemsize": 32,
    }
)


def _camera_T_lidar() -> np.ndarray:
    """LiDAR (x forward, y left, z up) 10 cm above and 5 cm behind the camera, slightly rolled
    and yawed: the camera's optical axes are (-y, -z, x) of the LiDAR's."""
    optical_R_lidar = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    R = optical_R_lidar @ te.euler2mat(0.02, -0.01, 0.05, "sxyz")
    return ta.compose([0.01, 0.10, -0.05], R, np.ones(3))


def _structured(xyz: np.ndarray) -> np.ndarray:
    out = np.zeros(len(xyz), CLOUD_DTYPE)
    out["x"], out["y"], out["z"] = xyz.T
    out["intensity"] = 7.0
    out["ring"] = np.arange(len(xyz)) % 16
    return out


def _independent_projection(xyz_lidar, T, intr):
    """Per point, in plain Python: move, drop behind / outside / non-finite, keep the nearest."""
    R, t = T[:3, :3], T[:3, 3]
    best: dict[tuple[int, int], float] = {}
    counts = {"non_finite": 0, "behind": 0, "outside": 0}
    for p in xyz_lidar.astype(np.float64):
        if not np.all(np.isfinite(p)):
            counts["non_finite"] += 1
            continue
        x, y, z = R @ p + t
        if z <= 0:
            counts["behind"] += 1
            continue
        u = int(np.floor(intr.fx * x / z + intr.cx + 0.5))
        v = int(np.floor(intr.fy * y / z + intr.cy + 0.5))
        if not (0 <= u < intr.width and 0 <= v < intr.height):
            counts["outside"] += 1
            continue
        best[(v, u)] = min(z, best.get((v, u), np.inf))
    out = np.full((intr.height, intr.width), np.nan, np.float32)
    for (v, u), z in best.items():
        out[v, u] = z
    return out, counts


def test_cloud_projection_matches_an_independent_computation():
    rng = np.random.default_rng(0)
    # A LiDAR-like cloud all around the sensor: most points behind the camera or outside its
    # field of view, some in front at 0.5-20 m, a few NaN (beams without a return), and
    # several on the same rays at different ranges (z-buffer order).
    n = 4000
    az = rng.uniform(-np.pi, np.pi, n)
    el = rng.uniform(-0.4, 0.4, n)
    r = rng.uniform(0.5, 20.0, n)
    xyz = np.stack([r * np.cos(el) * np.cos(az), r * np.cos(el) * np.sin(az), r * np.sin(el)], 1)
    xyz = np.concatenate([xyz, xyz[:300] * 0.5, xyz[:300] * 1.7])  # same rays, nearer / farther
    xyz[rng.choice(len(xyz), 50, replace=False)] = np.nan
    xyz = xyz.astype(np.float32)
    T = _camera_T_lidar()

    prompt, counts = cloud_prompt(_structured(xyz), T, INTR)
    expected, expected_counts = _independent_projection(xyz, T, INTR)

    np.testing.assert_array_equal(np.isnan(prompt), np.isnan(expected))
    np.testing.assert_allclose(prompt, expected, rtol=1e-6)
    assert counts.points == len(xyz)
    assert counts.non_finite == expected_counts["non_finite"] == 50
    assert counts.behind == expected_counts["behind"] > 1000
    assert counts.outside == expected_counts["outside"] > 0
    assert counts.in_image == len(xyz) - counts.discarded > 0
    assert counts.pixels == np.count_nonzero(np.isfinite(prompt)) <= counts.in_image


def test_zbuffer_order_and_points_behind_the_camera():
    # Three LiDAR points on the camera's optical axis (LiDAR +x is the camera's +z): the nearest
    # wins whatever the order; a point behind the camera on the same axis would project onto
    # the principal point if its sign were ignored, and must not.
    T = ta.compose([0, 0, 0], np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]]), np.ones(3))
    intr = Intrinsics(5, 5, fx=4.0, fy=4.0, cx=2.0, cy=2.0)
    ahead = np.array([[3.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0]], np.float32)
    behind = np.array([[-0.5, 0, 0]], np.float32)
    for order in ([0, 1, 2], [2, 1, 0], [1, 0, 2]):
        prompt, counts = cloud_prompt(np.concatenate([behind, ahead[order]]), T, intr)
        assert prompt[2, 2] == 1.0
        assert np.count_nonzero(np.isfinite(prompt)) == 1
        assert (counts.behind, counts.in_image, counts.pixels) == (1, 3, 1)
    only_behind, counts = cloud_prompt(behind, T, intr)
    assert np.isnan(only_behind).all() and counts.behind == 1


def test_project_points_counts_and_equals_points_to_sparse_depth():
    pts = np.array(
        [[0, 0, 2.0], [0, 0, -1.0], [0, 0, 0.0], [100.0, 0, 1.0], [np.nan, 0, 1.0], [0, 0, 1.0]]
    )
    prompt, counts = project_points(pts, INTR)
    assert (counts.points, counts.behind, counts.outside, counts.non_finite) == (6, 2, 1, 1)
    assert (counts.in_image, counts.pixels) == (2, 1)
    np.testing.assert_array_equal(prompt, points_to_sparse_depth(pts, INTR))


def test_cloud_xyz_layouts_and_errors():
    xyz = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    np.testing.assert_array_equal(cloud_xyz(_structured(xyz)), xyz)
    np.testing.assert_array_equal(cloud_xyz(xyz), xyz)
    assert cloud_xyz(_structured(xyz)).dtype == np.float64
    f64 = np.zeros(2, [("z", "<f8"), ("y", "<f8"), ("x", "<f8")])  # another field order
    f64["x"], f64["y"], f64["z"] = xyz.T
    np.testing.assert_array_equal(cloud_xyz(f64), xyz)
    with pytest.raises(ValueError, match=r"no z field.*\['x', 'y', 'intensity'\]"):
        cloud_xyz(np.zeros(3, [("x", "f4"), ("y", "f4"), ("intensity", "f4")]))
    with pytest.raises(ValueError, match="needs x, y, z"):
        cloud_xyz(np.zeros((4, 2)))


def test_sources_merge_nearest_first_like_one_projection():
    rng = np.random.default_rng(1)
    a = rng.uniform([-2, -1.5, 0.5], [2, 1.5, 6], (500, 3))
    b = rng.uniform([-2, -1.5, 0.5], [2, 1.5, 6], (500, 3))
    merged = merge_prompts(
        [points_to_sparse_depth(a, INTR), points_to_sparse_depth(b, INTR)], (60, 80)
    )
    np.testing.assert_array_equal(merged, points_to_sparse_depth(np.concatenate([a, b]), INTR))
    with pytest.raises(ValueError, match="shape"):
        merge_prompts([np.zeros((2, 2), np.float32)], (60, 80))


# -- the engine contract -----------------------------------------------------------------------


def test_engine_inputs_roles_and_missing_inputs():
    assert RGBD_INPUTS.names() == ["colour", "depth"]
    assert PROMPT_INPUTS.names() == ["colour", "prompt"]
    assert input_roles(RGBD_INPUTS) == ("rgb", "rgb_info", "depth")
    assert input_roles(PROMPT_INPUTS, ("lidar",)) == ("rgb", "rgb_info", "lidar")
    both = input_roles(PROMPT_INPUTS, ("radar", "sensor_depth", "lidar"))
    assert both == ("rgb", "rgb_info", "depth", "lidar", "radar")
    assert input_roles(EngineInputs(targets=True)) == ("rgb", "rgb_info", "targets")
    frame = FrameInputs(INTR, rgb=np.zeros((60, 80, 3), np.uint8))
    assert missing_frame_inputs(PROMPT_INPUTS, frame) == ["prompt"]
    assert missing_frame_inputs(replace(PROMPT_INPUTS, prompt_optional=True), frame) == []
    assert missing_frame_inputs(RGBD_INPUTS, frame) == ["depth"]


def test_completion_engines_run_their_complete_and_jbu_takes_the_prompt():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 255, (60, 80, 3), np.uint8)
    depth = np.where(rng.random((60, 80)) < 0.3, np.nan, 2.0).astype(np.float32)
    prompt = np.where(rng.random((60, 80)) < 0.05, 3.0, np.nan).astype(np.float32)
    frame = FrameInputs(INTR, rgb=rgb, depth=depth, prompt=prompt)
    nearest = ClassicalFillEngine("nearest")
    assert nearest.inputs == DEPTH_ONLY_INPUTS  # a hole fill never reads colour
    np.testing.assert_array_equal(
        nearest.run(replace(frame, rgb=None)).depth, nearest.complete(rgb, depth, INTR).depth
    )
    jbu = ClassicalFillEngine("jbu")
    assert jbu.inputs == PROMPT_INPUTS
    out = jbu.run(frame).depth
    np.testing.assert_array_equal(out, jbu.complete(rgb, prompt, INTR).depth)
    assert np.nanmax(np.abs(out - 3.0)) < 1e-5  # densified from the prompt, not the depth

    class Halve(CompletionEngine):  # a new completion engine only writes complete()
        model_id = "test/halve"

        def complete(self, rgb, depth, intrinsics):
            return CompletionResult(depth=depth / 2)

    np.testing.assert_array_equal(Halve().run(frame).depth, depth / 2)


# -- the offline builder: the node's rules -------------------------------------------------------


def _calibration() -> Calibration:
    return Calibration(
        extrinsics=[
            Extrinsic.from_matrix("cam_optical", "lidar_link", _camera_T_lidar()),
            Extrinsic.from_matrix("cam_optical", "radar_link", _camera_T_lidar()),
        ]
    )


def _frame(i: int, lidar=True, radar=False, lidar_offset_ns=0, seed=0) -> RGBDFrame:
    rng = np.random.default_rng(seed + i)
    depth = np.where(rng.random((60, 80)) < 0.5, np.nan, 4.0).astype(np.float32)
    extra = {"calibration": _calibration(), "stamps": {"rgb": 10**9 + i * 10**8}}
    xyz = rng.uniform([0.5, -2, -1], [8, 2, 1], (800, 3)).astype(np.float32)
    if lidar:
        extra.update(lidar=_structured(xyz), lidar_frame_id="lidar_link")
        extra["stamps"]["lidar"] = extra["stamps"]["rgb"] + lidar_offset_ns
    if radar:
        extra.update(radar=_structured(xyz[:40] * 1.5), radar_frame_id="radar_link")
    return RGBDFrame(
        extra["stamps"]["rgb"],
        rng.integers(0, 255, (60, 80, 3), np.uint8),
        depth,
        INTR,
        extra=extra,
    )


def _prompt_pipeline(sources: tuple[str, ...]) -> Pipeline:
    return Pipeline(
        "jbu_test",
        "test",
        "depth_fill_node",
        "depth_fill.yaml",
        lambda: ClassicalFillEngine("jbu"),
        {"method": "jbu"},
        inputs=PROMPT_INPUTS,
        prompt_sources=sources,
    )


def test_builder_projects_each_source_with_the_frames_calibration():
    frame = _frame(0, radar=True)
    for sources in (("lidar",), ("radar",), ("lidar", "radar"), ("lidar", "sensor_depth")):
        inputs = FrameInputsBuilder(PROMPT_INPUTS, sources)(frame)
        parts = [
            cloud_prompt(frame.extra[s], _camera_T_lidar(), INTR)[0]
            for s in sources
            if s != "sensor_depth"
        ]
        if "sensor_depth" in sources:
            parts.append(frame.depth)
        np.testing.assert_array_equal(inputs.prompt, merge_prompts(parts, (60, 80)))
        assert inputs.depth is None and inputs.rgb is frame.rgb  # only what the engine takes
    assert FrameInputsBuilder(RGBD_INPUTS)(frame).prompt is None


def test_builder_uses_the_newest_scan_within_max_prompt_age():
    build = FrameInputsBuilder(PROMPT_INPUTS, ("lidar",), max_prompt_age=0.25)
    first = build(_frame(0))
    # The next frames carry no scan: the newest one (0.1 s, 0.2 s old) still serves them ...
    assert np.array_equal(build(_frame(1, lidar=False)).prompt, first.prompt, equal_nan=True)
    assert np.array_equal(build(_frame(2, lidar=False)).prompt, first.prompt, equal_nan=True)
    # ... until it is older than max_prompt_age: no prompt (the node publishes "no depth").
    assert build(_frame(3, lidar=False)).prompt is None
    # A scan 0.3 s away from its frame (either side) is too far too.
    assert build(_frame(4, lidar_offset_ns=300_000_000)).prompt is None
    assert build(_frame(5, lidar_offset_ns=-200_000_000)).prompt is not None


def test_frame_cloud_keeps_the_scans_offset_when_stamps_are_shifted():
    frame = _frame(0, lidar_offset_ns=-40_000_000)
    shifted = replace(frame, stamp_ns=frame.stamp_ns + 5 * 10**9)  # as chain_bags shifts bags
    cloud, frame_id, stamp = frame_cloud(shifted, "lidar")
    assert (frame_id, stamp) == ("lidar_link", shifted.stamp_ns - 40_000_000)
    assert frame_cloud(_frame(0, lidar=False), "lidar") is None


def test_pipeline_frames_feed_the_prompt_and_missing_inputs_are_named():
    frames = [_frame(i, radar=True) for i in range(3)]
    pipeline = get_pipeline("jbu_lidar")
    assert pipeline.roles == ("rgb", "rgb_info", "lidar")
    assert pipeline.node_parameters["prompt_sources"] == ["lidar"]
    engine = pipeline.make_engine()
    for frame, inputs in pipeline_frames(pipeline, frames):
        np.testing.assert_array_equal(frame.depth, inputs.prompt)  # what holes.* refer to
        np.testing.assert_array_equal(
            run_offline(engine, inputs).depth, engine.complete(frame.rgb, inputs.prompt, INTR).depth
        )
    radar = _prompt_pipeline(("radar",))
    bare = replace(frames[0], extra={"stamps": frames[0].extra["stamps"]})
    assert missing_inputs(radar, bare) == [
        "a radar scan",
        "the radar extrinsic (radar_link -> cam_optical) in a calibration",
    ]
    assert missing_inputs(radar, bare, calibration=_calibration()) == ["a radar scan"]
    assert missing_inputs(get_pipeline("nearest"), bare) == []
    with pytest.raises(MissingInputError, match="needs a radar scan"):
        pipeline_frames(radar, [bare])
    # No prompt at all (every point behind the camera): "no depth", as the node publishes.
    behind = _frame(0)
    behind.extra["lidar"]["x"] *= -1
    ((frame, inputs),) = pipeline_frames(pipeline, [behind])
    assert inputs.prompt is None and np.isnan(frame.depth).all()
    assert np.isnan(run_offline(engine, inputs).depth).all()
    with pytest.raises(ValueError, match="prompt sources for an engine without one"):
        Pipeline("x", "x", "x", "x", ClassicalFillEngine, prompt_sources=("lidar",))

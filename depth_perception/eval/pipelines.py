"""Named pipelines that evaluation, the CLI and the demo can run, offline or as real nodes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from depth_perception.core.prompts import CLOUD_SOURCES, DEFAULT_MAX_PROMPT_AGE, PROMPT_SOURCES
from depth_perception.engines.base import (
    PROMPT_INPUTS,
    RGBD_INPUTS,
    Engine,
    EngineInputs,
    input_roles,
)
from depth_perception.engines.classical import ClassicalFillEngine
from depth_perception.io.calibration import Calibration
from depth_perception.io.frames import RGBDFrame
from depth_perception.paths import config_file, default_model_path


@dataclass(frozen=True)
class Pipeline:
    """How to run one method: as an in-process engine or as its ROS node, on the same inputs.

    ``inputs`` is what its engine declares (``make_engine().inputs``); ``prompt_sources`` where
    its prompt comes from (any of ``lidar``, ``radar``, ``sensor_depth``: the node's parameter
    of that name). Together they say which streams of a recording it takes
    (:attr:`roles`), which the offline path turns into the engine's
    :class:`~depth_perception.engines.base.FrameInputs` and the DDS replay publishes to the node
    by the same rules (:func:`depth_perception.eval.evaluate.pipeline_frames`).
    """

    name: str
    description: str
    executable: str  # console script of the node (launched for DDS replay)
    params_file: str  # file name under config/
    make_engine: Callable[[], Engine]
    parameters: dict[str, object] = field(default_factory=dict)  # overrides of the params file
    inputs: EngineInputs = RGBD_INPUTS
    prompt_sources: tuple[str, ...] = ()
    max_prompt_age: float = DEFAULT_MAX_PROMPT_AGE  # seconds, as the node's parameter

    def __post_init__(self) -> None:
        unknown = set(self.prompt_sources) - set(PROMPT_SOURCES)
        if unknown:
            raise ValueError(f"pipeline {self.name}: unknown prompt sources {sorted(unknown)}")
        if self.prompt_sources and not self.inputs.prompt:
            raise ValueError(f"pipeline {self.name}: prompt sources for an engine without one")

    @property
    def params_path(self) -> str:
        return str(config_file(self.params_file))

    @property
    def roles(self) -> tuple[str, ...]:
        """The streams it takes (``rgb``, ``rgb_info``, ``depth``, ``lidar``, ...)."""
        return input_roles(self.inputs, self.prompt_sources)

    @property
    def node_parameters(self) -> dict[str, object]:
        """The node's parameter overrides: ``parameters`` plus the prompt sources."""
        if not self.prompt_sources:
            return dict(self.parameters)
        return {
            **self.parameters,
            "prompt_sources": list(self.prompt_sources),
            "max_prompt_age": self.max_prompt_age,
        }


def _classical(method: str, description: str, prompt_sources: tuple[str, ...] = ()) -> Pipeline:
    return Pipeline(
        name="_".join((method, *prompt_sources)),
        description=description,
        executable="depth_fill_node",
        params_file="depth_fill.yaml",
        make_engine=lambda: ClassicalFillEngine(method),
        parameters={"method": method},
        inputs=PROMPT_INPUTS if prompt_sources else RGBD_INPUTS,
        prompt_sources=prompt_sources,
    )


_LINGBOT_FUSION = {
    "none": ("lingbot", ""),
    "keep": ("lingbot_keep_measured", ", sensor depth kept where measured"),
    "align": ("lingbot_aligned", ", sensor depth kept, holes rescaled to the measurements"),
}


def _lingbot(checkpoint: str, fuse_measured: str = "none") -> Pipeline:
    from depth_perception.engines.lingbot import LingBotEngine, LingBotEngineConfig

    cfg = LingBotEngineConfig(checkpoint=checkpoint, fuse_measured=fuse_measured)
    name, detail = _LINGBOT_FUSION[fuse_measured]
    return Pipeline(
        name=name,
        description=f"LingBot-Depth RGB-D completion ({checkpoint}){detail}",
        executable="rgbd_completion_node",
        params_file="rgbd_completion.yaml",
        make_engine=lambda: LingBotEngine(cfg),
        parameters={"checkpoint": checkpoint, "fuse_measured": fuse_measured},
    )


PIPELINES: dict[str, Pipeline] = {
    p.name: p
    for p in (
        _classical("nearest", "nearest valid pixel (classical)"),
        _classical("inpaint_telea", "OpenCV Telea inpainting (classical)"),
        _classical("inpaint_ns", "OpenCV Navier-Stokes inpainting (classical)"),
        _classical("ipbasic", "IP-Basic morphological fill (classical)"),
        _classical("jbu", "LiDAR prompt, joint bilateral upsampling (classical)", ("lidar",)),
        _classical("passthrough", "sensor depth unchanged (data path only)"),
    )
}
PIPELINES.update(
    (p.name, p) for p in (_lingbot(str(default_model_path()), mode) for mode in _LINGBOT_FUSION)
)
# What every report compares a learned model against: hole fills of the sensor depth, and
# colour-guided upsampling of the LiDAR prompt when the recording has a LiDAR.
BASELINES = ("nearest", "inpaint_telea", "ipbasic")
PROMPT_BASELINES = ("jbu_lidar",)
LEARNED = tuple(name for name, _ in _LINGBOT_FUSION.values())
# Names the CLI accepts besides the pipelines themselves.
PIPELINE_GROUPS: dict[str, tuple[str, ...]] = {"all": tuple(PIPELINES), "learned": LEARNED}


class MissingInputError(ValueError):
    """A pipeline needs an input the recording does not provide (e.g. a LiDAR scan)."""


def expand_pipelines(names: list[str]) -> list[str]:
    """Pipeline names with the groups (``all``, ``learned``) expanded, first occurrence kept."""
    out: dict[str, None] = {}
    for name in names:
        out.update(dict.fromkeys(PIPELINE_GROUPS.get(name, (name,))))
    return list(out)


_SOURCE_NAMES = {"lidar": "LiDAR", "radar": "radar"}


def missing_inputs(
    pipeline: Pipeline, frame: RGBDFrame, calibration: Calibration | None = None
) -> list[str]:
    """What ``pipeline`` takes (:attr:`Pipeline.roles`) that ``frame`` does not carry: a
    LiDAR / radar scan and its extrinsic to the camera, targets.

    ``calibration`` stands in for the frame's own (``frame.extra["calibration"]``).
    """
    missing = []
    cal = frame.extra.get("calibration") or calibration
    for source in CLOUD_SOURCES:
        if source not in pipeline.roles:
            continue
        name = _SOURCE_NAMES[source]
        if frame.extra.get(source) is None:
            missing.append(f"a {name} scan")
        sensor_frame = frame.extra.get(f"{source}_frame_id", f"{source}_link")
        if not _connects(cal, frame.frame_id, sensor_frame):
            missing.append(
                f"the {name} extrinsic ({sensor_frame} -> {frame.frame_id}) in a calibration"
            )
    if "targets" in pipeline.roles and frame.extra.get("targets") is None:
        missing.append("targets")
    return missing


def frame_cloud(frame: RGBDFrame, source: str) -> tuple[np.ndarray, str, int] | None:
    """``frame``'s ``lidar`` / ``radar`` scan as (points, frame_id, stamp_ns), None without one.

    The scan keeps its own stamp relative to the colour image's (a recording pairs the nearest
    scan, which may be older or newer than the image), moved along with the frame when
    :func:`~depth_perception.eval.evaluate.chain_bags` shifts the stamps."""
    cloud = frame.extra.get(source)
    if cloud is None:
        return None
    stamps = frame.extra.get("stamps") or {}
    stamp = frame.stamp_ns
    if source in stamps and "rgb" in stamps:
        stamp += int(stamps[source]) - int(stamps["rgb"])
    return cloud, str(frame.extra.get(f"{source}_frame_id", f"{source}_link")), stamp


def _connects(calibration: Calibration | None, parent: str, child: str) -> bool:
    if calibration is None:
        return False
    try:
        calibration.transform(parent, child)
    except KeyError:  # the two frames are not connected
        return False
    return True


def get_pipeline(name: str, checkpoint: str | None = None) -> Pipeline:
    """The named pipeline; ``checkpoint`` swaps the model of a learned one."""
    try:
        pipeline = PIPELINES[name]
    except KeyError:
        raise ValueError(f"unknown pipeline {name!r}; choose from {sorted(PIPELINES)}") from None
    if checkpoint is None:
        return pipeline
    if "checkpoint" not in pipeline.parameters:
        raise ValueError(f"pipeline {name!r} has no model to replace")
    return _lingbot(str(checkpoint), fuse_measured=str(pipeline.parameters["fuse_measured"]))

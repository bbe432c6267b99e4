"""Named pipelines that evaluation, the CLI and the demo can run, offline or as real nodes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from depth_perception.engines.base import CompletionEngine
from depth_perception.engines.classical import ClassicalFillEngine
from depth_perception.io.calibration import Calibration
from depth_perception.io.frames import RGBDFrame
from depth_perception.paths import config_file, default_model_path


@dataclass(frozen=True)
class Pipeline:
    """How to run one depth-completion method: as an in-process engine or as its ROS node."""

    name: str
    description: str
    executable: str  # console script of the node (launched for DDS replay)
    params_file: str  # file name under config/
    make_engine: Callable[[], CompletionEngine]
    parameters: dict[str, object] = field(default_factory=dict)  # overrides of the params file
    # What the node gets on its depth input: the RGB-D sensor's depth, or the LiDAR scan projected
    # into the colour camera (a sparse metric prompt).
    depth_input: str = "sensor"  # "sensor" | "lidar"

    @property
    def params_path(self) -> str:
        return str(config_file(self.params_file))


def _classical(method: str, description: str, depth_input: str = "sensor") -> Pipeline:
    return Pipeline(
        name=method if depth_input == "sensor" else f"{method}_{depth_input}",
        description=description,
        executable="depth_fill_node",
        params_file="depth_fill.yaml",
        make_engine=lambda: ClassicalFillEngine(method),
        parameters={"method": method},
        depth_input=depth_input,
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
        _classical("jbu", "LiDAR prompt, joint bilateral upsampling (classical)", "lidar"),
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


def missing_inputs(
    pipeline: Pipeline, frame: RGBDFrame, calibration: Calibration | None = None
) -> list[str]:
    """What ``pipeline`` needs, by its ``depth_input``, that ``frame`` does not carry.

    ``calibration`` stands in for the frame's own (``frame.extra["calibration"]``).
    """
    if pipeline.depth_input == "sensor":
        return []
    if pipeline.depth_input != "lidar":
        raise ValueError(f"pipeline {pipeline.name}: unknown depth_input {pipeline.depth_input!r}")
    missing = []
    if frame.extra.get("lidar") is None:
        missing.append("a LiDAR scan")
    cal = frame.extra.get("calibration") or calibration
    lidar_frame = frame.extra.get("lidar_frame_id", "lidar_link")
    if not _connects(cal, frame.frame_id, lidar_frame):
        missing.append(f"the LiDAR extrinsic ({lidar_frame} -> {frame.frame_id}) in a calibration")
    return missing


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

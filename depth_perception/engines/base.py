"""The contract every engine meets: one input record in, one result record out. No ROS.

An engine says which inputs it takes (:class:`EngineInputs`); whoever feeds it — the node base
(depth_perception.ros.completion_node), offline evaluation, the CLI — builds exactly those
into a :class:`FrameInputs` and calls :meth:`Engine.run`:

- ``colour``: the (H, W, 3) uint8 RGB image; the intrinsics always come with it;
- ``depth``: the RGB-D sensor's depth registered to the colour camera (metres, NaN = hole);
- ``prompt``: a sparse metric prompt aligned with the colour image (metres, NaN = none), built
  from the sources the node / pipeline configures (LiDAR, radar, the sensor's own depth;
  :mod:`depth_perception.core.prompts`);
- ``targets``: target boxes / names (:class:`depth_perception.io.frames.Target`).

``prompt_optional``: the engine also runs without a prompt (``prompt`` None), e.g. a
prompt-conditioned model that falls back to its prompt-free prediction; otherwise a frame
without a prompt is not given to it (the node publishes "no depth" and warns).

RGB-D completion engines (classical hole fills, LingBot-Depth) subclass
:class:`CompletionEngine` and implement ``complete(rgb, depth, intrinsics)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np

from depth_perception.core.camera import Intrinsics
from depth_perception.io.frames import Target

if TYPE_CHECKING:  # open3d behind it: imported by the engines that fill these in
    from depth_perception.core.target_geometry import FitInfo, TargetGeometry


@dataclass(frozen=True)
class EngineInputs:
    """Which inputs an engine takes (the colour image and its intrinsics always)."""

    colour: bool = True
    depth: bool = False  # the RGB-D sensor's registered depth
    prompt: bool = False  # a sparse metric prompt image
    targets: bool = False  # target boxes / names
    prompt_optional: bool = False  # runs without a prompt too (prompt None)

    def names(self) -> list[str]:
        """The inputs taken, in field order, e.g. ``["colour", "prompt"]``."""
        taken = [f.name for f in fields(self) if getattr(self, f.name)]
        return [name for name in taken if name != "prompt_optional"]


#: What an RGB-D completion engine takes.
RGBD_INPUTS = EngineInputs(colour=True, depth=True)
#: What a prompt-densifying engine takes (colour-guided upsampling, a prompted teacher).
PROMPT_INPUTS = EngineInputs(colour=True, prompt=True)


@dataclass
class FrameInputs:
    """One frame's inputs, as an engine declared them; what it did not declare is None."""

    intrinsics: Intrinsics  # of the colour camera (depth and prompt are aligned with it)
    rgb: np.ndarray | None = None  # (H, W, 3) uint8 RGB
    depth: np.ndarray | None = None  # (H, W) float32 metres, NaN = hole
    prompt: np.ndarray | None = None  # (H, W) float32 metres, NaN = no prompt at that pixel
    targets: list[Target] | None = None
    stamp_ns: int = 0
    #: What built the prompt said about it (per source counts, ages), for reports.
    prompt_report: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.intrinsics.height, self.intrinsics.width)


@dataclass
class TargetResult:
    """What an engine that takes targets found for one of them (FocusDepth).

    ``error`` (with ``error_kind``, a short key for diagnostics) says why a target could not be
    processed (box outside the image, zero-area box, empty prompt, no mask, too few reference
    pixels, ...); what was computed before that stays filled in, the rest None."""

    target_id: int
    text: str
    score: float = 0.0  # the segmenter's (SAM3's) score; 0 when it did not run
    mask: np.ndarray | None = None  # (H, W) bool
    # (H, W) float32: the model's relative disparity for this prompt, whole image, before any
    # fit (what FDE-Bench scores: eval/targets.py); filled even when the target then fails
    relative: np.ndarray | None = None
    depth: np.ndarray | None = None  # (H, W) float32 metres: this target's metric fit, NaN = none
    points: np.ndarray | None = None  # (N, 3) float32, optical frame: the mask's valid depth
    geometry: TargetGeometry | None = None  # centroid, oriented box, point count
    fit: FitInfo | None = None  # how the relative -> metric fit went
    error: str | None = None
    error_kind: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class CompletionResult:
    """Dense depth for one frame, pixel-aligned with the colour image of its inputs."""

    depth: np.ndarray  # (H, W) float32 metres, NaN where the engine has no answer
    confidence: np.ndarray | None = None  # (H, W) float32 in [0, 1], if the engine estimates it
    #: One result per target given (engines that take targets), in order; None otherwise.
    targets: list[TargetResult] | None = None

    def points(self, intrinsics: Intrinsics) -> np.ndarray:
        """(H, W, 3) float32 points in the camera's optical frame; NaN where depth is."""
        return intrinsics.backproject(self.depth)


def input_roles(inputs: EngineInputs, prompt_sources: tuple[str, ...] | list[str] = ()) -> tuple:
    """The streams a node with this engine and these prompt sources takes, by role: ``rgb`` and
    ``rgb_info`` always, ``depth`` when the engine takes it or ``sensor_depth`` is a prompt
    source, ``lidar`` / ``radar`` when prompt sources (their extrinsics too), ``targets``.
    One rule for what the node subscribes to, what the replay publishes and what a recording
    must provide."""
    roles = ["rgb", "rgb_info"]
    if inputs.depth or "sensor_depth" in prompt_sources:
        roles.append("depth")
    if inputs.prompt:
        roles += [s for s in ("lidar", "radar") if s in prompt_sources]
    if inputs.targets:
        roles.append("targets")
    return tuple(roles)


def no_result(shape: tuple[int, int]) -> CompletionResult:
    """ "No depth" for a frame an engine cannot be given (NaN depth, zero confidence)."""
    return CompletionResult(
        depth=np.full(shape, np.nan, np.float32), confidence=np.zeros(shape, np.float32)
    )


def missing_frame_inputs(inputs: EngineInputs, frame: FrameInputs) -> list[str]:
    """The declared inputs ``frame`` lacks (a prompt only when it is not optional)."""
    given = {
        "colour": frame.rgb is not None,
        "depth": frame.depth is not None,
        "prompt": frame.prompt is not None or inputs.prompt_optional,
        "targets": frame.targets is not None,
    }
    return [name for name in inputs.names() if not given[name]]


class Engine(ABC):
    """Base of every engine: ``model_id``, the declared ``inputs`` and ``run``."""

    model_id: str = "engine"
    inputs: EngineInputs = RGBD_INPUTS
    #: False: the engine answers pixel queries only (DepthLM), ``run`` gives no depth image, and
    #: the node base publishes no depth_completed/* outputs for it.
    dense_output: bool = True

    @abstractmethod
    def run(self, frame: FrameInputs) -> CompletionResult:
        """Depth (and confidence) for one frame; ``frame`` holds what ``inputs`` declares."""


class CompletionEngine(Engine):
    """An RGB-D completion engine: completes holey sensor depth given the registered colour
    image and the intrinsics (``complete``); ``run`` feeds it from a :class:`FrameInputs`."""

    inputs = RGBD_INPUTS

    def run(self, frame: FrameInputs) -> CompletionResult:
        return self.complete(frame.rgb, frame.depth, frame.intrinsics)

    @abstractmethod
    def complete(
        self, rgb: np.ndarray, depth: np.ndarray, intrinsics: Intrinsics
    ) -> CompletionResult:
        """rgb: (H, W, 3) uint8 RGB; depth: (H, W) float32 metres with NaN holes."""

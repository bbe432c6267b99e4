"""Engines: numpy in -> preprocess -> model -> postprocess -> numpy out. No ROS imports.

Nodes, the CLI and offline evaluation all call the same engine objects, through one contract
(:mod:`depth_perception.engines.base`): an engine declares its inputs and ``run`` takes them.
"""

from depth_perception.engines.base import (
    PROMPT_INPUTS,
    RGBD_INPUTS,
    CompletionEngine,
    CompletionResult,
    Engine,
    EngineInputs,
    FrameInputs,
)
from depth_perception.engines.classical import ClassicalFillEngine

__all__ = [
    "PROMPT_INPUTS",
    "RGBD_INPUTS",
    "ClassicalFillEngine",
    "CompletionEngine",
    "CompletionResult",
    "Engine",
    "EngineInputs",
    "FrameInputs",
]

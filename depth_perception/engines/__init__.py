"""Engines: numpy in -> preprocess -> model -> postprocess -> numpy out. No ROS imports.

Nodes, the CLI and offline evaluation all call the same engine objects.
"""

from depth_perception.engines.base import CompletionEngine, CompletionResult
from depth_perception.engines.classical import ClassicalFillEngine

__all__ = ["ClassicalFillEngine", "CompletionEngine", "CompletionResult"]

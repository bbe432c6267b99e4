"""Classical methods as engines: the baselines every learned model is compared against."""

from __future__ import annotations

import numpy as np

from depth_perception.core.baselines import FILL_METHODS, fill_holes, joint_bilateral_upsample
from depth_perception.core.camera import Intrinsics
from depth_perception.core.depth import sanitize_depth
from depth_perception.engines.base import (
    PROMPT_INPUTS,
    CompletionEngine,
    CompletionResult,
    EngineInputs,
    FrameInputs,
)

#: What the hole fills and passthrough take: the registered depth alone.
DEPTH_ONLY_INPUTS = EngineInputs(colour=False, depth=True)
# Methods beyond the geometric hole fills of core.baselines.FILL_METHODS:
#   jbu          colour-guided joint bilateral upsampling of a sparse metric prompt (LiDAR,
#                radar or the sensor's own depth: the node's / pipeline's prompt sources)
#   passthrough  the input depth unchanged (metric conversion + cloud, like depth_image_proc;
#                also what times the data path without a method)
EXTRA_METHODS = ("jbu", "passthrough")
METHODS = (*FILL_METHODS, *EXTRA_METHODS)


class ClassicalFillEngine(CompletionEngine):
    """Completes depth with one classical method (see ``METHODS``).

    The hole fills and passthrough take the sensor depth; ``jbu`` takes the prompt instead
    (``complete`` still upsamples whatever sparse depth it is given).
    """

    def __init__(self, method: str = "nearest", **method_kwargs) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}")
        self.method = method
        self.method_kwargs = method_kwargs
        self.model_id = f"classical/{method}"
        # The hole fills and passthrough never read colour: declared so, the node leaves the
        # colour image undecoded unless the (xyzrgb) cloud has a subscriber.
        self.inputs: EngineInputs = PROMPT_INPUTS if method == "jbu" else DEPTH_ONLY_INPUTS

    def run(self, frame: FrameInputs) -> CompletionResult:
        if self.method == "jbu":
            return self.complete(frame.rgb, frame.prompt, frame.intrinsics)
        return super().run(frame)

    def complete(
        self, rgb: np.ndarray, depth: np.ndarray, intrinsics: Intrinsics
    ) -> CompletionResult:
        del intrinsics  # image-space methods
        if self.method == "passthrough":
            return CompletionResult(depth=sanitize_depth(depth))
        if self.method == "jbu":
            return CompletionResult(
                depth=joint_bilateral_upsample(depth, rgb, **self.method_kwargs)
            )
        return CompletionResult(depth=fill_holes(depth, self.method, **self.method_kwargs))

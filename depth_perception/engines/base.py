"""The contract every depth-completion engine meets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from depth_perception.core.camera import Intrinsics


@dataclass
class CompletionResult:
    """Dense depth for one frame, pixel-aligned with the input depth image."""

    depth: np.ndarray  # (H, W) float32 metres, NaN where the engine has no answer
    confidence: np.ndarray | None = None  # (H, W) float32 in [0, 1], if the engine estimates it

    def points(self, intrinsics: Intrinsics) -> np.ndarray:
        """(H, W, 3) float32 points in the camera's optical frame; NaN where depth is."""
        return intrinsics.backproject(self.depth)


class CompletionEngine(Protocol):
    """Completes holey sensor depth given the registered colour image and intrinsics."""

    model_id: str

    def complete(
        self, rgb: np.ndarray, depth: np.ndarray, intrinsics: Intrinsics
    ) -> CompletionResult:
        """rgb: (H, W, 3) uint8 RGB; depth: (H, W) float32 metres with NaN holes."""
        ...

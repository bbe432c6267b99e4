"""Classical hole filling as an engine: the baseline every learned model is compared against."""

from __future__ import annotations

import numpy as np

from depth_perception.core.baselines import FILL_METHODS, fill_holes
from depth_perception.core.camera import Intrinsics
from depth_perception.engines.base import CompletionResult


class ClassicalFillEngine:
    """Fills depth holes with one of ``core.baselines.FILL_METHODS`` (no colour guidance)."""

    def __init__(self, method: str = "nearest", **method_kwargs) -> None:
        if method not in FILL_METHODS:
            raise ValueError(f"unknown fill method {method!r}; choose from {sorted(FILL_METHODS)}")
        self.method = method
        self.method_kwargs = method_kwargs
        self.model_id = f"classical/{method}"

    def complete(
        self, rgb: np.ndarray, depth: np.ndarray, intrinsics: Intrinsics
    ) -> CompletionResult:
        del rgb, intrinsics  # purely geometric fill
        return CompletionResult(depth=fill_holes(depth, self.method, **self.method_kwargs))

"""The frame record every source (bag, image folder, simulator) yields and every consumer takes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from depth_perception.core.camera import Intrinsics


@dataclass(frozen=True)
class Target:
    """A target prompt: one object to refine depth for, as a pixel box + class name."""

    target_id: int  # caller's id; for simulated bags the instance id in the ground truth
    text: str  # class name, e.g. "mug"
    box: tuple[int, int, int, int]  # (x, y, width, height) pixels, as RegionOfInterest
    score: float = 1.0  # detector confidence; 1.0 for ground-truth boxes


@dataclass
class RGBDFrame:
    """One synchronized RGB-D frame, already decoded (no ROS types)."""

    stamp_ns: int
    rgb: np.ndarray  # (H, W, 3) uint8 RGB
    depth: np.ndarray  # (H, W) float32 metres from the sensor, NaN = hole
    intrinsics: Intrinsics  # of the colour camera, which the depth is registered to
    gt_depth: np.ndarray | None = None  # (H, W) float32 metres, NaN = unknown
    instance: np.ndarray | None = None  # (H, W) int32 instance ids, 0 = none
    extra: dict = field(default_factory=dict)  # e.g. LiDAR points, target boxes

    @property
    def frame_id(self) -> str:
        return self.intrinsics.frame_id

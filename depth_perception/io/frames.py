"""The frame record every source (bag, image folder, simulator) yields and every consumer takes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from depth_perception.core.camera import Intrinsics


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

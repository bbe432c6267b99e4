"""depth_fill_node: classical hole filling of registered depth (the baseline; no model).

Parameters (config/depth_fill.yaml): ``method`` (nearest | inpaint_telea | inpaint_ns | ipbasic |
jbu | passthrough), plus those of every completion node (see
depth_perception.ros.completion_node). The hole fills and passthrough take the registered depth;
``jbu`` densifies a sparse prompt instead, from ``prompt_sources`` (e.g. ``[lidar]``: the LiDAR
scan projected into the camera; no depth topic is subscribed then).
"""

from __future__ import annotations

from depth_perception.engines.classical import ClassicalFillEngine
from depth_perception.ros.completion_node import DepthCompletionNode
from depth_perception.ros.spin import spin_node


class DepthFillNode(DepthCompletionNode):
    def __init__(self, **kwargs) -> None:
        super().__init__("depth_fill_node", **kwargs)

    def make_engine(self) -> ClassicalFillEngine:
        method = self.declare_parameter("method", "nearest").value
        return ClassicalFillEngine(method)


def main(args: list[str] | None = None) -> None:
    spin_node(DepthFillNode, args)


if __name__ == "__main__":
    main()

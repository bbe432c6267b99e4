"""focus_depth_node: target-focused metric depth with FocusDepth, for grasping.

colour + camera_info + a metric reference depth (``depth_registered/image_rect``: the sensor's
registered depth, or better a completed one -- rgbd_completion_node's or prompted_depth_node's
``depth_completed/image``, see launch/grasp_perception.launch.py) + ``targets``
(TargetPromptArray: boxes and/or text) -> per target a metric depth, mask, cloud and oriented
box (depth_perception.engines.focusdepth), published as ``depth_completed/*`` (the reference
with each target refined) and ``targets/geometry``, ``targets/cloud``, ``targets/mask``,
``targets/markers`` (depth_perception.ros.targets).

Parameters (config/focus_depth.yaml): ``checkpoint`` (our FocusDepth directory; default the
model shipped in models/focusdepth_small; ``tiny``: random weights, tests only), ``device``,
``precision``, ``input_size``, ``band_radius``, ``fit_weights``, ``fit_threshold``,
``min_reference_pixels``, ``mask_threshold``, ``min_score``, ``box_method``, ``num_threads``,
plus those of every completion node (depth_perception.ros.completion_node), among them
``max_target_age`` and ``marker_lifetime``.
"""

from __future__ import annotations

from depth_perception.engines.focusdepth import FocusDepthEngine, FocusDepthEngineConfig
from depth_perception.ros.completion_node import DepthCompletionNode
from depth_perception.ros.spin import spin_node


class FocusDepthNode(DepthCompletionNode):
    def __init__(self, **kwargs) -> None:
        super().__init__("focus_depth_node", **kwargs)

    def make_engine(self) -> FocusDepthEngine:
        declare = self.declare_parameter
        cfg = FocusDepthEngineConfig(
            checkpoint=str(declare("checkpoint", "").value),
            device=str(declare("device", "auto").value),
            precision=str(declare("precision", "auto").value),
            input_size=int(declare("input_size", 0).value),
            band_radius=int(declare("band_radius", 10).value),
            fit_weights=tuple(float(w) for w in declare("fit_weights", [10.0, 3.0, 1.0]).value),
            fit_threshold=float(declare("fit_threshold", 0.05).value),
            min_reference_pixels=int(declare("min_reference_pixels", 100).value),
            mask_threshold=float(declare("mask_threshold", 0.0).value),
            min_score=float(declare("min_score", 0.0).value),
            box_method=str(declare("box_method", "minimal").value),
            num_threads=int(declare("num_threads", 0).value),
        )
        engine = FocusDepthEngine(cfg)
        self.get_logger().info(
            f"FocusDepth from {engine.checkpoint} on {engine.device} "
            f"({'bf16' if engine.use_bf16 else 'fp32'}, S = {engine.input_size})"
        )
        return engine


def main(args: list[str] | None = None) -> None:
    spin_node(FocusDepthNode, args)


if __name__ == "__main__":
    main()

"""rgbd_completion_node: LingBot-Depth completion of a consumer RGB-D camera's holey depth.

Parameters (config/rgbd_completion.yaml): ``checkpoint`` (our model directory, an official
``model.pt`` or a directory holding one; default: the model shipped with the package),
``device``, ``num_tokens``, ``precision``, ``compile``, ``max_input_side``,
``confidence_threshold``, ``hole_confidence_scale``, ``fuse_measured``, plus those of every
completion node (see depth_perception.ros.completion_node).
"""

from __future__ import annotations

from depth_perception.engines.lingbot import LingBotEngine, LingBotEngineConfig
from depth_perception.paths import default_model_path
from depth_perception.ros.completion_node import DepthCompletionNode
from depth_perception.ros.spin import spin_node


class RGBDCompletionNode(DepthCompletionNode):
    def __init__(self, **kwargs) -> None:
        super().__init__("rgbd_completion_node", **kwargs)

    def make_engine(self) -> LingBotEngine:
        declare = self.declare_parameter
        checkpoint = declare("checkpoint", "").value or str(default_model_path())
        cfg = LingBotEngineConfig(
            checkpoint=checkpoint,
            device=declare("device", "auto").value,
            num_tokens=int(declare("num_tokens", 2400).value),
            precision=declare("precision", "auto").value,
            compile=bool(declare("compile", False).value),
            max_input_side=int(declare("max_input_side", 0).value),
            confidence_threshold=float(declare("confidence_threshold", 0.0).value),
            hole_confidence_scale=float(declare("hole_confidence_scale", 0.05).value),
            fuse_measured=declare("fuse_measured", "align").value,
        )
        engine = LingBotEngine(cfg)
        self.get_logger().info(
            f"LingBot-Depth from {checkpoint} on {engine.device} "
            f"({engine.num_tokens} tokens, {engine.autocast_dtype or 'fp32'})"
        )
        return engine


def main(args: list[str] | None = None) -> None:
    spin_node(RGBDCompletionNode, args)


if __name__ == "__main__":
    main()

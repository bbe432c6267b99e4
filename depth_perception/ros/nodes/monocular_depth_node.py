"""monocular_depth_node: metric depth from a colour camera alone (colour + camera_info) with the
MetricAnything prompt-free student -- for a robot without a depth sensor, or whose LiDAR is down.

Parameters (config/monocular_depth.yaml): ``checkpoint`` (our student directory, the official
``student_depthmap.pt`` -- plain or under ``state_dict``, or a directory holding it, or
``hf:yjh001/metricanything_student_depthmap/student_depthmap.pt`` from the Hub cache -- or a
``student_*`` preset; default: the student shipped in the package's models/), ``device``,
``precision``, ``num_threads``, and ``constant_depth`` (evaluation only: > 0 publishes this
depth in metres everywhere instead of running the network -- eval-bag's constant_median passes
the median depth of the student's training labels), plus those of every completion node (see
depth_perception.ros.completion_node). The focal length the network's metric scale needs is
camera_info's fx, frame by frame. No depth, LiDAR or radar topic is subscribed.
"""

from __future__ import annotations

from depth_perception.engines.base import Engine
from depth_perception.engines.metric_anything import (
    ConstantDepthConfig,
    ConstantDepthEngine,
    MetricAnythingStudentConfig,
    MetricAnythingStudentEngine,
)
from depth_perception.ros.completion_node import DepthCompletionNode
from depth_perception.ros.spin import spin_node


class MonocularDepthNode(DepthCompletionNode):
    def __init__(self, **kwargs) -> None:
        super().__init__("monocular_depth_node", **kwargs)

    def make_engine(self) -> Engine:
        declare = self.declare_parameter
        constant = float(declare("constant_depth", 0.0).value)
        if constant != 0.0:
            engine = ConstantDepthEngine(ConstantDepthConfig(repr(constant)))
            self.get_logger().warn(
                f"constant_depth: publishing {engine.depth_m:.4g} m everywhere, an evaluation "
                "baseline, not a model"
            )
            return engine
        cfg = MetricAnythingStudentConfig(
            checkpoint=str(declare("checkpoint", "").value),
            device=str(declare("device", "auto").value),
            precision=str(declare("precision", "auto").value),
            num_threads=int(declare("num_threads", 0).value),
        )
        engine = MetricAnythingStudentEngine(cfg)
        self.get_logger().info(
            f"MetricAnything student from {engine.checkpoint} on {engine.device} "
            f"({'bf16' if engine.use_bf16 else 'fp32'})"
        )
        return engine


def main(args: list[str] | None = None) -> None:
    spin_node(MonocularDepthNode, args)


if __name__ == "__main__":
    main()

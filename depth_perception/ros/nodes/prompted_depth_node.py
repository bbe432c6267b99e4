"""prompted_depth_node: dense metric depth from colour and a sparse metric prompt (LiDAR, radar,
the RGB-D sensor's own depth) with the MetricAnything prompted teacher.

Parameters (config/prompted_depth.yaml): ``checkpoint`` (our teacher directory or a
``teacher_*`` preset; default: the teacher shipped in the package's models/), ``prior`` (the
prompt-free engine giving the prior depth for PDSA/GMDR: ``lingbot``, ``lingbot:<checkpoint>``,
``ma_student:<checkpoint>``; empty: the checkpoint's own, else ``lingbot``), ``device``,
``precision``, ``max_input_side``, ``num_threads``, ``output_alignment`` (``none`` | ``global``:
the output refitted to the prompt by one scale and shift in disparity), plus those of every
completion node (see depth_perception.ros.completion_node), among them ``prompt_sources``
(``[lidar]`` in the config), ``max_prompt_age`` and ``calibration_file``.
"""

from __future__ import annotations

from depth_perception.engines.metric_anything import (
    MetricAnythingTeacherConfig,
    MetricAnythingTeacherEngine,
)
from depth_perception.ros.completion_node import DepthCompletionNode
from depth_perception.ros.spin import spin_node


class PromptedDepthNode(DepthCompletionNode):
    def __init__(self, **kwargs) -> None:
        super().__init__("prompted_depth_node", **kwargs)

    def make_engine(self) -> MetricAnythingTeacherEngine:
        declare = self.declare_parameter
        cfg = MetricAnythingTeacherConfig(
            checkpoint=str(declare("checkpoint", "").value),
            prior=str(declare("prior", "").value),
            device=str(declare("device", "auto").value),
            precision=str(declare("precision", "auto").value),
            max_input_side=int(declare("max_input_side", 0).value),
            num_threads=int(declare("num_threads", 0).value),
            output_alignment=str(declare("output_alignment", "global").value),
        )
        engine = MetricAnythingTeacherEngine(cfg)
        self.get_logger().info(
            f"MetricAnything teacher from {engine.checkpoint} on {engine.device} "
            f"({'bf16' if engine.use_bf16 else 'fp32'}), prior {engine.prior_spec}, "
            f"output alignment {cfg.output_alignment}"
        )
        return engine


def main(args: list[str] | None = None) -> None:
    spin_node(PromptedDepthNode, args)


if __name__ == "__main__":
    main()

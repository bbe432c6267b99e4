"""Ask a DepthLM vision-language model how far pixels of a colour camera's image are.

  ros2 launch depth_perception depth_query.launch.py namespace:=camera device:=cuda \
      rgb_topic:=color/image_raw camera_info_topic:=color/camera_info \
      checkpoint:=/models/depthlm_qwen3b

  ros2 service call /camera/depth_query depth_perception_msgs/srv/DepthQuery \
      "{pixels: [{u: 320.0, v: 240.0}], question: ''}"

Parameters live in config/depth_query.yaml (override with params_file:=...): the checkpoint
(a DepthLM model directory; required, none is shipped yet), device, precision, the distance
kind and the sparse-cloud mode (depthlm/points). `checkpoint`, `device` and `use_sim_time`
override the params file only when given on the command line (their default, empty, keeps the
file's value). The node takes colour + camera_info only; no depth topic.
"""

from depth_perception.ros.launch_description import node_launch_description


def generate_launch_description():
    return node_launch_description(
        "depth_query_node",
        "depth_query.yaml",
        topics=[
            ("rgb_topic", "rgb/image_rect_color", "colour image topic"),
            ("camera_info_topic", "rgb/camera_info", "camera_info topic of the colour camera"),
        ],
        overrides={
            "checkpoint": (
                "DepthLM model directory (Hugging Face files + depthlm.json); empty: the "
                "params file's value"
            ),
            "device": "auto|cpu|cuda|cuda:N; empty: the params file's value (auto if unset)",
        },
    )

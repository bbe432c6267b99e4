"""Metric depth from a colour camera alone with the MetricAnything student.

  ros2 launch depth_perception monocular_depth.launch.py namespace:=camera device:=cuda \
      rgb_topic:=color/image_raw camera_info_topic:=color/camera_info \
      checkpoint:=hf:yjh001/metricanything_student_depthmap/student_depthmap.pt

Parameters live in config/monocular_depth.yaml (override with params_file:=...): the checkpoint,
device, precision, the outputs. `checkpoint`, `device` and `use_sim_time` override the params
file only when given on the command line (their default, empty, keeps the file's value). The
node takes colour + camera_info only (camera_info's fx sets the metric scale); no depth topic.
"""

from depth_perception.ros.launch_description import node_launch_description


def generate_launch_description():
    return node_launch_description(
        "monocular_depth_node",
        "monocular_depth.yaml",
        topics=[
            ("rgb_topic", "rgb/image_rect_color", "colour image topic"),
            ("camera_info_topic", "rgb/camera_info", "camera_info topic of the colour camera"),
        ],
        overrides={
            "checkpoint": (
                "student directory, official student_depthmap.pt or hf:<repo>/<file>; empty: "
                "the params file's value (the shipped student if unset)"
            ),
            "device": "auto|cpu|cuda|cuda:N; empty: the params file's value (auto if unset)",
        },
    )

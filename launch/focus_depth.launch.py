"""Target-focused metric depth (FocusDepth) beside a camera driver and a detector.

  ros2 launch depth_perception focus_depth.launch.py namespace:=camera device:=cuda \
      rgb_topic:=color/image_raw camera_info_topic:=color/camera_info \
      depth_topic:=aligned_depth_to_color/image_raw targets_topic:=/detector/targets

Parameters live in config/focus_depth.yaml (override with params_file:=...): the checkpoint,
device, the metric fit, max_target_age, the outputs. `checkpoint`, `device` and `use_sim_time`
override the params file only when given on the command line (their default, empty, keeps the
file's value). `depth_topic` is the metric reference: the sensor's registered depth, or a
completed depth (launch/grasp_perception.launch.py wires rgbd_completion_node's).
"""

from depth_perception.ros.launch_description import node_launch_description


def generate_launch_description():
    return node_launch_description(
        "focus_depth_node",
        "focus_depth.yaml",
        topics=[
            ("rgb_topic", "rgb/image_rect_color", "colour image topic"),
            (
                "depth_topic",
                "depth_registered/image_rect",
                "metric reference depth registered to the colour camera (sensor or completed)",
            ),
            ("camera_info_topic", "rgb/camera_info", "camera_info topic of the colour camera"),
            ("targets_topic", "targets", "depth_perception_msgs/TargetPromptArray topic"),
        ],
        overrides={
            "checkpoint": (
                "FocusDepth directory; empty: the params file's value (the shipped model if unset)"
            ),
            "device": "auto|cpu|cuda|cuda:N; empty: the params file's value (auto if unset)",
        },
    )

"""LingBot-Depth RGB-D completion beside a camera driver.

  ros2 launch depth_perception rgbd_completion.launch.py namespace:=camera device:=cuda \
      rgb_topic:=color/image_raw depth_topic:=aligned_depth_to_color/image_raw \
      camera_info_topic:=color/camera_info

Parameters (checkpoint, token budget, outputs, ...) live in config/rgbd_completion.yaml; pass
your own file with params_file:=... `device` and `use_sim_time` override the file only when given
on the command line (their default, empty, keeps the file's value).
"""

from depth_perception.ros.launch_description import node_launch_description


def generate_launch_description():
    return node_launch_description(
        "rgbd_completion_node",
        "rgbd_completion.yaml",
        topics=[
            ("rgb_topic", "rgb/image_rect_color", "colour image topic"),
            (
                "depth_topic",
                "depth_registered/image_rect",
                "depth image topic, registered to the colour camera",
            ),
            ("camera_info_topic", "rgb/camera_info", "camera_info topic of the colour camera"),
        ],
        overrides={
            "device": "auto|cpu|cuda|cuda:N; empty: the params file's value (auto if unset)",
        },
    )

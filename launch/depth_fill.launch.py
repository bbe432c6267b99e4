"""Classical depth hole filling beside a camera driver.

  ros2 launch depth_perception depth_fill.launch.py namespace:=camera \
      depth_topic:=aligned_depth_to_color/image_raw rgb_topic:=color/image_raw \
      camera_info_topic:=color/camera_info

Parameters live in config/depth_fill.yaml (override with params_file:=...). `use_sim_time`
overrides the file only when given on the command line (its default, empty, keeps the file's).
"""

from depth_perception.ros.launch_description import node_launch_description


def generate_launch_description():
    return node_launch_description(
        "depth_fill_node",
        "depth_fill.yaml",
        topics=[
            ("rgb_topic", "rgb/image_rect_color", "colour image topic"),
            (
                "depth_topic",
                "depth_registered/image_rect",
                "depth image topic (sensor depth or projected sparse depth)",
            ),
            ("camera_info_topic", "rgb/camera_info", "camera_info topic of the colour camera"),
        ],
    )

"""LingBot-Depth RGB-D completion beside a camera driver.

  ros2 launch depth_perception rgbd_completion.launch.py namespace:=camera device:=cuda \
      rgb_topic:=color/image_raw depth_topic:=aligned_depth_to_color/image_raw \
      camera_info_topic:=color/camera_info

Parameters (checkpoint, token budget, outputs, ...) live in config/rgbd_completion.yaml; pass
your own file with params_file:=...
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    arg = LaunchConfiguration
    return LaunchDescription(
        [
            DeclareLaunchArgument("namespace", default_value="camera"),
            DeclareLaunchArgument(
                "params_file",
                default_value=PathJoinSubstitution(
                    [FindPackageShare("depth_perception"), "config", "rgbd_completion.yaml"]
                ),
            ),
            DeclareLaunchArgument("use_sim_time", default_value="false"),
            DeclareLaunchArgument("device", default_value="auto", description="auto|cpu|cuda"),
            DeclareLaunchArgument("rgb_topic", default_value="rgb/image_rect_color"),
            DeclareLaunchArgument("depth_topic", default_value="depth_registered/image_rect"),
            DeclareLaunchArgument("camera_info_topic", default_value="rgb/camera_info"),
            Node(
                package="depth_perception",
                executable="rgbd_completion_node",
                namespace=arg("namespace"),
                parameters=[
                    arg("params_file"),
                    {"use_sim_time": arg("use_sim_time"), "device": arg("device")},
                ],
                remappings=[
                    ("rgb/image_rect_color", arg("rgb_topic")),
                    ("depth_registered/image_rect", arg("depth_topic")),
                    ("rgb/camera_info", arg("camera_info_topic")),
                ],
                output="screen",
            ),
        ]
    )

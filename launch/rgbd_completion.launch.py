"""LingBot-Depth RGB-D completion beside a camera driver.

  ros2 launch depth_perception rgbd_completion.launch.py namespace:=camera device:=cuda \
      rgb_topic:=color/image_raw depth_topic:=aligned_depth_to_color/image_raw \
      camera_info_topic:=color/camera_info

Parameters (checkpoint, token budget, outputs, ...) live in config/rgbd_completion.yaml; pass
your own file with params_file:=... `device` and `use_sim_time` override the file only when given
on the command line (their default, empty, keeps the file's value).
"""

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

# Node parameters that launch arguments may override; empty = not given = keep the params file.
OVERRIDES = ("use_sim_time", "device")


def _given(context: LaunchContext, names: tuple[str, ...]) -> dict[str, LaunchConfiguration]:
    """The named launch arguments the user set. Values stay substitutions so launch_ros parses
    them as YAML (use_sim_time:=true becomes a bool, as the node expects)."""
    arguments = {name: LaunchConfiguration(name) for name in names}
    return {name: value for name, value in arguments.items() if value.perform(context)}


def _node(context: LaunchContext) -> list[Node]:
    arg = LaunchConfiguration
    overrides = _given(context, OVERRIDES)
    return [
        Node(
            package="depth_perception",
            executable="rgbd_completion_node",
            namespace=arg("namespace"),
            # the file first, then only what the command line set (nothing: the file alone)
            parameters=[arg("params_file"), overrides] if overrides else [arg("params_file")],
            remappings=[
                ("rgb/image_rect_color", arg("rgb_topic")),
                ("depth_registered/image_rect", arg("depth_topic")),
                ("rgb/camera_info", arg("camera_info_topic")),
            ],
            output="screen",
        )
    ]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "namespace",
                default_value="camera",
                description="namespace of the node and its topics",
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value=PathJoinSubstitution(
                    [FindPackageShare("depth_perception"), "config", "rgbd_completion.yaml"]
                ),
                description="YAML file with the node's parameters",
            ),
            DeclareLaunchArgument(
                "use_sim_time",
                default_value="",
                description="true|false; empty: the params file's value (false if unset)",
            ),
            DeclareLaunchArgument(
                "device",
                default_value="",
                description="auto|cpu|cuda|cuda:N; empty: the params file's value (auto if unset)",
            ),
            DeclareLaunchArgument(
                "rgb_topic", default_value="rgb/image_rect_color", description="colour image topic"
            ),
            DeclareLaunchArgument(
                "depth_topic",
                default_value="depth_registered/image_rect",
                description="depth image topic, registered to the colour camera",
            ),
            DeclareLaunchArgument(
                "camera_info_topic",
                default_value="rgb/camera_info",
                description="camera_info topic of the colour camera",
            ),
            OpaqueFunction(function=_node),
        ]
    )

"""Depth registration into the colour camera beside a camera driver (depth_image_proc's register).

  ros2 launch depth_perception depth_register.launch.py namespace:=camera \
      depth_topic:=depth/image_rect_raw depth_info_topic:=depth/camera_info \
      colour_info_topic:=color/camera_info calibration_file:=/robot/my_rig.yaml

Publishes depth_registered/image_rect and depth_registered/camera_info in the namespace.
Parameters (the extrinsic's source, QoS, ...) live in config/depth_register.yaml; pass your own
file with params_file:=... `calibration_file` and `use_sim_time` override the file only when
given on the command line (their default, empty, keeps the file's value).
"""

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

# Node parameters that launch arguments may override; empty = not given = keep the params file.
OVERRIDES = ("use_sim_time", "calibration_file")


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
            executable="depth_register_node",
            namespace=arg("namespace"),
            # the file first, then only what the command line set (nothing: the file alone)
            parameters=[arg("params_file"), overrides] if overrides else [arg("params_file")],
            remappings=[
                ("depth/image_rect", arg("depth_topic")),
                ("depth/camera_info", arg("depth_info_topic")),
                ("rgb/camera_info", arg("colour_info_topic")),
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
                    [FindPackageShare("depth_perception"), "config", "depth_register.yaml"]
                ),
                description="YAML file with the node's parameters",
            ),
            DeclareLaunchArgument(
                "use_sim_time",
                default_value="",
                description="true|false; empty: the params file's value (false if unset)",
            ),
            DeclareLaunchArgument(
                "calibration_file",
                default_value="",
                description="calibration YAML with the depth->colour extrinsic; empty: the "
                "params file's calibration_file / colour_T_depth",
            ),
            DeclareLaunchArgument(
                "depth_topic",
                default_value="depth/image_rect",
                description="depth image of the depth camera (16UC1 / mono16 mm or 32FC1 m)",
            ),
            DeclareLaunchArgument(
                "depth_info_topic",
                default_value="depth/camera_info",
                description="camera_info topic of the depth camera",
            ),
            DeclareLaunchArgument(
                "colour_info_topic",
                default_value="rgb/camera_info",
                description="camera_info topic of the colour camera",
            ),
            OpaqueFunction(function=_node),
        ]
    )

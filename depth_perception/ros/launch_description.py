"""The one way this package's launch files start a node (`launch/*.launch.py` call it).

Every launch file starts one node of this package beside a camera driver, with

- `namespace` (default `camera`): the node's namespace, so its relative topics sit beside the
  camera's;
- `params_file` (default: the package's `config/<config file>`): the node's parameters;
- `use_sim_time` and the node's own overrides (e.g. `device`): they override the params file only
  when given on the command line; their default, empty, keeps the file's value;
- one argument per input topic, remapping the node's topic name; its default is the node's own
  topic name, so without arguments nothing is remapped.

A launch file is then its usage docstring and one call, e.g.::

    def generate_launch_description():
        return node_launch_description(
            "depth_fill_node",
            "depth_fill.yaml",
            topics=[("rgb_topic", "rgb/image_rect_color", "colour image topic"), ...],
            overrides={"device": "auto|cpu|cuda|cuda:N; empty: the params file's value"},
        )

Only `launch` / `launch_ros` are imported (a ROS install has them; `ros2 launch` imports this
module from the installed package).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "depth_perception"
#: The override every launch file has, before the node's own.
USE_SIM_TIME = {"use_sim_time": "true|false; empty: the params file's value (false if unset)"}


def node_launch_description(
    executable: str,
    config_file: str,
    topics: Sequence[tuple[str, str, str]],
    overrides: Mapping[str, str] | None = None,
) -> LaunchDescription:
    """The launch description that starts ``executable`` with ``config/<config_file>``.

    ``topics``: (launch argument, the node's topic name, description) per remappable topic.
    ``overrides``: node parameter name -> description of the launch argument of the same name
    that overrides it only when given (``use_sim_time`` is always one, first)."""
    overrides = {**USE_SIM_TIME, **(overrides or {})}

    def node(context: LaunchContext) -> list[Node]:
        # Values stay substitutions so launch_ros parses them as YAML (use_sim_time:=true
        # becomes a bool, as the node expects); empty = not given = keep the params file's.
        arguments = {name: LaunchConfiguration(name) for name in overrides}
        given = {name: value for name, value in arguments.items() if value.perform(context)}
        params_file = LaunchConfiguration("params_file")
        return [
            Node(
                package=PACKAGE,
                executable=executable,
                namespace=LaunchConfiguration("namespace"),
                # the file first, then only what the command line set (nothing: the file alone)
                parameters=[params_file, given] if given else [params_file],
                remappings=[
                    (node_topic, LaunchConfiguration(argument))
                    for argument, node_topic, _ in topics
                ],
                output="screen",
            )
        ]

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
                    [FindPackageShare(PACKAGE), "config", config_file]
                ),
                description="YAML file with the node's parameters",
            ),
            *(
                DeclareLaunchArgument(name, default_value="", description=description)
                for name, description in overrides.items()
            ),
            *(
                DeclareLaunchArgument(argument, default_value=node_topic, description=description)
                for argument, node_topic, description in topics
            ),
            OpaqueFunction(function=node),
        ]
    )

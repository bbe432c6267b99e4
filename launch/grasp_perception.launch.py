"""Grasp perception: camera -> rgbd_completion_node -> focus_depth_node -> target clouds.

  ros2 launch depth_perception grasp_perception.launch.py namespace:=camera \
      rgb_topic:=color/image_raw depth_topic:=aligned_depth_to_color/image_raw \
      camera_info_topic:=color/camera_info targets_topic:=/detector/targets \
      completion_device:=cuda focus_device:=cuda

rgbd_completion_node (LingBot-Depth; namespace <namespace>/completion, parameters from
completion_params_file, default config/rgbd_completion.yaml) completes the camera's depth.
focus_depth_node (FocusDepth; namespace <namespace>, parameters from focus_params_file, default
config/focus_depth.yaml) takes the colour image, camera_info, the targets and, as its metric
reference, the completed depth (<namespace>/completion/depth_completed/image), and publishes
<namespace>/targets/geometry, targets/cloud, targets/mask, targets/markers and
<namespace>/depth_completed/* (the completed depth with each target refined).

Topic arguments relative to <namespace> (the defaults) or absolute. `use_sim_time`,
`completion_device`, `focus_device` and `focus_checkpoint` override the params files only when
given on the command line (their default, empty, keeps the files' values).
"""

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "depth_perception"
#: The completion node's sub-namespace (its depth_completed/* must not meet the focus node's).
COMPLETION_NS = "completion"
#: (launch argument, node topic, description) of the camera and targets topics.
TOPICS = [
    ("rgb_topic", "rgb/image_rect_color", "colour image topic"),
    ("depth_topic", "depth_registered/image_rect", "depth topic, registered to the colour camera"),
    ("camera_info_topic", "rgb/camera_info", "camera_info topic of the colour camera"),
    ("targets_topic", "targets", "depth_perception_msgs/TargetPromptArray topic"),
]
#: launch argument -> (node, its parameter, description): given only when set.
OVERRIDES = {
    "use_sim_time": ("both", "use_sim_time", "true|false; empty: the params files' values"),
    "completion_device": (
        "completion",
        "device",
        "rgbd_completion_node's auto|cpu|cuda|cuda:N; empty: its params file's value",
    ),
    "focus_device": (
        "focus",
        "device",
        "focus_depth_node's auto|cpu|cuda|cuda:N; empty: its params file's value",
    ),
    "focus_checkpoint": (
        "focus",
        "checkpoint",
        "FocusDepth directory; empty: the params file's value (the shipped model if unset)",
    ),
}


def _nodes(context: LaunchContext) -> list[Node]:
    namespace = LaunchConfiguration("namespace").perform(context).strip("/")

    def on_camera(argument: str) -> str:
        """A topic argument resolved against the camera's namespace (for the node below it)."""
        topic = LaunchConfiguration(argument).perform(context)
        return topic if topic.startswith("/") else "/" + "/".join(filter(None, (namespace, topic)))

    def parameters(node: str, params_file: str) -> list:
        # Substitutions, not strings: launch_ros parses them as YAML (use_sim_time:=true -> bool).
        given = {
            param: LaunchConfiguration(argument)
            for argument, (which, param, _) in OVERRIDES.items()
            if which in (node, "both") and LaunchConfiguration(argument).perform(context)
        }
        file = LaunchConfiguration(params_file)
        return [file, given] if given else [file]

    completion = Node(
        package=PACKAGE,
        executable="rgbd_completion_node",
        namespace="/" + "/".join(filter(None, (namespace, COMPLETION_NS))),
        parameters=parameters("completion", "completion_params_file"),
        remappings=[(topic, on_camera(argument)) for argument, topic, _ in TOPICS[:3]],
        output="screen",
    )
    focus = Node(
        package=PACKAGE,
        executable="focus_depth_node",
        namespace=LaunchConfiguration("namespace"),
        parameters=parameters("focus", "focus_params_file"),
        remappings=[
            ("rgb/image_rect_color", LaunchConfiguration("rgb_topic")),
            ("rgb/camera_info", LaunchConfiguration("camera_info_topic")),
            ("targets", LaunchConfiguration("targets_topic")),
            # the reference: the completed depth, relative to this node's namespace
            ("depth_registered/image_rect", f"{COMPLETION_NS}/depth_completed/image"),
        ],
        output="screen",
    )
    return [completion, focus]


def _config(name: str) -> PathJoinSubstitution:
    return PathJoinSubstitution([FindPackageShare(PACKAGE), "config", name])


def generate_launch_description():
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "namespace", default_value="camera", description="namespace of the camera topics"
            ),
            DeclareLaunchArgument(
                "completion_params_file",
                default_value=_config("rgbd_completion.yaml"),
                description="YAML file with rgbd_completion_node's parameters",
            ),
            DeclareLaunchArgument(
                "focus_params_file",
                default_value=_config("focus_depth.yaml"),
                description="YAML file with focus_depth_node's parameters",
            ),
            *(
                DeclareLaunchArgument(name, default_value="", description=description)
                for name, (_, _, description) in OVERRIDES.items()
            ),
            *(
                DeclareLaunchArgument(argument, default_value=topic, description=description)
                for argument, topic, description in TOPICS
            ),
            OpaqueFunction(function=_nodes),
        ]
    )

"""launch/grasp_perception.launch.py: camera -> rgbd_completion_node -> focus_depth_node, run
against the launch API stand-ins of test_launch_files.py (docstring, argument descriptions and
the launch API are checked there for every file): real executables and configs, the completed
depth wired as the focus node's reference, topic arguments, overrides only when given."""

from __future__ import annotations

from pathlib import Path

import yaml
from test_launch_files import _launch, _LaunchConfiguration, _setup_py_nodes, config_file_of

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch" / "grasp_perception.launch.py"


def test_starts_completion_then_focus_with_their_configs(monkeypatch):
    launched = _launch(LAUNCH, monkeypatch)
    completion, focus = (n.kwargs for n in launched.nodes)
    assert completion["executable"] == "rgbd_completion_node"
    assert focus["executable"] == "focus_depth_node"
    for node, argument, config in (
        (completion, "completion_params_file", "rgbd_completion.yaml"),
        (focus, "focus_params_file", "focus_depth.yaml"),
    ):
        assert node["package"] == "depth_perception" and node["output"] == "screen"
        assert node["executable"] in _setup_py_nodes()
        assert config_file_of(launched, argument) == ROOT / "config" / config
        assert "ros__parameters" in yaml.safe_load((ROOT / "config" / config).read_text())["/**"]
        # nothing overridden: the params file alone
        assert node["parameters"] == [_LaunchConfiguration(argument)]
    assert launched.configurations <= set(launched.arguments)


def test_the_completed_depth_is_the_focus_nodes_reference(monkeypatch):
    launched = _launch(LAUNCH, monkeypatch)
    completion, focus = (n.kwargs for n in launched.nodes)
    # The completion node sits below the camera namespace (its depth_completed/* and
    # depth_query do not meet the focus node's); its inputs are the camera's topics.
    assert completion["namespace"] == "/camera/completion"
    assert completion["remappings"] == [
        ("rgb/image_rect_color", "/camera/rgb/image_rect_color"),
        ("depth_registered/image_rect", "/camera/depth_registered/image_rect"),
        ("rgb/camera_info", "/camera/rgb/camera_info"),
    ]
    assert focus["namespace"] == _LaunchConfiguration("namespace")
    assert dict(focus["remappings"]) == {
        "rgb/image_rect_color": _LaunchConfiguration("rgb_topic"),
        "rgb/camera_info": _LaunchConfiguration("camera_info_topic"),
        "targets": _LaunchConfiguration("targets_topic"),
        # relative to /camera: /camera/completion/depth_completed/image
        "depth_registered/image_rect": "completion/depth_completed/image",
    }
    for argument, topic in (
        ("rgb_topic", "rgb/image_rect_color"),
        ("camera_info_topic", "rgb/camera_info"),
        ("targets_topic", "targets"),
        ("depth_topic", "depth_registered/image_rect"),
    ):
        assert launched.default(argument) == topic


def test_topic_arguments_relative_to_the_namespace_or_absolute(monkeypatch):
    launched = _launch(
        LAUNCH,
        monkeypatch,
        namespace="/wrist_cam",
        rgb_topic="color/image_raw",
        depth_topic="/driver/aligned_depth",
        targets_topic="/detector/targets",
    )
    completion, focus = (n.kwargs for n in launched.nodes)
    assert completion["namespace"] == "/wrist_cam/completion"
    assert dict(completion["remappings"]) == {
        "rgb/image_rect_color": "/wrist_cam/color/image_raw",
        "depth_registered/image_rect": "/driver/aligned_depth",
        "rgb/camera_info": "/wrist_cam/rgb/camera_info",
    }
    assert dict(focus["remappings"])["targets"] == _LaunchConfiguration("targets_topic")


def test_devices_and_checkpoint_override_only_their_node(monkeypatch):
    launched = _launch(
        LAUNCH, monkeypatch, completion_device="cuda:0", focus_device="cuda:1", use_sim_time="true"
    )
    completion, focus = (n.kwargs for n in launched.nodes)
    assert completion["parameters"][1] == {
        "use_sim_time": _LaunchConfiguration("use_sim_time"),
        "device": _LaunchConfiguration("completion_device"),
    }
    assert focus["parameters"][1] == {
        "use_sim_time": _LaunchConfiguration("use_sim_time"),
        "device": _LaunchConfiguration("focus_device"),
    }
    launched = _launch(LAUNCH, monkeypatch, focus_checkpoint="/models/fd")
    completion, focus = (n.kwargs for n in launched.nodes)
    assert completion["parameters"] == [_LaunchConfiguration("completion_params_file")]
    assert focus["parameters"][1] == {"checkpoint": _LaunchConfiguration("focus_checkpoint")}

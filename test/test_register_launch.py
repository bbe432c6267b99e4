"""launch/depth_register.launch.py: what the registration node gets from `ros2 launch`.

The checks every launch file gets (real executables, configs, argument descriptions, the launch
API, params_file / use_sim_time, topic defaults) run in test_launch_files.py; this adds the
registration node's topic remappings and its calibration_file override, run against the same
launch API stand-ins.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from test_launch_files import _launch, _LaunchConfiguration, config_file_of

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch" / "depth_register.launch.py"


def test_starts_the_register_node_with_its_config(monkeypatch):
    launched = _launch(LAUNCH, monkeypatch)
    assert launched.node.kwargs["executable"] == "depth_register_node"
    config = config_file_of(launched)
    assert config == ROOT / "config" / "depth_register.yaml"
    declared = set(yaml.safe_load(config.read_text())["/**"]["ros__parameters"])
    # the extrinsic's sources are in the file for users to fill in
    assert {"calibration_file", "depth_frame", "colour_frame", "camera_info_qos"} <= declared


def test_remappings_follow_the_topic_arguments(monkeypatch):
    node = _launch(LAUNCH, monkeypatch).node
    assert node.kwargs["remappings"] == [
        ("depth/image_rect", _LaunchConfiguration("depth_topic")),
        ("depth/camera_info", _LaunchConfiguration("depth_info_topic")),
        ("rgb/camera_info", _LaunchConfiguration("colour_info_topic")),
    ]
    assert node.kwargs["namespace"] == _LaunchConfiguration("namespace")


def test_topic_argument_defaults_are_the_node_topics(monkeypatch):
    # the defaults are the node's own topic names: without arguments nothing is remapped
    launched = _launch(LAUNCH, monkeypatch)
    assert launched.default("depth_topic") == "depth/image_rect"
    assert launched.default("depth_info_topic") == "depth/camera_info"
    assert launched.default("colour_info_topic") == "rgb/camera_info"
    assert launched.default("calibration_file") == ""


def test_calibration_file_overrides_the_params_file_only_when_given(monkeypatch):
    node = _launch(LAUNCH, monkeypatch, calibration_file="/robot/rig.yaml").node
    assert node.kwargs["parameters"] == [
        _LaunchConfiguration("params_file"),
        {"calibration_file": _LaunchConfiguration("calibration_file")},
    ]
    node = _launch(LAUNCH, monkeypatch).node
    assert node.kwargs["parameters"] == [_LaunchConfiguration("params_file")]

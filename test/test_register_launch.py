"""launch/depth_register.launch.py: what the registration node gets from `ros2 launch`.

The checks every launch file gets (real executables, configs, argument descriptions, the launch
API, params_file / use_sim_time) run in test_launch_files.py; this adds the registration node's
topic remappings and its calibration_file override, run against the same launch API stand-ins.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import yaml
from test_launch_files import _launch, _LaunchConfiguration, _stand_in_modules

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch" / "depth_register.launch.py"


def test_starts_the_register_node_with_its_config():
    text = LAUNCH.read_text()
    assert 'executable="depth_register_node"' in text
    assert '"config", "depth_register.yaml"' in text
    params = yaml.safe_load((ROOT / "config" / "depth_register.yaml").read_text())
    declared = set(params["/**"]["ros__parameters"])
    # the extrinsic's sources are in the file for users to fill in
    assert {"calibration_file", "depth_frame", "colour_frame", "camera_info_qos"} <= declared


def test_remappings_follow_the_topic_arguments(monkeypatch):
    node = _launch(LAUNCH, monkeypatch)
    assert node.kwargs["executable"] == "depth_register_node"
    assert node.kwargs["remappings"] == [
        ("depth/image_rect", _LaunchConfiguration("depth_topic")),
        ("depth/camera_info", _LaunchConfiguration("depth_info_topic")),
        ("rgb/camera_info", _LaunchConfiguration("colour_info_topic")),
    ]
    assert node.kwargs["namespace"] == _LaunchConfiguration("namespace")


def test_topic_argument_defaults_are_the_node_topics(monkeypatch):
    # the defaults are the node's own topic names: without arguments nothing is remapped
    for name, module in _stand_in_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("depth_register_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    defaults = {
        e.args[0]: e.kwargs["default_value"]
        for e in module.generate_launch_description().args[0]
        if type(e).__name__ == "DeclareLaunchArgument"
    }
    assert defaults["depth_topic"] == "depth/image_rect"
    assert defaults["depth_info_topic"] == "depth/camera_info"
    assert defaults["colour_info_topic"] == "rgb/camera_info"
    assert defaults["calibration_file"] == ""


def test_calibration_file_overrides_the_params_file_only_when_given(monkeypatch):
    node = _launch(LAUNCH, monkeypatch, calibration_file="/robot/rig.yaml")
    assert node.kwargs["parameters"] == [
        _LaunchConfiguration("params_file"),
        {"calibration_file": _LaunchConfiguration("calibration_file")},
    ]
    node = _launch(LAUNCH, monkeypatch)
    assert node.kwargs["parameters"] == [_LaunchConfiguration("params_file")]

"""Launch files stay consistent with the package: every executable, config and argument exists.

`launch`/`launch_ros` are not installable here, so the files are checked statically (AST) and run
against small stand-ins of the launch API names they import (signatures as in ros2/launch and
ros2/launch_ros); they are written exactly as a ROS 2 install runs them.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import types
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == name
    ]


def _kw(call: ast.Call, key: str):
    return next((k.value for k in call.keywords if k.arg == key), None)


def test_there_are_launch_files():
    assert LAUNCH_FILES


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_refers_to_real_executables_configs_and_arguments(path):
    tree = ast.parse(path.read_text())
    funcs = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert "generate_launch_description" in funcs
    setup_py = (ROOT / "setup.py").read_text()
    declared = {c.args[0].value for c in _calls(tree, "DeclareLaunchArgument")}
    used = {
        c.args[0].value
        for c in _calls(tree, "LaunchConfiguration") + _calls(tree, "arg")
        if c.args and isinstance(c.args[0], ast.Constant)
    }
    assert used <= declared, f"undeclared launch arguments: {used - declared}"
    assert {"namespace", "params_file", "use_sim_time"} <= declared
    nodes = _calls(tree, "Node")
    assert nodes
    for node in nodes:
        executable = _kw(node, "executable").value
        assert re.search(rf'"{executable}"\s*:', setup_py), f"{executable} not in setup.py"
    for const in ast.walk(tree):
        if isinstance(const, ast.Constant) and str(const.value).endswith(".yaml"):
            cfg = ROOT / "config" / const.value
            assert cfg.is_file()
            params = yaml.safe_load(cfg.read_text())
            assert "ros__parameters" in next(iter(params.values()))


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_every_launch_argument_has_a_description(path):
    # `ros2 launch -s` prints "no description given" for an argument without one
    for call in _calls(ast.parse(path.read_text()), "DeclareLaunchArgument"):
        description = _kw(call, "description")
        assert isinstance(description, ast.Constant) and description.value.strip(), (
            f"{path.name}: launch argument {call.args[0].value!r} has no description"
        )


# ---------------------------------------------------------------------------------------------
# Running the files: which parameters reach the node
# ---------------------------------------------------------------------------------------------

# The launch API the files may use, each name as the real package exports it.
REAL_API = {
    "launch": {"LaunchContext", "LaunchDescription"},
    "launch.actions": {"DeclareLaunchArgument", "OpaqueFunction"},
    "launch.substitutions": {"LaunchConfiguration", "PathJoinSubstitution"},
    "launch_ros.actions": {"Node"},
    "launch_ros.substitutions": {"FindPackageShare"},
}


class _Recorded:
    """Stand-in for a launch class: records its arguments (enough for these files)."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration(_Recorded):
    def perform(self, context) -> str:  # as launch: the value in the context, as a string
        return context.launch_configurations[self.args[0]]

    def __eq__(self, other) -> bool:
        return isinstance(other, _LaunchConfiguration) and self.args == other.args


class _Context:
    def __init__(self, launch_configurations: dict[str, str]):
        self.launch_configurations = launch_configurations


def _stand_in_modules() -> dict[str, types.ModuleType]:
    classes = {"LaunchConfiguration": _LaunchConfiguration, "LaunchContext": _Context}
    modules = {"launch_ros": types.ModuleType("launch_ros")}
    for module_name, names in REAL_API.items():
        module = modules.setdefault(module_name, types.ModuleType(module_name))
        for name in names:
            setattr(module, name, classes.get(name, type(name, (_Recorded,), {})))
    return modules


def _launch(path: Path, monkeypatch, **command_line: str) -> _Recorded:
    """The Node the file starts for `ros2 launch ... name:=value ...`."""
    for name, module in _stand_in_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entities = module.generate_launch_description().args[0]
    declared = {
        e.args[0]: e.kwargs["default_value"]
        for e in entities
        if type(e).__name__ == "DeclareLaunchArgument"
    }
    assert set(command_line) <= set(declared)
    context = _Context({**declared, **command_line})
    (opaque,) = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    (node,) = opaque.kwargs["function"](context)
    return node


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_files_import_only_the_real_launch_api(path):
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] in (
            "launch",
            "launch_ros",
        ):
            names = {alias.name for alias in node.names}
            assert names <= REAL_API.get(node.module, set()), f"{node.module}: {names}"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_params_file_alone_when_nothing_is_overridden(path, monkeypatch):
    node = _launch(path, monkeypatch, params_file="/robot/my_params.yaml")
    # only the user's file: its device / use_sim_time are not replaced by launch defaults
    assert node.kwargs["parameters"] == [_LaunchConfiguration("params_file")]


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_command_line_overrides_only_what_it_sets(path, monkeypatch):
    node = _launch(path, monkeypatch, params_file="/robot/my_params.yaml", use_sim_time="true")
    file, overrides = node.kwargs["parameters"]
    assert file == _LaunchConfiguration("params_file")
    # a substitution, not the string: launch_ros parses it as YAML, so the node gets a bool
    assert overrides == {"use_sim_time": _LaunchConfiguration("use_sim_time")}


def test_device_overrides_the_params_file_only_when_given(monkeypatch):
    path = ROOT / "launch" / "rgbd_completion.launch.py"
    node = _launch(path, monkeypatch, device="cuda")
    assert node.kwargs["parameters"][1] == {"device": _LaunchConfiguration("device")}
    node = _launch(path, monkeypatch)
    assert node.kwargs["parameters"] == [_LaunchConfiguration("params_file")]

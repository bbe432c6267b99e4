"""Launch files stay consistent with the package: every executable, config and argument exists.

`launch`/`launch_ros` are not installable here, so each file is run against small stand-ins of
the launch API names it may use (constructor signatures as in ros2/launch and ros2/launch_ros),
and what it produces is checked: its DeclareLaunchArgument, OpaqueFunction and the Node that
function starts. The files build their description with
depth_perception/ros/launch_description.py; both are written exactly as a ROS 2 install runs them.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ALL_LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))
#: Files that start several nodes (a pipeline); checked in test_grasp_launch.py.
PIPELINE_FILES = [ROOT / "launch" / "grasp_perception.launch.py"]
#: Files that start one node of this package beside a camera (launch_description.py).
LAUNCH_FILES = [p for p in ALL_LAUNCH_FILES if p not in PIPELINE_FILES]
SHARED = "depth_perception.ros.launch_description"
SHARED_PATH = ROOT / "depth_perception" / "ros" / "launch_description.py"

# The launch API the files may use, each name as the real package exports it.
REAL_API = {
    "launch": {"LaunchContext", "LaunchDescription"},
    "launch.actions": {"DeclareLaunchArgument", "OpaqueFunction"},
    "launch.substitutions": {"LaunchConfiguration", "PathJoinSubstitution"},
    "launch_ros.actions": {"Node"},
    "launch_ros.substitutions": {"FindPackageShare"},
}


# Their constructors' signatures (ros2/launch, ros2/launch_ros; Node's **kwargs go to
# ExecuteProcess, e.g. output=): a call the real class would refuse fails here too.
class _Signatures:
    def LaunchDescription(initial_entities=None, *, deprecated_reason=None): ...

    def DeclareLaunchArgument(
        name, *, default_value=None, description=None, choices=None, **kwargs
    ): ...

    def OpaqueFunction(*, function, args=None, kwargs=None, **left_over_kwargs): ...

    def LaunchConfiguration(variable_name, *, default=None): ...

    def PathJoinSubstitution(substitutions): ...

    def Node(
        *,
        executable,
        package=None,
        name=None,
        namespace=None,
        exec_name=None,
        parameters=None,
        remappings=None,
        ros_arguments=None,
        arguments=None,
        **kwargs,
    ): ...

    def FindPackageShare(package): ...


class _Recorded:
    """Stand-in for a launch class: checks its arguments against the real signature and
    records them."""

    api = ""  # the real class's name

    def __init__(self, *args, **kwargs):
        inspect.signature(getattr(_Signatures, self.api)).bind(*args, **kwargs)
        self.args, self.kwargs = args, kwargs

    def __eq__(self, other) -> bool:
        return getattr(other, "api", None) == self.api and (self.args, self.kwargs) == (
            other.args,
            other.kwargs,
        )

    def __repr__(self) -> str:
        return f"{self.api}{self.args}{self.kwargs or ''}"


class _LaunchConfiguration(_Recorded):
    api = "LaunchConfiguration"
    created: list[str] | None = None  # per run (see _stand_in_modules): every name configured

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.created is not None:
            self.created.append(self.args[0])

    def perform(self, context) -> str:  # as launch: the value in the context, as a string
        return context.launch_configurations[self.args[0]]


class _Context:
    def __init__(self, launch_configurations: dict[str, str]):
        self.launch_configurations = launch_configurations


def _stand_in_modules(created: list[str]) -> dict[str, types.ModuleType]:
    classes = {
        "LaunchConfiguration": type(
            "LaunchConfiguration", (_LaunchConfiguration,), {"created": created}
        ),
        "LaunchContext": _Context,
    }
    modules = {"launch_ros": types.ModuleType("launch_ros")}
    for module_name, names in REAL_API.items():
        module = modules.setdefault(module_name, types.ModuleType(module_name))
        for name in names:
            setattr(module, name, classes.get(name) or type(name, (_Recorded,), {"api": name}))
    return modules


@dataclass
class Launched:
    """What `ros2 launch <file> name:=value ...` runs."""

    arguments: dict[str, _Recorded]  # name -> its DeclareLaunchArgument
    nodes: list[_Recorded]  # the Nodes the OpaqueFunction returns
    configurations: set[str]  # names of every LaunchConfiguration the file made

    @property
    def node(self) -> _Recorded:
        """The node of a file that starts one."""
        (node,) = self.nodes
        return node

    def default(self, name: str):
        return self.arguments[name].kwargs["default_value"]


def _launch(path: Path, monkeypatch, **command_line: str) -> Launched:
    """Run the launch file against the stand-ins, with these arguments given."""
    created: list[str] = []
    for name, module in _stand_in_modules(created).items():
        monkeypatch.setitem(sys.modules, name, module)
    # The shared module is imported afresh under these stand-ins (not bound to another run's
    # classes) and dropped again afterwards.
    sys.modules.pop(SHARED, None)
    try:
        spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        description = module.generate_launch_description()
    finally:
        sys.modules.pop(SHARED, None)
    assert description.api == "LaunchDescription"
    (entities,) = description.args
    declared = [e for e in entities if e.api == "DeclareLaunchArgument"]
    arguments = {e.args[0]: e for e in declared}
    assert len(arguments) == len(declared), "a launch argument declared twice"
    assert set(command_line) <= set(arguments)
    context = _Context({name: e.kwargs["default_value"] for name, e in arguments.items()})
    context.launch_configurations.update(command_line)
    (opaque,) = [e for e in entities if e.api == "OpaqueFunction"]
    assert len(entities) == len(declared) + 1
    nodes = opaque.kwargs["function"](context)
    assert nodes and all(node.api == "Node" for node in nodes)
    return Launched(arguments, list(nodes), set(created))


def _overrides(launched: Launched) -> list[str]:
    """The arguments that override a node parameter only when given (default: empty)."""
    return [name for name in launched.arguments if launched.default(name) == ""]


def _setup_py_nodes() -> set[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    (nodes,) = [
        n.value
        for n in tree.body
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "NODES"
    ]
    return {key.value for key in nodes.keys}


def config_file_of(launched: Launched, argument: str = "params_file") -> Path:
    """The package's config file the ``argument`` (a params file) defaults to."""
    (parts,) = launched.default(argument).args
    share, folder, name = parts
    assert share.api == "FindPackageShare" and share.args == ("depth_perception",)
    assert folder == "config"
    return ROOT / "config" / name


def test_there_are_launch_files():
    assert LAUNCH_FILES and all(p.is_file() for p in PIPELINE_FILES)


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_refers_to_real_executables_configs_and_arguments(path, monkeypatch):
    launched = _launch(path, monkeypatch)
    node = launched.node.kwargs
    assert node["package"] == "depth_perception"
    assert node["executable"] in _setup_py_nodes(), f"{node['executable']} not in setup.py"
    assert node["namespace"] == _LaunchConfiguration("namespace")
    assert node["output"] == "screen"
    params = yaml.safe_load(config_file_of(launched).read_text())
    assert "ros__parameters" in next(iter(params.values()))
    assert {"namespace", "params_file", "use_sim_time"} <= set(launched.arguments)
    # every override given too: the other branch configures no undeclared argument either
    given = _launch(path, monkeypatch, **dict.fromkeys(_overrides(launched), "x"))
    used = launched.configurations | given.configurations
    assert used <= set(launched.arguments), (
        f"undeclared launch arguments: {used - set(launched.arguments)}"
    )


@pytest.mark.parametrize("path", ALL_LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_documents_its_use(path):
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert f"ros2 launch depth_perception {path.name}" in docstring


@pytest.mark.parametrize("path", ALL_LAUNCH_FILES, ids=lambda p: p.name)
def test_every_launch_argument_has_a_description(path, monkeypatch):
    # `ros2 launch -s` prints "no description given" for an argument without one
    for name, argument in _launch(path, monkeypatch).arguments.items():
        description = argument.kwargs.get("description")
        assert isinstance(description, str) and description.strip(), (
            f"{path.name}: launch argument {name!r} has no description"
        )


@pytest.mark.parametrize("path", [*ALL_LAUNCH_FILES, SHARED_PATH], ids=lambda p: p.name)
def test_launch_files_import_only_the_real_launch_api(path):
    imported = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] in (
            "launch",
            "launch_ros",
        ):
            names = {alias.name for alias in node.names}
            assert names <= REAL_API.get(node.module, set()), f"{node.module}: {names}"
            imported |= names
        assert not isinstance(node, ast.Import), "import the launch API names, as REAL_API"
    if path == SHARED_PATH:
        assert imported == set().union(*REAL_API.values())


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_params_file_alone_when_nothing_is_overridden(path, monkeypatch):
    launched = _launch(path, monkeypatch, params_file="/robot/my_params.yaml")
    # only the user's file: its device / use_sim_time are not replaced by launch defaults
    assert launched.node.kwargs["parameters"] == [_LaunchConfiguration("params_file")]


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_command_line_overrides_only_what_it_sets(path, monkeypatch):
    launched = _launch(path, monkeypatch, params_file="/robot/my_params.yaml", use_sim_time="true")
    file, overrides = launched.node.kwargs["parameters"]
    assert file == _LaunchConfiguration("params_file")
    # a substitution, not the string: launch_ros parses it as YAML, so the node gets a bool
    assert overrides == {"use_sim_time": _LaunchConfiguration("use_sim_time")}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_topic_arguments_remap_the_node_topics_and_default_to_them(path, monkeypatch):
    launched = _launch(path, monkeypatch)
    remappings = launched.node.kwargs["remappings"]
    assert remappings
    for node_topic, value in remappings:
        (argument,) = value.args
        assert value == _LaunchConfiguration(argument)
        # without arguments nothing is remapped
        assert launched.default(argument) == node_topic
    assert len({topic for topic, _ in remappings}) == len(remappings)


def test_device_overrides_the_params_file_only_when_given(monkeypatch):
    path = ROOT / "launch" / "rgbd_completion.launch.py"
    launched = _launch(path, monkeypatch, device="cuda")
    assert launched.node.kwargs["parameters"][1] == {"device": _LaunchConfiguration("device")}
    launched = _launch(path, monkeypatch)
    assert launched.node.kwargs["parameters"] == [_LaunchConfiguration("params_file")]


def test_every_override_of_every_file_reaches_the_node_in_declaration_order(monkeypatch):
    for path in LAUNCH_FILES:
        names = _overrides(_launch(path, monkeypatch))
        assert names[0] == "use_sim_time"
        launched = _launch(path, monkeypatch, **dict.fromkeys(names, "x"))
        _, overrides = launched.node.kwargs["parameters"]
        assert overrides == {name: _LaunchConfiguration(name) for name in names}
        assert list(overrides) == names

"""Launch files stay consistent with the package: every executable, config and argument exists.

`launch`/`launch_ros` are not installable here, so the files are checked statically (AST); they
are written exactly as a ROS 2 install runs them.
"""

from __future__ import annotations

import ast
import re
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
    used = {c.args[0].value for c in _calls(tree, "LaunchConfiguration")}
    used |= {
        c.args[0].value
        for c in _calls(tree, "arg")
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

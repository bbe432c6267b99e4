"""The README's workspace build, the part that runs here: colcon builds the ament_python package
from a clone in `src/`, and the installed nodes, CLI, config, launch files and shipped model are
where `ros2 run` / `ros2 launch` look for them (the msg package comes from this environment;
`/opt/ros`, rosdep and real launch_ros are not available here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    if shutil.which("colcon") is None or not (REPO / ".git").exists():
        pytest.skip("needs colcon (the bootstrap installs it) and a git checkout to clone")
    ws = tmp_path_factory.mktemp("ros2_ws")
    subprocess.run(
        ["git", "clone", "-q", str(REPO), str(ws / "src" / "depth_perception")], check=True
    )
    build = subprocess.run(
        ["colcon", "build", "--base-paths", "src", "src/depth_perception/msg",
         "--packages-select", "depth_perception"],
        cwd=ws, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    return ws / "install" / "depth_perception"


def test_nodes_cli_and_share_files_are_installed_where_ros2_looks(workspace):
    lib = workspace / "lib" / "depth_perception"
    assert {p.name for p in lib.iterdir()} >= {
        "depth_fill_node", "rgbd_completion_node", "depth_register_node", "depth-perception"
    }  # fmt: skip
    share = workspace / "share" / "depth_perception"
    for rel in (
        "package.xml",
        "launch/rgbd_completion.launch.py",
        "launch/depth_fill.launch.py",
        "launch/depth_register.launch.py",
        "config/rgbd_completion.yaml",
        "config/depth_register.yaml",
        "config/depth_fill.yaml",
        "models/lingbot_depth_small/model.safetensors",
    ):
        assert (share / rel).is_file(), rel
    assert (workspace / "share/ament_index/resource_index/packages/depth_perception").is_file()
    site = workspace / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    installed = {p.name for p in (site / "site-packages").iterdir()}
    assert "depth_perception" in installed and "training" not in installed
    # the launch files' shared builder is part of the installed package
    assert (site / "site-packages/depth_perception/ros/launch_description.py").is_file()


def test_installed_package_finds_its_config_and_model_and_runs(workspace):
    site = next(workspace.glob("lib/python*/site-packages"))
    env = {
        **os.environ,
        "PYTHONPATH": f"{site}:{os.environ.get('PYTHONPATH', '')}",
        "AMENT_PREFIX_PATH": f"{workspace}:{os.environ.get('AMENT_PREFIX_PATH', '')}",
    }
    code = (
        "import depth_perception, depth_perception.paths as p; "
        "print(depth_perception.__file__); print(p.config_file('depth_fill.yaml')); "
        "print(p.default_model_path())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=workspace, capture_output=True, text=True
    ).stdout.split()  # cwd: not the checkout, whose depth_perception/ would come first
    assert len(out) == 3 and all(line.startswith(str(workspace)) for line in out), out
    cli = subprocess.run(
        [str(workspace / "lib/depth_perception/depth-perception"), "pipelines"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert cli.returncode == 0 and "lingbot_aligned" in cli.stdout, cli.stderr

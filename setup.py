"""ament_python package `depth_perception` (also pip-installable for development)."""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "depth_perception"

# One console entry point per node (``ros2 run depth_perception <name>``) plus the CLI.
NODES = {
    "depth_fill_node": "depth_perception.ros.nodes.depth_fill_node:main",
    "depth_query_node": "depth_perception.ros.nodes.depth_query_node:main",
    "depth_register_node": "depth_perception.ros.nodes.depth_register_node:main",
    "focus_depth_node": "depth_perception.ros.nodes.focus_depth_node:main",
    "monocular_depth_node": "depth_perception.ros.nodes.monocular_depth_node:main",
    "prompted_depth_node": "depth_perception.ros.nodes.prompted_depth_node:main",
    "rgbd_completion_node": "depth_perception.ros.nodes.rgbd_completion_node:main",
}

setup(
    name=PACKAGE,
    version="0.1.0",
    # training/ is the repo's training tool, run from the source tree (python -m training.train);
    # installed it would be a top-level package named `training`, clashing with any other one.
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/calibration", glob("calibration/*.yaml")),
        # the shipped default model(s): models/<name>/{config.json, model.safetensors}
        *[(f"share/{PACKAGE}/{d}", glob(f"{d}/*")) for d in glob("models/*") if Path(d).is_dir()],
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="depth_perception maintainers",
    maintainer_email="maintainers@depth-perception.dev",
    description="Dense metric depth for ROS 2 robots: learned completion, prompts, evaluation.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [f"{name} = {target}" for name, target in NODES.items()]
        + ["depth-perception = depth_perception.cli:main"],
    },
)

"""The package as a ROS 2 workspace installs it: declared dependencies match the imports, the
ML requirements are pinned once, and setup.py installs nothing but depth_perception."""

from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ET
from importlib.metadata import packages_distributions
from pathlib import Path

import setuptools

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "depth_perception"
# Import names whose rosdep key does not follow python3-<name> / python3-<name>-pip.
ROSDEP_ALIASES = {"cv2": "python3-opencv", "yaml": "python3-yaml"}
# package.xml dependencies no module of depth_perception/ imports, and why they are there.
NOT_IMPORTED = {
    "python3-pytest": "the tests",
}


def _imports(files: list[Path]) -> set[str]:
    """Top-level names of every absolute import (inside functions and try blocks too)."""
    names: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def third_party_imports() -> set[str]:
    files = sorted((ROOT / PACKAGE).rglob("*.py"))
    return _imports(files) - set(sys.stdlib_module_names) - {PACKAGE}


def package_xml_dependencies() -> set[str]:
    root = ET.parse(ROOT / "package.xml").getroot()
    tags = ("depend", "exec_depend", "build_depend", "test_depend")
    return {element.text.strip() for tag in tags for element in root.iter(tag)}


def requirement_names(path: Path) -> set[str]:
    """Distribution names pinned in a requirements file, normalised as PEP 503 does."""
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(_normalise(re.split(r"[=<>!~\[; ]", line)[0]))
    return names


def _normalise(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _rosdep_keys(module: str) -> set[str]:
    if module in ROSDEP_ALIASES:
        return {ROSDEP_ALIASES[module]}
    key = "python3-" + module.replace("_", "-")
    return {key, key + "-pip"}


def test_every_import_is_declared_in_package_xml_or_requirements_ml():
    declared = package_xml_dependencies()
    pinned = requirement_names(ROOT / "requirements-ml.txt")
    distributions = packages_distributions()  # import name -> installed distributions
    undeclared = []
    for module in sorted(third_party_imports()):
        in_package_xml = module in declared or bool(_rosdep_keys(module) & declared)
        in_requirements = any(_normalise(d) in pinned for d in distributions.get(module, ()))
        if not (in_package_xml or in_requirements):
            undeclared.append(module)
    assert not undeclared, f"imported by {PACKAGE}/ but declared nowhere: {undeclared}"


def test_package_xml_declares_nothing_unused():
    imported = third_party_imports()
    used_keys = {key for module in imported for key in _rosdep_keys(module)} | imported
    unused = package_xml_dependencies() - used_keys - set(NOT_IMPORTED)
    assert not unused, f"declared in package.xml but not imported by {PACKAGE}/: {unused}"


def test_requirements_txt_includes_the_ml_file_and_pins_once():
    lines = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert "-r requirements-ml.txt" in lines
    ml = requirement_names(ROOT / "requirements-ml.txt")
    rest = requirement_names(ROOT / "requirements.txt")
    assert not ml & rest, f"pinned twice: {ml & rest}"
    # workspace users get their ROS from /opt/ros: no ROS wheels or colcon in the ML file
    assert not {name for name in ml if name.startswith(("ros-", "colcon"))}


def test_bootstrap_stamp_covers_both_requirements_files():
    stamp = next(
        line
        for line in (ROOT / "scripts/bootstrap.sh").read_text().splitlines()
        if line.startswith("req_stamp=")
    )
    assert "requirements.txt" in stamp and "requirements-ml.txt" in stamp


def test_setup_py_installs_only_depth_perception(monkeypatch):
    captured: dict = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    monkeypatch.chdir(ROOT)  # setup.py globs its data files relative to the package root
    source = (ROOT / "setup.py").read_text()
    exec(compile(source, str(ROOT / "setup.py"), "exec"), {"__name__": "__main__"})
    top_level = {name.split(".")[0] for name in captured["packages"]}
    assert top_level == {PACKAGE}, f"setup.py installs top-level packages {top_level}"

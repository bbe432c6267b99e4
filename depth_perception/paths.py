"""Where the package's own files are: the installed share/ dir, or this checkout."""

from __future__ import annotations

from pathlib import Path

PACKAGE = "depth_perception"
REPO_ROOT = Path(__file__).resolve().parent.parent


def share_dir() -> Path:
    """share/depth_perception of a colcon install, else the source checkout."""
    try:
        from ament_index_python.packages import (
            PackageNotFoundError,
            get_package_share_directory,
        )

        try:
            share = Path(get_package_share_directory(PACKAGE))
            if (share / "config").is_dir():
                return share
        except PackageNotFoundError:
            pass
    except ImportError:
        pass
    return REPO_ROOT


def config_file(name: str) -> Path:
    path = share_dir() / "config" / name
    if not path.is_file():
        raise FileNotFoundError(f"no config file {name!r} in {path.parent}")
    return path


DEFAULT_MODEL = "lingbot_depth_small"


def default_model_path() -> Path:
    """The small LingBot-Depth model shipped with the package (trained by training/)."""
    return share_dir() / "models" / DEFAULT_MODEL

"""Real RGB-D captures stored as plain image files, one directory per frame.

Layout (the LingBot-Depth example format)::

    root/
      capture_0/
        rgb.png | rgb.jpg   8-bit colour, as OpenCV reads it (BGR on disk order)
        raw_depth.png       16-bit depth in millimetres, 0 = no measurement
        intrinsics.txt      3x3 pinhole K in pixels, one row per line
      capture_1/
        ...

:func:`read_image_folder` turns every capture into an :class:`RGBDFrame` (RGB uint8, depth in
float32 metres with NaN holes); :func:`find_real_captures` locates the shared captures that
come with this project.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from depth_perception.core.camera import Intrinsics
from depth_perception.core.depth import depth_from_mm
from depth_perception.io.frames import RGBDFrame

#: Environment variable that points at a captures directory (overrides the search).
REAL_RGBD_ENV = "DEPTH_PERCEPTION_REAL_RGBD"
#: frame_id given to the captures: the depth is registered to the colour camera.
CAPTURE_FRAME_ID = "camera_color_optical_frame"
RGB_NAMES = ("rgb.png", "rgb.jpg", "rgb.jpeg")
DEPTH_NAME = "raw_depth.png"
INTRINSICS_NAME = "intrinsics.txt"

# The repository root (this file is depth_perception/io/image_folder.py).
_REPO_ROOT = Path(__file__).resolve().parents[2]


def _rgb_path(capture: Path) -> Path | None:
    return next((capture / n for n in RGB_NAMES if (capture / n).is_file()), None)


def is_capture_dir(path: Path) -> bool:
    """True if ``path`` holds a colour image, raw_depth.png and intrinsics.txt."""
    path = Path(path)
    return (
        _rgb_path(path) is not None
        and (path / DEPTH_NAME).is_file()
        and (path / INTRINSICS_NAME).is_file()
    )


def capture_dirs(root: str | Path) -> list[Path]:
    """Capture directories directly under ``root``, sorted by name."""
    root = Path(root)
    return sorted((p for p in root.iterdir() if p.is_dir() and is_capture_dir(p)), key=_natural)


def _natural(p: Path) -> tuple:
    """Sort key that puts capture_2 before capture_10 (plain sort would not)."""
    stem, _, num = p.name.rpartition("_")
    return (stem, int(num), "") if num.isdigit() else (p.name, -1, p.name)


def read_intrinsics_txt(path: str | Path) -> np.ndarray:
    """A 3x3 K matrix from whitespace-separated text (rows on lines, as numpy.savetxt writes)."""
    K = np.loadtxt(path, dtype=np.float64)
    if K.size != 9:
        raise ValueError(f"{path}: expected 9 numbers (a 3x3 K), got {K.size}")
    K = K.reshape(3, 3)
    if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0.0, 0.0, 1.0]):
        raise ValueError(f"{path}: not a pinhole camera matrix:\n{K}")
    return K


def read_capture(
    capture: str | Path, stamp_ns: int = 0, frame_id: str = CAPTURE_FRAME_ID
) -> RGBDFrame:
    """One capture directory -> :class:`RGBDFrame` (``gt_depth`` None: there is no ground truth)."""
    capture = Path(capture)
    rgb_path = _rgb_path(capture)
    if rgb_path is None:
        raise FileNotFoundError(f"{capture}: no {' / '.join(RGB_NAMES)}")
    bgr = cv2.imread(str(rgb_path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"could not read {rgb_path}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    # IMREAD_UNCHANGED keeps the 16-bit values; the default flag would squash them to 8 bit.
    raw = cv2.imread(str(capture / DEPTH_NAME), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise OSError(f"could not read {capture / DEPTH_NAME}")
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise ValueError(f"{capture / DEPTH_NAME}: expected 16-bit single channel, got {raw.dtype}")
    if raw.shape != rgb.shape[:2]:
        raise ValueError(f"{capture}: rgb {rgb.shape[:2]} and depth {raw.shape} differ in size")
    K = read_intrinsics_txt(capture / INTRINSICS_NAME)
    h, w = raw.shape
    intr = Intrinsics.from_K(K, width=w, height=h, frame_id=frame_id)
    return RGBDFrame(
        stamp_ns=int(stamp_ns),
        rgb=rgb,
        depth=depth_from_mm(raw),
        intrinsics=intr,
        extra={"name": capture.name, "source": str(capture), "rgb_file": rgb_path.name},
    )


def read_image_folder(
    root: str | Path,
    start_ns: int = 1_000_000_000,
    period_ns: int = 1_000_000_000,
    frame_id: str = CAPTURE_FRAME_ID,
) -> list[RGBDFrame]:
    """Every capture under ``root`` (sorted by name) as frames stamped ``period_ns`` apart.

    The captures are unrelated stills, so the stamps are synthetic: they only need to be
    distinct and increasing for the frames to go through a bag or a synchronizer. The first
    stamp is 1 s rather than 0 because ROS treats time 0 as "unset".
    """
    dirs = capture_dirs(root)
    if not dirs:
        raise FileNotFoundError(f"no capture directories under {root}")
    return [
        read_capture(d, stamp_ns=start_ns + i * period_ns, frame_id=frame_id)
        for i, d in enumerate(dirs)
    ]


def find_real_captures() -> Path | None:
    """The shared real RGB-D captures directory, or None if it is not on this machine.

    ``$DEPTH_PERCEPTION_REAL_RGBD`` wins when set (even if it does not exist: then None, so a
    wrong override is not silently replaced). Otherwise ``shared/data/real_rgbd`` is looked up
    inside the repository and beside it (a checkout next to the shared data directory).
    """
    override = os.environ.get(REAL_RGBD_ENV)
    if override:
        candidates = [Path(override).expanduser()]
    else:
        rel = Path("shared") / "data" / "real_rgbd"
        candidates = [_REPO_ROOT / rel, _REPO_ROOT.parent / rel]
    for path in candidates:
        if path.is_dir() and capture_dirs(path):
            return path.resolve()
    return None

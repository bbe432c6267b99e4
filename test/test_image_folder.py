"""Real RGB-D captures on disk: decoding, locating the shared data and recording them to a bag."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from depth_perception.io.bag import write_frames_bag
from depth_perception.io.image_folder import (
    REAL_RGBD_ENV,
    capture_dirs,
    find_real_captures,
    read_capture,
    read_image_folder,
)
from depth_perception.io.recording import read_rgbd_frames

REAL = find_real_captures()
needs_real = pytest.mark.skipif(REAL is None, reason="shared real RGB-D captures not found")

# K of the two cameras, typed from capture_N/intrinsics.txt (0 and 2 share one, 1 and 3 another).
K_A = (460.139587, 460.199005, 319.656128, 237.396271)
K_B = (461.2757263183594, 461.51947021484375, 324.9846496582031, 241.5243377685547)


def _make_capture(root: Path, name: str, depth_mm: np.ndarray, ext: str = "png") -> Path:
    d = root / name
    d.mkdir(parents=True)
    h, w = depth_mm.shape
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = 200  # red in RGB order
    rgb[..., 2] = np.arange(w, dtype=np.uint8)[None, :]  # blue ramp
    assert cv2.imwrite(str(d / f"rgb.{ext}"), rgb[..., ::-1])  # OpenCV writes BGR
    assert cv2.imwrite(str(d / "raw_depth.png"), depth_mm.astype(np.uint16))
    (d / "intrinsics.txt").write_text("100.5 0 3.5\n0 101.25 2.0\n0 0 1\n")
    return d


def test_read_capture_synthetic(tmp_path):
    depth_mm = np.array([[0, 1000, 1234, 65535], [1, 0, 500, 2500]] * 3, dtype=np.uint16)
    d = _make_capture(tmp_path, "capture_0", depth_mm)
    f = read_capture(d, stamp_ns=42)
    assert f.stamp_ns == 42 and f.gt_depth is None and f.instance is None
    assert f.rgb.dtype == np.uint8 and f.rgb.shape == (6, 4, 3)
    np.testing.assert_array_equal(f.rgb[..., 0], 200)  # channel 0 is red again (BGR -> RGB)
    np.testing.assert_array_equal(f.rgb[0, :, 2], [0, 1, 2, 3])
    assert f.depth.dtype == np.float32
    assert np.isnan(f.depth[0, 0]) and np.isnan(f.depth[1, 1])
    assert f.depth[0, 1] == np.float32(1.0) and f.depth[0, 2] == np.float32(1.234)
    assert f.depth[0, 3] == np.float32(65.535) and f.depth[1, 0] == np.float32(0.001)
    intr = f.intrinsics
    assert (intr.width, intr.height) == (4, 6)
    assert (intr.fx, intr.fy, intr.cx, intr.cy) == (100.5, 101.25, 3.5, 2.0)
    assert intr.frame_id == "camera_color_optical_frame"


def test_folder_order_and_stamps(tmp_path):
    depth = np.full((4, 4), 700, np.uint16)
    for name in ("capture_10", "capture_2", "capture_1"):
        _make_capture(tmp_path, name, depth, ext="jpg")
    (tmp_path / "not_a_capture").mkdir()
    assert [p.name for p in capture_dirs(tmp_path)] == ["capture_1", "capture_2", "capture_10"]
    frames = read_image_folder(tmp_path)
    assert [f.extra["name"] for f in frames] == ["capture_1", "capture_2", "capture_10"]
    assert [f.stamp_ns for f in frames] == [1_000_000_000, 2_000_000_000, 3_000_000_000]
    with pytest.raises(FileNotFoundError):
        read_image_folder(tmp_path / "not_a_capture")


def test_find_real_captures_env_override(tmp_path, monkeypatch):
    _make_capture(tmp_path / "data", "capture_0", np.full((2, 2), 1, np.uint16))
    monkeypatch.setenv(REAL_RGBD_ENV, str(tmp_path / "data"))
    assert find_real_captures() == (tmp_path / "data").resolve()
    # A wrong override is not silently replaced by the default location.
    monkeypatch.setenv(REAL_RGBD_ENV, str(tmp_path / "missing"))
    assert find_real_captures() is None


@needs_real
def test_real_captures_load():
    frames = read_image_folder(REAL)
    assert [f.extra["name"] for f in frames] == [f"capture_{i}" for i in range(4)]
    assert [f.extra["rgb_file"] for f in frames] == ["rgb.png", "rgb.jpg", "rgb.png", "rgb.jpg"]
    for i, f in enumerate(frames):
        assert f.rgb.shape == (480, 640, 3) and f.rgb.dtype == np.uint8
        assert f.depth.shape == (480, 640) and f.depth.dtype == np.float32
        intr = f.intrinsics
        assert (intr.width, intr.height) == (640, 480)
        fx, fy, cx, cy = K_A if i % 2 == 0 else K_B
        assert intr.fx == pytest.approx(fx, abs=1e-9) and intr.fy == pytest.approx(fy, abs=1e-9)
        assert intr.cx == pytest.approx(cx, abs=1e-9) and intr.cy == pytest.approx(cy, abs=1e-9)
        # Independent decode: the PNG's raw millimetres, and the colour channels reversed.
        capture = REAL / f"capture_{i}"
        raw = cv2.imread(str(capture / "raw_depth.png"), cv2.IMREAD_UNCHANGED)
        valid = raw > 0
        np.testing.assert_array_equal(~np.isnan(f.depth), valid)
        np.testing.assert_allclose(f.depth[valid], raw[valid] / 1000.0, rtol=1e-6)
        ratio = valid.mean()
        assert 0.87 <= ratio <= 0.996, ratio  # README: 87-99.5 % valid
        bgr = cv2.imread(str(capture / f.extra["rgb_file"]), cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(f.rgb, bgr[..., ::-1])


@needs_real
@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_real_captures_through_a_bag(tmp_path, storage):
    frames = read_image_folder(REAL)
    summary = write_frames_bag(tmp_path / "real", frames, storage=storage)
    assert summary.n_frames == 4
    assert summary.start_ns == 1_000_000_000 and summary.end_ns == 4_000_000_000
    back = list(read_rgbd_frames(tmp_path / "real"))
    assert len(back) == 4
    for a, b in zip(frames, back, strict=True):
        assert b.stamp_ns == a.stamp_ns
        assert b.intrinsics == a.intrinsics
        np.testing.assert_array_equal(b.rgb, a.rgb)
        # Millimetre depth survives the 16UC1 bag exactly.
        np.testing.assert_array_equal(b.depth, a.depth)
        assert b.gt_depth is None and b.instance is None
        assert "targets" not in b.extra and "lidar" not in b.extra

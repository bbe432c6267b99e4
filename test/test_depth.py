"""Depth units, 16UC1 encoding and hole statistics."""

import numpy as np
import pytest

from depth_perception.core.depth import (
    HoleStats,
    depth_from_mm,
    depth_to_mm,
    hole_stats,
    sanitize_depth,
    valid_mask,
    valid_ratio,
)


def test_valid_mask_and_ratio():
    d = np.array([[1.0, 0.0, np.nan, -2.0], [np.inf, -np.inf, 0.001, 70.0]], np.float32)
    expected = np.array([[True, False, False, False], [False, False, True, True]])
    np.testing.assert_array_equal(valid_mask(d), expected)
    assert valid_ratio(d) == 3 / 8
    assert valid_ratio(np.zeros((0, 3))) == 0.0
    np.testing.assert_array_equal(valid_mask(np.array([0, 5, 65535], np.uint16)), [0, 1, 1])


def test_from_mm_values():
    mm = np.array([[0, 1, 1234], [65535, 500, 0]], np.uint16)
    m = depth_from_mm(mm)
    assert m.dtype == np.float32 and m.shape == (2, 3)
    np.testing.assert_array_equal(np.isnan(m), [[True, False, False], [False, False, True]])
    np.testing.assert_allclose(m[0, 1:], [0.001, 1.234], rtol=1e-7)
    np.testing.assert_allclose(m[1, :2], [65.535, 0.5], rtol=1e-7)
    with pytest.raises(ValueError):
        depth_from_mm(np.ones(3, np.float32))


def test_mm_round_trip_every_uint16():
    mm = np.arange(65536, dtype=np.uint16)
    np.testing.assert_array_equal(depth_to_mm(depth_from_mm(mm)), mm)


def test_to_mm_rounding_and_invalid():
    m = np.array(
        [0.0, np.nan, -1.0, np.inf, -np.inf, 1.2344, 1.2346, 0.0004, 0.0006, 65.535, 65.5356, 70.0]
    )
    expected = [0, 0, 0, 0, 0, 1234, 1235, 0, 1, 65535, 0, 0]
    for dtype in (np.float32, np.float64):
        out = depth_to_mm(m.astype(dtype))
        assert out.dtype == np.uint16
        np.testing.assert_array_equal(out, expected)
    # Shape is kept and the input is untouched.
    img = np.full((2, 3), 1.5, np.float32)
    np.testing.assert_array_equal(depth_to_mm(img), np.full((2, 3), 1500))
    assert (img == 1.5).all()


def test_sanitize_depth():
    raw = np.array([[2.5, 0.0, -1.0], [np.inf, np.nan, 0.25]], np.float64)
    out = sanitize_depth(raw)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(out), [[False, True, True], [True, True, False]])
    assert out[0, 0] == 2.5 and out[1, 2] == 0.25
    # A new array: the caller's image is not modified.
    f32 = raw.astype(np.float32)
    assert sanitize_depth(f32) is not f32 and f32[0, 1] == 0.0
    # Integer images are 16UC1 millimetres.
    np.testing.assert_array_equal(
        sanitize_depth(np.array([0, 1500], np.uint16)), np.array([np.nan, 1.5], np.float32)
    )


def test_sanitize_depth_equals_the_valid_mask_on_a_frame_of_every_kind_of_invalid():
    rng = np.random.default_rng(3)
    d = rng.uniform(0.1, 9.0, (48, 64)).astype(np.float32)
    kinds = rng.integers(0, 6, d.shape)
    d[kinds == 1] = np.nan
    d[kinds == 2] = 0.0
    d[kinds == 3] = -rng.uniform(0.1, 2.0, int((kinds == 3).sum()))
    d[kinds == 4] = np.inf
    d[kinds == 5] = -np.inf
    expected = np.where(valid_mask(d), d, np.float32(np.nan))
    np.testing.assert_array_equal(sanitize_depth(d), expected)  # NaN where NaN, bitwise else
    only_nan = np.where(kinds == 1, np.nan, 1.0).astype(np.float32)
    np.testing.assert_array_equal(sanitize_depth(only_nan), only_nan)


def test_hole_stats_hand_made():
    d = np.ones((8, 10), np.float32)
    d[0:2, 0:3] = np.nan  # hole A: 6 px
    d[5, 5] = 0.0  # hole B: 1 px
    d[6, 6] = -1.0  # diagonal neighbour of B: same 8-connected hole, B = 2 px
    d[3, 8:10] = np.inf  # hole C: 2 px
    d[4, 9] = np.nan  # joins C below it: C = 3 px
    s = hole_stats(d)
    assert isinstance(s, HoleStats)
    assert s.n_holes == 3
    assert s.largest_hole_px == 6
    assert s.mean_hole_px == pytest.approx((6 + 2 + 3) / 3)
    assert s.valid_ratio == pytest.approx((80 - 11) / 80)


def test_hole_stats_no_holes_and_all_holes():
    s = hole_stats(np.ones((4, 4), np.float32))
    assert s == HoleStats(valid_ratio=1.0, n_holes=0, largest_hole_px=0, mean_hole_px=0.0)
    s = hole_stats(np.zeros((4, 5), np.uint16))
    assert s == HoleStats(valid_ratio=0.0, n_holes=1, largest_hole_px=20, mean_hole_px=20.0)

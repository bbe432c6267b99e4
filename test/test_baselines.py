"""Classical hole filling and joint bilateral upsampling."""

import cv2
import numpy as np
import pytest

from depth_perception.core.baselines import (
    FILL_METHODS,
    fill_holes,
    fill_inpaint,
    fill_ipbasic,
    fill_nearest,
    joint_bilateral_upsample,
)

H, W = 96, 128
V, U = np.mgrid[0:H, 0:W].astype(np.float32)
# A tilted plane seen fronto-parallel enough that depth is (almost exactly) linear in (u, v).
PLANE = (2.0 + 0.004 * U + 0.002 * V).astype(np.float32)


def holed_plane(seed: int = 1) -> np.ndarray:
    """PLANE with 20 % random missing pixels, two blobs and missing top rows, in every
    invalid encoding (NaN, 0, negative, inf)."""
    rng = np.random.default_rng(seed)
    d = PLANE.copy()
    d[rng.random((H, W)) < 0.2] = np.nan
    d[30:42, 50:70] = 0.0
    d[70:90, 10:20] = -1.0
    d[0:5, :] = np.inf
    return d


def test_nearest_hand_example():
    # Seeds A = (row 0, col 0) = 1.25 and B = (row 3, col 6) = 6.5. A pixel is nearer to A iff
    # r^2 + c^2 < (r - 3)^2 + (c - 6)^2, i.e. r + 2c <= 7 (never a tie: 6r + 12c = 45 has no
    # integer solution).
    d = np.full((4, 7), np.nan, np.float32)
    d[0, 0], d[3, 6] = 1.25, 6.5
    a, b = 1.25, 6.5
    expected = np.array(
        [
            [a, a, a, a, b, b, b],
            [a, a, a, a, b, b, b],
            [a, a, a, b, b, b, b],
            [a, a, a, b, b, b, b],
        ],
        np.float32,
    )
    np.testing.assert_array_equal(fill_nearest(d), expected)


def test_nearest_many_seeds_matches_brute_force():
    rng = np.random.default_rng(5)
    d = np.full((20, 30), np.nan, np.float32)
    seeds = [(2, 3), (15, 4), (8, 22), (17, 27)]
    for r, c in seeds:
        d[r, c] = rng.uniform(1.0, 5.0)
    out = fill_nearest(d)
    pts = np.array(seeds)
    dist2 = (V[:20, :30, None] - pts[:, 0]) ** 2 + (U[:20, :30, None] - pts[:, 1]) ** 2
    first, second = np.sqrt(np.sort(dist2, axis=-1)[..., :2]).transpose(2, 0, 1)
    # OpenCV's 5x5 mask approximates Euclidean distance to within a few percent: skip pixels
    # whose two nearest seeds are closer to a tie than that.
    clear = second > 1.05 * first
    expected = d[pts[:, 0], pts[:, 1]][np.argmin(dist2, axis=-1)]
    assert clear.mean() > 0.8
    np.testing.assert_array_equal(out[clear], expected[clear])


@pytest.mark.parametrize("method", sorted(FILL_METHODS))
def test_fill_keeps_valid_fills_all_and_is_accurate(method):
    d = holed_plane()
    before = d.copy()
    out = fill_holes(d, method)
    valid = np.isfinite(d) & (d > 0)
    assert out.dtype == np.float32 and out.shape == d.shape
    np.testing.assert_array_equal(d, before)  # input untouched
    # Measured pixels are kept bit-exact, every hole is filled.
    np.testing.assert_array_equal(out[valid].view(np.uint32), d[valid].view(np.uint32))
    assert np.isfinite(out).all()
    err = np.abs(out - PLANE)[~valid]
    # The plane spans 0.7 m; filling with the mean depth would be off by ~0.2 m on average.
    assert err.mean() < 0.01, err.mean()
    assert err.max() < 0.04, err.max()


@pytest.mark.parametrize("method", sorted(FILL_METHODS))
def test_fill_degenerate_inputs(method):
    empty = np.full((8, 9), np.nan, np.float32)
    assert np.isnan(fill_holes(empty, method)).all()
    assert np.isnan(fill_holes(np.zeros((8, 9), np.uint16), method)).all()
    full = PLANE[:8, :9].copy()
    np.testing.assert_array_equal(fill_holes(full, method), full)
    # Integer input is millimetres.
    mm = np.full((8, 9), 1500, np.uint16)
    mm[3, 4] = 0
    np.testing.assert_allclose(fill_holes(mm, method), 1.5, rtol=1e-6)


def test_fill_holes_registry():
    assert set(FILL_METHODS) == {"nearest", "inpaint_telea", "inpaint_ns", "ipbasic"}
    with pytest.raises(ValueError, match="inpaint_ns.*inpaint_telea.*ipbasic.*nearest"):
        fill_holes(PLANE, "bicubic")
    d = holed_plane()
    np.testing.assert_array_equal(
        fill_holes(d, "inpaint_telea", radius=3), fill_inpaint(d, "telea", radius=3)
    )
    with pytest.raises(ValueError, match="telea"):
        fill_inpaint(d, method="fmm")


@pytest.mark.parametrize("method", ["telea", "ns"])
def test_inpaint_reduced_resolution(method):
    d = holed_plane(seed=2)
    valid = np.isfinite(d) & (d > 0)
    out = fill_inpaint(d, method=method, max_side=48)  # runs at 48x36, upsamples the fill
    np.testing.assert_array_equal(out[valid], d[valid])
    assert np.isfinite(out).all()
    err = np.abs(out - PLANE)[~valid]
    assert err.mean() < 0.01 and err.max() < 0.04


def test_ipbasic_prefers_near_surface_at_edges():
    # Foreground at 1 m on the left, background at 9 m on the right, a missing column between.
    d = np.where(U[:40, :40] < 20, 1.0, 9.0).astype(np.float32)
    d[:, 20] = np.nan
    out = fill_ipbasic(d)
    np.testing.assert_allclose(out[:, 20], 1.0, atol=1e-3)
    # A hole inside the background is filled from the background only.
    d2 = np.where(U[:40, :40] < 10, 1.0, 9.0).astype(np.float32)
    d2[15:25, 25:35] = np.nan
    np.testing.assert_allclose(fill_ipbasic(d2)[15:25, 25:35], 9.0, atol=1e-3)


def test_ipbasic_fills_beyond_largest_kernel():
    # A 60-px-wide invalid band: wider than the 31x31 dilation reaches.
    d = PLANE.copy()
    d[:, 30:90] = np.nan
    out = fill_ipbasic(d, extrapolate_top=False)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[:, :30], d[:, :30])


def two_plane_scene(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Near red plane left of a slanted edge, far blue plane right of it (colour edge = depth
    edge); returns (depth, rgb, mask of pixels within 4 px of the edge)."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    left = u < 0.55 * w + 0.2 * v
    depth = np.where(left, 1.5 + 0.003 * u, 3.0 + 0.002 * v).astype(np.float32)
    rng = np.random.default_rng(11)
    rgb = np.where(left[..., None], [200, 60, 40], [40, 90, 200]) + rng.normal(0, 5, (h, w, 3))
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    edge = cv2.morphologyEx(left.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    near_edge = cv2.dilate(edge, np.ones((7, 7), np.uint8)).astype(bool)
    return depth, rgb, near_edge


def test_jbu_beats_nearest_at_colour_edges():
    depth, rgb, near_edge = two_plane_scene(H, W)
    rng = np.random.default_rng(4)
    keep = rng.random((H, W)) < 0.01
    sparse = np.where(keep, depth, np.nan).astype(np.float32)

    jbu = joint_bilateral_upsample(sparse, rgb)
    nearest = fill_nearest(sparse)
    assert jbu.dtype == np.float32 and np.isfinite(jbu).all()
    np.testing.assert_array_equal(jbu[keep], depth[keep])

    err_jbu = np.abs(jbu - depth)
    err_nn = np.abs(nearest - depth)
    # Nearest fill copies the wrong plane (1.5 m off) to many pixels near the edge; the
    # colour-guided filter stays on the right side of it.
    assert err_nn[near_edge].mean() > 0.1
    assert err_jbu[near_edge].mean() < 0.25 * err_nn[near_edge].mean()
    assert err_jbu[~near_edge].mean() < 0.02


def test_jbu_fills_every_pixel_from_100_samples():
    h, w = 120, 160
    depth, rgb, _ = two_plane_scene(h, w)
    rng = np.random.default_rng(9)
    idx = rng.choice(h * w, 100, replace=False)
    sparse = np.full((h, w), np.nan, np.float32)
    sparse.flat[idx] = depth.flat[idx]
    out = joint_bilateral_upsample(sparse, rgb)
    assert np.isfinite(out).all()
    err = np.abs(out - depth).mean()
    assert err < 0.5 * np.abs(fill_nearest(sparse) - depth).mean()
    # A single-channel guide is accepted too.
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    assert np.isfinite(joint_bilateral_upsample(sparse, grey)).all()


def test_jbu_degenerate_inputs():
    rgb = np.zeros((6, 8, 3), np.uint8)
    assert np.isnan(joint_bilateral_upsample(np.full((6, 8), np.nan, np.float32), rgb)).all()
    full = PLANE[:6, :8].copy()
    np.testing.assert_array_equal(joint_bilateral_upsample(full, rgb), full)
    # A single sample fills the whole image with its depth.
    one = np.full((6, 8), np.nan, np.float32)
    one[2, 3] = 2.5
    np.testing.assert_allclose(joint_bilateral_upsample(one, rgb), 2.5, rtol=1e-6)
    with pytest.raises(ValueError, match="guide"):
        joint_bilateral_upsample(one, np.zeros((8, 6, 3), np.uint8))

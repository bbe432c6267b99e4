"""Fusing a model's depth with the measured depth (core.fusion)."""

from __future__ import annotations

import numpy as np
import pytest

from depth_perception.core.baselines import fill_inpaint
from depth_perception.core.fusion import align_to_measured, fuse_measured


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """A slanted floor at 2-3 m with a box 0.8 m closer, and a hole over the box's edge."""
    h, w = 120, 160
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    truth = 2.0 + u / w
    truth[40:80, 60:100] -= 0.8  # the box
    hole = np.zeros((h, w), dtype=bool)
    hole[30:90, 70:130] = True  # covers the box's right edge and floor beyond it
    measured = np.where(hole, np.nan, truth).astype(np.float32)
    return truth.astype(np.float32), measured


def test_constant_scale_error_is_removed_exactly_even_across_an_edge_in_the_hole():
    truth, measured = _scene()
    hole = np.isnan(measured)
    pred = 1.7 * truth  # right shape, wrong metric scale (an unseen camera)
    out = align_to_measured(pred, measured)
    np.testing.assert_allclose(out[hole], truth[hole], rtol=1e-5)
    # Interpolating the measurements alone cannot know the edge is there.
    telea = fill_inpaint(measured)
    assert np.abs(telea[hole] - truth[hole]).max() > 0.3


def test_slowly_varying_scale_is_followed_and_measured_pixels_stay_bit_exact():
    truth, measured = _scene()
    hole = np.isnan(measured)
    v, u = np.mgrid[0 : truth.shape[0], 0 : truth.shape[1]].astype(np.float32)
    pred = truth * (0.8 + 0.4 * u / u.max()) * (1.0 + 0.1 * v / v.max())
    out = align_to_measured(pred, measured)
    np.testing.assert_array_equal(out[~hole], measured[~hole])

    def rel_error(depth: np.ndarray) -> np.ndarray:
        return np.abs(depth[hole] - truth[hole]) / truth[hole]

    # Measured here: aligned 1.7 % mean / 6.7 % worst; the model alone 10 % / 21 %; Telea on
    # the measurements alone 6.5 % / 46 % (it cannot see the box edge).
    assert rel_error(out).mean() < 0.025 and rel_error(out).max() < 0.08
    assert rel_error(pred).mean() > 0.08
    assert rel_error(fill_inpaint(measured)).mean() > 0.05


def test_invalid_inputs():
    truth, measured = _scene()
    pred = truth.copy()
    pred[50, 120] = np.nan  # the model rejected a hole pixel: stays a hole
    pred[5, 5] = np.nan  # ...and a measured one: the measurement is used
    out = align_to_measured(pred, measured)
    assert np.isnan(out[50, 120])
    assert out[5, 5] == measured[5, 5]
    assert np.isfinite(np.delete(out.ravel(), 50 * truth.shape[1] + 120)).all()
    # Nothing measured: nothing to align to.
    empty = np.full_like(measured, np.nan)
    np.testing.assert_array_equal(align_to_measured(pred, empty), pred)
    # Millimetre images are read like depth_image_proc does.
    mm = np.nan_to_num(measured * 1000.0, nan=0.0).round().astype(np.uint16)
    np.testing.assert_allclose(
        align_to_measured(truth, mm), align_to_measured(truth, mm / np.float32(1000)), rtol=1e-6
    )
    with pytest.raises(ValueError, match="shape"):
        align_to_measured(pred, measured[:-1])


def test_fuse_measured_modes():
    truth, measured = _scene()
    hole = np.isnan(measured)
    pred = 1.1 * truth
    np.testing.assert_array_equal(fuse_measured(pred, measured, "none"), pred)
    kept = fuse_measured(pred, measured, "keep")
    np.testing.assert_array_equal(kept[~hole], measured[~hole])
    np.testing.assert_array_equal(kept[hole], pred[hole])
    np.testing.assert_array_equal(
        fuse_measured(pred, measured, "align"), align_to_measured(pred, measured)
    )
    with pytest.raises(ValueError, match="fusion mode"):
        fuse_measured(pred, measured, "median")


def test_fused_confidence_separates_measured_easy_and_hopeless_holes():
    from depth_perception.core.fusion import fused_confidence

    h, w = 100, 200
    measured = np.full((h, w), 2.0, np.float32)
    measured[50, 20] = np.nan  # an easy hole: one pixel inside measured depth
    measured[:, 100:] = np.nan  # a hopeless hole: the right half of the image is blind
    prob = np.full((h, w), 0.9, np.float32)
    conf = fused_confidence(prob, measured, "align", hole_scale=0.05)  # L = 10 px
    assert conf.dtype == np.float32 and conf.shape == (h, w)
    assert np.all(conf[np.isfinite(measured)] == 1.0)  # the sensor's depth is published there
    # Hand-computed: the model's 0.9 times exp(-d / 10) with d the distance to a measurement.
    assert conf[50, 20] == pytest.approx(0.9 * np.exp(-1 / 10), rel=1e-3)
    assert conf[50, 100] == pytest.approx(0.9 * np.exp(-1 / 10), rel=1e-3)
    assert conf[50, 150] == pytest.approx(0.9 * np.exp(-51 / 10), rel=2e-2)
    assert conf[50, 199] < 0.01
    # `none` publishes the model everywhere: its own probability, measured or not.
    np.testing.assert_array_equal(fused_confidence(prob, measured, "none"), prob)
    # No mask head: probability 1; no measurement at all: no confidence in any hole.
    assert fused_confidence(None, measured, "keep")[50, 20] == pytest.approx(np.exp(-0.1), 1e-3)
    blind = np.full((h, w), np.nan, np.float32)
    assert not fused_confidence(prob, blind, "align").any()
    with pytest.raises(ValueError, match="fusion mode"):
        fused_confidence(prob, measured, "blend")

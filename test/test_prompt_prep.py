"""Tests for depth_perception.core.prompt_prep (PDSA, GMDR, model input, training prompts)."""

from fractions import Fraction

import numpy as np
import pytest

from depth_perception.core.prompt_prep import (
    PROMPT_KINDS,
    TRAINING_PROMPT_RANGE,
    align_prompt,
    depth_to_disparity,
    disparity_to_depth,
    downsampled_sparse_prompt,
    fit_scale_shift,
    gmdr,
    make_prompt,
    model_input,
    pdsa,
    prepare_prompt,
    training_prompt,
)
from depth_perception.core.prompts import downsampled_prompt


def _plane_disparity(h: int, w: int) -> np.ndarray:
    """A slanted plane's true disparity (1/m), between 0.2 and ~0.5."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    return 0.2 + 0.004 * u + 0.003 * v


def _random_prompt(truth_disp: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    prompt = np.full(truth_disp.shape, np.nan, dtype=np.float32)
    flat = rng.choice(truth_disp.size, size=n, replace=False)
    prompt.reshape(-1)[flat] = (1.0 / truth_disp.reshape(-1)[flat]).astype(np.float32)
    return prompt


# ---------------------------------------------------------------------------------------------
# Disparity and the global fit
# ---------------------------------------------------------------------------------------------


def test_disparity_round_trip_and_invalid():
    depth = np.array([[2.0, 0.0, np.nan], [-1.0, np.inf, 0.5]], dtype=np.float32)
    disp = depth_to_disparity(depth)
    np.testing.assert_array_equal(disp[0, 0], 0.5)
    np.testing.assert_array_equal(disp[1, 2], 2.0)
    assert np.isnan(disp[[0, 0, 1, 1], [1, 2, 0, 1]]).all()
    back = disparity_to_depth(disp)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back[0, 0], 2.0)
    assert np.isnan(back[[0, 0, 1, 1], [1, 2, 0, 1]]).all()
    assert np.isnan(disparity_to_depth(np.array([-0.5, 0.0]))).all()


def test_fit_scale_shift_exact_and_fallbacks():
    x = np.array([0.1, 0.2, 0.4, 0.5])
    fit = fit_scale_shift(x, 3.0 * x - 0.05)
    assert fit.mode == "affine" and fit.n == 4
    assert fit.scale == pytest.approx(3.0, rel=1e-12)
    assert fit.shift == pytest.approx(-0.05, abs=1e-12)
    # One point: scale only, y / x.
    one = fit_scale_shift([0.25], [0.75])
    assert (one.mode, one.scale, one.shift) == ("scale_only", 3.0, 0.0)
    # All at the same prior disparity: scale only, sum(xy) / sum(x^2) = mean(y) / x.
    flat = fit_scale_shift([0.5, 0.5, 0.5], [1.0, 2.0, 3.0])
    assert flat.mode == "scale_only"
    assert flat.scale == pytest.approx(4.0) and flat.shift == 0.0
    # Anti-correlated: an affine scale < 0 is refused.
    anti = fit_scale_shift([0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    assert anti.mode == "scale_only" and anti.scale > 0
    assert anti.scale == pytest.approx((0.03 + 0.04 + 0.03) / (0.01 + 0.04 + 0.09))
    # Nothing to fit: identity.
    assert fit_scale_shift([], []) == fit_scale_shift(np.zeros(0), np.zeros(0))
    assert fit_scale_shift([], []).mode == "none"
    with pytest.raises(ValueError):
        fit_scale_shift([1.0, 2.0], [1.0])


def test_fit_scale_shift_weights_are_least_squares_weights():
    x = np.array([1.0, 2.0, 3.0])
    y = np.array([1.0, 3.0, 4.0])
    a = np.array([36.0, 9.0, 4.0])
    fit = fit_scale_shift(x, y, a)
    # Reference: ordinary least squares on rows multiplied by sqrt(a).
    design = np.stack([x, np.ones(3)], 1) * np.sqrt(a)[:, None]
    ref = np.linalg.lstsq(design, y * np.sqrt(a), rcond=None)[0]
    np.testing.assert_allclose([fit.scale, fit.shift], ref, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# GMDR and PDSA on synthetic cases
# ---------------------------------------------------------------------------------------------


def test_gmdr_recovers_an_affine_prior_exactly():
    truth = _plane_disparity(48, 64)
    prior_depth = (1.0 / (2.5 * truth + 0.07)).astype(np.float32)  # affine in disparity
    prompt = _random_prompt(truth, 200, seed=1)
    aligned, fit = gmdr(prior_depth, prompt)
    assert fit.mode == "affine" and fit.n == 200
    assert fit.scale == pytest.approx(1 / 2.5, rel=1e-5)
    assert fit.shift == pytest.approx(-0.07 / 2.5, rel=1e-4)
    np.testing.assert_allclose(aligned, truth, rtol=1e-5)
    al = align_prompt(prior_depth, prompt)
    np.testing.assert_array_equal(al.gmdr, aligned)
    np.testing.assert_allclose(al.gmdr_depth(), 1.0 / truth, rtol=1e-5)
    # An affine prior is also locally affine: PDSA recovers it everywhere.
    np.testing.assert_allclose(al.pdsa, truth, rtol=1e-5)
    assert al.n_local_fallback == 0


def _own_region_pixels(prompt_mask: np.ndarray, region: np.ndarray, k: int = 5) -> np.ndarray:
    """Pixels whose k nearest prompt pixels lie in their own region, ties included: every prompt
    pixel at most as far as the k-th nearest is in the pixel's region (brute force)."""
    pv, pu = np.nonzero(prompt_mask)
    v, u = np.mgrid[0 : prompt_mask.shape[0], 0 : prompt_mask.shape[1]]
    d2 = (v.reshape(-1, 1) - pv) ** 2 + (u.reshape(-1, 1) - pu) ** 2
    kth = np.sort(d2, axis=1)[:, k - 1 : k]
    within = d2 <= kth
    same = region[pv, pu][None, :] == region.reshape(-1, 1)
    return (~within | same).all(axis=1).reshape(prompt_mask.shape)


def test_pdsa_recovers_a_piecewise_affine_prior_away_from_the_seam():
    h, w = 40, 60
    truth = _plane_disparity(h, w)
    left = np.mgrid[0:h, 0:w][1] < 27
    prior_disp = np.where(left, 1.7 * truth + 0.05, 0.6 * truth + 0.4)
    prior_depth = (1.0 / prior_disp).astype(np.float32)
    prompt = _random_prompt(truth, 150, seed=2)
    al = align_prompt(prior_depth, prompt)
    mask = np.isfinite(prompt)
    own = _own_region_pixels(mask, left) & ~mask
    assert own.sum() > 0.6 * h * w  # most of the image is away from the seam
    np.testing.assert_allclose(al.pdsa[own], truth[own], rtol=1e-5)
    # Prompt pixels keep their measured value exactly.
    np.testing.assert_array_equal(
        al.pdsa[mask], (1.0 / prompt[mask].astype(np.float64)).astype(np.float32)
    )
    assert al.mask.sum() == 150
    # Near the seam the local fits mix the regions: not exact there, and GMDR is not exact at all.
    seam = ~_own_region_pixels(mask, left) & ~mask
    assert np.abs(al.pdsa[seam] - truth[seam]).max() > 1e-3
    assert np.abs(al.gmdr - truth).max() > 1e-2


def test_pdsa_hand_computed_weights():
    # One row: a query pixel u=0 with prior disparity 0.5, prompt pixels at u = 1, 2, 3 (all
    # its neighbours, k=5 > 3), distances 1, 2, 3.
    prior_disp = np.array([[0.5, 1.0, 2.0, 3.0]])
    prompt_disp = np.array([[np.nan, 1.0, 3.0, 4.0]])
    al = align_prompt(1.0 / prior_disp, 1.0 / prompt_disp)
    # Rows weighted by w_i = (1/d_i) / sum(1/d) = (6, 3, 2) / 11: least-squares weights w_i^2,
    # proportional to (36, 9, 4). Solve the weighted normal equations exactly.
    a = [Fraction(36), Fraction(9), Fraction(4)]
    xs = [Fraction(1), Fraction(2), Fraction(3)]
    ys = [Fraction(1), Fraction(3), Fraction(4)]
    s0 = sum(a)
    sx = sum(ai * xi for ai, xi in zip(a, xs, strict=True))
    sy = sum(ai * yi for ai, yi in zip(a, ys, strict=True))
    sxx = sum(ai * xi * xi for ai, xi in zip(a, xs, strict=True))
    sxy = sum(ai * xi * yi for ai, xi, yi in zip(a, xs, ys, strict=True))
    scale = (s0 * sxy - sx * sy) / (s0 * sxx - sx * sx)
    shift = (sy - scale * sx) / s0
    expected = scale * Fraction(1, 2) + shift
    assert (scale, shift, expected) == (Fraction(43, 26), Fraction(-8, 13), Fraction(11, 52))
    assert al.pdsa[0, 0] == pytest.approx(float(expected), rel=1e-6)
    # Plain 1/d least-squares weights (not PDA's row weighting) give a different value.
    plain = fit_scale_shift([1, 2, 3], [1, 3, 4], [6, 3, 2])
    assert abs(plain.scale * 0.5 + plain.shift - float(expected)) > 1e-3
    np.testing.assert_array_equal(al.pdsa[0, 1:], [1.0, 3.0, 4.0])


def test_pdsa_uses_only_the_k_nearest():
    # Query u=0; prompts at u=1..6. With k=2 only u=1, 2 count: an exact line through them.
    prior_disp = np.array([[0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    prompt_disp = np.array([[np.nan, 2.0, 3.0, 20.0, 30.0, 40.0, 2.0]])
    out = pdsa(1.0 / prior_disp, 1.0 / prompt_disp, k=2)
    assert out[0, 0] == pytest.approx(1.5)  # y = x + 1 through (1, 2) and (2, 3)
    out5 = pdsa(1.0 / prior_disp, 1.0 / prompt_disp, k=5)
    assert abs(out5[0, 0] - 1.5) > 0.1
    with pytest.raises(ValueError):
        pdsa(1.0 / prior_disp, 1.0 / prompt_disp, k=0)


def test_deterministic_shapes_and_dtypes():
    truth = _plane_disparity(30, 40)
    rng = np.random.default_rng(3)
    prior = (1.0 / truth * rng.uniform(0.8, 1.2, truth.shape)).astype(np.float32)
    prompt = _random_prompt(truth, 60, seed=4)
    a = align_prompt(prior, prompt)
    b = align_prompt(prior.copy(), prompt.copy())
    for name in ("pdsa", "gmdr", "mask", "prompt"):
        arr = getattr(a, name)
        assert arr.shape == (30, 40)
        np.testing.assert_array_equal(arr, getattr(b, name))
    assert a.pdsa.dtype == a.gmdr.dtype == np.float32 and a.mask.dtype == bool
    assert a.global_fit == b.global_fit
    inp, al = prepare_prompt(prior, prompt, space="disparity")
    assert inp.tensor.shape == (3, 30, 40) and inp.tensor.dtype == np.float32
    np.testing.assert_array_equal(inp.tensor, model_input(a, "disparity").tensor)


# ---------------------------------------------------------------------------------------------
# Degenerate inputs
# ---------------------------------------------------------------------------------------------


def test_no_prompt_leaves_the_prior_unaligned():
    prior = np.full((5, 6), 2.0, dtype=np.float32)
    prior[0, 0] = 4.0
    empty = np.full((5, 6), np.nan, dtype=np.float32)
    al = align_prompt(prior, empty)
    assert al.global_fit.mode == "none" and al.n_fit == 0
    np.testing.assert_allclose(al.gmdr, 1.0 / prior)
    np.testing.assert_array_equal(al.pdsa, al.gmdr)
    assert not al.mask.any()
    zeros = align_prompt(prior, np.zeros((5, 6), np.float32))  # 0 = no measurement too
    np.testing.assert_array_equal(zeros.pdsa, al.pdsa)


def test_one_prompt_pixel_scales_the_prior():
    v, u = np.mgrid[0:4, 0:5]
    prior_disp = 0.1 + 0.05 * u + 0.02 * v
    prompt = np.full((4, 5), np.nan)
    prompt[2, 3] = 1.0 / (3.0 * prior_disp[2, 3])  # the prompt says: 3x the prior's disparity
    al = align_prompt(1.0 / prior_disp, prompt)
    assert al.global_fit.mode == "scale_only"
    assert al.global_fit.scale == pytest.approx(3.0)
    np.testing.assert_allclose(al.gmdr, 3.0 * prior_disp, rtol=1e-6)
    np.testing.assert_allclose(al.pdsa, 3.0 * prior_disp, rtol=1e-6)
    assert al.n_local_fallback == al.mask.size - 1


def test_constant_prior_gives_inverse_distance_interpolation():
    # All neighbours at the same prior disparity: local scale undetermined, GMDR's scale and
    # the local weighted shift, i.e. the w^2-weighted mean of the neighbours' prompt disparities.
    prior = np.full((1, 5), 2.0)
    prompt_disp = np.array([[np.nan, 1.0, np.nan, 2.0, np.nan]])
    al = align_prompt(prior, 1.0 / prompt_disp)
    assert al.global_fit.mode == "scale_only"
    np.testing.assert_allclose(al.gmdr, 1.5, rtol=1e-6)  # mean(y) everywhere
    # u=0: d = (1, 3) -> w^2 ~ (9, 1); u=2: d = (1, 1) -> equal; u=4: d = (3, 1).
    np.testing.assert_allclose(al.pdsa[0], [1.1, 1.0, 1.5, 2.0, 1.9], rtol=1e-6)
    assert al.n_local_fallback == 3


def test_negative_local_scale_falls_back():
    # Prior anti-correlated with the prompt around u=0: the local affine fit's scale < 0.
    prior_disp = np.array([[0.5, 1.0, 2.0, 3.0]])
    prompt_disp = np.array([[np.nan, 3.0, 2.0, 1.0]])
    al = align_prompt(1.0 / prior_disp, 1.0 / prompt_disp)
    s = al.global_fit.scale
    assert al.global_fit.mode == "scale_only" and s > 0
    a = np.array([36.0, 9.0, 4.0])
    shift = (a * (prompt_disp[0, 1:] - s * prior_disp[0, 1:])).sum() / a.sum()
    assert al.pdsa[0, 0] == pytest.approx(s * 0.5 + shift, rel=1e-6)
    assert al.n_local_fallback == 1


def test_invalid_prior_pixels():
    truth = _plane_disparity(20, 30)
    prior = (1.0 / truth).astype(np.float32)
    prior[5, 5] = np.nan
    prior[6, 7] = 0.0
    prompt = _random_prompt(truth, 40, seed=5)
    prompt[10, 10] = 1.0 / truth[10, 10]
    prior[10, 10] = np.nan  # a prompt pixel without prior: kept, but fits nothing
    al = align_prompt(prior, prompt)
    assert np.isnan(al.pdsa[5, 5]) and np.isnan(al.gmdr[5, 5])
    assert np.isnan(al.pdsa[6, 7]) and np.isnan(al.gmdr[6, 7])
    assert al.pdsa[10, 10] == pytest.approx(truth[10, 10], rel=1e-6)
    assert np.isnan(al.gmdr[10, 10])
    assert al.n_fit == int(np.isfinite(prompt).sum()) - 1
    ok = np.isfinite(prior) & (prior > 0)
    np.testing.assert_allclose(al.pdsa[ok], truth[ok], rtol=1e-5)
    inp = model_input(al, "disparity").tensor
    assert np.isfinite(inp).all()
    assert inp[0, 5, 5] == 0.0 and inp[1, 5, 5] == 0.0 and inp[2, 10, 10] == 1.0


def test_shape_errors():
    with pytest.raises(ValueError, match="differ"):
        align_prompt(np.ones((4, 5)), np.ones((5, 4)))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        align_prompt(np.ones((4, 5, 1)), np.ones((4, 5, 1)))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        gmdr(np.ones(5), np.ones(5))


# ---------------------------------------------------------------------------------------------
# Model input
# ---------------------------------------------------------------------------------------------


def _small_alignment():
    prior = np.array([[1.0, 2.0, 4.0], [0.5, 3.0, np.nan]], dtype=np.float32)
    prompt = np.array([[1.0, np.nan, np.nan], [np.nan, 3.0, np.nan]], dtype=np.float32)
    return align_prompt(prior, prompt)


def test_model_input_spaces_and_channel_order():
    al = _small_alignment()
    # Prior disparity (1, 0.5, 0.25, 2, 1/3) vs prompt (1, 1/3) at (0,0), (1,1): exact fit.
    disp = model_input(al, "disparity")
    assert disp.space == "disparity" and disp.tensor.shape == (3, 2, 3)
    np.testing.assert_allclose(disp.tensor[0], np.nan_to_num(al.pdsa), rtol=1e-7)
    np.testing.assert_allclose(disp.tensor[1], np.nan_to_num(al.gmdr), rtol=1e-7)
    np.testing.assert_array_equal(disp.tensor[2], [[1, 0, 0], [0, 1, 0]])
    np.testing.assert_allclose(disp.tensor[1], [[1, 0.5, 0.25], [2, 1 / 3, 0]], rtol=1e-6)
    canon = model_input(al, "canonical", fx=6.0)  # fx / W = 2
    np.testing.assert_allclose(canon.tensor[:2], 2.0 * disp.tensor[:2], rtol=1e-6)
    np.testing.assert_array_equal(canon.tensor[2], disp.tensor[2])
    with pytest.raises(ValueError, match="fx"):
        model_input(al, "canonical")
    with pytest.raises(ValueError, match="space"):
        model_input(al, "depth")


def test_model_input_prior_depth_anything_normalisation():
    al = _small_alignment()
    pda = model_input(al, "prior_depth_anything")
    # Prompt depths 1 and 3: min 1, range 2. Depths (1, 2, 4; 0.5, 3, -) normalise to
    # (0, 0.5, 1.5; -0.25, 1, -) and their disparities to (0, 2, 2/3; 0, 1, 0).
    assert (pda.depth_min, pda.depth_range) == pytest.approx((1.0, 2.0))
    np.testing.assert_allclose(pda.tensor[1], [[0, 2, 2 / 3], [0, 1, 0]], rtol=1e-6)
    np.testing.assert_allclose(pda.tensor[0], [[0, 2, 2 / 3], [0, 1, 0]], rtol=1e-6)
    np.testing.assert_array_equal(pda.tensor[2], [[1, 0, 0], [0, 1, 0]])
    # Equal prompt depths: range 1.
    prior = np.full((2, 2), 2.0, np.float32)
    prompt = np.array([[2.0, np.nan], [np.nan, 2.0]], np.float32)
    same = model_input(align_prompt(prior, prompt), "prior_depth_anything")
    assert (same.depth_min, same.depth_range) == (2.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Prompts for training and evaluation
# ---------------------------------------------------------------------------------------------


def test_training_prompt_size_range_and_validity():
    rng = np.random.default_rng(6)
    depth = rng.uniform(0.5, 8.0, (240, 320)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.1] = np.nan
    depth[:, :5] = 0.0
    valid = np.isfinite(depth) & (depth > 0)
    counts = []
    for _ in range(40):
        prompt = training_prompt(depth, rng)
        picked = np.isfinite(prompt)
        counts.append(int(picked.sum()))
        assert (valid | ~picked).all()  # only valid pixels
        np.testing.assert_array_equal(prompt[picked], depth[picked])
    lo, hi = TRAINING_PROMPT_RANGE
    assert lo <= min(counts) and max(counts) <= hi
    assert min(counts) < 12_000 and max(counts) > 30_000  # uniform over the range
    # Fewer valid pixels than N: all of them.
    small = np.full((40, 40), np.nan, np.float32)
    small[::2, ::2] = 1.0
    assert np.isfinite(training_prompt(small, rng)).sum() == 400
    a = training_prompt(depth, np.random.default_rng(7))
    b = training_prompt(depth, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    fixed = training_prompt(depth, rng, n_range=(123, 123))
    assert np.isfinite(fixed).sum() == 123
    with pytest.raises(ValueError):
        training_prompt(depth, rng, n_range=(10, 5))


def test_downsampled_sparse_prompt_places_cell_means_at_cell_centres():
    depth = np.arange(1, 1 + 10 * 12, dtype=np.float32).reshape(10, 12)
    out = downsampled_sparse_prompt(depth, 4)
    low = downsampled_prompt(depth, 4)  # (3, 3), the last row of cells partial (2 rows)
    rows, cols = np.nonzero(np.isfinite(out))
    assert sorted(set(rows)) == [1, 5, 8] and sorted(set(cols)) == [1, 5, 9]
    np.testing.assert_array_equal(out[np.ix_([1, 5, 8], [1, 5, 9])], low)
    assert out[1, 1] == pytest.approx(depth[:4, :4].mean())


def test_make_prompt_kinds():
    rng = np.random.default_rng(8)
    depth = rng.uniform(1.0, 5.0, (64, 80)).astype(np.float32)
    for kind in PROMPT_KINDS:
        prompt = make_prompt(kind, depth, rng)
        assert prompt.shape == depth.shape and np.isfinite(prompt).any()
    assert np.isfinite(make_prompt("extreme", depth, rng)).sum() == 100
    assert np.isfinite(make_prompt("down8", depth, rng)).sum() == 8 * 10
    assert np.isfinite(make_prompt("down16", depth, rng)).sum() == 4 * 5
    assert len(np.unique(np.nonzero(np.isfinite(make_prompt("lidar", depth, rng)))[0])) == 16
    with pytest.raises(ValueError, match="unknown prompt kind"):
        make_prompt("radar", depth, rng)

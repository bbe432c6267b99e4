"""Tests for depth_perception.core.metrics: every number is worked out by hand below."""

import math

import numpy as np
import pytest

from depth_perception.core.metrics import (
    DEPTHPRO_BOUNDARY_THRESHOLDS,
    DepthMetrics,
    aggregate_targets,
    align_median_scale,
    align_scale_shift,
    apply_scale_shift,
    binned_abs_rel,
    boundary_f1,
    boundary_f1_avg,
    boundary_precision_recall,
    coverage,
    depth_bin_names,
    depth_metrics,
    hidden_pixel_metrics,
    hide_blocks,
    occluding_contours,
    range_capped_errors,
    region_masks,
    region_metrics,
    sparse_delta1,
)

NAN = np.nan
REL = 1e-6  # inputs are float32, arithmetic float64: ~1e-7 relative round-off


def f32(x):
    return np.asarray(x, dtype=np.float32)


# --------------------------------------------------------------------------- depth_metrics


def test_depth_metrics_hand_example():
    # Pixel 3 has gt but no prediction (coverage), pixel 4 has a prediction but no gt.
    gt = f32([[1.0, 2.0, 4.0, 2.0, NAN]])
    pred = f32([[1.1, 1.8, 5.2, NAN, 3.0]])
    m = depth_metrics(pred, gt)
    # Scored pairs (p, g): (1.1, 1), (1.8, 2), (5.2, 4); |p-g| = 0.1, 0.2, 1.2
    assert m.n_valid == 3
    assert m.pred_coverage == pytest.approx(3 / 4)
    assert m.abs_rel == pytest.approx((0.1 / 1 + 0.2 / 2 + 1.2 / 4) / 3, rel=REL)  # 0.1667
    assert m.sq_rel == pytest.approx((0.01 / 1 + 0.04 / 2 + 1.44 / 4) / 3, rel=REL)  # 0.13
    assert m.rmse == pytest.approx(math.sqrt((0.01 + 0.04 + 1.44) / 3), rel=REL)
    assert m.mae == pytest.approx((0.1 + 0.2 + 1.2) / 3, rel=REL)  # 0.5
    logs = [math.log(1.1), math.log(0.9), math.log(1.3)]
    assert m.rmse_log == pytest.approx(math.sqrt(sum(x * x for x in logs) / 3), rel=REL)
    log10s = [math.log10(1.1), -math.log10(0.9), math.log10(1.3)]
    assert m.log10 == pytest.approx(sum(log10s) / 3, rel=REL)
    # max(p/g, g/p) = 1.1, 1.111, 1.3: only 1.3 fails 1.25; all pass 1.5625 and 1.953
    assert m.delta1 == pytest.approx(2 / 3)
    assert m.delta2 == 1.0
    assert m.delta3 == 1.0


def test_depth_metrics_delta_thresholds_and_invalid_values():
    # Ratios 1.4 (fails d1), 1.7 (fails d2) and 2.0 (fails d3); 0, -1 and inf count as invalid.
    gt = f32([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, np.inf])
    pred = f32([1.4, 1.7, 0.5, -1.0, 1.0, np.inf, 1.0])
    m = depth_metrics(pred, gt)
    assert m.n_valid == 3
    assert m.pred_coverage == pytest.approx(3 / 5)  # gt valid at 0,1,2,3,5
    assert (m.delta1, m.delta2, m.delta3) == pytest.approx((0, 1 / 3, 2 / 3))


def test_depth_metrics_perfect_prediction():
    gt = np.random.default_rng(0).uniform(0.5, 8.0, (6, 7)).astype(np.float32)
    gt[0, 0] = NAN
    m = depth_metrics(gt.copy(), gt)
    assert m.n_valid == 41 and m.pred_coverage == 1.0
    for name in ("abs_rel", "sq_rel", "rmse", "rmse_log", "mae", "log10"):
        assert getattr(m, name) == 0.0
    assert (m.delta1, m.delta2, m.delta3) == (1.0, 1.0, 1.0)


def test_depth_metrics_mask_range_and_empty():
    gt = f32([[1.0, 2.0], [4.0, 8.0]])
    pred = f32([[2.0, 2.0], [4.0, 4.0]])
    mask = np.array([[True, True], [True, False]])
    # With the mask only the first three pixels count: abs_rel = (1/1 + 0 + 0)/3
    assert depth_metrics(pred, gt, mask).abs_rel == pytest.approx(1 / 3)
    # gt range [1.5, 5] keeps gt 2 and 4, both perfect
    m = depth_metrics(pred, gt, min_depth=1.5, max_depth=5.0)
    assert m.n_valid == 2 and m.abs_rel == 0.0
    empty = depth_metrics(pred, gt, np.zeros((2, 2), bool))
    assert empty.n_valid == 0 and math.isnan(empty.abs_rel) and math.isnan(empty.pred_coverage)
    no_pred = depth_metrics(np.full((2, 2), NAN, np.float32), gt)
    assert no_pred.n_valid == 0 and no_pred.pred_coverage == 0.0
    with pytest.raises(ValueError):
        depth_metrics(pred, gt[:1])


def test_depth_metrics_as_dict_keys():
    d = depth_metrics(f32([1.0]), f32([1.0])).as_dict()
    assert list(d) == [
        "abs_rel", "sq_rel", "rmse", "rmse_log", "mae", "log10",
        "delta1", "delta2", "delta3", "n_valid", "pred_coverage",
    ]  # fmt: skip
    assert isinstance(d["n_valid"], int)


# --------------------------------------------------------------------------- alignment


def test_align_scale_shift_hand_least_squares():
    # x = 0,1,2 ; y = 1,2,4: mean x = 1, mean y = 7/3;
    # Sxy = (-1)(1-7/3) + 0 + (1)(4-7/3) = 4/3 + 5/3 = 3, Sxx = 2 -> s = 1.5, t = 7/3 - 1.5 = 5/6
    s, t = align_scale_shift(f32([0.0, 1.0, 2.0]), f32([1.0, 2.0, 4.0]))
    assert s == pytest.approx(1.5) and t == pytest.approx(5 / 6)


def test_align_scale_shift_recovers_known_depth_and_disparity():
    rng = np.random.default_rng(1)
    gt = rng.uniform(1.0, 5.0, (20, 30)).astype(np.float32)
    gt[0, :5] = NAN
    mask = np.ones_like(gt, dtype=bool)
    mask[10:, :] = False

    pred = (gt - 0.3) / 2.5
    pred[10:, :] = 1000.0  # garbage outside the mask must not matter
    pred[1, 1] = NAN
    s, t = align_scale_shift(pred, gt, mask)
    assert s == pytest.approx(2.5, rel=1e-5) and t == pytest.approx(0.3, abs=1e-5)
    aligned = apply_scale_shift(pred, s, t)
    ok = mask & np.isfinite(gt) & np.isfinite(pred)
    np.testing.assert_allclose(aligned[ok], gt[ok], rtol=1e-5)

    disp = (1.0 / gt - 0.05) / 0.2  # relative disparity, as MiDaS-style models output
    s, t = align_scale_shift(disp, gt, space="disparity")
    assert s == pytest.approx(0.2, rel=1e-5) and t == pytest.approx(0.05, abs=1e-6)
    depth = apply_scale_shift(disp, s, t, space="disparity")
    ok = np.isfinite(gt)
    np.testing.assert_allclose(depth[ok], gt[ok], rtol=1e-5)
    assert np.isnan(depth[~ok]).all()


def test_apply_scale_shift_invalidates_non_positive():
    out = apply_scale_shift(f32([1.0, -1.0, NAN]), 2.0, 0.0)
    assert out[0] == 2.0 and np.isnan(out[1:]).all()
    out = apply_scale_shift(f32([1.0, 0.0]), 1.0, 0.0, space="disparity")
    assert out[0] == 1.0 and np.isnan(out[1])
    with pytest.raises(ValueError):
        align_scale_shift(f32([1.0, 1.0]), f32([1.0, 2.0]))  # constant pred: no unique fit


def test_align_median_scale():
    # Valid in both: pred 1,2,3,100 -> median 2.5; gt 2,4,6,8 -> median 5; scale 2.
    pred = f32([1.0, 2.0, 3.0, 100.0, NAN])
    gt = f32([2.0, 4.0, 6.0, 8.0, 10.0])
    assert align_median_scale(pred, gt) == pytest.approx(2.0)
    # Masking out the outlier: medians 2 and 4 -> still 2.
    assert align_median_scale(pred, gt, np.array([1, 1, 1, 0, 1], bool)) == pytest.approx(2.0)


# --------------------------------------------------------------------------- boundary F1


def _square(h=6, w=6, rows=(2, 4), cols=(2, 4), near=1.0, far=2.0):
    d = np.full((h, w), far, np.float32)
    d[rows[0] : rows[1], cols[0] : cols[1]] = near
    return d


def test_occluding_contours_directions_and_nan():
    left_far, above_far, right_far, below_far = occluding_contours(f32([[2.0, 1.0, 3.0]]), 5)
    # Pairs (2,1): left is farther; (1,3): right is farther. No vertical pairs in one row.
    assert left_far.tolist() == [[True, False]] and right_far.tolist() == [[False, True]]
    assert above_far.shape == (0, 3) and below_far.shape == (0, 3)
    # A pair touching an invalid pixel is never a contour.
    assert not np.any(
        np.concatenate([c.ravel() for c in occluding_contours(f32([[1, NAN, 3]]), 5)])
    )
    # Ratio 1.12 is a contour at 10 % but not at 15 %.
    assert occluding_contours(f32([[1.0, 1.12]]), 10)[2].all()
    assert not occluding_contours(f32([[1.0, 1.12]]), 15)[2].any()


def test_boundary_f1_identical_square_is_one():
    # A near square on a far background has steps in all four directions (2 pairs each).
    gt = _square()
    assert boundary_precision_recall(gt, gt.copy(), 10) == (1.0, 1.0)
    assert boundary_f1(gt, gt.copy(), 10) == 1.0
    assert boundary_f1_avg(gt, gt.copy()) == pytest.approx(1.0)


def test_boundary_f1_shifted_square_hand_count():
    gt = _square(cols=(2, 4))
    pred = _square(cols=(3, 5))  # square moved one column right
    # Per direction (pred / gt / common pairs):
    #   left farther : pred pairs (r, 2|3), gt (r, 1|2), r = 2, 3 -> 2 / 2 / 0
    #   right farther: pred (r, 4|5),       gt (r, 3|4)            -> 2 / 2 / 0
    #   above farther: pred (1|2, c=3,4),   gt (1|2, c=2,3)        -> 2 / 2 / 1
    #   below farther: pred (3|4, c=3,4),   gt (3|4, c=2,3)        -> 2 / 2 / 1
    # precision = recall = (0/2 + 0/2 + 1/2 + 1/2) / 4 = 0.25 -> F1 = 0.25
    p, r = boundary_precision_recall(pred, gt, 10)
    assert (p, r) == (0.25, 0.25)
    assert boundary_f1(pred, gt, 10) == pytest.approx(0.25)


def test_boundary_f1_extra_blob_lowers_precision_only():
    gt = _square(8, 8)
    pred = gt.copy()
    pred[6, 6] = 1.0  # a spurious near pixel adds one pair in each direction
    # Each direction: pred 3 pairs, gt 2, common 2 -> P = 2/3, R = 1, F1 = 2 * (2/3) / (5/3) = 0.8
    p, r = boundary_precision_recall(pred, gt, 10)
    assert p == pytest.approx(2 / 3) and r == 1.0
    assert boundary_f1(pred, gt, 10) == pytest.approx(0.8)


def test_boundary_f1_depthpro_quirk_single_direction():
    # One vertical step (right side farther): only 1 of the 4 directions has contours, and as
    # in Depth Pro the empty directions score 0, so even identical maps give 0.25.
    d = np.ones((5, 6), np.float32)
    d[:, 3:] = 2.0
    assert boundary_f1(d, d.copy(), 10) == pytest.approx(0.25)
    # No contour anywhere (flat maps): P + R = 0 -> F1 = 0.
    flat = np.ones((4, 4), np.float32)
    assert boundary_f1(flat, flat, 10) == 0.0


def test_boundary_f1_avg_threshold_weighting():
    thresholds = np.asarray(DEPTHPRO_BOUNDARY_THRESHOLDS)
    # Depth Pro: ratios linspace(1.05, 1.25, 10) == 1 + linspace(5, 25, 10) / 100
    np.testing.assert_allclose(1 + thresholds / 100, np.linspace(1.05, 1.25, 10))
    gt = _square(near=1.0, far=2.0)  # ratio 2: a contour at every threshold
    pred = _square(near=1.0, far=1.12)  # ratio 1.12: found only for t < 12
    # t = 5, 7.22, 9.44, 11.67 give F1 = 1, the other six give 0 (no pred contours).
    # Weighted by ratio: (4 + (5 + 7.222 + 9.444 + 11.667)/100) / (10 + 150/100)
    #                  = 4.33333 / 11.5 = 0.376812
    assert boundary_f1_avg(pred, gt) == pytest.approx((4 + 33.3333333 / 100) / 11.5)
    assert boundary_f1_avg(pred, gt, weighted=False) == pytest.approx(0.4)
    assert boundary_f1_avg(pred, gt, thresholds=(5, 10, 15, 20, 25), weighted=False) == 0.4


# --------------------------------------------------------------------------- region metrics


def test_region_masks_band_hand_count():
    mask = np.zeros((40, 40), bool)
    mask[15:25, 15:25] = True  # 10 x 10 square
    # r = 1: the elliptic 3x3 element is a cross. Dilation adds 4 strips of 10 (no corners)
    # -> 140 pixels; erosion leaves the 8 x 8 interior -> band = 140 - 64 = 76 (a 3x3 box
    # would give 144 - 64 = 80).
    regions = region_masks(mask, r=1)
    assert regions["foreground"].sum() == 100
    assert regions["boundary"].sum() == 76
    assert regions["global"].all()
    assert not regions["boundary"][16:24, 16:24].any() and regions["boundary"][15, 15]
    assert regions["boundary"][14, 20] and not regions["boundary"][14, 14]


def test_region_masks_default_radius_is_a_disk():
    # A single-pixel mask erodes to nothing, so the band is the r = 10 disk itself.
    mask = np.zeros((41, 41), bool)
    mask[20, 20] = True
    band = region_masks(mask)["boundary"]
    vv, uu = np.mgrid[:41, :41]
    d2 = (vv - 20) ** 2 + (uu - 20) ** 2
    np.testing.assert_array_equal(band, d2 <= 100)
    assert band[20, 10] and band[12, 14] and not band[20, 9]  # (8, 6): 64 + 36 = 100 is inside
    np.testing.assert_array_equal(band, band.T)  # isotropic, unlike cv2.MORPH_ELLIPSE


def test_region_metrics_on_hand_made_square():
    gt = np.full((40, 40), 2.0, np.float32)
    gt[:2, :] = NAN  # 80 invalid pixels, far from the target
    mask = np.zeros((40, 40), bool)
    mask[15:25, 15:25] = True
    # Prediction 3.0 on the r = 1 band (cross-dilated square minus its 8x8 interior), 2.0 elsewhere.
    pred = np.full((40, 40), 2.0, np.float32)
    pred[14:26, 14:26] = 3.0
    pred[[14, 14, 25, 25], [14, 25, 14, 25]] = 2.0  # the cross dilation skips the corners
    pred[16:24, 16:24] = 2.0
    res = region_metrics(pred, gt, mask, r=1)
    # band: 76 pixels all |3-2|/2 = 0.5, ratio 1.5 fails delta1
    b = res["boundary"]
    assert b.n_valid == 76 and b.abs_rel == pytest.approx(0.5) and b.rmse == pytest.approx(1.0)
    assert b.delta1 == 0.0
    # foreground: 100 pixels, the 36 of its outer ring are wrong
    f = res["foreground"]
    assert f.n_valid == 100 and f.abs_rel == pytest.approx(36 * 0.5 / 100)
    assert f.rmse == pytest.approx(math.sqrt(36 / 100)) and f.delta1 == pytest.approx(0.64)
    # global: 1600 - 80 invalid = 1520 valid, 76 wrong
    g = res["global"]
    assert g.n_valid == 1520 and g.abs_rel == pytest.approx(76 * 0.5 / 1520)
    assert g.rmse == pytest.approx(math.sqrt(76 / 1520)) and g.delta1 == pytest.approx(1444 / 1520)


def test_region_metrics_with_alignment():
    rng = np.random.default_rng(2)
    gt = rng.uniform(1.0, 4.0, (30, 30)).astype(np.float32)
    mask = np.zeros_like(gt, bool)
    mask[10:20, 10:20] = True
    relative = (gt - 0.5) / 2.0
    raw = region_metrics(relative, gt, mask, r=3)
    assert raw["global"].abs_rel > 0.3
    res = region_metrics(relative, gt, mask, r=3, align=True)
    for m in res.values():
        assert m.abs_rel == pytest.approx(0.0, abs=1e-5) and m.delta1 == 1.0


def test_aggregate_targets_median_and_quartiles():
    def fake(abs_rel):
        return {"foreground": {"abs_rel": abs_rel}, "global": DepthMetrics.empty()}

    agg = aggregate_targets([fake(0.1), fake(0.4), fake(0.2), fake(NAN)])
    # finite values 0.1, 0.2, 0.4: median 0.2; q25 at position 0.5 -> 0.15; q75 at 1.5 -> 0.3
    fg = agg["foreground"]["abs_rel"]
    assert fg["median"] == pytest.approx(0.2) and fg["n"] == 3
    assert fg["q25"] == pytest.approx(0.15) and fg["q75"] == pytest.approx(0.3)
    assert agg["global"]["rmse"]["n"] == 0 and math.isnan(agg["global"]["rmse"]["median"])
    assert agg["global"]["n_valid"]["median"] == 0.0


# --------------------------------------------------------------------------- sparse / hidden


def test_sparse_delta1():
    # ratios: 1.2 ok, 2.6/2 = 1.3 miss, 1.0 ok, no prediction -> miss; gt NaN point dropped
    pred = [1.0, 2.0, 3.0, NAN, 7.0]
    gt = [1.2, 2.6, 3.0, 5.0, NAN]
    assert sparse_delta1(pred, gt) == pytest.approx(2 / 4)
    assert sparse_delta1([1.0], [1.0]) == 1.0
    assert math.isnan(sparse_delta1([1.0], [NAN]))


def test_coverage():
    pred = f32([[1.0, NAN, 0.0], [2.0, 3.0, -1.0]])
    assert coverage(pred) == pytest.approx(3 / 6)
    region = np.array([[True, True, False], [False, False, False]])
    assert coverage(pred, region) == pytest.approx(1 / 2)
    assert math.isnan(coverage(pred, np.zeros((2, 3), bool)))


def test_hidden_pixel_metrics_scores_only_hidden_valid_pixels():
    gt_raw = f32([[2.0, 2.0, NAN], [2.0, 2.0, 2.0]])
    hidden = np.array([[True, True, True], [False, False, False]])
    pred = f32([[2.2, 2.0, 5.0], [9.0, 9.0, 9.0]])  # big errors outside the hidden set
    m = hidden_pixel_metrics(pred, gt_raw, hidden)
    # hidden & valid: (0,0) |0.2|/2 = 0.1 and (0,1) 0 -> abs_rel 0.05
    assert m.n_valid == 2 and m.abs_rel == pytest.approx(0.05, rel=REL)


def test_hide_blocks_hides_only_valid_pixels_about_fraction():
    rng = np.random.default_rng(3)
    raw = rng.uniform(0.5, 4.0, (96, 128)).astype(np.float32)
    raw[:, :32] = NAN
    raw[rng.random(raw.shape) < 0.1] = 0.0  # sensor holes
    valid = np.isfinite(raw) & (raw > 0)
    masked, hidden = hide_blocks(raw, np.random.default_rng(4), fraction=0.1, block=(8, 8))
    assert masked.dtype == np.float32 and hidden.dtype == bool
    assert not (hidden & ~valid).any()
    n_valid = valid.sum()
    # at least the requested share, overshoot < one block (64 px)
    assert 0.1 * n_valid <= hidden.sum() < 0.1 * n_valid + 64
    assert np.isnan(masked[hidden]).all() and np.isnan(masked[~valid]).all()
    keep = valid & ~hidden
    np.testing.assert_array_equal(masked[keep], raw[keep])
    # Hidden pixels come in blocks, so nearly all have a hidden 4-neighbour; 10 % scattered
    # single pixels would have one only 1 - 0.9**4 = 34 % of the time.
    pad = np.pad(hidden, 1)
    has_neighbour = pad[:-2, 1:-1] | pad[2:, 1:-1] | pad[1:-1, :-2] | pad[1:-1, 2:]
    assert (has_neighbour & hidden).sum() > 0.9 * hidden.sum()
    # Same seed, same blocks; zero fraction hides nothing.
    _, again = hide_blocks(raw, np.random.default_rng(4), fraction=0.1, block=(8, 8))
    np.testing.assert_array_equal(hidden, again)
    _, none = hide_blocks(raw, np.random.default_rng(4), fraction=0.0)
    assert not none.any()


# --------------------------------------------------------------------------- range-capped (radar)


def test_range_capped_errors_in_millimetres_by_hand():
    # gt 10, 45, 60, 75, 90 m (and one invalid); pred off by +1, -2, +3, -4, +5 m; the 75 m
    # pixel has no prediction.
    gt = f32([[10.0, 45.0, 60.0], [75.0, 90.0, NAN]])
    pred = f32([[11.0, 43.0, 63.0], [NAN, 95.0, 5.0]])
    out = range_capped_errors(pred, gt)
    assert list(out) == [
        "mae_mm_0-50m",
        "rmse_mm_0-50m",
        "mae_mm_0-70m",
        "rmse_mm_0-70m",
        "mae_mm_0-80m",
        "rmse_mm_0-80m",
    ]
    # 0-50 m: errors 1, 2 m -> MAE 1.5 m, RMSE sqrt((1 + 4) / 2) m
    assert out["mae_mm_0-50m"] == pytest.approx(1500.0, rel=REL)
    assert out["rmse_mm_0-50m"] == pytest.approx(1000.0 * math.sqrt(2.5), rel=REL)
    # 0-70 m: 1, 2, 3 m -> MAE 2 m, RMSE sqrt(14 / 3) m
    assert out["mae_mm_0-70m"] == pytest.approx(2000.0, rel=REL)
    assert out["rmse_mm_0-70m"] == pytest.approx(1000.0 * math.sqrt(14 / 3), rel=REL)
    # 0-80 m: the 75 m pixel has no prediction and is left out (coverage says so): as 0-70 m
    assert out["mae_mm_0-80m"] == pytest.approx(2000.0, rel=REL)
    assert out["rmse_mm_0-80m"] == pytest.approx(1000.0 * math.sqrt(14 / 3), rel=REL)
    # a cap of 100 m takes the 90 m pixel too: 1, 2, 3, 5 -> MAE 2.75 m, RMSE sqrt(39 / 4)
    wide = range_capped_errors(pred, gt, caps_m=(100.0,))
    assert wide == {
        "mae_mm_0-100m": pytest.approx(2750.0, rel=REL),
        "rmse_mm_0-100m": pytest.approx(1000.0 * math.sqrt(39 / 4), rel=REL),
    }
    # nothing scored within the cap: NaN
    assert math.isnan(range_capped_errors(pred, gt, caps_m=(5.0,))["mae_mm_0-5m"])


def test_abs_rel_by_depth_range_by_hand():
    # gt 5 (pred 5.5: 0.1), 10 (the upper range's: pred 12: 0.2), 15 (pred 12: 0.2),
    # 55 and 60 (preds 66, 60: 0.2 and 0 -> 0.1), no valid pred at 25, one NaN gt.
    gt = np.array([[5.0, 10.0, 15.0, 25.0, 55.0, 60.0, np.nan]])
    pred = np.array([[5.5, 12.0, 12.0, np.nan, 66.0, 60.0, 3.0]])
    out = binned_abs_rel(pred, gt)
    assert list(out) == depth_bin_names((0, 10, 20, 30, 40, 50))
    assert list(out)[0] == "abs_rel_0-10m" and list(out)[-1] == "abs_rel_>50m"
    assert out["abs_rel_0-10m"] == pytest.approx(0.1)
    assert out["abs_rel_10-20m"] == pytest.approx(0.2)
    assert out["abs_rel_>50m"] == pytest.approx(0.1)
    for empty in ("abs_rel_20-30m", "abs_rel_30-40m", "abs_rel_40-50m"):
        assert np.isnan(out[empty])
    with pytest.raises(ValueError, match="increase"):
        binned_abs_rel(pred, gt, (0, 10, 10))

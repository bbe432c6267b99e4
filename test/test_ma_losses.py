"""Tests for depth_perception.models.ma_losses (MetricAnything teacher and student losses)."""

import math

import pytest
import torch

from depth_perception.models.ma_losses import (
    LOG_DEPTH_RANGE,
    MAE_WEIGHT,
    SSI_MAGE_WEIGHT,
    STUDENT_PIXEL_LOSSES,
    STUDENT_SSI_MAGE_WEIGHT,
    STUDENT_WEIGHT,
    blur_downsample,
    distance_balanced_log_depth,
    l1_depth,
    l1_distance_balanced_log,
    l1_inverse_depth,
    l1_log_depth,
    metric_anything_loss,
    multiscale_gradient_loss,
    scharr_gradients,
    ssi_mage,
    ssi_normalize,
    student_distillation_loss,
    trimmed_mae,
)


def _img(values, dtype=torch.float64) -> torch.Tensor:
    return torch.as_tensor(values, dtype=dtype)[None, None]


def _ramp(h: int, w: int, sx: float, sy: float = 0.0, c: float = 0.0) -> torch.Tensor:
    v, u = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    return (c + sx * u + sy * v)[None, None]


# ---------------------------------------------------------------------------------------------
# MAE
# ---------------------------------------------------------------------------------------------


def test_trimmed_mae_drops_the_largest_fifth():
    target = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    pred = torch.arange(1, 17, dtype=torch.float64).reshape(1, 1, 4, 4)  # residuals 1..16
    mask = torch.ones_like(pred, dtype=torch.bool)
    # n = 16: floor(3.2) = 3 dropped, mean(1..13) = 7.
    assert trimmed_mae(pred, target, mask).item() == pytest.approx(7.0)
    assert trimmed_mae(pred, target, mask, trim=0.0).item() == pytest.approx(8.5)
    # Ten valid pixels with residuals 1..10 (the rest masked out): drop 2, mean(1..8) = 4.5.
    mask10 = pred <= 10
    assert trimmed_mae(pred, target, mask10).item() == pytest.approx(4.5)
    # Signs do not matter, order does not matter.
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    shuffled = (-pred).reshape(-1)[perm].reshape(1, 1, 4, 4)
    assert trimmed_mae(shuffled, target, mask).item() == pytest.approx(7.0)


def test_trimmed_mae_per_image_trim_nan_targets_and_empty_images():
    pred = torch.arange(1, 11, dtype=torch.float64).reshape(1, 1, 2, 5).repeat(3, 1, 1, 1)
    target = torch.zeros_like(pred)
    target[1, 0, 1, 4] = torch.nan  # residual 10 of image 1 is not valid
    mask = torch.ones_like(pred, dtype=torch.bool)
    mask[2] = False
    out = trimmed_mae(pred, target, mask, trim=torch.tensor([0.2, 0.0, 0.2]))
    # Image 0: drop 2 of 10 -> mean(1..8); image 1: 9 valid, untrimmed -> mean(1..9); image 2: 0.
    torch.testing.assert_close(out, torch.tensor([4.5, 5.0, 0.0], dtype=torch.float64))
    pred.requires_grad_(True)
    trimmed_mae(pred, target, mask).sum().backward()
    assert torch.isfinite(pred.grad).all()
    assert pred.grad[1, 0, 1, 4] == 0 and (pred.grad[2] == 0).all()
    with pytest.raises(ValueError, match="trim"):
        trimmed_mae(pred, target, mask, trim=1.0)


# ---------------------------------------------------------------------------------------------
# Normalisation, gradients, pyramid
# ---------------------------------------------------------------------------------------------


def test_ssi_normalize_hand_values():
    x = _img([[1.0, 2.0, 3.0], [4.0, 10.0, -50.0]])
    mask = _img([[True, True, True], [True, True, False]], dtype=torch.bool)
    # Valid: 1, 2, 3, 4, 10 -> median 3, MAD = (2 + 1 + 0 + 1 + 7) / 5 = 2.2.
    out = ssi_normalize(x, mask)
    expected = _img([[-2 / 2.2, -1 / 2.2, 0.0], [1 / 2.2, 7 / 2.2, 0.0]])
    torch.testing.assert_close(out, expected)
    # Even count: the lower median. 1, 2, 3, 4 -> median 2, MAD = (1 + 0 + 1 + 2) / 4 = 1.
    even = ssi_normalize(_img([[1.0, 2.0], [3.0, 4.0]]), torch.ones(1, 1, 2, 2, dtype=torch.bool))
    torch.testing.assert_close(even, _img([[-1.0, 0.0], [1.0, 2.0]]))
    # A constant image normalises to 0; invariance to a x + b, a > 0.
    const = ssi_normalize(torch.full((1, 1, 3, 3), 5.0), torch.ones(1, 1, 3, 3, dtype=torch.bool))
    assert (const == 0).all()
    torch.testing.assert_close(ssi_normalize(3.7 * x - 0.4, mask), out)


def test_scharr_gradient_of_a_ramp():
    x = _ramp(5, 6, sx=2.0, sy=3.0, c=1.0)
    g = scharr_gradients(x)
    assert g.shape == (1, 2, 3, 4)
    torch.testing.assert_close(g[:, 0], torch.full((1, 3, 4), 2.0, dtype=torch.float64))
    torch.testing.assert_close(g[:, 1], torch.full((1, 3, 4), 3.0, dtype=torch.float64))
    # A step: the 3-10-3 weighting, / 32, times the step width 2 columns apart.
    step = _img([[0.0, 0.0, 1.0]] * 3)
    assert scharr_gradients(step)[0, 0, 0, 0].item() == pytest.approx(16 / 32)
    spike = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    spike[0, 0, 0, 2] = 1.0  # top-right corner: weight 3 / 32 in gx, 3 / 32 in -gy
    torch.testing.assert_close(
        scharr_gradients(spike)[0, :, 0, 0], torch.tensor([3 / 32, -3 / 32], dtype=torch.float64)
    )


def test_blur_downsample_keeps_ramps_linear_and_propagates_invalid():
    x = _ramp(10, 12, sx=1.0, sy=0.5)
    valid = torch.ones_like(x, dtype=torch.bool)
    valid[0, 0, 6, 6] = False
    out, ok = blur_downsample(x, valid)
    assert out.shape == (1, 1, 4, 5)  # floor((10 - 4) / 2) + 1, floor((12 - 4) / 2) + 1
    # Coarse pixel (i, j) averages fine rows 2i..2i+3, cols 2j..2j+3: centre (2i+1.5, 2j+1.5).
    torch.testing.assert_close(out, _ramp(4, 5, sx=2.0, sy=1.0, c=1.5 + 0.75))
    # Fine pixel (6, 6) is in the supports of coarse rows/cols 2 and 3.
    expected = torch.ones(4, 5, dtype=torch.bool)
    expected[2:4, 2:4] = False
    assert torch.equal(ok[0, 0], expected)


def test_multiscale_gradient_loss_on_ramps():
    # pred slope 2, target slope 1 along x: gx error 2^j at scale j. A 16x16 image has Scharr
    # pixels at scales 0 (16) and 1 (7); scale 2 (2x2) has none: (1 + 2) / 2.
    pred, target = _ramp(16, 16, 2.0), _ramp(16, 16, 1.0)
    mask = torch.ones_like(pred, dtype=torch.bool)
    assert multiscale_gradient_loss(pred, target, mask).item() == pytest.approx(1.5)
    assert multiscale_gradient_loss(pred, target, mask, scales=1).item() == pytest.approx(1.0)
    # p = 2 (MSGE): (1 + 4) / 2.
    assert multiscale_gradient_loss(pred, target, mask, p=2).item() == pytest.approx(2.5)
    # Invalid target pixels carrying garbage do not change anything on a ramp.
    target2 = target.clone()
    target2[0, 0, 5, 5] = torch.nan
    mask2 = mask.clone()
    mask2[0, 0, 9, 3] = False
    target2[0, 0, 9, 3] = 1e6
    assert multiscale_gradient_loss(pred, target2, mask2).item() == pytest.approx(1.5)


def test_ssi_mage_hand_value_and_skipped_scales():
    # Target u, prediction u^2 on a 3x4 image. Lower medians 1 and 1, MADs 1 and 3:
    # T_n = u - 1, P_n = (u^2 - 1) / 3. Scharr at u = 1, 2: T 1, 1; P 2/3, 4/3. Mean error 1/3.
    target = _ramp(3, 4, 1.0)
    pred = target**2
    mask = torch.ones_like(pred, dtype=torch.bool)
    assert ssi_mage(pred, target, mask, scales=1).item() == pytest.approx(1 / 3)
    assert ssi_mage(pred, target, mask).item() == pytest.approx(1 / 3)  # only scale 0 fits


def test_ssi_mage_scale_and_shift_invariant():
    gen = torch.Generator().manual_seed(1)
    target = torch.rand(2, 1, 40, 48, generator=gen, dtype=torch.float64) + 0.2
    pred = torch.rand(2, 1, 40, 48, generator=gen, dtype=torch.float64) + 0.2
    mask = torch.rand(2, 1, 40, 48, generator=gen) > 0.1
    base = ssi_mage(pred, target, mask)
    assert (base > 0).all()
    torch.testing.assert_close(ssi_mage(4.2 * pred + 0.7, target, mask), base)
    torch.testing.assert_close(ssi_mage(pred, 0.3 * target - 0.05, mask), base)
    assert ssi_mage(2.5 * target + 1.0, target, mask).abs().max() < 1e-12
    # MAE is not invariant.
    assert (trimmed_mae(4.2 * pred, target, mask) > trimmed_mae(pred, target, mask)).all()


# ---------------------------------------------------------------------------------------------
# Total loss and gradients
# ---------------------------------------------------------------------------------------------


def test_total_loss_weights_and_real_vs_synthetic():
    target = _ramp(16, 20, 0.01, 0.02, c=0.3).repeat(2, 1, 1, 1)
    mask = torch.ones_like(target, dtype=torch.bool)
    # A shifted prediction: MAE = 0.1, SSI-MAGE = 0 -> 15 * 0.1.
    out = metric_anything_loss(target + 0.1, target, mask, synthetic=True)
    assert out.total.item() == pytest.approx(MAE_WEIGHT * 0.1)
    assert out.ssi_mage.abs().max() < 1e-12
    # A bumpy prediction: synthetic images add 5 * SSI-MAGE, real ones trim and skip it.
    gen = torch.Generator().manual_seed(2)
    pred = target + 0.05 * torch.rand(target.shape, generator=gen, dtype=torch.float64)
    synth = torch.tensor([True, False])
    out = metric_anything_loss(pred, target, mask, synthetic=synth)
    mae_full = trimmed_mae(pred, target, mask, trim=0.0)
    mae_trim = trimmed_mae(pred, target, mask, trim=0.2)
    grad = ssi_mage(pred, target, mask)
    torch.testing.assert_close(out.mae, torch.stack([mae_full[0], mae_trim[1]]))
    torch.testing.assert_close(out.ssi_mage, torch.stack([grad[0], grad.new_zeros(())]))
    expected = (MAE_WEIGHT * mae_full[0] + SSI_MAGE_WEIGHT * grad[0] + MAE_WEIGHT * mae_trim[1]) / 2
    assert (MAE_WEIGHT, SSI_MAGE_WEIGHT) == (15.0, 5.0)
    assert out.total.item() == pytest.approx(expected.item())
    assert grad[0] > 0 and mae_trim[1] < mae_full[1]
    # An image without valid pixels is left out of the batch mean.
    mask_empty = mask.clone()
    mask_empty[1] = False
    one = metric_anything_loss(pred, target, mask_empty, synthetic=True)
    assert one.total.item() == pytest.approx(
        (MAE_WEIGHT * mae_full[0] + SSI_MAGE_WEIGHT * grad[0]).item()
    )
    none = metric_anything_loss(pred.requires_grad_(True), target, torch.zeros_like(mask), True)
    assert none.total.item() == 0.0
    none.total.backward()
    assert (pred.grad == 0).all()


def test_shape_errors():
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="B, 1, H, W"):
        trimmed_mae(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4), torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match="same shape"):
        ssi_mage(x, torch.zeros(1, 1, 4, 5), torch.ones(1, 1, 4, 4))


def test_gradcheck_total_loss():
    # 8x8: scale 0 and one blurred scale (3x3, one Scharr pixel) both take part.
    gen = torch.Generator().manual_seed(3)
    target = torch.rand(2, 1, 8, 8, generator=gen, dtype=torch.float64) + 0.5
    pred = (torch.rand(2, 1, 8, 8, generator=gen, dtype=torch.float64) + 0.5).requires_grad_()
    mask = torch.ones(2, 1, 8, 8, dtype=torch.bool)
    mask[1, 0, 2, 5] = False
    synth = torch.tensor([True, False])
    assert torch.autograd.gradcheck(
        lambda p: metric_anything_loss(p, target, mask, synth).total, (pred,), fast_mode=True
    )


def test_float32_batch_backward_is_finite():
    gen = torch.Generator().manual_seed(4)
    target = torch.rand(3, 1, 96, 128, generator=gen) + 0.1
    target[:, :, :10] = torch.nan  # rows without ground truth
    pred = (torch.rand(3, 1, 96, 128, generator=gen) + 0.1).requires_grad_()
    mask = torch.isfinite(target)
    out = metric_anything_loss(pred, target, mask, synthetic=torch.tensor([True, True, False]))
    assert torch.isfinite(out.total)
    out.total.backward()
    assert torch.isfinite(pred.grad).all()
    assert (pred.grad[:, :, :10] == 0).all()


# ---------------------------------------------------------------------------------------------
# Student distillation: distance-balanced log depth
# ---------------------------------------------------------------------------------------------


def test_distance_balanced_log_depth_hand_values():
    depth = torch.tensor([1.0, 400.0, 20.0, 0.05, 800.0, 0.0, -2.0], dtype=torch.float64)
    got = distance_balanced_log_depth(depth)
    assert LOG_DEPTH_RANGE == 400.0
    # 1 m -> 1, C -> 0, sqrt(C) = 20 m -> 0.5, 1/20 m -> 1.5; beyond C negative, not clamped.
    expected = [1.0, 0.0, 0.5, 1.5, 1.0 - math.log(800.0) / math.log(400.0)]
    torch.testing.assert_close(got[:5], torch.tensor(expected, dtype=torch.float64))
    assert got[4].item() == pytest.approx(-math.log(2.0) / math.log(400.0))  # -0.1157
    # 0 and negative depths are floored at 1 mm (the network's nearest): finite.
    floor = 1.0 - math.log(1e-3) / math.log(400.0)
    assert got[5].item() == pytest.approx(floor) and got[6].item() == pytest.approx(floor)
    # another C moves the zero: C = 100 -> 10 m is 0.5
    assert distance_balanced_log_depth(torch.tensor(10.0), c=100.0).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="C must be > 1"):
        distance_balanced_log_depth(depth, c=1.0)
    # bf16 predictions are taken to float32 before the logarithm
    assert distance_balanced_log_depth(torch.tensor([20.0], dtype=torch.bfloat16)).dtype == (
        torch.float32
    )


def test_l_student_is_l1_of_dlog_over_valid_pixels():
    target = _img([[1.0, 20.0], [400.0, 7.0]])
    pred = _img([[20.0, 20.0], [20.0, 7.0]])
    mask = torch.ones_like(target, dtype=torch.bool)
    # |1 - 0.5| + 0 + |0 - 0.5| + 0 over 4 pixels
    assert l1_distance_balanced_log(pred, target, mask).item() == pytest.approx(0.25)
    # the invalid pixels (mask False, NaN, 0, negative label) do not count
    bad = _img([[1.0, float("nan")], [0.0, -3.0]])
    mask2 = torch.tensor([[True, True], [True, True]])[None, None]
    assert l1_distance_balanced_log(pred, bad, mask2).item() == pytest.approx(0.5)
    masked = mask.clone()
    masked[0, 0, 0, 0] = False
    assert l1_distance_balanced_log(pred, target, masked).item() == pytest.approx(0.5 / 3)


def test_table14_pixel_losses_hand_values():
    target = _img([[2.0, 4.0], [10.0, float("nan")]])
    pred = _img([[4.0, 4.0], [5.0, 3.0]])
    mask = torch.ones_like(target, dtype=torch.bool)
    # depth: |4-2| + 0 + |5-10| over 3 valid pixels
    assert l1_depth(pred, target, mask).item() == pytest.approx(7.0 / 3)
    # log depth: ln 2 + 0 + ln 2
    assert l1_log_depth(pred, target, mask).item() == pytest.approx(2 * math.log(2.0) / 3)
    # inverse depth: |1/4 - 1/2| + 0 + |1/5 - 1/10|
    assert l1_inverse_depth(pred, target, mask).item() == pytest.approx(0.35 / 3)
    # D_log is log depth divided by ln C
    assert l1_distance_balanced_log(pred, target, mask).item() == pytest.approx(
        2 * math.log(2.0) / 3 / math.log(400.0)
    )
    assert set(STUDENT_PIXEL_LOSSES) == {"dlog", "depth", "log_depth", "inverse_depth"}
    assert STUDENT_PIXEL_LOSSES["depth"] is l1_depth


def test_student_loss_weights_and_hand_values():
    assert (STUDENT_WEIGHT, STUDENT_SSI_MAGE_WEIGHT) == (10.0, 2.0)
    target = torch.exp(_ramp(16, 20, 0.05, 0.1, c=0.5)).repeat(2, 1, 1, 1)  # 1.6 .. 12 m
    mask = torch.ones_like(target, dtype=torch.bool)
    # Twice as far everywhere: D_log shifts by ln 2 / ln 400, an affine change -> SSI-MAGE 0.
    out = student_distillation_loss(2.0 * target, target, mask)
    torch.testing.assert_close(
        out.pixel, torch.full((2,), math.log(2) / math.log(400.0), dtype=torch.float64)
    )
    assert out.ssi_mage.abs().max() < 1e-10
    assert out.total.item() == pytest.approx(10.0 * math.log(2) / math.log(400.0))
    # Squared depth: D_log(pred) = 2 D_log(target) - 1, affine again -> SSI-MAGE 0 too.
    sq = student_distillation_loss(target**2, target, mask)
    assert sq.ssi_mage.abs().max() < 1e-10
    expected = (torch.log(target) / math.log(400.0)).mean()
    assert sq.total.item() == pytest.approx(10.0 * expected.item())
    # A bumpy prediction: the total is 10 * L_student + 2 * SSI-MAGE(D_log) per image.
    gen = torch.Generator().manual_seed(5)
    pred = target * (1.0 + 0.1 * torch.rand(target.shape, generator=gen, dtype=torch.float64))
    out = student_distillation_loss(pred, target, mask)
    dlog_p, dlog_t = distance_balanced_log_depth(pred), distance_balanced_log_depth(target)
    grad = ssi_mage(dlog_p, dlog_t, mask)
    l1 = (dlog_p - dlog_t).abs().mean(dim=(1, 2, 3))
    torch.testing.assert_close(out.pixel, l1)
    torch.testing.assert_close(out.ssi_mage, grad)
    assert (grad > 0).all()
    assert out.total.item() == pytest.approx((10.0 * l1 + 2.0 * grad).mean().item())
    # SSI-MAGE on D_log does not depend on C (it equals SSI-MAGE on ln D); L_student does.
    other_c = student_distillation_loss(pred, target, mask, c=50.0)
    torch.testing.assert_close(other_c.ssi_mage, grad)
    torch.testing.assert_close(other_c.pixel, l1 * math.log(400.0) / math.log(50.0))
    # Per image: without SSI-MAGE on the second, and weights as given.
    mixed = student_distillation_loss(pred, target, mask, use_ssi_mage=torch.tensor([True, False]))
    torch.testing.assert_close(mixed.ssi_mage, torch.stack([grad[0], grad.new_zeros(())]))
    assert mixed.total.item() == pytest.approx(((10 * l1).sum() + 2 * grad[0]).item() / 2)
    weighted = student_distillation_loss(
        pred, target, mask, student_weight=1.0, ssi_mage_weight=0.0
    )
    assert weighted.total.item() == pytest.approx(l1.mean().item())


def test_student_loss_ablation_terms_and_empty_images():
    gen = torch.Generator().manual_seed(6)
    target = torch.rand(2, 1, 12, 12, generator=gen, dtype=torch.float64) * 30 + 1
    pred = torch.rand(2, 1, 12, 12, generator=gen, dtype=torch.float64) * 30 + 1
    mask = torch.ones_like(target, dtype=torch.bool)
    dlog = student_distillation_loss(pred, target, mask)
    for name, term in STUDENT_PIXEL_LOSSES.items():
        out = student_distillation_loss(pred, target, mask, pixel_loss=name)
        torch.testing.assert_close(out.pixel, term(pred, target, mask))
        torch.testing.assert_close(out.ssi_mage, dlog.ssi_mage)  # the gradient term stays
    with pytest.raises(ValueError, match="pixel_loss 'l2'"):
        student_distillation_loss(pred, target, mask, pixel_loss="l2")
    # An image without valid pixels is left out of the batch mean.
    empty = mask.clone()
    empty[1] = False
    one = student_distillation_loss(pred, target, empty)
    assert one.total.item() == pytest.approx((10 * dlog.pixel[0] + 2 * dlog.ssi_mage[0]).item())
    assert one.pixel[1].item() == 0.0
    p = pred.clone().requires_grad_(True)
    none = student_distillation_loss(p, target, torch.zeros_like(mask))
    assert none.total.item() == 0.0
    none.total.backward()
    assert (p.grad == 0).all()


def test_student_loss_gradients():
    gen = torch.Generator().manual_seed(7)
    target = torch.rand(2, 1, 8, 8, generator=gen, dtype=torch.float64) * 20 + 0.5
    target[0, 0, 3, 3] = float("nan")
    target[1, 0, 0, 0] = 0.0
    target[1, 0, 7, 7] = 900.0  # beyond C: still a distance
    pred = (torch.rand(2, 1, 8, 8, generator=gen, dtype=torch.float64) * 20 + 0.5).requires_grad_()
    mask = torch.ones(2, 1, 8, 8, dtype=torch.bool)
    assert torch.autograd.gradcheck(
        lambda p: student_distillation_loss(p, target, mask).total, (pred,), fast_mode=True
    )
    # A prediction beyond C still has a gradient towards a nearer label (no clamp at C).
    far = torch.full((1, 1, 4, 4), 1000.0, dtype=torch.float64, requires_grad=True)
    near = torch.full((1, 1, 4, 4), 10.0, dtype=torch.float64)
    student_distillation_loss(far, near, torch.ones_like(near, dtype=torch.bool)).total.backward()
    assert (far.grad > 0).all()
    # Invalid labels get no gradient; float32 stays finite.
    p32 = (torch.rand(1, 1, 32, 32, generator=gen) * 10 + 1).requires_grad_()
    t32 = torch.rand(1, 1, 32, 32, generator=gen) * 10 + 1
    t32[:, :, :4] = torch.nan
    out = student_distillation_loss(p32, t32, torch.isfinite(t32))
    out.total.backward()
    assert torch.isfinite(p32.grad).all() and (p32.grad[:, :, :4] == 0).all()

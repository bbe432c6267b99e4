"""Tests for depth_perception.models.focusdepth_losses (FocusDepth region / segmentation loss)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from depth_perception.core.metrics import align_scale_shift, region_masks
from depth_perception.models.focusdepth_losses import (
    boundary_band,
    focusdepth_loss,
    gradient_loss,
    masked_mse,
    region_depth_loss,
    scale_shift_align,
    segmentation_loss,
)

torch.set_num_threads(1)


def _img(values, dtype=torch.float64) -> torch.Tensor:
    return torch.as_tensor(values, dtype=dtype)[None, None]


def _mask(values) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.bool)[None, None]


def _scene(h: int = 24, w: int = 32, seed: int = 0):
    """Depth of a slanted plane with a nearer box-shaped target, its mask and validity."""
    g = torch.Generator().manual_seed(seed)
    v, u = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    depth = 3.0 + 0.02 * u + 0.03 * v
    mask = (u >= 10) & (u < 20) & (v >= 6) & (v < 16)
    depth = torch.where(mask, 1.5 + 0.01 * u, depth)
    valid = torch.rand(h, w, generator=g, dtype=torch.float64) > 0.1
    return depth[None, None], mask[None, None], valid[None, None]


# --------------------------------------------------------------------------------- alignment


def test_scale_shift_align_hand_values():
    # target = 2 * pred + 1 exactly: mx = 2.5, my = 6, cov = 4.5 + 0.5 + 0.5 + 4.5 = 10,
    # var = 2.25 + 0.25 + 0.25 + 2.25 = 5 -> a = 2, b = 6 - 2 * 2.5 = 1.
    pred = _img([[1.0, 2.0], [3.0, 4.0]])
    target = _img([[3.0, 5.0], [7.0, 9.0]])
    aligned, a, b = scale_shift_align(pred, target, torch.ones_like(pred, dtype=torch.bool))
    assert a.item() == pytest.approx(2.0) and b.item() == pytest.approx(1.0)
    torch.testing.assert_close(aligned, target)
    # Not exact: x = (0, 1, 2), y = (0, 2, 1): mx = my = 1, cov = 1 + 0 + 0 = 1, var = 2
    # -> a = 0.5, b = 0.5. A fourth pixel with a NaN target is masked out and never read.
    pred = _img([[0.0, 1.0, 2.0, 7.0]])
    target = _img([[0.0, 2.0, 1.0, math.nan]])
    mask = _mask([[True, True, True, False]])
    aligned, a, b = scale_shift_align(pred, target, mask)
    assert (a.item(), b.item()) == pytest.approx((0.5, 0.5))
    assert aligned[0, 0, 0, 3].item() == pytest.approx(0.5 * 7 + 0.5)


def test_scale_shift_align_constant_prediction_and_empty_mask():
    pred = torch.full((2, 1, 2, 2), 3.0, dtype=torch.float64)
    target = _img([[1.0, 2.0], [3.0, 6.0]]).repeat(2, 1, 1, 1)
    mask = torch.ones_like(pred, dtype=torch.bool)
    mask[1] = False
    aligned, a, b = scale_shift_align(pred, target, mask)
    # Image 0: constant prediction -> a = 0, b = mean target = 3; image 1: nothing -> 0, 0.
    torch.testing.assert_close(a, torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(b, torch.tensor([3.0, 0.0], dtype=torch.float64))
    assert torch.isfinite(aligned).all()


def test_scale_shift_align_matches_metrics_align_in_disparity():
    g = torch.Generator().manual_seed(1)
    pred = torch.rand(1, 1, 9, 11, generator=g, dtype=torch.float64)
    depth = 1.0 + 4.0 * torch.rand(1, 1, 9, 11, generator=g, dtype=torch.float64)
    mask = torch.rand(1, 1, 9, 11, generator=g) > 0.3
    _, a, b = scale_shift_align(pred, 1.0 / depth, mask)
    # numpy reference: fits pred to 1 / gt over the mask (space="disparity").
    ref = align_scale_shift(
        pred[0, 0].numpy(), depth[0, 0].numpy(), mask[0, 0].numpy(), "disparity"
    )
    assert (a.item(), b.item()) == pytest.approx(ref, rel=1e-10)


# --------------------------------------------------------------------------------- depth terms


def test_masked_mse_hand_values():
    pred = _img([[1.0, 2.0], [3.0, 4.0]])
    target = _img([[1.0, 0.0], [5.0, math.nan]])
    mask = _mask([[True, True], [True, False]])
    # Residuals 0, 2, -2 over three pixels: (0 + 4 + 4) / 3.
    assert masked_mse(pred, target, mask).item() == pytest.approx(8.0 / 3.0)
    assert masked_mse(pred, target, torch.zeros_like(mask)).item() == 0.0


def test_gradient_loss_hand_values():
    target = torch.zeros(1, 1, 2, 3, dtype=torch.float64)
    pred = _img([[0.0, 1.0, 3.0], [0.0, 0.0, 0.0]])  # residual R = pred
    full = torch.ones_like(pred, dtype=torch.bool)
    # Scale 0: |dx| = |1-0| + |3-1| = 3 (row 0), 0 (row 1); |dy| = 0 + 1 + 3 = 4; 7 / 6 pixels.
    assert gradient_loss(pred, target, full, scales=1).item() == pytest.approx(7.0 / 6.0)
    # Scale 1 keeps R[::2, ::2] = [[0, 3]]: |dx| = 3 over 2 pixels; scales 2 and 3 keep [[0]]: 0.
    # MiDaS sums the scales: 7/6 + 3/2 = 8/3.
    assert gradient_loss(pred, target, full).item() == pytest.approx(8.0 / 3.0)
    # Masking out the 3: scale 0 keeps pairs (0,1) in row 0 (1), (0,0) x2 in row 1 (0), column
    # pairs 0 and 1 (0 and 1): 2 over 5 pixels; scale 1 keeps [[0, -]]: one pixel, no pair.
    mask = _mask([[True, True, False], [True, True, True]])
    assert gradient_loss(pred, target, mask).item() == pytest.approx(0.4)
    # A pure offset has no gradient; an empty mask gives 0.
    assert gradient_loss(pred + 5.0, pred, full).item() == 0.0
    assert gradient_loss(pred, target, torch.zeros_like(full)).item() == 0.0


def test_region_depth_loss_selects_region_and_skips_empty_images():
    target = torch.zeros(2, 1, 2, 3, dtype=torch.float64)
    pred = _img([[0.0, 1.0, 3.0], [0.0, 0.0, 0.0]]).repeat(2, 1, 1, 1)
    valid = torch.ones_like(pred, dtype=torch.bool)
    region = _mask([[True, True, False], [True, True, True]]).repeat(2, 1, 1, 1)
    region[1] = False
    # Image 0: MSE (0 + 1 + 0 + 0 + 0) / 5 = 0.2 plus gradient 0.4 (above); image 1 has no
    # region pixel and is left out of the mean instead of halving it.
    assert region_depth_loss(pred, target, valid, region).item() == pytest.approx(0.6)
    # valid removes the residual-1 pixel: region {(0,0), row 1}: MSE 0, pairs all zero.
    valid[:, :, 0, 1] = False
    assert region_depth_loss(pred, target, valid, region).item() == pytest.approx(0.0)
    # No pixel anywhere: a zero loss that still backpropagates.
    pred.requires_grad_(True)
    loss = region_depth_loss(pred, target, valid, torch.zeros_like(region))
    loss.backward()
    assert loss.item() == 0.0 and (pred.grad == 0).all()


# --------------------------------------------------------------------------------- band


def test_boundary_band_hand_values():
    # One pixel, r = 1: dilation is the plus of 5 pixels, erosion is empty -> band = plus.
    mask = torch.zeros(1, 1, 5, 5, dtype=torch.bool)
    mask[0, 0, 2, 2] = True
    expected = torch.zeros_like(mask)
    expected[0, 0, 2, 1:4] = True
    expected[0, 0, 1:4, 2] = True
    assert torch.equal(boundary_band(mask, r=1), expected)
    # A mask filling the image is not eroded at the border (OpenCV's border): no band.
    assert not boundary_band(torch.ones(1, 1, 6, 6, dtype=torch.bool), r=2).any()


@pytest.mark.parametrize("r", [1, 3, 10])
def test_boundary_band_equals_region_masks(r):
    rng = np.random.default_rng(r)
    masks = []
    for _ in range(3):
        noise = rng.random((40, 56)) > 0.97  # sparse seeds, some touching the border
        blob = np.zeros((40, 56), dtype=bool)
        for y, x in zip(*np.nonzero(noise), strict=True):
            blob[max(y - 3, 0) : y + 4, max(x - 5, 0) : x + 6] = True
        masks.append(blob)
    masks[-1] = rng.random((40, 56)) > 0.5  # salt-and-pepper
    batch = torch.as_tensor(np.stack(masks))[:, None]
    band = boundary_band(batch, r=r)
    for i, m in enumerate(masks):
        np.testing.assert_array_equal(band[i, 0].numpy(), region_masks(m, r=r)["boundary"])


# --------------------------------------------------------------------------------- segmentation


def test_segmentation_loss_hand_values():
    # Logits 0: BCE = log 2 per pixel; p = 0.5; one of four pixels in the mask:
    # Dice = 1 - (2 * 0.5 + 1) / (4 * 0.5 + 1 + 1) = 1 - 2 / 4 = 0.5.
    mask = _mask([[True, False], [False, False]])
    bce, dice = segmentation_loss(torch.zeros(1, 1, 2, 2, dtype=torch.float64), mask)
    assert bce.item() == pytest.approx(math.log(2.0))
    assert dice.item() == pytest.approx(0.5)
    # Logits (2, -1) against (1, 0): BCE = (log(1 + e^-2) + log(1 + e^-1)) / 2
    # = (0.126928 + 0.313262) / 2; p = (0.880797, 0.268941),
    # Dice = 1 - (2 * 0.880797 + 1) / (0.880797 + 0.268941 + 1 + 1) = 0.123230.
    bce, dice = segmentation_loss(_img([[2.0, -1.0]]), _mask([[True, False]]))
    assert bce.item() == pytest.approx(0.5 * (math.log1p(math.exp(-2)) + math.log1p(math.exp(-1))))
    assert bce.item() == pytest.approx(0.220095, abs=1e-6)
    p0, p1 = 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(1))
    assert dice.item() == pytest.approx(1 - (2 * p0 + 1) / (p0 + p1 + 2))
    assert dice.item() == pytest.approx(0.123230, abs=1e-6)


def test_segmentation_bce_matches_torch_and_is_stable():
    g = torch.Generator().manual_seed(3)
    logits = 8.0 * torch.randn(3, 1, 7, 9, generator=g, dtype=torch.float64)
    logits[0, 0, 0, :3] = torch.tensor([200.0, -200.0, 0.0])  # no overflow at extreme logits
    mask = torch.rand(3, 1, 7, 9, generator=g) > 0.6
    bce, dice = segmentation_loss(logits, mask)
    ref = F.binary_cross_entropy_with_logits(logits, mask.double(), reduction="none")
    torch.testing.assert_close(bce, ref.mean(dim=(1, 2, 3)))
    p = torch.sigmoid(logits)
    y = mask.double()
    ref_dice = 1 - (2 * (p * y).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + y.sum((1, 2, 3)) + 1)
    torch.testing.assert_close(dice, ref_dice)


# --------------------------------------------------------------------------------- total


def test_exact_affine_disparity_gives_zero_depth_loss():
    depth, mask, valid = _scene()
    depth[0, 0, 0, :4] = torch.tensor([math.nan, 0.0, -1.0, math.inf])  # invalid targets
    pred = 2.0 * (1.0 / depth) + 0.3  # relative disparity, affine in the true disparity
    pred = torch.where(torch.isfinite(pred), pred, 0.7)
    logits = torch.where(mask, 30.0, -30.0).double()
    out = focusdepth_loss(pred, depth, valid, mask, logits)
    for term in (out.glb, out.fg, out.bd):
        assert term.item() == pytest.approx(0.0, abs=1e-12)  # float64 round-off only
    assert out.scale.item() == pytest.approx(0.5) and out.shift.item() == pytest.approx(-0.15)
    assert out.seg.item() == pytest.approx(0.0, abs=1e-9)  # confident, correct mask
    assert out.total.item() == pytest.approx(out.glb + out.fg + out.bd + out.seg)


def test_total_is_the_sum_of_terms_and_gradients_are_finite():
    depth, mask, valid = _scene(seed=4)
    depth[0, 0, 3, 3] = math.nan
    depth[0, 0, 5, 5] = 0.0
    g = torch.Generator().manual_seed(5)
    pred = (1.0 / depth).nan_to_num(0.0, posinf=0.0) + 0.05 * torch.randn(
        depth.shape, generator=g
    ).double()
    pred = pred.repeat(2, 1, 1, 1).requires_grad_(True)
    logits = torch.randn(2, 1, *depth.shape[-2:], generator=g).double().requires_grad_(True)
    depth, valid, mask = (t.repeat(2, 1, 1, 1) for t in (depth, valid, mask))
    out = focusdepth_loss(pred, depth, valid, mask, logits)
    assert out.total.item() == pytest.approx(
        (out.glb + out.fg + out.bd + out.bce + out.dice).item()
    )
    assert min(out.glb.item(), out.fg.item(), out.bd.item(), out.seg.item()) > 0
    out.total.backward()
    assert torch.isfinite(pred.grad).all() and torch.isfinite(logits.grad).all()
    assert pred.grad.abs().sum() > 0 and logits.grad.abs().sum() > 0


def test_no_mask_head_and_empty_target_mask():
    depth, mask, valid = _scene(seed=6)
    pred = 1.0 / depth + 0.01 * torch.arange(depth.numel()).reshape(depth.shape).double() % 0.05
    out = focusdepth_loss(pred, depth, valid, mask, None)
    assert out.seg.item() == 0.0 and out.bce.item() == 0.0 and out.dice.item() == 0.0
    # No target in the image: fg and bd are 0 (excluded), the global term stays.
    empty = focusdepth_loss(pred, depth, valid, torch.zeros_like(mask), None)
    assert empty.fg.item() == 0.0 and empty.bd.item() == 0.0
    assert empty.glb.item() == pytest.approx(out.glb.item())


def test_detached_alignment_gives_the_same_global_mse_gradient():
    # (a, b) minimise the global MSE, so its gradient through (a, b) vanishes (envelope
    # theorem): the detached and the differentiable alignment give the same gradient.
    depth, mask, valid = _scene(seed=7)
    g = torch.Generator().manual_seed(8)
    base = 1.0 / depth + 0.1 * torch.rand(depth.shape, generator=g, dtype=torch.float64)
    grads = []
    for detach in (True, False):
        pred = base.clone().requires_grad_(True)
        aligned, _, _ = scale_shift_align(pred, 1.0 / depth, valid, detach=detach)
        masked_mse(aligned, 1.0 / depth, valid).sum().backward()
        grads.append(pred.grad)
    torch.testing.assert_close(grads[0], grads[1])

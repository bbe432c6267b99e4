"""FocusDepth training losses (Focusable Monocular Depth Estimation, arXiv 2605.11756).

FocusDepth refines one prompted target's depth. Its loss scores the aligned prediction on three
regions of the target mask ``M`` (after :func:`depth_perception.core.metrics.region_masks`):
the global valid region ``V``, the foreground ``V & M`` and the boundary band ``V & B`` with
``B = dilate(M) - erode(M)`` (circular structuring element of radius ``r = 10`` px), plus a
segmentation term on the predicted mask ``M^``::

    L = L_glb + L_fg + L_bd + L_seg,   L_region = masked MSE + gradient loss,   L_seg = BCE + Dice

All depth tensors are batched ``(B, 1, H, W)``; masks are boolean of the same shape.

Choices where the paper is silent (each a documented, tested decision):

- **Space.** The network predicts relative disparity (Depth Anything V2's output). The target
  depth ``d`` is turned into disparity ``1 / d`` (1/m, not normalised) where it is valid (the
  caller's ``valid``, finite and > 0); the loss is in disparity units.
- **Alignment** (:func:`scale_shift_align`). Per image, ``D~ = a D^ + b`` with the closed-form
  2x2 least squares over the *global* valid region V (centred normal equations, as
  ``metrics.align_scale_shift``), once, and the same ``(a, b)`` serves all three regions: the
  foreground and band terms then measure the target's error in the frame of the whole scene, the
  way the paper's benchmark aligns before scoring regions. ``(a, b)`` are **detached** by
  default: (1) for L_glb the gradient is the same either way, since ``(a, b)`` minimise the
  global MSE and its derivative through them vanishes (envelope theorem; tested); (2) the
  foreground and band terms can then only be lowered by changing their own pixels, not by moving
  the background to tilt the global fit; (3) no backward pass through a near-singular 2x2 solve
  when the early prediction is almost constant. ``detach=False`` gives the MiDaS behaviour. An
  image whose prediction is constant over V (per-pixel variance at most ``eps * (|mean| + 1)^2``,
  eps the dtype's machine epsilon) gets ``a = 0, b = mean target disparity``, the best constant;
  an image without valid pixels gets ``a = b = 0``.
- **Gradient loss** (:func:`gradient_loss`): the multi-scale gradient matching loss of MiDaS
  (Ranftl et al., TPAMI 2020, Eq. 11 and its reference code): 4 scales, scale k keeps every
  ``2^k``-th row and column; on the residual ``R = D~ - D*`` (masked to the region) the L1 of
  horizontal and vertical forward differences over the pairs whose two pixels both lie in the
  region, divided by the number of region pixels at that scale; the scales are summed (not
  averaged), as MiDaS does. Weight 1 against the MSE (``grad_weight``), as ``L = MSE + grad``.
- **Masked MSE** (:func:`masked_mse`): mean of squared residuals over the region's pixels.
- **Empty regions.** Per image, a region with no pixel contributes 0 and the image is left out
  of that region's mean over the batch; a batch without any such pixel gives a zero loss still
  connected to the prediction's graph.
- **Segmentation** (:func:`segmentation_loss`): BCE with logits on ``M^`` against ``M`` (mean
  over all pixels: the mask is defined where depth is not) plus soft Dice on the sigmoid
  probabilities ``1 - (2 sum(p m) + eps) / (sum p + sum m + eps)`` with ``eps = 1`` (an empty
  prediction of an empty mask costs 0); per image, then the mean over the batch. The logits must
  already be at the depth resolution. ``mask_logits=None`` (a model without a mask head)
  makes L_seg 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Boundary band radius in pixels (the paper's r = 10, as ``metrics.region_masks``).
BAND_RADIUS = 10
#: Scales of the MiDaS gradient matching loss.
GRADIENT_SCALES = 4
#: Dice smoothing term.
DICE_EPS = 1.0


def _check(pred: torch.Tensor, *others: torch.Tensor) -> None:
    if pred.dim() != 4 or pred.shape[1] != 1:
        raise ValueError(f"expected (B, 1, H, W), got {tuple(pred.shape)}")
    for t in others:
        if t.shape != pred.shape:
            raise ValueError(f"shape mismatch: {tuple(pred.shape)} vs {tuple(t.shape)}")


def _sum(x: torch.Tensor) -> torch.Tensor:
    """Per-image sum (B,) of a (B, C, H, W) tensor."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def _per_image(x: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1) for broadcasting over pixels."""
    return x.reshape(-1, 1, 1, 1)


def scale_shift_align(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, detach: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image least-squares ``(a, b)`` minimising ``sum_mask (a pred + b - target)^2``.

    Returns ``(a * pred + b, a, b)`` with ``a, b`` of shape (B,); pixels outside ``mask`` are
    aligned too (same a, b) but took no part in the fit. ``detach``: fit on a detached copy of
    ``pred`` so no gradient flows through ``(a, b)`` (module notes). Target values outside the
    mask are never read (NaN there is harmless).
    """
    _check(pred, target, mask)
    m = mask.bool()
    x = pred.detach() if detach else pred
    t = torch.where(m, target, 0.0).to(x.dtype)
    w = m.to(x.dtype)
    n = _sum(w)
    mx = _sum(w * x) / n.clamp_min(1)
    my = _sum(t) / n.clamp_min(1)
    xc = torch.where(m, x - _per_image(mx), 0.0)
    yc = torch.where(m, t - _per_image(my), 0.0)
    var = _sum(xc * xc)
    cov = _sum(xc * yc)
    eps = torch.finfo(x.dtype).eps
    ok = var > n * eps * (mx.abs() + 1.0) ** 2
    a = torch.where(ok, cov / torch.where(ok, var, 1.0), 0.0)
    b = my - a * mx
    return _per_image(a) * pred + _per_image(b), a, b


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image (B,) mean of ``(pred - target)^2`` over ``mask``; 0 for an empty mask."""
    _check(pred, target, mask)
    m = mask.bool()
    sq = torch.where(m, (pred - torch.where(m, target, 0.0)) ** 2, 0.0)
    return _sum(sq) / _sum(m).clamp_min(1)


def gradient_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, scales: int = GRADIENT_SCALES
) -> torch.Tensor:
    """MiDaS multi-scale gradient matching loss per image (B,), summed over ``scales``.

    At scale k (every ``2^k``-th pixel): ``sum |dx R| + |dy R|`` over neighbour pairs inside
    ``mask``, with ``R = pred - target``, divided by the mask's pixel count at that scale (a
    scale without mask pixels adds 0).
    """
    _check(pred, target, mask)
    m = mask.bool()
    residual = torch.where(m, pred - torch.where(m, target, 0.0), 0.0)
    total = pred.new_zeros(pred.shape[0])
    for k in range(scales):
        step = 2**k
        r = residual[..., ::step, ::step]
        mk = m[..., ::step, ::step]
        gx = torch.where(
            mk[..., :, 1:] & mk[..., :, :-1], (r[..., :, 1:] - r[..., :, :-1]).abs(), 0
        )
        gy = torch.where(
            mk[..., 1:, :] & mk[..., :-1, :], (r[..., 1:, :] - r[..., :-1, :]).abs(), 0
        )
        total = total + (_sum(gx) + _sum(gy)) / _sum(mk).clamp_min(1)
    return total


def region_depth_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    region: torch.Tensor,
    scales: int = GRADIENT_SCALES,
    grad_weight: float = 1.0,
) -> torch.Tensor:
    """``masked_mse + grad_weight * gradient_loss`` on ``valid & region``, averaged over the
    images where that region has a pixel (scalar). ``pred`` is the *aligned* disparity and
    ``target`` the target disparity (alignment is done once per image by the caller)."""
    _check(pred, target, valid, region)
    m = valid.bool() & region.bool()
    per_image = masked_mse(pred, target, m) + grad_weight * gradient_loss(pred, target, m, scales)
    has = _sum(m) > 0
    return torch.where(has, per_image, 0.0).sum() / has.sum().clamp_min(1)


def _disk(r: int, device: torch.device) -> torch.Tensor:
    """(1, 1, 2r+1, 2r+1) float32 kernel of the offsets with ``dx^2 + dy^2 <= r^2``."""
    d = torch.arange(-r, r + 1, device=device)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    return (dx * dx + dy * dy <= r * r).float()[None, None]


def boundary_band(mask: torch.Tensor, r: int = BAND_RADIUS) -> torch.Tensor:
    """Boolean band ``dilate(mask) & ~erode(mask)`` (B, 1, H, W), the torch twin of
    ``metrics.region_masks(mask, r)["boundary"]``: same circular kernel, and, as OpenCV's
    default border, the outside of the image neither dilates nor erodes the mask (zero padding
    of the mask for dilation, zero padding of its complement for erosion). Counts are summed in
    float32, exact for any r used in practice."""
    if r < 1:
        raise ValueError("band radius r must be >= 1 pixel")
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"expected (B, 1, H, W), got {tuple(mask.shape)}")
    m = mask.bool().float()
    k = _disk(r, mask.device)
    with torch.no_grad():
        dilated = F.conv2d(m, k, padding=r) > 0.5
        eroded = F.conv2d(1.0 - m, k, padding=r) < 0.5
    return dilated & ~eroded


def segmentation_loss(
    logits: torch.Tensor, mask: torch.Tensor, eps: float = DICE_EPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image ``(bce, dice)``, each (B,): BCE with logits averaged over all pixels (the
    stable form ``max(x, 0) - x y + log(1 + exp(-|x|))``) and soft Dice
    ``1 - (2 sum(p y) + eps) / (sum p + sum y + eps)`` with ``p = sigmoid(x)``."""
    _check(logits, mask)
    y = mask.bool().to(logits.dtype)
    x = logits
    bce = x.clamp_min(0) - x * y + torch.log1p(torch.exp(-x.abs()))
    bce = _sum(bce) / (bce[0].numel())
    p = torch.sigmoid(x)
    dice = 1.0 - (2.0 * _sum(p * y) + eps) / (_sum(p) + _sum(y) + eps)
    return bce, dice


@dataclass(frozen=True)
class FocusDepthLoss:
    """The batch loss and its terms (scalars), plus the per-image alignment (B,)."""

    total: torch.Tensor
    glb: torch.Tensor
    fg: torch.Tensor
    bd: torch.Tensor
    seg: torch.Tensor
    bce: torch.Tensor
    dice: torch.Tensor
    scale: torch.Tensor
    shift: torch.Tensor


def focusdepth_loss(
    pred_disparity: torch.Tensor,
    target_depth: torch.Tensor,
    valid: torch.Tensor,
    target_mask: torch.Tensor,
    mask_logits: torch.Tensor | None,
    r: int = BAND_RADIUS,
    scales: int = GRADIENT_SCALES,
    grad_weight: float = 1.0,
    detach_alignment: bool = True,
    dice_eps: float = DICE_EPS,
) -> FocusDepthLoss:
    """``L = L_glb + L_fg + L_bd + L_seg`` (module notes). ``pred_disparity``: the network's
    relative disparity; ``target_depth``: metric (or any positive) depth, made disparity here;
    ``valid``: where the target is known (non-finite or non-positive targets are dropped too);
    ``target_mask``: the ground-truth target mask M; ``mask_logits``: the predicted mask's
    logits at the same resolution, or None."""
    _check(pred_disparity, target_depth, valid, target_mask)
    ok = valid.bool() & torch.isfinite(target_depth)
    ok = ok & (torch.where(ok, target_depth, 1.0) > 0)
    target_disp = torch.where(ok, 1.0 / torch.where(ok, target_depth, 1.0), 0.0)
    target_disp = target_disp.to(pred_disparity.dtype)
    aligned, a, b = scale_shift_align(pred_disparity, target_disp, ok, detach=detach_alignment)
    m = target_mask.bool()
    band = boundary_band(m, r)
    everywhere = torch.ones_like(m)
    glb = region_depth_loss(aligned, target_disp, ok, everywhere, scales, grad_weight)
    fg = region_depth_loss(aligned, target_disp, ok, m, scales, grad_weight)
    bd = region_depth_loss(aligned, target_disp, ok, band, scales, grad_weight)
    if mask_logits is None:
        bce = dice = seg = glb.new_zeros(())
    else:
        bce_i, dice_i = segmentation_loss(mask_logits, m, dice_eps)
        bce, dice = bce_i.mean(), dice_i.mean()
        seg = bce + dice
    total = glb + fg + bd + seg
    return FocusDepthLoss(total, glb, fg, bd, seg, bce, dice, a, b)

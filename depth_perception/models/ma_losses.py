"""MetricAnything teacher losses (paper appendix §7.6, after DepthPro §3.2 and its Table 17).

All terms work on **inverse depth**, batched ``(B, 1, H, W)``, with a validity mask of the same
shape (True where the target is known; non-finite targets are invalid too). The prediction and
the target must be in the same inverse-depth space, the one the teacher predicts in (DepthPro's
canonical inverse depth ``f_px / (W * depth)``, or metric 1/m); nothing here converts.

- **MAE** (:func:`trimmed_mae`): per image, the mean of ``|pred - target|`` over its valid
  pixels. On real data each image's 20 % largest residuals are dropped first (DepthPro: "discard
  pixels with an error in the top 20 % per image for real-world datasets"): of ``n`` valid
  pixels the ``floor(0.2 n)`` largest residuals go, the mean is over the other ones. MAE is on
  the *metric* (un-normalised) inverse depth, as DepthPro's stage 1 applies plain MAE to metric
  datasets and keeps the normalised SSI-MAE for non-metric ones; MetricAnything's data is
  metric.
- **SSI-MAGE** (:func:`ssi_mage`): the scale-and-shift-invariant mean absolute gradient error.
  Prediction and target are each normalised per image over the target's valid pixels by their
  median and their mean absolute deviation from it (:func:`ssi_normalize`, MiDaS / DepthPro),
  then the multi-scale derivative loss of DepthPro's Eq. 2 with the Scharr operator, L1 and
  M = 6 scales (:func:`multiscale_gradient_loss`).
- **Total** (:func:`metric_anything_loss`): per image ``15 * MAE + 5 * SSI-MAGE``, SSI-MAGE on
  synthetic images only (real depth is noisy at edges; DepthPro's condition 1C); MAE trimmed on
  real images, untrimmed on synthetic ones; the batch loss is the mean over images with at
  least one valid pixel.

Choices where the papers are silent (each is a documented, tested decision):

- Medians of an even count are the lower middle value (``torch.nanmedian``). A MAD of 0
  (a constant image) is clamped to ``eps``, so that image normalises to 0.
- Scharr kernels are normalised by 1/32 so that the operator is a derivative per pixel (a ramp
  of slope 1 has gradient 1): ``gx = [[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]] / 32``, gy its
  transpose, applied without padding. The per-pixel error is ``|dgx|^p + |dgy|^p`` (the L1 norm
  of the gradient difference for p = 1).
- Invalid pixels never leak into a gradient: a gradient pixel counts only if all 9 pixels of
  its Scharr window are valid; image borders are not padded, so they have no gradient.
- Scale j+1 is scale j blurred by the separable binomial ``[1, 3, 3, 1] / 8`` (4x4) and
  subsampled by 2 (a strided convolution without padding: ``H' = floor((H - 4) / 2) + 1``); a
  coarse pixel is valid only if all 16 pixels it averages are. Linear ramps stay exactly linear
  (slope x2 per scale). Scale 0 is the input itself.
- ``N_j`` in Eq. 2 is the number of valid gradient pixels of scale j in that image; scales with
  none (too small, or no fully valid window) are left out of that image's mean over scales.
- An image with no valid pixel contributes nothing; a batch without any gives a zero loss that
  is still connected to the prediction's graph.

The student's distillation loss (distance-balanced log depth D_log, on metric depth) and the
comparison losses of the paper's Table 14 follow at the end of the file, with their own notes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Loss weights of the teacher (MetricAnything §7.6): L = 15 * MAE + 5 * SSI-MAGE.
MAE_WEIGHT = 15.0
SSI_MAGE_WEIGHT = 5.0
#: Fraction of each real image's largest residuals MAE drops.
REAL_TRIM = 0.2
#: Scales of the multi-scale gradient loss.
GRADIENT_SCALES = 6

_SCHARR = torch.tensor([[-3.0, 0.0, 3.0], [-10.0, 0.0, 10.0], [-3.0, 0.0, 3.0]]) / 32.0
_BINOMIAL = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8.0


def _check(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Validate shapes; the effective validity: ``mask`` and a finite target."""
    if pred.dim() != 4 or pred.shape[1] != 1:
        raise ValueError(f"pred must be (B, 1, H, W), got {tuple(pred.shape)}")
    if target.shape != pred.shape or mask.shape != pred.shape:
        raise ValueError(
            f"pred {tuple(pred.shape)}, target {tuple(target.shape)} and mask "
            f"{tuple(mask.shape)} must have the same shape"
        )
    return mask.bool() & torch.isfinite(target)


def trimmed_mae(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    trim: float | torch.Tensor = REAL_TRIM,
) -> torch.Tensor:
    """Per-image (B,) mean absolute error over valid pixels after dropping the ``floor(trim *
    n)`` largest residuals of each image's ``n`` valid ones. ``trim`` is one fraction or one
    per image (B,); 0 keeps every pixel. Images without valid pixels give 0."""
    ok = _check(pred, target, mask)
    b = pred.shape[0]
    trim = torch.as_tensor(trim, dtype=torch.float64, device=pred.device).expand(b)
    if ((trim < 0) | (trim >= 1)).any():
        raise ValueError("trim must be in [0, 1)")
    # Select before subtracting so a NaN target cannot leak NaN into the gradient.
    resid = (pred - torch.where(ok, target, 0.0)).abs()
    resid = torch.where(ok, resid, torch.inf).reshape(b, -1)
    ordered = resid.sort(dim=1).values
    n = ok.reshape(b, -1).sum(dim=1)
    keep = n - torch.floor(n.double() * trim + 1e-9).long()
    kept = torch.arange(ordered.shape[1], device=pred.device)[None, :] < keep[:, None]
    return torch.where(kept, ordered, 0.0).sum(dim=1) / keep.clamp_min(1)


def ssi_normalize(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per image, ``(x - median) / MAD`` over the valid pixels (MAD: mean absolute deviation
    from the median; lower median for an even count; MAD clamped to ``eps``). Invalid pixels
    are 0 in the result. (B, 1, H, W) in and out."""
    b = x.shape[0]
    ok = mask.bool()
    flat = torch.where(ok, x, torch.nan).reshape(b, -1)
    med = flat.nanmedian(dim=1).values.reshape(b, 1, 1, 1)
    med = torch.nan_to_num(med)  # an image without a valid pixel
    dev = torch.where(ok, (x - med).abs(), 0.0)
    count = ok.reshape(b, -1).sum(dim=1).clamp_min(1).reshape(b, 1, 1, 1)
    mad = (dev.reshape(b, -1).sum(dim=1).reshape(b, 1, 1, 1) / count).clamp_min(eps)
    return torch.where(ok, (x - med) / mad, 0.0)


def scharr_gradients(x: torch.Tensor) -> torch.Tensor:
    """Scharr derivatives (B, 2, H-2, W-2) of (B, 1, H, W): channel 0 along x (columns, right
    minus left), channel 1 along y (rows, down minus up), per pixel (kernels / 32), no padding."""
    k = _SCHARR.to(dtype=x.dtype, device=x.device)
    return F.conv2d(x, torch.stack([k, k.T])[:, None])


def blur_downsample(x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One pyramid step: blur by the binomial [1, 3, 3, 1] / 8 (separable 4x4) and keep every
    2nd pixel, without padding; a coarse pixel is valid only if all 16 pixels it averages are.
    Invalid input pixels must hold finite values (they do not reach a valid output)."""
    k1 = _BINOMIAL.to(dtype=x.dtype, device=x.device)
    out = F.conv2d(x, torch.outer(k1, k1)[None, None], stride=2)
    invalid = F.max_pool2d((~valid.bool()).to(x.dtype), kernel_size=4, stride=2)
    return out, invalid == 0


def multiscale_gradient_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    scales: int = GRADIENT_SCALES,
    p: float = 1.0,
) -> torch.Tensor:
    """DepthPro's Eq. 2 with the Scharr operator, per image (B,):
    ``1/M' sum_j 1/N_j sum_i (|dgx|^p + |dgy|^p)`` over the scales j < ``scales`` that have
    valid gradient pixels (M' of them). p = 1: MAGE; p = 2: MSGE. No normalisation here."""
    ok = _check(pred, target, mask)
    b = pred.shape[0]
    pred = torch.where(ok, pred, 0.0)
    target = torch.where(ok, target, 0.0)
    total = pred.new_zeros(b)
    used = pred.new_zeros(b)
    for j in range(scales):
        if j > 0:
            if min(pred.shape[-2:]) < 4:
                break
            pred, _ = blur_downsample(pred, ok)
            target, ok = blur_downsample(target, ok)
        if min(pred.shape[-2:]) < 3:
            break
        diff = (scharr_gradients(pred) - scharr_gradients(target)).abs()
        err = diff.pow(p).sum(dim=1, keepdim=True) if p != 1 else diff.sum(dim=1, keepdim=True)
        good = F.max_pool2d((~ok).to(pred.dtype), kernel_size=3, stride=1) == 0
        n = good.reshape(b, -1).sum(dim=1)
        mean = torch.where(good, err, 0.0).reshape(b, -1).sum(dim=1) / n.clamp_min(1)
        total = total + torch.where(n > 0, mean, 0.0)
        used = used + (n > 0).to(pred.dtype)
    return total / used.clamp_min(1)


def ssi_mage(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, scales: int = GRADIENT_SCALES
) -> torch.Tensor:
    """Scale-and-shift-invariant MAGE per image (B,): :func:`ssi_normalize` both maps over the
    target's valid pixels, then :func:`multiscale_gradient_loss` (Scharr, L1, ``scales``)."""
    ok = _check(pred, target, mask)
    target = torch.where(ok, target, 0.0)
    return multiscale_gradient_loss(
        ssi_normalize(pred, ok), ssi_normalize(target, ok), ok, scales=scales, p=1.0
    )


@dataclass(frozen=True)
class TeacherLoss:
    """The batch loss and its per-image terms (B,) before weighting (``ssi_mage`` is 0 for
    real images, which do not use it)."""

    total: torch.Tensor
    mae: torch.Tensor
    ssi_mage: torch.Tensor


def metric_anything_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    synthetic: bool | torch.Tensor,
    mae_weight: float = MAE_WEIGHT,
    ssi_mage_weight: float = SSI_MAGE_WEIGHT,
    trim: float = REAL_TRIM,
    scales: int = GRADIENT_SCALES,
) -> TeacherLoss:
    """The teacher's loss on inverse depth: per image ``mae_weight * MAE + ssi_mage_weight *
    SSI-MAGE``, where real images (``synthetic`` False) use the trimmed MAE and no SSI-MAGE and
    synthetic ones the full MAE and SSI-MAGE; mean over the images with a valid pixel.
    ``synthetic``: one flag for the batch or one per image (B,)."""
    ok = _check(pred, target, mask)
    b = pred.shape[0]
    synth = torch.as_tensor(synthetic, dtype=torch.bool, device=pred.device).expand(b)
    mae = trimmed_mae(pred, target, ok, trim=torch.where(synth, 0.0, float(trim)))
    grad = pred.new_zeros(b)
    if synth.any():
        idx = synth.nonzero().squeeze(1)
        grad = grad.index_copy(0, idx, ssi_mage(pred[idx], target[idx], ok[idx], scales))
    per_image = mae_weight * mae + ssi_mage_weight * grad
    has = ok.reshape(b, -1).any(dim=1)
    total = torch.where(has, per_image, 0.0).sum() / has.sum().clamp_min(1)
    return TeacherLoss(total=total, mae=mae, ssi_mage=grad)


# ---------------------------------------------------------------------------------------------
# Student distillation (MetricAnything §7.6): distance-balanced log depth
# ---------------------------------------------------------------------------------------------
#
# The prompt-free student learns the teacher's pseudo-labels in metric *depth*, through the
# distance-balanced log depth ``D_log = 1 - ln(D) / ln(C)`` with ``C = 400`` (metres): 1 at
# 1 m, 0.5 at 20 m, 0 at 400 m, so the near and the far half of a street's log range weigh the
# same. ``L_student`` is the per-image mean of ``|D_log(pred) - D_log(label)|`` over the valid
# pixels; SSI-MAGE (above) is applied to the two D_log maps; ``L = 10 * L_student + 2 *
# SSI-MAGE``. Choices where the paper is silent:
#
# - **No clamp to (0, C].** D_log is the affine map of ln D that puts 1 m at 1 and C at 0; it
#   is left unclamped on both sides. D > C gives D_log < 0 (800 m: -0.116) as D < 1 m gives
#   D_log > 1 (5 cm: 1.5), and the L1 term stays ``|ln D_pred - ln D_label| / ln C``
#   everywhere. Clamping the prediction at C would zero its gradient whenever it overshoots C,
#   even for a near label; clamping the label would make every depth beyond C the same, which
#   is no longer a distance. Pixels a caller does not want (sky at the teacher's 1 km clamp)
#   are removed with the mask.
# - **D <= 0.** A label that is not finite or not > 0 is invalid (as if masked). Depths are
#   floored at ``MIN_LOG_DEPTH`` = 1 mm before the logarithm, the nearest depth the network
#   can output (its inverse depth is clamped to at most 1e3 1/m): no log(0) for a degenerate
#   prediction, no effect on the network's own outputs.
# - **SSI-MAGE on D_log.** SSI-MAGE normalises by median and MAD, so on D_log it equals
#   SSI-MAGE on ln D and does not depend on C (tested). It applies to every image by default
#   (pseudo-labels are dense and sharp); ``use_ssi_mage`` False for an image (e.g. sparse,
#   noisy real ground truth mixed into the batch) leaves it out, as the teacher's loss does
#   for real data.
# - Images without a valid pixel are left out of the batch mean; a batch without any gives a
#   zero loss still connected to the prediction's graph.
#
# The paper's Table 14 compares this pixel term with L1 on depth, on log depth and on inverse
# depth; :data:`STUDENT_PIXEL_LOSSES` holds the four under one signature, and
# :func:`student_distillation_loss` takes ``pixel_loss=`` to swap the term for that ablation
# (SSI-MAGE stays on D_log; ``ssi_mage_weight=0`` compares the pixel terms alone).

#: C of the distance-balanced log depth, metres (MetricAnything §7.6): D_log(C) = 0.
LOG_DEPTH_RANGE = 400.0
#: Loss weights of the student (§7.6): L = 10 * L_student + 2 * SSI-MAGE.
STUDENT_WEIGHT = 10.0
STUDENT_SSI_MAGE_WEIGHT = 2.0
#: Depths are floored here (metres) before a logarithm or an inverse: the network's nearest.
MIN_LOG_DEPTH = 1e-3


def _float(x: torch.Tensor) -> torch.Tensor:
    """Half / bf16 -> float32 for logarithms and inverses; float32 / float64 unchanged."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def distance_balanced_log_depth(
    depth: torch.Tensor, c: float = LOG_DEPTH_RANGE, min_depth: float = MIN_LOG_DEPTH
) -> torch.Tensor:
    """``D_log = 1 - ln(max(D, min_depth)) / ln(c)`` elementwise (metres in; 1 at 1 m, 0 at
    ``c``, negative beyond it: not clamped, see the section notes)."""
    if not c > 1.0:
        raise ValueError(f"C must be > 1 m, got {c}")
    return 1.0 - torch.log(_float(depth).clamp_min(min_depth)) / math.log(c)


def _depth_check(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Validity for depth targets: ``mask``, finite and > 0."""
    ok = _check(pred, target, mask)
    return ok & (torch.where(ok, target, 1.0) > 0)


def _masked_l1(a: torch.Tensor, b: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """Per-image (B,) mean of ``|a - b|`` over ``ok``; 0 for an image without valid pixels.
    ``b`` is selected before subtracting so an invalid target cannot leak NaN."""
    n = ok.reshape(ok.shape[0], -1).sum(dim=1)
    err = torch.where(ok, (a - torch.where(ok, b, 0.0)).abs(), 0.0)
    return err.reshape(ok.shape[0], -1).sum(dim=1) / n.clamp_min(1)


def _safe(target: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """The target with invalid pixels set to 1 m (finite for the transforms below)."""
    return torch.where(ok, _float(target), 1.0)


def _log(depth: torch.Tensor) -> torch.Tensor:
    return torch.log(_float(depth).clamp_min(MIN_LOG_DEPTH))


def _inverse(depth: torch.Tensor) -> torch.Tensor:
    return 1.0 / _float(depth).clamp_min(MIN_LOG_DEPTH)


def l1_distance_balanced_log(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, c: float = LOG_DEPTH_RANGE
) -> torch.Tensor:
    """L_student per image (B,): mean ``|D_log(pred) - D_log(target)|`` over valid pixels;
    pred and target are metric depth (B, 1, H, W)."""
    ok = _depth_check(pred, target, mask)
    return _masked_l1(
        distance_balanced_log_depth(pred, c), distance_balanced_log_depth(_safe(target, ok), c), ok
    )


def l1_depth(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Table 14's L1 on depth per image (B,): mean ``|D_pred - D_label|`` (metres)."""
    ok = _depth_check(pred, target, mask)
    return _masked_l1(_float(pred), _safe(target, ok), ok)


def l1_log_depth(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Table 14's L1 on log depth per image (B,): mean ``|ln D_pred - ln D_label|`` (depths
    floored at ``MIN_LOG_DEPTH``). Equals ``ln(C) *`` :func:`l1_distance_balanced_log`."""
    ok = _depth_check(pred, target, mask)
    return _masked_l1(_log(pred), _log(_safe(target, ok)), ok)


def l1_inverse_depth(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Table 14's L1 on inverse depth per image (B,): mean ``|1/D_pred - 1/D_label|`` (1/m;
    depths floored at ``MIN_LOG_DEPTH``)."""
    ok = _depth_check(pred, target, mask)
    return _masked_l1(_inverse(pred), _inverse(_safe(target, ok)), ok)


#: The pixel terms of the paper's Table 14, by name: (pred, target, mask) -> (B,).
STUDENT_PIXEL_LOSSES = {
    "dlog": l1_distance_balanced_log,
    "depth": l1_depth,
    "log_depth": l1_log_depth,
    "inverse_depth": l1_inverse_depth,
}


@dataclass(frozen=True)
class StudentLoss:
    """The batch loss and its per-image terms (B,) before weighting (``ssi_mage`` is 0 for
    images without it)."""

    total: torch.Tensor
    pixel: torch.Tensor  # L_student (or the ablation's pixel term)
    ssi_mage: torch.Tensor


def student_distillation_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    use_ssi_mage: bool | torch.Tensor = True,
    student_weight: float = STUDENT_WEIGHT,
    ssi_mage_weight: float = STUDENT_SSI_MAGE_WEIGHT,
    c: float = LOG_DEPTH_RANGE,
    scales: int = GRADIENT_SCALES,
    pixel_loss: str = "dlog",
) -> StudentLoss:
    """The student's loss on metric depth (B, 1, H, W): per image ``student_weight *
    L_student + ssi_mage_weight * SSI-MAGE(D_log)`` (10 and 2), mean over the images with a
    valid pixel (section notes above). ``use_ssi_mage``: one flag or one per image (B,);
    ``pixel_loss``: a :data:`STUDENT_PIXEL_LOSSES` name (``dlog``: the paper's L_student)."""
    if pixel_loss not in STUDENT_PIXEL_LOSSES:
        raise ValueError(f"pixel_loss {pixel_loss!r}: choose one of {list(STUDENT_PIXEL_LOSSES)}")
    ok = _depth_check(pred, target, mask)
    b = pred.shape[0]
    if pixel_loss == "dlog":
        pixel = l1_distance_balanced_log(pred, target, ok, c)
    else:
        pixel = STUDENT_PIXEL_LOSSES[pixel_loss](pred, target, ok)
    use = torch.as_tensor(use_ssi_mage, dtype=torch.bool, device=pred.device).expand(b)
    grad = pixel.new_zeros(b)
    if use.any() and ssi_mage_weight != 0:
        idx = use.nonzero().squeeze(1)
        log_pred = distance_balanced_log_depth(pred[idx], c)
        log_target = distance_balanced_log_depth(_safe(target[idx], ok[idx]), c)
        grad = grad.index_copy(0, idx, ssi_mage(log_pred, log_target, ok[idx], scales))
    per_image = student_weight * pixel + ssi_mage_weight * grad
    has = ok.reshape(b, -1).any(dim=1)
    total = torch.where(has, per_image, 0.0).sum() / has.sum().clamp_min(1)
    return StudentLoss(total=total, pixel=pixel, ssi_mage=grad)

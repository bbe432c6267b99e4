"""RoIAlign in pure PyTorch with torchvision's semantics, for machines without torchvision.

Why: SAM3's box-prompt path (``transformers.models.sam3.modeling_sam3``) pools box features with
``torchvision.ops.roi_align``, and torchvision has no wheel that matches the CPU torch build used
here. :func:`roi_align` reproduces the torchvision CPU kernel's arithmetic:

* the RoI ``(x1, y1, x2, y2)`` is scaled by ``spatial_scale`` and, when ``aligned``, shifted by
  half a pixel; when not ``aligned`` its width and height are forced to at least 1;
* each of the ``pooled_h x pooled_w`` bins averages ``grid_h x grid_w`` bilinear samples placed at
  the centres of a regular sub-grid; the grid is ``sampling_ratio`` when > 0, otherwise
  ``ceil(roi_size / pooled_size)`` per RoI (a grid of 0 gives a zero bin);
* a sample with ``y < -1``, ``y > H``, ``x < -1`` or ``x > W`` (or NaN) contributes 0; otherwise
  the coordinates are clamped to ``[0, H - 1]`` / ``[0, W - 1]`` before interpolation.

Vectorisation: the bilinear weights of a sample factor into a row part and a column part, and
the in-range test is a product of a row test and a column test. So every bin is a sandwich
``A_y @ feature_map @ A_x^T`` with small interpolation matrices ``A_y`` (pooled_h x H) and
``A_x`` (pooled_w x W) per RoI, built with one ``scatter_add`` each; sub-grids of different
sizes are padded to the largest one with zero weights. No Python loop runs per RoI, bin or
sample, and autograd differentiates the result with respect to ``input`` (the boxes get no
gradient, as in torchvision).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence

import torch
from torch import Tensor

BoxesLike = Tensor | Sequence[Tensor]

# Marks the stand-in module so install_roi_align() can recognise its own work.
_SHIM_FLAG = "_depth_perception_roi_align_shim"


def _rois_from_boxes(boxes: BoxesLike) -> Tensor:
    """(K, 5) rows ``(batch_index, x1, y1, x2, y2)`` from either torchvision box format."""
    if isinstance(boxes, Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise ValueError(f"boxes as a Tensor must be (K, 5), got {tuple(boxes.shape)}")
        return boxes
    if not isinstance(boxes, (list, tuple)) or not boxes:
        raise ValueError("boxes must be a Tensor[K, 5] or a non-empty list of Tensor[L, 4]")
    for per_image in boxes:
        if per_image.dim() != 2 or per_image.shape[1] != 4:
            raise ValueError(
                f"each per-image box tensor must be (L, 4), got {tuple(per_image.shape)}"
            )
    coords = torch.cat(list(boxes), dim=0)
    index = torch.cat(
        [
            torch.full((len(b), 1), float(i), dtype=coords.dtype, device=coords.device)
            for i, b in enumerate(boxes)
        ]
    )
    return torch.cat([index, coords], dim=1)


def _axis_weights(
    start: Tensor, bin_size: Tensor, grid: Tensor, pooled: int, length: int, max_grid: int
) -> Tensor:
    """Interpolation matrix (K, pooled, length) along one axis, summed over the sub-grid.

    The kernel drops a sample when *either* coordinate is out of range; that test is the
    product of a row test and a column test, so zeroing the weights of out-of-range rows here
    and of out-of-range columns in the other call is exact.
    """
    dtype = start.dtype
    k = start.shape[0]
    bins = torch.arange(pooled, device=start.device, dtype=dtype).view(1, pooled, 1)
    steps = torch.arange(max_grid, device=start.device, dtype=dtype).view(1, 1, max_grid)
    start, bin_size = start.view(k, 1, 1), bin_size.view(k, 1, 1)
    grid_f = grid.to(dtype).clamp(min=1).view(k, 1, 1)
    # Same operation order as the reference kernel: start + p * bin + (i + 0.5) * bin / grid.
    coord = start + bins * bin_size + (steps + 0.5) * bin_size / grid_f  # (K, pooled, G)

    in_range = (coord >= -1.0) & (coord <= length)  # False for NaN as well
    keep = (in_range & (steps < grid.view(k, 1, 1))).to(dtype)  # also drops grid padding
    coord = torch.where(in_range, coord, torch.zeros_like(coord)).clamp(min=0)
    low = coord.floor().long()
    at_edge = low >= length - 1
    low = torch.where(at_edge, torch.full_like(low, length - 1), low)
    high = torch.where(at_edge, low, low + 1)
    frac = torch.where(at_edge, torch.zeros_like(coord), coord - low.to(dtype))

    matrix = torch.zeros(k, pooled, length, dtype=dtype, device=start.device)
    matrix.scatter_add_(2, low.view(k, pooled, -1), ((1.0 - frac) * keep).view(k, pooled, -1))
    matrix.scatter_add_(2, high.view(k, pooled, -1), (frac * keep).view(k, pooled, -1))
    return matrix


def _adaptive_grid(roi_size: Tensor, pooled: int) -> Tensor:
    """``ceil(roi_size / pooled)`` per RoI; 0 (an all-zero output) for NaN or infinite RoIs."""
    ratio = roi_size / pooled
    return torch.where(torch.isfinite(ratio), torch.ceil(ratio), torch.zeros_like(ratio)).long()


def roi_align(
    input: Tensor,
    boxes: BoxesLike,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """Drop-in for ``torchvision.ops.roi_align``: (N, C, H, W) -> (K, C, pooled_h, pooled_w).

    ``boxes`` is a Tensor[K, 5] of ``(batch_index, x1, y1, x2, y2)`` or a list/tuple of
    per-image Tensor[L, 4] of ``(x1, y1, x2, y2)``, in input-image coordinates (scaled by
    ``spatial_scale``). Half and bfloat16 inputs are computed in float32 and cast back.
    """
    if input.dim() != 4:
        raise ValueError(f"input must be (N, C, H, W), got {tuple(input.shape)}")
    pooled_h, pooled_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    pooled_h, pooled_w = int(pooled_h), int(pooled_w)
    rois = _rois_from_boxes(boxes).detach()
    _, channels, height, width = input.shape
    k = rois.shape[0]
    if k == 0 or input.numel() == 0:
        return input.new_zeros(k, channels, pooled_h, pooled_w)

    work = input.dtype if input.dtype in (torch.float32, torch.float64) else torch.float32
    rois = rois.to(device=input.device, dtype=work)
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (rois[:, i] * spatial_scale - offset for i in range(1, 5))
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:  # malformed RoIs become 1 x 1
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_h, bin_w = roi_h / pooled_h, roi_w / pooled_w
    if sampling_ratio > 0:
        grid_h = torch.full((k,), sampling_ratio, dtype=torch.long, device=input.device)
        grid_w = grid_h
    else:  # adaptive: about one sample per input pixel; <= 0 for empty aligned RoIs
        grid_h = _adaptive_grid(roi_h, pooled_h)
        grid_w = _adaptive_grid(roi_w, pooled_w)
    max_gh = max(int(grid_h.max()), 1)
    max_gw = max(int(grid_w.max()), 1)

    rows = _axis_weights(y1, bin_h, grid_h, pooled_h, height, max_gh)
    cols = _axis_weights(x1, bin_w, grid_w, pooled_w, width, max_gw)

    count = (grid_h * grid_w).clamp(min=1).to(work)
    empty = (grid_h <= 0) | (grid_w <= 0)
    scale = torch.where(empty, torch.zeros_like(count), 1.0 / count).view(k, 1, 1, 1)

    feats = input.to(work)[rois[:, 0].long()]  # (K, C, H, W)
    pooled = torch.einsum("kph,kchw->kcpw", rows, feats)
    pooled = torch.einsum("kcpw,kqw->kcpq", pooled, cols) * scale
    return pooled.to(input.dtype)


def _sam3_roi_align(*args: object, **kwargs: object) -> Tensor:
    """Late-bound entry point so tests (and profilers) can swap :func:`roi_align`."""
    return sys.modules[__name__].roi_align(*args, **kwargs)


def install_roi_align() -> bool:
    """Make SAM3's box path use :func:`roi_align` when torchvision is absent.

    ``modeling_sam3`` runs ``import torchvision`` only if ``is_torchvision_available()`` and
    later calls ``torchvision.ops.roi_align(features, boxes_per_image, roi_size)``; without
    torchvision the module-level name ``torchvision`` is missing and box prompts fail with a
    NameError. We bind that one name to a stand-in module exposing ``ops.roi_align`` and leave
    everything else alone. A real torchvision (already imported by transformers) is never
    replaced. Idempotent. Returns True when the stand-in is in place.
    """
    from transformers.models.sam3 import modeling_sam3
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        return False
    current = getattr(modeling_sam3, "torchvision", None)
    if current is not None:
        return bool(getattr(current, _SHIM_FLAG, False))
    shim = types.ModuleType("torchvision_roi_align_shim")
    shim.ops = types.SimpleNamespace(roi_align=_sam3_roi_align)
    setattr(shim, _SHIM_FLAG, True)
    modeling_sam3.torchvision = shim
    return True

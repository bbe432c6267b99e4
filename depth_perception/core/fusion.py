"""Fusing a model's dense depth with the sensor depth it was given.

A completion model predicts every pixel, but where the sensor measured, its measurement is
usually the better number (a tiny model's output is blurred at its patch size, and a big one's
can be off in scale on an unseen camera). Three ways to combine them, by name in
:data:`FUSION_MODES`:

- ``none``: the model's output everywhere (what the paper evaluates);
- ``keep``: the sensor's depth where measured, the model's only in the holes;
- ``align``: as ``keep``, but inside the holes the model's depth is rescaled to agree with the
  measurements around each hole (:func:`align_to_measured`). The model contributes the shape
  of the surface across the hole, the sensor its metric level.

The confidence of the fused depth (:func:`fused_confidence`) says where to trust it: 1 where
the sensor's measurement is published, and in the holes the model's own probability times a
factor that falls with the distance to the nearest measurement — a pixel beside a measured edge
is an easy hole, the middle of a large blind region a hopeless one.

Pure numpy/OpenCV, no ROS.
"""

from __future__ import annotations

import cv2
import numpy as np

from depth_perception.core.baselines import fill_inpaint
from depth_perception.core.depth import sanitize_depth

__all__ = ["FUSION_MODES", "align_to_measured", "fuse_measured", "fused_confidence"]

FUSION_MODES = ("none", "keep", "align")


def align_to_measured(
    pred: np.ndarray, measured: np.ndarray, radius: float = 5.0, max_side: int = 320
) -> np.ndarray:
    """Local scale alignment of a dense prediction to sparse or holey measured depth.

    The log ratio ``log(measured / pred)`` is known on the measured pixels; it is inpainted
    into the holes (OpenCV Telea, ``radius`` and ``max_side`` as in
    :func:`~depth_perception.core.baselines.fill_inpaint`) and the prediction there is
    multiplied by its exponential. Measured pixels are returned bit-exact. If the prediction
    equals the truth up to a scale that varies slowly across the image, the holes come out
    exact, edges inside a hole included — which interpolating the measurements alone cannot
    do. With a flat prediction the result is a log-depth inpainting of the measurements.

    Returns float32 metres: NaN where the prediction is invalid and nothing was measured.
    With no pixel valid in both inputs there is nothing to align to and ``pred`` is returned
    with the measurements pasted in.
    """
    p, z = sanitize_depth(pred), sanitize_depth(measured)
    if p.shape != z.shape:
        raise ValueError(f"prediction {p.shape} and measured depth {z.shape} differ in shape")
    measured_px = np.isfinite(z)
    anchors = measured_px & np.isfinite(p)
    out = p.copy()
    if anchors.any() and not measured_px.all():
        log_ratio = np.full(p.shape, np.nan, dtype=np.float32)
        log_ratio[anchors] = np.log(z[anchors]) - np.log(p[anchors])
        # fill_inpaint treats <= 0 as a hole: shift the known ratios to start at 1.
        shift = np.float32(1.0 - log_ratio[anchors].min())
        filled = fill_inpaint(log_ratio + shift, "telea", radius=radius, max_side=max_side)
        out *= np.exp(filled - shift)
    out[measured_px] = z[measured_px]
    return out


def fuse_measured(pred: np.ndarray, measured: np.ndarray, mode: str) -> np.ndarray:
    """Combine a model's depth with the sensor depth by ``mode`` (see the module docstring)."""
    if mode not in FUSION_MODES:
        raise ValueError(f"unknown fusion mode {mode!r}; choose from {list(FUSION_MODES)}")
    if mode == "none":
        return pred
    if mode == "align":
        return align_to_measured(pred, measured)
    z = sanitize_depth(measured)
    out = np.array(pred, dtype=np.float32, copy=True)
    measured_px = np.isfinite(z)
    out[measured_px] = z[measured_px]
    return out


def fused_confidence(
    model_confidence: np.ndarray | None,
    measured: np.ndarray,
    mode: str,
    hole_scale: float = 0.05,
) -> np.ndarray:
    """Per-pixel confidence in [0, 1] of :func:`fuse_measured`'s output (float32, (H, W)).

    ``none``: the model's own probability everywhere. ``keep`` / ``align``: 1.0 where the
    measurement is published; in a hole, the model's probability times ``exp(-d / L)`` with
    ``d`` the distance in pixels to the nearest measured pixel and ``L = hole_scale`` x the
    image's longer side (at 640x480 and 0.05: 1/e at 32 px). Without a measurement anywhere
    every hole pixel is 0. A model without a confidence output counts as probability 1.
    """
    if mode not in FUSION_MODES:
        raise ValueError(f"unknown fusion mode {mode!r}; choose from {list(FUSION_MODES)}")
    z = sanitize_depth(measured)
    prob = (
        np.ones(z.shape, np.float32)
        if model_confidence is None
        else np.clip(np.nan_to_num(model_confidence, nan=0.0), 0.0, 1.0).astype(np.float32)
    )
    if prob.shape != z.shape:
        raise ValueError(f"confidence {prob.shape} and measured depth {z.shape} differ in shape")
    if mode == "none":
        return prob
    measured_px = np.isfinite(z)
    if not measured_px.any():
        return np.zeros_like(prob)
    # Distance of every pixel to the nearest measured one (0 on measured pixels).
    distance = cv2.distanceTransform((~measured_px).astype(np.uint8), cv2.DIST_L2, 5)
    length = max(hole_scale * max(z.shape), 1e-6)
    out = prob * np.exp(-distance / np.float32(length)).astype(np.float32)
    out[measured_px] = 1.0
    return out

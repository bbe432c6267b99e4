"""Depth, error and mask colouring plus simple figure assembly, all RGB uint8 (H, W, 3).

OpenCV colormaps keep this fast and free of plotting dependencies; ``cv2.applyColorMap``
returns BGR, so everything is flipped to RGB here and back to BGR only when writing a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from depth_perception.core.metrics import valid_depth

_CMAPS = {
    "turbo": cv2.COLORMAP_TURBO,
    "jet": cv2.COLORMAP_JET,
    "inferno": cv2.COLORMAP_INFERNO,
    "magma": cv2.COLORMAP_MAGMA,
    "plasma": cv2.COLORMAP_PLASMA,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "bone": cv2.COLORMAP_BONE,
}

INVALID_DEPTH_RGB = (0, 0, 0)
INVALID_ERROR_RGB = (64, 64, 64)
#: Relative errors (AbsRel, delta) at or above this are drawn at full brightness.
RELATIVE_ERROR_VMAX = 0.25


def apply_cmap(values: np.ndarray, cmap: str = "turbo") -> np.ndarray:
    """Map values in [0, 1] (clipped; NaN allowed, becomes 0) to RGB uint8 with a cv2 colormap."""
    v = np.nan_to_num(np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0), nan=0.0)
    idx = np.round(v * 255.0).astype(np.uint8)
    if cmap == "gray":
        return np.repeat(idx[..., None], 3, axis=-1)
    if cmap not in _CMAPS:
        raise ValueError(f"unknown cmap {cmap!r}; choose from {sorted([*_CMAPS, 'gray'])}")
    return cv2.cvtColor(cv2.applyColorMap(idx, _CMAPS[cmap]), cv2.COLOR_BGR2RGB)


def depth_range(
    depth: np.ndarray, percentiles: tuple[float, float] = (2.0, 98.0)
) -> tuple[float, float]:
    """Robust (vmin, vmax) of the valid depth: percentiles, so a few outliers don't flatten it."""
    d = np.asarray(depth, dtype=np.float32)
    vals = d[valid_depth(d)]
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(vals, percentiles)
    return float(lo), float(hi)


def colorize_depth(
    depth: np.ndarray,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "turbo",
    percentiles: tuple[float, float] = (2.0, 98.0),
) -> np.ndarray:
    """Depth (metres, NaN invalid) -> RGB uint8; near is warm (red), far is cool, invalid black.

    Missing ``vmin`` / ``vmax`` come from the robust percentile range of the valid pixels. Pass
    the same limits to several maps (e.g. prediction and ground truth) to make them comparable.
    """
    d = np.asarray(depth, dtype=np.float32)
    if vmin is None or vmax is None:
        lo, hi = depth_range(d, percentiles)
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    span = max(float(vmax) - float(vmin), 1e-6)
    # Turbo runs blue -> red with increasing value, so invert to make near (small depth) warm.
    rgb = apply_cmap((float(vmax) - d) / span, cmap)
    rgb[~valid_depth(d)] = INVALID_DEPTH_RGB
    return rgb


def error_map(pred: np.ndarray, gt: np.ndarray, kind: str = "absrel") -> np.ndarray:
    """Per-pixel float32 error, NaN where either map is invalid.

    ``absrel``: |p - g| / g; ``abs``: |p - g| in metres; ``delta``: max(p/g, g/p) - 1.
    """
    p = np.asarray(pred, dtype=np.float32)
    g = np.asarray(gt, dtype=np.float32)
    ok = valid_depth(p) & valid_depth(g)
    err = np.full(g.shape, np.nan, dtype=np.float32)
    pv, gv = p[ok], g[ok]
    if kind == "absrel":
        err[ok] = np.abs(pv - gv) / gv
    elif kind == "abs":
        err[ok] = np.abs(pv - gv)
    elif kind == "delta":
        err[ok] = np.maximum(pv / gv, gv / pv) - 1.0
    else:
        raise ValueError(f"kind must be 'absrel', 'abs' or 'delta', not {kind!r}")
    return err


def colorize_error(
    pred: np.ndarray,
    gt: np.ndarray,
    kind: str = "absrel",
    vmax: float | None = None,
    cmap: str = "inferno",
) -> np.ndarray:
    """Error map as RGB: 0 is dark, ``vmax`` and above bright; dark grey where either is invalid.

    Default ``vmax``: 0.25 for the relative kinds (``absrel``, ``delta``: 25 % saturates), the
    98th percentile of the valid error for ``abs``.
    """
    err = error_map(pred, gt, kind)
    ok = np.isfinite(err)
    if vmax is None:
        if kind == "abs":
            vmax = float(np.percentile(err[ok], 98)) if ok.any() else 1.0
        else:
            vmax = RELATIVE_ERROR_VMAX
    rgb = apply_cmap(err / max(float(vmax), 1e-9), cmap)
    rgb[~ok] = INVALID_ERROR_RGB
    return rgb


def _label_colors(n: int) -> np.ndarray:
    """``n`` well-separated RGB colours (golden-ratio hue steps), uint8 (n, 3)."""
    hue = (np.arange(n) * 0.618033988749895 % 1.0 * 180).astype(np.uint8)  # OpenCV hue is 0..179
    hsv = np.stack([hue, np.full(n, 220, np.uint8), np.full(n, 255, np.uint8)], axis=-1)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]


def colorize_mask(
    mask: np.ndarray,
    rgb: np.ndarray | None = None,
    color: tuple[int, int, int] = (0, 255, 0),
    alpha: float = 0.5,
) -> np.ndarray:
    """Boolean mask or integer label map (0 = background) -> RGB, optionally blended on ``rgb``.

    A boolean mask is drawn in ``color``; labels get distinct colours. Background stays black, or
    the untouched image when ``rgb`` is given; masked pixels are ``alpha`` colour over the image.
    """
    m = np.asarray(mask)
    if m.dtype == bool:
        labels = m.astype(np.int64)
        palette = np.array([[0, 0, 0], color], dtype=np.uint8)
    else:
        labels = m.astype(np.int64)
        if labels.min(initial=0) < 0:
            raise ValueError("label maps must be non-negative")
        palette = np.vstack([[0, 0, 0], _label_colors(int(labels.max(initial=0)))]).astype(np.uint8)
    paint = palette[labels]
    if rgb is None:
        return paint
    base = np.asarray(rgb, dtype=np.float32)
    fg = (labels > 0)[..., None]
    blended = np.where(fg, (1.0 - alpha) * base + alpha * paint.astype(np.float32), base)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class ColorBar:
    """The colour scale of a panel, drawn under it: ``vmin`` at the left, ``vmax`` at the right.

    ``reverse``: the colormap runs from its top at ``vmin``, as :func:`colorize_depth` draws
    depth (near is warm). ``unit`` follows the end values ("m" for depth and metric errors).
    """

    vmin: float
    vmax: float
    unit: str = "m"
    cmap: str = "turbo"
    reverse: bool = False

    @classmethod
    def depth(cls, vmin: float, vmax: float, cmap: str = "turbo") -> ColorBar:
        """The scale of ``colorize_depth(d, vmin, vmax, cmap)``."""
        return cls(vmin, vmax, "m", cmap, reverse=True)

    def ramp(self, width: int) -> np.ndarray:
        """(1, width, 3) RGB gradient from ``vmin`` to ``vmax``."""
        t = np.linspace(0.0, 1.0, max(int(width), 1), dtype=np.float32)[None]
        return apply_cmap(1.0 - t if self.reverse else t, self.cmap)

    def end_labels(self) -> tuple[str, str]:
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.vmin:.2f}{unit}", f"{self.vmax:.2f}{unit}"


_FONT = cv2.FONT_HERSHEY_SIMPLEX
_MIN_FONT_SCALE = 0.3


def _fit_text(text: str, width: int, scale: float, thick: int = 1) -> tuple[str, float]:
    """``text`` and a font scale at which it fits ``width`` pixels: the font shrinks down to a
    legible minimum, then the text is cut with ".." at its end."""

    def text_width(t: str, s: float) -> int:
        return cv2.getTextSize(t, _FONT, s, thick)[0][0]

    while scale > _MIN_FONT_SCALE and text_width(text, scale) > width:
        scale = max(_MIN_FONT_SCALE, scale * 0.9)
    if text_width(text, scale) <= width:
        return text, scale
    cut = text
    while cut and text_width(cut + "..", scale) > width:
        cut = cut[:-1]
    return (cut + ".." if cut else ""), scale


def _draw_colorbar(
    canvas: np.ndarray, x: int, y: int, width: int, bar: ColorBar, scale: float
) -> None:
    """The ramp at (x, y) and its end values below it, on the canvas's white background."""
    ramp_h = max(4, round(12 * scale))
    canvas[y : y + ramp_h, x : x + width] = bar.ramp(width)
    left, right = bar.end_labels()
    # Both end values share the panel width, so each gets half of it.
    (left, s_left), (right, s_right) = (_fit_text(t, width // 2 - 3, scale) for t in (left, right))
    s = min(s_left, s_right)
    th = cv2.getTextSize("0", _FONT, s, 1)[0][1]
    ty = y + ramp_h + th + 3
    cv2.putText(canvas, left, (x + 1, ty), _FONT, s, (0, 0, 0), 1, cv2.LINE_AA)
    rw = cv2.getTextSize(right, _FONT, s, 1)[0][0]
    cv2.putText(canvas, right, (x + width - rw - 1, ty), _FONT, s, (0, 0, 0), 1, cv2.LINE_AA)


def _colorbar_height(scale: float) -> int:
    (_, th), base = cv2.getTextSize("0", _FONT, scale, 1)
    return max(4, round(12 * scale)) + th + base + 6


def _to_rgb_u8(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"side_by_side expects uint8 images, got {img.dtype}; colorize first")
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected (H, W) or (H, W, 3) uint8, got shape {img.shape}")
    return img


def side_by_side(
    images: Sequence[np.ndarray],
    labels: Sequence[str] | None = None,
    height: int | None = None,
    gap: int = 4,
    colorbars: Sequence[ColorBar | None] | None = None,
) -> np.ndarray:
    """Concatenate RGB/gray uint8 images horizontally with a text label on top of each.

    All panels are resized (keeping aspect) to ``height`` (default: the first image's height);
    labels sit in a dark strip above each panel so they stay readable on any content, shrunk or
    cut to the panel's width. ``colorbars`` (one per image, None for none) draws each panel's
    colour scale with its end values under it.
    """
    if not images:
        raise ValueError("side_by_side needs at least one image")
    if labels is not None and len(labels) != len(images):
        raise ValueError("need one label per image")
    if colorbars is not None and len(colorbars) != len(images):
        raise ValueError("need one colour bar (or None) per image")
    panels = [_to_rgb_u8(im) for im in images]
    h = int(height or panels[0].shape[0])
    resized = []
    for im in panels:
        w = max(1, round(im.shape[1] * h / im.shape[0]))
        interp = cv2.INTER_NEAREST if h >= im.shape[0] else cv2.INTER_AREA
        resized.append(
            im if im.shape[:2] == (h, w) else cv2.resize(im, (w, h), interpolation=interp)
        )
    font, scale, thick = _FONT, max(0.4, h / 480.0), 1
    strip = 0
    if labels is not None:
        (_, th), base = cv2.getTextSize("Ag", font, scale, thick)
        strip = th + base + 8
    bars = list(colorbars) if colorbars is not None else [None] * len(resized)
    footer = _colorbar_height(scale) if any(b is not None for b in bars) else 0
    total_w = sum(im.shape[1] for im in resized) + gap * (len(resized) - 1)
    canvas = np.full((h + strip + footer, total_w, 3), 255, dtype=np.uint8)
    x = 0
    for i, im in enumerate(resized):
        w = im.shape[1]
        canvas[strip : strip + h, x : x + w] = im
        if labels is not None:
            canvas[:strip, x : x + w] = 32
            text, s = _fit_text(str(labels[i]), w - 8, scale, thick)
            cv2.putText(
                canvas, text, (x + 4, strip - base - 4), font, s,
                (255, 255, 255), thick, cv2.LINE_AA,
            )  # fmt: skip
        if bars[i] is not None:
            _draw_colorbar(canvas, x, strip + h + 2, w, bars[i], scale)
        x += w + gap
    return canvas


def save_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB (or gray, uint8 or uint16) image as PNG, creating parent folders; returns
    the path. ``cv2.imwrite`` only returns False on failure: this raises an OSError naming it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.asarray(rgb)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")
    return path

"""Training augmentation that keeps colour, depth, target and intrinsics consistent.

A *sample* is a dict::

    rgb         (H, W, 3) uint8 RGB
    depth       (H, W) float32 metres, NaN = hole (the model's sparse input)
    target      (H, W) float32 metres, NaN = invalid (supervision)
    intrinsics  Intrinsics of all three
    points      optional (N, 3) float32 points in the camera optical frame (LiDAR prompts)
    radar_points  optional (N, 3) float32, the same for radar
    prior       optional (H, W) float32 metres, NaN = none: a prompt-free model's depth of rgb
    instance    optional (H, W) uint16 instance ids, 0 = background (FocusDepth's target masks)

Geometric ops (crop, flip, resize, unified focal) move every image and update the intrinsics so
that a back-projected depth pixel stays the same 3-D point (x negated after a flip, a mirror);
depth-like maps are resampled with nearest neighbour (centre-aligned, so a pixel is copied from
the source pixel that contains its centre; interpolating depth would invent points floating
between foreground and background). Photometric ops (colour jitter, JPEG, motion blur, shot
noise) touch only ``rgb``: they mimic the colour camera, and the depth and target must keep
describing the same scene. Instance ids are labels: resampled with the same nearest neighbour
(never interpolated, an id between two ids is another object) and padded with 0 (background).

The mix follows the depth-completion / metric-depth recipes (LingBot-Depth, MetricAnything,
DepthLM): random resized crops, horizontal flips, colour jitter, compression and sensor
degradations, and DepthLM's unified focal length for mixing cameras.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from depth_perception.core.camera import Intrinsics

# Keys resampled like depth (nearest neighbour, NaN padding).
_DEPTH_KEYS = ("depth", "target", "prior")
# Label maps: resampled like depth, padded with 0 (background) instead of NaN.
_LABEL_KEYS = ("instance",)
# 3-D points in the camera optical frame (mirrored by a flip).
_POINT_KEYS = ("points", "radar_points")


@dataclass
class AugmentConfig:
    """Which augmentations to apply and how strongly; each op runs with its probability."""

    # Output (width, height) of the geometric stage; None keeps the input size.
    out_size: tuple[int, int] | None = None
    # DepthLM: resize so that fx = fy = focal first (cameras mixed in one batch then share one
    # focal length), then take a random out_size crop *without* rescaling. None: off.
    focal: float | None = None
    # Random resized crop: area fraction of the input, aspect ratio relative to out_size's
    # (1 = no distortion; otherwise fx and fy change differently, which the intrinsics track).
    p_crop: float = 1.0
    crop_scale: tuple[float, float] = (0.4, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    p_flip: float = 0.5
    # Colour jitter: factors drawn uniformly from [1 - x, 1 + x]; hue as a fraction of the circle.
    p_color: float = 0.8
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.03
    p_jpeg: float = 0.3
    jpeg_quality: tuple[int, int] = (40, 95)
    p_blur: float = 0.2
    blur_length: tuple[int, int] = (3, 9)  # kernel length in pixels (odd values used)
    p_noise: float = 0.2
    noise_peak: tuple[float, float] = (30.0, 500.0)  # photons for a white pixel (log-uniform)


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------


def _depth_like(sample: dict) -> list[str]:
    """Depth maps and label maps present in ``sample`` (both resampled nearest)."""
    return [k for k in (*_DEPTH_KEYS, *_LABEL_KEYS) if sample.get(k) is not None]


def crop(sample: dict, x0: int, y0: int, width: int, height: int) -> dict:
    """Crop the window with top-left pixel (x0, y0); parts outside the image are padded
    (rgb 0, depth / target NaN, labels 0), so a window larger than the image is allowed."""
    intr: Intrinsics = sample["intrinsics"]
    out = dict(sample)
    # Source and destination ranges of the overlap between window and image.
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + width, intr.width), min(y0 + height, intr.height)
    dx0, dy0 = sx0 - x0, sy0 - y0
    for key in ["rgb", *_depth_like(sample)]:
        src = sample[key]
        fill = 0 if key == "rgb" or key in _LABEL_KEYS else np.nan
        dst = np.full((height, width, *src.shape[2:]), fill, dtype=src.dtype)
        if sx1 > sx0 and sy1 > sy0:
            dst[dy0 : dy0 + sy1 - sy0, dx0 : dx0 + sx1 - sx0] = src[sy0:sy1, sx0:sx1]
        out[key] = dst
    out["intrinsics"] = intr.cropped(x0, y0, width, height)
    return out


def resize(sample: dict, width: int, height: int) -> dict:
    """Resize every image to ``width`` x ``height``: rgb with area (shrinking) or bilinear
    (enlarging) filtering, depth-like maps with centre-aligned nearest neighbour."""
    intr: Intrinsics = sample["intrinsics"]
    if (width, height) == intr.size:
        return dict(sample)
    out = dict(sample)
    shrink = width <= intr.width and height <= intr.height
    out["rgb"] = cv2.resize(
        sample["rgb"], (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )
    for key in _depth_like(sample):
        # INTER_NEAREST_EXACT maps centres (u' + 0.5 = (u + 0.5) * s) like Intrinsics.scaled;
        # plain INTER_NEAREST is off by half a pixel.
        out[key] = cv2.resize(sample[key], (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
    out["intrinsics"] = intr.scaled(width, height)
    return out


def hflip(sample: dict) -> dict:
    """Mirror left-right: cx' = W - 1 - cx, and 3-D points get x negated."""
    intr: Intrinsics = sample["intrinsics"]
    out = dict(sample)
    for key in ["rgb", *_depth_like(sample)]:
        out[key] = np.ascontiguousarray(sample[key][:, ::-1])
    out["intrinsics"] = replace(intr, cx=intr.width - 1 - intr.cx)
    for key in _POINT_KEYS:
        if sample.get(key) is not None:
            points = np.array(sample[key], dtype=np.float32)
            points[:, 0] *= -1
            out[key] = points
    return out


def unified_focal_resize(sample: dict, f_uni: float) -> dict:
    """DepthLM's focal unification: W' = f_uni / fx * W, H' = f_uni / fy * H (rounded), so
    every camera ends up with (nearly, up to that rounding) fx = fy = f_uni."""
    intr: Intrinsics = sample["intrinsics"]
    width = max(1, int(round(f_uni / intr.fx * intr.width)))
    height = max(1, int(round(f_uni / intr.fy * intr.height)))
    return resize(sample, width, height)


def _crop_window(
    size: tuple[int, int], out_aspect: float, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """(x0, y0, w, h) of a random window inside an image of ``size`` = (W, H)."""
    W, H = size
    area = rng.uniform(*cfg.crop_scale) * W * H
    aspect = out_aspect * np.exp(rng.uniform(*np.log(cfg.crop_ratio)))
    w, h = np.sqrt(area * aspect), np.sqrt(area / aspect)
    shrink = min(1.0, W / w, H / h)  # keep the aspect when the window would not fit
    w = int(np.clip(round(w * shrink), 1, W))
    h = int(np.clip(round(h * shrink), 1, H))
    x0 = int(rng.integers(0, W - w + 1))
    y0 = int(rng.integers(0, H - h + 1))
    return x0, y0, w, h


def random_resized_crop(sample: dict, cfg: AugmentConfig, rng: np.random.Generator) -> dict:
    """A random window (``cfg.crop_scale`` / ``crop_ratio``) resized to the output size."""
    intr: Intrinsics = sample["intrinsics"]
    out_w, out_h = cfg.out_size or intr.size
    x0, y0, w, h = _crop_window(intr.size, out_w / out_h, cfg, rng)
    return resize(crop(sample, x0, y0, w, h), out_w, out_h)


def random_crop(sample: dict, size: tuple[int, int], rng: np.random.Generator) -> dict:
    """A random ``size`` = (W, H) window at the current scale (padded where the image is
    smaller), used after :func:`unified_focal_resize` so the focal length stays unified."""
    intr: Intrinsics = sample["intrinsics"]
    w, h = size

    def start(full: int, want: int) -> int:
        # Inside the image when it is larger, else a random placement of the image inside.
        lo, hi = sorted((0, full - want))
        return int(rng.integers(lo, hi + 1))

    return crop(sample, start(intr.width, w), start(intr.height, h), w, h)


# ---------------------------------------------------------------------------------------------
# Photometric (rgb only)
# ---------------------------------------------------------------------------------------------

_GRAY = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma, as torchvision


def adjust_brightness(rgb: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(rgb.astype(np.float32) * factor, 0, 255).round().astype(np.uint8)


def adjust_contrast(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the mean grey level (factor 0: flat grey, 1: unchanged)."""
    img = rgb.astype(np.float32)
    mean = float((img @ _GRAY).mean())
    return np.clip(mean + factor * (img - mean), 0, 255).round().astype(np.uint8)


def adjust_saturation(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the per-pixel grey value (factor 0: greyscale, 1: unchanged)."""
    img = rgb.astype(np.float32)
    gray = (img @ _GRAY)[..., None]
    return np.clip(gray + factor * (img - gray), 0, 255).round().astype(np.uint8)


def adjust_hue(rgb: np.ndarray, shift: float) -> np.ndarray:
    """Rotate the hue by ``shift`` of a full turn (0.5: red -> cyan)."""
    hsv = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)  # H in [0, 360)
    hsv[..., 0] = np.mod(hsv[..., 0] + 360.0 * shift, 360.0)
    out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
    return np.clip(out, 0, 255).round().astype(np.uint8)


def color_jitter(rgb: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, saturation and hue, each with a random factor, in random order."""
    ops = [
        lambda x: adjust_brightness(x, rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)),
        lambda x: adjust_contrast(x, rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)),
        lambda x: adjust_saturation(x, rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)),
        lambda x: adjust_hue(x, rng.uniform(-cfg.hue, cfg.hue)),
    ]
    for i in rng.permutation(len(ops)):
        rgb = ops[i](rgb)
    return rgb


def jpeg_reencode(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Compress and decompress (block artefacts, chroma subsampling), as streamed images get."""
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def motion_blur_kernel(length: int, angle_deg: float) -> np.ndarray:
    """Normalised (L, L) kernel of a straight streak of L pixels through the centre at
    ``angle_deg`` (0 = horizontal, counter-clockwise on screen); L = ``length`` made odd.

    Each kernel pixel is weighted by how close its centre lies to the streak (1 on it, 0 a
    pixel or more away), which anti-aliases oblique streaks.
    """
    length = max(1, int(length)) | 1
    r = (length - 1) / 2
    a = np.radians(angle_deg)
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    along = x * np.cos(a) - y * np.sin(a)  # image rows grow downwards
    across = x * np.sin(a) + y * np.cos(a)
    kernel = np.clip(1.0 - np.abs(across), 0.0, None) * np.clip(r + 1.0 - np.abs(along), 0.0, 1.0)
    return (kernel / kernel.sum()).astype(np.float32)


def motion_blur(rgb: np.ndarray, length: int, angle_deg: float) -> np.ndarray:
    return cv2.filter2D(
        rgb, -1, motion_blur_kernel(length, angle_deg), borderType=cv2.BORDER_REFLECT
    )


def shot_noise(rgb: np.ndarray, peak: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson photon noise: a pixel of value v collects ~Poisson(v / 255 * peak) photons."""
    lam = rgb.astype(np.float64) * (peak / 255.0)
    noisy = rng.poisson(lam) * (255.0 / peak)
    return np.clip(noisy, 0, 255).round().astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------


def augment(sample: dict, cfg: AugmentConfig, rng: np.random.Generator) -> dict:
    """Geometric then photometric augmentation of one sample (the input is not modified).

    The result depends only on the sample, ``cfg`` and ``rng``'s state, so a loader that seeds
    ``rng`` per sample gets the same augmentation whichever worker draws it.
    """
    out = dict(sample)
    if cfg.focal is not None:
        out = unified_focal_resize(out, cfg.focal)
        if cfg.out_size is not None:
            out = random_crop(out, cfg.out_size, rng)
    elif rng.random() < cfg.p_crop:
        out = random_resized_crop(out, cfg, rng)
    elif cfg.out_size is not None:
        out = resize(out, *cfg.out_size)
    if rng.random() < cfg.p_flip:
        out = hflip(out)
    rgb = out["rgb"]
    if rng.random() < cfg.p_color:
        rgb = color_jitter(rgb, cfg, rng)
    if rng.random() < cfg.p_blur:
        lo, hi = cfg.blur_length
        rgb = motion_blur(rgb, int(rng.integers(lo, hi + 1)), rng.uniform(0.0, 180.0))
    if rng.random() < cfg.p_noise:
        peak = float(np.exp(rng.uniform(*np.log(cfg.noise_peak))))
        rgb = shot_noise(rgb, peak, rng)
    # JPEG last: streamed / stored images are compressed after the sensor's degradations.
    if rng.random() < cfg.p_jpeg:
        lo, hi = cfg.jpeg_quality
        rgb = jpeg_reencode(rgb, int(rng.integers(lo, hi + 1)))
    out["rgb"] = rgb
    return out

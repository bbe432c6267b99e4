"""DepthLM protocol: ask a vision-language model for the metric distance of a marked pixel.

Paper: "DepthLM: Metric Depth from Vision Language Models" (ICLR 2026); official code
``facebookresearch/DepthLM_Official`` (``utils/datasets.py``: ``normalizing_focal_length``,
``undistort_image``, ``generate_prompt_depth_sft``, ``dataset_inference``; ``utils/metrics.py``:
``delta1_metric``). This module is the method's pure core (numpy, OpenCV, Pillow; no torch, no
ROS): focal normalisation, the red-arrow marker, prompt and target texts, answer parsing and
scoring, and the official evaluation jsonl.

Paper terms, once:

- *unified focal length* ``f_uni``: every image is resized so that fx becomes ``f_uni`` (1000 for
  training in the paper; the official evaluation of the released Pixtral model uses 750), so
  the model never has to guess the camera;
- *visual prompt*: a 1-px red arrow whose tip sits one pixel left of the queried pixel;
- *range*: the Euclidean distance camera centre -> point (the paper's default label); *z*: the
  distance along the principal axis (the multi-task variant), selected by the question.

Deliberate differences from the official code:

- a pixel too close to the border gets :class:`TooCloseToBorder` / an ``ok=False`` result (the
  official training loader silently moves to another sample; its inference loader returns
  ``None``, which crashes the batch);
- a negative, zero or non-finite answer is a failure (the official ``delta1_metric`` lets a
  negative answer pass: both ratios are negative, hence < 1.25);
- the answer is the number inside the *last* ``<answer>`` tags (the official scorer hands the
  whole text to ``math_verify.parse``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from depth_perception.core.camera import Intrinsics

F_UNI_TRAIN = 1000.0  # the paper's training value
F_UNI_RELEASED_EVAL = 750.0  # eval.py's value for the released Pixtral DepthLM
MARKER_SIZE = 5  # official ``cross_size``: arrow shaft length and border margin
MARKER_COLOR = (255, 0, 0)
SYSTEM_PROMPT = "You are a helpful assistant."
DELTA1_THRESHOLD = 1.25

DistanceKind = Literal["range", "z"]

# Exact official wording (``generate_prompt_depth_sft``).
RANGE_QUESTION = (
    "Given this image, how far is the point pointed by the red arrow from the camera? Output the "
    "thinking process in <think> </think> and final answer (the meter number only, without the "
    "unit) in <answer> </answer> tags."
)
# The principal-axis variant (the paper's multi-task section; no official text released): the
# same sentence pattern, naming the axis, so one model can be trained on both.
Z_QUESTION = (
    "Given this image, how far is the point pointed by the red arrow from the camera along the "
    "camera's optical axis (its depth z)? Output the thinking process in <think> </think> and "
    "final answer (the meter number only, without the unit) in <answer> </answer> tags."
)
QUESTIONS: dict[str, str] = {"range": RANGE_QUESTION, "z": Z_QUESTION}


# ----------------------------------------------------------------------------------------------
# Focal normalisation


@dataclass(frozen=True)
class NormalisedFrame:
    """An image resized to the unified focal length (and possibly fitted to a processor grid).

    ``intrinsics`` follow the official convention: every entry of the source intrinsics times
    the scale, width/height truncated. This is not :meth:`Intrinsics.scaled`, which scales by
    the integer size ratio per axis and keeps pixel centres (c' = (c + 0.5) * s - 0.5); the
    model was trained on the official convention, so we reproduce it here.

    Pixels map as the official ``int((u - cx) * fx' / fx + cx')`` (truncation toward zero),
    then minus the crop offset when :func:`fit_to_grid` cropped the image.
    """

    image: np.ndarray  # (H, W, 3) uint8 RGB
    intrinsics: Intrinsics
    source: Intrinsics  # intrinsics of the image as the caller gave it
    scale_x: float  # fx' / fx over the resize step(s)
    scale_y: float  # fy' / fy
    map_cx: float  # cx' of the official mapping (principal point after resizing, before crop)
    map_cy: float
    offset_x: int = 0  # crop offset applied after the resize steps
    offset_y: int = 0

    def map_pixel(self, u: float, v: float) -> tuple[int, int]:
        """Source pixel (u, v) -> pixel (x, y) of :attr:`image` (may lie outside it)."""
        xy = self.map_pixels(np.array([[u, v]], dtype=np.float64))
        return int(xy[0, 0]), int(xy[0, 1])

    def map_pixels(self, uv: np.ndarray) -> np.ndarray:
        """Source pixels (N, 2) -> (N, 2) int64 pixels of :attr:`image`."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        # np.trunc is Python's int() on floats: toward zero, as the official code.
        x = np.trunc((uv[:, 0] - self.source.cx) * self.scale_x + self.map_cx)
        y = np.trunc((uv[:, 1] - self.source.cy) * self.scale_y + self.map_cy)
        return np.stack([x - self.offset_x, y - self.offset_y], axis=1).astype(np.int64)

    @property
    def size(self) -> tuple[int, int]:
        return self.intrinsics.width, self.intrinsics.height


def _as_rgb_u8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    return image


def _resize_bicubic(image: np.ndarray, width: int, height: int) -> np.ndarray:
    # Pillow's bicubic (the default of ``Image.resize``, which the official code calls): for a
    # downscale it widens the kernel (antialiasing), unlike cv2.INTER_CUBIC, so the model sees
    # the same pixels as in the official pipeline.
    if (width, height) == (image.shape[1], image.shape[0]):
        return image.copy()
    pil = Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(pil, dtype=np.uint8).copy()


def normalise_focal(image: np.ndarray, intrinsics: Intrinsics, f_uni: float) -> NormalisedFrame:
    """Resize ``image`` so that fx becomes ``f_uni`` (official ``normalizing_focal_length``).

    s = f_uni / fx; the new size is (int(W * s), int(H * s)), Pillow bicubic; fx, fy, cx, cy
    are all multiplied by s.

    fx != fy: the official loaders first call ``undistort_image`` when |fx - fy| > 1e-3, which
    runs ``cv2.getOptimalNewCameraMatrix(K, zero distortion, (W, H), alpha=1)`` and
    ``cv2.undistort``. With zero distortion the optimal matrix is K itself and the undistortion
    is the identity (both checked in test_depthlm_protocol.py), so the official pipeline keeps
    the non-square pixels: fx' = f_uni, fy' = fy * f_uni / fx, and v maps with fy' / fy = s.
    This function does the same without the no-op remap.
    """
    image = _as_rgb_u8(image)
    if image.shape[:2] != (intrinsics.height, intrinsics.width):
        raise ValueError(
            f"image is {image.shape[1]}x{image.shape[0]} but the intrinsics are for "
            f"{intrinsics.width}x{intrinsics.height}"
        )
    if not (math.isfinite(intrinsics.fx) and intrinsics.fx > 0 and intrinsics.fy > 0):
        raise ValueError(f"focal lengths must be > 0, got fx={intrinsics.fx} fy={intrinsics.fy}")
    if not (math.isfinite(f_uni) and f_uni > 0):
        raise ValueError(f"f_uni must be > 0, got {f_uni}")
    s = f_uni / intrinsics.fx
    width, height = int(intrinsics.width * s), int(intrinsics.height * s)
    if width < 1 or height < 1:
        raise ValueError(f"focal normalisation to f_uni={f_uni} leaves a {width}x{height} image")
    new = replace(
        intrinsics,
        width=width,
        height=height,
        fx=intrinsics.fx * s,
        fy=intrinsics.fy * s,
        cx=intrinsics.cx * s,
        cy=intrinsics.cy * s,
    )
    return NormalisedFrame(
        image=_resize_bicubic(image, width, height),
        intrinsics=new,
        source=intrinsics,
        scale_x=new.fx / intrinsics.fx,
        scale_y=new.fy / intrinsics.fy,
        map_cx=new.cx,
        map_cy=new.cy,
    )


@dataclass(frozen=True)
class ProcessorGrid:
    """The image sizes a VLM's image processor passes through without resizing.

    Qwen2-VL / 2.5-VL: sides multiples of patch_size * merge_size (28) and
    min_pixels <= H * W <= max_pixels (``smart_resize`` is then the identity). Pixtral: sides
    multiples of the patch size and the longest side <= ``longest_edge``.
    """

    multiple: int
    min_pixels: int = 0
    max_pixels: int | None = None
    longest_edge: int | None = None

    def accepts(self, width: int, height: int) -> bool:
        m = self.multiple
        return (
            width % m == 0
            and height % m == 0
            and width >= m
            and height >= m
            and width * height >= self.min_pixels
            and (self.max_pixels is None or width * height <= self.max_pixels)
            and (self.longest_edge is None or max(width, height) <= self.longest_edge)
        )


def fit_to_grid(frame: NormalisedFrame, grid: ProcessorGrid) -> NormalisedFrame:
    """Make ``frame`` a size the processor will not resize, so the marker stays on its pixel.

    First choice: centre-crop to the largest multiples of ``grid.multiple`` (at most
    multiple - 1 pixels per axis; the focal length stays exactly f_uni). Only when that size
    is outside the processor's pixel bounds is the image resized (bicubic) to the largest
    (or, for too small images, smallest) accepted size of the same aspect; the intrinsics are
    then scaled per axis in the official convention and fx is no longer exactly f_uni.
    """
    width, height = frame.size
    m = grid.multiple
    crop_w, crop_h = (width // m) * m, (height // m) * m
    if grid.accepts(crop_w, crop_h):
        x0, y0 = (width - crop_w) // 2, (height - crop_h) // 2
        return replace(
            frame,
            image=frame.image[y0 : y0 + crop_h, x0 : x0 + crop_w].copy(),
            intrinsics=frame.intrinsics.cropped(x0, y0, crop_w, crop_h),
            offset_x=frame.offset_x + x0,
            offset_y=frame.offset_y + y0,
        )
    new_w, new_h = _grid_size(width, height, grid)
    sx, sy = new_w / width, new_h / height
    if frame.offset_x or frame.offset_y:
        raise ValueError("fit_to_grid: resize after a crop is not supported; fit once")
    k = frame.intrinsics
    new = replace(
        k, width=new_w, height=new_h, fx=k.fx * sx, fy=k.fy * sy, cx=k.cx * sx, cy=k.cy * sy
    )
    return replace(
        frame,
        image=_resize_bicubic(frame.image, new_w, new_h),
        intrinsics=new,
        scale_x=frame.scale_x * sx,
        scale_y=frame.scale_y * sy,
        # One truncation from the source pixel, as if the two resizes were one.
        map_cx=new.cx,
        map_cy=new.cy,
    )


def _grid_size(width: int, height: int, grid: ProcessorGrid) -> tuple[int, int]:
    m = grid.multiple
    r = 1.0
    if grid.max_pixels is not None and width * height > grid.max_pixels:
        r = math.sqrt(grid.max_pixels / (width * height))
    if grid.longest_edge is not None and max(width, height) * r > grid.longest_edge:
        r = grid.longest_edge / max(width, height)
    if r < 1.0:
        new_w = max(m, math.floor(width * r / m) * m)
        new_h = max(m, math.floor(height * r / m) * m)
    else:
        r = math.sqrt(max(grid.min_pixels, m * m) / (width * height))
        new_w = max(m, math.ceil(width * r / m) * m)
        new_h = max(m, math.ceil(height * r / m) * m)
    if not grid.accepts(new_w, new_h):
        raise ValueError(f"no size of a {width}x{height} image fits {grid}")
    return new_w, new_h


# ----------------------------------------------------------------------------------------------
# Marker


class TooCloseToBorder(ValueError):
    """The marker needs 5 pixels of image on every side of the queried pixel."""

    def __init__(self, x: int, y: int, width: int, height: int) -> None:
        super().__init__(
            f"pixel ({x}, {y}) is too close to the border of the {width}x{height} normalised "
            f"image to draw the marker (needs {MARKER_SIZE} <= x < {width - MARKER_SIZE} and "
            f"{MARKER_SIZE} <= y < {height - MARKER_SIZE})"
        )
        self.x, self.y, self.width, self.height = x, y, width, height


def marker_fits(x: int, y: int, width: int, height: int) -> bool:
    """The official condition for drawing the arrow at (x, y)."""
    return MARKER_SIZE <= x < width - MARKER_SIZE and MARKER_SIZE <= y < height - MARKER_SIZE


def marker_pixels(x: int, y: int) -> list[tuple[int, int]]:
    """The arrow's pixels (x, y): shaft (x-1 .. x-5, y), head (x-2, y±1), (x-3, y±2)."""
    shaft = [(x - dx, y) for dx in range(1, MARKER_SIZE + 1)]
    head = []
    for dy in range(1, MARKER_SIZE // 2 + 1):
        head += [(x - dy - 1, y + dy), (x - dy - 1, y - dy)]
    return shaft + head


def draw_marker(image: np.ndarray, x: int, y: int) -> np.ndarray:
    """A copy of ``image`` with the red arrow pointing at (x, y); the pixel itself untouched.

    Raises :class:`TooCloseToBorder` where the official code could not draw it.
    """
    image = _as_rgb_u8(image)
    height, width = image.shape[:2]
    if not marker_fits(x, y, width, height):
        raise TooCloseToBorder(x, y, width, height)
    out = image.copy()
    for px, py in marker_pixels(x, y):
        out[py, px] = MARKER_COLOR
    return out


# ----------------------------------------------------------------------------------------------
# Texts


def question_for(kind: DistanceKind) -> str:
    try:
        return QUESTIONS[kind]
    except KeyError:
        raise ValueError(f"distance kind must be 'range' or 'z', got {kind!r}") from None


def kind_of_question(question: str) -> DistanceKind | None:
    """Which distance a question asks for: one of the two trained questions, else None."""
    text = " ".join(question.split())
    for kind, q in QUESTIONS.items():
        if text == q:
            return kind  # type: ignore[return-value]
    return None


def target_text(distance: float, kind: DistanceKind = "range") -> str:
    """The SFT target (official ``thinking + "\\n\\n" + solution``, 2 decimals)."""
    question_for(kind)  # validates the kind
    axis = "" if kind == "range" else " along the optical axis"
    return (
        f"<think> The point is around {distance:.2f} meters away from the camera{axis}. "
        f"</think>\n\n<answer> {distance:.2f} </answer>"
    )


# ----------------------------------------------------------------------------------------------
# Answer parsing and scoring

_ANSWER_OPEN = re.compile(r"<answer>", re.IGNORECASE)
_ANSWER_CLOSE = re.compile(r"</answer>", re.IGNORECASE)
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:inf(?:inity)?|nan)"
_ANSWER_BODY = re.compile(
    rf"^\s*(?P<num>{_NUMBER})\s*(?:m|meters?|metres?)?\s*\.?\s*$", re.IGNORECASE
)


@dataclass(frozen=True)
class ParsedAnswer:
    """A model's answer: ``value`` in metres, or ``None`` with the reason in ``failure``."""

    value: float | None
    failure: str | None = None  # no_answer | unparsable | not_finite | not_positive

    @property
    def ok(self) -> bool:
        return self.value is not None


def parse_answer(text: str) -> ParsedAnswer:
    """The number inside the last ``<answer> ... </answer>`` of a model's output.

    Tolerated: whitespace, a unit ("3.5 m", "3.5 meters", "3.5metres"), a trailing period.
    Failures: no closed answer tags, anything else inside them (words, two numbers),
    non-finite, zero or negative numbers.
    """
    closes = list(_ANSWER_CLOSE.finditer(text))
    if not closes:
        return ParsedAnswer(None, "no_answer")
    end = closes[-1].start()
    opens = [m for m in _ANSWER_OPEN.finditer(text, 0, end)]
    if not opens:
        return ParsedAnswer(None, "no_answer")
    body = text[opens[-1].end() : end]
    match = _ANSWER_BODY.match(body)
    if match is None:
        return ParsedAnswer(None, "unparsable")
    value = float(match.group("num"))
    if not math.isfinite(value):
        return ParsedAnswer(None, "not_finite")
    if value <= 0:
        return ParsedAnswer(None, "not_positive")
    return ParsedAnswer(value)


def _answer_values(answers: Sequence[ParsedAnswer | float | None]) -> np.ndarray:
    out = np.full(len(answers), np.nan, dtype=np.float64)
    for i, a in enumerate(answers):
        v = a.value if isinstance(a, ParsedAnswer) else a
        if v is not None and math.isfinite(v) and v > 0:
            out[i] = v
    return out


def delta1_per_sample(
    answers: Sequence[ParsedAnswer | float | None], truths: Sequence[float] | np.ndarray
) -> np.ndarray:
    """1.0 where max(a/g, g/a) < 1.25, else 0.0; a failed answer scores 0."""
    a = _answer_values(answers)
    g = np.asarray(truths, dtype=np.float64).reshape(-1)
    if a.shape != g.shape:
        raise ValueError(f"{a.size} answers but {g.size} ground truths")
    if not np.all(np.isfinite(g) & (g > 0)):
        raise ValueError("ground-truth distances must be finite and > 0")
    ok = np.isfinite(a)
    hit = np.zeros(a.shape, dtype=np.float64)
    hit[ok] = (np.maximum(a[ok] / g[ok], g[ok] / a[ok]) < DELTA1_THRESHOLD).astype(np.float64)
    return hit


@dataclass(frozen=True)
class AnswerScores:
    n: int  # samples scored (failures included)
    n_failed: int  # answers that did not parse (count 0 in delta1)
    delta1: float  # over all n samples
    abs_rel: float  # mean |a - g| / g over the parsed answers only (NaN when none parsed)


def score_answers(
    answers: Sequence[ParsedAnswer | float | None], truths: Sequence[float] | np.ndarray
) -> AnswerScores:
    hits = delta1_per_sample(answers, truths)
    a = _answer_values(answers)
    g = np.asarray(truths, dtype=np.float64).reshape(-1)
    ok = np.isfinite(a)
    n = int(a.size)
    abs_rel = float(np.mean(np.abs(a[ok] - g[ok]) / g[ok])) if ok.any() else float("nan")
    return AnswerScores(
        n=n,
        n_failed=int(n - ok.sum()),
        delta1=float(hits.mean()) if n else float("nan"),
        abs_rel=abs_rel,
    )


# ----------------------------------------------------------------------------------------------
# Distances


def range_factor(intrinsics: Intrinsics, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """range / z of the ray through pixel (u, v): sqrt(((u-cx)/fx)^2 + ((v-cy)/fy)^2 + 1)."""
    x = (np.asarray(u, dtype=np.float64) - intrinsics.cx) / intrinsics.fx
    y = (np.asarray(v, dtype=np.float64) - intrinsics.cy) / intrinsics.fy
    return np.sqrt(x * x + y * y + 1.0)


def pixel_distances(
    depth: np.ndarray, intrinsics: Intrinsics, uv: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(range, z) in metres at integer pixels (N, 2) of a z-depth image; NaN where invalid.

    The range is what the official curation scripts store as "depth" (``curate_NYU.py``:
    sqrt(x^2 + y^2 + z^2) of the back-projected pixel).
    """
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    z = intrinsics.sample_depth(np.asarray(depth, dtype=np.float32), uv).astype(np.float64)
    return z * range_factor(intrinsics, uv[:, 0], uv[:, 1]), z


def range_image(depth: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """Dense Euclidean range (H, W) float32 from a z-depth image; NaN where depth is invalid."""
    depth = np.asarray(depth, dtype=np.float32)
    fx_row, fy_col = intrinsics.ray_factors()
    factor = np.sqrt(fx_row[None, :] ** 2 + fy_col[:, None] ** 2 + 1.0, dtype=np.float32)
    return np.where(np.isfinite(depth) & (depth > 0), depth * factor, np.float32(np.nan))


# ----------------------------------------------------------------------------------------------
# The official evaluation jsonl


@dataclass(frozen=True)
class EvalRecord:
    """One line of the official jsonl: an image and its labelled pixels (range in metres)."""

    image_path: Path
    intrinsics: Intrinsics
    pixels: np.ndarray  # (N, 2) int64 (x, y) of the original image
    distances: np.ndarray  # (N,) float64 Euclidean range


def read_eval_jsonl(path: str | Path, image_folder: str | Path | None = None) -> list[EvalRecord]:
    """Read an official evaluation jsonl (e.g. ``examples/ibims1/ibims1_val.jsonl``).

    Each line: {"image": relative path, "intrinsics": [fx, fy, cx, cy, W, H],
    "pixel_coords": [[x, y], ...], "depth": [range, ...]}. The image path is joined to
    ``image_folder`` (default: the jsonl's folder) after stripping a leading "/", as the
    official loader does; a focal length of 0 takes the other one (official fix-up).
    """
    path = Path(path)
    folder = Path(image_folder) if image_folder is not None else path.parent
    records = []
    with path.open("r", encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                k = [float(x) for x in rec["intrinsics"]]
                fx, fy, cx, cy = k[:4]
                width, height = int(k[4]), int(k[5])
                pixels = np.asarray(rec["pixel_coords"], dtype=np.float64).reshape(-1, 2)
                distances = np.asarray(rec["depth"], dtype=np.float64).reshape(-1)
                image = str(rec["image"])
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                raise ValueError(
                    f"{path}:{line_no}: not an official DepthLM record ({exc})"
                ) from exc
            if pixels.shape[0] != distances.shape[0]:
                raise ValueError(
                    f"{path}:{line_no}: {pixels.shape[0]} pixel_coords but {distances.size} depths"
                )
            fx = fx if fx != 0.0 else fy
            fy = fy if fy != 0.0 else fx
            records.append(
                EvalRecord(
                    image_path=folder / image.lstrip("/"),
                    intrinsics=Intrinsics(width, height, fx, fy, cx, cy),
                    pixels=pixels.astype(np.int64),
                    distances=distances,
                )
            )
    return records


def load_rgb(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB (what the official loader feeds after ``.open``)."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()

"""DepthLM engine: a vision-language model answers how far given pixels of a frame are.

Unlike the other engines DepthLM has no dense output: every answer costs one marked image and
one greedy generation (:mod:`depth_perception.models.depthlm`), so a depth map of a 640 x 480
frame would be 307,200 generations. The engine therefore answers *pixel queries*:

- :meth:`DepthLMEngine.query`: pixels (u, v) of a colour frame -> per pixel the distance the
  model answers (Euclidean range by default, the paper's; ``kind="z"`` asks the principal-axis
  question instead), the other of the two derived through the intrinsics, the 3-D point in
  the camera's optical frame (range x the unit ray through the pixel = z x (x', y', 1)), a
  status (``ok``, ``failed``: the text did not parse, ``too_close_to_border``: the marker does
  not fit, no model call) and the raw text;
- :meth:`DepthLMEngine.ask`: a free question about one marked pixel -> the model's text.

Engine contract: :attr:`inputs` declares the colour image only (with its intrinsics), like
any engine, so the node machinery that builds :class:`FrameInputs` can feed it; :meth:`run`,
the dense-depth entry point, raises :class:`DenseDepthNotSupported` (use the query methods;
a sparse cloud comes from querying a grid of pixels). numpy in, numpy out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from depth_perception.core.camera import Intrinsics
from depth_perception.core.depthlm import DistanceKind, question_for, range_factor
from depth_perception.engines.base import CompletionResult, Engine, EngineInputs, FrameInputs
from depth_perception.engines.device import PRECISIONS, resolve_device, use_bf16
from depth_perception.models.depthlm import DepthLM, PixelAnswer
from depth_perception.paths import share_dir

log = logging.getLogger(__name__)

#: What DepthLM takes: the colour image and its intrinsics.
DEPTHLM_INPUTS = EngineInputs(colour=True)
#: The DepthLM model shipped in the package's models/ directory (the node's default).
DEFAULT_DEPTHLM = "depthlm_small"


def default_depthlm_path() -> Path:
    return share_dir() / "models" / DEFAULT_DEPTHLM


def resolve_depthlm_checkpoint(checkpoint: str | Path | None) -> str:
    """``checkpoint``, or the shipped model when it is empty; FileNotFoundError naming what to
    set when neither exists."""
    if checkpoint:
        return str(checkpoint)
    path = default_depthlm_path()
    if not path.exists():
        raise FileNotFoundError(
            f"no DepthLM model at {path} (the default is not shipped in this install): set "
            "checkpoint to a DepthLM model directory (Hugging Face files + depthlm.json, e.g. "
            "one exported by training/ or a local copy of facebook/DepthLM)"
        )
    return str(path)


STATUSES = ("ok", "failed", "too_close_to_border")


class DenseDepthNotSupported(NotImplementedError):
    """DepthLM answers pixel queries, not dense depth maps."""


@dataclass
class DepthLMEngineConfig:
    checkpoint: str  # a DepthLM model directory (DepthLM.from_dir: HF files + depthlm.json)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    max_new_tokens: int | None = None  # None: the model's depthlm.json value
    batch_size: int = 16  # marked images per generate call
    kind: str = "range"  # the distance query() asks for by default: range | z

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: choose from {list(PRECISIONS)}")
        if self.kind not in ("range", "z"):
            raise ValueError(f"kind must be 'range' or 'z', got {self.kind!r}")
        if self.batch_size < 1 or (self.max_new_tokens is not None and self.max_new_tokens < 1):
            raise ValueError("batch_size and max_new_tokens must be >= 1")


@dataclass
class PixelQueryResult:
    """Answers for N queried pixels of one frame (arrays in query order; NaN where not ok)."""

    pixels: np.ndarray  # (N, 2) float64 (u, v) as given
    range_m: np.ndarray  # (N,) float32 Euclidean distance camera centre -> point
    z_m: np.ndarray  # (N,) float32 depth along the optical axis
    points: np.ndarray  # (N, 3) float32 in the camera's optical frame (x right, y down, z fwd)
    status: list[str]  # ok | failed | too_close_to_border
    text: list[str | None]  # the generated text (None: no model call)
    kind: str = "range"  # which distance the model was asked for
    marked: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))

    @property
    def ok(self) -> np.ndarray:
        return np.array([s == "ok" for s in self.status], dtype=bool)


@dataclass
class FreeAnswer:
    """The model's text for a free question about one marked pixel."""

    text: str | None  # None when the marker does not fit (status too_close_to_border)
    status: str
    marked: tuple[int, int]


def pixel_geometry(
    intrinsics: Intrinsics, pixels: np.ndarray, values: np.ndarray, kind: DistanceKind
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(range, z, points (N, 3)) of distances ``values`` answered for ``pixels``: a range r
    gives z = r / |(x', y', 1)|, a z gives r = z * |(x', y', 1)|, with x' = (u - cx) / fx,
    y' = (v - cy) / fy; the point is z * (x', y', 1). NaN values stay NaN."""
    uv = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    factor = range_factor(intrinsics, uv[:, 0], uv[:, 1])
    z = values / factor if kind == "range" else values
    rng = values if kind == "range" else values * factor
    points = intrinsics.backproject_pixels(uv, z)
    return rng, z, points


class DepthLMEngine(Engine):
    """Pixel queries to a DepthLM model (module docstring)."""

    inputs = DEPTHLM_INPUTS
    dense_output = False  # pixel queries only: the node publishes no dense depth for it

    def __init__(self, cfg: DepthLMEngineConfig) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        dtype = torch.bfloat16 if use_bf16(cfg.precision, self.device) else torch.float32
        self.lm = DepthLM.from_dir(cfg.checkpoint, device=self.device, dtype=dtype)
        name = Path(cfg.checkpoint).name or cfg.checkpoint
        self.model_id = f"depthlm/{name}:{self.lm.architecture}@f_uni={self.lm.settings.f_uni:g}"

    @property
    def f_uni(self) -> float:
        return self.lm.settings.f_uni

    def run(self, frame: FrameInputs) -> CompletionResult:
        raise DenseDepthNotSupported(
            "DepthLM answers pixel queries (one generation per pixel), not dense depth: call "
            "DepthLMEngine.query(rgb, intrinsics, pixels) or .ask(...), or query a grid of "
            "pixels for a sparse cloud"
        )

    def _answers(
        self,
        rgb: np.ndarray,
        intrinsics: Intrinsics,
        pixels: np.ndarray,
        kind: DistanceKind,
        question: str | None,
    ) -> list[PixelAnswer]:
        return self.lm.query(
            rgb,
            intrinsics,
            pixels,
            kind=kind,
            question=question,
            max_new_tokens=self.cfg.max_new_tokens,
            batch_size=self.cfg.batch_size,
        )

    def query(
        self,
        rgb: np.ndarray,
        intrinsics: Intrinsics,
        pixels: np.ndarray | Sequence[Sequence[float]],
        kind: str | None = None,
    ) -> PixelQueryResult:
        """Distances of ``pixels`` (N, 2) (u, v) of the (H, W, 3) uint8 RGB frame."""
        kind = kind or self.cfg.kind
        question_for(kind)  # type: ignore[arg-type]  (validates the kind)
        uv = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
        answers = self._answers(rgb, intrinsics, uv, kind, None)  # type: ignore[arg-type]
        values = np.array(
            [a.distance if a.status == "ok" else np.nan for a in answers], dtype=np.float64
        )
        rng, z, points = pixel_geometry(intrinsics, uv, values, kind)  # type: ignore[arg-type]
        return PixelQueryResult(
            pixels=uv,
            range_m=rng.astype(np.float32),
            z_m=z.astype(np.float32),
            points=points.astype(np.float32),
            status=[a.status for a in answers],
            text=[a.text for a in answers],
            kind=kind,
            marked=np.array([a.marked for a in answers], dtype=np.int64).reshape(-1, 2),
        )

    def ask(
        self, rgb: np.ndarray, intrinsics: Intrinsics, pixel: Sequence[float], question: str
    ) -> FreeAnswer:
        """The model's text for ``question`` about the pixel the marker points at."""
        if not question.strip():
            raise ValueError("the question is empty")
        (answer,) = self._answers(rgb, intrinsics, np.asarray([pixel]), "range", question)
        status = "too_close_to_border" if answer.status == "too_close_to_border" else "ok"
        return FreeAnswer(text=answer.text, status=status, marked=answer.marked)


__all__ = [
    "DEPTHLM_INPUTS",
    "DenseDepthNotSupported",
    "DepthLMEngine",
    "DepthLMEngineConfig",
    "FreeAnswer",
    "PixelQueryResult",
    "pixel_geometry",
]

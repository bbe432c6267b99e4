"""MetricAnything as engines: the prompted teacher (colour + a sparse metric prompt -> dense
metric depth), the prompt-free student (colour -> metric depth: monocular_depth_node, and the
teacher's prior) and the student's constant-median baseline.

:class:`MetricAnythingStudentEngine` runs the network's ``infer`` on the colour image with
``f_px`` = camera_info's fx (never the official code's 1,000 px default). Its ``checkpoint``:
our directory (config.json + model.safetensors), the official ``student_depthmap.pt`` (plain or
under ``state_dict``, read with ``weights_only=True``, loaded strictly; a directory holding it,
or ``hf:yjh001/metricanything_student_depthmap/student_depthmap.pt`` from the Hub cache), or a
``student_*`` preset (random weights, tests only); empty: ``models/ma_student_small``.
:class:`ConstantDepthEngine` gives every pixel the median depth of the student's training
labels (``train_median_depth_m``, written by training/), never the test recording's.

:class:`MetricAnythingTeacherEngine` runs, per frame (``run``):

1. the working image: the colour image as it came, or downscaled so that its longer side is
   ``max_input_side`` (the intrinsics scaled with it; the prompt's pixels moved to the smaller
   grid, the nearest depth winning a pixel);
2. the prior depth P_d of a prompt-free engine on the colour image alone (``prior``: a
   LingBot-Depth model given no depth, or a MetricAnything student), built once with the
   engine;
3. PDSA and GMDR of P_d to the prompt (:func:`depth_perception.core.prompt_prep.prepare_prompt`,
   in metric disparity 1/m) -> the (3, H, W) [PDSA, GMDR, mask] input;
4. the network's ``infer`` with ``f_px`` = fx of the working image (camera_info's fx, scaled
   with the image; never a fixed focal length): the network resizes image and prompt to its
   square input itself and returns metric depth at the working size;
5. back to the input size (bilinear in inverse depth, as the network's own resize);
6. ``output_alignment: global`` only: the output refitted to the prompt in disparity by one
   least-squares scale and shift over the prompt pixels (GMDR's fit, applied to the network's
   output instead of the prior; :func:`align_output`). It corrects the small network's
   far-range disparity bias with a LiDAR prompt; a prompt that covers only near range (an RGB-D
   sensor's depth outdoors) makes the fit extrapolate badly, so it is a parameter;
7. NaN where the depth is not finite and positive.

The prior must be the one the teacher was trained with. ``prior`` empty takes the one the
checkpoint records (``"prior"`` in its config.json, written by the trainer; a relative path
in it is relative to the checkpoint directory), else :data:`DEFAULT_PRIOR`.

Prior strings: ``lingbot`` (the LingBot-Depth model shipped in the package), ``lingbot:<model
dir | model.pt | preset>``, ``ma_student:<any student checkpoint above>``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from depth_perception.core.camera import Intrinsics
from depth_perception.core.prompt_prep import (
    PDSA_K,
    ScaleShift,
    depth_to_disparity,
    fit_scale_shift,
    prepare_prompt,
)
from depth_perception.engines.base import (
    PROMPT_INPUTS,
    CompletionResult,
    Engine,
    EngineInputs,
    FrameInputs,
)
from depth_perception.engines.device import resolve_device, use_bf16
from depth_perception.models.checkpoints import (
    CONFIG_FILE,
    CheckpointMismatchError,
    CheckpointReadError,
    _read_torch,
    weights_digest,
)
from depth_perception.models.metric_anything.checkpoints import (
    load_model,
    load_official_state_dict,
)
from depth_perception.models.metric_anything.model import (
    MAX_INVERSE_DEPTH,
    MIN_INVERSE_DEPTH,
    MetricAnythingDepth,
)
from depth_perception.models.metric_anything.presets import (
    OFFICIAL_STUDENT,
    PRESETS,
    build_preset,
)
from depth_perception.paths import default_model_path, share_dir

log = logging.getLogger(__name__)

#: The teacher shipped in the package's models/ directory (the node's default).
DEFAULT_TEACHER = "ma_teacher_small"
#: The prior when neither the configuration nor the checkpoint names one.
DEFAULT_PRIOR = "lingbot"
#: Prior kinds: ``<kind>`` or ``<kind>:<checkpoint>``.
PRIOR_KINDS = ("lingbot", "ma_student")
#: The official student's Hugging Face repository (``depth-perception models fetch
#: metricanything-student``).
OFFICIAL_STUDENT_REPO = "yjh001/metricanything_student_depthmap"
#: The space of the two depth channels of the teacher's prompt input (the network converts
#: metric disparity to its canonical units with f_px itself).
PROMPT_SPACE = "disparity"


def default_teacher_path() -> Path:
    """The MetricAnything teacher shipped with the package (trained by training/)."""
    return share_dir() / "models" / DEFAULT_TEACHER


def _set_threads(num_threads: int) -> None:
    """Pin torch's intra-op threads (> 0): the same count gives bit-identical results in the
    node and in offline evaluation. Process-wide, as torch's setting is."""
    if num_threads < 0:
        raise ValueError(f"num_threads must be >= 0 (0: torch's default), got {num_threads}")
    if num_threads > 0 and torch.get_num_threads() != num_threads:
        torch.set_num_threads(num_threads)


def _load_metric_anything(checkpoint: str, what: str):
    """(model in eval mode, weights digest) of our checkpoint dir / .safetensors, an official
    ``.pt`` or a preset name (random weights, digest "random")."""
    if checkpoint in PRESETS and not Path(checkpoint).exists():
        log.warning("MetricAnything preset %r has RANDOM weights (tests only)", checkpoint)
        return load_model(checkpoint).eval(), "random"
    if not Path(checkpoint).exists():
        raise FileNotFoundError(
            f"{what} checkpoint {checkpoint} does not exist (a directory with config.json and "
            "model.safetensors, an official .pt, or a preset name)"
        )
    return load_model(checkpoint).eval(), weights_digest(checkpoint)


def _image_tensor(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 in [0, 1] on ``device``."""
    image = torch.from_numpy(np.ascontiguousarray(rgb)).to(device)
    return image.permute(2, 0, 1).float().div_(255.0)


def _finite_positive(depth: np.ndarray) -> np.ndarray:
    depth = np.asarray(depth, dtype=np.float32)
    depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
    return depth


# ---------------------------------------------------------------------------------------------
# Prompt-free student
# ---------------------------------------------------------------------------------------------


#: The student shipped in the package's models/ directory (the node's default; trained by
#: training/ -- until it is there, the default fails with one line naming the path).
DEFAULT_STUDENT = "ma_student_small"
#: The official student's weights (Hugging Face ``yjh001/metricanything_student_depthmap``).
OFFICIAL_STUDENT_FILE = "student_depthmap.pt"
#: The key, in a student's config.json or a JSON file of its own, of the median depth (metres)
#: of the student's training labels: the constant-median baseline's value.
TRAIN_MEDIAN_KEY = "train_median_depth_m"


def default_student_path() -> Path:
    """The MetricAnything student shipped with the package (trained by training/)."""
    return share_dir() / "models" / DEFAULT_STUDENT


@functools.cache
def _preset_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a preset's state dict, built on the meta device (no weights)."""
    with torch.device("meta"):
        model = MetricAnythingDepth(PRESETS[name])
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def official_student_preset(
    state_dict: Mapping[str, torch.Tensor], source: str | Path = "state dict"
) -> str:
    """The ``student_*`` preset whose keys and shapes are exactly ``state_dict``'s (the official
    file: ``student_vith16plus``). None matching: CheckpointMismatchError naming the keys that
    differ from the closest layout (most keys of equal shape; the official one on a tie),
    found on the meta device before any weight is allocated."""
    shapes = {k: tuple(v.shape) for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    names = [OFFICIAL_STUDENT, *(n for n in sorted(PRESETS) if n.startswith("student_"))]
    names = list(dict.fromkeys(names))
    for name in names:
        if _preset_shapes(name) == shapes:
            return name

    def agreement(name: str) -> int:
        expected = _preset_shapes(name)
        return sum(expected.get(k) == shape for k, shape in shapes.items())

    closest = max(names, key=agreement)  # max keeps the first (official) on a tie
    expected = _preset_shapes(closest)
    common = expected.keys() & shapes.keys()
    raise CheckpointMismatchError(
        expected.keys() - shapes.keys(),
        shapes.keys() - expected.keys(),
        [k for k in common if expected[k] != shapes[k]],
        source=f"{source} (closest layout: {closest})",
    )


def student_weights(checkpoint: str) -> Path | None:
    """Where a student checkpoint's weights are: our directory (config.json +
    model.safetensors) or its ``.safetensors``; an official ``.pt`` / ``.pth`` file or a
    directory holding ``student_depthmap.pt`` (a Hub snapshot); ``hf:<owner>/<name>/<file>``
    from the Hub cache. None for a preset name (random weights). FileNotFoundError otherwise."""
    from depth_perception.models.hub import resolve_checkpoint  # hf: spec -> cached file

    resolved = Path(resolve_checkpoint(checkpoint))
    if resolved.is_dir():
        if (resolved / CONFIG_FILE).is_file():
            return resolved
        if (resolved / OFFICIAL_STUDENT_FILE).is_file():
            return resolved / OFFICIAL_STUDENT_FILE
        raise FileNotFoundError(
            f"{resolved}: neither {CONFIG_FILE} (our checkpoint) nor {OFFICIAL_STUDENT_FILE} "
            "(the official student) inside"
        )
    if resolved.is_file():
        return resolved
    if checkpoint in PRESETS:
        return None
    raise FileNotFoundError(
        f"MetricAnything student checkpoint {checkpoint} does not exist (our directory with "
        f"config.json and model.safetensors, an official {OFFICIAL_STUDENT_FILE}, "
        "hf:<owner>/<name>/<file> or a student_* preset)"
    )


def load_student(checkpoint: str) -> tuple[MetricAnythingDepth, str]:
    """(network in eval mode, weights digest) of a student checkpoint (:func:`student_weights`).

    An official file is read with ``weights_only=True``, plain or under ``state_dict``; its
    architecture is the ``student_*`` preset with exactly its keys and shapes (the official
    file: ``student_vith16plus``), loaded strictly; a file matching no preset raises
    CheckpointMismatchError naming the keys (:func:`official_student_preset`)."""
    weights = student_weights(checkpoint)
    if weights is None:
        log.warning("MetricAnything preset %r has RANDOM weights (tests only)", checkpoint)
        return build_preset(checkpoint).eval(), "random"
    if weights.suffix in (".pt", ".pth"):
        state = _read_torch(weights, "cpu")
        if isinstance(state, Mapping) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, Mapping):
            raise CheckpointReadError(f"{weights}: not a state dict")
        model = build_preset(official_student_preset(state, weights))
        load_official_state_dict(model, state, weights)
    else:
        model = load_model(weights)
    return model.eval(), weights_digest(weights)


@dataclass
class MetricAnythingStudentConfig:
    # Our student dir (config.json + model.safetensors), an official student_depthmap.pt (or a
    # dir holding it; hf:yjh001/metricanything_student_depthmap/student_depthmap.pt from the
    # Hub cache) or a student_* preset (random weights, tests only); empty: the student
    # shipped in the package's models/ directory.
    checkpoint: str = ""
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on the CPU) | fp32 | bf16
    num_threads: int = 0  # > 0: pin torch's CPU threads (bit-identical node and offline runs)


class MetricAnythingStudentEngine(Engine):
    """Metric depth from colour alone with a prompt-free MetricAnything network: the
    network's ``infer`` (ImageNet normalisation, bilinear resize to its square input and
    back) with ``f_px`` = the frame's fx from camera_info, never a fixed focal length; NaN
    where the depth is not finite and positive. The monocular_depth_node's engine and the
    teacher's prior."""

    inputs = EngineInputs(colour=True)

    def __init__(self, cfg: MetricAnythingStudentConfig) -> None:
        self.cfg = cfg
        _set_threads(cfg.num_threads)
        self.device = resolve_device(cfg.device)
        self.use_bf16 = use_bf16(cfg.precision, self.device)
        checkpoint = cfg.checkpoint or str(default_student_path())
        if not cfg.checkpoint and not Path(checkpoint).exists():
            raise FileNotFoundError(
                f"no MetricAnything student at {checkpoint} (the package's default model is "
                "missing from this install): set checkpoint to a student directory, an official "
                f"{OFFICIAL_STUDENT_FILE} or hf:{OFFICIAL_STUDENT_REPO}/{OFFICIAL_STUDENT_FILE}"
            )
        model, digest = load_student(checkpoint)
        if model.is_teacher:
            raise ValueError(
                f"{checkpoint} is a prompted teacher, not a prompt-free student network"
            )
        self.model = model.to(self.device)
        self.checkpoint = checkpoint
        name = Path(checkpoint).name or checkpoint
        self.model_id = f"metric-anything-student/{name}@{digest}"

    def run(self, frame: FrameInputs) -> CompletionResult:
        if frame.rgb is None or frame.rgb.shape[:2] != frame.shape:
            got = None if frame.rgb is None else frame.rgb.shape[:2]
            raise ValueError(f"colour {got} must be the camera's {frame.shape}")
        image = _image_tensor(frame.rgb, self.device)
        out = self.model.infer(image, f_px=frame.intrinsics.fx, use_bf16=self.use_bf16)
        return CompletionResult(depth=_finite_positive(out["depth"].cpu().numpy()))


# ---------------------------------------------------------------------------------------------
# The constant-median baseline
# ---------------------------------------------------------------------------------------------


def training_median_depth(source: str) -> tuple[float, str]:
    """(metres, where from) of the constant baseline: ``source`` is a depth in metres
    (``"3.2"``), a JSON file with ``train_median_depth_m``, or a student checkpoint directory
    whose config.json has it (written by training/ from the student's training labels).

    Never the evaluated recording's own ground truth: its median would hand the baseline a
    statistic of the test set."""
    from depth_perception.models.hub import resolve_checkpoint

    try:
        value, origin = float(source), "parameter"
    except ValueError:
        path = Path(resolve_checkpoint(source))
        file = path / CONFIG_FILE if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(
                f"constant depth {source}: neither a number (metres) nor a JSON file / student "
                f"checkpoint directory with {TRAIN_MEDIAN_KEY}"
            ) from None
        try:
            value = float(json.loads(file.read_text())[TRAIN_MEDIAN_KEY])
        except (OSError, ValueError, TypeError, KeyError):
            raise ValueError(
                f"{file}: no number {TRAIN_MEDIAN_KEY} (the median depth of the training "
                "labels, in metres, written by training/ beside the student)"
            ) from None
        origin = str(file)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"constant depth from {origin} is {value}: must be finite and > 0 m")
    return value, origin


@dataclass
class ConstantDepthConfig:
    # A depth in metres, a JSON file with train_median_depth_m, or a student checkpoint dir
    # whose config.json has it; empty: the student shipped in models/.
    source: str = ""


class ConstantDepthEngine(Engine):
    """The constant-median baseline: every pixel at the training labels' median depth
    (:func:`training_median_depth`), whatever the image. What a prompt-free student must beat
    by a wide margin."""

    inputs = EngineInputs(colour=True)

    def __init__(self, cfg: ConstantDepthConfig) -> None:
        self.cfg = cfg
        self.depth_m, self.origin = training_median_depth(cfg.source or str(default_student_path()))
        self.model_id = f"constant/{self.depth_m:.4g}m"

    def run(self, frame: FrameInputs) -> CompletionResult:
        return CompletionResult(depth=np.full(frame.shape, self.depth_m, np.float32))


# ---------------------------------------------------------------------------------------------
# The prior
# ---------------------------------------------------------------------------------------------


def build_prior(
    spec: str, device: str = "auto", precision: str = "auto", num_threads: int = 0
) -> Engine:
    """The prompt-free engine named by ``spec`` (module docstring), on ``device``."""
    kind, _, checkpoint = spec.partition(":")
    kind = kind.strip()
    checkpoint = checkpoint.strip()
    if kind == "lingbot":
        from depth_perception.engines.lingbot import LingBotEngine, LingBotEngineConfig

        checkpoint = checkpoint or str(default_model_path())
        # The model's own depth everywhere: nothing measured to keep or align to.
        cfg = LingBotEngineConfig(
            checkpoint, device=device, precision=precision, fuse_measured="none"
        )
        return LingBotEngine(cfg)
    if kind == "ma_student":
        if not checkpoint:
            raise ValueError("prior ma_student needs a checkpoint: ma_student:<dir | preset>")
        cfg = MetricAnythingStudentConfig(checkpoint, device, precision, num_threads)
        return MetricAnythingStudentEngine(cfg)
    raise ValueError(
        f"prior {spec!r}: choose lingbot, lingbot:<checkpoint> or ma_student:<checkpoint>"
    )


def prior_depth(prior: Engine, rgb: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """P_d: ``prior``'s depth of the colour image alone (an engine that takes depth is given
    an all-NaN one: nothing measured)."""
    frame = FrameInputs(intrinsics=intrinsics, rgb=rgb)
    if prior.inputs.depth:
        frame.depth = np.full((intrinsics.height, intrinsics.width), np.nan, np.float32)
    if prior.inputs.prompt and not prior.inputs.prompt_optional:
        raise ValueError(f"prior {prior.model_id} needs a prompt: not a prompt-free engine")
    return prior.run(frame).depth


def recorded_prior(checkpoint: str | Path) -> str | None:
    """The prior a teacher checkpoint records (``"prior"`` in its config.json), paths made
    absolute against the checkpoint directory; None when it records none."""
    directory = Path(checkpoint)
    if not directory.is_dir():
        directory = directory.parent
    config = directory / "config.json"
    if not config.is_file():
        return None
    try:
        spec = json.loads(config.read_text()).get("prior")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(spec, str) or not spec:
        return None
    kind, sep, path = spec.partition(":")
    if sep and path and not Path(path).is_absolute() and (directory / path).exists():
        return f"{kind}:{(directory / path).resolve()}"
    return spec


# ---------------------------------------------------------------------------------------------
# Teacher
# ---------------------------------------------------------------------------------------------


@dataclass
class MetricAnythingTeacherConfig:
    # Our teacher dir (config.json + model.safetensors) or a teacher_* preset (random weights,
    # tests only); empty: the teacher shipped in the package's models/ directory.
    checkpoint: str = ""
    # The prompt-free engine giving the prior depth P_d (module docstring); empty: the prior
    # the checkpoint records, else DEFAULT_PRIOR.
    prior: str = ""
    device: str = "auto"  # auto | cpu | cuda | cuda:N (the prior runs there too)
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on the CPU) | fp32 | bf16
    # > 0: work at most this long side (prior, prompt preparation, network; the depth is
    # returned at the input size). The network's own input size is fixed by the checkpoint
    # (four ViT tiles square); this only saves the per-pixel work before it.
    max_input_side: int = 0
    num_threads: int = 0  # > 0: pin torch's CPU threads (bit-identical node and offline runs)
    # none: the network's depth as it is | global: refitted to the prompt by one scale and
    # shift in disparity (module docstring, step 6).
    output_alignment: str = "none"


#: ``MetricAnythingTeacherConfig.output_alignment`` values.
OUTPUT_ALIGNMENTS = ("none", "global")


def align_output(depth: np.ndarray, prompt: np.ndarray) -> tuple[np.ndarray, ScaleShift]:
    """``depth`` (H, W, metres) refitted to ``prompt`` (H, W, metres, NaN where none) in
    disparity: ``1 / (scale / depth + shift)`` with the least-squares scale and shift over the
    pixels where both are valid (:func:`~depth_perception.core.prompt_prep.fit_scale_shift`:
    scale only when the affine fit is undetermined or its scale <= 0, identity without a
    pixel). The refitted disparity is clamped to the network's inverse-depth range, so the fit
    never invalidates a pixel. Returns (float32 depth, the fit)."""
    x = depth_to_disparity(depth)
    y = depth_to_disparity(prompt)
    both = np.isfinite(x) & np.isfinite(y)
    fit = fit_scale_shift(x[both], y[both])
    if fit.mode == "none":
        return np.asarray(depth, dtype=np.float32), fit
    aligned = np.clip(fit.scale * x + fit.shift, MIN_INVERSE_DEPTH, MAX_INVERSE_DEPTH)
    out = np.where(np.isfinite(x), 1.0 / aligned, np.nan)
    return out.astype(np.float32), fit


class MetricAnythingTeacherEngine(Engine):
    """Dense metric depth from colour and a sparse metric prompt (LiDAR, radar, sensor depth)
    with the MetricAnything prompted teacher (module docstring)."""

    inputs = PROMPT_INPUTS

    def __init__(self, cfg: MetricAnythingTeacherConfig) -> None:
        self.cfg = cfg
        if cfg.max_input_side < 0:
            raise ValueError(f"max_input_side must be >= 0, got {cfg.max_input_side}")
        if cfg.output_alignment not in OUTPUT_ALIGNMENTS:
            raise ValueError(
                f"output_alignment must be one of {OUTPUT_ALIGNMENTS}, got {cfg.output_alignment!r}"
            )
        _set_threads(cfg.num_threads)
        self.device = resolve_device(cfg.device)
        self.use_bf16 = use_bf16(cfg.precision, self.device)
        checkpoint = cfg.checkpoint or str(default_teacher_path())
        if not cfg.checkpoint and not Path(checkpoint).exists():
            raise FileNotFoundError(
                f"no MetricAnything teacher at {checkpoint} (the package's default model is "
                "missing from this install): set checkpoint to a teacher directory"
            )
        model, digest = _load_metric_anything(checkpoint, "MetricAnything teacher")
        if not model.is_teacher:
            raise ValueError(
                f"{checkpoint} is a prompt-free (student) network: the teacher takes a prompt"
            )
        self.model = model.to(self.device)
        self.checkpoint = checkpoint
        self.prior_spec = cfg.prior or recorded_prior(checkpoint) or DEFAULT_PRIOR
        self.prior = build_prior(self.prior_spec, cfg.device, cfg.precision, cfg.num_threads)
        name = Path(checkpoint).name or checkpoint
        self.model_id = f"metric-anything-teacher/{name}@{digest}+prior:{self.prior.model_id}"

    def working_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) the prior, the preparation and the network work at."""
        side = self.cfg.max_input_side
        if side <= 0 or max(width, height) <= side:
            return width, height
        scale = side / max(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))

    def prepare(self, rgb: np.ndarray, prompt: np.ndarray, intrinsics: Intrinsics):
        """(working rgb, working intrinsics, ModelInput, PromptAlignment) of one frame: steps
        1-3 of the module docstring."""
        height, width = prompt.shape
        size = self.working_size(width, height)
        if size != (width, height):
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            prompt = shrink_sparse(prompt, *size)
            intrinsics = intrinsics.scaled(*size)
        prior = prior_depth(self.prior, rgb, intrinsics)
        model_input, alignment = prepare_prompt(prior, prompt, PROMPT_SPACE, k=PDSA_K)
        return rgb, intrinsics, model_input, alignment

    @torch.inference_mode()
    def run(self, frame: FrameInputs) -> CompletionResult:
        if frame.prompt is None:
            raise ValueError("the MetricAnything teacher needs a prompt")
        height, width = frame.shape
        if frame.prompt.shape != (height, width) or frame.rgb.shape[:2] != (height, width):
            raise ValueError(
                f"colour {frame.rgb.shape[:2]} and prompt {frame.prompt.shape} must be the "
                f"camera's {height}x{width}"
            )
        rgb, intrinsics, model_input, _ = self.prepare(frame.rgb, frame.prompt, frame.intrinsics)
        image = _image_tensor(rgb, self.device)
        prompt = torch.from_numpy(model_input.tensor).to(self.device)
        out = self.model.infer(image, f_px=intrinsics.fx, prompt=prompt, use_bf16=self.use_bf16)
        inverse = out["inverse_depth"]
        if inverse.shape != (height, width):
            inverse = F.interpolate(
                inverse[None, None], (height, width), mode="bilinear", align_corners=False
            )[0, 0]
        depth = (1.0 / inverse.clamp(MIN_INVERSE_DEPTH, MAX_INVERSE_DEPTH)).float().cpu().numpy()
        if self.cfg.output_alignment == "global":
            depth, _ = align_output(depth, frame.prompt)
        return CompletionResult(depth=_finite_positive(depth))


def shrink_sparse(prompt: np.ndarray, width: int, height: int) -> np.ndarray:
    """A sparse depth map (NaN = none) on a ``width`` x ``height`` grid: every valid pixel
    moves to the pixel its centre falls in (``u' = floor((u + 0.5) * W' / W)``, the mapping of
    :meth:`Intrinsics.scaled`), the nearest depth winning a pixel. No value is invented."""
    prompt = np.asarray(prompt, dtype=np.float32)
    h, w = prompt.shape
    v, u = np.nonzero(np.isfinite(prompt) & (prompt > 0))
    z = prompt[v, u]
    uu = np.minimum(((u + 0.5) * (width / w)).astype(np.int64), width - 1)
    vv = np.minimum(((v + 0.5) * (height / h)).astype(np.int64), height - 1)
    out = np.full(height * width, np.nan, dtype=np.float32)
    np.fmin.at(out, vv * width + uu, z)
    return out.reshape(height, width)

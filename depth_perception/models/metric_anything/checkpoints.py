"""MetricAnything checkpoints: ours (safetensors + config.json), the official student ``.pt``,
and a teacher initialised from a prompt-free network.

Ours: a directory with ``model.safetensors`` (weights only) and ``config.json``
(``{"format": "depth_perception.metric_anything", "format_version": 1, "model_config": ...}``),
as LingBot's (``depth_perception/models/checkpoints.py``), whose strict loader and errors are
reused: a mismatch raises ``CheckpointMismatchError`` naming the missing, unexpected and
wrongly shaped keys and the file.

Official: ``student_depthmap.pt`` is a plain state dict (or one under ``"state_dict"``) of the
official ``MetricAnythingDepthMap``; it carries no config, so the architecture is the preset
given (default: the official student). Read with ``torch.load(weights_only=True)``.

Loaded models come back in eval mode: in training mode DINOv3's RoPE draws a random coordinate
rescale on every call (an augmentation), so a model left in training mode is not deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from depth_perception.models.checkpoints import (
    CONFIG_FILE,
    CheckpointMismatchError,
    CheckpointReadError,
    _load_safetensors_dir,
    _load_strict,
    _read_torch,
    _save_safetensors_dir,
)
from depth_perception.models.metric_anything.config import MetricAnythingConfig
from depth_perception.models.metric_anything.model import MetricAnythingDepth
from depth_perception.models.metric_anything.presets import (
    OFFICIAL_STUDENT,
    PRESETS,
    build_preset,
    preset_config,
)

FORMAT_NAME = "depth_perception.metric_anything"
FORMAT_VERSION = 1
PROMPT_PREFIX = "prompt_branch."


def _build(config: Mapping | MetricAnythingConfig, source: Path) -> MetricAnythingDepth:
    try:
        return MetricAnythingDepth.from_config(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointReadError(f"{source}: unusable model_config ({exc!r})") from exc


def save_checkpoint(model: MetricAnythingDepth, directory: str | Path) -> Path:
    """Write ``model.safetensors`` + ``config.json`` into ``directory``; returns it."""
    return _save_safetensors_dir(model, directory, FORMAT_NAME, FORMAT_VERSION)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> MetricAnythingDepth:
    """Our checkpoint: its directory, or its ``model.safetensors`` / ``config.json``."""
    model = _load_safetensors_dir(path, FORMAT_NAME, FORMAT_VERSION, _build, "cpu")
    return model.to(device).eval()


def load_official_state_dict(
    model: MetricAnythingDepth, state_dict: Mapping[str, torch.Tensor], source: str | Path
) -> MetricAnythingDepth:
    """Strictly load an official-layout state dict (keys named on any mismatch)."""
    if isinstance(state_dict, Mapping) and "state_dict" in state_dict:
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, Mapping):
        raise CheckpointReadError(f"{source}: not a state dict")
    _load_strict(model, state_dict, Path(source))
    return model.eval()


def load_official_checkpoint(
    path: str | Path,
    config: MetricAnythingConfig | str = OFFICIAL_STUDENT,
    map_location: str | torch.device = "cpu",
) -> MetricAnythingDepth:
    """The official ``student_depthmap.pt`` (plain or under ``state_dict``) -> model, strictly.

    ``config``: a preset name or config the file was saved from (the official file is the
    ``student_vith16plus`` network). Weights are read with ``weights_only=True``.
    """
    path = Path(path)
    if isinstance(config, str):
        config = preset_config(config)
    checkpoint = _read_torch(path, map_location)
    model = _build(config, path)
    return load_official_state_dict(model, checkpoint, path)


def save_official_checkpoint(model: MetricAnythingDepth, path: str | Path) -> Path:
    """``torch.save`` of the plain state dict, as the official ``student_depthmap.pt``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    return path


def init_teacher_from_prompt_free(
    teacher: MetricAnythingDepth,
    source: MetricAnythingDepth | Mapping[str, torch.Tensor],
    name: str = "prompt-free model",
) -> MetricAnythingDepth:
    """Copy every weight but the prompt branch from a prompt-free network of the same shape
    (same backbone, dims and skip order) and zero the prompt injections, so the teacher starts
    out computing exactly what the source computes. Any other difference raises
    ``CheckpointMismatchError`` naming the keys."""
    if not teacher.is_teacher:
        raise ValueError("init_teacher_from_prompt_free needs a teacher (prompt_channels = 3)")
    state = source.state_dict() if isinstance(source, torch.nn.Module) else dict(source)
    expected = {k: v for k, v in teacher.state_dict().items() if not k.startswith(PROMPT_PREFIX)}
    wrong = [k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape]
    if expected.keys() != state.keys() or wrong:
        raise CheckpointMismatchError(
            expected.keys() - state.keys(), state.keys() - expected.keys(), wrong, source=name
        )
    teacher.load_state_dict(state, strict=False)
    for stage in teacher.prompt_branch.stages:  # type: ignore[union-attr]
        stage.reset_zero_conv()
    return teacher


def load_model(path_or_preset: str | Path) -> MetricAnythingDepth:
    """Ours (a directory with config.json, or its .safetensors), the official student
    (``.pt`` / ``.pth``), or a preset name (random weights)."""
    path = Path(path_or_preset)
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{path}: no {CONFIG_FILE} inside")
        return load_checkpoint(path)
    if path.is_file():
        if path.suffix in (".pt", ".pth"):
            return load_official_checkpoint(path)
        return load_checkpoint(path)
    if str(path_or_preset) in PRESETS:
        return build_preset(str(path_or_preset))
    raise FileNotFoundError(
        f"{path_or_preset!r} is neither a checkpoint path nor a preset ({', '.join(PRESETS)})"
    )

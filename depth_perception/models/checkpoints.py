"""LingBot-Depth checkpoints: the official ``model.pt``, our safetensors format, DINOv2 init.

Official: ``torch.save({"model_config": {...MDMModel kwargs...}, "model": state_dict})``.
Older official files name the depth patch embedding ``depth_mask_patch_embed`` and some carry
weights of heads the official model never builds (``normal_head.*``, ``scale_head.*``); both
are handled, anything else that does not match raises ``CheckpointMismatchError``.

Ours: a directory with ``model.safetensors`` (weights only, no pickle) and ``config.json``
(``{"format": ..., "format_version": 1, "model_config": {...}}``).

Every load error names the file it came from; :func:`weights_digest` is a short hash of the
weights file, so a model id says which bytes were loaded (a garbled tensor loads silently).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from depth_perception.models.blocks.vit import DinoVisionTransformer
from depth_perception.models.lingbot import PRESETS, LingBotDepth, build_preset

FORMAT_NAME = "depth_perception.lingbot_depth"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
OFFICIAL_FILE = "model.pt"

# Renames older official checkpoints need (prefix of the key, after "encoder.backbone.").
_OFFICIAL_ALIASES = {
    "encoder.backbone.depth_mask_patch_embed.": "encoder.backbone.depth_patch_embed."
}
# Heads the official MDMModel accepts in its config but never builds: their weights are unused.
_UNBUILT_HEADS = ("normal_head.", "scale_head.")


class CheckpointReadError(OSError):
    """A checkpoint file that cannot be read: missing, truncated, garbled or not ours."""


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's keys do not match the model built from its config."""

    def __init__(
        self,
        missing: Iterable[str],
        unexpected: Iterable[str],
        mismatched: Iterable[str] = (),
        shown: int = 10,
        source: str | Path | None = None,
    ) -> None:
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.mismatched = sorted(mismatched)
        parts = []
        for label, keys in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("wrongly shaped", self.mismatched),
        ):
            if keys:
                more = f", ... (+{len(keys) - shown} more)" if len(keys) > shown else ""
                parts.append(f"{len(keys)} {label} key(s): {', '.join(keys[:shown])}{more}")
        where = f"{source}: " if source is not None else ""
        super().__init__(f"{where}checkpoint does not match the model: " + "; ".join(parts))


def _load_strict(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: Path
) -> None:
    """load_state_dict(strict=True), but with our error naming the keys and the file."""
    expected = model.state_dict()
    common = expected.keys() & state_dict.keys()
    wrong = [k for k in common if expected[k].shape != state_dict[k].shape]
    if expected.keys() != state_dict.keys() or wrong:
        raise CheckpointMismatchError(
            expected.keys() - state_dict.keys(),
            state_dict.keys() - expected.keys(),
            wrong,
            source=source,
        )
    model.load_state_dict(state_dict, strict=True)


# Readers of the three file kinds: whatever the library raises on a missing, truncated or
# garbled file (safetensors, pickle/zip, JSON errors rarely name it) becomes an error naming it.


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointReadError(f"{path}: cannot read the JSON config ({exc})") from exc


def _read_safetensors(path: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device=device)
    except Exception as exc:  # SafetensorError, OSError, ...: the file is unreadable
        raise CheckpointReadError(f"{path}: cannot read the safetensors weights ({exc})") from exc


def _read_torch(path: Path, map_location: str | torch.device) -> object:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, unpickling errors, ...
        raise CheckpointReadError(f"{path}: cannot read the checkpoint ({exc})") from exc


def _build(config: Mapping, source: Path) -> LingBotDepth:
    try:
        return LingBotDepth.from_config(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointReadError(f"{source}: unusable model_config ({exc!r})") from exc


# ---------------------------------------------------------------------------------------------
# Official format
# ---------------------------------------------------------------------------------------------


def upgrade_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Apply the known official renames and drop weights of never-built heads."""
    out: dict[str, torch.Tensor] = {}
    dropped = 0
    for key, value in state_dict.items():
        if key.startswith(_UNBUILT_HEADS):
            dropped += 1
            continue
        for old, new in _OFFICIAL_ALIASES.items():
            if key.startswith(old):
                key = new + key[len(old) :]
        out[key] = value
    if dropped:
        warnings.warn(
            f"ignoring {dropped} weight(s) of heads the model does not build", stacklevel=3
        )
    return out


def load_official_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> LingBotDepth:
    """An official ``model.pt`` -> model (strict, after the known renames)."""
    path = Path(path)
    checkpoint = _read_torch(path, map_location)
    if not isinstance(checkpoint, dict) or not {"model_config", "model"} <= checkpoint.keys():
        raise CheckpointReadError(
            f"{path}: not an official LingBot-Depth checkpoint (model_config, model)"
        )
    model = _build(checkpoint["model_config"], path)
    _load_strict(model, upgrade_official_state_dict(checkpoint["model"]), path)
    return model


def save_official_checkpoint(model: LingBotDepth, path: str | Path) -> Path:
    """Write ``{"model_config", "model"}`` exactly as the official ``model.pt`` is laid out."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"model_config": model.model_config, "model": state}, path)
    return path


# ---------------------------------------------------------------------------------------------
# Our format (safetensors + config.json)
# ---------------------------------------------------------------------------------------------


def _save_safetensors_dir(
    model: torch.nn.Module, directory: str | Path, format_name: str, format_version: int
) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (``format``, ``format_version``,
    ``model_config``) into ``directory``; returns it. Shared with MetricAnything's format."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": format_name})
    config = {
        "format": format_name,
        "format_version": format_version,
        "model_config": model.model_config,
    }
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return directory


def _load_safetensors_dir(
    path: str | Path,
    format_name: str,
    format_version: int,
    build: Callable[[Mapping, Path], torch.nn.Module],
    device: str = "cpu",
) -> torch.nn.Module:
    """Read a directory written by :func:`_save_safetensors_dir` (or its ``model.safetensors``
    / ``config.json``): check the format, ``build(model_config, config_path)``, load strictly
    with the weights read onto ``device``. Shared with MetricAnything's format."""
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    config = _read_json(config_path)
    if not isinstance(config, dict) or config.get("format") != format_name:
        raise CheckpointReadError(f"{config_path}: not a {format_name} checkpoint config")
    if int(config.get("format_version", 0)) > format_version:
        raise CheckpointReadError(
            f"{config_path}: format version {config['format_version']} is newer than "
            f"{format_version}"
        )
    model = build(config.get("model_config", {}), config_path)
    _load_strict(model, _read_safetensors(weights_path, device), weights_path)
    return model


def save_checkpoint(model: LingBotDepth, directory: str | Path) -> Path:
    """Write ``model.safetensors`` + ``config.json`` into ``directory``; returns it."""
    return _save_safetensors_dir(model, directory, FORMAT_NAME, FORMAT_VERSION)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LingBotDepth:
    """Our checkpoint: its directory, or its ``model.safetensors`` / ``config.json``."""
    return _load_safetensors_dir(path, FORMAT_NAME, FORMAT_VERSION, _build, str(device))


def load_model(path_or_preset: str | Path) -> LingBotDepth:
    """Ours (a dir with config.json, or its .safetensors), official (a .pt file or a dir with
    model.pt, also as hf:<owner>/<name>[/<file>] from the Hub cache), or a preset name (random
    weights)."""
    file = weights_file(path_or_preset)
    if file is None:
        return build_preset(str(path_or_preset))
    if file.suffix == ".safetensors":
        return load_checkpoint(file)
    return load_official_checkpoint(file)


def weights_file(path_or_preset: str | Path) -> Path | None:
    """The file :func:`load_model` reads the weights from; None for a preset (random weights)."""
    from depth_perception.models.hub import resolve_checkpoint  # hf: spec -> cached file

    path_or_preset = resolve_checkpoint(path_or_preset)
    path = Path(path_or_preset)
    if path.is_dir():
        if (path / CONFIG_FILE).is_file():
            return path / WEIGHTS_FILE
        if (path / OFFICIAL_FILE).is_file():
            return path / OFFICIAL_FILE
        raise FileNotFoundError(f"{path}: neither {CONFIG_FILE} nor {OFFICIAL_FILE} inside")
    if path.is_file():
        return path
    if str(path_or_preset) in PRESETS:
        return None
    raise FileNotFoundError(
        f"{path_or_preset!r} is neither a checkpoint path nor a preset ({', '.join(PRESETS)})"
    )


def weights_digest(path_or_preset: str | Path) -> str:
    """First 8 hex digits of the SHA-256 of the weights file (``model.safetensors`` of our
    format, the official ``model.pt``); "random" for a preset. Model ids carry it, so two runs
    say whether they loaded the same bytes."""
    file = weights_file(path_or_preset)
    if file is None:
        return "random"
    digest = hashlib.sha256()
    try:
        with file.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    except OSError as exc:
        raise CheckpointReadError(f"{file}: cannot read the weights ({exc})") from exc
    return digest.hexdigest()[:8]


# ---------------------------------------------------------------------------------------------
# DINOv2 initialisation from a transformers checkpoint
# ---------------------------------------------------------------------------------------------


def _read_hf_weights(directory: Path) -> dict[str, torch.Tensor]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():  # sharded save
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        weights: dict[str, torch.Tensor] = {}
        for name in files:
            weights.update(_read_safetensors(directory / name))
        return weights
    return _read_safetensors(directory / WEIGHTS_FILE)


def _hf_to_dinov2(hf: Mapping[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """transformers Dinov2 names -> original DINOv2 names (fusing q/k/v and SwiGLU halves)."""
    hf = {k.removeprefix("dinov2."): v for k, v in hf.items()}
    out = {
        "cls_token": hf["embeddings.cls_token"],
        "pos_embed": hf["embeddings.position_embeddings"],
        "patch_embed.proj.weight": hf["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": hf["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": hf["layernorm.weight"],
        "norm.bias": hf["layernorm.bias"],
    }
    for key, ours in (
        ("embeddings.mask_token", "mask_token"),
        ("embeddings.register_tokens", "register_tokens"),
    ):
        if key in hf:
            out[ours] = hf[key]
    for i in range(num_layers):
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."

        def get(*names: str, src: str = src) -> torch.Tensor:
            for name in names:  # legacy layout first, then the transformers>=5 one
                if src + name in hf:
                    return hf[src + name]
            raise KeyError(f"{src}{names[0]} not in the DINOv2 checkpoint")

        for part in ("weight", "bias"):
            out[dst + f"attn.qkv.{part}"] = torch.cat(
                [
                    get(f"attention.attention.{n}.{part}", f"attention.{p}_proj.{part}")
                    for n, p in (("query", "q"), ("key", "k"), ("value", "v"))
                ]
            )
            out[dst + f"attn.proj.{part}"] = get(
                f"attention.output.dense.{part}", f"attention.o_proj.{part}"
            )
            out[dst + f"norm1.{part}"] = get(f"norm1.{part}")
            out[dst + f"norm2.{part}"] = get(f"norm2.{part}")
            if src + "mlp.fc1.weight" in hf:
                out[dst + f"mlp.fc1.{part}"] = get(f"mlp.fc1.{part}")
                out[dst + f"mlp.fc2.{part}"] = get(f"mlp.fc2.{part}")
            elif src + "mlp.weights_in.weight" in hf:
                out[dst + f"mlp.w12.{part}"] = get(f"mlp.weights_in.{part}")
                out[dst + f"mlp.w3.{part}"] = get(f"mlp.weights_out.{part}")
            else:  # transformers>=5 splits the SwiGLU input projection into gate and up
                out[dst + f"mlp.w12.{part}"] = torch.cat(
                    [get(f"mlp.gate_proj.{part}"), get(f"mlp.up_proj.{part}")]
                )
                out[dst + f"mlp.w3.{part}"] = get(f"mlp.down_proj.{part}")
        out[dst + "ls1.gamma"] = get("layer_scale1.lambda1")
        out[dst + "ls2.gamma"] = get("layer_scale2.lambda1")
    return out


def _resize_pos_embed(pos: torch.Tensor, num_patches: int) -> torch.Tensor:
    """(1, 1 + M*M, D) -> (1, 1 + num_patches, D), bicubic on the patch grid (cls kept)."""
    m, n = round((pos.shape[1] - 1) ** 0.5), round(num_patches**0.5)
    grid = pos[:, 1:].float().reshape(1, m, m, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(n, n), mode="bicubic", align_corners=False)
    return torch.cat([pos[:, :1].float(), grid.permute(0, 2, 3, 1).reshape(1, n * n, -1)], dim=1)


def init_encoder_from_dinov2(
    model: LingBotDepth | DinoVisionTransformer, hf_dir: str | Path
) -> list[str]:
    """Initialise the ViT from a ``transformers`` Dinov2 checkpoint directory (config.json +
    model.safetensors as ``save_pretrained`` writes them). The depth patch embedding keeps its
    fresh initialisation (as in the paper); position embeddings are resized bicubically if the
    grids differ. Returns the backbone keys left untouched."""
    backbone = model.encoder.backbone if isinstance(model, LingBotDepth) else model
    hf_dir = Path(hf_dir)
    config = _read_json(hf_dir / CONFIG_FILE)
    if config.get("hidden_size") != backbone.embed_dim or config.get("num_hidden_layers") != len(
        backbone.blocks
    ):
        raise ValueError(
            f"{hf_dir}: DINOv2 of width {config.get('hidden_size')} / "
            f"{config.get('num_hidden_layers')} layers does not fit a ViT of width "
            f"{backbone.embed_dim} / {len(backbone.blocks)} blocks"
        )
    try:
        weights = _hf_to_dinov2(_read_hf_weights(hf_dir), len(backbone.blocks))
    except KeyError as exc:  # a tensor the conversion needs is not in the files
        raise CheckpointReadError(f"{hf_dir}: not a DINOv2 checkpoint ({exc})") from exc
    target = backbone.state_dict()
    if weights["pos_embed"].shape != target["pos_embed"].shape:
        weights["pos_embed"] = _resize_pos_embed(
            weights["pos_embed"], target["pos_embed"].shape[1] - 1
        )
    unexpected = set(weights) - set(target)
    wrong = [k for k in set(weights) & set(target) if weights[k].shape != target[k].shape]
    if unexpected or wrong:
        raise CheckpointMismatchError((), unexpected, wrong, source=hf_dir)
    backbone.load_state_dict(weights, strict=False)
    return sorted(set(target) - set(weights))

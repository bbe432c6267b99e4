"""Training configuration: nested dataclasses, loaded from YAML, overridable from the CLI.

One YAML file describes a whole run (model, data, optimisation, schedule, precision,
parallelism, checkpoints, logging); see ``training/configs/``. Every key is optional (the
dataclass defaults apply) but unknown keys are errors, so a typo cannot silently do nothing.
Quick experiments override single values without editing the file::

    python -m training.train --config training/configs/lingbot_tiny_cpu.yaml \\
        --set iterations=50 --set optim.lr=3e-4 --set optim.groups.0.warmup_iters=10

Values are parsed as YAML (``[112, 84]``, ``null``, ``true``) and then coerced to the field's
type, so ``1e-4`` (which YAML 1.1 reads as a string) still becomes a float.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from training.augment import AugmentConfig

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
STRATEGIES = ("ddp", "fsdp")
DEVICES = ("auto", "cpu", "cuda")
SCHEDULES = ("step", "cosine", "constant")
#: Training methods (``task``; :mod:`training.tasks`).
TASKS = (
    "lingbot",
    "ma_teacher",
    "ma_student",
    "focusdepth",
    "da2_pretrain",
    "sam3_pretrain",
    "depthlm",
    "depthlm_vision",
)


@dataclass
class ModelConfig:
    """Which network to train and how to initialise it (the task's network: LingBot-Depth for
    ``task: lingbot``, MetricAnything for ``task: ma_teacher`` / ``ma_student``)."""

    preset: str | None = "tiny"  # a PRESETS name of the task's model module
    config: dict[str, Any] | None = None  # a full model_config (wins over preset)
    init_dinov2: str | None = None  # LingBot: transformers DINOv2 dir to initialise the ViT from
    init_dinov3: str | None = None  # MetricAnything: transformers DINOv3 dir for the backbone
    init_checkpoint: str | None = None  # fine-tune: anything the task's ``load_model`` accepts
    # fnmatch patterns of parameters kept fixed. DINOv2's mask_token is unused by the RGB-D
    # forward pass; a parameter without gradient would stall DDP's gradient reduction.
    freeze: list[str] = field(default_factory=lambda: ["encoder.backbone.mask_token"])
    # Token budget per step: an int, or [lo, hi] drawn uniformly per step (the same on every
    # rank); None = the model's num_tokens_range.
    num_tokens: int | list[int] | None = None


@dataclass
class CorruptConfig:
    """Input corruption: with probability ``p`` the model sees ``corrupt_depth(target, level)``
    (a random level of ``levels``) instead of the raw sensor depth, the evaluation protocol's
    block holes and noise."""

    p: float = 0.0
    levels: list[str] = field(default_factory=lambda: ["easy", "medium", "hard", "extreme"])


@dataclass
class DataConfig:
    """Shards (``python -m training.extract`` output) and how to batch them."""

    train: list[str] = field(default_factory=list)  # manifest files or shard directories
    target: str = "auto"  # ShardDataset target: auto | gt | depth | pseudo
    # target "pseudo": the fraction of samples with ground truth trained on it instead of the
    # pseudo-label (drawn per sample and epoch)
    gt_fraction: float = 0.0
    batch_size: int = 8  # per process (GPU); the global batch is batch_size * world_size
    size: list[int] | None = None  # Collate (W, H) for mixed-size data; None: as augmented
    num_workers: int = 4
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    corrupt: CorruptConfig = field(default_factory=CorruptConfig)


@dataclass
class MaskingConfig:
    """Masked depth modeling (``training_token_mask``): invalid patches always hidden, mixed
    ones with ``mixed_mask_prob``, random valid ones until the ratio is in ``ratio_range``."""

    mixed_mask_prob: float = 0.75
    ratio_range: list[float] = field(default_factory=lambda: [0.6, 0.9])


@dataclass
class LossConfig:
    """L1 on valid target pixels (``depth_l1_loss``) plus binary cross-entropy of the
    confidence head against target validity on samples with ground truth (the mask head
    decides which pixels ``infer`` keeps; 0 freezes it)."""

    depth_weight: float = 1.0
    mask_weight: float = 0.1


@dataclass
class PromptConfig:
    """MetricAnything teacher: the sparse prompt drawn for every sample, anew every epoch.

    ``kinds``: kind -> relative weight of drawing it (:data:`training.tasks.ma_teacher.
    PROMPT_KINDS`): ``random`` (the paper's: N pixels, N uniform in ``n_range``, of the ground
    truth, or of the sensor's own depth for a self-supervised sample), ``lidar`` / ``radar``
    (the sample's scan projected into the image; extract with ``--lidar`` / ``--radar``),
    ``sensor`` (the sensor's valid depth), ``lidar_like`` (16 scan lines of the target),
    ``extreme`` (100 target pixels), ``down8`` / ``down16`` (the target downsampled).
    ``val_kind``: the one kind validation uses (drawn per sample with a fixed seed)."""

    kinds: dict[str, float] = field(default_factory=lambda: {"random": 1.0})
    n_range: list[int] = field(default_factory=lambda: [2_000, 40_000])
    val_kind: str = "random"


@dataclass
class TeacherConfig:
    """``task: ma_teacher``: prompts, prior and loss of the MetricAnything teacher."""

    # The prompt-free model whose depth is P_d for PDSA / GMDR; it must be the one the shards'
    # ``prior`` member was computed with (``extract --prior``), and is recorded in the export
    # for the engine: ``lingbot`` (the shipped LingBot-Depth on colour only),
    # ``lingbot:<checkpoint>``, ``ma_student:<checkpoint>``.
    prior: str = "lingbot"
    prompt: PromptConfig = field(default_factory=PromptConfig)
    mae_weight: float = 15.0  # L = 15 MAE + 5 SSI-MAGE (paper §7.6)
    ssi_mage_weight: float = 5.0
    trim: float = 0.2  # real (self-supervised) targets: drop each image's largest 20 % residuals
    synthetic_gt: bool = True  # ground truth comes from a simulator: full MAE + SSI-MAGE
    # Initialise every weight but the prompt branch from a prompt-free MetricAnything network
    # of the same shape (``init_teacher_from_prompt_free``): a checkpoint dir or .pt.
    init_prompt_free: str | None = None
    # From scratch only: the depth head's last bias (canonical inverse depth before its ReLU).
    # The official 0 (meant for loading trained weights) leaves the output ReLU dead for
    # many random initialisations, and then no gradient ever flows.
    init_output_bias: float = 0.1
    # Convolutions in channels-last layout (measured ~1.4x faster per step on a CPU for the
    # 512 px presets); single process / DDP.
    channels_last: bool = False


@dataclass
class StudentConfig:
    """``task: ma_student``: loss and initialisation of the MetricAnything student."""

    # L_student: dlog (the paper's L1 on D_log), or Table 14's depth | log_depth | inverse_depth
    pixel_loss: str = "dlog"
    student_weight: float = 10.0  # L = 10 L_student + 2 SSI-MAGE(D_log) (paper §7.6)
    ssi_mage_weight: float = 2.0
    log_depth_range: float = 400.0  # C of D_log = 1 - ln(D) / ln(C), metres
    # Weights from a teacher checkpoint: those matching init_teacher_patterns (fnmatch; "*":
    # every weight but the prompt branch, same shape and skip order; "encoder.patch_encoder.*":
    # the ViT, valid whatever the decoder's skip order).
    init_teacher: str | None = None
    init_teacher_patterns: list[str] = field(default_factory=lambda: ["*"])
    # The student is init_teacher's own network without its prompt branch (the teacher's skip
    # order and widths; model.preset / model.config are ignored), all weights from the teacher.
    teacher_network: bool = False
    init_output_bias: float = 0.1  # from scratch: the depth head's last bias (as the teacher)
    channels_last: bool = False  # single process / DDP
    median_samples: int = 256  # training samples read for the export's train_median_depth_m


@dataclass
class FocusConfig:
    """``task: focusdepth`` (and the ``focus`` keys its pretraining tasks read; see
    :mod:`training.tasks.focusdepth`).

    ``stage``: 1 (MSSA only), 2 (MSSA, depth decoder, SAM3's prompt-guided transformer and
    mask decoder), ``da2_ft`` (the DA2 fine-tuning baseline: DA2 alone, MSSA bypassed in
    training and its gates closed in the export) or ``mssa_init`` (before stage 1, not the
    paper's: MSSA's projection, router and experts trained so that the expert mixture F
    reproduces DA2's tokens X_g; the gates untouched). Both branches see the image resized to
    ``input_size`` S x S (a multiple of 14); the outputs are resized back to the sample.
    """

    stage: int | str = 1
    input_size: int = 56  # S (1008 in the paper)
    band_radius: int = 10  # r of the boundary band B = dilate(M) - erode(M)
    # Prompt kind -> weight, drawn per sample and epoch with the target (box | text | box_text)
    prompt_kinds: dict[str, float] = field(
        default_factory=lambda: {"box": 1.0, "text": 1.0, "box_text": 1.0}
    )
    val_prompt: str = "box_text"  # the one prompt kind validation uses
    min_target_pixels: int = 20  # a target must keep this many mask pixels after augmentation
    # Initialisation without model.init_checkpoint (our FocusDepth dir): the pretrained DA2
    # and SAM3 parts as local transformers dirs (both, or neither: then model.preset).
    init_da2: str | None = None
    init_sam3: str | None = None
    # A CLIP tokenizer dir for a preset / SAM3 trained from scratch; None: a tiny one covering
    # the simulator's class names is written into the run dir.
    tokenizer: str | None = None
    glb_weight: float = 1.0  # L = glb L_glb + fg L_fg + bd L_bd + seg L_seg (paper: all 1)
    fg_weight: float = 1.0
    bd_weight: float = 1.0
    seg_weight: float = 1.0
    grad_weight: float = 1.0  # gradient matching term inside each region loss
    # The per-image scale and shift of the disparity alignment detached (the default, see
    # models/focusdepth_losses.py) or differentiated through (MiDaS): tiny networks trained
    # with a detached fit collapsed to a flat output (the CPU configs set false).
    detach_alignment: bool = True
    da2_ft_train_encoder: bool = True  # da2_ft: the whole DA2 (true) or only its decoder
    # stage 2 also trains DA2's encoder (not the paper's, which freezes it: for a DA2 that is
    # itself undertrained, as the tiny one pretrained here; DA2-ft trains it too)
    stage2_train_depth_encoder: bool = False
    score_weight: float = 1.0  # sam3_pretrain: BCE on the matched query's score + presence


@dataclass
class DepthLMLoraConfig:
    """``task: depthlm``: LoRA adapters (``peft``) instead of full fine-tuning; merged into the
    export. Defaults as ``trl``'s ``get_peft_config`` (the official train.py's)."""

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # A regular expression over module names (peft's full match): by default the language
    # model's attention and MLP projections (the vision tower's MLP has the same leaf names).
    target_modules: str = (
        r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    )
    # Modules trained in full beside the adapters (e.g. ["merger"]: the projector).
    modules_to_save: list[str] = field(default_factory=list)


@dataclass
class DepthLMConfig:
    """``task: depthlm``: DepthLM SFT (:mod:`training.tasks.depthlm`).

    Per sample and epoch (keyed): the frame is resized to ``f_uni``, centre-cropped to a size
    drawn from ``crop_width`` x ``crop_height`` (pixels at ``f_uni``; the paper's [1000, 1400]
    x [700, 1200] at 1000) and fitted to the processor grid; N ~ U[``pixels_per_image``]
    label pixels whose marker fits the crop are drawn from the first of ``label_sources`` the
    sample has (``gt``: its ground truth / pseudo-label, ``lidar``: the LiDAR points projected,
    ``depth``: the valid sensor depth); one marked image per pixel; the distance kind of each
    pixel by ``distances``' weights (``range``: Euclidean, the paper's; ``z``)."""

    f_uni: float = 1000.0
    crop: bool = True  # false: the whole normalised frame (then fitted to the grid)
    crop_position: str = "center"  # center (the official loader) | random
    crop_width: list[float] = field(default_factory=lambda: [1000.0, 1400.0])
    crop_height: list[float] = field(default_factory=lambda: [700.0, 1200.0])
    pixels_per_image: list[int] = field(default_factory=lambda: [1, 4])
    label_sources: list[str] = field(default_factory=lambda: ["gt", "lidar", "depth"])
    distances: dict[str, float] = field(default_factory=lambda: {"range": 1.0})
    min_distance: float = 0.0  # label pixels outside [min, max] metres are not drawn
    max_distance: float | None = None
    # ``model.preset: tiny_qwen | small_qwen`` (tests, the CPU configs): the processor's max_pixels.
    tiny_max_pixels: int = 28 * 28 * 64
    gradient_checkpointing: bool = False
    lora: DepthLMLoraConfig = field(default_factory=DepthLMLoraConfig)
    # Validation: greedy answers for val_pixels_per_image pixels of each validation frame
    # (the whole normalised frame, as DepthLM.query), scored by delta1 and AbsRel.
    val_pixels_per_image: int = 4
    val_distance: str = "range"
    # Validation's token budget (also the export's default). The target text is ~25 Qwen tokens
    # but ~40 of the tiny byte-level tokenizer's: 32 cut every answer's </answer> off.
    max_new_tokens: int = 64
    val_generate_batch: int = 16  # marked images per generate call
    # ``task: depthlm_vision`` only: weight of the dense target, the L1 between the probe's log
    # distance at every merged token and the mean log distance of the labels inside it (0: the
    # marker's token alone).
    token_depth_weight: float = 0.0


@dataclass
class ParamGroupConfig:
    """Parameters whose name matches any fnmatch ``patterns`` (first matching group wins)."""

    name: str = "encoder"
    patterns: list[str] = field(default_factory=lambda: ["*backbone*"])
    lr: float = 1e-5
    warmup_iters: int = 0  # linear warm-up: lr * min(1, (t + 1) / warmup_iters)
    weight_decay: float | None = None  # None: OptimConfig.weight_decay


@dataclass
class OptimConfig:
    """AdamW. ``lr`` / ``warmup_iters`` belong to the parameters no group matches ("rest")."""

    lr: float = 1e-4
    warmup_iters: int = 0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.05
    groups: list[ParamGroupConfig] = field(
        default_factory=lambda: [ParamGroupConfig("encoder", ["*backbone*"], 1e-5, 2000)]
    )
    grad_clip: float | None = 1.0  # max global grad norm; None: no clipping
    rest_name: str = "rest"  # name of the group of parameters no pattern matches


@dataclass
class ScheduleConfig:
    """Multiplier on every group's lr after warm-up: ``step``: gamma ** (t // step_size) (the
    paper: x0.5 every 25k); ``cosine``: to ``min_lr_ratio`` at ``iterations``; ``constant``."""

    kind: str = "step"
    step_size: int = 25_000
    gamma: float = 0.5
    min_lr_ratio: float = 0.0


@dataclass
class ValConfig:
    """Periodic validation on held-out shards: AbsRel / RMSE / delta1 per image, averaged."""

    data: list[str] = field(default_factory=list)  # manifests / dirs; empty: no validation
    every: int = 1000  # iterations; 0: only at the end
    target: str = "auto"
    batch_size: int | None = None  # None: data.batch_size
    size: list[int] | None = None  # Collate (W, H); None: native size (must all match)
    max_batches: int | None = None  # per rank
    num_tokens: int | None = None  # None: top of the model's range (what infer uses)
    corrupt_level: str | None = None  # input = corrupt_depth(gt, level), the LingBot protocol
    max_depth: float | None = None  # score ground truth up to this range (metres)
    metric: str = "abs_rel"  # picks RUN/best (abs_rel / rmse: lower, delta1: higher wins)


@dataclass
class CheckpointConfig:
    every: int = 1000  # iterations
    keep: int = 3  # newest checkpoints kept (the latest always is)


@dataclass
class LogConfig:
    every: int = 20  # scalars (TensorBoard + metrics.jsonl)
    image_every: int = 500  # sample images; 0: never
    images: int = 2  # samples per image log
    progress: bool = True  # tqdm bar on rank 0
    tensorboard: bool = True
    samples: bool = False  # RUN/samples.jsonl: every step's sample keys per rank (audit)


@dataclass
class DistConfig:
    strategy: str = "ddp"  # ddp | fsdp (FULL_SHARD over the ViT blocks; for ViT-L and larger)
    backend: str | None = None  # None: nccl on CUDA, gloo on CPU
    # How long a collective waits for a stopped rank before failing; also how long an orphaned
    # worker (its torchrun agent died) may take to checkpoint before it exits anyway.
    timeout_min: float = 30.0
    find_unused_parameters: bool = False


@dataclass
class TrainConfig:
    """A whole training run."""

    name: str = "run"
    task: str = "lingbot"  # the training method: one of TASKS
    run_dir: str = "out/train/run"
    seed: int = 0
    iterations: int = 1000
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    device: str = "auto"  # auto | cpu | cuda
    threads: int | None = None  # torch intra-op threads per process; None: torch's default
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    val: ValConfig = field(default_factory=ValConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    focus: FocusConfig = field(default_factory=FocusConfig)
    depthlm: DepthLMConfig = field(default_factory=DepthLMConfig)

    def validate(self) -> TrainConfig:
        """Check the choices the trainer cannot recover from later; returns self."""
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.dist.strategy not in STRATEGIES:
            raise ValueError(f"dist.strategy must be one of {STRATEGIES}")
        if self.schedule.kind not in SCHEDULES:
            raise ValueError(f"schedule.kind must be one of {SCHEDULES}")
        if self.model.preset is None and self.model.config is None:
            raise ValueError("set model.preset or model.config")
        if not self.data.train:
            raise ValueError("data.train lists no manifest")
        if self.iterations < 1 or self.data.batch_size < 1:
            raise ValueError("iterations and data.batch_size must be positive")
        if self.val.metric not in ("abs_rel", "rmse", "delta1"):
            raise ValueError("val.metric must be abs_rel, rmse or delta1")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.dist.timeout_min <= 0:
            raise ValueError("dist.timeout_min must be positive")
        return self


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass
# ---------------------------------------------------------------------------------------------


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """(the non-None member of ``X | None``, whether None is allowed)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), optional  # noqa: UP007
    return tp, False


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type (dataclasses recursively)."""
    inner, optional = _strip_optional(tp)
    if value is None:
        if optional or inner is Any:
            return None
        raise ValueError(f"{where}: may not be null")
    origin = typing.get_origin(inner)
    if dataclasses.is_dataclass(inner):
        if isinstance(value, inner):
            return value
        return from_dict(inner, value, where)
    if origin in (typing.Union, types.UnionType):  # e.g. int | list[int]: first that fits
        for option in typing.get_args(inner):
            try:
                return _coerce(value, option, where)
            except (TypeError, ValueError):
                continue
        raise ValueError(f"{where}: {value!r} fits none of {inner}")
    if origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(inner)[:1] or (Any,)
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or inner is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if inner is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{where}: expected true/false, got {value!r}")
        return value
    if inner in (int, float):
        if isinstance(value, bool):
            raise TypeError(f"{where}: expected a number, got {value!r}")
        number = inner(value)  # "1e-4" -> 1e-4; YAML 1.1 leaves such literals as strings
        if inner is int and isinstance(value, float) and number != value:
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return number
    if inner is str:
        if not isinstance(value, str):
            raise TypeError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: dict, where: str = "config") -> Any:
    """Build dataclass ``cls`` from a (YAML) mapping; unknown keys raise ``ValueError``."""
    if not isinstance(data, dict):
        raise TypeError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> Any:
    """A config as plain YAML/JSON-able data (tuples become lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    return cfg


# ---------------------------------------------------------------------------------------------
# Overrides and loading
# ---------------------------------------------------------------------------------------------


def apply_override(data: dict, assignment: str) -> None:
    """Apply ``a.b.c=value`` to a nested dict in place (list items by index: ``groups.0.lr``)."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise ValueError(f"override {assignment!r} is not key=value")
    value = yaml.safe_load(text) if text.strip() else None
    parts = key.strip().split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            node = node[_index(part, node, where)]
            continue
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, (dict, list)):
            raise ValueError(f"override {assignment!r}: {where} is not a mapping or list")
    last = parts[-1]
    if isinstance(node, list):
        node[_index(last, node, key)] = value
    else:
        node[last] = value


def _index(part: str, items: list, where: str) -> int:
    if not part.lstrip("-").isdigit() or not -len(items) <= int(part) < len(items):
        raise ValueError(f"override: {where} needs an index into a list of {len(items)}")
    return int(part)


def _defaults_for_lists(data: dict) -> dict:
    """Materialise default param groups so ``optim.groups.0.lr=...`` works on configs that
    rely on the default groups."""
    optim = data.setdefault("optim", {}) if isinstance(data, dict) else {}
    if isinstance(optim, dict) and "groups" not in optim:
        optim["groups"] = to_dict(OptimConfig().groups)
    return data


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """A YAML file (or the defaults) plus ``key=value`` overrides, validated."""
    data: dict = {}
    if path is not None:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the top level must be a mapping")
    if overrides:
        _defaults_for_lists(data)
    for assignment in overrides:
        apply_override(data, assignment)
    return from_dict(TrainConfig, data).validate()


def dump_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)

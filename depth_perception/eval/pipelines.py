"""Named pipelines that evaluation, the CLI and the demo can run, offline or as real nodes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from depth_perception.core.metrics import RADAR_RANGE_CAPS_M
from depth_perception.core.prompt_prep import PROMPT_KINDS
from depth_perception.core.prompts import CLOUD_SOURCES, DEFAULT_MAX_PROMPT_AGE, PROMPT_SOURCES
from depth_perception.engines.base import (
    PROMPT_INPUTS,
    RGBD_INPUTS,
    CompletionResult,
    Engine,
    EngineInputs,
    FrameInputs,
    input_roles,
)
from depth_perception.engines.classical import ClassicalFillEngine
from depth_perception.io.calibration import Calibration
from depth_perception.io.frames import RGBDFrame
from depth_perception.paths import config_file, default_model_path


@dataclass(frozen=True)
class Pipeline:
    """How to run one method: as an in-process engine or as its ROS node, on the same inputs.

    ``inputs`` is what its engine declares (``make_engine().inputs``); ``prompt_sources`` where
    its prompt comes from (any of ``lidar``, ``radar``, ``sensor_depth``: the node's parameter
    of that name). Together they say which streams of a recording it takes
    (:attr:`roles`), which the offline path turns into the engine's
    :class:`~depth_perception.engines.base.FrameInputs` and the DDS replay publishes to the node
    by the same rules (:func:`depth_perception.eval.evaluate.pipeline_frames`).

    ``synthetic_prompt``: a test-time prompt of the MetricAnything paper's Table 1 derived from
    each frame's ground truth (a :data:`~depth_perception.core.prompt_prep.PROMPT_KINDS` kind:
    ``extreme`` 100 points, ``down8`` / ``down16`` downsampled depth), drawn with a seed fixed
    per frame. It takes the place of the frame's sensor depth, so the pipeline takes it as the
    depth (``prompt_sources: [sensor_depth]`` or a hole fill), and the DDS replay publishes
    exactly it on the depth topic (32FC1, :attr:`depth_encoding`): offline and over DDS the
    engine is given the same prompt. ``range_caps_m``: also score MAE / RMSE in millimetres over the
    ground truth within 0 to each cap (the paper's radar protocol, Table 2).

    ``offline_only``: why the pipeline has no single node to replay over DDS (an evaluation in
    DDS mode skips it with that note, :class:`OfflineOnlyError`).
    """

    name: str
    description: str
    executable: str  # console script of the node (launched for DDS replay)
    params_file: str  # file name under config/
    make_engine: Callable[[], Engine]
    parameters: dict[str, object] = field(default_factory=dict)  # overrides of the params file
    inputs: EngineInputs = RGBD_INPUTS
    prompt_sources: tuple[str, ...] = ()
    max_prompt_age: float = DEFAULT_MAX_PROMPT_AGE  # seconds, as the node's parameter
    synthetic_prompt: str = ""  # a PROMPT_KINDS kind replacing the sensor depth (see above)
    range_caps_m: tuple[float, ...] = ()  # MAE / RMSE (mm) over ground truth in 0..cap m
    #: Why it runs offline only (not as one node: e.g. a chain of two); empty: it runs over DDS.
    offline_only: str = ""

    def __post_init__(self) -> None:
        unknown = set(self.prompt_sources) - set(PROMPT_SOURCES)
        if unknown:
            raise ValueError(f"pipeline {self.name}: unknown prompt sources {sorted(unknown)}")
        if self.prompt_sources and not self.inputs.prompt:
            raise ValueError(f"pipeline {self.name}: prompt sources for an engine without one")
        if self.synthetic_prompt:
            if self.synthetic_prompt not in PROMPT_KINDS:
                raise ValueError(
                    f"pipeline {self.name}: unknown synthetic prompt {self.synthetic_prompt!r}; "
                    f"known: {PROMPT_KINDS}"
                )
            if "depth" not in self.roles:
                raise ValueError(
                    f"pipeline {self.name}: a synthetic prompt replaces the sensor depth, which "
                    "this pipeline does not take (take it, or prompt_sources: [sensor_depth])"
                )

    @property
    def params_path(self) -> str:
        return str(config_file(self.params_file))

    @property
    def depth_encoding(self) -> str:
        """How the DDS replay publishes the depth: 16UC1 millimetres as a camera driver, 32FC1
        for a synthetic prompt (its float values, far ones too, reach the node unchanged)."""
        return "32FC1" if self.synthetic_prompt else "16UC1"

    @property
    def roles(self) -> tuple[str, ...]:
        """The streams it takes (``rgb``, ``rgb_info``, ``depth``, ``lidar``, ...)."""
        return input_roles(self.inputs, self.prompt_sources)

    @property
    def node_parameters(self) -> dict[str, object]:
        """The node's parameter overrides: ``parameters`` plus the prompt sources."""
        if not self.prompt_sources:
            return dict(self.parameters)
        return {
            **self.parameters,
            "prompt_sources": list(self.prompt_sources),
            "max_prompt_age": self.max_prompt_age,
        }


def _classical(
    method: str,
    description: str,
    prompt_sources: tuple[str, ...] = (),
    synthetic_prompt: str = "",
    range_caps_m: tuple[float, ...] = (),
) -> Pipeline:
    """``method`` of depth_fill_node; named ``<method>[_<source>...]``, or ``<method>_<kind>``
    for a synthetic prompt."""
    suffix = (synthetic_prompt,) if synthetic_prompt else prompt_sources
    return Pipeline(
        name="_".join((method, *suffix)),
        description=description,
        executable="depth_fill_node",
        params_file="depth_fill.yaml",
        make_engine=lambda: ClassicalFillEngine(method),
        parameters={"method": method},
        inputs=PROMPT_INPUTS if method == "jbu" else RGBD_INPUTS,
        prompt_sources=prompt_sources,
        synthetic_prompt=synthetic_prompt,
        range_caps_m=range_caps_m,
    )


_LINGBOT_FUSION = {
    "none": ("lingbot", ""),
    "keep": ("lingbot_keep_measured", ", sensor depth kept where measured"),
    "align": ("lingbot_aligned", ", sensor depth kept, holes rescaled to the measurements"),
}


def _lingbot(checkpoint: str, fuse_measured: str = "none") -> Pipeline:
    from depth_perception.engines.lingbot import LingBotEngine, LingBotEngineConfig

    cfg = LingBotEngineConfig(checkpoint=checkpoint, fuse_measured=fuse_measured)
    name, detail = _LINGBOT_FUSION[fuse_measured]
    return Pipeline(
        name=name,
        description=f"LingBot-Depth RGB-D completion ({checkpoint}){detail}",
        executable="rgbd_completion_node",
        params_file="rgbd_completion.yaml",
        make_engine=lambda: LingBotEngine(cfg),
        parameters={"checkpoint": checkpoint, "fuse_measured": fuse_measured},
    )


#: The MetricAnything teacher's prompts: name suffix -> (prompt sources, synthetic prompt kind,
#: what the prompt is). The synthetic ones are the paper's Table 1 test-time variants.
TEACHER_PROMPTS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "lidar": (("lidar",), "", "the LiDAR scan projected into the camera"),
    "radar": (("radar",), "", "the radar scan projected into the camera"),
    "sensor": (("sensor_depth",), "", "the RGB-D sensor's valid depth"),
    "extreme": (("sensor_depth",), "extreme", "100 random ground-truth pixels"),
    "down8": (("sensor_depth",), "down8", "the ground truth 8x downsampled"),
    "down16": (("sensor_depth",), "down16", "the ground truth 16x downsampled"),
}
#: Prompt sources whose pipelines are also scored as the paper's radar table.
_RANGE_SCORED = ("radar",)


def _teacher(
    prompt: str, checkpoint: str | None = None, prior: str = "", output_alignment: str = "none"
) -> Pipeline:
    """``ma_teacher_<prompt>`` (the network's depth as it is), ``ma_teacher_<prompt>_aligned``
    with ``output_alignment="global"`` (refitted to the prompt: what prompted_depth_node
    publishes by default); ``checkpoint`` None: the teacher shipped in models/; ``prior``
    empty: the prior the teacher records (else lingbot), as the node's parameter."""
    from depth_perception.engines.metric_anything import (
        MetricAnythingTeacherConfig,
        MetricAnythingTeacherEngine,
    )

    sources, kind, what = TEACHER_PROMPTS[prompt]
    cfg = MetricAnythingTeacherConfig(
        checkpoint=checkpoint or "", prior=prior, output_alignment=output_alignment
    )
    # The node's checkpoint parameter defaults to the shipped teacher too.
    parameters: dict[str, object] = {"checkpoint": checkpoint} if checkpoint else {}
    if prior:
        parameters["prior"] = prior
    parameters["output_alignment"] = output_alignment
    aligned = output_alignment != "none"
    return Pipeline(
        name=f"ma_teacher_{prompt}" + ("_aligned" if aligned else ""),
        description=f"MetricAnything teacher, prompt: {what} ({checkpoint or 'shipped model'})"
        + (", output refitted to the prompt (one scale and shift in disparity)" if aligned else ""),
        executable="prompted_depth_node",
        params_file="prompted_depth.yaml",
        make_engine=lambda: MetricAnythingTeacherEngine(cfg),
        parameters=parameters,
        inputs=PROMPT_INPUTS,
        prompt_sources=sources,
        synthetic_prompt=kind,
        range_caps_m=RADAR_RANGE_CAPS_M if set(sources) & set(_RANGE_SCORED) else (),
    )


#: Prompts whose teacher pipeline also comes refitted to the prompt (``_aligned``).
ALIGNED_TEACHER_PROMPTS = ("lidar", "radar")


#: The teacher's prompt when the student is its prior (the ``ma_student`` group's comparison).
STUDENT_PRIOR_PROMPT = "lidar"
STUDENT_PRIOR_PIPELINE = f"ma_teacher_{STUDENT_PRIOR_PROMPT}_student_prior"


def _student(checkpoint: str | None = None) -> Pipeline:
    """``ma_student``: the prompt-free student alone (colour + camera_info -> metric depth);
    ``checkpoint`` None: the student shipped in models/."""
    from depth_perception.engines.metric_anything import (
        MetricAnythingStudentConfig,
        MetricAnythingStudentEngine,
    )

    cfg = MetricAnythingStudentConfig(checkpoint=checkpoint or "")
    return Pipeline(
        name="ma_student",
        description=f"MetricAnything student, colour only ({checkpoint or 'shipped model'})",
        executable="monocular_depth_node",
        params_file="monocular_depth.yaml",
        make_engine=lambda: MetricAnythingStudentEngine(cfg),
        parameters={"checkpoint": checkpoint} if checkpoint else {},
        inputs=EngineInputs(colour=True),
    )


def _constant_median(source: str | None = None) -> Pipeline:
    """``constant_median``: every pixel at the median depth of the student's training labels,
    read from ``source`` (a student checkpoint directory whose config.json has
    ``train_median_depth_m``, a JSON file with it, or metres; None: the shipped student's) --
    never the evaluated recording's own median, which would peek at the test set.

    The value is read here and handed to monocular_depth_node as metres (``constant_depth``),
    so the node and the offline engine use the same number; :func:`get_pipeline` calls this
    (the table's entry only names the pipeline). A source without a training median (an
    official student file, a student trained before training/ wrote it) raises
    :class:`MissingInputError`: the pipeline is skipped with the reason, the others run."""
    from depth_perception.engines.metric_anything import (
        ConstantDepthConfig,
        ConstantDepthEngine,
        default_student_path,
        training_median_depth,
    )

    source = source or str(default_student_path())
    try:
        value, origin = training_median_depth(source)
    except (OSError, ValueError) as exc:
        raise MissingInputError(f"no training median depth for the constant: {exc}") from None
    cfg = ConstantDepthConfig(repr(value))
    return Pipeline(
        name="constant_median",
        description=f"constant: the training labels' median depth, {value:.4g} m ({origin})",
        executable="monocular_depth_node",
        params_file="monocular_depth.yaml",
        make_engine=lambda: ConstantDepthEngine(cfg),
        parameters={"constant_depth": value},
        inputs=EngineInputs(colour=True),
    )


#: ``constant_median``'s entry in the table (its value is read by :func:`get_pipeline`).
_CONSTANT_MEDIAN_ENTRY = Pipeline(
    name="constant_median",
    description="constant: the median depth of the student's training labels (a baseline)",
    executable="monocular_depth_node",
    params_file="monocular_depth.yaml",
    make_engine=lambda: _constant_median().make_engine(),
    inputs=EngineInputs(colour=True),
)


def _teacher_student_prior(student: str | None = None, teacher: str | None = None) -> Pipeline:
    """``ma_teacher_lidar_student_prior``: the teacher (``teacher`` None: the shipped one) with
    the LiDAR prompt and the student ``student`` (None: the shipped one) as its PDSA/GMDR
    prior, whatever prior the teacher records (``ma_teacher_lidar`` uses that one)."""
    from depth_perception.engines.metric_anything import default_student_path

    prior = f"ma_student:{student or default_student_path()}"
    base = _teacher(STUDENT_PRIOR_PROMPT, teacher, prior)
    return replace(
        base,
        name=STUDENT_PRIOR_PIPELINE,
        description=f"{base.description}, prior: the student {student or '(shipped model)'}",
    )


class FocusChainEngine(Engine):
    """The grasp chain in one process: a completion engine's depth (``lingbot_aligned``'s) is
    FocusDepth's metric reference, as launch/grasp_perception.launch.py wires
    rgbd_completion_node -> focus_depth_node. Offline only: the DDS replay runs one node."""

    def __init__(self, completion: Engine, focus: Engine) -> None:
        self.completion = completion
        self.focus = focus
        self.inputs = focus.inputs
        self.model_id = f"{completion.model_id} -> {focus.model_id}"

    def reference(self, frame: FrameInputs) -> np.ndarray:
        """The completed depth FocusDepth fits to (the completion engine's output)."""
        return self.completion.run(replace(frame, targets=None)).depth

    def run(self, frame: FrameInputs) -> CompletionResult:
        return self.focus.run(replace(frame, depth=self.reference(frame)))


#: The FocusDepth pipelines: the sensor depth as the metric reference, or the grasp chain's
#: completed depth (``lingbot_aligned`` first).
FOCUSDEPTH = ("focusdepth", "focusdepth_chain")
_CHAIN_REFERENCE = "lingbot_aligned"


def _focusdepth(checkpoint: str | None = None, chain: bool = False) -> Pipeline:
    """``focusdepth`` (``chain``: ``focusdepth_chain``); ``checkpoint``: the FocusDepth model
    (None: the one shipped in models/; :func:`get_pipeline` skips the pipeline with a note while
    there is none). The chain's completion is always the shipped ``lingbot_aligned``.

    A DA2-ft baseline (training's ``da2_ft`` stage) exports an ordinary FocusDepth checkpoint
    with its MSSA gates closed, so ``checkpoint`` evaluates it through the same pipelines."""
    from depth_perception.engines.focusdepth import (
        FOCUS_INPUTS,
        FocusDepthEngine,
        FocusDepthEngineConfig,
    )

    cfg = FocusDepthEngineConfig(checkpoint=checkpoint or "")
    what = f"FocusDepth ({checkpoint or 'shipped model'})"
    common = dict(
        executable="focus_depth_node",
        params_file="focus_depth.yaml",
        parameters={"checkpoint": checkpoint} if checkpoint else {},
        inputs=FOCUS_INPUTS,
    )
    if not chain:
        return Pipeline(
            name="focusdepth",
            description=f"{what}, the sensor depth as metric reference",
            make_engine=lambda: FocusDepthEngine(cfg),
            **common,
        )
    completion = PIPELINES[_CHAIN_REFERENCE]
    return Pipeline(
        name="focusdepth_chain",
        description=f"{what}, {_CHAIN_REFERENCE}'s completed depth as metric reference",
        make_engine=lambda: FocusChainEngine(completion.make_engine(), FocusDepthEngine(cfg)),
        offline_only=(
            f"the chain {completion.executable} -> focus_depth_node is two nodes and the DDS "
            "replay launches one; evaluate it with --mode offline"
        ),
        **common,
    )


PIPELINES: dict[str, Pipeline] = {
    p.name: p
    for p in (
        _classical("nearest", "nearest valid pixel (classical)"),
        _classical("inpaint_telea", "OpenCV Telea inpainting (classical)"),
        _classical("inpaint_ns", "OpenCV Navier-Stokes inpainting (classical)"),
        _classical("ipbasic", "IP-Basic morphological fill (classical)"),
        _classical("jbu", "LiDAR prompt, joint bilateral upsampling (classical)", ("lidar",)),
        _classical("passthrough", "sensor depth unchanged (data path only)"),
    )
}
PIPELINES.update(
    (p.name, p) for p in (_lingbot(str(default_model_path()), mode) for mode in _LINGBOT_FUSION)
)
PIPELINES.update((p.name, p) for p in (_teacher(prompt) for prompt in TEACHER_PROMPTS))
PIPELINES.update(
    (p.name, p)
    for p in (_teacher(prompt, output_alignment="global") for prompt in ALIGNED_TEACHER_PROMPTS)
)
# Classical fills of the teacher's other prompts (the LiDAR's is jbu_lidar, the sensor depth's
# the hole fills): each prompt kind has a classical baseline.
PIPELINES.update(
    (p.name, p)
    for p in (
        _classical(
            "jbu",
            "radar prompt, joint bilateral upsampling (classical)",
            ("radar",),
            range_caps_m=RADAR_RANGE_CAPS_M,
        ),
        *(
            _classical(
                "jbu",
                f"{TEACHER_PROMPTS[kind][2]}, joint bilateral upsampling (classical)",
                ("sensor_depth",),
                synthetic_prompt=kind,
            )
            for kind in ("extreme", "down8", "down16")
        ),
        *(
            _classical("nearest", f"{TEACHER_PROMPTS[kind][2]}, nearest fill (classical)", (), kind)
            for kind in ("down8", "down16")
        ),
    )
)
PIPELINES.update(
    (p.name, p) for p in (_student(), _CONSTANT_MEDIAN_ENTRY, _teacher_student_prior())
)
PIPELINES.update((p.name, p) for p in (_focusdepth(), _focusdepth(chain=True)))
# What every report compares a learned model against: hole fills of the sensor depth, and
# colour-guided upsampling of the LiDAR prompt when the recording has a LiDAR.
BASELINES = ("nearest", "inpaint_telea", "ipbasic")
PROMPT_BASELINES = ("jbu_lidar",)
LEARNED = tuple(name for name, _ in _LINGBOT_FUSION.values())
#: The MetricAnything teacher with each prompt kind.
MA_TEACHER = tuple(f"ma_teacher_{prompt}" for prompt in TEACHER_PROMPTS) + tuple(
    f"ma_teacher_{prompt}_aligned" for prompt in ALIGNED_TEACHER_PROMPTS
)
#: The MetricAnything student alone, its constant-median baseline and the teacher with the
#: student as its prior; ``--checkpoint`` names the *student* for all three (its weights, its
#: training median, the prior). Compare with ``ma_teacher_lidar`` (the teacher's own prior).
MA_STUDENT = ("ma_student", "constant_median", STUDENT_PRIOR_PIPELINE)
#: The pipelines whose model ``--checkpoint`` / :func:`get_pipeline` can replace.
TAKES_CHECKPOINT = (*LEARNED, *MA_TEACHER, *MA_STUDENT, *FOCUSDEPTH)
# Names the CLI accepts besides the pipelines themselves.
PIPELINE_GROUPS: dict[str, tuple[str, ...]] = {
    "all": tuple(PIPELINES),
    "learned": LEARNED,
    "ma_teacher": MA_TEACHER,
    "ma_student": MA_STUDENT,
    "focusdepth": FOCUSDEPTH,
}


class MissingInputError(ValueError):
    """A pipeline needs an input the recording does not provide (e.g. a LiDAR scan)."""


class OfflineOnlyError(MissingInputError):
    """A pipeline asked to run over DDS that runs offline only (``Pipeline.offline_only``):
    skipped with that note, as a pipeline whose inputs the recording lacks."""


def expand_pipelines(names: list[str]) -> list[str]:
    """Pipeline names with the groups (``all``, ``learned``) expanded, first occurrence kept."""
    out: dict[str, None] = {}
    for name in names:
        out.update(dict.fromkeys(PIPELINE_GROUPS.get(name, (name,))))
    return list(out)


_SOURCE_NAMES = {"lidar": "LiDAR", "radar": "radar"}


def missing_inputs(
    pipeline: Pipeline, frame: RGBDFrame, calibration: Calibration | None = None
) -> list[str]:
    """What ``pipeline`` takes (:attr:`Pipeline.roles`) that ``frame`` does not carry: a
    LiDAR / radar scan and its extrinsic to the camera, targets.

    ``calibration`` stands in for the frame's own (``frame.extra["calibration"]``).
    """
    missing = []
    cal = frame.extra.get("calibration") or calibration
    for source in CLOUD_SOURCES:
        if source not in pipeline.roles:
            continue
        name = _SOURCE_NAMES[source]
        if frame.extra.get(source) is None:
            missing.append(f"a {name} scan")
        sensor_frame = frame.extra.get(f"{source}_frame_id", f"{source}_link")
        if not _connects(cal, frame.frame_id, sensor_frame):
            missing.append(
                f"the {name} extrinsic ({sensor_frame} -> {frame.frame_id}) in a calibration"
            )
    if "targets" in pipeline.roles and frame.extra.get("targets") is None:
        missing.append("targets")
    if pipeline.synthetic_prompt and frame.gt_depth is None:
        missing.append(f"ground truth (the {pipeline.synthetic_prompt} prompt is drawn from it)")
    elif pipeline.synthetic_prompt and frame.extra.get("hide_and_seek"):
        # The "ground truth" of a hide-and-seek frame is the scored pixels themselves: a prompt
        # drawn from them would hand the method the answer.
        missing.append(
            f"ground truth other than the hidden pixels (the {pipeline.synthetic_prompt} prompt "
            "is drawn from it)"
        )
    return missing


def frame_cloud(frame: RGBDFrame, source: str) -> tuple[np.ndarray, str, int] | None:
    """``frame``'s ``lidar`` / ``radar`` scan as (points, frame_id, stamp_ns), None without one.

    The scan keeps its own stamp relative to the colour image's (a recording pairs the nearest
    scan, which may be older or newer than the image), moved along with the frame when
    :func:`~depth_perception.eval.evaluate.chain_bags` shifts the stamps."""
    cloud = frame.extra.get(source)
    if cloud is None:
        return None
    stamps = frame.extra.get("stamps") or {}
    stamp = frame.stamp_ns
    if source in stamps and "rgb" in stamps:
        stamp += int(stamps[source]) - int(stamps["rgb"])
    return cloud, str(frame.extra.get(f"{source}_frame_id", f"{source}_link")), stamp


def _connects(calibration: Calibration | None, parent: str, child: str) -> bool:
    if calibration is None:
        return False
    try:
        calibration.transform(parent, child)
    except KeyError:  # the two frames are not connected
        return False
    return True


def _shipped_focusdepth() -> None:
    """:class:`MissingInputError` when models/ has no FocusDepth yet: ``--pipeline all`` skips
    the FocusDepth pipelines with a note instead of stopping (``--checkpoint`` names one)."""
    from depth_perception.engines.focusdepth import default_focusdepth_path

    path = default_focusdepth_path()
    if not path.exists():
        raise MissingInputError(
            f"no FocusDepth model shipped at {path} yet: give one with --checkpoint"
        )


def get_pipeline(name: str, checkpoint: str | None = None, teacher: str | None = None) -> Pipeline:
    """The named pipeline; ``checkpoint`` swaps the model of a learned one (for the
    :data:`MA_STUDENT` pipelines: the student, i.e. also the constant's training median and the
    teacher's prior); ``teacher``: the teacher of ``ma_teacher_lidar_student_prior``."""
    try:
        pipeline = PIPELINES[name]
    except KeyError:
        raise ValueError(f"unknown pipeline {name!r}; choose from {sorted(PIPELINES)}") from None
    if teacher is not None and name != STUDENT_PRIOR_PIPELINE:
        raise ValueError(f"pipeline {name!r} takes no separate teacher")
    if name == STUDENT_PRIOR_PIPELINE:
        return _teacher_student_prior(checkpoint, teacher) if checkpoint or teacher else pipeline
    if name in FOCUSDEPTH and checkpoint is None:
        _shipped_focusdepth()
    if name == "constant_median":
        return _constant_median(checkpoint)
    if checkpoint is None:
        return pipeline
    if name == "ma_student":
        return _student(str(checkpoint))
    if name in FOCUSDEPTH:
        return _focusdepth(str(checkpoint), chain=name == "focusdepth_chain")
    if name in MA_TEACHER:
        alignment = str(pipeline.parameters["output_alignment"])
        prompt = name.removeprefix("ma_teacher_").removesuffix("_aligned")
        return _teacher(prompt, str(checkpoint), output_alignment=alignment)
    if name not in LEARNED:
        raise ValueError(f"pipeline {name!r} has no model to replace")
    return _lingbot(str(checkpoint), fuse_measured=str(pipeline.parameters["fuse_measured"]))

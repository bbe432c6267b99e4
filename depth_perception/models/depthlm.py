"""DepthLM: a vision-language model answers the metric distance of a marked pixel.

The protocol (focal normalisation, marker, texts, parsing) lives in
:mod:`depth_perception.core.depthlm`; this module loads the VLM from a local directory, turns
marked images and questions into model inputs, generates greedily in batches and builds SFT
batches whose loss covers the answer tokens only.

Architectures (as ``facebookresearch/DepthLM_Official`` ``eval.py`` / ``train.py``):

- ``Qwen2_5_VLForConditionalGeneration`` (the paper's default; chat template with the system
  prompt "You are a helpful assistant." and the image before the question);
- ``LlavaForConditionalGeneration`` for the released Pixtral DepthLM (``facebook/DepthLM``),
  prompt ``"<s>[INST][IMG]{problem}[/INST]"``.

Processors are built here from the PIL image processors (``Qwen2VLImageProcessorPil``,
``PixtralImageProcessorPil``) and the directory's tokenizer: the stock Qwen2.5-VL processor
needs a video processor and ``PixtralProcessor``'s module imports torchvision, which is not
installable beside the CPU torch (:class:`QwenImageTextProcessor`,
:class:`PixtralImageTextProcessor`).

The marker must stay on its pixel, so every image is fitted to a size the processor passes
through unchanged (:func:`~depth_perception.core.depthlm.fit_to_grid`: a centre crop to
multiples of 28 for Qwen) *before* the marker is drawn. The official Qwen pipeline instead
lets ``qwen_vl_utils`` / the processor resize the marked image, which blurs and shifts the
arrow by up to half a patch.

Training difference (deliberate, issue 13): the official ``collate_fn`` trains on every
non-pad, non-image token (system prompt and question included); :meth:`DepthLM.sft_batch`
puts the loss on the answer tokens (target text + end-of-turn token) only.

``f_uni`` is stored beside the model as ``depthlm.json`` (our file). Without it: 1000 (the
paper's training value) for Qwen, 750 (the official evaluation's value) for the Pixtral model.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from transformers import (
    AutoTokenizer,
    LlavaForConditionalGeneration,
    Qwen2_5_VLForConditionalGeneration,
)
from transformers.feature_extraction_utils import BatchFeature
from transformers.models.pixtral.image_processing_pil_pixtral import PixtralImageProcessorPil
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.processing_utils import ProcessorMixin

from depth_perception.core.camera import Intrinsics
from depth_perception.core.depthlm import (
    F_UNI_RELEASED_EVAL,
    F_UNI_TRAIN,
    SYSTEM_PROMPT,
    DistanceKind,
    NormalisedFrame,
    ParsedAnswer,
    ProcessorGrid,
    draw_marker,
    fit_to_grid,
    marker_fits,
    normalise_focal,
    parse_answer,
    question_for,
)

Architecture = Literal["qwen2_5_vl", "llava"]
SETTINGS_FILE = "depthlm.json"
PIXTRAL_PROMPT = "<s>[INST][IMG]{problem}[/INST]"
IGNORE_INDEX = -100  # labels torch's cross-entropy skips
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# The part of Qwen2.5-VL's chat template DepthLM uses: system turn (default "You are a helpful
# assistant."), user turn with images and text, assistant turn, generation prompt.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class DepthLMSettings:
    """Our ``depthlm.json`` beside the Hugging Face files of a DepthLM model."""

    f_uni: float = F_UNI_TRAIN
    max_new_tokens: int = 64  # the target is ~25 tokens; the official eval allows 4096
    # The median range of the training labels (written by training/'s export): the constant
    # baseline eval-depthlm scores beside the model. None: not recorded.
    train_median_range_m: float | None = None

    def save(self, model_dir: str | Path) -> None:
        path = Path(model_dir) / SETTINGS_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, model_dir: str | Path, architecture: Architecture) -> DepthLMSettings:
        path = Path(model_dir) / SETTINGS_FILE
        if not path.is_file():
            f_uni = F_UNI_RELEASED_EVAL if architecture == "llava" else F_UNI_TRAIN
            warnings.warn(
                f"{model_dir} has no {SETTINGS_FILE}; using f_uni={f_uni} (the "
                f"{'official evaluation' if architecture == 'llava' else 'paper training'} value)",
                stacklevel=2,
            )
            return cls(f_uni=f_uni)
        data = json.loads(path.read_text(encoding="utf-8"))
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
        settings = cls(**data)
        if not (math.isfinite(settings.f_uni) and settings.f_uni > 0):
            raise ValueError(f"{path}: f_uni must be > 0, got {settings.f_uni}")
        return settings


class QwenImageTextProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL processor for images and text only (no video processor, no torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)
        self.video_processor = None


class PixtralImageTextProcessor:
    """Pixtral (LLaVA) processor without torchvision (``PixtralProcessor`` imports it).

    Same expansion as ``PixtralProcessor.replace_image_token``: each ``[IMG]`` of the text
    becomes, per row of (patch_size * spatial_merge_size) patches, one ``[IMG]`` per column and
    an ``[IMG_BREAK]``; the last token becomes ``[IMG_END]``.
    """

    def __init__(
        self,
        image_processor: PixtralImageProcessorPil,
        tokenizer: Any,
        patch_size: int = 16,
        spatial_merge_size: int = 1,
        image_token: str = "[IMG]",
        image_break_token: str = "[IMG_BREAK]",
        image_end_token: str = "[IMG_END]",
    ) -> None:
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.patch_size = int(patch_size)
        self.spatial_merge_size = int(spatial_merge_size)
        self.image_token = image_token
        self.image_break_token = image_break_token
        self.image_end_token = image_end_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)

    def _expansion(self, height: int, width: int) -> str:
        step = self.patch_size * self.spatial_merge_size
        row = self.image_token * (width // step) + self.image_break_token
        text = row * (height // step)
        return text[: -len(self.image_break_token)] + self.image_end_token

    def __call__(
        self,
        text: list[str],
        images: list[list[Image.Image]],
        padding: bool = True,
        padding_side: str = "left",
        return_tensors: str = "pt",
        add_special_tokens: bool = True,
    ) -> BatchFeature:
        flat = [im for per_sample in images for im in per_sample]
        pixel = self.image_processor(images=flat, return_tensors=return_tensors)
        sizes = iter([(int(h), int(w)) for h, w in pixel["image_sizes"]])
        expanded = []
        for t in text:
            parts = t.split(self.image_token)
            out = parts[0]
            for part in parts[1:]:
                out += self._expansion(*next(sizes)) + part
            expanded.append(out)
        enc = self.tokenizer(
            expanded,
            padding=padding,
            padding_side=padding_side,
            return_tensors=return_tensors,
            add_special_tokens=add_special_tokens,
        )
        return BatchFeature(data={**enc, **pixel})


def _read_chat_template(model_dir: Path, tokenizer: Any) -> str | None:
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    js = model_dir / "chat_template.json"
    if js.is_file():
        return json.loads(js.read_text(encoding="utf-8"))["chat_template"]
    return getattr(tokenizer, "chat_template", None)


def _architecture(model_dir: Path) -> Architecture:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    model_type = config.get("model_type")
    if model_type == "qwen2_5_vl":
        return "qwen2_5_vl"
    if model_type == "llava":
        return "llava"
    raise ValueError(
        f"{model_dir}: model_type {model_type!r} is not a DepthLM architecture "
        "(qwen2_5_vl or llava)"
    )


def build_processor(model_dir: str | Path, architecture: Architecture | None = None) -> Any:
    """The processor of a local model directory, without torchvision."""
    model_dir = Path(model_dir)
    architecture = architecture or _architecture(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:  # as the official train.py
        tokenizer.pad_token = tokenizer.eos_token
    if architecture == "qwen2_5_vl":
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(model_dir)
        return QwenImageTextProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            chat_template=_read_chat_template(model_dir, tokenizer),
        )
    image_processor = PixtralImageProcessorPil.from_pretrained(model_dir)
    extra: dict[str, Any] = {}
    proc_cfg = model_dir / "processor_config.json"
    if proc_cfg.is_file():
        data = json.loads(proc_cfg.read_text(encoding="utf-8"))
        for key in ("patch_size", "spatial_merge_size", "image_token", "image_break_token"):
            if key in data:
                extra[key] = data[key]
        if "image_end_token" in data:
            extra["image_end_token"] = data["image_end_token"]
    return PixtralImageTextProcessor(image_processor, tokenizer, **extra)


def processor_grid(processor: Any) -> ProcessorGrid:
    """The sizes ``processor`` leaves unresized (see :class:`ProcessorGrid`)."""
    ip = processor.image_processor
    if isinstance(ip, Qwen2VLImageProcessorPil):
        return ProcessorGrid(
            multiple=int(ip.patch_size * ip.merge_size),
            min_pixels=int(ip.size["shortest_edge"]),
            max_pixels=int(ip.size["longest_edge"]),
        )
    if isinstance(ip, PixtralImageProcessorPil):
        patch = ip.patch_size
        p = int(patch["height"]) if isinstance(patch, dict) else int(patch)
        merged = int(getattr(processor, "patch_size", p)) * int(
            getattr(processor, "spatial_merge_size", 1)
        )
        return ProcessorGrid(
            multiple=math.lcm(p, merged), longest_edge=int(ip.size["longest_edge"])
        )
    raise TypeError(f"no grid known for image processor {type(ip).__name__}")


@dataclass(frozen=True)
class PixelAnswer:
    """The model's answer for one queried pixel."""

    pixel: tuple[float, float]  # (u, v) in the caller's image
    marked: tuple[int, int]  # (x, y) in the image the model saw
    status: Literal["ok", "failed", "too_close_to_border"]
    text: str | None  # the generated text (None when not asked)
    answer: ParsedAnswer

    @property
    def distance(self) -> float | None:
        return self.answer.value


class DepthLM:
    """A loaded DepthLM model with its processor and settings."""

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        settings: DepthLMSettings,
        architecture: Architecture,
    ) -> None:
        self.model = model
        self.processor = processor
        self.settings = settings
        self.architecture = architecture
        self.grid = processor_grid(processor)

    @classmethod
    def from_dir(
        cls,
        model_dir: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> DepthLM:
        model_dir = Path(model_dir)
        architecture = _architecture(model_dir)
        model_cls = (
            Qwen2_5_VLForConditionalGeneration
            if architecture == "qwen2_5_vl"
            else LlavaForConditionalGeneration
        )
        model = model_cls.from_pretrained(model_dir, dtype=dtype).to(device).eval()
        processor = build_processor(model_dir, architecture)
        return cls(model, processor, DepthLMSettings.load(model_dir, architecture), architecture)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- images and texts ---------------------------------------------------------------------

    def prepare_frame(self, image: np.ndarray, intrinsics: Intrinsics) -> NormalisedFrame:
        """Focal normalisation to this model's f_uni, then a size the processor keeps."""
        return fit_to_grid(normalise_focal(image, intrinsics, self.settings.f_uni), self.grid)

    def prompt(self, question: str) -> str:
        """The model input text for one image and one question (before image-token expansion)."""
        if self.architecture == "llava":
            return PIXTRAL_PROMPT.format(problem=question)
        messages = [
            {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": question}],
            },
        ]
        return self.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    @property
    def end_of_answer(self) -> str:
        """The token that ends the assistant turn (trained, so generation stops)."""
        if self.architecture == "qwen2_5_vl":
            return "<|im_end|>"
        return self.processor.tokenizer.eos_token

    def _encode(self, prompts: list[str], images: list[np.ndarray], padding_side: str) -> Any:
        kwargs: dict[str, Any] = {}
        if self.architecture == "llava":
            kwargs["add_special_tokens"] = False  # the prompt carries its own <s>
        pil = [Image.fromarray(im) for im in images]
        # Pixtral's processor takes one image list per sample; Qwen's a flat list.
        imgs: Any = [[p] for p in pil] if self.architecture == "llava" else pil
        batch = self.processor(
            text=prompts,
            images=imgs,
            padding=True,
            padding_side=padding_side,
            return_tensors="pt",
            **kwargs,
        )
        return batch

    def _to_device(self, batch: Any) -> dict[str, torch.Tensor]:
        dtype = next(self.model.parameters()).dtype
        out = {}
        for key, value in batch.items():
            if not isinstance(value, torch.Tensor):
                continue
            value = value.to(self.device)
            if key == "pixel_values":
                value = value.to(dtype)
            out[key] = value
        return out

    # -- generation ---------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        images: Sequence[np.ndarray],
        questions: Sequence[str],
        max_new_tokens: int | None = None,
        batch_size: int = 16,
        synced_gpus: bool = False,
    ) -> list[str]:
        """Greedy answers, one per (marked image, question), in batches of ``batch_size``.
        ``synced_gpus``: every rank keeps stepping until all are done (a sharded model's
        forward is collective: FSDP training's validation)."""
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} questions")
        budget = int(max_new_tokens or self.settings.max_new_tokens)
        texts: list[str] = []
        tokenizer = self.processor.tokenizer
        for start in range(0, len(images), max(1, batch_size)):
            chunk_images = list(images[start : start + batch_size])
            prompts = [self.prompt(q) for q in questions[start : start + batch_size]]
            batch = self._to_device(self._encode(prompts, chunk_images, "left"))
            out = self.model.generate(
                **batch,
                max_new_tokens=budget,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=tokenizer.pad_token_id,
                synced_gpus=synced_gpus,
            )
            new_tokens = out[:, batch["input_ids"].shape[1] :]
            texts += tokenizer.batch_decode(
                new_tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
        return texts

    def query(
        self,
        image: np.ndarray,
        intrinsics: Intrinsics,
        pixels: np.ndarray | Sequence[Sequence[float]],
        kind: DistanceKind = "range",
        question: str | None = None,
        max_new_tokens: int | None = None,
        batch_size: int = 16,
    ) -> list[PixelAnswer]:
        """Distances of many pixels of one frame: one marked image per pixel (the method's
        requirement), batched greedy generation. ``question`` overrides the trained question
        (a free question about the marked pixel); pixels whose marker does not fit come back
        as ``too_close_to_border`` without a model call."""
        text = question if question is not None else question_for(kind)
        uv = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
        frame = self.prepare_frame(image, intrinsics)
        xy = frame.map_pixels(uv)
        width, height = frame.size
        todo = [
            i for i in range(len(uv)) if marker_fits(int(xy[i, 0]), int(xy[i, 1]), width, height)
        ]
        marked = [draw_marker(frame.image, int(xy[i, 0]), int(xy[i, 1])) for i in todo]
        texts = self.generate(marked, [text] * len(todo), max_new_tokens, batch_size)
        answers: dict[int, str] = dict(zip(todo, texts, strict=True))
        results = []
        for i in range(len(uv)):
            pixel = (float(uv[i, 0]), float(uv[i, 1]))
            at = (int(xy[i, 0]), int(xy[i, 1]))
            if i not in answers:
                parsed = ParsedAnswer(None, "too_close_to_border")
                results.append(PixelAnswer(pixel, at, "too_close_to_border", None, parsed))
                continue
            parsed = parse_answer(answers[i])
            status = "ok" if parsed.ok else "failed"
            results.append(PixelAnswer(pixel, at, status, answers[i], parsed))
        return results

    # -- training -----------------------------------------------------------------------------

    def sft_batch(
        self, images: Sequence[np.ndarray], questions: Sequence[str], targets: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        """Model inputs with ``labels`` for supervised fine-tuning on marked images.

        The prompt (image tokens, system and question) is encoded by the processor; the target
        text plus the end-of-turn token is tokenised separately and appended, so the label mask
        is exact: every prompt and padding position is ``IGNORE_INDEX``, the loss falls on the
        answer tokens only. Right padding.
        """
        if not (len(images) == len(questions) == len(targets)):
            raise ValueError("images, questions and targets must have the same length")
        tokenizer = self.processor.tokenizer
        prompts = [self.prompt(q) for q in questions]
        enc = self._encode(prompts, list(images), "right")
        mask = enc["attention_mask"].bool()
        seq_keys = [
            k
            for k, v in enc.items()
            if isinstance(v, torch.Tensor)
            and v.shape[:2] == enc["input_ids"].shape
            and k not in ("input_ids", "attention_mask")
        ]
        rows: list[dict[str, torch.Tensor]] = []
        for i, target in enumerate(targets):
            answer = tokenizer(target + self.end_of_answer, add_special_tokens=False)["input_ids"]
            answer_ids = torch.tensor(answer, dtype=torch.long)
            prompt_ids = enc["input_ids"][i][mask[i]]
            row = {
                "input_ids": torch.cat([prompt_ids, answer_ids]),
                "labels": torch.cat(
                    [torch.full_like(prompt_ids, IGNORE_INDEX), answer_ids.clone()]
                ),
            }
            for key in seq_keys:  # e.g. Qwen's mm_token_type_ids: answer tokens are text (0)
                values = enc[key][i][mask[i]]
                row[key] = torch.cat([values, torch.zeros(len(answer_ids), dtype=values.dtype)])
            rows.append(row)
        length = max(len(r["input_ids"]) for r in rows)
        pad_id = tokenizer.pad_token_id
        batch: dict[str, torch.Tensor] = {
            "input_ids": torch.full((len(rows), length), pad_id, dtype=torch.long),
            "attention_mask": torch.zeros((len(rows), length), dtype=torch.long),
            "labels": torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long),
        }
        for key in seq_keys:
            batch[key] = torch.zeros((len(rows), length), dtype=enc[key].dtype)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            batch["input_ids"][i, :n] = row["input_ids"]
            batch["attention_mask"][i, :n] = 1
            batch["labels"][i, :n] = row["labels"]
            for key in seq_keys:
                batch[key][i, :n] = row[key]
        for key, value in enc.items():
            if key not in batch and key != "input_ids" and isinstance(value, torch.Tensor):
                batch[key] = value
        return self._to_device(batch)


# ----------------------------------------------------------------------------------------------
# A tiny random Qwen2.5-VL for tests (no downloads)


def _tiny_tokenizer(words: Sequence[str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Byte-level, like Qwen's: every string encodes, digits and tags included.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=list(QWEN_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(words), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )


def _mrope(half: int) -> list[int]:
    """Qwen's (t, h, w) rotary sections for a half head dimension (its 16-24-24 of 64, in
    the same proportions; [1, 1, 2] for 4)."""
    t = max(1, half // 4)
    h = (half - t) // 2
    return [t, h, half - t - h]


#: Sizes of the random Qwen2.5-VL presets: (width, vision blocks, decoder layers, heads).
#: ``tiny_qwen`` (~0.1 M parameters) is the tests' and the first pilot's; ``small_qwen``
#: (~1.8 M) the CPU config's (training/configs/depthlm_small_cpu.yaml).
QWEN_PRESETS = {"tiny_qwen": (32, 2, 2, 4), "small_qwen": (128, 4, 4, 4)}


def build_tiny_qwen(
    model_dir: str | Path,
    f_uni: float = 100.0,
    seed: int = 0,
    max_pixels: int = 28 * 28 * 64,
    preset: str = "tiny_qwen",
) -> Path:
    """Write a small random Qwen2.5-VL DepthLM directory (model, tokenizer, image processor,
    chat template, depthlm.json) that :meth:`DepthLM.from_dir` loads; ``preset`` from
    :data:`QWEN_PRESETS`."""
    from transformers import Qwen2_5_VLConfig

    from depth_perception.core.depthlm import QUESTIONS, target_text

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    corpus = [*QUESTIONS.values(), target_text(3.25), target_text(12.5, "z"), SYSTEM_PROMPT]
    corpus += ["system user assistant 0123456789 meters m"]
    tokenizer = _tiny_tokenizer(corpus * 3)
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    if preset not in QWEN_PRESETS:
        raise ValueError(f"preset {preset!r}: choose one of {sorted(QWEN_PRESETS)}")
    width, vision_depth, layers, heads = QWEN_PRESETS[preset]
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        # mrope sections (t, h, w) sum to head_dim / 2
        "rope_scaling": {"rope_type": "default", "mrope_section": _mrope(width // heads // 2)},
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision_config = {
        "depth": vision_depth,
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_heads": 2,
        "out_hidden_size": width,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 56,
        "fullatt_block_indexes": list(range(1, vision_depth, 2)),
    }
    config = Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=max_pixels).save_pretrained(
        model_dir
    )
    (model_dir / "chat_template.jinja").write_text(QWEN_CHAT_TEMPLATE, encoding="utf-8")
    DepthLMSettings(f_uni=f_uni, max_new_tokens=32).save(model_dir)
    return model_dir

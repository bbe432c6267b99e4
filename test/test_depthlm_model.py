"""DepthLM model: a tiny random Qwen2.5-VL built locally, loaded from its directory, batched
greedy generation, the marker where the model sees it, and one SFT loss on answer tokens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

from depth_perception.core.camera import Intrinsics
from depth_perception.core.depthlm import (
    RANGE_QUESTION,
    ProcessorGrid,
    draw_marker,
    fit_to_grid,
    marker_pixels,
    normalise_focal,
    target_text,
)
from depth_perception.models.depthlm import (
    IGNORE_INDEX,
    SETTINGS_FILE,
    DepthLM,
    QwenImageTextProcessor,
    build_tiny_qwen,
)

K = Intrinsics(200, 150, 120.0, 118.0, 99.5, 74.5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> DepthLM:
    model_dir = build_tiny_qwen(tmp_path_factory.mktemp("depthlm") / "tiny", f_uni=100.0)
    return DepthLM.from_dir(model_dir)


def test_the_small_preset_is_wider_and_deeper(tmp_path):
    """``small_qwen`` (the shipped CPU model's size): width 128, 4 vision blocks, 4 decoder
    layers, rotary sections in Qwen's 1:3:3 proportions; an unknown preset is refused."""
    lm = DepthLM.from_dir(build_tiny_qwen(tmp_path / "small", f_uni=100.0, preset="small_qwen"))
    text, vision = lm.model.config.text_config, lm.model.config.vision_config
    assert (text.hidden_size, text.num_hidden_layers, vision.depth) == (128, 4, 4)
    head_half = text.hidden_size // text.num_attention_heads // 2
    assert text.rope_scaling["mrope_section"] == [4, 6, 6] and sum([4, 6, 6]) == head_half
    assert 1.0e6 < sum(p.numel() for p in lm.model.parameters()) < 3.0e6
    with pytest.raises(ValueError, match="preset 'huge'"):
        build_tiny_qwen(tmp_path / "huge", preset="huge")


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 200, (150, 200, 3), dtype=np.uint8)


def _unpatchify(pixel_values: torch.Tensor, grid_thw: torch.Tensor, ip) -> np.ndarray:
    """Invert Qwen2VLImageProcessorPil.patchify + normalisation for one image -> (H, W, 3) u8."""
    _, gh, gw = (int(x) for x in grid_thw)
    m, p, t = ip.merge_size, ip.patch_size, ip.temporal_patch_size
    x = pixel_values.numpy().reshape(gh // m, gw // m, m, m, 3, t, p, p)[:, :, :, :, :, 0]
    x = x.transpose(4, 0, 2, 5, 1, 3, 6).reshape(3, gh * p, gw * p)
    x = x * np.array(ip.image_std)[:, None, None] + np.array(ip.image_mean)[:, None, None]
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def test_builds_saves_and_loads_from_its_directory(tiny):
    model_dir = Path(tiny.model.name_or_path)
    assert (model_dir / SETTINGS_FILE).is_file()
    assert tiny.architecture == "qwen2_5_vl"
    assert tiny.settings.f_uni == 100.0  # from depthlm.json, not the default 1000
    assert (tiny.model.config.model_type, tiny.model.training) == ("qwen2_5_vl", False)
    assert isinstance(tiny.processor, QwenImageTextProcessor)
    assert tiny.grid == ProcessorGrid(multiple=28, min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64)
    prompt = tiny.prompt(RANGE_QUESTION)
    assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert "<|vision_start|><|image_pad|><|vision_end|>" + RANGE_QUESTION in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_marker_is_at_the_mapped_pixel_in_what_the_model_sees(tiny):
    frame = tiny.prepare_frame(_image(), K)
    assert frame.size == (140, 112)  # 166 x 125 cropped to multiples of 28
    x, y = frame.map_pixel(120, 40)
    marked = draw_marker(frame.image, x, y)
    batch = tiny.processor(text=[tiny.prompt(RANGE_QUESTION)], images=[marked], return_tensors="pt")
    assert batch["image_grid_thw"].tolist() == [[1, 112 // 14, 140 // 14]]  # no resize
    seen = _unpatchify(
        batch["pixel_values"], batch["image_grid_thw"][0], tiny.processor.image_processor
    )
    assert seen.shape == marked.shape
    assert np.abs(seen.astype(int) - marked.astype(int)).max() <= 1  # float round trip only
    for px, py in marker_pixels(x, y):
        assert np.abs(seen[py, px].astype(int) - [255, 0, 0]).max() <= 1
    assert np.abs(seen[y, x].astype(int) - frame.image[y, x]).max() <= 1


@pytest.mark.parametrize("size", [(200, 150), (1280, 720), (37, 300), (2000, 1500)])
def test_fitted_sizes_pass_the_processor_unresized(tiny, size):
    w, h = size
    k = Intrinsics(w, h, 100.0, 100.0, w / 2, h / 2)
    frame = fit_to_grid(normalise_focal(np.zeros((h, w, 3), np.uint8), k, 100.0), tiny.grid)
    fw, fh = frame.size
    ip = tiny.processor.image_processor
    factor = ip.patch_size * ip.merge_size
    assert smart_resize(fh, fw, factor, ip.size["shortest_edge"], ip.size["longest_edge"]) == (
        fh,
        fw,
    )


def test_batched_greedy_generation_returns_parses_and_failures(tiny):
    pixels = [[100, 75], [2, 2], [150, 100], [60, 40], [199, 149]]
    results = tiny.query(_image(), K, pixels, max_new_tokens=6, batch_size=2)
    assert [r.status for r in results][1] == "too_close_to_border"
    assert results[4].status == "too_close_to_border"
    asked = [r for r in results if r.status != "too_close_to_border"]
    assert len(asked) == 3
    for r in asked:
        assert isinstance(r.text, str)
        # random weights: the answer may not parse, but then it fails cleanly with a reason
        assert (r.status == "ok") == r.answer.ok
        assert r.answer.ok or r.answer.failure in {"no_answer", "unparsable", "not_positive"}
    assert results[0].marked == tiny.prepare_frame(_image(), K).map_pixel(100, 75)
    # batching does not change greedy answers (left padding; here all prompts equal length)
    single = tiny.query(_image(), K, pixels[:1], max_new_tokens=6, batch_size=1)
    assert single[0].text == results[0].text


def test_sft_loss_on_answer_tokens_only_reaches_the_vision_tower(tiny):
    frame = tiny.prepare_frame(_image(), K)
    images = [draw_marker(frame.image, 60, 50), draw_marker(frame.image, 30, 20)]
    targets = [target_text(2.5), target_text(11.25)]
    batch = tiny.sft_batch(images, [RANGE_QUESTION] * 2, targets)
    tok = tiny.processor.tokenizer
    labels, ids, mask = batch["labels"], batch["input_ids"], batch["attention_mask"]
    for i, target in enumerate(targets):
        answer = tok(target + "<|im_end|>", add_special_tokens=False)["input_ids"]
        supervised = labels[i][labels[i] != IGNORE_INDEX].tolist()
        assert supervised == answer
        n = int(mask[i].sum())
        # the supervised tokens are exactly the last ones before the padding
        assert ids[i, n - len(answer) : n].tolist() == answer
        assert (labels[i, : n - len(answer)] == IGNORE_INDEX).all()
        assert (labels[i, n:] == IGNORE_INDEX).all()
        assert (ids[i] == tiny.processor.image_token_id).sum() > 0
        assert (labels[i][ids[i] == tiny.processor.image_token_id] == IGNORE_INDEX).all()

    model = tiny.model
    model.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    visual = model.model.visual
    grads = [p.grad for p in visual.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert visual.patch_embed.proj.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_pixtral_llava_path_without_torchvision(tmp_path):
    """The released model's architecture: a tiny LLaVA with a Pixtral vision tower."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration
    from transformers.models.pixtral.image_processing_pil_pixtral import PixtralImageProcessorPil

    from depth_perception.models.depthlm import DepthLMSettings, _tiny_tokenizer

    tok = _tiny_tokenizer(["Given this image how far [INST] [/INST] 0123456789"] * 3)
    extra = ["<s>", "</s>", "[INST]", "[/INST]", "[IMG]", "[IMG_BREAK]", "[IMG_END]"]
    tok.add_special_tokens({"additional_special_tokens": extra})
    tok.bos_token, tok.eos_token = "<s>", "</s>"
    vision = {"model_type": "pixtral", "hidden_size": 32, "intermediate_size": 64}
    vision |= {"num_hidden_layers": 1, "num_attention_heads": 2, "patch_size": 16, "head_dim": 16}
    text = {"model_type": "mistral", "vocab_size": len(tok), "hidden_size": 32, "head_dim": 16}
    text |= {"intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    text |= {"num_key_value_heads": 1}
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tok.convert_tokens_to_ids("[IMG]"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    PixtralImageProcessorPil(size={"longest_edge": 256}).save_pretrained(tmp_path)
    DepthLMSettings(f_uni=100.0).save(tmp_path)

    lm = DepthLM.from_dir(tmp_path)
    assert lm.architecture == "llava"
    assert lm.grid == ProcessorGrid(multiple=16, longest_edge=256)
    assert lm.prompt("q") == "<s>[INST][IMG]q[/INST]"
    results = lm.query(_image(), K, [[100, 75], [60, 40]], max_new_tokens=4, batch_size=2)
    assert [r.status in ("ok", "failed") for r in results] == [True, True]
    frame = lm.prepare_frame(_image(), K)
    batch = lm.sft_batch([frame.image], [RANGE_QUESTION], [target_text(2.0)])
    assert batch["pixel_values"].shape[-2:] == (frame.size[1], frame.size[0])  # not resized
    n_img = int((batch["input_ids"] == lm.processor.image_token_id).sum())
    assert n_img == (frame.size[0] // 16) * (frame.size[1] // 16)
    assert torch.isfinite(lm.model(**batch).loss)

"""SAM3 without torchvision: the pure-torch roi_align and the FocusDepth prompt-branch I/O.

(a) ``roi_align`` against an independent loop reference written from torchvision's CPU kernel
    rules, plus gradcheck. (b) A tiny random ``Sam3Config`` saved and re-loaded through our
    loaders, run with box / text / box+text prompts on square and non-square inputs.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch

from depth_perception.models.blocks import roi_align as roi_align_module
from depth_perception.models.blocks.roi_align import install_roi_align, roi_align
from depth_perception.models.sam3_io import (
    BOX_ONLY_TEXT,
    Sam3Prompt,
    _sam3_config,
    da2_pixel_values,
    load_sam3_model,
    load_sam3_tokenizer,
    sam3_forward,
    sam3_pixel_values,
)

if TYPE_CHECKING:
    from transformers import CLIPTokenizer, Sam3Config, Sam3Model

    TinySam3 = tuple[Sam3Model, CLIPTokenizer]

# ---------------------------------------------------------------------------------------------
# (a) roi_align


def _reference_bilinear(image: np.ndarray, y: float, x: float) -> np.ndarray:
    """One sample of a (C, H, W) map, with the kernel's out-of-range and edge rules."""
    _, height, width = image.shape
    if not (-1.0 <= y <= height and -1.0 <= x <= width):
        return np.zeros(image.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    hy, hx = 1.0 - ly, 1.0 - lx
    return (
        hy * hx * image[:, y0, x0]
        + hy * lx * image[:, y0, x1]
        + ly * hx * image[:, y1, x0]
        + ly * lx * image[:, y1, x1]
    )


def _reference_roi_align(
    feats: np.ndarray,
    rois: np.ndarray,
    pooled: tuple[int, int],
    scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> np.ndarray:
    """Plain loops over RoIs, bins and sample points."""
    pooled_h, pooled_w = pooled
    out = np.zeros((len(rois), feats.shape[1], pooled_h, pooled_w))
    offset = 0.5 if aligned else 0.0
    for k, (b, x1, y1, x2, y2) in enumerate(rois):
        sx, sy = x1 * scale - offset, y1 * scale - offset
        rw, rh = x2 * scale - offset - sx, y2 * scale - offset - sy
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / pooled_h, rw / pooled_w
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(rh / pooled_h)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(rw / pooled_w)
        count = max(gh * gw, 1)
        for i in range(pooled_h):
            for j in range(pooled_w):
                acc = np.zeros(feats.shape[1])
                for iy in range(gh):
                    y = sy + i * bh + (iy + 0.5) * bh / gh
                    for ix in range(gw):
                        x = sx + j * bw + (ix + 0.5) * bw / gw
                        acc += _reference_bilinear(feats[int(b)], y, x)
                out[k, :, i, j] = acc / count
    return out


def _random_rois(rng: np.random.Generator, n_images: int, height: int, width: int) -> np.ndarray:
    """Boxes inside, partly outside, far outside, tiny and inverted (degenerate)."""
    count = 14
    x1 = rng.uniform(-5.0, width + 1.0, count)
    y1 = rng.uniform(-5.0, height + 1.0, count)
    x2 = x1 + rng.uniform(0.1, 9.0, count)
    y2 = y1 + rng.uniform(0.1, 7.0, count)
    x2[0], y2[0] = x1[0] - 0.7, y1[0] - 0.3  # inverted
    x1[1], y1[1], x2[1], y2[1] = -9.0, -9.0, -3.0, -2.0  # entirely outside
    x1[2], y1[2], x2[2], y2[2] = 0.0, 0.0, float(width), float(height)  # whole map
    index = rng.integers(0, n_images, count).astype(np.float64)
    return np.stack([index, x1, y1, x2, y2], axis=1)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
@pytest.mark.parametrize(("pooled", "scale"), [((3, 4), 1.0), ((2, 2), 0.5)])
def test_roi_align_matches_loop_reference(
    aligned: bool, sampling_ratio: int, pooled: tuple[int, int], scale: float
) -> None:
    rng = np.random.default_rng(7 + sampling_ratio + 10 * aligned)
    feats = rng.normal(size=(2, 3, 9, 11))
    rois = _random_rois(rng, 2, int(9 / scale), int(11 / scale))
    expected = _reference_roi_align(feats, rois, pooled, scale, sampling_ratio, aligned)

    feats_t = torch.from_numpy(feats)
    rois_t = torch.from_numpy(rois)
    got = roi_align(feats_t, rois_t, pooled, scale, sampling_ratio, aligned)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)

    # The per-image list format gives the same numbers (rows regrouped by image).
    per_image = [rois_t[rois_t[:, 0] == i, 1:] for i in range(2)]
    order = np.concatenate([np.flatnonzero(rois[:, 0] == i) for i in range(2)])
    got_list = roi_align(feats_t, per_image, pooled, scale, sampling_ratio, aligned)
    np.testing.assert_allclose(got_list.numpy(), expected[order], rtol=1e-10, atol=1e-12)

    # float32 follows the same rules (the boxes avoid exact pixel edges).
    got32 = roi_align(feats_t.float(), rois_t.float(), pooled, scale, sampling_ratio, aligned)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), expected, atol=2e-5)


def test_roi_align_matches_grid_sample_inside_the_map() -> None:
    """A second, torch-native cross-check: for samples inside the map, RoIAlign is the mean
    of ``grid_sample`` (bilinear, align_corners=False) over the bin's 2 x 2 sample points."""
    torch.manual_seed(1)
    feats = torch.randn(1, 4, 12, 16, dtype=torch.float64)
    x1, y1, x2, y2 = 2.3, 1.7, 11.9, 9.4
    pooled_h, pooled_w, ratio = 3, 5, 2
    ys = (
        y1
        - 0.5
        + (torch.arange(pooled_h * ratio, dtype=torch.float64) + 0.5)
        * (y2 - y1)
        / (pooled_h * ratio)
    )
    xs = (
        x1
        - 0.5
        + (torch.arange(pooled_w * ratio, dtype=torch.float64) + 0.5)
        * (x2 - x1)
        / (pooled_w * ratio)
    )
    grid_y, grid_x = torch.meshgrid((2 * ys + 1) / 12 - 1, (2 * xs + 1) / 16 - 1, indexing="ij")
    grid = torch.stack([grid_x, grid_y], dim=-1)[None]
    samples = torch.nn.functional.grid_sample(feats, grid, align_corners=False)
    expected = torch.nn.functional.avg_pool2d(samples, ratio)
    rois = torch.tensor([[0.0, x1, y1, x2, y2]], dtype=torch.float64)
    got = roi_align(feats, rois, (pooled_h, pooled_w), sampling_ratio=ratio, aligned=True)
    torch.testing.assert_close(got, expected)


def test_roi_align_edge_cases() -> None:
    feats = torch.randn(1, 2, 5, 6)
    assert roi_align(feats, torch.zeros(0, 5), 3).shape == (0, 2, 3, 3)
    # An empty aligned RoI has a 0 x 0 sampling grid: torchvision outputs zeros.
    empty = torch.tensor([[0.0, 2.0, 2.0, 2.0, 2.0]])
    assert torch.equal(roi_align(feats, empty, 2, aligned=True), torch.zeros(1, 2, 2, 2))
    # Not aligned, the same RoI becomes 1 x 1 and samples the map.
    assert roi_align(feats, empty, 2, aligned=False).abs().sum() > 0
    # A RoI covering the map exactly with one sample per pixel centre reproduces the map
    # shifted by half a pixel when aligned: average pooling of 1x1 bins = the pixels.
    whole = torch.tensor([[0.0, 0.0, 0.0, 6.0, 5.0]])
    np.testing.assert_allclose(
        roi_align(feats, whole, (5, 6), sampling_ratio=1, aligned=True), feats, atol=1e-6
    )
    with pytest.raises(ValueError):
        roi_align(feats, torch.zeros(1, 4), 2)


def test_roi_align_gradcheck() -> None:
    torch.manual_seed(0)
    feats = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(
        [[0, 0.3, 0.6, 3.7, 4.2], [1, -1.5, 2.2, 7.1, 5.9], [1, 1.1, 1.3, 1.4, 1.2]],
        dtype=torch.float64,
    )
    for aligned in (False, True):
        for ratio in (-1, 2):
            assert torch.autograd.gradcheck(
                lambda x, a=aligned, r=ratio: roi_align(x, rois, (2, 3), 1.0, r, a), (feats,)
            )


# ---------------------------------------------------------------------------------------------
# Preprocessing and prompts


def test_pixel_values_normalisation_and_size() -> None:
    white = np.full((30, 40, 3), 255, dtype=np.uint8)
    sam = sam3_pixel_values(white, (70, 56))
    assert sam.shape == (1, 3, 56, 70) and sam.dtype == torch.float32
    assert torch.allclose(sam, torch.ones_like(sam))
    assert torch.allclose(sam3_pixel_values(np.zeros_like(white), (28, 28)), torch.tensor(-1.0))
    grey = np.full((14, 28, 3), 128, dtype=np.uint8)
    da2 = da2_pixel_values(grey, (28, 14))  # no resize: the exact formula
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(da2, (128 / 255 - mean) / std * torch.ones(1, 3, 14, 28))
    with pytest.raises(ValueError):
        sam3_pixel_values(white.astype(np.float32), (28, 28))


def test_prompt_box_conversion() -> None:
    prompt = Sam3Prompt(box_xywh=(10, 20, 30, 40))
    assert prompt.sam3_text == BOX_ONLY_TEXT == "visual"
    assert prompt.box_cxcywh((100, 200)) == pytest.approx((0.25, 0.2, 0.3, 0.2))
    assert Sam3Prompt(box_xywh=(0, 0, 5, 5), text="car").sam3_text == "car"
    with pytest.raises(ValueError):
        Sam3Prompt()
    with pytest.raises(ValueError):
        Sam3Prompt(box_xywh=(0, 0, 0, 5))


# ---------------------------------------------------------------------------------------------
# (b) tiny SAM3

PATCH = 14
HIDDEN = 32  # every SAM3 part; C_p = detr_encoder hidden size
SPECIALS = ["<|startoftext|>", "<|endoftext|>"]
WORDS = ["visual", "car", "person"]


def _write_tiny_tokenizer(directory: Path) -> int:
    """A CLIP BPE vocabulary small enough to write by hand; returns its size."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab_tokens = SPECIALS + letters + [f"{c}</w>" for c in letters]
    merges: list[str] = []
    for word in WORDS:
        piece = word[0]
        for i, char in enumerate(word[1:], start=1):
            last = i == len(word) - 1
            merged = piece + char + ("</w>" if last else "")
            merges.append(f"{piece} {char}</w>" if last else f"{piece} {char}")
            vocab_tokens.append(merged)
            piece = merged
    vocab = {token: i for i, token in enumerate(dict.fromkeys(vocab_tokens))}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return len(vocab)


def _tiny_config(vocab_size: int) -> Sam3Config:
    from transformers import Sam3Config

    small = {"hidden_size": HIDDEN, "num_attention_heads": 2, "intermediate_size": 64}
    return Sam3Config(
        vision_config={
            "backbone_config": {
                "model_type": "sam3_vit_model",
                **small,
                "num_hidden_layers": 2,
                "image_size": 56,
                "patch_size": PATCH,
                "window_size": 2,
                "global_attn_indexes": [1],
                "pretrain_image_size": 28,
            },
            "fpn_hidden_size": HIDDEN,
            "backbone_feature_sizes": [[16, 16], [8, 8], [4, 4]],
        },
        text_config={
            **small,
            "vocab_size": vocab_size,
            "projection_dim": HIDDEN,
            "num_hidden_layers": 1,
            "max_position_embeddings": 32,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        geometry_encoder_config={**small, "num_layers": 1},
        detr_encoder_config={**small, "num_layers": 1},
        detr_decoder_config={**small, "num_layers": 1, "num_queries": 5},
        mask_decoder_config={"hidden_size": HIDDEN, "num_attention_heads": 2},
    )


@pytest.fixture(scope="module")
def tiny_sam3(tmp_path_factory: pytest.TempPathFactory) -> TinySam3:
    from transformers import Sam3Model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny_sam3")
    vocab_size = _write_tiny_tokenizer(directory)
    reference = Sam3Model(_tiny_config(vocab_size)).eval()
    reference.save_pretrained(directory)
    model = load_sam3_model(directory)
    tokenizer = load_sam3_tokenizer(directory)
    # The round trip kept the weights.
    for (name, saved), loaded in zip(
        reference.state_dict().items(), model.state_dict().values(), strict=True
    ):
        assert torch.equal(saved, loaded), name
    return model, tokenizer


def test_no_torchvision_and_shim_installed(tiny_sam3: TinySam3) -> None:
    from transformers.models.sam3 import modeling_sam3

    assert importlib.util.find_spec("torchvision") is None
    shim = modeling_sam3.torchvision
    assert install_roi_align() is True and install_roi_align() is True
    assert modeling_sam3.torchvision is shim  # idempotent


def test_tiny_tokenizer(tiny_sam3: TinySam3) -> None:
    _, tokenizer = tiny_sam3
    ids = tokenizer("visual")["input_ids"]
    assert ids == [0, tokenizer.convert_tokens_to_ids("visual</w>"), 1]
    padded = tokenizer(["a car"], padding="max_length", max_length=32)
    assert len(padded["input_ids"][0]) == 32 and sum(padded["attention_mask"][0]) == 4


def test_video_style_config_is_unwrapped(tmp_path: Path) -> None:
    detector = _tiny_config(60).to_dict()
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "sam3_video", "detector_config": detector})
    )
    config = _sam3_config(tmp_path)
    assert config.detr_decoder_config.num_queries == 5
    assert config.vision_config.backbone_config.hidden_size == HIDDEN


PROMPTS = {
    "box": Sam3Prompt(box_xywh=(8.0, 10.0, 30.0, 24.0)),
    "text": Sam3Prompt(text="car"),
    "box+text": Sam3Prompt(box_xywh=(8.0, 10.0, 30.0, 24.0), text="car"),
}


@pytest.mark.parametrize("size", [(56, 56), (98, 70)], ids=["square", "wide"])
@pytest.mark.parametrize("kind", list(PROMPTS))
def test_sam3_forward(
    tiny_sam3: TinySam3,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    size: tuple[int, int],
) -> None:
    model, tokenizer = tiny_sam3
    calls: list[tuple[int, ...]] = []
    original = roi_align_module.roi_align

    def counting(features: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        calls.append(tuple(features.shape))
        return original(features, *args, **kwargs)

    monkeypatch.setattr(roi_align_module, "roi_align", counting)
    width, height = size
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    pixels = sam3_pixel_values(rgb, size)
    with torch.no_grad():
        result = sam3_forward(model, pixels, PROMPTS[kind], tokenizer, image_size=(64, 48))

    grid = (height // PATCH, width // PATCH)
    assert result.grid_hw == grid
    assert result.tokens.shape == (1, grid[0] * grid[1], HIDDEN)
    assert result.mask_logits.shape == (1, 1, height, width)
    assert torch.isfinite(result.tokens).all() and torch.isfinite(result.mask_logits).all()
    assert result.score.shape == (1,) and 0 <= int(result.query_index) < 5
    if "box" in kind:  # one call, on the stride-patch FPN level
        assert calls == [(1, HIDDEN, *grid)]
    else:
        assert calls == []


def test_tokens_depend_on_the_prompt(tiny_sam3: TinySam3) -> None:
    model, tokenizer = tiny_sam3
    pixels = sam3_pixel_values(np.full((56, 56, 3), 90, dtype=np.uint8), (56, 56))
    with torch.no_grad():
        text = sam3_forward(model, pixels, PROMPTS["text"], tokenizer).tokens
        both = sam3_forward(model, pixels, PROMPTS["box+text"], tokenizer).tokens
        batch = sam3_forward(model, pixels.repeat(2, 1, 1, 1), PROMPTS["box"], tokenizer)
    assert not torch.allclose(text, both)
    assert batch.tokens.shape == (2, 16, HIDDEN) and batch.mask_logits.shape == (2, 1, 56, 56)

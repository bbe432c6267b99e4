"""LingBot-Depth model: token grid, depth-token masks, embeddings, UV, ConvStack, loss, batching."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from depth_perception.core.camera import Intrinsics
from depth_perception.models.blocks.convstack import MLP, ConvStack, make_resampler
from depth_perception.models.blocks.vit import VIT_ARCHS, DinoVisionTransformer, pack_tokens
from depth_perception.models.lingbot import (
    PRESETS,
    LingBotDepth,
    build_preset,
    depth_l1_loss,
    inference_token_mask,
    normalized_view_plane_uv,
    num_tokens_for_level,
    patch_valid_counts,
    token_grid,
    training_token_mask,
    valid_depth,
)

P = 14


@pytest.fixture(scope="module")
def model() -> LingBotDepth:
    torch.manual_seed(0)
    m = build_preset("tiny").eval()
    with torch.no_grad():  # move every weight off its init (zero biases, unit scales, ...)
        for p in m.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return m


def hand_made_depth() -> tuple[torch.Tensor, set[int], dict[int, int]]:
    """56 x 84 depth = a 4 x 6 grid of 14 px patches with known validity.

    Returns (depth (1, 56, 84), dropped patch indices, {patch: valid count} spot checks).
    """
    d = torch.full((4, P, 6, P), 2.5)  # (row, y, col, x)
    d[0, :, 0] = float("nan")
    d[0, :, 1] = 0.0
    d[0, :, 2] = float("inf")
    d[1, :, 2] = 0.0
    d[1, 5, 2, 7] = 3.0  # a single valid pixel keeps the patch
    d[2, :, 3] = 1.0  # exactly 1 m: valid here (the official code drops it: log(1) = 0)
    d[3, :, 2] = 0.005  # below the 0.01 m threshold
    d[3, :, 5] = -2.0
    return d.reshape(1, 4 * P, 6 * P), {0, 1, 2, 20, 23}, {8: 1, 15: P * P, 3: P * P}


def test_token_grid_and_budget_match_hand_values():
    # 640x480: rows = round(sqrt(3600 / (4/3))) = round(51.96), cols = round(sqrt(4800)) = 69
    assert token_grid(480, 640, 3600) == (52, 69)
    assert token_grid(56, 84, 24) == (4, 6)  # aspect 1.5: sqrt(16), sqrt(36)
    assert num_tokens_for_level((1200, 3600), 9) == 3600
    assert num_tokens_for_level((1200, 3600), 0) == 1200
    assert num_tokens_for_level((1200, 3600), 4) == 2266  # int(1200 + 4/9 * 2400)


def test_inference_mask_on_hand_made_depth():
    depth, dropped, spot = hand_made_depth()
    counts = patch_valid_counts(valid_depth(depth)[:, None], P)
    assert counts.shape == (1, 24)
    for patch, count in spot.items():
        assert counts[0, patch] == count
    mask = inference_token_mask(counts)[0]
    assert set(torch.nonzero(mask).flatten().tolist()) == dropped


def test_model_drops_exactly_the_invalid_patches(model):
    depth, dropped, _ = hand_made_depth()
    image = torch.rand(1, 3, *depth.shape[-2:], generator=torch.Generator().manual_seed(1))
    expected = torch.zeros(1, 24, dtype=torch.bool)
    expected[0, sorted(dropped)] = True
    with torch.no_grad():
        auto = model(image, depth, 24)["depth"]
        same = model(image, depth, 24, depth_token_mask=expected)["depth"]
        also_1m = expected.clone()
        also_1m[0, 15] = True  # dropping the 1.0 m patch as well changes the result
        quirk = model(image, depth, 24, depth_token_mask=also_1m)["depth"]
        keep_all = model(image, depth, 24, depth_token_mask=torch.zeros_like(expected))["depth"]
    torch.testing.assert_close(auto, same, rtol=0, atol=0)
    assert (auto - quirk).abs().max() > 1e-4
    assert (auto - keep_all).abs().max() > 1e-4


def test_pack_tokens_moves_kept_tokens_first_in_order():
    tokens = torch.arange(2 * 5, dtype=torch.float32).reshape(2, 5, 1)
    keep = torch.tensor([[False, True, False, True, True], [True, False, False, False, False]])
    packed, valid = pack_tokens(tokens, keep)
    assert packed.shape == (2, 3, 1)
    assert packed[0, :, 0].tolist() == [1.0, 3.0, 4.0]
    assert packed[1, 0, 0] == 5.0
    assert valid.tolist() == [[True, True, True], [True, False, False]]


def test_positional_and_modality_embedding():
    torch.manual_seed(2)
    vit = DinoVisionTransformer(VIT_ARCHS["dinov2_vitt14"]).eval()
    image, depth = torch.randn(1, 3, 224, 224), torch.randn(1, 1, 224, 224)
    with torch.no_grad():
        prefix, rgb, dep = vit.prepare_rgbd_tokens(image, depth)
        pos = vit.pos_embed[:, 1:]  # the native 16 x 16 grid: used as is
        torch.testing.assert_close(rgb - vit.patch_embed(image), pos + 1, atol=1e-5, rtol=0)
        torch.testing.assert_close(dep - vit.depth_patch_embed(depth), pos + 2, atol=1e-5, rtol=0)
        torch.testing.assert_close(prefix[:, 0], vit.cls_token[:, 0] + vit.pos_embed[:, 0])

        # A non-square grid is interpolated; bicubic weights sum to one, so a constant
        # positional embedding stays constant, and depth stays exactly one above rgb.
        vit.pos_embed.fill_(0.25)
        image, depth = torch.randn(2, 3, 8 * P, 12 * P), torch.randn(2, 1, 8 * P, 12 * P)
        _, rgb, dep = vit.prepare_rgbd_tokens(image, depth)
        rgb_pos = rgb - vit.patch_embed(image)
        dep_pos = dep - vit.depth_patch_embed(depth)
    assert rgb.shape == (2, 96, 96)
    torch.testing.assert_close(rgb_pos, torch.full_like(rgb_pos, 1.25), atol=1e-5, rtol=0)
    torch.testing.assert_close(dep_pos - rgb_pos, torch.ones_like(rgb_pos), atol=1e-5, rtol=0)


def test_uv_encoding_hand_values():
    uv = normalized_view_plane_uv(width=4, height=2)  # aspect 2: spans 2/sqrt5, 1/sqrt5
    a, b = 2 / math.sqrt(5), 1 / math.sqrt(5)
    u = np.array([-0.75, -0.25, 0.25, 0.75]) * a
    v = np.array([-0.5, 0.5]) * b
    assert uv.shape == (2, 4, 2)
    np.testing.assert_allclose(uv[..., 0].numpy(), np.broadcast_to(u, (2, 4)), atol=1e-6)
    np.testing.assert_allclose(uv[..., 1].numpy(), np.broadcast_to(v[:, None], (2, 4)), atol=1e-6)
    # The aspect ratio, not the resolution, sets the span: half-pixel inset at any size.
    big = normalized_view_plane_uv(width=40, height=20)
    assert big[0, -1, 0].item() == pytest.approx(a * 39 / 40, abs=1e-6)
    assert big[-1, 0, 1].item() == pytest.approx(b * 19 / 20, abs=1e-6)


def test_convstack_output_shapes_per_level():
    torch.manual_seed(3)
    stack = ConvStack(
        dim_in=[10, 2, None, 2, None],
        dim_res_blocks=[32, 16, 8, 8, 4],
        dim_out=[None, 3, None, None, 1],
        resamplers=["conv_transpose", "bilinear", "nearest", "pixel_shuffle"],
        num_res_blocks=[1, 0, 1, 2, 1],
        res_block_in_norm="layer_norm",
        res_block_hidden_norm="none",
    )
    inputs = [torch.randn(2, 10, 3, 5), torch.randn(2, 2, 6, 10), None, torch.randn(2, 2, 24, 40)]
    outs = stack(inputs + [None])
    shapes = [tuple(o.shape) for o in outs]
    assert shapes == [(2, 32, 3, 5), (2, 3, 6, 10), (2, 8, 12, 20), (2, 8, 24, 40), (2, 1, 48, 80)]
    assert len(stack.res_blocks[3]) == 2 and len(stack.res_blocks[1]) == 0


def test_upsamplers_start_as_nearest_neighbour():
    torch.manual_seed(4)
    for kind in ("conv_transpose", "pixel_shuffle"):
        first = make_resampler(kind, 6, 4)[0]
        x = torch.randn(1, 6, 3, 3)
        with torch.no_grad():
            y = first(x) if kind == "conv_transpose" else torch.nn.PixelShuffle(2)(first(x))
        # Every output pixel of a 2x2 cell starts identical.
        for dy, dx in ((0, 1), (1, 0), (1, 1)):
            torch.testing.assert_close(y[..., dy::2, dx::2], y[..., 0::2, 0::2])


def test_mlp_layout():
    mlp = MLP([4, 8, 8, 2])
    assert [type(m).__name__ for m in mlp] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert mlp(torch.randn(5, 4)).shape == (5, 2)


def test_l1_loss_by_hand():
    pred = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], requires_grad=True)
    target = torch.tensor([[[1.5, float("nan")], [0.0, 6.0]]])  # valid: 1.5 and 6.0
    loss = depth_l1_loss(pred, target)
    assert loss.item() == pytest.approx((0.5 + 2.0) / 2)
    loss.backward()
    np.testing.assert_allclose(pred.grad.numpy(), [[[-0.5, 0.0], [0.0, -0.5]]])
    # An extra validity mask narrows the average further.
    keep = torch.tensor([[[False, True], [True, True]]])
    assert depth_l1_loss(pred, target, keep).item() == pytest.approx(2.0)


def test_l1_loss_without_valid_pixels_is_zero_with_finite_grad():
    pred = torch.rand(2, 3, 3, requires_grad=True)
    target = torch.full((2, 3, 3), float("nan"))
    loss = depth_l1_loss(pred, target)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_batch_with_different_masks_equals_one_by_one(model):
    g = torch.Generator().manual_seed(5)
    image = torch.rand(2, 3, 70, 98, generator=g)
    depth = torch.rand(2, 70, 98, generator=g) * 3 + 0.5
    depth[0, :, :40] = 0.0
    depth[1, 20:, :] = float("nan")
    rows, cols = model.token_grid(70, 98, 120)
    counts = patch_valid_counts(
        valid_depth(
            torch.nn.functional.interpolate(depth[:, None], (rows * P, cols * P), mode="nearest")
        ),
        P,
    )
    kept = (~inference_token_mask(counts)).sum(dim=1)
    assert kept[0] != kept[1]  # so the batch really needs padding + an attention mask
    with torch.no_grad():
        batch = model(image, depth, 120)
        singles = [model(image[i : i + 1], depth[i : i + 1], 120) for i in range(2)]
    for key in ("depth", "confidence"):
        together = batch[key]
        alone = torch.cat([s[key] for s in singles])
        torch.testing.assert_close(together, alone, atol=2e-5, rtol=1e-5)


def test_training_mask_rule_statistics():
    # 100 patches: 20 fully invalid, 20 mixed (50 of 196 pixels valid), 60 fully valid.
    counts = torch.tensor([0] * 20 + [50] * 20 + [196] * 60).repeat(400, 1)
    mask = training_token_mask(counts, 196, torch.Generator().manual_seed(6))
    ratio = mask.float().mean(dim=1)
    assert mask[:, :20].all()  # fully invalid: always masked
    assert ratio.min() >= 0.6 and ratio.max() <= 0.9
    assert ratio.mean().item() == pytest.approx(0.75, abs=0.015)  # target ~ U[0.6, 0.9]
    assert ratio.std().item() == pytest.approx(0.3 / math.sqrt(12), abs=0.01)
    # Mixed patches: masked with p = 0.75 (the fill prefers fully valid patches).
    assert mask[:, 20:40].float().mean().item() == pytest.approx(0.75, abs=0.03)
    # Reproducible from the generator alone.
    again = training_token_mask(counts, 196, torch.Generator().manual_seed(6))
    other = training_token_mask(counts, 196, torch.Generator().manual_seed(7))
    assert torch.equal(mask, again) and not torch.equal(mask, other)


def test_training_mask_never_unmasks_invalid_patches():
    counts = torch.tensor([[0] * 95 + [196] * 5])
    mask = training_token_mask(counts, 196, torch.Generator().manual_seed(8))
    assert mask[0, :95].all() and not mask[0, 95:].all()


def test_forward_with_mask_generator_uses_training_rule(model):
    g = torch.Generator().manual_seed(9)
    image, depth = torch.rand(1, 3, 56, 84, generator=g), torch.rand(1, 56, 84, generator=g) + 1.5
    with torch.no_grad():
        plain = model(image, depth, 24)["depth"]
        masked_a = model(image, depth, 24, mask_generator=torch.Generator().manual_seed(1))["depth"]
        masked_b = model(image, depth, 24, mask_generator=torch.Generator().manual_seed(1))["depth"]
    torch.testing.assert_close(masked_a, masked_b, rtol=0, atol=0)
    assert (plain - masked_a).abs().max() > 1e-4


def test_forward_and_infer_contract(model):
    g = torch.Generator().manual_seed(10)
    image = torch.rand(3, 42, 70, generator=g)
    depth = torch.rand(42, 70, generator=g) * 2 + 0.5
    depth[:10] = float("nan")
    with torch.no_grad():
        out = model(image[None], depth[None], 100)
    assert out["depth"].shape == out["confidence"].shape == (1, 42, 70)
    assert (out["depth"] > 0).all()
    assert ((out["confidence"] > 0) & (out["confidence"] < 1)).all()

    intr = Intrinsics(width=70, height=42, fx=60.0, fy=58.0, cx=34.0, cy=20.5)
    res = model.infer(image, depth, intr, num_tokens=100)
    assert res["depth"].shape == (42, 70) and res["points"].shape == (42, 70, 3)
    assert torch.equal(res["mask"], res["confidence"] > 0.5)
    assert 0 < res["mask"].sum() < res["mask"].numel()  # random weights: both cases occur
    assert torch.isnan(res["depth"][~res["mask"]]).all()
    torch.testing.assert_close(res["depth"][res["mask"]], out["depth"][0][res["mask"]])
    expected = intr.backproject(res["depth"].numpy())  # independent (numpy) back-projection
    np.testing.assert_allclose(res["points"].numpy(), expected, atol=1e-5, equal_nan=True)

    # Official-style normalised intrinsics give the same points; apply_mask=False keeps all.
    K_norm = torch.tensor([[60.0 / 70, 0, 34.0 / 70], [0, 58.0 / 42, 20.5 / 42], [0, 0, 1]])
    res2 = model.infer(image, depth, K_norm, num_tokens=100, apply_mask=False)
    assert torch.isfinite(res2["depth"]).all()
    torch.testing.assert_close(res2["points"][res["mask"]], res["points"][res["mask"]])
    assert K_norm[0, 0].item() == pytest.approx(60.0 / 70)  # the caller's tensor is untouched


def test_presets_produce_official_configs():
    config = PRESETS["vitl14"].model_config()
    assert config["encoder"]["backbone"] == "dinov2_vitl14"
    assert config["encoder"]["intermediate_layers"] == [5, 11, 17, 23]
    assert config["neck"]["dim_in"] == [1026, 2, 2, 2, 2]
    assert config["depth_head"]["dim_out"] == [None, None, None, None, 1]
    assert config["num_tokens_range"] == [1200, 3600]
    with torch.device("meta"):  # ViT-L without allocating its weights
        big = LingBotDepth.from_config(config)
    state = big.state_dict()
    assert state["encoder.backbone.depth_patch_embed.proj.weight"].shape == (1024, 1, 14, 14)
    assert state["encoder.backbone.pos_embed"].shape == (1, 37 * 37 + 1, 1024)
    assert state["encoder.backbone.blocks.23.attn.qkv.weight"].shape == (3072, 1024)
    assert state["encoder.backbone.blocks.23.ls2.gamma"].shape == (1024,)
    assert state["encoder.backbone.mask_token"].shape == (1, 1024)
    assert "encoder.backbone.blocks.24.norm1.weight" not in state
    assert len(big.encoder.output_projections) == 4
    assert {"encoder.image_mean", "encoder.image_std"} <= state.keys()


def test_from_config_warns_on_unknown_kwargs_and_checks_widths():
    config = PRESETS["tiny"].model_config()
    with pytest.warns(UserWarning, match="ignored"):
        m = LingBotDepth.from_config({**config, "some_old_flag": True})
    assert "some_old_flag" not in m.model_config
    assert m.model_config == config
    bad = PRESETS["tiny"].model_config()
    bad["encoder"]["dim_out"] = 64
    with warnings.catch_warnings(), pytest.raises(ValueError, match="dim_out"):
        LingBotDepth.from_config(bad)


def test_depth_without_any_valid_pixel_runs_rgb_only(model):
    g = torch.Generator().manual_seed(13)
    image = torch.rand(2, 3, 42, 56, generator=g)
    depth = torch.full((2, 42, 56), float("nan"))
    depth[1] = 0.0
    rows, cols = model.token_grid(42, 56, 80)
    all_dropped = torch.ones(2, rows * cols, dtype=torch.bool)
    with torch.no_grad():
        out = model(image, depth, 80)["depth"]
        explicit = model(image, depth, 80, depth_token_mask=all_dropped)["depth"]
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, explicit, rtol=0, atol=0)

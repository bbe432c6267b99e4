"""MetricAnything network: official student layout, tiling, skip orders, prompt branch, units.

The official key list is written here from the official code's module structure
(``metric-anything/metric-anything``, ``models/student_depthmap/network/{encoder,decoder}.py``,
``depth_model.py`` and the DINOv3 ``vision_transformer.py`` / ``layers``), independently of our
modules, and checked against what our student builds, at tiny and at the official size.
"""

from __future__ import annotations

import json
from math import prod

import pytest
import torch
from safetensors.torch import load_file, save_file

from depth_perception.models.blocks.dinov3 import (
    DINOV3_ARCHS,
    DinoV3Config,
    DinoV3VisionTransformer,
    state_dict_from_transformers,
)
from depth_perception.models.checkpoints import CheckpointMismatchError, CheckpointReadError
from depth_perception.models.metric_anything import (
    PRESETS,
    MetricAnythingConfig,
    MetricAnythingDepth,
    build_preset,
    count_parameters,
    normalize_image,
)
from depth_perception.models.metric_anything.checkpoints import (
    init_teacher_from_prompt_free,
    load_checkpoint,
    load_model,
    load_official_checkpoint,
    save_checkpoint,
    save_official_checkpoint,
)
from depth_perception.models.metric_anything.config import STUDENT_FORWARD_IDS
from depth_perception.models.metric_anything.encoder import merge_tiles, split_tiles

# ---------------------------------------------------------------------------------------------
# The official student's state dict, enumerated from its code
# ---------------------------------------------------------------------------------------------


def official_student_keys(
    vit: DinoV3Config,
    dims: tuple[int, int, int, int],
    decoder: int,
    last_dims: tuple[int, int],
) -> dict[str, tuple[int, ...]]:
    """Key -> shape of ``MetricAnythingDepthMap.state_dict()`` (official code, read by hand)."""
    D, p = vit.embed_dim, vit.patch_size
    keys: dict[str, tuple[int, ...]] = {}
    v = "encoder.patch_encoder."
    # DinoVisionTransformer: cls_token, storage_tokens, rope_embed (persistent periods),
    # patch_embed.proj, blocks (SelfAttentionBlock), norm, mask_token; head = Identity.
    keys[v + "cls_token"] = (1, 1, D)
    keys[v + "storage_tokens"] = (1, vit.n_storage_tokens, D)
    keys[v + "mask_token"] = (1, D)
    keys[v + "rope_embed.periods"] = (D // vit.num_heads // 4,)
    keys[v + "patch_embed.proj.weight"] = (D, 3, p, p)
    keys[v + "patch_embed.proj.bias"] = (D,)
    hidden = int(D * vit.ffn_ratio)
    if vit.ffn_layer == "swiglu":  # SwiGLUFFN: d = int(hidden * 2/3) rounded up to 8
        d = int(hidden * 2 / 3)
        hidden = d + (-d % 8)
    for b in range(vit.depth):
        k = f"{v}blocks.{b}."
        for norm in ("norm1", "norm2"):
            keys[f"{k}{norm}.weight"] = keys[f"{k}{norm}.bias"] = (D,)
        keys[k + "attn.qkv.weight"] = (3 * D, D)
        keys[k + "attn.qkv.bias"] = keys[k + "attn.qkv.bias_mask"] = (3 * D,)  # LinearKMaskedBias
        keys[k + "attn.proj.weight"] = (D, D)
        keys[k + "attn.proj.bias"] = (D,)
        keys[k + "ls1.gamma"] = keys[k + "ls2.gamma"] = (D,)
        if vit.ffn_layer == "swiglu":
            for w in ("w1", "w2"):
                keys[f"{k}mlp.{w}.weight"], keys[f"{k}mlp.{w}.bias"] = (hidden, D), (hidden,)
            keys[k + "mlp.w3.weight"], keys[k + "mlp.w3.bias"] = (D, hidden), (D,)
        else:
            keys[k + "mlp.fc1.weight"], keys[k + "mlp.fc1.bias"] = (hidden, D), (hidden,)
            keys[k + "mlp.fc2.weight"], keys[k + "mlp.fc2.bias"] = (D, hidden), (D,)
    keys[v + "norm.weight"] = keys[v + "norm.bias"] = (D,)

    # MetricAnythingEncoder: _project_upsample = 1x1 conv + n ConvTranspose2d (no biases).
    d0, d1, d2, d3 = dims
    for name, dim_out, n in (
        ("upsample_latent0", d0, 1),
        ("upsample_latent1", d0, 2),
        ("upsample_latent2", d0, 2),
        ("upsample_latent3", d0, 2),
        ("upsample0", d1, 3),
        ("upsample1", d2, 1),
        ("upsample2", d3, 1),
    ):
        keys[f"encoder.{name}.0.weight"] = (dim_out, D, 1, 1)
        for i in range(1, n + 1):
            keys[f"encoder.{name}.{i}.weight"] = (dim_out, dim_out, 2, 2)
    keys["encoder.upsample_lowres.weight"] = (D, d3, 2, 2)
    keys["encoder.upsample_lowres.bias"] = (d3,)
    keys["encoder.fuse_lowres.weight"] = (d3, 2 * d3, 1, 1)
    keys["encoder.fuse_lowres.bias"] = (d3,)

    # MultiresConvDecoder(dims_encoder=[decoder] + [d0] * 2 + dims, dim_decoder=decoder).
    de = [decoder, d0, d0, d0, d1, d2, d3]
    in_dims = [de[-3]] + [de[-4]] * 4 + [de[-2], de[-1]]
    for i, dim_in in enumerate(in_dims):
        keys[f"decoder.convs.{i}.weight"] = (decoder, dim_in, 3, 3)
    deconv = [False, True, False, False, True, True, True]
    for i in range(7):
        f = f"decoder.fusions.{i}."
        for res in ("resnet1", "resnet2") if i != 6 else ("resnet2",):
            for j in (1, 3):
                keys[f"{f}{res}.residual.{j}.weight"] = (decoder, decoder, 3, 3)
                keys[f"{f}{res}.residual.{j}.bias"] = (decoder,)
        if deconv[i]:
            keys[f + "deconv.weight"] = (decoder, decoder, 2, 2)
        keys[f + "out_conv.weight"] = (decoder, decoder, 1, 1)
        keys[f + "out_conv.bias"] = (decoder,)

    # MetricAnythingDepthMap._build_head
    half, (h0, h1) = decoder // 2, last_dims
    head = {0: (half, decoder, 3, 3), 1: (half, half, 2, 2), 2: (h0, half, 3, 3)}
    head.update({i: (h0, h0, 3, 3) for i in (4, 6, 8, 10)})
    head[12] = (h1, h0, 1, 1)
    for i, shape in head.items():
        keys[f"head.{i}.weight"] = shape
        keys[f"head.{i}.bias"] = (shape[1] if i == 1 else shape[0],)
    return keys


BUFFERS = ("rope_embed.periods", "attn.qkv.bias_mask")


def official_state_dict(config: MetricAnythingConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the official names (buffers as the released checkpoints hold them)."""
    g = torch.Generator().manual_seed(seed)
    keys = official_student_keys(
        config.vit, config.encoder_feature_dims, config.decoder_features, config.last_dims
    )
    out = {k: 0.05 * torch.randn(shape, generator=g) for k, shape in keys.items()}
    for k, shape in keys.items():
        if k.endswith("bias_mask"):
            mask = torch.ones(shape)
            mask[shape[0] // 3 : 2 * shape[0] // 3] = 0
            out[k] = mask
        elif k.endswith("periods"):
            n = shape[0]
            out[k] = 100.0 ** (2 * torch.arange(n, dtype=torch.float32) / (2 * n))
        elif k.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
            out[k] = 1.0 + out[k]
        elif k.endswith("gamma"):
            out[k] = out[k].abs() + 0.1  # layer scales well off 1e-5 so every block matters
    return out


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------

S = 512  # tiny presets: 128 px tiles


def perturbed(model: MetricAnythingDepth, seed: int, scale: float = 0.05) -> MetricAnythingDepth:
    """Move every weight off its init (zero biases, tiny layer scales) with a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("prompt_branch.") and "zero_conv" in name:
                continue
            p.add_(scale * torch.randn(p.shape, generator=g))
        model.head[-2].bias.fill_(0.5)  # canonical inverse depth > 0 everywhere
    return model.eval()


def image(batch: int = 1, height: int = S, width: int = S, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, height, width, generator=g)


def prompt(batch: int = 1, height: int = S, width: int = S, seed: int = 2) -> torch.Tensor:
    """[PDSA, GMDR, mask]: disparities in 1/m, 2 % of pixels marked."""
    g = torch.Generator().manual_seed(seed)
    disp = 0.2 + torch.rand(batch, 2, height, width, generator=g)
    mask = (torch.rand(batch, 1, height, width, generator=g) < 0.02).float()
    return torch.cat([disp, mask], dim=1)


@pytest.fixture(scope="module")
def student() -> MetricAnythingDepth:
    torch.manual_seed(0)
    return perturbed(build_preset("student_tiny"), seed=10)


@pytest.fixture(scope="module")
def teacher() -> MetricAnythingDepth:
    torch.manual_seed(0)
    model = perturbed(build_preset("teacher_tiny"), seed=11)
    with torch.no_grad():  # a "trained" prompt branch: the prompt now changes the output
        for stage in model.prompt_branch.stages:
            stage.zero_conv.weight.normal_(0.0, 0.2)
    return model


# ---------------------------------------------------------------------------------------------
# Official layout
# ---------------------------------------------------------------------------------------------


def test_student_has_the_official_keys_and_shapes_at_tiny_and_official_size():
    for name in ("student_tiny", "student_vith16plus"):
        config = PRESETS[name]
        with torch.device("meta"):
            ours = {k: tuple(v.shape) for k, v in MetricAnythingDepth(config).state_dict().items()}
        official = official_student_keys(
            config.vit, config.encoder_feature_dims, config.decoder_features, config.last_dims
        )
        assert set(ours) ^ set(official) == set(), name
        assert {k: s for k, s in ours.items() if official[k] != s} == {}, name


def test_official_student_parameter_count_is_the_readme_figure():
    """The official README: 876.66 M parameters (buffers are not parameters)."""
    config = PRESETS["student_vith16plus"]
    counts = count_parameters(config)
    assert round(counts["total"] / 1e6, 2) == 876.66
    official = official_student_keys(
        config.vit, config.encoder_feature_dims, config.decoder_features, config.last_dims
    )
    assert counts["total"] == sum(prod(s) for k, s in official.items() if not k.endswith(BUFFERS))
    assert counts["backbone"] + counts["head"] == counts["total"] and counts["prompt"] == 0


def test_official_checkpoint_loads_strictly_plain_and_under_state_dict(tmp_path):
    config = PRESETS["student_tiny"]
    state = official_state_dict(config)
    plain, wrapped = tmp_path / "plain.pt", tmp_path / "wrapped.pt"
    torch.save(state, plain)
    torch.save({"state_dict": state}, wrapped)
    for path in (plain, wrapped):
        model = load_official_checkpoint(path, config="student_tiny")
        loaded = model.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in state.items())
    # Our writer produces a file the same loader (and the official strict load) accepts.
    again = load_official_checkpoint(save_official_checkpoint(model, tmp_path / "again.pt"), config)
    x = normalize_image(image())
    with torch.no_grad():
        assert torch.equal(again.predict_canonical(x), model.predict_canonical(x))


def test_official_checkpoint_mismatch_names_the_keys(tmp_path):
    config = PRESETS["student_tiny"]
    state = official_state_dict(config)
    state["decoder.fusions.6.resnet1.residual.1.weight"] = state["decoder.convs.0.weight"]
    del state["encoder.upsample0.3.weight"]
    state["head.12.weight"] = torch.zeros(2, 8, 1, 1)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError) as err:
        load_official_checkpoint(path, config=config)
    message = str(err.value)
    assert "encoder.upsample0.3.weight" in err.value.missing
    assert "decoder.fusions.6.resnet1.residual.1.weight" in err.value.unexpected
    assert err.value.mismatched == ["head.12.weight"]
    assert str(path) in message and "head.12.weight" in message


def test_official_checkpoint_is_read_weights_only(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"state_dict": official_state_dict(PRESETS["student_tiny"]), "x": object()}, path)
    with pytest.raises(CheckpointReadError, match="pickled.pt"):
        load_official_checkpoint(path, config="student_tiny")


def test_skip_orders_give_official_and_depthpro_upsampling():
    student, teacher = PRESETS["student_vith16plus"], PRESETS["teacher_vith16plus"]
    assert student.encodings_forward_ids == STUDENT_FORWARD_IDS == (4, 3, 2, 1, 0, 5, 6)
    # Official encoder: latent0 1, latent1-3 2, upsample0 3, upsample1 1, upsample2 1.
    assert student.level_upsamplings == (1, 2, 2, 2, 3, 1, 1)
    # Conventional order: the shallowest hook at the output stage (DepthPro: latent0 3, x0 1).
    assert teacher.encodings_forward_ids == (0, 1, 2, 3, 4, 5, 6)
    assert teacher.level_upsamplings == (3, 2, 2, 2, 1, 1, 1)
    assert teacher.decoder_in_dims == (320, 320, 320, 320, 256, 320, 640)
    with pytest.raises(ValueError, match="permutation"):
        student.replace(encodings_forward_ids=(0, 1, 2, 3, 4, 6, 5))
    with pytest.raises(ValueError, match="permutation"):
        student.replace(encodings_forward_ids=(0, 1, 2, 3, 4, 5, 5))


# ---------------------------------------------------------------------------------------------
# The ViT against an independent implementation (transformers' DINOv3ViTModel)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ffn", ["swiglu", "mlp"])
def test_dinov3_vit_matches_transformers(ffn):
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    config = DinoV3Config(64, 3, 4, 3.0, ffn, img_size=128)
    hf_config = DINOv3ViTConfig(
        hidden_size=64,
        num_attention_heads=4,
        num_hidden_layers=3,
        intermediate_size=config.ffn_hidden,
        use_gated_mlp=ffn == "swiglu",
        hidden_act="silu" if ffn == "swiglu" else "gelu",
        num_register_tokens=4,
        layerscale_value=1e-5,
        patch_size=16,
        image_size=128,
    )
    torch.manual_seed(0)
    hf = DINOv3ViTModel(hf_config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ours = DinoV3VisionTransformer(config).eval()
    ours.load_state_dict(state_dict_from_transformers(hf.state_dict(), config), strict=True)
    x = torch.randn(2, 3, 128, 160)  # non-square grid: RoPE normalises each axis separately
    with torch.no_grad():
        ref = hf(x, output_hidden_states=True)
        tokens, hooks = ours(x, [0, 2])
    torch.testing.assert_close(tokens, ref.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hooks[0], ref.hidden_states[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hooks[1], ref.hidden_states[3], atol=1e-5, rtol=1e-5)


def test_rope_augmentation_only_in_training():
    vit = DinoV3VisionTransformer(DINOV3_ARCHS["dinov3_vitt16"])
    rope = vit.rope_embed
    rope.eval()
    assert torch.equal(rope(4, 6)[0], rope(4, 6)[0])
    rope.train()
    torch.manual_seed(0)
    assert not torch.equal(rope(4, 6)[0], rope(4, 6)[0])  # rescale drawn per call (x [0.5, 2])


# ---------------------------------------------------------------------------------------------
# Tiling
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlap,tiles,pad", [(0.25, 25, 1), (0.5, 9, 2)])
def test_tile_merge_equals_the_untiled_patch_embedding(overlap, tiles, pad):
    """A per-patch map (the patch embedding) of the split tiles, merged, is the map of the
    whole image: the crops (tokens/8 at full, tokens/4 at half resolution) and the tile order
    are right. The 128 px tiles hold 8 tokens."""
    torch.manual_seed(0)
    embed = DinoV3VisionTransformer(DINOV3_ARCHS["dinov3_vitt16"]).patch_embed.eval()
    side = 512 if overlap == 0.25 else 256  # the full- and the half-resolution image
    x = torch.randn(2, 3, side, side)

    def to_map(t: torch.Tensor) -> torch.Tensor:
        n = t.shape[-1] // 16
        return embed(t).transpose(1, 2).reshape(t.shape[0], -1, n, n)

    with torch.no_grad():
        split = split_tiles(x, 128, overlap)
        assert split.shape == (tiles * 2, 3, 128, 128)
        merged = merge_tiles(to_map(split), batch_size=2, padding=pad)
        whole = to_map(x)
        torch.testing.assert_close(merged, whole, atol=1e-5, rtol=1e-5)
        # The check can fail: the tiles in another order do not merge into the image.
        wrong = merge_tiles(to_map(split).flip(0), batch_size=2, padding=pad)
        assert (wrong - whole).abs().max() > 0.1


def test_encoder_levels_have_the_stage_resolutions(student, teacher):
    x = normalize_image(image())
    for model in (student, teacher):
        config = model.config
        with torch.no_grad():
            levels = model.encoder(x)
        sizes = config.stage_sizes()
        assert sizes == (256, 128, 128, 128, 64, 32, 16)
        for stage, level in enumerate(config.encodings_forward_ids):
            assert levels[level].shape == (1, config.level_dims[level], sizes[stage], sizes[stage])


# ---------------------------------------------------------------------------------------------
# Shapes, units, focal length
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 3, 240, 320), (1, 3, 97, 131), (3, 200, 150)])
def test_infer_shapes_at_any_size(student, teacher, shape):
    x = torch.rand(shape)
    f = 0.8 * shape[-1]
    out = student.infer(x, f)
    expected = shape[:1] + shape[2:] if len(shape) == 4 else shape[1:]
    assert out["depth"].shape == out["inverse_depth"].shape == expected
    p = prompt(1, *shape[-2:])
    p = p.expand(shape[0], -1, -1, -1) if len(shape) == 4 else p[0]
    assert teacher.infer(x, f, p)["depth"].shape == expected
    assert bool(torch.isfinite(out["depth"]).all()) and bool((out["depth"] > 0).all())


def test_forward_shapes_at_network_resolution(teacher):
    out = teacher(normalize_image(image(2)), torch.tensor([400.0, 500.0]), prompt(2))
    for key in ("canonical_inverse_depth", "inverse_depth", "depth"):
        assert out[key].shape == (2, 1, S, S)
    with pytest.raises(ValueError, match="512x512"):
        teacher(normalize_image(image(1, 256, 256)), 200.0)


def test_doubling_the_focal_length_doubles_depth(student):
    x = normalize_image(image(2))
    with torch.no_grad():
        a = student(x, torch.tensor([300.0, 450.0]))
        b = student(x, torch.tensor([600.0, 900.0]))
    assert bool((a["inverse_depth"] > 1e-3).all())  # not clamped: the ratio is exact
    torch.testing.assert_close(b["depth"], 2 * a["depth"], rtol=1e-6, atol=0)
    torch.testing.assert_close(b["inverse_depth"], a["inverse_depth"] / 2, rtol=1e-6, atol=0)
    torch.testing.assert_close(a["inverse_depth"][0], a["canonical_inverse_depth"][0] * S / 300)


def test_infer_follows_the_official_recipe(student):
    """Normalise, bilinear resize to S, canonical * W / f_px, resize back, 1 / clamp."""
    x = image(1, 240, 320)
    f = 250.0
    with torch.no_grad():
        net_in = torch.nn.functional.interpolate(
            normalize_image(x), size=(S, S), mode="bilinear", align_corners=False
        )
        inverse = student.predict_canonical(net_in) * (320 / f)
        inverse = torch.nn.functional.interpolate(
            inverse, size=(240, 320), mode="bilinear", align_corners=False
        )
    out = student.infer(x, f)
    torch.testing.assert_close(out["inverse_depth"], inverse[:, 0], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out["depth"], 1 / inverse[:, 0].clamp(1e-3, 1e3), rtol=1e-6, atol=0)
    d = student.infer(x, 2 * f)["depth"]
    torch.testing.assert_close(d, 2 * out["depth"], rtol=1e-6, atol=0)


def test_focal_length_is_required_and_checked(student):
    x = image(2, 64, 64)
    with pytest.raises(TypeError, match="f_px is required"):
        student.infer(x, None)
    for bad in (0.0, -5.0, float("nan"), [300.0, 300.0, 300.0]):
        with pytest.raises(ValueError, match="f_px"):
            student.infer(x, bad)


def test_prompt_in_canonical_units_scales_with_the_camera(teacher):
    """A camera with twice the focal length and a scene twice as far (prompt disparities
    halved) gives the same canonical map, so exactly twice the depth."""
    x, p = normalize_image(image()), prompt()
    half = p.clone()
    half[:, :2] /= 2
    with torch.no_grad():
        a = teacher(x, 400.0, p)
        b = teacher(x, 800.0, half)
        c = teacher(x, 400.0, half)
    torch.testing.assert_close(b["canonical_inverse_depth"], a["canonical_inverse_depth"])
    torch.testing.assert_close(b["depth"], 2 * a["depth"], rtol=1e-5, atol=0)
    assert (c["depth"] - a["depth"]).abs().max() > 1e-4  # the prompt does matter here


def test_prompt_rules(student, teacher):
    x = normalize_image(image())
    with pytest.raises(ValueError, match="prompt-free"):
        student(x, 300.0, prompt())
    with pytest.raises(ValueError, match="PDSA, GMDR, mask"):
        teacher(x, 300.0, prompt()[:, :2])
    bad = prompt()
    bad[0, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        teacher(x, 300.0, bad)
    with torch.no_grad():  # no prompt = an all-zero map (no prompt points)
        none = teacher(x, 300.0)["depth"]
        zeros = teacher(x, 300.0, torch.zeros(1, 3, S, S))["depth"]
    assert torch.equal(none, zeros)


# ---------------------------------------------------------------------------------------------
# The prompt branch: zero at start, learns from the first step
# ---------------------------------------------------------------------------------------------


def test_teacher_from_a_prompt_free_model_is_exactly_that_model_at_init():
    torch.manual_seed(3)
    teacher = build_preset("teacher_tiny")
    base = perturbed(MetricAnythingDepth(teacher.config.as_student()), seed=12)
    init_teacher_from_prompt_free(teacher, base)
    teacher.eval()
    stages = teacher.prompt_branch.stages
    assert all(not s.zero_conv.weight.any() and not s.zero_conv.bias.any() for s in stages)
    assert all(s.stem.weight.abs().sum() > 0 for s in stages)  # the rest of the branch is live
    x = normalize_image(image(2))
    with torch.no_grad():
        expected = base(x, 350.0)
        for p in (prompt(2), prompt(2, seed=5) * 30, None):
            got = teacher(x, 350.0, p)
            for key in expected:
                assert torch.equal(got[key], expected[key]), key
    # Anything but the prompt branch differing is an error naming the key.
    other = MetricAnythingDepth(teacher.config.as_student().replace(decoder_features=8))
    with pytest.raises(CheckpointMismatchError, match="decoder.convs.0.weight"):
        init_teacher_from_prompt_free(build_preset("teacher_tiny"), other)


def test_one_step_on_the_prompt_layers_makes_the_output_depend_on_the_prompt():
    torch.manual_seed(4)
    teacher = perturbed(build_preset("teacher_tiny"), seed=13)
    x = normalize_image(image(2))
    p1, p2 = prompt(2, seed=6), prompt(2, seed=7)
    with torch.no_grad():
        before1 = teacher(x, 300.0, p1)["canonical_inverse_depth"]
        before2 = teacher(x, 300.0, p2)["canonical_inverse_depth"]
    assert torch.equal(before1, before2)
    frozen = {k: v.clone() for k, v in teacher.state_dict().items() if "prompt_branch" not in k}
    optimizer = torch.optim.AdamW(teacher.parameter_groups()["prompt"], lr=1e-3)
    teacher.train()
    target = torch.rand(2, 1, S, S)
    loss = (teacher(x, 300.0, p1)["canonical_inverse_depth"] - target).abs().mean()
    loss.backward()
    optimizer.step()
    teacher.eval()
    with torch.no_grad():
        after1 = teacher(x, 300.0, p1)["canonical_inverse_depth"]
        after2 = teacher(x, 300.0, p2)["canonical_inverse_depth"]
    assert (after1 - after2).abs().max() > 1e-6
    assert (after1 - before1).abs().max() > 1e-6
    state = teacher.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen.items())


def test_parameter_groups_partition_the_parameters(teacher):
    groups = teacher.parameter_groups()
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)) == len(list(teacher.parameters()))
    assert {id(p) for p in groups["backbone"]} == {
        id(p) for p in teacher.encoder.patch_encoder.parameters()
    }
    assert {id(p) for p in groups["prompt"]} == {id(p) for p in teacher.prompt_branch.parameters()}


# ---------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------

# name: (total, prompt) parameters; the big ones counted on the meta device.
EXPECTED_COUNTS = {
    "student_vith16plus": (876_664_001, 0),
    "teacher_vith16plus": (920_183_745, 43_224_832),
    "student_vitl16": (333_810_369, 0),
    "teacher_vitl16": (349_525_441, 15_715_072),
    "student_vits16": (28_063_425, 0),
    "teacher_vits16": (29_317_185, 1_253_760),
    "student_small": (3_911_617, 0),
    "teacher_small": (4_118_881, 207_264),
    "student_tiny": (340_369, 0),
    "teacher_tiny": (358_505, 18_136),
}


def test_preset_parameter_counts():
    assert set(EXPECTED_COUNTS) == set(PRESETS)
    for name, (total, prompt_count) in EXPECTED_COUNTS.items():
        counts = count_parameters(name)
        assert (counts["total"], counts["prompt"]) == (total, prompt_count), name
        if name.startswith("teacher_"):
            # The prompt layers add ~5 % to the prompt-free network (the paper's figure).
            assert 0.04 < prompt_count / (total - prompt_count) < 0.06, name
            student_name = name.replace("teacher_", "student_")
            assert counts["backbone"] == count_parameters(student_name)["backbone"]
    assert count_parameters("teacher_tiny")["total"] == sum(
        p.numel() for p in build_preset("teacher_tiny").parameters()
    )


def test_config_round_trip_and_unknown_keys():
    for config in PRESETS.values():
        data = json.loads(json.dumps(config.to_dict()))
        assert MetricAnythingConfig.from_dict(data) == config
    data = PRESETS["teacher_tiny"].to_dict()
    with pytest.raises(ValueError, match="prompt_width"):
        MetricAnythingConfig.from_dict({**data, "prompt_width": 3})
    with pytest.raises(ValueError, match="heads"):
        MetricAnythingConfig.from_dict({**data, "vit": {**data["vit"], "heads": 2}})
    with pytest.raises(ValueError, match="multiple of 8"):
        PRESETS["student_tiny"].replace(vit=DinoV3Config(64, 4, 4, 3.0, img_size=96))


# ---------------------------------------------------------------------------------------------
# Our checkpoints, determinism
# ---------------------------------------------------------------------------------------------


def test_our_checkpoint_round_trip_and_named_mismatch(teacher, tmp_path):
    directory = save_checkpoint(teacher, tmp_path / "ckpt")
    config = json.loads((directory / "config.json").read_text())
    assert config["format"] == "depth_perception.metric_anything"
    assert config["model_config"]["encodings_forward_ids"] == [0, 1, 2, 3, 4, 5, 6]
    for path in (directory, directory / "model.safetensors", directory / "config.json"):
        loaded = load_checkpoint(path).eval()
        assert loaded.config == teacher.config
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in teacher.state_dict().items())
    assert load_model(directory).config == teacher.config
    assert load_model("student_tiny").config == PRESETS["student_tiny"]
    weights = load_file(str(directory / "model.safetensors"))
    del weights["prompt_branch.stages.3.zero_conv.weight"]
    save_file(weights, str(directory / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError, match=r"prompt_branch\.stages\.3\.zero_conv"):
        load_checkpoint(directory)


def test_determinism_and_batch_independence(teacher):
    torch.manual_seed(7)
    a = build_preset("teacher_tiny")
    torch.manual_seed(7)
    a2 = build_preset("teacher_tiny")
    assert all(torch.equal(v, a2.state_dict()[k]) for k, v in a.state_dict().items())
    x, p = normalize_image(image(2)), prompt(2)
    with torch.no_grad():
        one = teacher(x, 300.0, p)["depth"]
        two = teacher(x, 300.0, p)["depth"]
        single = teacher(x[1:], 300.0, p[1:])["depth"]
    assert torch.equal(one, two)
    torch.testing.assert_close(single[0], one[1], rtol=1e-5, atol=1e-6)

"""LingBot-Depth checkpoints: official model.pt layout, our safetensors format, DINOv2 init."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file

from depth_perception.models.blocks.vit import DinoVisionTransformer, ViTArch
from depth_perception.models.checkpoints import (
    CheckpointMismatchError,
    CheckpointReadError,
    init_encoder_from_dinov2,
    load_checkpoint,
    load_model,
    load_official_checkpoint,
    save_checkpoint,
    save_official_checkpoint,
    weights_digest,
)
from depth_perception.models.lingbot import LingBotDepth, build_preset


@pytest.fixture(scope="module")
def model() -> LingBotDepth:
    torch.manual_seed(0)
    m = build_preset("tiny").eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return m


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    depth = torch.rand(2, 42, 56, generator=g) * 3 + 0.2
    depth[0, :20, :20] = 0.0
    depth[1, 30:] = float("nan")
    return torch.rand(2, 3, 42, 56, generator=g), depth


def outputs(m: LingBotDepth, inputs) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return m.eval()(*inputs, 80)


def assert_same_outputs(a: LingBotDepth, b: LingBotDepth, inputs) -> None:
    oa, ob = outputs(a, inputs), outputs(b, inputs)
    for key in ("depth", "confidence"):
        torch.testing.assert_close(oa[key], ob[key], rtol=0, atol=0)


def test_official_layout_roundtrip(model, inputs, tmp_path):
    path = save_official_checkpoint(model, tmp_path / "model.pt")
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"model_config", "model"}
    assert raw["model_config"] == model.model_config
    assert set(raw["model"]) == set(model.state_dict())
    loaded = load_official_checkpoint(path)
    assert loaded.model_config == model.model_config
    assert_same_outputs(model, loaded, inputs)


def _rewrite(path, edit) -> None:
    raw = torch.load(path, weights_only=True)
    edit(raw)
    torch.save(raw, path)


def test_old_depth_embedding_name_is_accepted(model, inputs, tmp_path):
    path = save_official_checkpoint(model, tmp_path / "model.pt")

    def rename(raw):
        old = "encoder.backbone.depth_patch_embed."
        new = "encoder.backbone.depth_mask_patch_embed."
        raw["model"] = {
            (new + k[len(old) :] if k.startswith(old) else k): v for k, v in raw["model"].items()
        }
        assert any(k.startswith(new) for k in raw["model"])

    _rewrite(path, rename)
    assert_same_outputs(model, load_official_checkpoint(path), inputs)


def test_unused_normal_head_is_tolerated(model, inputs, tmp_path):
    path = save_official_checkpoint(model, tmp_path / "model.pt")

    def add_normal_head(raw):
        raw["model_config"]["normal_head"] = raw["model_config"]["depth_head"]
        raw["model"]["normal_head.output_blocks.4.weight"] = torch.zeros(3, 16, 1, 1)
        raw["model"]["normal_head.output_blocks.4.bias"] = torch.zeros(3)

    _rewrite(path, add_normal_head)
    with pytest.warns(UserWarning, match="2 weight"):
        loaded = load_official_checkpoint(path)
    assert "normal_head" in loaded.model_config  # kept for the round trip, never built
    assert not any(k.startswith("normal_head") for k in loaded.state_dict())
    assert_same_outputs(model, loaded, inputs)


def test_extra_key_raises_with_its_name(model, tmp_path):
    path = save_official_checkpoint(model, tmp_path / "model.pt")
    _rewrite(path, lambda raw: raw["model"].__setitem__("neck.surprise.weight", torch.zeros(1)))
    with pytest.raises(
        CheckpointMismatchError, match=r"1 unexpected key\(s\): neck\.surprise"
    ) as e:
        load_official_checkpoint(path)
    assert e.value.unexpected == ["neck.surprise.weight"] and e.value.missing == []


def test_missing_keys_raise_with_names_and_counts(model, tmp_path):
    path = save_official_checkpoint(model, tmp_path / "model.pt")
    gone = sorted(k for k in model.state_dict() if k.startswith("encoder.backbone.blocks.1."))
    assert len(gone) > 10

    def drop(raw):
        for k in gone:
            del raw["model"][k]

    _rewrite(path, drop)
    with pytest.raises(CheckpointMismatchError) as e:
        load_official_checkpoint(path)
    message = str(e.value)
    assert f"{len(gone)} missing key(s)" in message
    assert gone[0] in message and gone[9] in message and gone[10] not in message
    assert f"+{len(gone) - 10} more" in message
    assert e.value.missing == gone


def test_wrong_shape_raises(model, tmp_path):
    path = save_official_checkpoint(model, tmp_path / "model.pt")
    key = "encoder.output_projections.0.bias"
    _rewrite(path, lambda raw: raw["model"].__setitem__(key, torch.zeros(5)))
    with pytest.raises(CheckpointMismatchError, match="wrongly shaped"):
        load_official_checkpoint(path)


def test_safetensors_roundtrip(model, inputs, tmp_path):
    directory = save_checkpoint(model, tmp_path / "ours")
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((directory / "config.json").read_text())
    assert config["format"] == "depth_perception.lingbot_depth"
    assert config["format_version"] == 1
    assert config["model_config"] == model.model_config
    weights = load_file(str(directory / "model.safetensors"))
    for key, value in model.state_dict().items():
        assert torch.equal(weights[key], value)
    assert_same_outputs(model, load_checkpoint(directory), inputs)
    assert_same_outputs(model, load_checkpoint(directory / "model.safetensors"), inputs)


def test_load_model_dispatch(model, inputs, tmp_path):
    save_checkpoint(model, tmp_path / "ours")
    save_official_checkpoint(model, tmp_path / "official" / "model.pt")
    save_official_checkpoint(model, tmp_path / "renamed.ckpt")
    for source in (
        tmp_path / "ours",
        str(tmp_path / "ours" / "model.safetensors"),
        tmp_path / "official",
        tmp_path / "official" / "model.pt",
        tmp_path / "renamed.ckpt",
    ):
        assert_same_outputs(model, load_model(source), inputs)
    fresh = load_model("tiny")
    assert isinstance(fresh, LingBotDepth) and fresh.model_config == model.model_config
    with pytest.raises(FileNotFoundError, match="preset"):
        load_model(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------
# DINOv2 initialisation from transformers
# ---------------------------------------------------------------------------------------------


def _hf_dinov2(tmp_path, layers: int, swiglu: bool, image_size: int = 224):
    import transformers  # installed by the bootstrap (requirements-ml.txt)

    torch.manual_seed(11)
    config = transformers.Dinov2Config(
        hidden_size=96,
        num_hidden_layers=layers,
        num_attention_heads=3,
        image_size=image_size,
        patch_size=14,
        use_swiglu_ffn=swiglu,
    )
    hf = transformers.Dinov2Model(config).eval()
    with torch.no_grad():  # random layer scales, norms, biases, tokens: every mapping matters
        for p in hf.parameters():
            p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(tmp_path / "hf")
    return hf, tmp_path / "hf"


@pytest.mark.parametrize("ffn", ["mlp", "swiglu"])
def test_dinov2_init_reproduces_transformers(tmp_path, ffn):
    layers = 4 if ffn == "mlp" else 2
    hf, directory = _hf_dinov2(tmp_path, layers, swiglu=ffn == "swiglu")
    if ffn == "mlp":
        model = build_preset("tiny")
        vit = model.encoder.backbone
        target = model
    else:
        vit = DinoVisionTransformer(ViTArch(96, layers, 3, ffn="swiglu", img_size=224))
        target = vit
    depth_embed = vit.depth_patch_embed.proj.weight.detach().clone()
    untouched = init_encoder_from_dinov2(target, directory)
    assert untouched == ["depth_patch_embed.proj.bias", "depth_patch_embed.proj.weight"]
    assert torch.equal(vit.depth_patch_embed.proj.weight, depth_embed)

    image = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        ours = vit.eval().forward_rgb(image)
        theirs = hf(pixel_values=image).last_hidden_state
    assert ours.shape == theirs.shape == (2, 1 + 256, 96)
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(vit.mask_token, hf.embeddings.mask_token, rtol=0, atol=0)


def test_dinov2_init_interpolates_other_grids(tmp_path):
    hf, directory = _hf_dinov2(tmp_path, 4, swiglu=False, image_size=112)  # 8 x 8 positions
    model = build_preset("tiny")  # 16 x 16 positions
    init_encoder_from_dinov2(model, directory)
    with torch.no_grad():  # transformers' own resize of its positions to a 16 x 16 grid
        expected = hf.embeddings.interpolate_pos_encoding(torch.zeros(1, 257, 96), 224, 224)
    torch.testing.assert_close(model.encoder.backbone.pos_embed, expected, atol=1e-6, rtol=0)


def test_dinov2_init_rejects_a_different_width(tmp_path):
    _, directory = _hf_dinov2(tmp_path, 2, swiglu=False)
    with pytest.raises(ValueError, match="does not fit"):
        init_encoder_from_dinov2(build_preset("tiny"), directory)


def _sha8(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:8]


def test_weights_digest_names_the_loaded_bytes(model, tmp_path):
    from depth_perception.engines.lingbot import LingBotEngine, LingBotEngineConfig

    ours = save_checkpoint(model, tmp_path / "ours")
    official = save_official_checkpoint(model, tmp_path / "official" / "model.pt")
    digest = _sha8(ours / "model.safetensors")
    assert weights_digest(ours) == weights_digest(ours / "model.safetensors") == digest
    assert weights_digest(official) == weights_digest(official.parent) == _sha8(official)
    assert weights_digest("tiny") == "random"
    engine = LingBotEngine(LingBotEngineConfig(str(ours), device="cpu", fuse_measured="keep"))
    assert engine.model_id == f"lingbot-depth/ours:{model.describe()}@{digest}+keep"

    # One garbled byte inside a tensor: safetensors loads it without a word, the id changes.
    weights = ours / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x40
    weights.write_bytes(bytes(data))
    load_checkpoint(ours)
    assert weights_digest(ours) != digest
    assert LingBotEngine(LingBotEngineConfig(str(ours), device="cpu")).model_id.count(digest) == 0


@pytest.mark.parametrize("damage", ["truncated", "garbled header"])
def test_unreadable_weights_name_the_file(model, tmp_path, damage):
    ours = save_checkpoint(model, tmp_path / "ours")
    official = save_official_checkpoint(model, tmp_path / "official.pt")
    for path in (ours / "model.safetensors", official):
        data = path.read_bytes()
        if damage == "truncated":
            path.write_bytes(data[: len(data) // 2])
        else:
            path.write_bytes(b"\xff" * 64 + data[64:])
    with pytest.raises(CheckpointReadError, match=rf"{ours / 'model.safetensors'}: cannot read"):
        load_model(ours)
    with pytest.raises(CheckpointReadError, match=rf"{official}: cannot read"):
        load_model(official)


def test_every_load_error_names_the_file(model, tmp_path):
    ours = save_checkpoint(model, tmp_path / "ours")
    config = ours / "config.json"
    config.write_text("{not json")
    with pytest.raises(CheckpointReadError, match=rf"{config}"):
        load_model(ours)
    config.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(CheckpointReadError, match=rf"{config}: not a"):
        load_model(ours)
    # A mismatch names the weights file too.
    other = save_checkpoint(build_preset("tiny"), tmp_path / "other")
    state = load_file(str(other / "model.safetensors"))
    state["neck.surprise"] = torch.zeros(1)
    from safetensors.torch import save_file

    save_file(state, str(other / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError, match=rf"{other / 'model.safetensors'}: "):
        load_model(other)
    # Not a checkpoint dictionary at all.
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointReadError, match=rf"{tmp_path / 'list.pt'}: not an official"):
        load_model(tmp_path / "list.pt")

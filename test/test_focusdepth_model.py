"""FocusDepth model: MSSA against the paper's formulas, the exact injection point in DA2, the
two training stages' parameter groups, loading from transformers parts and our checkpoints.

Everything runs on the ``tiny`` preset (32-wide DA2 and SAM3, S = 56 -> 4 x 4 tokens) with the
handmade CLIP tokenizer of ``test_sam3_compat``, on one thread.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from test_sam3_compat import _write_tiny_tokenizer

from depth_perception.models.checkpoints import CheckpointMismatchError
from depth_perception.models.focusdepth import (
    FORMAT_VERSION,
    FROZEN_PREFIXES,
    MSSA,
    STAGE_PREFIXES,
    FocusDepthModel,
    MSSAConfig,
    build_preset,
    load_focusdepth,
    save_focusdepth,
)
from depth_perception.models.sam3_io import Sam3Prompt, load_sam3_tokenizer

S = 56
GRID = S // 14
BOX = Sam3Prompt(box_xywh=(8.0, 10.0, 30.0, 24.0))


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------
# MSSA


def _reference_mssa(block: MSSA, x_g: torch.Tensor, x_p: torch.Tensor) -> torch.Tensor:
    """The paper's formulas written out with the block's weights, one expert at a time."""
    proj = x_p @ block.proj.weight.T  # X~p = Xp Wp
    z = torch.cat([x_g, proj], dim=-1)  # Z = [Xg || X~p]
    logits = z @ block.router.weight.T + block.router.bias
    weights = torch.exp(logits) / torch.exp(logits).sum(dim=-1, keepdim=True)
    fused = torch.zeros_like(x_g)
    for e, expert in enumerate(block.experts):
        first, last = expert[0], expert[3]
        hidden = F.gelu(z @ first.weight.T + first.bias)
        fused = fused + weights[..., e : e + 1] * (hidden @ last.weight.T + last.bias)
    gate = torch.sigmoid(fused @ block.gate.weight.T + block.gate.bias)  # G = sigma(F Wg)
    return gate * fused + (1 - gate) * x_g  # Y = G F + (1 - G) Xg


def _mssa_inputs() -> tuple[MSSA, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    block = MSSA(c_g=8, c_p=6, experts=4, hidden=5, dropout=0.1).double().eval()
    x_g = torch.randn(2, 1 + 12, 8, dtype=torch.float64)  # CLS + 12 patch tokens
    x_p = torch.randn(2, 12, 6, dtype=torch.float64)
    return block, x_g, x_p


def test_mssa_matches_the_formulas_and_passes_cls_through() -> None:
    block, x_g, x_p = _mssa_inputs()
    assert len(block.experts) == 4 and block.proj.bias is None
    assert block.experts[0][0].in_features == 16 and block.experts[0][3].out_features == 8
    out, gate = block(x_g, x_p, return_gate=True)
    assert out.shape == x_g.shape and gate.shape == (2, 12, 1)
    assert torch.equal(out[:, :1], x_g[:, :1])  # CLS unchanged
    torch.testing.assert_close(out[:, 1:], _reference_mssa(block, x_g[:, 1:], x_p))
    # Without a prefix token every token is fused.
    torch.testing.assert_close(block(x_g[:, 1:], x_p), out[:, 1:])
    # Dropout (inside the experts) acts in training mode only.
    block.train()
    assert not torch.allclose(block(x_g, x_p), out)
    with pytest.raises(ValueError, match="do not end with one token per prompt token"):
        block(x_g[:, :5], x_p)
    with pytest.raises(ValueError, match="C_g=8"):
        block(x_g, x_p[..., :4])


def test_mssa_gate_extremes() -> None:
    block, x_g, x_p = _mssa_inputs()
    with torch.no_grad():
        block.gate.bias.fill_(-1e4)  # G = 0: Y = Xg exactly
    assert torch.equal(block(x_g, x_p), x_g)
    with torch.no_grad():
        block.gate.bias.fill_(1e4)  # G = 1: Y = F
    patches = x_g[:, 1:]
    weights = block.router(torch.cat([patches, block.proj(x_p)], -1)).softmax(-1)
    z = torch.cat([patches, block.proj(x_p)], -1)
    fused = sum(weights[..., e : e + 1] * expert(z) for e, expert in enumerate(block.experts))
    torch.testing.assert_close(block(x_g, x_p)[:, 1:], fused)


def test_mssa_config_round_trip() -> None:
    config = MSSAConfig(hidden=16, gate_bias_init=-2.0)
    assert MSSAConfig.from_config(config.to_dict()) == config
    assert MSSA.from_config(4, 3, config).gate.bias.item() == -2.0
    with pytest.raises(ValueError, match="unknown MSSA config key"):
        MSSAConfig.from_config({"experts": 4, "width": 3})


# ---------------------------------------------------------------------------------------------
# The model on the tiny preset


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("focusdepth_tokenizer")
    _write_tiny_tokenizer(directory)
    return directory


@pytest.fixture(scope="module")
def model(tokenizer_dir: Path) -> FocusDepthModel:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return build_preset("tiny", input_size=S, tokenizer=load_sam3_tokenizer(tokenizer_dir))


def _pixels(batch: int = 2, size: int = S, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, 3, size, size, generator=generator),
        torch.randn(batch, 3, size, size, generator=generator),
    )


def test_forward_shapes(model: FocusDepthModel) -> None:
    da2, sam3 = _pixels()
    with torch.no_grad():
        out = model(da2, sam3, BOX)
        text = model(da2, sam3, Sam3Prompt(text="car"))
    assert out.depth.shape == (2, S, S) and out.mask_logits.shape == (2, 1, S, S)
    assert out.score.shape == (2,) and out.query_index.shape == (2,)
    assert len(out.gates) == 4 and all(g.shape == (2, GRID * GRID, 1) for g in out.gates)
    assert torch.isfinite(out.depth).all() and torch.isfinite(out.mask_logits).all()
    assert (out.depth >= 0).all()  # DA2's relative head ends in a ReLU
    # The prompt reaches the depth (random DA2 weights give depths ~1e-8: compare relatively).
    assert not torch.allclose(out.depth, text.depth, rtol=1e-5, atol=0)
    # A precomputed SAM3 result gives the same.
    with torch.no_grad():
        cached = model.prompt_branch(sam3, BOX)
        again = model(da2, sam3_result=cached)
    assert torch.equal(again.depth, out.depth) and torch.equal(again.mask_logits, out.mask_logits)
    with pytest.raises(ValueError, match="either sam3_pixel_values and prompt"):
        model(da2, sam3)


def test_closed_gates_reproduce_plain_da2(model: FocusDepthModel) -> None:
    """G = 0 in all four blocks: exactly DepthAnythingForDepthEstimation's own output, so MSSA
    sits between the backbone and the neck and nothing else changed."""
    da2, sam3 = _pixels()
    biases = [block.gate.bias.detach().clone() for block in model.mssa]
    try:
        with torch.no_grad():
            plain = model.depth_model(pixel_values=da2).predicted_depth
            opened = model(da2, sam3, BOX).depth
            for block in model.mssa:
                block.gate.bias.fill_(-1e4)
            closed = model(da2, sam3, BOX)
    finally:
        with torch.no_grad():
            for block, bias in zip(model.mssa, biases, strict=True):
                block.gate.bias.copy_(bias)
    assert all(torch.equal(g, torch.zeros_like(g)) for g in closed.gates)
    assert torch.equal(closed.depth, plain)
    assert not torch.allclose(opened, plain, rtol=1e-5, atol=0)


def test_grid_mismatch_is_named(model: FocusDepthModel) -> None:
    da2, _ = _pixels(batch=1)
    _, sam3 = _pixels(batch=1, size=70)
    with (
        torch.no_grad(),
        pytest.raises(ValueError, match=r"DA2 patch grid 4x4 .* != SAM3 token grid 5x5"),
    ):
        model(da2, sam3, BOX)
    with pytest.raises(ValueError, match="not a multiple of its patch size"):
        model.depth(torch.zeros(1, 3, 57, 56), torch.zeros(1, 16, 32), (4, 4))


# ---------------------------------------------------------------------------------------------
# Training stages


def _groups(model: FocusDepthModel) -> dict[str, set[str]]:
    names = [n for n, _ in model.named_parameters()]
    groups = {
        prefix: {n for n in names if n.startswith(prefix)}
        for prefix in STAGE_PREFIXES[2] + FROZEN_PREFIXES
    }
    assert all(groups.values()), [p for p, g in groups.items() if not g]
    return groups


def test_stage_parameter_sets(model: FocusDepthModel) -> None:
    names = {n for n, _ in model.named_parameters()}
    groups = _groups(model)
    stage1 = {n for n, _ in model.stage_parameters(1)}
    stage2 = {n for n, _ in model.stage_parameters(2)}
    frozen = set().union(*(groups[p] for p in FROZEN_PREFIXES))
    assert stage1 == {n for n in names if n.startswith("mssa.")}
    assert stage2 == set().union(*(groups[p] for p in STAGE_PREFIXES[2]))
    assert stage1 < stage2 and not stage2 & frozen and stage2 | frozen == names
    with pytest.raises(ValueError, match="stages 1 and 2"):
        model.stage_parameters(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("stage", [1, 2])
def test_frozen_parts_get_no_gradient(model: FocusDepthModel, stage: int) -> None:
    da2, sam3 = _pixels(batch=1)
    trainable = {n for n, _ in model.freeze_for_stage(stage)}  # type: ignore[arg-type]
    try:
        model.zero_grad(set_to_none=True)
        out = model(da2, sam3, BOX)
        (out.depth.mean() + out.mask_logits.mean()).backward()
        params = dict(model.named_parameters())
        assert {n for n, p in params.items() if p.requires_grad} == trainable
        assert all(params[n].grad is None for n in params.keys() - trainable)
        reached = {n for n in trainable if params[n].grad is not None and params[n].grad.any()}
        expected = ("mssa.",) if stage == 1 else STAGE_PREFIXES[2]
        for prefix in expected:  # every trained group is on the loss's path
            assert any(n.startswith(prefix) for n in reached), prefix
    finally:
        model.zero_grad(set_to_none=True)
        model.requires_grad_(True)


# ---------------------------------------------------------------------------------------------
# Loading


def test_save_load_round_trip(model: FocusDepthModel, tmp_path: Path) -> None:
    torch.manual_seed(3)
    source = build_preset(mssa=MSSAConfig(hidden=16, gate_bias_init=-1.0))
    source.tokenizer = model.tokenizer
    directory = save_focusdepth(source, tmp_path / "ckpt")
    config = json.loads((directory / "config.json").read_text())
    assert config["format_version"] == FORMAT_VERSION
    assert set(config["model_config"]) == {"da2", "sam3", "mssa"}
    assert config["model_config"]["mssa"]["hidden"] == 16

    loaded = load_focusdepth(directory)
    assert loaded.mssa_config == source.mssa_config and loaded.tokenizer is not None
    da2, sam3 = _pixels(batch=1)
    with torch.no_grad():
        expected, got = source(da2, sam3, BOX), loaded(da2, sam3, BOX)
    assert torch.equal(expected.depth, got.depth)
    assert torch.equal(expected.mask_logits, got.mask_logits)

    # A checkpoint whose keys do not fit names them.
    weights = load_file(str(directory / "model.safetensors"))
    weights.pop("mssa.2.gate.bias")
    weights["mssa.4.gate.bias"] = torch.zeros(1)
    save_file(weights, str(directory / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError) as error:
        load_focusdepth(directory)
    assert error.value.missing == ["mssa.2.gate.bias"]
    assert error.value.unexpected == ["mssa.4.gate.bias"]
    assert "mssa.2.gate.bias" in str(error.value) and "mssa.4.gate.bias" in str(error.value)


def test_from_pretrained_parts(model: FocusDepthModel, tokenizer_dir: Path, tmp_path: Path) -> None:
    da2_dir, sam3_dir = tmp_path / "da2", tmp_path / "sam3"
    model.depth_model.save_pretrained(str(da2_dir))
    model.sam3.save_pretrained(str(sam3_dir))
    for name in ("vocab.json", "merges.txt"):
        (sam3_dir / name).write_bytes((tokenizer_dir / name).read_bytes())
    parts = FocusDepthModel.from_pretrained_parts(da2_dir, sam3_dir)
    assert parts.tokenizer is not None
    parts.mssa.load_state_dict(model.mssa.state_dict())
    da2, sam3 = _pixels(batch=1)
    with torch.no_grad():
        got, expected = parts(da2, sam3, BOX).depth, model(da2, sam3, BOX).depth
    # transformers' loading path picks its own attention kernels: float-level differences only
    # (random DA2 weights give depths ~1e-8, hence the scaled tolerance).
    scale = expected.abs().max().item()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * scale)

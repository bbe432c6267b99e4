"""A tiny DepthLM for the node and evaluation tests whose every answer parses: a random tiny
Qwen2.5-VL (``build_tiny_qwen``) made to answer one fixed text, whatever the image.

The language model's layers are silenced (attention and MLP outputs zero), so the state at a
position is its token's embedding alone and the next token depends on the current one only; the
embeddings of a chain of tokens (the prompt's last token, then the answer's tokens, then the end
of turn) are basis vectors and the head maps each to its successor. ``<answer>`` and
``</answer>`` are added to the tokenizer so no token repeats in the chain."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

from depth_perception.models.depthlm import build_tiny_qwen

ANSWER_M = 2.5


def build_fixed_answer_qwen(model_dir: str | Path, answer_m: float = ANSWER_M, f_uni=100.0):
    """A DepthLM directory whose model answers ``<answer>{answer_m}</answer>`` every time."""
    model_dir = build_tiny_qwen(model_dir, f_uni=f_uni)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.add_tokens(["<answer>", "</answer>"])
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    chain = [tokenizer.convert_tokens_to_ids("Ċ")]  # the prompt ends "assistant\n"
    chain += tokenizer.convert_tokens_to_ids(tokenizer.tokenize(f"<answer>{answer_m}</answer>"))
    chain.append(tokenizer.convert_tokens_to_ids("<|im_end|>"))
    assert len(set(chain)) == len(chain), tokenizer.convert_ids_to_tokens(chain)
    text = model.model.language_model
    with torch.no_grad():
        for layer in text.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed, head = text.embed_tokens.weight, model.lm_head.weight
        head.zero_()
        for j, (token, following) in enumerate(zip(chain[:-1], chain[1:], strict=True)):
            embed[token] = 0.0
            embed[token, j] = 1.0
            head[following, j] = 50.0
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir

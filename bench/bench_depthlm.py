"""Benchmark: DepthLM pixel queries per second, one at a time and batched.

A DepthLM answer is a text generation on its own marked image (one image per pixel: the
method's requirement), so a frame's cost grows with the pixels asked about. One run times
``DepthLMEngine.query`` on a synthetic frame (median of ``--repeats`` after ``--warmup``;
torch's CPU threads pinned by ``--threads``, default 1; on CUDA each timed call ends with
``torch.cuda.synchronize``):

- batch 1:  one pixel per call (an operator's single question),
- batch N:  ``--batch`` pixels of the same frame in one call, generated together
            (``batch_size`` = N; the sparse-cloud mode and ``eval-depthlm`` work this way),

and prints per-query latency, queries per second and the batching speed-up (QPS at N / QPS at
1: the reference measured in the same run), with the mean generated tokens per answer (greedy
decoding stops at the end of the answer; a random model runs to ``max_new_tokens``, so time a
trained one). ``--model``: a DepthLM directory (default the shipped ``models/depthlm_small``;
``small_qwen`` where an install has none), or a preset name of ``build_tiny_qwen`` (``tiny_qwen``,
``small_qwen``: random weights, built into a temporary directory). The paper-size figure
the official issue tracker asks for (a Qwen2.5-VL 3B DepthLM's per-query latency on a
GPU): ``--model /models/my_depthlm_3b --device cuda``.

Usage: ``python bench/bench_depthlm.py [--model DIR_OR_PRESET] [--batch 32] [--device cpu|cuda]
[--precision auto|fp32|bf16] [--repeats 5] [--warmup 1] [--threads 1] [--json F]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from bench.timing import add_common_args, median_ms, synthetic_rgb, write_json  # noqa: E402
from depth_perception.core.camera import Intrinsics  # noqa: E402
from depth_perception.engines.depthlm import DepthLMEngine, DepthLMEngineConfig  # noqa: E402
from depth_perception.models.depthlm import QWEN_PRESETS, build_tiny_qwen  # noqa: E402

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "depthlm_small"


def query_pixels(intr: Intrinsics, n: int, seed: int = 0) -> np.ndarray:
    """``n`` (u, v) pixels spread over the frame, away from the border (the marker fits)."""
    rng = np.random.default_rng(seed)
    margin = 0.1
    u = rng.uniform(margin * intr.width, (1 - margin) * intr.width, n)
    v = rng.uniform(margin * intr.height, (1 - margin) * intr.height, n)
    return np.stack([u, v], 1)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = str(DEFAULT_MODEL) if DEFAULT_MODEL.is_dir() else "small_qwen"
    parser.add_argument("--model", default=default, help="DepthLM dir or preset")
    parser.add_argument("--batch", type=int, default=32, help="pixels per batched call")
    add_common_args(parser)
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here")
    parser.set_defaults(width=320, height=240, repeats=5, warmup=1)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.batch < 2:
        parser.error("--repeats must be >= 1, --warmup >= 0 and --batch >= 2")
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench_depthlm_") as tmp:
        model = args.model
        if model in QWEN_PRESETS:
            model = str(build_tiny_qwen(Path(tmp) / model, f_uni=150.0, preset=model))
        elif not Path(model).is_dir():
            parser.error(f"--model {model}: not a directory nor one of {sorted(QWEN_PRESETS)}")
        t0 = time.perf_counter()
        engine = DepthLMEngine(
            DepthLMEngineConfig(
                model, device=args.device, precision=args.precision, batch_size=args.batch
            )
        )
        build_s = time.perf_counter() - t0

    w, h = args.width, args.height
    intr = Intrinsics(w, h, fx=0.9 * w, fy=0.9 * w, cx=(w - 1) / 2, cy=(h - 1) / 2)
    rgb = synthetic_rgb(w, h)
    pixels = query_pixels(intr, args.batch)
    tokenizer = engine.lm.processor.tokenizer
    cuda = engine.device.type == "cuda"

    def call(n: int):
        result = engine.query(rgb, intr, pixels[:n])
        if cuda:
            torch.cuda.synchronize(engine.device)
        return result

    texts = [t for t in call(args.batch).text if t]
    tokens = float(np.mean([len(tokenizer(t)["input_ids"]) for t in texts])) if texts else 0.0
    one_ms = median_ms(lambda: call(1), args.warmup, args.repeats)
    many_ms = median_ms(lambda: call(args.batch), args.warmup, args.repeats)
    qps_one, qps_many = 1e3 / one_ms, 1e3 * args.batch / many_ms
    result = {
        "model": engine.model_id,
        "parameters": sum(p.numel() for p in engine.lm.model.parameters()),
        "device": str(engine.device),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "frame": [w, h],
        "f_uni": engine.f_uni,
        "build_s": build_s,
        "tokens_per_answer": tokens,
        "batch1_ms_per_query": one_ms,
        "batch1_qps": qps_one,
        "batch": args.batch,
        f"batch{args.batch}_ms_per_call": many_ms,
        f"batch{args.batch}_qps": qps_many,
        "batching_speedup": qps_many / qps_one,
    }
    print(
        f"model {result['model']} ({result['parameters'] / 1e6:.2f} M parameters) on "
        f"{result['device']}, {result['threads']} thread(s), {w}x{h} frame"
    )
    print(f"  answer length            {tokens:.1f} tokens (mean of the batched call)")
    print(f"  batch 1                  {one_ms:8.1f} ms/query  {qps_one:7.2f} queries/s")
    print(
        f"  batch {args.batch:<3d}                {many_ms / args.batch:8.1f} ms/query  "
        f"{qps_many:7.2f} queries/s"
    )
    print(f"  batching speed-up        {qps_many / qps_one:.2f}x")
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()

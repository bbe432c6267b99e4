"""Benchmark: LingBot-Depth forward latency per preset and resolution (CPU fp32 / CUDA bf16).

For each preset and input resolution, times (median over repeats, after warm-up) the full model
(`LingBotDepth.forward`: RGB-D encoder + ConvStack decoder + upsampling) and, as the reference
measured in the same run, the same ViT on the RGB tokens alone (`forward_rgb`, a plain DINOv2
pass): the ratio is what the depth tokens and the dense decoder cost on top of the backbone.
Inputs have 10 % sensor-like holes, so some depth tokens are dropped as at inference.

Usage (after `source env.sh`):
  python bench/bench_lingbot.py                                   # CPU, small presets
  python bench/bench_lingbot.py --device cuda --presets vitl14 --sizes 640x480   # the GPU target
  python bench/bench_lingbot.py --json out.json

The issue's GPU target is ViT-L/14 at 640x480 in bf16 <= 25 ms on an H100; record the device
name (printed) with every figure.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from depth_perception.models.lingbot import build_preset


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def timed(fn, repeats: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "vits14"])
    parser.add_argument("--sizes", nargs="+", default=["320x240", "640x480"])
    parser.add_argument("--num-tokens", type=int, default=2400)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    device = torch.device(args.device)
    bf16 = device.type == "cuda"
    rows = []
    print(f"device: {device_name(device)}; precision: {'bf16 autocast' if bf16 else 'fp32'}")
    for preset in args.presets:
        model = build_preset(preset).to(device).eval()
        lo, hi = model.num_tokens_range
        num_tokens = min(max(args.num_tokens, lo), hi)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        for size in args.sizes:
            width, height = (int(v) for v in size.split("x"))
            gen = torch.Generator().manual_seed(0)
            image = torch.rand(1, 3, height, width, generator=gen).to(device)
            depth = (0.5 + 3 * torch.rand(1, 1, height, width, generator=gen)).to(device)
            depth[torch.rand(depth.shape, generator=gen).to(device) < 0.1] = 0.0
            rows_, cols_ = model.token_grid(height, width, num_tokens)
            image_14 = torch.nn.functional.interpolate(image, (rows_ * 14, cols_ * 14))
            backbone = model.encoder.backbone

            def full(model=model, image=image, depth=depth, num_tokens=num_tokens):
                with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, bf16):
                    model(image, depth, num_tokens=num_tokens)

            def rgb_only(backbone=backbone, image_14=image_14):
                with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, bf16):
                    backbone.forward_rgb(image_14)

            ms = timed(full, args.repeats, args.warmup, device)
            ref = timed(rgb_only, args.repeats, args.warmup, device)
            row = {
                "preset": preset,
                "params_M": round(params, 1),
                "size": size,
                "tokens": rows_ * cols_,
                "ms": round(ms, 2),
                "rgb_vit_ms": round(ref, 2),
                "ratio_vs_rgb_vit": round(ms / ref, 2),
            }
            rows.append(row)
            print(
                f"  {preset:7s} {params:6.1f}M {size:>8s} {row['tokens']:5d} tokens: "
                f"{ms:9.1f} ms  (RGB-only ViT {ref:8.1f} ms, x{ms / ref:.2f})"
            )
        del model
    if args.json:
        args.json.write_text(json.dumps({"device": device_name(device), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

"""Benchmark: FocusDepth (DA2 + SAM3 + MSSA) forward and per-target engine frame at S x S.

For each input size S of ``--sizes`` (default 1008, the paper's, and 518, DA2's native; both
multiples of 14), one run builds the ``--preset`` with random weights (the timing does not
depend on them) and times (median of ``--repeats`` after ``--warmup``, torch's CPU threads
and, run as a script, numpy's OpenBLAS / OpenMP pools pinned by ``--threads``, default 1 (an
``OPENBLAS_NUM_THREADS`` already set wins); on CUDA every timed call ends with
``torch.cuda.synchronize``; inside ``torch.inference_mode`` and, for bf16, the engine's
autocast), for one box + text prompt (a 160 x 120 box on the 640 x 480 frame, "mug"):

- forward:  ``FocusDepthModel.forward(da2_pixel_values, sam3_pixel_values, prompt,
            prompt_image_size=(640, 480))``: the whole network, split into
- prompt:   ``model.prompt_branch``: SAM3 with the prompt (tokenizer, ViT, FPN, geometry and
            text encoders, DETR encoder / decoder, mask decoder; the tokens MSSA takes),
- depth:    ``model.depth(da2_pixel_values, tokens, grid)``: DA2's backbone, the four MSSA
            blocks, DA2's neck and head (prompt + depth = forward up to the mask resize),
- da2:      the reference, measured in the same run: the same DA2 without MSSA, the plain
            ``model.depth_model(pixel_values=...)``; forward / da2 is what MSSA + SAM3 cost
            over DA2 alone, depth / da2 what the four MSSA blocks cost,
- prep:     the engine's preprocessing of the 640 x 480 uint8 frame: ``da2_pixel_values`` +
            ``sam3_pixel_values`` at S x S, moved to the device,
- post:     the engine's steps after the network, on the CPU: fit, ``metric_from_relative``
            (the weighted robust scale-and-shift fit), plus geometry, ``target_cloud`` and
            ``target_geometry`` (centroid, minimal oriented box) of the target's cloud,
- engine:   ``FocusDepthEngine.run`` on a 640 x 480 synthetic frame with one target: prep,
            forward, the resize back, post and the composite depth. The engine is built with
            ``input_size=S`` (preset ``tiny`` in its config) and the benchmarked model put in
            the place of its own, so engine / forward is the engine's own work on the same
            network. Its reference depth is the network's own relative depth at S mapped to
            1.4-5 m (1 % noise, 20 % holes, like a sensor), and its mask threshold is set so the
            mask covers the box's area (random mask logits would otherwise cover anything from
            a few % to half the image, and the cloud's size drives post); the printout says
            whether the target went through every step.

It also records the build time, the parameter counts (DA2, SAM3, MSSA) and, on CUDA,
``torch.cuda.max_memory_allocated()`` per size, and the cross-size ratios (first size over
each other). If the first (cold) forward at any size takes more than ``--slow-s`` (60 s), the
remaining timings use one repeat and no warm-up, and the output says so.

Presets: ``tiny`` (``build_preset("tiny", input_size=S)``: a 4-layer, 32-wide DA2 and a 32-wide
SAM3, the CPU-test network; its DA2 position embeddings are sized for S, so its parameter count
grows with S) with the engine's character-level tokenizer; ``paper``
(``--device cuda`` only): DA2-Large-sized DA2 (Dinov2 ViT-L/14: 24 layers, 1024 wide, taps 5,
12, 18, 24; neck 256 / 512 / 1024 / 1024, fusion 256) + a ``facebook/sam3``-sized SAM3
(``Sam3Config()`` defaults, RoPE grid set to S) + MSSA at C_g = 1024, random weights, built
directly on the GPU (the tokenizer stays character-level: no network here; its cost is
negligible and the text is padded to 32 tokens either way). The paper-size pair on a device
machine:
``python bench/bench_focusdepth.py --preset paper --device cuda --precision bf16
--json bench_focusdepth_paper.json`` (and ``--precision fp32`` for the FP32 numbers).

Usage: ``python bench/bench_focusdepth.py [--preset tiny|paper] [--sizes 1008,518]
[--device cpu|cuda] [--precision auto|fp32|bf16] [--repeats 10] [--warmup 2] [--threads 1]
[--slow-s 60] [--seed 0] [--json F]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: The native thread pools ``--threads`` also pins: numpy's OpenBLAS runs the metric fit's
#: ``np.dot`` calls with every core otherwise (on a loaded 2-core machine the fit is then ~7x
#: slower and noisy). They are read when the libraries load, hence before the imports below.
BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _pin_native_threads(argv: list[str]) -> None:
    """``--threads N`` (N > 0, default 1) of the command line -> the pools' variables, unless
    already set in the environment (which then wins)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--threads", type=int, default=1)
    threads = pre.parse_known_args(argv)[0].threads
    if threads > 0:
        for var in BLAS_THREAD_VARS:
            os.environ.setdefault(var, str(threads))


_pin_native_threads(sys.argv[1:])

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from bench.timing import add_common_args, median_ms, synthetic_rgb, write_json  # noqa: E402
from depth_perception.core.camera import Intrinsics  # noqa: E402
from depth_perception.core.target_geometry import (  # noqa: E402
    metric_from_relative,
    target_cloud,
    target_geometry,
)
from depth_perception.engines.base import FrameInputs  # noqa: E402
from depth_perception.engines.device import resolve_device, use_bf16  # noqa: E402
from depth_perception.engines.focusdepth import (  # noqa: E402
    FocusDepthEngine,
    FocusDepthEngineConfig,
    _tiny_tokenizer,  # the engine's own tokenizer for the random "tiny" preset
    target_prompt,
)
from depth_perception.io.frames import Target  # noqa: E402
from depth_perception.models.focusdepth import FocusDepthModel, build_preset  # noqa: E402
from depth_perception.models.sam3_io import da2_pixel_values, sam3_pixel_values  # noqa: E402

PRESET_NAMES = ("tiny", "paper")
TARGET = Target(1, "mug", (240, 160, 160, 120))  # (x, y, w, h) on the 640 x 480 frame


def reference_depth(rel: np.ndarray, seed: int = 0) -> np.ndarray:
    """A sensor-like metric depth that agrees with the relative disparity ``rel``: rel mapped
    to disparity 0.2-0.7 1/m (1.4-5 m), 1 % noise, 20 % holes (NaN)."""
    rng = np.random.default_rng(seed)
    rel = rel.astype(np.float64)
    span = float(np.ptp(rel)) or 1.0
    depth = 1.0 / (0.2 + 0.5 * (rel - rel.min()) / span)
    depth *= 1.0 + 0.01 * rng.standard_normal(depth.shape)
    depth[rng.random(depth.shape) < 0.2] = np.nan
    return depth.astype(np.float32)


def paper_configs(size: int):
    """(DepthAnythingConfig, Sam3Config): DA2-Large and facebook/sam3 sizes, SAM3 at S x S."""
    from transformers import DepthAnythingConfig, Sam3Config

    da2 = DepthAnythingConfig(
        backbone_config={
            "model_type": "dinov2",
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "mlp_ratio": 4,
            "image_size": 518,  # the released checkpoint's (37 x 37 position embeddings)
            "patch_size": 14,
            "out_indices": [5, 12, 18, 24],
            "reshape_hidden_states": False,
            "apply_layernorm": True,
        },
        patch_size=14,
        reassemble_hidden_size=1024,
        neck_hidden_sizes=[256, 512, 1024, 1024],
        fusion_hidden_size=256,
        head_hidden_size=32,
    )
    sam3 = Sam3Config()
    sam3.image_size = [size, size]
    grid = size // 14
    sam3.vision_config.backbone_feature_sizes = [[4 * grid] * 2, [2 * grid] * 2, [grid] * 2]
    return da2, sam3


def build_model(preset: str, size: int, device: torch.device, seed: int) -> FocusDepthModel:
    """The preset with random weights (seeded), eval mode, on ``device``."""
    tokenizer = _tiny_tokenizer()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        if preset == "tiny":
            return build_preset("tiny", input_size=size, tokenizer=tokenizer).to(device).eval()
        from transformers import DepthAnythingForDepthEstimation, Sam3Model

        da2, sam3 = paper_configs(size)
        with device:  # initialise on the GPU: ~1.2 B parameters
            model = FocusDepthModel(
                DepthAnythingForDepthEstimation(da2), Sam3Model(sam3), tokenizer=tokenizer
            )
        return model.to(device).eval()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def parameter_counts(model: FocusDepthModel) -> dict[str, int]:
    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    return {
        "da2": count(model.depth_model),
        "sam3": count(model.sam3),
        "mssa": count(model.mssa),
        "total": count(model),
    }


@dataclass
class Setup:
    """What every size shares: the device, precision, frame, prompt and the timing budget."""

    args: argparse.Namespace
    device: torch.device
    bf16: bool
    intr: Intrinsics
    rgb: np.ndarray
    repeats: int
    warmup: int
    notes: list[str] = field(default_factory=list)

    @property
    def size_wh(self) -> tuple[int, int]:
        return (self.intr.width, self.intr.height)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def autocast(self):
        if self.bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def time_ms(self, fn: Callable[[], object], network: bool = True) -> float:
        """Median ms of ``fn`` then a device sync; ``network``: in inference mode (and autocast
        for bf16), as the engine runs the model; otherwise as it is (the engine's own run)."""

        def call() -> None:
            if network:
                with torch.inference_mode(), self.autocast():
                    fn()
            else:
                fn()
            self.sync()

        return median_ms(call, self.warmup, self.repeats)


def bench_size(setup: Setup, size: int) -> dict:
    """Every timing at input size ``size`` (module docstring) as one row."""
    args, device, rgb, intr = setup.args, setup.device, setup.rgb, setup.intr
    cuda = device.type == "cuda"
    wh = setup.size_wh
    prompt = target_prompt(TARGET, *wh)
    t0 = time.perf_counter()
    model = build_model(args.preset, size, device, args.seed)
    setup.sync()
    build_s = time.perf_counter() - t0
    params = parameter_counts(model)
    square = (size, size)
    da2_px = da2_pixel_values(rgb, square).to(device)
    sam3_px = sam3_pixel_values(rgb, square).to(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)

    def forward() -> None:
        model(da2_px, sam3_px, prompt, prompt_image_size=wh)

    # The first call, timed: cold (allocations, SAM3's RoPE grid); it decides the repeats.
    with torch.inference_mode(), setup.autocast():
        t0 = time.perf_counter()
        forward()
        setup.sync()
        cold_s = time.perf_counter() - t0
        sam3_result = model.prompt_branch(sam3_px, prompt, image_size=wh)
    if cold_s > args.slow_s and (setup.repeats, setup.warmup) != (1, 0):
        setup.repeats, setup.warmup = 1, 0
        note = (
            f"cold forward at S={size} took {cold_s:.1f} s > {args.slow_s:g} s: one repeat, "
            "no warm-up from here on (numbers are single calls)"
        )
        setup.notes.append(note)
        print(f"  NOTE: {note}")

    forward_ms = setup.time_ms(forward)
    prompt_ms = setup.time_ms(lambda: model.prompt_branch(sam3_px, prompt, image_size=wh))
    depth_ms = setup.time_ms(lambda: model.depth(da2_px, sam3_result.tokens, sam3_result.grid_hw))
    da2_ms = setup.time_ms(lambda: model.depth_model(pixel_values=da2_px))
    prep_ms = setup.time_ms(
        lambda: (
            da2_pixel_values(rgb, square).to(device),
            sam3_pixel_values(rgb, square).to(device),
        ),
        network=False,
    )

    # The engine at S with this model in place of its own ("tiny" builds a throwaway one).
    cfg = FocusDepthEngineConfig(
        checkpoint="tiny",
        device=str(device),
        precision=args.precision,
        input_size=size,
        num_threads=args.threads,
        seed=args.seed,
    )
    engine = FocusDepthEngine(cfg)
    engine.model = model
    rel, logits, _ = engine.predict((da2_px, sam3_px), prompt, wh)
    box_fraction = TARGET.box[2] * TARGET.box[3] / (wh[0] * wh[1])
    cfg.mask_threshold = float(np.quantile(logits, 1.0 - box_fraction))
    mask = logits > cfg.mask_threshold
    reference = reference_depth(rel, args.seed)
    frame = FrameInputs(intrinsics=intr, rgb=rgb, depth=reference, targets=[TARGET])
    engine_ms = setup.time_ms(lambda: engine.run(frame), network=False)
    result = engine.run(frame).targets[0]

    def fit() -> np.ndarray:
        return metric_from_relative(
            rel,
            reference,
            mask,
            r=cfg.band_radius,
            weights=tuple(cfg.fit_weights),
            threshold=cfg.fit_threshold,
            min_pixels=cfg.min_reference_pixels,
            seed=cfg.seed,
        )[0]

    if result.ok:
        fitted = fit()
        fit_ms = median_ms(fit, setup.warmup, setup.repeats)
        geometry_ms = median_ms(
            lambda: target_geometry(target_cloud(fitted, mask, intr), cfg.box_method),
            setup.warmup,
            setup.repeats,
        )
    else:
        fit_ms = geometry_ms = float("nan")
    post_ms = fit_ms + geometry_ms
    peak = torch.cuda.max_memory_allocated(device) if cuda else None

    row = {
        "size": size,
        "tokens": (size // 14) ** 2,
        "build_s": build_s,
        "parameters": params,
        "repeats": setup.repeats,
        "warmup": setup.warmup,
        "cold_forward_s": cold_s,
        "forward_ms": forward_ms,
        "prompt_ms": prompt_ms,
        "depth_ms": depth_ms,
        "da2_ms": da2_ms,
        "mssa_ms": depth_ms - da2_ms,
        "prep_ms": prep_ms,
        "post_ms": post_ms,
        "fit_ms": fit_ms,
        "geometry_ms": geometry_ms,
        "engine_ms": engine_ms,
        "ratio_forward_over_da2": forward_ms / da2_ms,
        "ratio_prompt_over_da2": prompt_ms / da2_ms,
        "ratio_depth_over_da2": depth_ms / da2_ms,
        "ratio_engine_over_forward": engine_ms / forward_ms,
        "ratio_engine_over_da2": engine_ms / da2_ms,
        "target": {
            "ok": result.ok,
            "error_kind": result.error_kind,
            "error": result.error,
            "mask_pixels": int(result.mask.sum()) if result.mask is not None else 0,
            "points": int(len(result.points)) if result.points is not None else 0,
            "fit_inlier_ratio": result.fit.inlier_ratio if result.fit is not None else None,
            "score": result.score,
            "mask_threshold": cfg.mask_threshold,
        },
        "cuda_max_memory_allocated": peak,
    }
    p = params
    print(
        f"  S={size} ({size // 14}x{size // 14} tokens; DA2 {p['da2'] / 1e6:.2f} M, SAM3 "
        f"{p['sam3'] / 1e6:.2f} M, MSSA {p['mssa'] / 1e6:.2f} M parameters; build "
        f"{build_s:.1f} s, cold forward {cold_s:.2f} s; median of {setup.repeats})"
    )
    print(
        f"    forward {forward_ms:9.1f} ms = prompt (SAM3) {prompt_ms:9.1f} ms + depth "
        f"(DA2+MSSA) {depth_ms:9.1f} ms (+ mask resize)"
    )
    print(
        f"    da2 alone {da2_ms:9.1f} ms  forward/da2 {forward_ms / da2_ms:5.2f}  "
        f"prompt/da2 {prompt_ms / da2_ms:5.2f}  depth/da2 {depth_ms / da2_ms:5.2f} "
        f"(MSSA {depth_ms - da2_ms:+.1f} ms)"
    )
    target = row["target"]
    status = (
        f"target ok: {target['mask_pixels']} mask px, {target['points']} points, fit "
        f"inliers {target['fit_inlier_ratio']:.2f}"
        if result.ok
        else f"TARGET FAILED at {result.error_kind}: {result.error} (timing stops there)"
    )
    print(
        f"    engine frame {engine_ms:9.1f} ms  engine/forward {engine_ms / forward_ms:5.2f}  "
        f"engine/da2 {engine_ms / da2_ms:5.2f} | prep {prep_ms:.1f} ms  post {post_ms:.1f} ms "
        f"(fit {fit_ms:.1f} + cloud and geometry {geometry_ms:.1f})"
    )
    print(f"    {status}")
    if peak is not None:
        print(f"    peak CUDA memory {peak / 2**20:.0f} MiB")
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tiny", choices=PRESET_NAMES)
    parser.add_argument("--sizes", default="1008,518", help="input sizes S, multiples of 14")
    add_common_args(parser)
    parser.add_argument(
        "--slow-s",
        type=float,
        default=60.0,
        help="a cold forward slower than this: one repeat, no warm-up from then on",
    )
    parser.add_argument("--seed", type=int, default=0, help="of the random weights")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.threads < 0:
        parser.error("--repeats must be >= 1, --warmup and --threads >= 0")
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes {args.sizes!r}: comma-separated integers")
    if not sizes or any(s <= 0 or s % 14 for s in sizes):
        parser.error(f"--sizes {args.sizes!r}: positive multiples of 14")
    if args.preset == "paper" and not args.device.startswith("cuda"):
        parser.error("--preset paper needs --device cuda (~1.2 B parameters, random weights)")
    if args.precision == "bf16" and not args.device.startswith("cuda"):
        parser.error("--precision bf16 needs --device cuda (fp32 on the CPU)")
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    bf16 = use_bf16(args.precision, device)
    precision = "bf16" if bf16 else "fp32"
    w, h = args.width, args.height
    intr = Intrinsics(w, h, fx=0.9 * w, fy=0.9 * w, cx=(w - 1) / 2, cy=(h - 1) / 2)
    setup = Setup(args, device, bf16, intr, synthetic_rgb(w, h), args.repeats, args.warmup)

    cpu = f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores"
    print(
        f"FocusDepth {args.preset} (random weights), {w}x{h} frame, one target "
        f"(box {TARGET.box}, text {TARGET.text!r}), {device} ({device_name(device)}), "
        f"{precision}, {torch.get_num_threads()} threads (OpenBLAS "
        f"{os.environ.get('OPENBLAS_NUM_THREADS', 'all')}), median of {args.repeats} after "
        f"{args.warmup} ({cpu})"
    )
    rows = []
    for size in sizes:
        rows.append(bench_size(setup, size))
        if cuda:
            torch.cuda.empty_cache()

    cross = {}
    first = rows[0]
    for row in rows[1:]:
        c = {k: first[f"{k}_ms"] / row[f"{k}_ms"] for k in ("forward", "prompt", "depth", "da2")}
        c["engine"] = first["engine_ms"] / row["engine_ms"]
        cross[f"{first['size']}_over_{row['size']}"] = c
        print(
            f"  S={first['size']} over S={row['size']} (tokens x "
            f"{first['tokens'] / row['tokens']:.2f}): forward x{c['forward']:.2f}  prompt "
            f"x{c['prompt']:.2f}  depth x{c['depth']:.2f}  da2 x{c['da2']:.2f}  engine "
            f"x{c['engine']:.2f}"
        )
    for note in setup.notes:
        print(f"  NOTE: {note}")

    out = {
        "preset": args.preset,
        "width": w,
        "height": h,
        "target": {"box": list(TARGET.box), "text": TARGET.text},
        "device": str(device),
        "device_name": device_name(device),
        "precision": precision,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "slow_s": args.slow_s,
        "seed": args.seed,
        "sizes": rows,
        "cross_size": cross,
        "notes": setup.notes,
        "platform": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "cpu_affinity": len(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(),
            "native_thread_env": {v: os.environ.get(v) for v in BLAS_THREAD_VARS},
            "cuda": torch.version.cuda if cuda else None,
        },
    }
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()

"""Benchmark: LiDAR prompt projection + PDSA/GMDR preparation at 640x480 (MetricAnything teacher).

For each prompt size (default 100, 2,000 and 40,000 points), one run times (median of
``--repeats`` after ``--warmup``):

- project:  ``transform_points`` (LiDAR -> camera extrinsic) + ``points_to_sparse_depth``
            (pinhole projection with z-buffer) of an N-point cloud,
- align:    ``align_prompt``: GMDR (one global fit) + PDSA (K = 5 nearest prompt pixels of every
            pixel, weighted per-pixel fits),
- input:    ``model_input``: the (3, H, W) float32 [PDSA, GMDR, mask] tensor (canonical space),
- total:    the three above,

then, in the same run, the MetricAnything teacher on the 2,000-point prompt (``--teacher``, default
the ``teacher_tiny`` preset: random weights, the compute of the CPU-test network):

- forward:  the network's ``infer`` at 640x480 (its resize to the square input, the network with
            the prepared [PDSA, GMDR, mask] prompt, the resize back),
- prior:    the prompt-free prior on the colour image (``--prior``, default the shipped
            LingBot-Depth model given colour only),
- engine:   ``MetricAnythingTeacherEngine.run``: prior + PDSA/GMDR + forward, per frame,

and two references measured in the same run: ``kdtree``, open3d's KD-tree build over the same N
prompt pixels plus the 5-NN query of all other pixels (the search inside PDSA: align / kdtree
is what the fits cost on top), and ``memcpy``, ``np.copyto`` of a (3, H, W) float32 buffer (the
floor for writing the model input). It also prints PDSA's and GMDR's AbsRel against the scene's
true depth (the prior is the truth distorted by a smooth affine-in-disparity field plus noise,
as a prompt-free model's error might be).

Usage: ``python bench/bench_prompt_prep.py [--sizes 100,2000,40000] [--repeats 10] [--json F]
[--teacher PRESET_OR_DIR] [--prior SPEC] [--device cpu|cuda] [--model-repeats 5] [--threads N]``
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import numpy as np
from open3d.core import Tensor
from open3d.core.nns import NearestNeighborSearch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from bench.timing import median_ms, write_json  # noqa: E402
from depth_perception.core.camera import Intrinsics  # noqa: E402
from depth_perception.core.prompt_prep import PDSA_K, align_prompt, model_input  # noqa: E402
from depth_perception.core.prompts import points_to_sparse_depth, transform_points  # noqa: E402
from depth_perception.engines.base import FrameInputs  # noqa: E402


def synthetic_scene(width: int, height: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A room-like true depth (floor, back wall, two slanted boxes) and a prior depth: the
    truth's disparity times a smooth scale field plus a smooth shift field, plus 1 % noise."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    depth = np.full((height, width), 6.0)
    floor = 1.2 * height / np.maximum(v - 0.45 * height, 1.0)
    depth = np.where(v > 0.5 * height, np.minimum(depth, floor), depth)
    for x0, y0, w, h, z in [(0.1, 0.4, 0.2, 0.3, 1.5), (0.6, 0.3, 0.25, 0.4, 2.8)]:
        box = (u >= x0 * width) & (u < (x0 + w) * width) & (v >= y0 * height)
        box &= v < (y0 + h) * height
        depth[box] = z + 0.002 * (u[box] - x0 * width)
    disp = 1.0 / depth
    scale = 0.7 + 0.3 * (u / width) + 0.2 * (v / height)
    shift = 0.05 * np.sin(u / width * np.pi)
    prior_disp = scale * disp + shift
    prior_disp *= 1.0 + 0.01 * rng.standard_normal(prior_disp.shape)
    return depth.astype(np.float32), (1.0 / prior_disp).astype(np.float32)


def lidar_extrinsic() -> np.ndarray:
    """camera_T_lidar: a LiDAR 10 cm above and 5 cm behind the camera, x forward, z up."""
    T = np.eye(4)
    T[:3, :3] = [[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]  # lidar axes in camera
    T[:3, 3] = [0.0, -0.10, -0.05]
    return T


def lidar_cloud(
    depth: np.ndarray, intr: Intrinsics, cam_T_lidar: np.ndarray, n: int, seed: int
) -> np.ndarray:
    """``n`` float32 points of the true surface (distinct pixels) in the LiDAR frame."""
    rng = np.random.default_rng(seed)
    flat = rng.choice(depth.size, size=n, replace=False)
    pts_cam = intr.backproject(depth).reshape(-1, 3)[flat]
    return transform_points(pts_cam, np.linalg.inv(cam_T_lidar)).astype(np.float32)


def kdtree_reference(prompt: np.ndarray) -> None:
    """KD-tree build over the prompt pixels + 5-NN query of every other pixel (open3d)."""
    mask = np.isfinite(prompt)
    pv, pu = np.nonzero(mask)
    qv, qu = np.nonzero(~mask)
    search = NearestNeighborSearch(Tensor(np.stack([pu, pv], 1).astype(np.float32)))
    search.knn_index()
    search.knn_search(Tensor(np.stack([qu, qv], 1).astype(np.float32)), PDSA_K)


def abs_rel(disp: np.ndarray, depth: np.ndarray) -> float:
    ok = np.isfinite(disp) & (disp > 0)
    return float(np.mean(np.abs(1.0 / disp[ok] - depth[ok]) / depth[ok]))


def bench_teacher(
    args: argparse.Namespace, depth: np.ndarray, intr: Intrinsics, cam_T_lidar: np.ndarray
) -> dict:
    """The teacher's forward, its prior and the engine's whole frame on a 2,000-point prompt."""
    import torch

    from depth_perception.engines.metric_anything import (
        MetricAnythingTeacherConfig,
        MetricAnythingTeacherEngine,
        prior_depth,
    )
    from depth_perception.models.metric_anything.presets import count_parameters

    engine = MetricAnythingTeacherEngine(
        MetricAnythingTeacherConfig(
            checkpoint=args.teacher,
            prior=args.prior,
            device=args.device,
            precision="fp32",
            num_threads=args.threads,
        )
    )
    h, w = depth.shape
    rgb = np.random.default_rng(2).integers(0, 255, (h, w, 3), dtype=np.uint8)
    cloud = lidar_cloud(depth, intr, cam_T_lidar, 2000, seed=2000)
    prompt = points_to_sparse_depth(transform_points(cloud, cam_T_lidar), intr)
    _, _, model_input, _ = engine.prepare(rgb, prompt, intr)
    image = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255.0).to(engine.device)
    prompt_t = torch.from_numpy(model_input.tensor).to(engine.device)

    def sync() -> None:
        if engine.device.type == "cuda":
            torch.cuda.synchronize()

    def forward() -> None:
        engine.model.infer(image, f_px=intr.fx, prompt=prompt_t)
        sync()

    frame = FrameInputs(intrinsics=intr, rgb=rgb, prompt=prompt)
    reps, warmup = args.model_repeats, args.model_warmup
    forward_ms = median_ms(forward, warmup, reps)
    prior_ms = median_ms(lambda: prior_depth(engine.prior, rgb, intr), warmup, reps)
    engine_ms = median_ms(lambda: (engine.run(frame), sync()), warmup, reps)
    params = sum(p.numel() for p in engine.model.parameters())
    out = {
        "teacher": args.teacher,
        "parameters": params,
        "network_input": engine.model.img_size,
        "prior": engine.prior.model_id,
        "device": str(engine.device),
        "torch_threads": torch.get_num_threads(),
        "forward_ms": forward_ms,
        "prior_ms": prior_ms,
        "engine_frame_ms": engine_ms,
    }
    if args.teacher in ("teacher_tiny", "teacher_small"):
        out["parameters_by_group"] = count_parameters(args.teacher)
    print(
        f"  teacher {args.teacher} ({params / 1e6:.2f} M parameters, {engine.model.img_size} px "
        f"input, {engine.device}, {torch.get_num_threads()} threads) at {w}x{h}, 2000 points: "
        f"forward {forward_ms:.1f} ms  prior {prior_ms:.1f} ms  engine frame {engine_ms:.1f} ms "
        f"(median of {reps})"
    )
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--sizes", default="100,2000,40000", help="prompt points, comma-separated")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here")
    parser.add_argument("--teacher", default="teacher_tiny", help="teacher preset or checkpoint")
    parser.add_argument("--prior", default="lingbot", help="the teacher's prior (engine spec)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda for the networks")
    parser.add_argument("--model-repeats", type=int, default=5)
    parser.add_argument("--model-warmup", type=int, default=3, help="frames before timing")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0: torch's default; 1 is steadier on a loaded machine)",
    )
    parser.add_argument("--no-teacher", action="store_true", help="preparation only")
    args = parser.parse_args(argv)

    w, h = args.width, args.height
    intr = Intrinsics(w, h, fx=0.9 * w, fy=0.9 * w, cx=(w - 1) / 2, cy=(h - 1) / 2)
    depth, prior = synthetic_scene(w, h)
    cam_T_lidar = lidar_extrinsic()
    src = np.random.default_rng(1).random((3, h, w), dtype=np.float32)
    dst = np.empty_like(src)
    memcpy = median_ms(lambda: np.copyto(dst, src), args.warmup, max(args.repeats, 20))

    cpu = f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores"
    print(f"{w}x{h}, K = {PDSA_K}, median of {args.repeats} ({cpu})")
    print(f"  memcpy of the (3, H, W) float32 input: {memcpy:.3f} ms")
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        cloud = lidar_cloud(depth, intr, cam_T_lidar, n, seed=n)
        prompt = points_to_sparse_depth(transform_points(cloud, cam_T_lidar), intr)
        alignment = align_prompt(prior, prompt)
        project = median_ms(
            lambda c=cloud: points_to_sparse_depth(transform_points(c, cam_T_lidar), intr),
            args.warmup,
            args.repeats,
        )
        align = median_ms(lambda p=prompt: align_prompt(prior, p), args.warmup, args.repeats)
        build = median_ms(
            lambda a=alignment: model_input(a, "canonical", fx=intr.fx), args.warmup, args.repeats
        )
        kdtree = median_ms(lambda p=prompt: kdtree_reference(p), args.warmup, args.repeats)
        total = project + align + build
        row = {
            "points": n,
            "prompt_pixels": int(np.isfinite(prompt).sum()),
            "project_ms": project,
            "align_ms": align,
            "model_input_ms": build,
            "total_ms": total,
            "kdtree_ms": kdtree,
            "memcpy_ms": memcpy,
            "ratio_align_over_kdtree": align / kdtree,
            "ratio_total_over_memcpy": total / memcpy,
            "abs_rel_prior": abs_rel(1.0 / prior, depth),
            "abs_rel_gmdr": abs_rel(alignment.gmdr, depth),
            "abs_rel_pdsa": abs_rel(alignment.pdsa, depth),
            "local_fallbacks": alignment.n_local_fallback,
        }
        rows.append(row)
        print(
            f"  {n:6d} points ({row['prompt_pixels']} pixels): project {project:7.2f} ms  "
            f"align {align:7.2f} ms  input {build:6.2f} ms  total {total:7.2f} ms | "
            f"kdtree {kdtree:7.2f} ms  align/kdtree {align / kdtree:4.2f}  "
            f"total/memcpy {total / memcpy:6.0f}"
        )
        print(
            f"         AbsRel prior {row['abs_rel_prior']:.4f}  GMDR {row['abs_rel_gmdr']:.4f}  "
            f"PDSA {row['abs_rel_pdsa']:.4f}  ({row['local_fallbacks']} local fallbacks)"
        )
    result = {
        "width": w,
        "height": h,
        "k": PDSA_K,
        "repeats": args.repeats,
        "cpu": cpu,
        "rows": rows,
    }
    if not args.no_teacher:
        result["teacher"] = bench_teacher(args, depth, intr, cam_T_lidar)
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()

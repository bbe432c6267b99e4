"""Benchmark: depth + colour -> sensor_msgs/PointCloud2 at 640x480.

Times (median of ``--repeats`` runs after ``--warmup`` runs):

- ours:      ``depth_to_pointcloud2(depth, intr, header, rgb=rgb)`` -- the full message build,
- core:      ``depth_to_xyzrgb`` alone (the structured buffer, no message),
- open3d:    ``o3d.geometry.PointCloud.create_from_rgbd_image`` on the same data (RGBDImage
             prepared outside the timed region; open3d drops invalid points, we keep NaNs),
- memcpy:    ``np.copyto`` of a buffer the size of our message's data (the floor for any
             implementation that has to write that many bytes).

Usage: ``.venv/bin/python bench/bench_pointcloud2.py [--repeats 50] [--json out.json]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from bench.timing import median_ms, write_json  # noqa: E402
from depth_perception.core.camera import Intrinsics  # noqa: E402
from depth_perception.core.cloud import depth_to_xyzrgb  # noqa: E402
from depth_perception.ros.conversions import copy_header, depth_to_pointcloud2  # noqa: E402


def synthetic_rgbd(width: int, height: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A room-like depth image (floor ramp, wall, boxes) with sensor-like holes, plus colour."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    depth = np.full((height, width), 4.0, np.float32)  # back wall
    floor = 1.2 * height / np.maximum(v - 0.45 * height, 1.0)  # floor seen from 1.2 m up
    depth = np.where(v > 0.5 * height, np.minimum(depth, floor), depth)
    for x0, y0, w, h, z in [(0.1, 0.4, 0.2, 0.3, 1.5), (0.6, 0.3, 0.25, 0.4, 2.2)]:
        box = (u >= x0 * width) & (u < (x0 + w) * width) & (v >= y0 * height)
        box &= v < (y0 + h) * height
        depth[box] = z + 0.002 * (u[box] - x0 * width)  # slightly slanted faces
    depth += rng.normal(0.0, 0.004, depth.shape).astype(np.float32) * depth  # ~0.4 % noise
    # Holes: low-frequency blobs (specular / absorbing surfaces) + sparse dropouts, ~10 %.
    blobs = cv2.resize(rng.random((height // 16, width // 16)).astype(np.float32), (width, height))
    holes = (blobs > 0.78) | (rng.random(depth.shape) < 0.02)
    depth[holes] = 0.0
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[..., 0] = (u * 255 / width).astype(np.uint8)
    rgb[..., 1] = (v * 255 / height).astype(np.uint8)
    rgb[..., 2] = np.clip(depth * 50, 0, 255).astype(np.uint8)
    return depth, rgb


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = parser.parse_args(argv)

    w, h = args.width, args.height
    intr = Intrinsics(w, h, fx=0.9 * w, fy=0.9 * w, cx=(w - 1) / 2, cy=(h - 1) / 2)
    depth, rgb = synthetic_rgbd(w, h)
    header = copy_header(frame_id="camera_color_optical_frame")

    msg = depth_to_pointcloud2(depth, intr, header, rgb=rgb)
    out_bytes = len(msg.data)
    src = np.frombuffer(msg.data, np.uint8).copy()
    dst = np.empty_like(src)

    rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
        o3d.geometry.Image(rgb),
        o3d.geometry.Image(depth),
        depth_scale=1.0,
        depth_trunc=1e6,
        convert_rgb_to_intensity=False,
    )
    pinhole = o3d.camera.PinholeCameraIntrinsic(w, h, intr.fx, intr.fy, intr.cx, intr.cy)

    o3d_points = len(o3d.geometry.PointCloud.create_from_rgbd_image(rgbd, pinhole).points)
    ours = median_ms(
        lambda: depth_to_pointcloud2(depth, intr, header, rgb=rgb), args.warmup, args.repeats
    )
    core = median_ms(lambda: depth_to_xyzrgb(depth, rgb, intr), args.warmup, args.repeats)
    open3d = median_ms(
        lambda: o3d.geometry.PointCloud.create_from_rgbd_image(rgbd, pinhole),
        args.warmup,
        args.repeats,
    )
    memcpy = median_ms(lambda: np.copyto(dst, src), args.warmup, args.repeats)

    result = {
        "width": w,
        "height": h,
        "repeats": args.repeats,
        "valid_ratio": float(np.mean(depth > 0)),
        "message_bytes": out_bytes,
        "open3d_points": o3d_points,
        "ours_pointcloud2_ms": ours,
        "core_depth_to_xyzrgb_ms": core,
        "open3d_create_from_rgbd_ms": open3d,
        "memcpy_ms": memcpy,
        "ratio_ours_over_open3d": ours / open3d,
        "ratio_ours_over_memcpy": ours / memcpy,
    }
    print(
        f"{w}x{h}, {100 * result['valid_ratio']:.1f} % valid depth, "
        f"{out_bytes / 1e6:.2f} MB message, median of {args.repeats}"
    )
    print(f"  ours  depth_to_pointcloud2 (xyzrgb msg): {ours:8.3f} ms")
    print(f"  core  depth_to_xyzrgb (buffer only):     {core:8.3f} ms")
    print(f"  open3d create_from_rgbd_image:           {open3d:8.3f} ms ({o3d_points} points)")
    print(f"  memcpy np.copyto of {out_bytes} bytes:   {memcpy:8.3f} ms")
    print(
        f"  ours / open3d = {result['ratio_ours_over_open3d']:.2f}   "
        f"ours / memcpy = {result['ratio_ours_over_memcpy']:.1f}"
    )
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()

"""What every benchmark here shares: the timer and the JSON record."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def median_ms(fn: Callable[[], object], warmup: int, repeats: int) -> float:
    """Median wall time of ``fn`` in milliseconds over ``repeats`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def synthetic_rgb(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A (H, W, 3) uint8 frame: smooth gradients plus noise (the timing does not depend on it)."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([u / width, v / height, 0.5 + 0.5 * np.sin(u / 40.0) * np.cos(v / 30.0)], -1)
    noisy = 255.0 * base + rng.normal(0.0, 8.0, base.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def write_json(path: Path | None, result: dict) -> None:
    """The run's numbers as JSON (when ``--json`` was given)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The options every model benchmark takes: frame size, device, precision, timing."""
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: steadier on a loaded machine; 0: torch's default)",
    )

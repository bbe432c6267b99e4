"""Where and in which precision a torch engine runs: one rule for every learned engine."""

from __future__ import annotations

import torch

PRECISIONS = ("auto", "fp32", "bf16")


def resolve_device(name: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``; a CUDA device without CUDA is a ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast for ``precision`` on ``device``: auto = bf16 on CUDA, fp32 on the CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and device.type != "cuda":
        raise ValueError("precision bf16 needs a CUDA device (fp32 on the CPU)")
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")

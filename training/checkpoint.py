"""Training checkpoints: atomic directories, a ``latest`` pointer, RNG state, exports.

Layout of a run directory::

    RUN/checkpoints/step-00001000/trainer.pt      model, optimizer, schedule, scaler, data
                                                  position, counters (rank 0 writes it)
    RUN/checkpoints/step-00001000/rng-rank3.pt    python / numpy / torch (+CUDA) RNG of rank 3
    RUN/checkpoints/latest                        text: name of the newest complete checkpoint
    RUN/export/                                   the last model, ``save_checkpoint`` format
    RUN/best/                                     the best validated model, same format

A checkpoint is assembled in ``.tmp-step-N`` and renamed into place only when complete, then
``latest`` is replaced (write to a temporary file + ``os.replace``), so a crash or SIGKILL at
any moment leaves the previous checkpoint and pointer intact. Every file is written with
``torch.save`` of tensors and primitive containers only, so it loads with
``torch.load(weights_only=True)`` (no pickled code runs when reading a checkpoint).
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger("training.checkpoint")

CHECKPOINTS = "checkpoints"
PREFIX = "step-"
TMP_PREFIX = ".tmp-"
TRAINER_FILE = "trainer.pt"
LATEST = "latest"
FORMAT = "depth_perception.trainer"
FORMAT_VERSION = 1


def step_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def rng_file(rank: int) -> str:
    return f"rng-rank{rank}.pt"


# ---------------------------------------------------------------------------------------------
# Atomic file system operations
# ---------------------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (the directory entry), where the platform allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _tmp_path(path: Path) -> Path:
    """A temporary name next to ``path``, unique per process across the nodes of a job (they
    may write the same file on shared storage at once)."""
    return path.with_name(f"{TMP_PREFIX}{path.name}.{socket.gethostname()}.{os.getpid()}")


def save_atomic(obj: object, path: str | Path) -> Path:
    """``torch.save`` to a temporary file next to ``path``, fsync, rename over ``path``."""
    path = Path(path)
    tmp = _tmp_path(path)
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def write_text_atomic(text: str, path: str | Path) -> Path:
    path = Path(path)
    tmp = _tmp_path(path)
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def publish_dir(staging: Path, final: Path) -> Path:
    """Move a completely written directory to ``final`` (replacing an older one there)."""
    _fsync_dir(staging)
    if final.exists():
        # A directory cannot be renamed over a non-empty one: move the old one aside first.
        trash = _tmp_path(final.with_name(f"old-{final.name}"))
        os.replace(final, trash)
        os.replace(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, final)
    _fsync_dir(final.parent)
    return final


def export_model(
    model: nn.Module, directory: str | Path, save: Callable[[nn.Module, Path], object]
) -> Path:
    """Write ``model`` with ``save(model, dir)`` (the task's format: what ``load_model`` / the
    ROS node read), atomically: built in a temporary directory, then renamed into place."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = _tmp_path(directory)
    shutil.rmtree(staging, ignore_errors=True)
    save(model, staging)
    return publish_dir(staging, directory)


# ---------------------------------------------------------------------------------------------
# Finding checkpoints
# ---------------------------------------------------------------------------------------------


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoint directories under ``root`` (``RUN/checkpoints``), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith(PREFIX) and (p / TRAINER_FILE).is_file()
    ]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(root: str | Path) -> Path | None:
    """The checkpoint ``latest`` names, or the newest complete one when the pointer is
    missing or broken (a crash between publishing a checkpoint and updating the pointer
    leaves the pointer on the previous, equally complete, checkpoint)."""
    root = Path(root)
    pointer = root / LATEST
    if pointer.is_file():
        target = root / pointer.read_text().strip()
        if (target / TRAINER_FILE).is_file():
            return target
    found = list_checkpoints(root)
    return found[-1] if found else None


def resolve_resume(spec: str | Path, run_dir: str | Path) -> Path | None:
    """``auto``: the latest checkpoint of ``run_dir`` (None when there is none yet); a run
    directory: its latest; a checkpoint directory or its ``trainer.pt``: that one."""
    if str(spec) == "auto":
        return latest_checkpoint(Path(run_dir) / CHECKPOINTS)
    path = Path(spec)
    if path.is_file() and path.name == TRAINER_FILE:
        return path.parent
    if (path / TRAINER_FILE).is_file():
        return path
    for root in (path / CHECKPOINTS, path):
        found = latest_checkpoint(root)
        if found is not None:
            return found
    raise FileNotFoundError(f"no checkpoint at {path}")


def prune(root: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints (never the one ``latest`` names) and
    leftovers of interrupted writes; returns what was deleted."""
    root = Path(root)
    latest = latest_checkpoint(root)
    found = list_checkpoints(root)
    doomed = [p for p in found[: max(len(found) - max(keep, 1), 0)] if p != latest]
    doomed += [p for p in root.iterdir() if p.name.startswith(TMP_PREFIX) and p.is_dir()]
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)
    return doomed


def load_file(path: str | Path) -> dict:
    """A checkpoint file, tensors on the CPU; memory-mapped, so every rank of a node can read
    a multi-GB checkpoint without holding a copy each."""
    return torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)


# ---------------------------------------------------------------------------------------------
# RNG state
# ---------------------------------------------------------------------------------------------


def capture_rng() -> dict:
    """This process's random generators as tensors / primitives (``weights_only``-safe)."""
    # The legacy global generator is what third-party code draws from: save it as it is.
    np_state = np.random.get_state(legacy=False)  # noqa: NPY002
    np_state["state"]["key"] = np_state["state"]["key"].tolist()  # ndarray is not allowed
    state = {
        "python": random.getstate(),
        "numpy": np_state,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    return state


def restore_rng(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = dict(state["numpy"])
    np_state["state"] = dict(np_state["state"])
    np_state["state"]["key"] = np.asarray(np_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(np_state)  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            log.warning("CUDA RNG state of %d devices not restored", len(state["cuda"]))

"""Helpers of the training tests: a run in-process, its logged records."""

from __future__ import annotations

import json
from pathlib import Path

from training.trainer import Trainer


def fit(cfg, resume: bool = False, max_steps: int | None = None) -> Trainer:
    """Train ``cfg`` (after resuming its run when ``resume``) and close the trainer."""
    trainer = Trainer(cfg)
    try:
        if resume:
            assert trainer.resume() is not None
        trainer.fit(max_steps=max_steps)
    finally:
        trainer.close()
    return trainer


def records(run: Path, key: str) -> list[tuple[int, float]]:
    """(step, value) of ``key`` in a run's metrics.jsonl."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r[key]) for r in map(json.loads, lines) if key in r]

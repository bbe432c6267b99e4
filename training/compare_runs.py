"""Compare two training runs step by step: losses, the samples of every step, final weights.

Usage::

    python -m training.compare_runs RUN_A RUN_B

What it is for: checking that two ways of running the same schedule compute the same thing,
e.g. one process with batch 4 and ``torchrun --nproc-per-node 2`` with batch 2 (the figures in
training/README.md), or an interrupted and resumed run against an uninterrupted one. Reads
``metrics.jsonl`` (``train/loss`` of the steps both logged), ``samples.jsonl`` when both runs
had ``log.samples: true`` (is every step's global batch the same set of samples?) and the
weights of ``export/`` (else the latest checkpoint). Prints one line per quantity.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file

from training import checkpoint as ckpt
from training.trainer import EXPORT_DIR, METRICS_FILE, SAMPLES_FILE


def _records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in _records(run / METRICS_FILE) if "train/loss" in r}


def batches(run: Path) -> dict[int, list[str]]:
    """step -> the sorted sample keys of its global batch (``log.samples``)."""
    return {
        r["step"]: sorted(k for keys in r["keys"] for k in keys)
        for r in _records(run / SAMPLES_FILE)
    }


def weights(run: Path) -> dict[str, torch.Tensor]:
    """The exported model's weights, else those of the latest checkpoint."""
    exported = run / EXPORT_DIR / "model.safetensors"
    if exported.is_file():
        return load_file(exported)
    latest = ckpt.latest_checkpoint(run / ckpt.CHECKPOINTS)
    if latest is None:
        raise FileNotFoundError(f"{run}: neither {EXPORT_DIR}/ nor a checkpoint")
    return ckpt.load_file(latest / ckpt.TRAINER_FILE)["model"]


def compare(a: Path, b: Path) -> dict:
    """The differences between runs ``a`` and ``b`` (see the module docstring)."""
    la, lb = losses(a), losses(b)
    steps = sorted(set(la) & set(lb))
    out: dict = {"steps": len(steps)}
    if steps:
        diffs = {s: abs(la[s] - lb[s]) for s in steps}
        worst = max(diffs, key=diffs.get)
        out.update(
            max_loss_diff=diffs[worst],
            max_loss_diff_step=worst,
            max_loss_rel_diff=max(diffs[s] / max(abs(la[s]), 1e-12) for s in steps),
            first_loss=(la[steps[0]], lb[steps[0]]),
            last_loss=(la[steps[-1]], lb[steps[-1]]),
        )
    ba, bb = batches(a), batches(b)
    both = sorted(set(ba) & set(bb))
    if both:
        out["sample_steps"] = len(both)
        out["same_samples_steps"] = sum(ba[s] == bb[s] for s in both)
    wa, wb = weights(a), weights(b)
    if wa.keys() != wb.keys():
        raise ValueError(f"different parameters: {sorted(set(wa) ^ set(wb))[:5]} ...")
    out["max_weight_diff"] = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)
    out["max_weight"] = max(float(wa[k].float().abs().max()) for k in wa)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.compare_runs", description=__doc__)
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    args = parser.parse_args(argv)
    result = compare(args.run_a, args.run_b)
    print(f"steps compared: {result['steps']}")
    if result["steps"]:
        print(
            f"loss: max |a - b| {result['max_loss_diff']:.3g} (step "
            f"{result['max_loss_diff_step']}), max relative {result['max_loss_rel_diff']:.3g}; "
            "first step {:.6f} vs {:.6f}, last step {:.6f} vs {:.6f}".format(
                *result["first_loss"], *result["last_loss"]
            )
        )
    if "sample_steps" in result:
        print(
            f"samples: the same global batch at {result['same_samples_steps']} of "
            f"{result['sample_steps']} steps"
        )
    print(
        f"weights: max |a - b| {result['max_weight_diff']:.3g} "
        f"(largest weight {result['max_weight']:.3g})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""DDP / FSDP wiring: two gloo processes under torchrun compute what one process computes.

Data: 4 frames and a global batch of 4 (1 x 4 in one process, 2 x 2 under torchrun), so every
epoch is one step whose global batch holds the same four samples however they are split.
The trainer keys augmentation, corruption and token masks by sample and normalises the loss
over the global batch, so the losses and weights must agree up to float summation order.
Also: checkpoints move between layouts (DDP -> 1 process, 1 process -> DDP), FSDP agrees
with DDP, and the Slurm template builds the right torchrun command.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from depth_perception.io.bag import write_sim_bag
from depth_perception.sim.sequence import SequenceConfig
from training import checkpoint as ckpt
from training.config import load_config
from training.extract import ExtractConfig, extract
from training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "training" / "configs" / "lingbot_tiny_cpu.yaml"
SBATCH = ROOT / "training" / "slurm" / "train_multinode.sbatch"
STEPS = 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp_data")
    cfg = SequenceConfig(
        scene_kind="tabletop", seed=5, n_frames=4, width=64, height=48, lidar=False
    )
    write_sim_bag(root / "bags" / "full", cfg, progress=False)
    extract([root / "bags"], ExtractConfig(out=root / "shards", shard_size=4, progress=False))
    return root / "shards"


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def overrides(run: Path, shards: Path, batch_size: int, **extra) -> list[str]:
    values = {
        "run_dir": str(run),
        "threads": 1,
        "iterations": STEPS,
        "data.train": [str(shards)],
        "data.batch_size": batch_size,
        "data.num_workers": 0,
        "data.augment.out_size": [56, 42],
        "data.corrupt.p": 0.5,
        "model.num_tokens": [6, 12],
        "optim.groups.0.warmup_iters": 2,
        "val.data": [],
        "log.progress": False,
        "log.every": 1,
        "log.image_every": 0,
        "checkpoint.every": 2,
        "checkpoint.keep": 5,
    }
    values.update(extra)
    return [f"{k}={json.dumps(v)}" for k, v in values.items()]


def run_single(run: Path, shards: Path, resume: Path | None = None) -> None:
    """One process, in this one, global batch 4."""
    trainer = Trainer(load_config(TINY, overrides(run, shards, 4)))
    try:
        if resume is not None:
            assert trainer.resume(resume) == resume
        trainer.fit()
    finally:
        trainer.close()


def run_torchrun(run: Path, shards: Path, *extra: str, strategy: str = "ddp") -> None:
    """Two gloo processes under torchrun, batch 2 each."""
    sets = overrides(run, shards, 2, **{"dist.strategy": strategy})
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "training.train",
        "--config",
        str(TINY),
        *[a for s in sets for a in ("--set", s)],
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def losses(run: Path) -> dict[int, float]:
    records = map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
    return {r["step"]: r["train/loss"] for r in records if "train/loss" in r}


def assert_same_model(a: Path, b: Path, atol: float = 1e-4) -> None:
    wa = load_file(a / "export" / "model.safetensors")
    wb = load_file(b / "export" / "model.safetensors")
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert worst < atol, worst


def assert_resumed_like(run: Path, single: Path) -> None:
    """A run resumed from step 2 logged steps 3-4 with the uninterrupted run's losses and ended
    with its weights."""
    got, ref = losses(run), losses(single)
    assert sorted(got) == [3, 4]
    for step in got:
        assert got[step] == pytest.approx(ref[step], rel=1e-5, abs=1e-7)
    assert_same_model(single, run)


@pytest.fixture(scope="module")
def single(shards, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("single") / "run"
    run_single(run, shards)
    return run


@pytest.fixture(scope="module")
def ddp(shards, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ddp") / "run"
    run_torchrun(run, shards)
    return run


def test_ddp_matches_single_process(single, ddp):
    ref, got = losses(single), losses(ddp)
    assert sorted(ref) == sorted(got) == list(range(1, STEPS + 1))
    for step in ref:
        assert got[step] == pytest.approx(ref[step], rel=1e-5, abs=1e-7)
    # The loss moved, so equal losses are not equal by accident.
    assert len({round(v, 6) for v in ref.values()}) == STEPS
    assert_same_model(single, ddp)
    # Rank 0 wrote the checkpoint, every rank its RNG state.
    step2 = ddp / ckpt.CHECKPOINTS / "step-00000002"
    assert sorted(p.name for p in step2.iterdir()) == [
        "rng-rank0.pt",
        "rng-rank1.pt",
        ckpt.TRAINER_FILE,
    ]
    state = torch.load(step2 / ckpt.TRAINER_FILE, weights_only=True)
    assert (state["world_size"], state["batch_size"], state["step"]) == (2, 2, 2)


def test_ddp_checkpoint_resumes_in_one_process(single, ddp, shards, tmp_path):
    run = tmp_path / "run"
    run_single(run, shards, resume=ddp / ckpt.CHECKPOINTS / "step-00000002")
    assert_resumed_like(run, single)


def test_single_checkpoint_resumes_under_ddp(single, shards, tmp_path):
    run = tmp_path / "run"
    run_torchrun(run, shards, "--resume", str(single / ckpt.CHECKPOINTS / "step-00000002"))
    assert_resumed_like(run, single)


def test_fsdp_matches_single_process(single, shards, tmp_path):
    run = tmp_path / "run"
    run_torchrun(run, shards, strategy="fsdp")
    got, ref = losses(run), losses(single)
    for step in ref:
        assert got[step] == pytest.approx(ref[step], rel=1e-5, abs=1e-7)
    assert_same_model(single, run)
    # FSDP checkpoints hold full (unsharded) tensors under the plain parameter names.
    state = torch.load(
        run / ckpt.CHECKPOINTS / "step-00000004" / ckpt.TRAINER_FILE, weights_only=True
    )
    assert state["model"]["encoder.backbone.pos_embed"].shape == (1, 257, 96)


def test_sbatch_builds_multinode_torchrun(tmp_path):
    """Run the template with stand-ins for scontrol / srun / torchrun that print their calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fakes = {
        "scontrol": 'printf "gpu-node07\\ngpu-node08\\n"',
        # srun: drop its options, run the task once (as on one node).
        "srun": 'while [[ "$1" == --* ]]; do shift; done; exec "$@"',
        "torchrun": 'echo "TORCHRUN $*"',
    }
    for name, body in fakes.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(0o755)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text("")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "VENV": str(venv),
        "SLURM_SUBMIT_DIR": str(tmp_path),
        "SLURM_JOB_NODELIST": "gpu-node[07-08]",
        "SLURM_NNODES": "2",
        "SLURM_JOB_ID": "4242",
        "SLURM_GPUS_ON_NODE": "8",
        "SLURM_CPUS_PER_TASK": "96",
    }
    result = subprocess.run(
        ["bash", str(SBATCH), "--set", "data.batch_size=4"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("TORCHRUN ")]
    expected = (
        "TORCHRUN --nnodes 2 --nproc-per-node 8 --rdzv-id 4242 --rdzv-backend c10d "
        "--rdzv-endpoint gpu-node07:29500 -m training.train "
        "--config training/configs/lingbot_vitl14_paper.yaml --resume --set data.batch_size=4"
    )
    assert line == expected

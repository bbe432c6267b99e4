"""DDP / FSDP: two gloo processes under torchrun compute what one process computes, step for step.

Data: 13 frames (odd) and a global batch of 4 (1 x 4 in one process, 2 x 2 under torchrun):
3 steps per epoch, one sample left out of every epoch, 8 iterations = 3 epochs. The dataset
deals each epoch's permutation out interleaved, so step k's global batch holds the same four
samples however they are split over processes; the trainer keys augmentation, corruption and
token masks by sample and normalises the loss over the global batch, so the losses and weights
must agree up to float summation order. ``log.samples`` records every step's sample keys, so
the tests compare the data order itself, not only its consequences.

Also: checkpoints move between layouts mid-epoch (DDP -> 1 process, 1 process -> DDP) without
repeating or skipping a sample; a stop signal that reaches one rank checkpoints every rank at
the same step; FSDP agrees with DDP.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from depth_perception.io.bag import write_sim_bag
from depth_perception.sim.sequence import SequenceConfig
from training import checkpoint as ckpt
from training.config import load_config
from training.dataset import ShardDataset, ShardLoader, epoch_permutation
from training.extract import ExtractConfig, extract
from training.shards import ShardReader
from training.trainer import SAMPLES_FILE, Trainer

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "training" / "configs" / "lingbot_tiny_cpu.yaml"
STEPS = 8
N_FRAMES = 13
GLOBAL_BATCH = 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp_data")
    cfg = SequenceConfig(
        scene_kind="tabletop", seed=5, n_frames=N_FRAMES, width=64, height=48, lidar=False
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
        "log.samples": True,
        "checkpoint.every": 2,
        "checkpoint.keep": 5,
    }
    values.update(extra)
    return [f"{k}={json.dumps(v)}" for k, v in values.items()]


def run_single(run: Path, shards: Path, resume: Path | None = None) -> Trainer:
    """One process, in this one, global batch 4."""
    trainer = Trainer(load_config(TINY, overrides(run, shards, 4)))
    try:
        if resume is not None:
            assert trainer.resume(resume) is not None
        trainer.fit()
    finally:
        trainer.close()
    return trainer


def torchrun_command(run: Path, shards: Path, *extra: str, strategy: str = "ddp") -> list[str]:
    """Two gloo processes under torchrun, batch 2 each."""
    sets = overrides(run, shards, 2, **{"dist.strategy": strategy})
    return [
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


ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def run_torchrun(run: Path, shards: Path, *extra: str, strategy: str = "ddp") -> None:
    command = torchrun_command(run, shards, *extra, strategy=strategy)
    result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def losses(run: Path) -> dict[int, float]:
    records = map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
    return {r["step"]: r["train/loss"] for r in records if "train/loss" in r}


def samples(run: Path) -> dict[int, dict]:
    """step -> {"epoch": e, "keys": sorted keys of the global batch}."""
    records = map(json.loads, (run / SAMPLES_FILE).read_text().splitlines())
    return {
        r["step"]: {"epoch": r["epoch"], "keys": sorted(k for keys in r["keys"] for k in keys)}
        for r in records
    }


def keys_by_id(shards: Path) -> list[str]:
    """Sample keys in the order of the manifest's sample ids (what permutations index)."""
    dataset = ShardDataset(shards)
    with ShardReader() as reader:
        return [reader.read(*dataset.locate(i))[0] for i in range(dataset.num_samples)]


def max_weight_difference(a: Path, b: Path) -> float:
    wa = load_file(a / "export" / "model.safetensors")
    wb = load_file(b / "export" / "model.safetensors")
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def assert_same_model(a: Path, b: Path, atol: float = 1e-4) -> None:
    worst = max_weight_difference(a, b)
    assert worst < atol, worst


def assert_same_run(run: Path, single: Path, first_step: int) -> None:
    """Steps first_step..STEPS logged with the reference's losses and samples, once each; the
    same final weights."""
    got, ref = losses(run), losses(single)
    assert sorted(got) == list(range(first_step, STEPS + 1))
    for step in got:
        assert got[step] == pytest.approx(ref[step], rel=1e-5, abs=1e-7), step
    got_samples, ref_samples = samples(run), samples(single)
    assert sorted(got_samples) == sorted(got)
    for step, record in got_samples.items():
        assert record == ref_samples[step], step
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


def test_ddp_matches_single_process(single, ddp, shards):
    ref, got = losses(single), losses(ddp)
    assert sorted(ref) == sorted(got) == list(range(1, STEPS + 1))
    for step in ref:
        assert got[step] == pytest.approx(ref[step], rel=1e-5, abs=1e-7)
    # The loss moved, so equal losses are not equal by accident.
    assert len({round(v, 6) for v in ref.values()}) == STEPS
    assert_same_model(single, ddp)

    # The same global batch at every step, several steps per epoch.
    ref_samples, ddp_samples = samples(single), samples(ddp)
    assert ref_samples == ddp_samples
    epochs = [ref_samples[s]["epoch"] for s in range(1, STEPS + 1)]
    assert epochs == [0, 0, 0, 1, 1, 1, 2, 2]
    # Each epoch: the first 12 positions of its permutation, no sample twice; the 13th (the
    # remainder) is left out, another one each epoch.
    keys = keys_by_id(shards)
    assert len(set(keys)) == N_FRAMES
    left_out = []
    for epoch in (0, 1):
        seen = [k for r in ref_samples.values() if r["epoch"] == epoch for k in r["keys"]]
        assert len(seen) == len(set(seen)) == 12
        order = [keys[i] for i in epoch_permutation(N_FRAMES, 0, epoch)]
        assert set(seen) == set(order[:12])
        left_out.append(order[12])
    assert left_out[0] != left_out[1]
    # Rank r got positions r, r + 2, ... of the permutation (interleaved), not a block.
    record = json.loads((ddp / SAMPLES_FILE).read_text().splitlines()[0])
    order = [keys[i] for i in epoch_permutation(N_FRAMES, 0, 0)]
    assert record["keys"] == [[order[0], order[2]], [order[1], order[3]]]

    # Rank 0 wrote the checkpoint, every rank its RNG state.
    step2 = ddp / ckpt.CHECKPOINTS / "step-00000002"
    assert sorted(p.name for p in step2.iterdir()) == [
        "rng-rank0.pt",
        "rng-rank1.pt",
        ckpt.TRAINER_FILE,
    ]
    state = torch.load(step2 / ckpt.TRAINER_FILE, weights_only=True)
    assert (state["world_size"], state["batch_size"], state["step"]) == (2, 2, 2)
    assert (state["data"]["epoch"], state["data"]["position"]) == (0, 8)


def test_ddp_checkpoint_resumes_in_one_process(single, ddp, shards, tmp_path):
    """Mid-epoch (step 4 = one step into epoch 1), 2 x 2 -> 1 x 4: the rest of the run as the
    reference, sample for sample."""
    run = tmp_path / "run"
    run_single(run, shards, resume=ddp / ckpt.CHECKPOINTS / "step-00000004")
    assert_same_run(run, single, first_step=5)


@pytest.mark.parametrize(
    ("old", "new", "stop_after"),
    [((2, 2), (1, 4), 1), ((1, 4), (3, 1), 2), ((2, 3), (3, 1), 1), ((3, 1), (2, 2), 3)],
)
def test_resume_with_another_layout_neither_repeats_nor_skips(shards, old, new, stop_after):
    """Ranks of an old layout (processes, batch) consume ``stop_after`` lockstep steps of an
    epoch, the new layout continues from rank 0's state: every sample of the epoch's
    permutation once, in order of position, until less than a new global batch is left."""

    def layout(world_size: int, batch: int) -> list[ShardLoader]:
        return [
            ShardLoader(ShardDataset(shards, seed=3, rank=r, world_size=world_size), batch)
            for r in range(world_size)
        ]

    def lockstep(loaders: list[ShardLoader], steps: int) -> list[str]:
        iterators = [iter(loader) for loader in loaders]
        seen = []
        for _ in range(steps):
            batches = [next(it) for it in iterators]
            # Interleaved: position p of the permutation is rank p % W's (p // W)-th sample.
            for i in range(len(batches[0]["key"])):
                seen += [b["key"][i] for b in batches]
        return seen

    first = layout(*old)
    for loader in first:
        loader.dataset.set_epoch(1)
    head = lockstep(first, stop_after)
    state = first[0].state_dict()
    assert state["position"] == stop_after * old[0] * old[1] == len(head)

    second = layout(*new)
    for loader in second:
        loader.dataset.seek(state["epoch"], state["position"])
    steps = second[0].steps_left()
    assert steps == (N_FRAMES - state["position"]) // (new[0] * new[1])
    tail = lockstep(second, steps)

    order = [keys_by_id(shards)[i] for i in epoch_permutation(N_FRAMES, 3, 1)]
    seen = head + tail
    assert len(seen) == len(set(seen))  # nothing repeated
    assert seen == order[: len(seen)]  # nothing skipped
    assert N_FRAMES - len(seen) < new[0] * new[1]  # only a remainder left


def _children(pid: int) -> dict[int, int]:
    """{rank: pid} of the torchrun workers whose parent is ``pid`` (Linux /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != pid:
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        for item in environ:
            if item.startswith(b"RANK="):
                found[int(item[5:])] = int(entry.name)
    return found


def _workers(pid: int, n: int) -> dict[int, int] | None:
    found = _children(pid)
    return found if len(found) == n else None


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def _logged_steps(run: Path) -> int:
    path = run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_stop_signal_on_one_rank_checkpoints_all_and_resumes_across_world_sizes(
    single, shards, tmp_path
):
    """1 x 4 checkpoint (step 2) -> 2 x 2 under torchrun; SIGTERM to rank 1 only (rank 0
    paused meanwhile, so the stop cannot slip to the end); both ranks checkpoint the same step
    and exit; that checkpoint -> 1 x 4 to the end: the reference run, sample for sample."""
    run = tmp_path / "run"
    log_path = tmp_path / "torchrun.log"
    command = torchrun_command(
        run, shards, "--resume", str(single / ckpt.CHECKPOINTS / "step-00000002")
    )
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=log_file, stderr=log_file)
        try:
            ranks = _wait_for(lambda: _workers(proc.pid, 2), 60, "two workers", proc)
            _wait_for(lambda: _logged_steps(run) >= 1, 120, "step 3", proc)  # from 2 on
            os.kill(ranks[0], signal.SIGSTOP)
            os.kill(ranks[1], signal.SIGTERM)
            time.sleep(0.2)
            os.kill(ranks[0], signal.SIGCONT)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    output = log_path.read_text()
    assert proc.returncode != 0  # not finished: stopped
    stopped = max(losses(run))
    assert 3 <= stopped < STEPS, output[-3000:]
    assert f"stopped by SIGTERM at step {stopped} of {STEPS}" in output
    assert (run / ckpt.CHECKPOINTS / ckpt.LATEST).read_text().strip() == ckpt.step_name(stopped)
    final = run / ckpt.CHECKPOINTS / ckpt.step_name(stopped)
    assert sorted(p.name for p in final.iterdir()) == [
        "rng-rank0.pt",
        "rng-rank1.pt",
        ckpt.TRAINER_FILE,
    ]
    assert "failed (exitcode: 143)" in output  # both workers exited with 128 + SIGTERM
    assert not (run / "export").exists()

    # Continue in one process: steps 3..8 equal the uninterrupted run's, sample for sample.
    run_single(run, shards, resume=run)
    assert_same_run(run, single, first_step=3)


def test_fsdp_matches_single_process(single, shards, tmp_path):
    run = tmp_path / "run"
    run_torchrun(run, shards, strategy="fsdp")
    got, ref = losses(run), losses(single)
    for step in ref:
        assert got[step] == pytest.approx(ref[step], rel=1e-5, abs=1e-7)
    assert samples(run) == samples(single)
    assert_same_model(single, run)
    # FSDP checkpoints hold full (unsharded) tensors under the plain parameter names.
    state = torch.load(
        run / ckpt.CHECKPOINTS / "step-00000004" / ckpt.TRAINER_FILE, weights_only=True
    )
    assert state["model"]["encoder.backbone.pos_embed"].shape == (1, 257, 96)
    assert np.isfinite(list(got.values())).all()


def test_compare_runs(single, ddp, tmp_path, capsys):
    """The tool behind the README's DDP figures: the match, and a planted difference."""
    from training.compare_runs import compare, main

    same = compare(single, ddp)
    assert same["steps"] == STEPS and same["same_samples_steps"] == same["sample_steps"] == STEPS
    assert same["max_loss_diff"] < 1e-6 and 0 < same["max_weight_diff"] < 1e-4
    assert main([str(single), str(ddp)]) == 0
    assert f"the same global batch at {STEPS} of {STEPS} steps" in capsys.readouterr().out

    other = tmp_path / "other"
    (other / "export").mkdir(parents=True)
    records = [json.loads(line) for line in (single / "metrics.jsonl").read_text().splitlines()]
    records[4]["train/loss"] += 0.5
    (other / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    batches = [json.loads(line) for line in (single / SAMPLES_FILE).read_text().splitlines()]
    batches[6]["keys"][0][0] = "another_key"
    (other / SAMPLES_FILE).write_text("".join(json.dumps(r) + "\n" for r in batches))
    weights = load_file(single / "export" / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] + 0.25
    save_file(weights, other / "export" / "model.safetensors")
    diff = compare(single, other)
    assert diff["max_loss_diff"] == pytest.approx(0.5) and diff["max_loss_diff_step"] == 5
    assert diff["same_samples_steps"] == STEPS - 1
    assert diff["max_weight_diff"] == pytest.approx(0.25)

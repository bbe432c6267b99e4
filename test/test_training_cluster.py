"""What a cluster does to a training run: stop signals, a killed torchrun agent, a stuck rank,
and FSDP with bf16 parameters on CPU nodes.

The torchrun tests start two gloo workers on a 4-frame shard (a few seconds of start-up each)
and act on the real processes: SIGKILL of the agent, SIGSTOP of a worker.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from depth_perception.io.bag import write_sim_bag
from depth_perception.models.blocks.vit import Block
from depth_perception.models.lingbot import build_preset
from depth_perception.sim.sequence import SequenceConfig
from training import checkpoint as ckpt
from training.distributed import fsdp_policies, shard_model
from training.extract import ExtractConfig, extract
from training.lifecycle import (
    StopRequest,
    collective_failure_message,
    is_collective_failure,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "training" / "configs" / "lingbot_tiny_cpu.yaml"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cluster_data")
    cfg = SequenceConfig(scene_kind="tabletop", seed=2, n_frames=4, width=64, height=48)
    write_sim_bag(root / "bags" / "b", cfg, progress=False)
    extract([root / "bags"], ExtractConfig(out=root / "shards", progress=False))
    return root / "shards"


def torchrun(run: Path, shards: Path, log_path: Path, **extra) -> subprocess.Popen:
    """Two gloo workers (batch 2 each) on a run far longer than the test lets it go."""
    values = {
        "run_dir": str(run),
        "threads": 1,
        "iterations": 100_000,
        "data.train": [str(shards)],
        "data.batch_size": 2,
        "data.num_workers": 0,
        "data.augment.out_size": [56, 42],
        "model.num_tokens": [6, 12],
        "val.data": [],
        "log.progress": False,
        "log.every": 1,
        "log.image_every": 0,
        "log.tensorboard": False,
        "checkpoint.every": 0,
        **extra,
    }
    sets = [a for k, v in values.items() for a in ("--set", f"{k}={json.dumps(v)}")]
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
        *sets,
    ]
    with open(log_path, "w") as log_file:  # the child keeps its own descriptor
        return subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=log_file, stderr=log_file)


def workers(agent: int) -> dict[int, int]:
    """{rank: pid} of the processes whose parent is ``agent`` and that have a RANK."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != agent:
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        for item in environ:
            if item.startswith(b"RANK="):
                found[int(item[5:])] = int(entry.name)
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent that does not reap it counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_for(predicate, timeout: float, what: str, log_path: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}:\n{log_path.read_text()[-3000:]}")


def logged_steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line]


@linux_only
def test_killed_agent_leaves_no_orphans(shards, tmp_path):
    """SIGKILL the torchrun agent mid-run: both workers notice, checkpoint the same step and
    exit. The run is FSDP with bf16 parameters on the CPU (whose antialiased resize has no bf16
    kernel: the policy keeps the model's inputs fp32), so its checkpoint gathers shards."""
    run, log_path = tmp_path / "run", tmp_path / "torchrun.log"
    agent = torchrun(run, shards, log_path, **{"dist.strategy": "fsdp", "precision": "bf16"})
    ranks = {}
    try:
        ranks = wait_for(lambda: len(w := workers(agent.pid)) == 2 and w, 60, "workers", log_path)
        wait_for(lambda: len(logged_steps(run)) >= 2, 120, "two steps", log_path)
        agent.kill()
        agent.wait()
        wait_for(lambda: not any(map(alive, ranks.values())), 60, "workers to exit", log_path)
    finally:
        if agent.poll() is None:
            agent.kill()
        for pid in ranks.values():  # still there only if the test failed
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    output = log_path.read_text()
    for rank in (0, 1):
        assert f"[rank {rank}] training.lifecycle: parent process {agent.pid}" in output
    steps = logged_steps(run)
    last = steps[-1]
    assert steps == list(range(1, last + 1))
    losses = [json.loads(line)["train/loss"] for line in (run / "metrics.jsonl").open()]
    assert all(0 < v < 10 for v in losses)  # bf16 FSDP trained: finite losses
    assert f"stopped by SIGTERM at step {last}" in output
    final = run / ckpt.CHECKPOINTS / ckpt.step_name(last)
    assert (run / ckpt.CHECKPOINTS / ckpt.LATEST).read_text().strip() == final.name
    assert sorted(p.name for p in final.iterdir()) == [
        "rng-rank0.pt",
        "rng-rank1.pt",
        ckpt.TRAINER_FILE,
    ]
    state = torch.load(final / ckpt.TRAINER_FILE, weights_only=True)
    assert state["step"] == last and state["world_size"] == 2
    assert state["model"]["encoder.backbone.pos_embed"].dtype == torch.float32


@linux_only
def test_stopped_rank_is_reported_after_the_timeout(shards, tmp_path):
    """SIGSTOP rank 1: rank 0 waits dist.timeout_min (here 0.05 min = 3 s) in its next
    collective, then logs an error that names itself and the timeout; rank 1 logged nothing."""
    run, log_path = tmp_path / "run", tmp_path / "torchrun.log"
    agent = torchrun(run, shards, log_path, **{"dist.timeout_min": 0.05})
    try:
        ranks = wait_for(lambda: len(w := workers(agent.pid)) == 2 and w, 60, "workers", log_path)
        wait_for(lambda: len(logged_steps(run)) >= 2, 120, "two steps", log_path)
        os.kill(ranks[1], signal.SIGSTOP)
        stopped_at = time.monotonic()
        wait_for(lambda: "a collective failed" in log_path.read_text(), 60, "the error", log_path)
        waited = time.monotonic() - stopped_at
        output = log_path.read_text()
        os.kill(ranks[1], signal.SIGKILL)
        agent.wait(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert 2.0 < waited < 30
    (line,) = [x for x in output.splitlines() if "a collective failed" in x]
    assert "[rank 0]" in line and "rank 0 of 2 (host" in line
    assert "dist.timeout_min=0.05" in line and "Timed out" in line
    assert agent.returncode != 0


def test_stop_request_records_the_first_signal():
    previous = signal.getsignal(signal.SIGTERM)
    stop = StopRequest().install()
    try:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.signum == signal.SIGUSR1
        os.kill(os.getpid(), signal.SIGTERM)  # a second one: ignored, and no exit
        assert stop.signum == signal.SIGUSR1
    finally:
        stop.uninstall()
    assert signal.getsignal(signal.SIGTERM) == previous


def test_collective_failure_message():
    gloo = RuntimeError(
        "[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting "
        "1800000ms for recv operation to complete"
    )
    assert is_collective_failure(gloo)
    assert not is_collective_failure(RuntimeError("shape mismatch"))
    assert not is_collective_failure(ValueError("gloo"))
    message = collective_failure_message(gloo, 3, 16, 120, 30.0)
    assert message.startswith("rank 3 of 16 (host ")
    assert "after step 120" in message and "dist.timeout_min=30" in message
    assert "Timed out waiting 1800000ms" in message


def test_fsdp_bf16_keeps_the_inputs_fp32_on_cpu(tmp_path):
    """FSDP2 with bf16 parameters on a CPU (one-rank gloo group in this process): the forward
    runs (the root does not cast the fp32 image and depth, whose antialiased resize has no bf16
    CPU kernel), the blocks compute in bf16, gradients come back fp32 and finite."""
    root_policy, block_policy = fsdp_policies(bf16_params=True)
    assert (root_policy.param_dtype, root_policy.cast_forward_inputs) == (torch.bfloat16, False)
    assert (block_policy.param_dtype, block_policy.cast_forward_inputs) == (torch.bfloat16, True)
    assert root_policy.reduce_dtype == block_policy.reduce_dtype == torch.float32

    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = shard_model(build_preset("tiny"), init_device_mesh("cpu", (1,)), True, (Block,))
        image = torch.rand(2, 3, 48, 64)
        depth = torch.rand(2, 1, 48, 64) * 3 + 0.5
        seen = []
        block = next(m for m in model.modules() if isinstance(m, Block))
        block.register_forward_pre_hook(lambda _, args: seen.append(args[0].dtype))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(image, depth, 12)
        out["depth"].float().mean().backward()
    finally:
        dist.destroy_process_group()
    assert seen == [torch.bfloat16]
    assert torch.isfinite(out["depth"].float()).all()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 for g in grads)
    assert all(torch.isfinite(g.full_tensor()).all() for g in grads)

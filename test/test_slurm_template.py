"""training/slurm/train_multinode.sbatch without Slurm: the script runs as Slurm would run it
(the SLURM_* variables of a job), with ``srun``, ``scontrol`` and ``torchrun`` replaced by
scripts on PATH that record their arguments. ``srun`` runs its task once, here (one node);
``torchrun`` either exits at once or starts a Python worker that waits for SIGUSR1, as the
trainer does.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SBATCH = ROOT / "training" / "slurm" / "train_multinode.sbatch"

STUBS = {
    "srun": """
printf 'srun' >> "$CALLS"; printf ' %q' "$@" >> "$CALLS"; echo >> "$CALLS"
while [[ "$1" == --* ]]; do shift; done   # options; then the task, run once (one node)
exec "$@"
""",
    "scontrol": """
echo "scontrol $*" >> "$CALLS"
if [[ "$1 $2" == "show hostnames" ]]; then printf '%s\\n' $FAKE_NODES; fi
""",
    "torchrun": """
echo "torchrun $*" >> "$CALLS"
echo "OMP_NUM_THREADS=$OMP_NUM_THREADS" >> "$CALLS"
if [[ -n "${FAKE_WORKER:-}" ]]; then
  "$FAKE_PYTHON" "$FAKE_WORKER" "$FAKE_OUT" &
  wait $!
  status=$?
  echo "agent: worker exited $status" >> "$CALLS"
  exit $((status == 0 ? 0 : 1))
fi
exit "${FAKE_TORCHRUN_STATUS:-0}"
""",
}

# A worker as the trainer behaves: SIGUSR1 = stop at the next step boundary, exit 128 + 10.
WORKER = """
import signal, sys, time
from pathlib import Path

out = Path(sys.argv[1])
got = []
signal.signal(signal.SIGUSR1, lambda signum, frame: got.append(signum))
(out / "ready").write_text("")
deadline = time.monotonic() + 60
while not got and time.monotonic() < deadline:
    time.sleep(0.01)
(out / "signals").write_text(str(len(got)))
sys.exit(128 + signal.SIGUSR1 if got else 1)
"""


@pytest.fixture
def job(tmp_path):
    """Environment of a 2-node GPU job (8 GPUs, 96 CPUs per task), stubs first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STUBS.items():
        path = bin_dir / name
        path.write_text("#!/bin/bash\n" + body)
        path.chmod(0o755)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text('export ACTIVATED="${VIRTUAL_ENV_MARK:-}"\n')
    (tmp_path / "worker.py").write_text(WORKER)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "NPROC_", "RDZV_")) and k != "CONFIG"
    }
    env.update(
        {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "CALLS": str(tmp_path / "calls"),
            "FAKE_NODES": "gpu-node07 gpu-node08",
            "FAKE_PYTHON": sys.executable,
            "FAKE_OUT": str(tmp_path),
            "VENV": str(venv),
            "SLURM_SUBMIT_DIR": str(tmp_path),
            "SLURM_JOB_NODELIST": "gpu-node[07-08]",
            "SLURM_NNODES": "2",
            "SLURM_JOB_ID": "4242",
            "SLURM_GPUS_ON_NODE": "8",
            "SLURM_CPUS_PER_TASK": "96",
        }
    )
    return env


def calls(env: dict) -> list[str]:
    path = Path(env["CALLS"])
    return path.read_text().splitlines() if path.is_file() else []


def run_sbatch(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SBATCH), *args], env=env, capture_output=True, text=True, timeout=60
    )


def torchrun_line(env: dict) -> str:
    (line,) = [c for c in calls(env) if c.startswith("torchrun ")]
    return line


def test_header_leaves_site_resources_to_the_command_line():
    header = [
        line.split(None, 1)[1]
        for line in SBATCH.read_text().splitlines()
        if line.startswith("#SBATCH")
    ]
    options = dict(o.lstrip("-").split("=", 1) for o in header if "=" in o)
    for site_specific in ("gpus-per-node", "gres", "cpus-per-task", "mem", "partition", "time"):
        assert site_specific not in options
    assert options["nodes"] == "1" and options["ntasks-per-node"] == "1"
    assert "requeue" in {o.lstrip("-") for o in header if "=" not in o}
    assert options["open-mode"] == "append"  # a requeued job appends to its first log
    when = re.fullmatch(r"B:USR1@(\d+)", options["signal"])
    assert when and int(when.group(1)) >= 300
    # The log directory exists in every clone (sbatch opens it before the script runs) and
    # what lands in it is ignored.
    log_dir = Path(options["output"]).parent
    assert log_dir == Path("logs")
    if shutil.which("git") and (ROOT / ".git").exists():
        tracked = subprocess.run(
            ["git", "ls-files", str(log_dir)], cwd=ROOT, capture_output=True, text=True
        ).stdout.split()
        assert tracked == ["logs/.gitkeep"]
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", "logs/lingbot-depth-4242.out"], cwd=ROOT
        )
        assert ignored.returncode == 0


def test_gpu_job_runs_one_torchrun_per_node(job):
    result = run_sbatch(job, "--set", "data.batch_size=4")
    assert result.returncode == 0, result.stderr
    assert torchrun_line(job) == (
        "torchrun --nnodes 2 --nproc-per-node 8 --rdzv-id 4242 --rdzv-backend c10d "
        "--rdzv-endpoint gpu-node07:19242 -m training.train "
        "--config training/configs/lingbot_vitl14_paper.yaml --resume --set data.batch_size=4"
    )
    assert "OMP_NUM_THREADS=12" in calls(job)  # 96 CPUs / 8 workers
    (srun,) = [c for c in calls(job) if c.startswith("srun ")]
    assert srun.startswith("srun --kill-on-bad-exit=1 --cpu-bind=none bash -c ")
    assert "scontrol show hostnames gpu-node[07-08]" in calls(job)
    assert not [c for c in calls(job) if c.startswith("scontrol requeue")]
    assert "rendezvous gpu-node07:19242" in result.stdout


def test_port_follows_the_job_id_and_failures_pass_through(job):
    """Two jobs on one node get different rendezvous ports; a failed run is not requeued and
    its status is the job's."""
    job.update(SLURM_JOB_ID="4243", FAKE_TORCHRUN_STATUS="3", FAKE_NODES="node1")
    result = run_sbatch(job)
    assert result.returncode == 3
    assert "--rdzv-endpoint node1:19243 " in torchrun_line(job)
    assert not [c for c in calls(job) if c.startswith("scontrol requeue")]
    Path(job["CALLS"]).unlink()
    job.update(RDZV_PORT="29999", FAKE_TORCHRUN_STATUS="0")
    assert run_sbatch(job).returncode == 0
    assert "--rdzv-endpoint node1:29999 " in torchrun_line(job)


@pytest.mark.parametrize(
    ("cpus", "nproc", "expected_nproc", "expected_threads"),
    [("8", "4", 4, 2), ("8", None, 1, 8), (None, "2", 2, 1)],
)
def test_cpu_cluster_mode(job, cpus, nproc, expected_nproc, expected_threads):
    """No GPUs granted: NPROC_PER_NODE CPU processes per node (default 1), the task's CPUs
    (default 1) shared among them; the config must train on the CPU (device auto / cpu)."""
    del job["SLURM_GPUS_ON_NODE"]
    job.pop("SLURM_CPUS_PER_TASK")
    if cpus:
        job["SLURM_CPUS_PER_TASK"] = cpus
    if nproc:
        job["NPROC_PER_NODE"] = nproc
    job["CONFIG"] = "training/configs/lingbot_tiny_cpu.yaml"
    result = run_sbatch(job)
    assert result.returncode == 0, result.stderr
    line = torchrun_line(job)
    assert f" --nproc-per-node {expected_nproc} " in line
    assert "--config training/configs/lingbot_tiny_cpu.yaml --resume" in line
    assert f"OMP_NUM_THREADS={expected_threads}" in calls(job)


@pytest.mark.parametrize(
    ("array", "requeued"), [(None, "4242"), (("4240", "2"), "4240_2")], ids=["job", "array"]
)
def test_usr1_reaches_the_workers_then_the_job_is_requeued(job, tmp_path, array, requeued):
    """Slurm's SIGUSR1 to the batch shell (--signal=B:USR1@...) goes through srun to the
    workers; the agent (torchrun) survives it and reports the workers' exit; after them the
    script requeues the job and ends with 0."""
    job["FAKE_WORKER"] = str(tmp_path / "worker.py")
    if array:
        job.update(SLURM_ARRAY_JOB_ID=array[0], SLURM_ARRAY_TASK_ID=array[1])
    batch = subprocess.Popen(
        ["bash", str(SBATCH)], env=job, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "ready").exists():
            assert batch.poll() is None and time.monotonic() < deadline, batch.communicate()
            time.sleep(0.01)
        batch.send_signal(signal.SIGUSR1)
        out, err = batch.communicate(timeout=30)
    finally:
        if batch.poll() is None:
            batch.kill()
    assert batch.returncode == 0, err
    assert (tmp_path / "signals").read_text() == "1"
    assert f"agent: worker exited {128 + signal.SIGUSR1}" in calls(job)
    assert calls(job)[-1] == f"scontrol requeue {requeued}"
    assert "SIGUSR1: workers checkpoint at their next step boundary" in out
    assert f"requeueing {requeued}" in out


def test_venv_is_activated_unless_none(job, tmp_path):
    job["VIRTUAL_ENV_MARK"] = "yes"
    job["FAKE_TORCHRUN_STATUS"] = "0"
    (tmp_path / "bin" / "torchrun").write_text(
        '#!/bin/bash\necho "ACTIVATED=$ACTIVATED" >> $CALLS\n'
    )
    assert run_sbatch(job).returncode == 0
    assert calls(job)[-1] == "ACTIVATED=yes"
    job["VENV"] = "none"
    assert run_sbatch(job).returncode == 0
    assert calls(job)[-1] == "ACTIVATED="

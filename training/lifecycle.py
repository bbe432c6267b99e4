"""How a training process ends on a cluster: stop signals, orphaned workers, stuck collectives.

**Stop signals.** ``SIGTERM`` (Slurm's time limit or ``scancel``, torchrun shutting its workers
down, ``kill``) and ``SIGUSR1`` (what ``training/slurm/train_multinode.sbatch`` asks Slurm for
ahead of the time limit) do not kill the trainer: :class:`StopRequest` records the signal and
the trainer, at its next step boundary, agrees with the other ranks (one all-reduce of a flag
per step, so a signal that reached a single rank stops all of them at the same step), writes a
checkpoint on every rank and returns; ``python -m training.train`` then exits with status
128 + the signal number (143 for SIGTERM, 138 for SIGUSR1) and ``--resume`` continues
exactly. A process is stopped this way only at a step boundary: a step (and the checkpoint)
must fit in the time between the signal and ``SIGKILL`` (Slurm: ``--signal`` lead time, or
``KillWait`` after SIGTERM; torchrun: 30 s after it forwards SIGTERM).

**Orphans.** torchrun starts every worker in its own session, so a worker survives its agent
(``kill -9`` of torchrun, an agent that crashed): :func:`watch_parent` runs a thread that
notices the parent process is gone, asks for a stop (SIGTERM to itself: checkpoint at the next
step boundary, as above) and ends the process with ``os._exit`` if it is still running
``grace_s`` later (a worker blocked in a collective whose peers are gone). A parent-pid check
rather than ``prctl(PR_SET_PDEATHSIG)``: the latter fires when the *thread* that started the
child exits, which would stop healthy workers of a launcher that spawns from a helper thread.

**Stuck collectives.** A rank that stops (a hung process, SIGSTOP, a dead node) blocks the
others in their next collective for ``dist.timeout_min`` minutes; then gloo raises (and NCCL's
watchdog aborts the process with ``[Rank N] Watchdog caught collective operation timeout``).
:func:`collective_failure_message` is what the trainer logs for such an exception: this
rank, the step, the exception and the timeout, so a log shows which ranks waited in vain;
the rank that stopped is the one that did not report.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable

import torch.distributed as dist

log = logging.getLogger("training.lifecycle")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopRequest:
    """The first stop signal this process received (``signum``; None while there is none)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def install(self, signals: Iterable[int] = STOP_SIGNALS) -> StopRequest:
        """Handle ``signals`` from now on (main thread only, as Python requires)."""
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        self.request(signum)

    def request(self, signum: int) -> None:
        """Record a stop request (the first one wins; repeats are ignored: Slurm and torchrun
        may both deliver the same signal)."""
        if self.signum is None:
            self.signum = int(signum)

    @property
    def requested(self) -> bool:
        return self.signum is not None


def watch_parent(
    grace_s: float,
    on_orphaned: Callable[[], None] | None = None,
    poll_s: float = 0.5,
    exit_status: int = 128 + signal.SIGTERM,
) -> threading.Thread:
    """Start a daemon thread that reacts when this process's parent dies (it is re-parented:
    ``os.getppid()`` changes): ``on_orphaned()`` (default: SIGTERM to this process, a stop
    request), then ``os._exit(exit_status)`` if the process still runs ``grace_s`` later."""
    parent = os.getppid()

    def request_stop() -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    def run() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        log.error(
            "parent process %d (the torchrun agent) is gone: stopping at the next step "
            "boundary, exiting in %.0f s at the latest",
            parent,
            grace_s,
        )
        (on_orphaned or request_stop)()
        time.sleep(grace_s)
        log.error("orphaned worker still running %.0f s after its agent died: exiting", grace_s)
        logging.shutdown()
        os._exit(exit_status)

    thread = threading.Thread(target=run, name="parent-watchdog", daemon=True)
    thread.start()
    return thread


def launched_by_torchrun() -> bool:
    """True in a worker that torchrun (torch.distributed.elastic) started."""
    return "TORCHELASTIC_RUN_ID" in os.environ


# Message fragments of gloo / NCCL / c10d failures of a collective (a timeout or a lost peer).
_COLLECTIVE_MARKERS = (
    "gloo",
    "nccl",
    "timed out",
    "timeout",
    "connection closed by peer",
    "connection reset by peer",
    "broken pipe",
)


def is_collective_failure(exc: BaseException) -> bool:
    """A failed collective: torch.distributed's own error types, or the RuntimeError gloo
    raises when a peer does not answer within the timeout or has gone away."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        return any(marker in text for marker in _COLLECTIVE_MARKERS)
    return False


def collective_failure_message(
    exc: BaseException, rank: int, world_size: int, step: int, timeout_min: float
) -> str:
    """What a rank logs when a collective fails: who it is, where (``step``: the last step it
    completed), and what it means."""
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return (
        f"rank {rank} of {world_size} (host {socket.gethostname()}, pid {os.getpid()}): a "
        f"collective failed after step {step} ({type(exc).__name__}: {first_line}). With "
        f"dist.timeout_min={timeout_min:g}, a rank that stops (a hung or stopped process, a "
        f"dead node) blocks the others for {timeout_min:g} min before this error; the "
        "rank(s) that did not log this message are the ones that stopped."
    )

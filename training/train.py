"""Train a depth model: one entry point for every config, one CPU process to many GPUs.

Usage::

    # one process (a laptop CPU, or one GPU)
    python -m training.train --config training/configs/lingbot_tiny_cpu.yaml

    # one node, 8 GPUs (DDP, or FSDP when the config says dist.strategy: fsdp)
    torchrun --nproc-per-node 8 -m training.train --config training/configs/lingbot_small.yaml

    # many nodes: training/slurm/train_multinode.sbatch

    # options
    --set key=value    override a config value (repeatable): --set optim.lr=3e-4
    --resume [PATH]    continue from PATH (a checkpoint or run dir); bare: the run dir's
                       latest checkpoint if there is one, else start fresh
    --max-steps N      stop at iteration N of the schedule (checkpoint + export), to run a
                       long schedule in chunks
    --run-dir DIR      where checkpoints, logs and exports go (default: the config's run_dir)
    --print-config     show the resolved config and exit

Outputs under the run dir: ``checkpoints/`` (resumable), ``export/`` and ``best/`` (models for
``load_model`` / the ROS node / ``depth-perception eval-bag --checkpoint``), ``tb/``
(TensorBoard), ``metrics.jsonl`` and the resolved ``config.yaml``.

Signals: SIGTERM or SIGUSR1 stops every rank at the next step boundary after a checkpoint;
the exit status is then 128 + the signal number (143, 138) and ``--resume`` continues
exactly. Exit status 0: the run reached its last iteration (or ``--max-steps``) and exported.
Under torchrun a worker whose agent died stops the same way (``training.lifecycle``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from training.config import dump_config, load_config
from training.distributed import cleanup, init_distributed
from training.lifecycle import StopRequest, launched_by_torchrun, watch_parent
from training.trainer import Trainer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="YAML file (training/configs/*.yaml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set data.batch_size=4 (repeatable)",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="PATH",
        help="checkpoint or run dir to continue from (bare: latest of the run dir, if any)",
    )
    parser.add_argument("--max-steps", type=int, default=None, help="stop at this iteration")
    parser.add_argument("--run-dir", default=None, help="override run_dir")
    parser.add_argument("--print-config", action="store_true", help="print it and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if args.run_dir:
        cfg.run_dir = args.run_dir
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    # From here on a stop signal means "checkpoint at the next step boundary", not "die".
    stop = StopRequest().install()
    if launched_by_torchrun():
        watch_parent(grace_s=60 * cfg.dist.timeout_min)
    info = init_distributed(cfg.device, cfg.dist.backend, cfg.dist.timeout_min)
    logging.basicConfig(
        level=logging.INFO if info.is_main else logging.WARNING,
        format=f"%(asctime)s [rank {info.rank}] %(name)s: %(message)s",
    )
    trainer = None
    try:
        trainer = Trainer(cfg, info, stop=stop)
        if args.resume:
            trainer.resume(args.resume)
        trainer.fit(max_steps=args.max_steps)
    finally:
        if trainer is not None:
            trainer.close()
        cleanup()
    return 0 if trainer.stopped_by is None else 128 + trainer.stopped_by


if __name__ == "__main__":
    sys.exit(main())

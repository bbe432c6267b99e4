"""Synthetic training / held-out bags for the default model (no dataset can be downloaded here).

  python -m training.make_synthetic --out data/synthetic --train 24 --val 4 --frames 30

Writes ``train/<kind>_<seed>`` and ``val/<kind>_<seed>`` rosbag2 directories (sqlite3) with the
same topics a robot records (see ``depth-perception make-bag``); validation seeds never overlap
training seeds, so held-out scenes are new scenes, not new views of seen ones. Bags that already
exist are kept, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from depth_perception.io.bag import write_sim_bag
from depth_perception.sim.sequence import SequenceConfig

KINDS = ("tabletop", "room")  # indoor RGB-D: what consumer depth cameras on arms see
VAL_SEED_OFFSET = 100_000


def plan(n_train: int, n_val: int) -> list[tuple[str, str, int]]:
    """(split, kind, seed) for every bag; kinds alternate, seeds are unique per split."""
    jobs = [("train", KINDS[i % len(KINDS)], i) for i in range(n_train)]
    jobs += [("val", KINDS[i % len(KINDS)], VAL_SEED_OFFSET + i) for i in range(n_val)]
    return jobs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/synthetic"))
    parser.add_argument("--train", type=int, default=24)
    parser.add_argument("--val", type=int, default=4)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=192)
    args = parser.parse_args(argv)

    for split, kind, seed in tqdm(plan(args.train, args.val), desc="bags", unit="bag"):
        path = args.out / split / f"{kind}_{seed}"
        if (path / "metadata.yaml").is_file():
            continue
        cfg = SequenceConfig(
            scene_kind=kind,
            seed=seed,
            n_frames=args.frames,
            fps=10.0,
            width=args.width,
            height=args.height,
            lidar=True,
            radar=False,
        )
        write_sim_bag(path, cfg, progress=False)


if __name__ == "__main__":
    main()

"""What a training method plugs into the one loop (:class:`training.trainer.Trainer`).

The trainer owns everything that does not depend on the method: processes and devices,
DDP / FSDP wrapping, the optimizer and the learning-rate schedule, the data order over ranks
and workers, the stop signals, checkpoints, resume, logging, validation bookkeeping and the
export's atomic write. A :class:`Task` says what is the method's own:

- the network: :meth:`Task.build_model` (initial weights), :meth:`Task.frozen`,
  :attr:`Task.shard_modules` (FSDP units), :meth:`Task.model_config`, and
  :meth:`Task.save_export` (the format the method's engine and node load);
- the parameter groups: :meth:`Task.parameter_groups` (name -> parameters; their learning
  rates and warm-ups come from ``optim``);
- the data: :meth:`Task.dataset_options` (what each sample must carry) and
  :meth:`Task.sample_transform` (per-sample work in the DataLoader workers);
- a step: :meth:`Task.loss` (forward, loss normalised over the *global* batch, logged terms);
- validation: :meth:`Task.predict_batch` (the model as inference runs it on a validation
  batch; the trainer scores it against the batch's target), or :meth:`Task.validate` for a
  method without a dense output (its own metrics).

Randomness is keyed, never streamed: a draw for a sample comes from
``sample_seed(seed, epoch, key, stream)``, so it is the same on every rank and in every
process layout, and a resume needs no generator state of its own.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from training.config import TrainConfig
from training.optim import assign_groups

if TYPE_CHECKING:
    from training.trainer import Trainer

# Independent random streams derived from (seed, ...): one number per purpose. The first five
# are the trainer's and LingBot's (their values fix the draws of existing runs).
STREAM_CORRUPT, STREAM_MASK, STREAM_TOKENS, STREAM_PROCESS, STREAM_VAL = range(5)
STREAM_PROMPT, STREAM_VAL_PROMPT, STREAM_FORWARD = 5, 6, 7


def step_seed(seed: int, step: int, stream: int) -> int:
    """A seed for the draws of one iteration (the same on every rank)."""
    return int(np.random.SeedSequence([seed, step, stream]).generate_state(1, np.uint64)[0] >> 1)


def sample_seed(seed: int, epoch: int, key: str, stream: int) -> np.random.SeedSequence:
    """Seed of one sample's draws in one epoch (same on every rank, whatever the partition)."""
    return np.random.SeedSequence([seed, epoch, zlib.crc32(key.encode()), stream])


def torch_generator(seq: np.random.SeedSequence) -> torch.Generator:
    return torch.Generator().manual_seed(int(seq.generate_state(1, np.uint64)[0] >> np.uint64(1)))


class Task(ABC):
    """A training method. Subclasses set :attr:`name` and implement the abstract methods."""

    name: ClassVar[str] = ""
    #: Module classes FSDP shards as units (the root takes the rest).
    shard_modules: ClassVar[tuple[type[nn.Module], ...]] = ()

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    # --- the network -----------------------------------------------------------------------

    @abstractmethod
    def build_model(self) -> nn.Module:
        """The initial network (the trainer seeds torch identically on every rank first)."""

    def frozen(self, model: nn.Module) -> list[str]:
        """fnmatch patterns of parameters kept fixed (``model.freeze`` plus the task's own)."""
        return list(self.cfg.model.freeze)

    def setup(self, model: nn.Module) -> None:
        """Called with the built, unwrapped model before it is wrapped (read sizes etc.)."""
        return None  # an optional hook: nothing to do by default

    def model_config(self, model: nn.Module) -> dict:
        """The JSON-able config that rebuilds the network (stored in checkpoints)."""
        return model.model_config

    @abstractmethod
    def build_from_config(self, model_config: dict) -> nn.Module:
        """An empty network of ``model_config`` (for the export)."""

    @abstractmethod
    def save_export(self, model: nn.Module, directory: Path) -> None:
        """Write ``model`` into ``directory`` in the format the method's engine loads."""

    # --- optimisation ----------------------------------------------------------------------

    def parameter_groups(self, model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Group name -> (name, parameter); default: ``optim.groups``' fnmatch patterns."""
        return assign_groups(model.named_parameters(), self.cfg.optim)

    # --- data ------------------------------------------------------------------------------

    def dataset_options(self, train: bool) -> dict[str, Any]:
        """Extra :class:`training.dataset.ShardDataset` arguments (``lidar``, ``radar``,
        ``prior``): what the task needs each sample to carry."""
        return {}

    def sample_transform(self, train: bool) -> Callable[[dict], dict] | None:
        """Per-sample work after augmentation and resizing, in the DataLoader workers
        (:class:`training.dataset.Collate`'s ``transform``); None: nothing."""
        return None

    # --- a step and validation -------------------------------------------------------------

    @abstractmethod
    def loss(self, trainer: Trainer, batch: dict) -> tuple[torch.Tensor, dict[str, float], dict]:
        """Forward this rank's part of the global batch (``trainer.net``, under
        ``trainer.autocast()``) and return (the loss to back-propagate, normalised over the
        *global* batch and multiplied by the world size so that DDP's gradient averaging gives
        the single-process gradient; the logged scalars, at least ``loss``; the image view:
        ``image``, ``depth`` (input), ``pred``, ``target``)."""

    @abstractmethod
    def predict_batch(self, trainer: Trainer, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(dense depth (B, H, W) float32 in metres as inference computes it, the input depth
        shown in the image log (B, 1, H, W)) for a validation batch."""

    def validate(self, trainer: Trainer, batches: Iterable[dict]) -> dict[str, float] | None:
        """A task's own validation over ``batches`` (this rank's validation batches, as many on
        every rank): the metrics, reduced over all ranks; ``val.metric`` must be one of them.
        None (the default, ``batches`` untouched): the trainer scores
        :meth:`predict_batch`'s dense depth. For methods without a dense output (DepthLM)."""
        return None

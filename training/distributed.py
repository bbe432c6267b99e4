"""torch.distributed plumbing: process group from torchrun's environment, DDP / FSDP wrapping.

A plain ``python -m training.train`` (no ``WORLD_SIZE`` in the environment, or 1) runs as a
single process without a process group; under ``torchrun`` every worker joins one with NCCL on
CUDA and gloo on CPU. Helpers such as :func:`all_reduce_sum` and :func:`barrier` are no-ops
in the single-process case so the trainer has one code path.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger("training.distributed")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _cuda_setup() -> str:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return (
        f"torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none (CPU-only)'}, "
        f"CUDA_VISIBLE_DEVICES={visible if visible is not None else '(unset)'}"
    )


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``cuda``: this process's GPU (``LOCAL_RANK``), an error when there is none, so a broken
    CUDA setup fails loudly (the GPU configs say ``device: cuda``); ``auto``: the GPU when CUDA
    works, else the CPU (logged); ``cpu``: the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            log.info("device auto: no usable CUDA device (%s), training on the CPU", _cuda_setup())
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device: cuda, but CUDA is not available ({_cuda_setup()}): fix the driver / "
                "torch build / GPU allocation, or train on the CPU on purpose with "
                "--set device=cpu"
            )
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise RuntimeError(
                f"LOCAL_RANK {local_rank} but only {count} GPU(s) visible ({_cuda_setup()}): "
                "start at most one process per GPU (torchrun --nproc-per-node, "
                "NPROC_PER_NODE in the sbatch)"
            )
        return torch.device("cuda", local_rank)
    return torch.device(device)


def init_distributed(
    device: str = "auto", backend: str | None = None, timeout_min: float = 30.0
) -> DistInfo:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
        dist.init_process_group(
            backend=backend,
            timeout=datetime.timedelta(minutes=timeout_min),
            device_id=dev if dev.type == "cuda" else None,
        )
        log.info("rank %d/%d joined (%s, %s)", rank, world_size, backend, dev)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        if info.device.type == "cuda":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum over ranks, in place; returns the tensor."""
    if info.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def all_gather_objects(obj: object, info: DistInfo) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not info.distributed:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def fsdp_policies(bf16_params: bool) -> tuple[object, object]:
    """(root policy, block policy) of FSDP2's mixed precision.

    With ``bf16_params`` parameters are all-gathered and used in bf16, gradients reduced in
    fp32. Only the ViT blocks cast their inputs to bf16: the root keeps the model's inputs as
    they come (fp32 image and metric depth), because its first op, the antialiased bilinear
    resize of the image, has no bf16 kernel on the CPU (and depth in bf16 would lose
    centimetres at a few metres); autocast runs the root's convolutions and linears in bf16.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if not bf16_params:
        return MixedPrecisionPolicy(), MixedPrecisionPolicy()
    root = MixedPrecisionPolicy(
        param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=False
    )
    block = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return root, block


def wrap_model(
    model: nn.Module,
    info: DistInfo,
    strategy: str = "ddp",
    bf16_params: bool = False,
    shard_modules: tuple[type[nn.Module], ...] = (),
    find_unused_parameters: bool = False,
) -> nn.Module:
    """The module the training step calls: ``model`` itself in a single process, a
    ``DistributedDataParallel`` around it, or ``model`` sharded in place with FSDP2.

    FSDP: every instance of ``shard_modules`` (the ViT blocks) becomes its own FSDP unit, the
    root takes the rest; parameters are resharded after the forward pass (``FULL_SHARD``);
    with ``bf16_params`` they are all-gathered and computed in bf16 while gradients are
    reduced in fp32 (:func:`fsdp_policies`; the caller runs the forward under bf16 autocast).
    """
    if not info.distributed:
        if strategy == "fsdp":
            log.warning("fsdp needs several processes (torchrun); training unsharded")
        return model
    if strategy == "ddp":
        device_ids = [info.device.index] if info.device.type == "cuda" else None
        # The model's buffers (ImageNet mean / std) never change: no per-step sync.
        return nn.parallel.DistributedDataParallel(
            model,
            device_ids=device_ids,
            forward_sync_buffers=False,
            find_unused_parameters=find_unused_parameters,
            gradient_as_bucket_view=True,
        )
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(info.device.type, (info.world_size,))
        return shard_model(model, mesh, bf16_params, shard_modules)
    raise ValueError(f"unknown strategy {strategy!r} (ddp | fsdp)")


def shard_model(
    model: nn.Module,
    mesh,
    bf16_params: bool = False,
    shard_modules: tuple[type[nn.Module], ...] = (),
) -> nn.Module:
    """FSDP2 in place: one unit per ``shard_modules`` instance, the root for the rest,
    FULL_SHARD, the mixed-precision policies of :func:`fsdp_policies`."""
    from torch.distributed.fsdp import fully_shard

    root_policy, block_policy = fsdp_policies(bf16_params)
    units = [m for m in model.modules() if shard_modules and isinstance(m, shard_modules)]
    for unit in units:
        fully_shard(unit, mesh=mesh, mp_policy=block_policy, reshard_after_forward=True)
    fully_shard(model, mesh=mesh, mp_policy=root_policy, reshard_after_forward=True)
    log.info("FSDP: %d block units + root, bf16 params: %s", len(units), bf16_params)
    return model


def unwrap(module: nn.Module) -> nn.Module:
    """The user module inside a DDP wrapper (FSDP2 shards in place: nothing to unwrap)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module

"""DistributedDataParallel plumbing for torchrun: process group set-up, barriers and metric reduction.

A process started by torchrun finds RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in its
environment. Without them every helper here is a no-op for a single process.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Position of this process in the training job; the defaults describe a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False   # True when init_distributed() created the process group and must destroy it
    local_world_size: int = 1  # processes of the job on this machine, which share its CPU cores

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"Environment variable {name}={raw!r} must be an integer (set by torchrun).") from None


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group described by torchrun's environment variables, if there is one.

    Uses NCCL for CUDA devices and gloo otherwise. A process group that already exists (created by the caller)
    is used as it is and left to the caller to destroy.
    """
    if dist.is_available() and dist.is_initialized():
        world_size = dist.get_world_size()
        return DistContext(dist.get_rank(), world_size, _env_int("LOCAL_RANK", 0), owns_group=False,
                           local_world_size=_env_int("LOCAL_WORLD_SIZE", world_size))

    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return DistContext()

    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed support.")

    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)

    dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    logger.info("Joined %s process group as rank %d of %d", backend, rank, world_size)
    return DistContext(rank, world_size, local_rank, owns_group=True,
                       local_world_size=_env_int("LOCAL_WORLD_SIZE", world_size))


def shutdown(context: DistContext) -> None:
    """Destroy the process group if init_distributed() created it."""
    if context.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistContext) -> None:
    """Wait until every process reaches this point."""
    if context.enabled:
        dist.barrier()


def all_reduce_sum(context: DistContext, values: torch.Tensor) -> torch.Tensor:
    """Return the element-wise sum of `values` over all processes (the tensor itself for one process)."""
    if context.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def any_process(context: DistContext, flag: bool, device: torch.device) -> bool:
    """Return True on every process when `flag` is True on at least one of them."""
    if not context.enabled:
        return flag

    value = torch.tensor([1 if flag else 0], device=device, dtype=torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def broadcast_from_main(context: DistContext, value: Any) -> Any:
    """Return rank 0's `value` on every process (any picklable object)."""
    if not context.enabled:
        return value

    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]

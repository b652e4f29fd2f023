"""torch.distributed plumbing: joining torchrun's process group and gathering across ranks.

Everything degrades to a single process when ``WORLD_SIZE`` is unset, so the same code trains on
a laptop, one GPU, or ``torchrun --nproc_per_node N`` (gloo on CPUs, NCCL on GPUs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def init_distributed(device_name: str) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not is_distributed():
        use_cuda = torch.cuda.is_available() and device_name != "cpu"
        if use_cuda:
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return info


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """A seed of its own for every (seed, rank, step): distinct ranks get unrelated streams."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def seed_rank(seed: int, rank: int, step: int = 0) -> int:
    """Seed the global torch RNG (CPU and CUDA) for this rank's own draws and return the seed.

    Call it after building the model (which must be the same on every rank): the diffusion noise and
    timesteps and the key-group shuffle then differ between ranks, instead of repeating rank 0's
    draws on every rank, which would make N processes see the same noise N times.
    """
    value = rank_seed(seed, rank, step)
    torch.manual_seed(value)
    return value


def leave_process_group() -> None:
    if is_distributed():
        dist.destroy_process_group()


@torch.no_grad()
def concat_all_gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0 (identity without torch.distributed)."""
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is True on any (so all ranks stop at the same step)."""
    if not is_distributed():
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier() -> None:
    if is_distributed():
        dist.barrier()

"""The collectives that loss terms and heads use to own their distributed reduction; each is the
identity without a process group (one process), so single-process code needs no branch."""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """``t`` concatenated over the default process group, in rank order; ``t`` without one.

    Every process must pass the same shape (use loaders that drop the last incomplete batch).
    """
    if world_size() == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def mean_over_processes(values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over the processes (one float64 all-reduce for the whole dict)."""
    if world_size() == 1 or not values:
        return dict(values)
    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(values, (t / dist.get_world_size()).tolist()))

"""Where a training process runs: rank, world size, device, and the autocast type of ``run.amp``."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError, Unavailable

AMP_TYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}


@dataclass
class TrainProcess:
    """This training process: its rank among ``world_size`` (torchrun) and its device. Not
    ``cfcd.Runtime``, which says how descriptors are extracted (device, workers, progress)."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def gather_objects(self, obj) -> list:
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def autocast_dtype(self, amp: str) -> torch.dtype | None:
        """``run.amp`` (bf16 | fp16 | off) on this device: None (float32) on CPU or when off."""
        key = amp.lower()
        if key not in AMP_TYPES:
            raise ConfigError(f"run.amp must be bf16, fp16 or off, got {amp!r}")
        return AMP_TYPES[key] if self.device.type == "cuda" else None

    def autocast(self, dtype: torch.dtype | None):
        return torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def init_runtime(device: str = "auto") -> TrainProcess:
    """Join the ``torchrun`` process group if there is one (NCCL on GPUs, gloo on CPU)."""
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise Unavailable("run.device = cuda but no CUDA device is available; use run.device=cpu")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return TrainProcess(rank, world, torch.device("cuda", local_rank) if use_cuda else torch.device("cpu"))

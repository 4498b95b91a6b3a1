"""torch.distributed helpers for torchrun launches (gloo on CPU, nccl on GPU), the only
module of ours that talks to `torch.distributed`.

A process started by torchrun has RANK / WORLD_SIZE / LOCAL_RANK in its environment;
`init_from_env` joins the process group then. Without them it is a single process
(rank 0 of 1) and nothing is initialised, so every caller can use the same code path:
super-network training (`search.train`: `all_reduce_sum`, `barrier`) and MCD (rank 0
generates candidates and `broadcast`s them, every rank scores its share and
`all_gather_objects` collects the scores, rank 0 writes the files).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None: single process, no process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_from_env(device: str | None = None) -> DistInfo:
    """Join the torchrun process group if launched by torchrun; pick the device.

    `device` None: ``cuda:<local_rank>`` when CUDA is available, else CPU. Backend: nccl on
    CUDA, gloo on CPU. Safe to call twice (reuses an initialised group).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = None
    if world > 1:
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local, dev, backend)


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def broadcast(obj, src: int = 0):
    """`obj` (picklable) of rank `src` on every rank; `obj` itself when not distributed."""
    if world_size() == 1:
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj) -> list:
    """Every rank's `obj` (picklable, small), in rank order; [obj] when not distributed."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of `values` over ranks (metrics)."""
    if world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

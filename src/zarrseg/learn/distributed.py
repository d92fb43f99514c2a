"""Multi-GPU training with DistributedDataParallel: one process per device, for any method.

``zarrseg train`` spawns the processes itself (``torch.multiprocessing.spawn``) when several CUDA
devices are visible and ``loop.multi_gpu`` is true; a ``torchrun --nproc-per-node N -m zarrseg
train ...`` launch works too (the loop reads RANK / WORLD_SIZE / LOCAL_RANK). Each rank draws
its own batches, DDP averages the gradients, rank 0 evaluates (the scores are broadcast, so
every rank takes the same schedule / early-stopping decisions) and writes the checkpoints.
The same code runs on CPU with the ``gloo`` backend, which is how it is tested.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def join_group(rank: int, world: int, backend: str, port: int) -> None:
    """Make this spawned process rank ``rank`` of a local process group."""
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
        }
    )
    torch.distributed.init_process_group(backend, rank=rank, world_size=world)


def launch(
    method: str,
    params: Any,
    out_dir: str | Path,
    world: int,
    *,
    resume: bool | str = False,
    backend: str = "nccl",
    worker: Callable,
) -> None:
    """Train on ``world`` processes (rank r on ``cuda:r`` with nccl, on the CPU with gloo).

    ``worker(rank, world, method, params, out_dir, resume, backend, port)`` is the body of each
    rank (``learn.loop.run_worker``).
    """
    torch.multiprocessing.spawn(
        worker,
        args=(world, method, params, str(out_dir), resume, backend, free_port()),
        nprocs=world,
        join=True,
    )

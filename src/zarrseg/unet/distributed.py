"""Multi-GPU training with DistributedDataParallel: one process per device.

``zarrseg train`` spawns the processes itself (``torch.multiprocessing.spawn``) when several CUDA
devices are visible and ``train.multi_gpu`` is true; a ``torchrun --nproc-per-node N -m zarrseg
train ...`` launch works too (the trainer reads RANK / WORLD_SIZE / LOCAL_RANK). Each rank draws
its own batches of the one seeded patch stream, DDP averages the gradients, rank 0 validates
(the scores are broadcast, so every rank takes the same LR / early-stopping decisions) and writes
the checkpoints. The same code runs on CPU with the ``gloo`` backend, which is how it is tested.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import torch

from .train_params import TrainParams


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def run_worker(
    rank: int, world: int, params: TrainParams, out_dir: str, resume: bool, backend: str, port: int
):
    """Body of one spawned rank: join the process group, train, leave. Returns the ``Trainer``."""
    from .trainer import Trainer

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
    try:
        trainer = Trainer(params, out_dir, resume)
        trainer.run()
        return trainer
    finally:
        torch.distributed.destroy_process_group()


def launch(
    params: TrainParams,
    out_dir: str | Path,
    world: int,
    *,
    resume: bool = False,
    backend: str = "nccl",
    worker: Callable = run_worker,
) -> None:
    """Train on ``world`` processes (rank r on ``cuda:r`` with nccl, on the CPU with gloo)."""
    torch.multiprocessing.spawn(
        worker, args=(world, params, str(out_dir), resume, backend, free_port()), nprocs=world, join=True
    )

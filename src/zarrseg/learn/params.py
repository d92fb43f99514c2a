"""The loop section every method's parameters embed (``<section>.loop``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError


@dataclass
class LoopParams:
    """How long and where a method trains, shared by every learning method."""

    steps: int = 10000  # optimizer steps (upper bound: budgets, early stopping); 0: publish the initial weights
    eval_every: int = 200  # steps between evaluations (methods without evaluation: no effect)
    checkpoint_every: int = 200  # steps between writes of last.pt (resume point)
    early_stopping: int = 0  # evaluations without improvement before stopping (0: never)
    max_minutes: float | None = None  # wall-clock budget over all resumed runs: stop (and save) when exceeded
    max_cpu_minutes: float | None = None  # CPU-time budget of the training process (all its threads)
    threads: int = 0  # torch CPU threads (0: torch's default)
    seed: int = 0  # every step's randomness is a function of (seed, step): resumed runs continue exactly
    device: str = "auto"  # auto: cuda when available, else cpu; or cpu, cuda, cuda:1
    amp: bool = True  # automatic mixed precision: CUDA always; CPU only with amp_dtype bfloat16
    amp_dtype: Literal["float16", "bfloat16"] = "float16"  # float16 uses a GradScaler; bfloat16 needs none
    multi_gpu: bool = True  # several visible CUDA devices: one DDP process per device
    tensorboard: bool = True  # also log to MODEL_DIR/tensorboard when tensorboard is installed
    log_every: int = 1  # steps between rows of history.csv

    def validate(self) -> None:
        if self.steps < 0:
            raise ConfigError(f"loop.steps must be >= 0, got {self.steps}")
        for name in ("eval_every", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"loop.{name} must be >= 1, got {getattr(self, name)}")
        if self.early_stopping < 0 or self.threads < 0 or self.seed < 0:
            raise ConfigError("loop.early_stopping, loop.threads and loop.seed must be >= 0")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"loop.device must be auto, cpu or cuda[:N], got {self.device!r}")


# Keys every method had before the loop section existed (renamed for one release).
COMMON_RENAMES = {
    "max_minutes": "loop.max_minutes",
    "max_cpu_minutes": "loop.max_cpu_minutes",
    "seed": "loop.seed",
    "device": "loop.device",
    "amp": "loop.amp",
}

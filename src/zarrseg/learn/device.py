"""Device selection and the per-step seeding that makes resumed training continue exactly."""

from __future__ import annotations

import random

import numpy as np
import torch

from ..errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; an unavailable cuda is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def step_seed(seed: int, step: int, rank: int = 0, salt: int = 0) -> int:
    """A 63-bit seed that depends on (seed, step, rank, salt) only."""
    return int(np.random.SeedSequence([seed, step, rank, salt]).generate_state(2, np.uint64)[0] >> 1)


def seed_step(seed: int, step: int, rank: int = 0, salt: int = 0) -> None:
    """Seed torch, numpy and random for one step: its randomness no longer depends on history."""
    s = step_seed(seed, step, rank, salt)
    torch.manual_seed(s)
    np.random.seed(s % (1 << 32))
    random.seed(s)


def rng_state() -> dict:
    """Every global RNG state (saved in last.pt; restored on resume for what happens between steps)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        # plain types only: checkpoints load with torch.load(weights_only=True)
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if "python" in state:
        random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value

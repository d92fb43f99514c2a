"""A real kill and resume of 'zarrseg train' for any learning method (imported by the method tests)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from zarrseg.learn.checkpoint import read


def _train(method: str, params: dict, out: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "zarrseg", "train", "-v", "--method", method, "-o", str(out), "--params", json.dumps(params)]
    return subprocess.run(
        [*cmd, *extra],
        env={**os.environ, "ZARRSEG_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def weights(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Every trained module of last.pt plus the inference weights of best.pt."""
    last, best = read(path / "last.pt"), read(path / "best.pt")
    return {**{f"last.{k}": v for k, v in last["loop"]["modules"].items()}, "best": best["state_dict"]}


def kill_and_resume(method: str, params: dict, tmp_path: Path, kill_after: int) -> tuple[dict, dict]:
    """Train uninterrupted; train again, SIGKILLed right after step ``kill_after``, then ``--resume``.

    Returns the weights of both runs (``weights``). The killed run must leave ``last.pt`` and
    nothing that looks finished (no ``best.pt``).
    """
    full = _train(method, params, tmp_path / "full")
    assert full.returncode == 0, full.stderr[-3000:]
    killed = _train(method, params, tmp_path / "killed", env={"ZARRSEG_KILL_AFTER_STEP": str(kill_after)})
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-3000:])
    assert (tmp_path / "killed" / "last.pt").exists() and not (tmp_path / "killed" / "best.pt").exists()
    resumed = _train(method, params, tmp_path / "killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr
    return weights(tmp_path / "full"), weights(tmp_path / "killed")


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for module in a:
        assert a[module].keys() == b[module].keys(), module
        for key in a[module]:
            assert torch.equal(a[module][key], b[module][key]), f"{module}.{key} differs after resume"

"""Shared fixtures: where the read-only shared data lives, and small synthetic volumes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ZARRSEG_SHARED_DATA", REPO.parent / "shared" / "data"))

os.environ.setdefault("ZARRSEG_NO_PROGRESS", "1")


def shared_path(*parts: str) -> Path:
    """Path below ../shared/data, or skip the test with the reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path} (set ZARRSEG_SHARED_DATA or clone with ../shared)")
    return path


@pytest.fixture
def shared_data() -> Path:
    return shared_path()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)

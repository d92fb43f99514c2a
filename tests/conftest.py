"""Shared fixtures: where the read-only shared data lives, and small synthetic volumes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from zarrseg import ome

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


def write_image(path, data: np.ndarray, axes: str | None = None, chunks=None, is_label: bool = False) -> str:
    """``data`` as a one-level OME-Zarr test image (unit scale; axes default to the last ndim of zyx)."""
    axes = axes or "zyx"[-data.ndim :]
    arr = ome.create_image(
        path,
        shape=data.shape,
        dtype=data.dtype,
        axes=axes,
        scale=[1.0] * data.ndim,
        chunks=chunks or [16] * data.ndim,
        is_label=is_label,
    )
    arr[...] = data
    return str(path)


def voronoi_cells(rng: np.random.Generator, shape: tuple[int, ...], n: int) -> np.ndarray:
    """Instance labels 1..n: the Voronoi cells of ``n`` random points (a dense synthetic tissue)."""
    pts = np.stack([rng.integers(0, s, size=n) for s in shape], axis=1)
    grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    d = sum((g[..., None] - pts[:, i]) ** 2 for i, g in enumerate(grids))
    return (np.argmin(d, -1) + 1).astype(np.uint32)

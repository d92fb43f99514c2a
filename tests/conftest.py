"""Shared fixtures: where the read-only shared data lives, and small synthetic volumes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from zarrseg import ome
from zarrseg.params import deep_update

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


def write_image(
    path,
    data: np.ndarray,
    axes: str | None = None,
    chunks=None,
    is_label: bool = False,
    scale=None,
    n_levels: int = 1,
    translation=None,
) -> str:
    """``data`` as an OME-Zarr test image, the one writer every test uses.

    Axes default to the last ``ndim`` of zyx, scale to 1; ``chunks`` lists the spatial chunk
    shape (t/c axes get chunks of 1; default 16); ``n_levels > 1`` also writes the pyramid.
    """
    axes = axes or "zyx"[-data.ndim :]
    spatial = sum(a in "zyx" for a in axes)
    arr = ome.create_image(
        path,
        shape=data.shape,
        dtype=data.dtype,
        axes=axes,
        scale=list(scale) if scale is not None else [1.0] * data.ndim,
        chunks=ome.chunk_shape(axes, data.shape, list(chunks)[-spatial:] if chunks is not None else [16] * spatial),
        is_label=is_label,
        n_levels=n_levels,
        translation=translation,
    )
    arr[...] = data
    if n_levels != 1:
        ome.write_pyramid(path)
    return str(path)


def unet_params(image: str, labels: str, train_roi: str = "0:2", val_roi: str | None = "2:3", **overrides) -> dict:
    """A tiny 2D U-Net on a (z, y, x) stack: slices ``train_roi`` train, ``val_roi`` validate.

    ``overrides`` are merged into the defaults (nested dicts such as ``loop`` key by key).
    """
    base = {
        "train": [{"image": image, "labels": labels, "roi": train_roi}],
        "val": [{"image": image, "labels": labels, "roi": val_roi}] if val_roi else [],
        "model": {"ndim": 2, "f_maps": 4, "depth": 2},
        "patch_shape": [32, 32],
        "batch_size": 2,
        "num_workers": 0,
        "loop": {"threads": 1, "tensorboard": False},
    }
    return deep_update(base, overrides)


def voronoi_cells(rng: np.random.Generator, shape: tuple[int, ...], n: int) -> np.ndarray:
    """Instance labels 1..n: the Voronoi cells of ``n`` random points (a dense synthetic tissue)."""
    pts = np.stack([rng.integers(0, s, size=n) for s in shape], axis=1)
    grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    d = sum((g[..., None] - pts[:, i]) ** 2 for i, g in enumerate(grids))
    return (np.argmin(d, -1) + 1).astype(np.uint32)


def unet_checkpoint(path, cfg, norm=None, patch=None, seed: int = 0, **extra):
    """A U-Net checkpoint at ``path`` with random weights and non-trivial BatchNorm statistics (so
    eval-mode norm is not the identity); ``extra`` adds header entries (e.g. ``voxel_size``).
    Returns the model in eval mode."""
    import torch

    from zarrseg.methods.unet.checkpoint import save_checkpoint
    from zarrseg.methods.unet.models import build_model
    from zarrseg.normalize import Normalization

    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    model.eval()
    patch = patch or [64] * cfg.ndim
    save_checkpoint(path, model, cfg, norm or Normalization("meanstd"), "boundaries", {"patch_shape": patch}, **extra)
    return model

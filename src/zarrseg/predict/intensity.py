"""The ``intensity`` boundary map: the normalised membrane stain itself, computed blockwise.

For membrane-stained light microscopy the stain *is* a boundary signal; for EM the
membranes are dark, hence ``invert``. This is the no-training baseline the workflow runs by
default and the reference every trained model must beat.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from scipy import ndimage

from .. import ome
from ..blocks import Block, BlockGrid
from ..normalize import VolumeStats, apply
from ..parallel import map_blocks
from .params import PredictParams
from .runstate import mark_started, run_stats

log = logging.getLogger(__name__)

TRUNCATE = 4.0  # Gaussian kernel radius in sigmas (scipy's default)


def halo_for(sigma: float) -> int:
    return int(math.ceil(TRUNCATE * sigma)) if sigma > 0 else 0


def intensity_map(x: np.ndarray, stats: VolumeStats, params: PredictParams) -> np.ndarray:
    """The boundary map of an in-memory array (a block's outer box, or a whole small array)."""
    y = apply(x, stats, params.normalization)
    if params.sigma > 0:
        y = ndimage.gaussian_filter(y, params.sigma, truncate=TRUNCATE, mode="reflect")
    if params.invert:
        y = 1.0 - y
    return np.clip(y, 0.0, 1.0).astype(np.float32)


class _IntensityBlock:
    """Block function: read the outer box, compute the map, write the inner box."""

    def __init__(self, src: ome.SpatialView, dst, stats: VolumeStats, params: PredictParams):
        self.src, self.dst, self.stats, self.params = src, dst, stats, params

    def __call__(self, block: Block) -> dict:
        y = intensity_map(self.src[block.outer], self.stats, self.params)[block.local]
        self.dst[block.inner] = y.astype(self.dst.dtype)
        return {"mean": float(y.mean())}


def default_block_shape(chunks: tuple[int, ...], shape: tuple[int, ...], target: int = 1 << 22) -> list[int]:
    """Chunk-aligned blocks of about ``target`` voxels (4 Mi): big enough to amortise the halo."""
    block = list(chunks)
    while np.prod(block) < target:
        grown = False
        for axis in range(len(block)):
            if block[axis] < shape[axis] and np.prod(block) < target:
                block[axis] += chunks[axis]
                grown = True
        if not grown:
            break
    return [min(b, s) for b, s in zip(block, shape, strict=True)]


def align_to_chunks(block_shape, chunks) -> list[int]:
    """Round a block shape up to whole chunks so parallel writers never share a chunk."""
    block_shape = list(block_shape)[-len(chunks) :]
    block_shape = [*chunks[: len(chunks) - len(block_shape)], *block_shape]
    return [-(-b // c) * c for b, c in zip(block_shape, chunks, strict=True)]


def predict_intensity(
    image: ome.Image,
    out_path: Path,
    params: PredictParams,
    *,
    work: Path | None = None,
    resume: bool = False,
    fingerprint: dict | None = None,
) -> dict:
    """Write the intensity boundary map of ``image`` to the OME-Zarr at ``out_path``.

    With ``work`` (a folder inside the partial output), statistics and per-block done markers
    are kept there; ``resume`` reopens the existing output instead of creating it.
    """
    src = ome.SpatialView.of(image, channel=params.channel, timepoint=params.timepoint)
    stats = run_stats(work if resume else None, src, params.normalization, params.dask, source=image.path)
    axes = src.spatial_axes
    chunks = ome.chunk_shape(axes, src.shape, params.chunks)
    if resume:
        arr = ome.open_image(out_path, mode="r+").data
    else:
        arr = ome.create_image(
            out_path,
            shape=src.shape,
            dtype=params.dtype,
            axes=axes,
            scale=image.spatial_scale,
            translation=image.spatial_translation,
            chunks=chunks,
            compression=params.compression,
            name="boundaries",
            attrs={
                "stage": "predict",
                "method": "intensity",
                "source": str(image.path),
                "normalization_stats": stats.to_dict(),
            },
        )
        if work is not None and fingerprint is not None:
            mark_started(out_path, fingerprint, stats)
    block_shape = (
        align_to_chunks(params.block_shape, chunks)
        if params.block_shape
        else default_block_shape(chunks, src.shape)
    )
    grid = BlockGrid(src.shape, block_shape, halo_for(params.sigma))
    map_blocks(
        _IntensityBlock(src, arr, stats, params),
        grid,
        name="predict intensity",
        dask_params=params.dask,
        done_dir=None if work is None else work / "done",
    )
    return {"stats": stats.to_dict(), "blocks": len(grid)}

"""Per-volume intensity normalisation with statistics computed blockwise.

Networks and the intensity boundary map need one normalisation per *volume* (not per tile,
which would make neighbouring tiles disagree and produce seams). The statistics (percentiles,
mean, standard deviation) are gathered block by block through ``parallel.map_blocks`` so a
volume never has to fit in memory: integer images get an exact histogram (``np.bincount``),
float images a fine histogram between the blockwise min and max (a second pass).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .blocks import Block, BlockGrid
from .errors import InputError
from .parallel import DaskParams, map_blocks
from .params import check_percentiles

log = logging.getLogger(__name__)

FLOAT_BINS = 1 << 16  # histogram resolution for float images: 1/65536 of the range


@dataclass
class Normalization:
    """How raw intensities are mapped before a model or the intensity boundary map sees them."""

    method: Literal["percentile", "meanstd", "none"] = "percentile"
    lower: float = 1.0  # percentile mapped to 0 (method 'percentile')
    upper: float = 99.0  # percentile mapped to 1 (method 'percentile')

    def validate(self) -> None:
        check_percentiles(self.lower, self.upper, "normalization lower/upper percentiles")


@dataclass
class VolumeStats:
    """Statistics of one volume; enough for every ``Normalization`` method."""

    minimum: float
    maximum: float
    mean: float
    std: float
    low: float  # value at the lower percentile
    high: float  # value at the upper percentile
    count: int

    def to_dict(self) -> dict:
        return {k: float(v) if k != "count" else int(v) for k, v in self.__dict__.items()}


def apply(x: np.ndarray, stats: VolumeStats, norm: Normalization) -> np.ndarray:
    """Normalise ``x`` (any shape) with precomputed volume statistics; returns float32."""
    x = np.asarray(x, dtype=np.float32)
    if norm.method == "percentile":
        scale = stats.high - stats.low
        return (x - np.float32(stats.low)) / np.float32(scale if scale > 0 else 1.0)
    if norm.method == "meanstd":
        return (x - np.float32(stats.mean)) / np.float32(stats.std if stats.std > 0 else 1.0)
    return x


class _BlockReader:
    """Picklable block function bodies: read a block of a spatial view (inner box only)."""

    def __init__(self, view, bins: int | None = None, lo: float = 0.0, hi: float = 1.0):
        self.view, self.bins, self.lo, self.hi = view, bins, lo, hi

    def moments(self, block: Block) -> dict:
        x = self.view[block.inner]
        xf = x.astype(np.float64)
        total = xf.sum()
        return {
            "min": xf.min(),
            "max": xf.max(),
            "sum": total,
            "sum2": np.square(xf).sum(),
            "n": x.size,
            # NaN/Inf make the sum non-finite; counted only then, so clean data pays nothing extra
            "nonfinite": 0 if np.isfinite(total) else int(x.size - np.count_nonzero(np.isfinite(xf))),
            **(
                {"hist": np.bincount(x.ravel().astype(np.int64) - int(self.lo), minlength=self.bins)}
                if self.bins is not None
                else {}
            ),
        }

    def histogram(self, block: Block) -> dict:
        x = self.view[block.inner].astype(np.float64)
        hist, _ = np.histogram(x, bins=self.bins, range=(self.lo, self.hi))
        return {"hist": hist}


def _percentile_from_hist(hist: np.ndarray, q: float, lo: float, bin_width: float, exact_int: bool) -> float:
    """numpy's 'linear' percentile from a histogram: exact for integer bins, +-1 bin for float bins."""
    cdf = np.cumsum(hist, dtype=np.float64)
    rank = q / 100.0 * (cdf[-1] - 1)  # fractional rank in [0, n-1]
    base = np.floor(rank)
    offset = 0.0 if exact_int else 0.5  # integer bins hold one value; float bins: use the centre
    v0 = lo + (int(np.searchsorted(cdf, base + 1, side="left")) + offset) * bin_width
    v1 = lo + (int(np.searchsorted(cdf, min(base + 2, cdf[-1]), side="left")) + offset) * bin_width
    return float(v0 + (rank - base) * (v1 - v0))


def volume_stats(
    view,
    norm: Normalization | None = None,
    *,
    block_shape: Sequence[int] | None = None,
    dask_params: DaskParams | None = None,
    source: str | Path | None = None,
) -> VolumeStats:
    """Blockwise statistics of a spatial view (``ome.SpatialView`` or anything sliceable with ``shape``/``dtype``).

    NaN or Inf values raise an ``InputError`` naming ``source``: a normalisation (and every map
    computed from it) would silently turn into NaN.
    """
    norm = norm or Normalization()
    shape = tuple(view.shape)
    if block_shape is None:
        chunks = getattr(view, "chunks", None) or shape
        block_shape = [
            max(c, min(s, 256 if len(shape) == 2 else 64)) for c, s in zip(chunks, shape, strict=True)
        ]
        block_shape = [c * max(1, b // c) for c, b in zip(chunks, block_shape, strict=True)]
    grid = BlockGrid(shape, block_shape)
    dtype = np.dtype(view.dtype)
    if dtype.kind in "uib" and dtype.itemsize <= 2:  # exact histogram over every possible value
        lo = 0 if dtype.kind in "ub" else int(np.iinfo(dtype).min)
        bins = 2 if dtype.kind == "b" else int(np.iinfo(dtype).max) - lo + 1
        reader = _BlockReader(view, bins=bins, lo=lo)
        parts = map_blocks(reader.moments, grid, name="stats", dask_params=dask_params)
        hist = np.sum([p["hist"] for p in parts], axis=0)
        low = _percentile_from_hist(hist, norm.lower, lo, 1.0, True)
        high = _percentile_from_hist(hist, norm.upper, lo, 1.0, True)
    else:
        reader = _BlockReader(view)
        parts = map_blocks(reader.moments, grid, name="stats", dask_params=dask_params)
        _check_finite(parts, source)
        vmin, vmax = min(p["min"] for p in parts), max(p["max"] for p in parts)
        if vmax > vmin and norm.method == "percentile":
            hreader = _BlockReader(view, bins=FLOAT_BINS, lo=vmin, hi=vmax)
            hparts = map_blocks(hreader.histogram, grid, name="histogram", dask_params=dask_params)
            hist = np.sum([p["hist"] for p in hparts], axis=0)
            width = (vmax - vmin) / FLOAT_BINS
            low = _percentile_from_hist(hist, norm.lower, vmin, width, False)
            high = _percentile_from_hist(hist, norm.upper, vmin, width, False)
        else:
            low, high = vmin, vmax
    n = int(sum(p["n"] for p in parts))
    total, total2 = sum(p["sum"] for p in parts), sum(p["sum2"] for p in parts)
    mean = total / n
    std = float(np.sqrt(max(total2 / n - mean * mean, 0.0)))
    stats = VolumeStats(
        minimum=float(min(p["min"] for p in parts)),
        maximum=float(max(p["max"] for p in parts)),
        mean=float(mean),
        std=std,
        low=float(low),
        high=float(high),
        count=n,
    )
    log.info("volume stats: %s", stats.to_dict())
    return stats


def _check_finite(parts: list[dict], source) -> None:
    bad = sum(p["nonfinite"] for p in parts)
    if bad:
        n = sum(p["n"] for p in parts)
        raise InputError(f"{bad} of {n} voxels are NaN or Inf; replace them (e.g. by 0) before this stage", source)


def array_stats(x: np.ndarray, norm: Normalization | None = None) -> VolumeStats:
    """The same statistics for an in-memory array (small data, tests, training patches)."""
    norm = norm or Normalization()
    xf = np.asarray(x, dtype=np.float64)
    low, high = np.percentile(xf, [norm.lower, norm.upper])
    return VolumeStats(
        minimum=float(xf.min()),
        maximum=float(xf.max()),
        mean=float(xf.mean()),
        std=float(xf.std()),
        low=float(low),
        high=float(high),
        count=int(xf.size),
    )

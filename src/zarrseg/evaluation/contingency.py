"""The sparse overlap (contingency) table of two label volumes, computed blockwise.

Every instance and clustering metric is a function of this table alone, so a volume of any size
is scored with memory for the table (one row per overlapping pair of ids), never for the volumes.
Each block returns its own small (segment id, ground-truth id, count) triples through
``parallel.map_blocks``; the triples are summed over blocks. Counting within a block is elf's
overlap primitive (bioimage-cpp), the one place this module touches those libraries.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sparse

from ..blocks import Block, BlockGrid
from ..errors import InputError
from ..ome import SpatialView
from ..parallel import DaskParams, Summary, map_blocks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Contingency:
    """Sparse overlap counts: ``count[k]`` voxels carry ``seg[k]`` in the segmentation and ``gt[k]`` in the truth.

    Pairs are unique and sorted by (seg, gt); ids are uint64, counts int64.
    """

    seg: np.ndarray
    gt: np.ndarray
    count: np.ndarray

    @classmethod
    def empty(cls) -> Contingency:
        return cls(np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.int64))

    @classmethod
    def from_arrays(cls, seg: np.ndarray, gt: np.ndarray) -> Contingency:
        """Overlap table of two same-shaped integer arrays (any dimensionality, e.g. masked 1-D)."""
        if seg.shape != gt.shape:
            raise ValueError(f"shapes differ: {seg.shape} vs {gt.shape}")
        if seg.size == 0:
            return cls.empty()
        from elf.evaluation.util import contigency_table  # imported here: elf.evaluation loads scipy.optimize

        _, _, pairs, counts = contigency_table(np.ascontiguousarray(seg), np.ascontiguousarray(gt))
        return cls.merge(
            [
                cls(
                    pairs[:, 0].astype(np.uint64),
                    pairs[:, 1].astype(np.uint64),
                    np.rint(counts).astype(np.int64),
                )
            ]
        )

    @classmethod
    def merge(cls, parts: Iterable[Contingency]) -> Contingency:
        """Sum tables (e.g. of blocks): equal (seg, gt) pairs add their counts."""
        parts = list(parts)
        if not parts:
            return cls.empty()
        seg = np.concatenate([p.seg for p in parts]).astype(np.uint64, copy=False)
        gt = np.concatenate([p.gt for p in parts]).astype(np.uint64, copy=False)
        count = np.concatenate([p.count for p in parts]).astype(np.int64, copy=False)
        if seg.size == 0:
            return cls.empty()
        order = np.lexsort((gt, seg))
        seg, gt, count = seg[order], gt[order], count[order]
        first = np.ones(seg.size, dtype=bool)
        first[1:] = (seg[1:] != seg[:-1]) | (gt[1:] != gt[:-1])
        starts = np.flatnonzero(first)
        return cls(seg[starts], gt[starts], np.add.reduceat(count, starts))

    def __len__(self) -> int:
        return int(self.count.size)

    @property
    def n(self) -> int:
        """Number of voxels counted."""
        return int(self.count.sum())

    def sizes(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        """(ids, voxel counts) of the segmentation (``"seg"``) or ground truth (``"gt"``) objects."""
        ids, inverse = np.unique(getattr(self, which), return_inverse=True)
        return ids, np.bincount(inverse, weights=self.count, minlength=ids.size).astype(np.int64)

    def without_gt(self, label: int | None) -> Contingency:
        """Drop the voxels whose ground truth is ``label`` (the ignore convention of gala/CREMI/skimage)."""
        if label is None:
            return self
        keep = self.gt != np.uint64(label)
        return Contingency(self.seg[keep], self.gt[keep], self.count[keep])

    def matrix(self, dtype: type = np.float64) -> tuple[sparse.csr_array, np.ndarray, np.ndarray]:
        """(CSR matrix with rows = ground-truth ids and columns = segment ids, gt ids, seg ids).

        Ids are compacted to 0..n-1, so ids up to 2**64 never make a huge sparse shape; every
        metric we compute is invariant to relabelling. Rows = truth follows skimage's convention.
        """
        gt_ids, gi = np.unique(self.gt, return_inverse=True)
        seg_ids, si = np.unique(self.seg, return_inverse=True)
        mat = sparse.csr_array((self.count.astype(dtype), (gi, si)), shape=(gt_ids.size, seg_ids.size))
        return mat, gt_ids, seg_ids

    def equals(self, other: Contingency) -> bool:
        return (
            np.array_equal(self.seg, other.seg)
            and np.array_equal(self.gt, other.gt)
            and np.array_equal(self.count, other.count)
        )


def _as_labels(block: np.ndarray, what: str) -> np.ndarray:
    if block.dtype.kind not in "ui":
        raise InputError(f"{what} must hold integer labels, got dtype {block.dtype}")
    if block.dtype.kind == "i" and block.size and block.min() < 0:
        raise InputError(f"{what} holds negative labels")
    return block


class _BlockOverlap:
    """Picklable block function: read the inner box of both volumes (and mask), count overlaps."""

    def __init__(self, seg: SpatialView, gt: SpatialView, mask: SpatialView | None):
        self.seg, self.gt, self.mask = seg, gt, mask

    def __call__(self, block: Block) -> Summary:
        seg = _as_labels(self.seg[block.inner], "segmentation")
        gt = _as_labels(self.gt[block.inner], "ground truth")
        if self.mask is not None:
            keep = self.mask[block.inner] != 0
            seg, gt = seg[keep], gt[keep]
        table = Contingency.from_arrays(seg, gt)
        return {"seg": table.seg, "gt": table.gt, "count": table.count}


def spatial_block_shape(block_shape: Sequence[int], ndim: int) -> tuple[int, ...]:
    """The last ``ndim`` entries of a configured (z, y, x) block shape (2D images use (y, x))."""
    shape = tuple(int(b) for b in block_shape)
    if len(shape) < ndim:
        shape = (*([shape[0]] * (ndim - len(shape))), *shape)
    return shape[-ndim:]


def blockwise_contingency(
    seg: SpatialView,
    gt: SpatialView,
    *,
    mask: SpatialView | None = None,
    block_shape: Sequence[int] = (64, 512, 512),
    dask_params: DaskParams | None = None,
    name: str = "evaluate: overlap",
) -> Contingency:
    """Overlap table of two label volumes of the same shape, one block at a time with Dask.

    Voxels where ``mask`` is 0 are not counted. Memory per worker: one block of each input.
    """
    if seg.shape != gt.shape:
        raise InputError(
            f"segmentation shape {list(seg.shape)} differs from ground truth shape {list(gt.shape)}"
        )
    if mask is not None and mask.shape != seg.shape:
        raise InputError(f"mask shape {list(mask.shape)} differs from segmentation shape {list(seg.shape)}")
    grid = BlockGrid(seg.shape, spatial_block_shape(block_shape, len(seg.shape)))
    summaries = map_blocks(_BlockOverlap(seg, gt, mask), grid, name=name, dask_params=dask_params)
    table = Contingency.merge(Contingency(s["seg"], s["gt"], s["count"]) for s in summaries)
    log.info("%s: %d blocks, %d overlapping id pairs, %d voxels", name, len(grid), len(table), table.n)
    return table

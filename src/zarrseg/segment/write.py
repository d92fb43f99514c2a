"""Map the final segment id of every supervoxel back to voxels, block by block."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..blocks import Block
from .io import ArrayRef, bounded_malloc, cached_table, release_memory, to_nodes

SLAB = 32


def label_table(node_of_path: str, node_labels_path: str) -> np.ndarray:
    """Final label of every sparse supervoxel id (position in ``sparse_ids``), once per process."""
    mtimes = tuple(Path(p).stat().st_mtime for p in (node_of_path, node_labels_path))
    return _label_table(node_of_path, node_labels_path, mtimes)


@lru_cache(maxsize=1)
def _label_table(node_of_path: str, node_labels_path: str, mtimes: tuple) -> np.ndarray:
    del mtimes  # part of the cache key only: rewritten tables are reloaded
    return cached_table(node_labels_path)[cached_table(node_of_path).astype(np.int64)]


@dataclass
class WriteTask:
    supervoxels: ArrayRef
    output: ArrayRef
    tables: str
    node_labels_path: str
    dtype: str

    def __call__(self, block: Block) -> dict:
        bounded_malloc()
        release_memory()
        sparse = self.supervoxels[block.inner]
        if not sparse.any():  # empty / fully masked: the output's fill value (0) is already right
            return {"skipped": 1}
        tables = Path(self.tables)
        sparse_ids = cached_table(tables / "sparse_ids.npy")
        label_of = label_table(str(tables / "node_of.npy"), self.node_labels_path)
        labels = np.empty(sparse.shape, self.dtype)
        for z0 in range(0, sparse.shape[0], SLAB):  # bounded temporaries (int64 positions)
            labels[z0 : z0 + SLAB] = to_nodes(sparse[z0 : z0 + SLAB], sparse_ids, label_of)
        del sparse
        self.output[block.inner] = labels
        return {"skipped": 0}


@dataclass
class NodeView:
    """The supervoxel array read as consecutive node ids (for elf's blockwise multicut)."""

    supervoxels: ArrayRef
    sparse_ids: np.ndarray
    node_of: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.supervoxels.array.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, box: tuple[slice, ...]) -> np.ndarray:
        return to_nodes(self.supervoxels[box], self.sparse_ids, self.node_of)

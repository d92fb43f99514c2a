"""Map the final segment id of every supervoxel back to voxels, block by block."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..blocks import Block
from .io import ArrayRef, bounded_malloc, cached_table, nodes_of_block, to_nodes


@dataclass
class WriteTask:
    supervoxels: ArrayRef
    output: ArrayRef
    tables: str
    node_labels_path: str
    dtype: str

    def __call__(self, block: Block) -> dict:
        bounded_malloc()
        sparse = self.supervoxels[block.inner]
        if not sparse.any():  # empty / fully masked: the output's fill value (0) is already right
            return {"skipped": 1}
        nodes = nodes_of_block(sparse, self.tables)
        labels = cached_table(self.node_labels_path)[nodes]
        self.output[block.inner] = labels.astype(self.dtype, copy=False)
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

"""Blockwise region adjacency graph and boundary features (bioimage-cpp ``graph.distributed``).

Each block reads its inner box plus one voxel of halo, and reports the edges and partial
boundary statistics of the voxel pairs whose reference voxel it owns; pairs across a block
face are therefore counted exactly once. Merging gives the same graph and the same
mean/size features as the whole-volume RAG (elf ``compute_rag`` +
``compute_boundary_mean_and_length``). Edges to node 0 (masked out) are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import bioimage_cpp as bic
import numpy as np

from ..blocks import Block
from .io import ArrayRef, ImageReader, bounded_malloc, nodes_of_block

dist = bic.graph.distributed


@dataclass
class GraphTask:
    boundaries: ImageReader
    supervoxels: ArrayRef
    tables: str

    def __call__(self, block: Block) -> dict:
        bounded_malloc()
        sparse = self.supervoxels[block.outer]
        if not sparse[block.local].any():
            return {"edges": np.zeros((0, 2), np.uint64), "stats": np.zeros((0, 5))}
        labels = nodes_of_block(sparse, self.tables)
        boundaries = self.boundaries.read_float(block.outer)
        begin = [s.start for s in block.local]
        edges, stats = dist.block_edge_map_stats(
            labels, boundaries, begin, list(block.shape), number_of_threads=1
        )
        return {"edges": edges, "stats": stats}


@dataclass
class Graph:
    """The global supervoxel graph: node 0 is background and isolated."""

    graph: bic.graph.UndirectedGraph
    uv: np.ndarray  # (E, 2) uint64
    mean: np.ndarray  # (E,) mean boundary value on the face between two supervoxels
    size: np.ndarray  # (E,) number of voxel pairs on that face

    @property
    def n_nodes(self) -> int:
        return int(self.graph.number_of_nodes)

    def save(self, path: str | Path) -> None:
        np.savez(path, uv=self.uv, mean=self.mean, size=self.size, n_nodes=self.n_nodes)

    @classmethod
    def load(cls, path: str | Path) -> Graph:
        with np.load(path) as data:
            return cls.build(int(data["n_nodes"]), data["uv"], data["mean"], data["size"])

    @classmethod
    def build(cls, n_nodes: int, uv: np.ndarray, mean: np.ndarray, size: np.ndarray) -> Graph:
        graph = bic.graph.UndirectedGraph.from_unique_edges(
            n_nodes, np.ascontiguousarray(uv, dtype=np.uint64)
        )
        return cls(graph, uv, mean, size)


def merge(summaries: list[dict], n_nodes: int) -> Graph:
    """Union the per-block edges (block order) and fold their statistics onto the global edges."""
    uv = dist.merge_edges([s["edges"] for s in summaries])
    uv = uv[uv[:, 0] != 0] if len(uv) else uv
    graph = bic.graph.UndirectedGraph.from_unique_edges(n_nodes, np.ascontiguousarray(uv, dtype=np.uint64))
    stats = dist.empty_edge_stats(graph.number_of_edges)
    for s in summaries:
        if len(s["edges"]):
            dist.merge_block_edge_stats(graph, stats, s["edges"], s["stats"])
    features = dist.finalize_edge_features(stats)
    return Graph(graph, uv, features[:, 0].copy(), features[:, 1].copy())

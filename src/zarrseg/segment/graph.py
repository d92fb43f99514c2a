"""Region adjacency graph and boundary features, accumulated while the supervoxels are made.

The supervoxel passes already hold each block's ids and boundary values in memory, so they
also report the graph's partial statistics (bioimage-cpp ``graph.distributed``) instead of a
separate pass re-reading both arrays: every block reports the voxel pairs inside its inner
box (``block_edges``), and the second-pass (colour-1) blocks the pairs across each of their
faces (``face_edges``); every face lies between a colour-0 block, finished by then, and a
colour-1 block, so each pair is counted exactly once. The partial statistics are in terms
of the blocks' globally unique (sparse) ids; ``merge`` maps them to node ids after the
relabel (pairs inside one merged supervoxel vanish, duplicates fold) and gives the same
graph and the same mean/size features as the whole-volume RAG (elf ``compute_rag`` +
``compute_boundary_mean_and_length``; tested). Edges to node 0 (masked out) are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import bioimage_cpp as bic
import numpy as np

from .io import to_nodes

dist = bic.graph.distributed


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, 2), np.uint64), np.zeros((0, 5))


SLAB = 32  # planes per call: bioimage-cpp copies the boundary values to float64 first


def block_edges(ids: np.ndarray, boundaries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges and partial statistics [count, mean, M2, min, max] of the voxel pairs inside ``ids``.

    Computed in slabs of ``SLAB`` planes (each owning its planes, reading one more) to bound
    the float64 copy; an edge reported by several slabs is folded like one from several blocks.
    """
    parts = []
    n = ids.shape[0]
    for z0 in range(0, n, SLAB):
        z1 = min(z0 + SLAB, n)
        sub = ids[z0 : min(z1 + 1, n)]
        if not sub.any():
            continue
        own = [z1 - z0, *ids.shape[1:]]
        parts.append(
            dist.block_edge_map_stats(
                sub, boundaries[z0 : min(z1 + 1, n)], [0] * ids.ndim, own, number_of_threads=1
            )
        )
    if not parts:
        return _empty()
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def face_edges(u: np.ndarray, v: np.ndarray, bu: np.ndarray, bv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges and partial statistics of the voxel pairs across one face (two facing planes).

    The value of a pair is the mean of its two boundary values, as in bioimage-cpp's
    ``block_edge_map_stats`` (a 2-plane call there would also count the pairs inside the
    neighbour's plane, which the neighbour already reported).
    """
    u, v = u.ravel(), v.ravel()
    keep = u != v
    if not keep.any():
        return _empty()
    a, b = np.minimum(u[keep], v[keep]), np.maximum(u[keep], v[keep])
    x = (bu.ravel()[keep].astype(np.float64) + bv.ravel()[keep].astype(np.float64)) / 2.0
    order = np.lexsort((b, a))
    a, b, x = a[order], b[order], x[order]
    start = np.r_[True, (a[1:] != a[:-1]) | (b[1:] != b[:-1])]
    group = np.cumsum(start) - 1
    first = np.flatnonzero(start)
    count = np.bincount(group).astype(np.float64)
    mean = np.bincount(group, weights=x) / count
    m2 = np.bincount(group, weights=(x - mean[group]) ** 2)
    stats = np.stack([count, mean, m2, np.minimum.reduceat(x, first), np.maximum.reduceat(x, first)], axis=1)
    return np.stack([a[first], b[first]], axis=1).astype(np.uint64), stats


@dataclass
class Graph:
    """The global supervoxel graph: node 0 is background and isolated."""

    graph: bic.graph.UndirectedGraph
    uv: np.ndarray  # (E, 2) uint64
    mean: np.ndarray  # (E,) mean boundary value on the face between two supervoxels
    size: np.ndarray  # (E,) number of voxel pairs on that face
    max: np.ndarray | None = None  # (E,) largest value on that face (split foreground: the contact's thickness)

    @property
    def n_nodes(self) -> int:
        return int(self.graph.number_of_nodes)

    def save(self, path: str | Path) -> None:
        from ..runs import atomic_save

        extra = {} if self.max is None else {"max": self.max}
        atomic_save(path, lambda tmp: np.savez(tmp, uv=self.uv, mean=self.mean, size=self.size, n_nodes=self.n_nodes,
                                               **extra))

    @classmethod
    def load(cls, path: str | Path) -> Graph:
        with np.load(path) as data:
            top = data["max"] if "max" in data.files else None
            return cls.build(int(data["n_nodes"]), data["uv"], data["mean"], data["size"], top)

    @classmethod
    def build(
        cls, n_nodes: int, uv: np.ndarray, mean: np.ndarray, size: np.ndarray, top: np.ndarray | None = None
    ) -> Graph:
        graph = bic.graph.UndirectedGraph.from_unique_edges(
            n_nodes, np.ascontiguousarray(uv, dtype=np.uint64)
        )
        return cls(graph, uv, mean, size, top)


def merge(summaries: list[dict], sparse_ids: np.ndarray, node_of: np.ndarray, n_nodes: int) -> Graph:
    """Map the blocks' partial edges (sparse ids) to nodes, union them and fold their statistics."""
    parts = []
    for s in summaries:
        edges = np.asarray(s.get("edges", np.zeros((0, 2))), np.uint64).reshape(-1, 2)
        if not len(edges):
            continue
        nodes = np.sort(to_nodes(edges, sparse_ids, node_of).astype(np.uint64), axis=1)
        keep = (nodes[:, 0] != 0) & (nodes[:, 0] != nodes[:, 1])  # background, pairs inside one node
        parts.append((np.ascontiguousarray(nodes[keep]), np.ascontiguousarray(s["stats"][keep])))
    uv = dist.merge_edges([p[0] for p in parts]) if parts else np.zeros((0, 2), np.uint64)
    graph = bic.graph.UndirectedGraph.from_unique_edges(n_nodes, np.ascontiguousarray(uv, dtype=np.uint64))
    stats = dist.empty_edge_stats(graph.number_of_edges)
    for edges, block_stats in parts:
        if len(edges):
            dist.merge_block_edge_stats(graph, stats, edges, block_stats)
    features = dist.finalize_edge_features(stats, compute_complex_features=True)  # mean, std, min, max, size
    return Graph(graph, uv, features[:, 0].copy(), features[:, 4].copy(), features[:, 3].copy())

"""Blockwise, Dask-parallel segmentation: DT-watershed supervoxels -> RAG -> multicut / GASP / mutex watershed.

Stages (each a ``parallel.map_blocks`` pass with done markers, see ``engine.segment``):

1. ``supervoxels``: distance-transform watershed per block with a halo, two checkerboard
   passes so no supervoxel is cut by a block face, globally unique ids, consecutive relabel.
2. ``graph``: per-block region adjacency edges + boundary statistics (bioimage-cpp
   ``graph.distributed``), merged into one global graph.
3. ``partition``: multicut / GASP / mutex watershed / plain DT-watershed on that graph (elf).
4. ``write``: node labels mapped back to voxels, block by block.
"""

from .params import SegmentParams

__all__ = ["SegmentParams", "segment"]


def __getattr__(name: str):
    if name == "segment":  # lazy: keeps `from zarrseg.segment import SegmentParams` light
        from .engine import segment

        return segment
    raise AttributeError(name)

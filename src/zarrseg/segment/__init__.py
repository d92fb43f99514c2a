"""Blockwise, Dask-parallel segmentation: DT-watershed supervoxels -> RAG -> multicut / GASP / mutex watershed.

Stages (blockwise ones are ``parallel.map_blocks`` passes with done markers, see ``engine.segment``):

0. ``stage input``: the boundary map copied into the work dir in small block-aligned chunks.
   ``distance``: smoothed distance transform per block (with halo), stored, and its
   volume-wide range, so every block's watershed normalises like the whole volume.
1. ``supervoxels``: distance-transform watershed per block with a halo, two checkerboard
   passes so no supervoxel is cut by a block face, globally unique ids, consecutive relabel;
   the same passes report the blocks' region adjacency edges + boundary statistics
   (bioimage-cpp ``graph.distributed``).
2. ``graph``: the per-block edges merged into one global graph.
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

"""Whole-volume elf pipeline with the same parameters: the parity reference for tests and benchmarks.

Everything in memory, as PlantSeg does it: elf DT-watershed (``stacked_watershed`` in
stacked-2D mode), ``compute_rag`` + ``compute_boundary_mean_and_length``, the same solver
call as the blockwise engine, ``project_node_labels_to_pixels`` and elf's voxel-level
``apply_size_filter`` for ``post_min_size``. Not used by the stage itself.
"""

from __future__ import annotations

import numpy as np
from elf.segmentation.features import (
    compute_boundary_mean_and_length,
    compute_rag,
    project_node_labels_to_pixels,
)
from elf.segmentation.watershed import apply_size_filter, distance_transform_watershed, stacked_watershed

from .graph import Graph
from .params import SegmentParams, geometry
from .partition import consecutive, solve


def segment_whole(
    boundaries: np.ndarray,
    params: SegmentParams,
    mask: np.ndarray | None = None,
    n_threads: int = 1,
    scale: tuple[float, ...] | None = None,
) -> np.ndarray:
    """The boundary partitioners on a whole in-memory volume of voxel size ``scale`` (default 1)."""
    if params.partitioner == "connected_components":
        raise ValueError("the whole-volume reference covers the boundary partitioners only")
    boundaries = boundaries.astype(np.float32, copy=False)
    pitch, stacked = geometry(params, scale or (1.0,) * boundaries.ndim, boundaries.ndim)
    kwargs = {
        "threshold": params.threshold,
        "sigma_seeds": params.sigma_seeds,
        "sigma_weights": params.sigma_weights,
        "min_size": params.min_size,
        "alpha": params.alpha,
        "pixel_pitch": None if pitch is None else list(pitch),
    }
    if stacked and boundaries.ndim == 3:
        kwargs["pixel_pitch"] = None if kwargs["pixel_pitch"] is None else kwargs["pixel_pitch"][-2:]
        ws, _ = stacked_watershed(boundaries, mask=mask, n_threads=n_threads, **kwargs)
    else:
        ws, _ = distance_transform_watershed(boundaries, mask=mask, **kwargs)
    ws = ws.astype(np.uint32)
    rag = compute_rag(ws, n_threads=n_threads)
    feats = compute_boundary_mean_and_length(rag, ws, boundaries, n_threads=n_threads)
    uv = np.asarray(rag.uv_ids(), dtype=np.uint64)
    keep = uv[:, 0] != 0  # background (masked) is not a node of the partition
    g = Graph.build(int(rag.number_of_nodes), uv[keep], feats[keep, 0], feats[keep, 1])
    node_z = None
    if stacked and boundaries.ndim == 3:
        node_z = np.full(g.n_nodes, -1, np.int64)
        for z in range(ws.shape[0]):
            node_z[ws[z]] = z
        node_z[0] = -1
    labels = consecutive(solve(g, params, node_z, n_threads=n_threads))
    seg = project_node_labels_to_pixels(rag, ws, labels, n_threads=n_threads)
    if params.post_min_size > 0:
        seg, _ = apply_size_filter(
            seg.astype(np.uint32), boundaries, params.post_min_size, exclude=[0] if mask is not None else None
        )
        if mask is not None:
            seg[~mask] = 0
    return seg

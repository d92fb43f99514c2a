"""Pixel embeddings -> instances: the one place that calls ``elf.segmentation.embeddings``.

Embeddings (D, *spatial) come from ``zarrseg predict`` of an embedding model (SPOCO); the
OME-Zarr's attributes say what they are (``Meta``: D, whether g's embeddings follow f's, the
training margins delta_v / delta_d, 2D or 3D model). Clusterings (thesis Sec. 3.3.3):

* ``hdbscan``: density clustering of the pixels' embeddings (noise -> 0);
* ``mean_shift``: mean-shift with bandwidth delta_v;
* ``consistency``: Algorithm 1, mean-shift on f's embeddings, clusters dropped whose median IoU
  with the delta_v-neighbourhoods of M anchors in g's embeddings is below t_IoU;
* ``affinity``: Eq. 3.10 affinities at offsets 1, 3, 9, 27 along every axis, mutex watershed.

All four are whole-image methods. Volumes of any size go through the blockwise segment engine:
``boundary_evidence`` turns the embeddings into a boundary map (the largest Eq. 3.10 affinity to
a direct neighbour) that the engine's supervoxels / graph / partitioning use (``segment.io``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

OFFSET_DISTANCES = (1, 3, 9, 27)


@dataclass(frozen=True)
class Meta:
    """What an embedding prediction is, from its OME-Zarr attributes (``zarrseg``)."""

    dim: int  # D: f's channels come first
    has_g: bool  # channels D..2D-1 are the momentum network's
    delta_v: float
    delta_d: float
    model_ndim: int  # 2: a 2D model (slice by slice over a stack)

    @classmethod
    def of(cls, attrs: dict) -> Meta | None:
        """``Meta`` of an image's ``zarrseg`` attributes; None when it is not an embedding prediction."""
        z = attrs.get("zarrseg", attrs)
        cfg = z.get("model_config") or {}
        if z.get("target") != "embeddings" or "embedding_dim" not in cfg:
            return None
        return cls(
            dim=int(cfg["embedding_dim"]),
            has_g=bool(cfg.get("momentum_copy", False)),
            delta_v=float(cfg.get("delta_v", 0.5)),
            delta_d=float(cfg.get("delta_d", 2.0)),
            model_ndim=int(cfg.get("ndim", 2)),
        )


def warm_up() -> None:
    """Import elf's modules (seconds, once per process) before a clustering is timed."""
    import elf.segmentation.embeddings  # noqa: F401
    import elf.segmentation.mutex_watershed  # noqa: F401
    import hdbscan as _  # noqa: F401
    import sklearn.cluster  # noqa: F401


def offsets(ndim: int, distances: tuple[int, ...] = OFFSET_DISTANCES, axes: tuple[int, ...] | None = None) -> list[list[int]]:
    """Offsets at each distance along each axis; the direct neighbours first (the attractive edges)."""
    axes = tuple(range(ndim)) if axes is None else axes
    out = []
    for d in distances:
        for a in axes:
            o = [0] * ndim
            o[a] = -int(d)
            out.append(o)
    return out


def affinities(emb: np.ndarray, delta_d: float, offs: list[list[int]]) -> np.ndarray:
    """Eq. 3.10 per offset: w_ij = 1 - max((2 dd - ||e_i - e_j||) / (2 dd), 0)^2 (0: same object, 1: apart)."""
    from elf.segmentation.embeddings import embeddings_to_affinities

    return embeddings_to_affinities(np.asarray(emb, np.float32), offs, delta_d, invert=True).astype(np.float32)


def boundary_evidence(emb: np.ndarray, delta_d: float, axes: tuple[int, ...] | None = None) -> np.ndarray:
    """Per pixel, the largest Eq. 3.10 affinity to a direct neighbour along ``axes`` (default all):
    a boundary map in [0, 1] for the segment engine's watershed and graph."""
    spatial = emb.shape[1:]
    axes = tuple(range(len(spatial))) if axes is None else axes
    out = np.zeros(spatial, np.float32)
    for a in axes:
        if spatial[a] < 2:
            continue
        w = affinities(emb, delta_d, offsets(len(spatial), (1,), (a,)))[0]
        edge = np.take(w, range(1, spatial[a]), axis=a)  # w between i - 1 and i (i = 0 is the border)
        lo = [slice(None)] * len(spatial)
        hi = [slice(None)] * len(spatial)
        lo[a], hi[a] = slice(0, -1), slice(1, None)
        np.maximum(out[tuple(lo)], edge, out=out[tuple(lo)])
        np.maximum(out[tuple(hi)], edge, out=out[tuple(hi)])
    return out


def mutex_watershed(
    emb: np.ndarray,
    delta_d: float,
    distances: tuple[int, ...] = OFFSET_DISTANCES,
    stride: int = 1,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Affinity-based partitioning (Sec. 3.3.3): Eq. 3.10 affinities, then the mutex watershed
    (inside ``mask`` only, when given: 0 outside)."""
    from elf.segmentation.mutex_watershed import mutex_watershed as mws

    nd = emb.ndim - 1
    offs = offsets(nd, distances)
    inside = None if mask is None else np.ascontiguousarray(mask, dtype=bool)
    seg = mws(affinities(emb, delta_d, offs), offs, strides=[stride] * nd, mask=inside).astype(np.uint64) + 1
    if inside is not None:
        seg[~inside] = 0
    return seg


def within(mask: np.ndarray, emb: np.ndarray, cluster) -> np.ndarray:
    """``cluster`` (embeddings (C, *spatial) -> labels) applied to the pixels inside ``mask`` only:
    elf's whole-image clusterings flatten the pixels, so the foreground goes in as a (C, n, 1)
    image and its labels are put back in place; 0 outside."""
    inside = np.asarray(mask, dtype=bool).reshape(-1)
    labels = np.zeros(inside.size, np.uint64)
    if inside.any():
        pixels = emb.reshape(emb.shape[0], -1)[:, inside][..., None]
        labels[inside] = np.asarray(cluster(pixels), np.uint64).reshape(-1)
    return labels.reshape(emb.shape[1:])


def hdbscan(emb: np.ndarray, min_size: int, n_jobs: int = 1) -> np.ndarray:
    """HDBSCAN of the pixel embeddings; noise pixels get 0."""
    from elf.segmentation.embeddings import segment_hdbscan

    return segment_hdbscan(np.asarray(emb, np.float32), min_size, 0.0, False, n_jobs=n_jobs).astype(np.uint64)


def mean_shift(emb: np.ndarray, bandwidth: float, n_jobs: int = 1) -> np.ndarray:
    """Mean-shift of the pixel embeddings with ``bandwidth`` (the thesis: delta_v)."""
    from elf.segmentation.embeddings import segment_mean_shift

    return segment_mean_shift(np.asarray(emb, np.float32), bandwidth, n_jobs=n_jobs).astype(np.uint64)


def consistency(
    emb_f: np.ndarray,
    emb_g: np.ndarray,
    bandwidth: float,
    iou_threshold: float = 0.6,
    n_anchors: int = 10,
    seed: int = 0,
    n_jobs: int = 1,
) -> np.ndarray:
    """Algorithm 1 (consistency clustering); dropped clusters get 0.

    elf's implementation indexes 2D images; the method never looks at pixel positions, so a
    volume is handed to it as a (D, Z*Y, X) image. Its anchors come from numpy's global
    generator, seeded here (and restored after) so results are reproducible.
    """
    from elf.segmentation.embeddings import segment_consistency

    shape = emb_f.shape[1:]
    if len(shape) == 3:
        emb_f = emb_f.reshape(emb_f.shape[0], shape[0] * shape[1], shape[2])
        emb_g = emb_g.reshape(emb_g.shape[0], shape[0] * shape[1], shape[2])
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        seg = segment_consistency(
            np.asarray(emb_f, np.float32), np.asarray(emb_g, np.float32), bandwidth, iou_threshold, n_anchors,
            n_jobs=n_jobs,
        )
    finally:
        np.random.set_state(state)
    return seg.reshape(shape).astype(np.uint64)


def absorb_small(labels: np.ndarray, emb: np.ndarray, delta_d: float, min_size: int) -> np.ndarray:
    """Segments below ``min_size`` pixels are absorbed by their neighbours: elf's size filter (a seeded
    watershed) on the boundary evidence. Pixels labelled 0 (noise, dropped clusters) stay 0."""
    from elf.segmentation.watershed import apply_size_filter

    filled, _ = apply_size_filter(labels.astype(np.uint32), boundary_evidence(emb, delta_d), min_size)
    filled = filled.astype(np.uint64)
    filled[labels == 0] = 0
    return filled


def largest_to_background(labels: np.ndarray) -> np.ndarray:
    """The largest segment becomes 0 (the background of images with one; noise 0 stays 0)."""
    ids, counts = np.unique(labels[labels != 0], return_counts=True)
    if len(ids):
        labels = labels.copy()
        labels[labels == ids[np.argmax(counts)]] = 0
    return labels


def pca_rgb(emb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 image of the first three principal components of (D, H, W) embeddings."""
    from elf.segmentation.embeddings import embedding_pca

    return np.moveaxis(embedding_pca(np.asarray(emb, np.float32), 3, as_rgb=True), 0, -1)


PREVIEW = "embeddings_pca.png"


def write_preview(path: str | Path, dim: int, png: str | Path, max_size: int = 512) -> Path:
    """PCA-to-RGB picture of f's embeddings (the middle slice of a volume), at most ``max_size`` px a side."""
    import matplotlib.pyplot as plt

    from . import ome

    data = ome.open_image(path).data
    spatial = data.shape[1:]
    step = max(1, -(-max(spatial[-2:]) // max_size))
    box = (slice(0, dim),) + ((spatial[0] // 2,) if len(spatial) == 3 else ()) + (slice(None, None, step),) * 2
    plt.imsave(str(png), pca_rgb(np.asarray(data[box], np.float32)))
    return Path(png)

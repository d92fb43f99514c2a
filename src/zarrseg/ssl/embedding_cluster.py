"""The cluster stage for pixel embeddings (``zarrseg cluster EMBEDDINGS.ome.zarr``).

The four clusterings of ``zarrseg.embeddings`` are whole-image methods: they run per 2D image
(each slice of a stack predicted by a 2D model is one image) or on a volume of at most
``cluster.max_voxels`` voxels, and refuse larger inputs before writing anything, naming the
blockwise route (``zarrseg segment`` on the embeddings). Images are clustered one per block of
``parallel.map_blocks``; ids are made unique across the slices of a stack. The label image's
``zarrseg.summary`` records ``clustering_s``, the seconds spent in the clustering itself
(without reading and writing), which ``zarrseg evaluate`` reports as a metric, and for consistency
clustering ``consistency_dropped``, the share of the clustered pixels whose cluster Algorithm 1
dropped (a warning from half on: such a label image is mostly background, which could pass for a model
that found nothing).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import zarr

from .. import embeddings as emb_mod
from .. import ome
from ..blocks import Block, BlockGrid
from ..errors import ConfigError, InputError
from ..parallel import map_blocks

log = logging.getLogger(__name__)

METHODS = ("hdbscan", "mean_shift", "consistency", "affinity")
# consistency clustering that drops at least this share of the pixels it clustered is worth a warning:
# an all-background label image is otherwise easy to mistake for a model that found nothing
DROPPED_WARNING = 0.5


def is_embedding_input(path: str | Path) -> emb_mod.Meta | None:
    """The embedding metadata of an OME-Zarr image, or None (features, colour images, maps)."""
    try:
        image = ome.open_image(path)
    except InputError:
        return None
    return emb_mod.Meta.of(image.attrs)


def cluster_one(
    emb: np.ndarray, meta: emb_mod.Meta, params, n_jobs: int = 1, mask: np.ndarray | None = None,
    counts: dict[str, int] | None = None,
) -> np.ndarray:
    """Labels of one image / volume (C, *spatial) of embeddings with ``params.method``; with a
    foreground ``mask``, only its pixels are clustered (0 outside) and ``background`` is moot.

    ``counts`` (consistency only) gets ``clustered`` and ``dropped``: the pixels clustered and those
    whose mean-shift cluster Algorithm 1 dropped, before small segments are absorbed.
    """
    f = emb[: meta.dim]
    bandwidth = params.bandwidth if params.bandwidth is not None else meta.delta_v

    def whole_image(e: np.ndarray) -> np.ndarray:
        if params.method == "hdbscan":
            return emb_mod.hdbscan(e[: meta.dim], params.min_cluster_size, n_jobs)
        if params.method == "mean_shift":
            return emb_mod.mean_shift(e[: meta.dim], bandwidth, n_jobs)
        seg = emb_mod.consistency(e[: meta.dim], e[meta.dim : 2 * meta.dim], bandwidth, params.iou_threshold,
                                  params.n_anchors, params.seed, n_jobs)
        if counts is not None:  # mean-shift labels every pixel it sees: a 0 here is a dropped cluster
            counts["clustered"] = counts.get("clustered", 0) + int(seg.size)
            counts["dropped"] = counts.get("dropped", 0) + int((seg == 0).sum())
        return seg

    if params.method == "affinity":  # the graph needs the pixels' neighbours: masked inside elf
        labels = emb_mod.mutex_watershed(f, meta.delta_d, mask=mask)
    elif mask is not None:
        labels = emb_mod.within(mask, emb, whole_image)
    else:
        labels = whole_image(emb)
    if params.min_segment_size > 0:
        labels = emb_mod.absorb_small(labels, f, meta.delta_d, params.min_segment_size)
    if params.background == "largest" and mask is None:
        labels = emb_mod.largest_to_background(labels)
    return labels


class _ClusterImage:
    """One block = one image (a slice of a stack, or the whole image/volume)."""

    def __init__(self, path: str, meta: emb_mod.Meta, params, out: str, per_slice: bool, channels: int,
                 foreground: str | None = None):
        self.path, self.meta, self.params, self.out = path, meta, params, out
        self.per_slice, self.channels, self.foreground = per_slice, channels, foreground

    def __call__(self, block: Block) -> dict:
        data = ome.open_image(self.path).data
        emb = np.asarray(data[(slice(0, self.channels), *block.inner)], np.float32)
        mask = None
        if self.foreground is not None:
            mask = ome.SpatialView.of(ome.open_image(self.foreground))[block.inner] > 0
        if self.per_slice:
            emb, mask = emb[:, 0], None if mask is None else mask[0]
        emb_mod.warm_up()
        t0 = time.perf_counter()
        counts: dict[str, int] = {}
        labels = cluster_one(emb, self.meta, self.params, mask=mask, counts=counts)
        seconds = time.perf_counter() - t0
        labels = labels.astype(np.uint64)
        if self.per_slice:  # ids unique over the stack: slice z gets ids above z * (pixels per slice)
            z = block.inner[0].start
            labels = np.where(labels > 0, labels + np.uint64(z) * np.uint64(labels.size), 0)[None]
        arr = zarr.open_array(self.out, mode="r+")
        arr[block.inner] = labels.astype(arr.dtype)
        return {"seconds": seconds, "n": int(len(np.unique(labels)) - (labels == 0).any()), **counts}


def cluster_embeddings(
    path: str | Path, out: str | Path, params, meta: emb_mod.Meta, foreground: str | Path | None = None
) -> dict:
    """Cluster the embedding prediction at ``path`` into the label OME-Zarr ``out`` (inside the
    pixels > 0 of the ``foreground`` image only, when given)."""
    method = "affinity" if params.method == "auto" else params.method
    if method not in METHODS:
        raise ConfigError(f"cluster.method {params.method!r} does not apply to embeddings; use one of {list(METHODS)}")
    params = _with_method(params, method)
    image = ome.open_image(path)
    axes = "".join(a for a in image.axes if a in "zyx")
    shape = tuple(s for a, s in zip(image.axes, image.shape, strict=True) if a in "zyx")
    if image.axes[0] != "c" or len(axes) not in (2, 3):
        raise InputError(f"embeddings must have axes c + zyx / yx, got {image.axes!r}", path)
    channels = meta.dim * (2 if method == "consistency" else 1)
    if image.shape[0] < channels:
        if method == "consistency":
            raise InputError(
                "consistency clustering needs the momentum network's embeddings too: train with "
                "spoco.export_momentum: true", path
            )
        raise InputError(f"embeddings have {image.shape[0]} channels, the metadata says D = {meta.dim}", path)
    per_slice = len(shape) == 3 and meta.model_ndim == 2
    unit = shape[1:] if per_slice else shape
    if int(np.prod(unit)) > params.max_voxels:
        raise InputError(
            f"cluster.method {method} is a whole-image method and one image here has {int(np.prod(unit))} voxels "
            f"> cluster.max_voxels {params.max_voxels}; segment large volumes blockwise with 'zarrseg segment' "
            "on the embeddings (workflow: grid.labels: segment)", path
        )
    if foreground is not None:
        fg_shape = ome.SpatialView.of(ome.open_image(foreground)).shape
        if tuple(fg_shape) != tuple(shape):
            raise InputError(f"foreground shape {list(fg_shape)} differs from the embeddings' {list(shape)}",
                             foreground)
    t0 = time.perf_counter()
    dtype = np.uint64 if int(np.prod(shape)) >= 2**32 else np.uint32
    spatial_scale = list(image.spatial_scale)
    grid = BlockGrid(shape, (1, *shape[1:]) if per_slice else shape)
    with ome.atomic_output(out) as tmp:
        chunks = (1, *params.chunks) if len(shape) == 3 else tuple(params.chunks)
        ome.create_image(
            tmp, shape=shape, dtype=dtype, axes=axes, scale=spatial_scale, chunks=chunks[-len(shape):],
            is_label=True, name=Path(str(out)).name, translation=image.spatial_translation,
            attrs={"stage": "cluster", "source": str(path), "kind": "embeddings", "method": method,
                   "foreground": None if foreground is None else str(foreground)},
        )
        fn = _ClusterImage(str(path), meta, params, str(Path(tmp) / "0"), per_slice, channels,
                           None if foreground is None else str(foreground))
        summaries = map_blocks(fn, grid, name=f"cluster {method}", dask_params=params.dask)
        summary = {
            "clustering_s": round(float(sum(s["seconds"] for s in summaries)), 4),
            "total_s": round(time.perf_counter() - t0, 3),
            "n_segments": int(sum(s["n"] for s in summaries)),
        }
        if method == "consistency":
            summary["consistency_dropped"] = _dropped_fraction(summaries)
        group = zarr.open_group(str(tmp), mode="r+", zarr_format=2)
        group.attrs["zarrseg"] = {**dict(group.attrs["zarrseg"]), "summary": summary}
    if summary.get("consistency_dropped", 0.0) >= DROPPED_WARNING:
        log.warning(
            "cluster: consistency clustering of %s dropped %.0f %% of the clustered pixels: their mean-shift "
            "clusters have a median IoU below iou_threshold %.2f with the delta_v-neighbourhoods of their anchors "
            "in g, as when an object's embeddings are not yet within delta_v of each other (short training); "
            "mean_shift keeps every cluster, affinity needs no g", path, 100 * summary["consistency_dropped"],
            params.iou_threshold,
        )
    log.info(
        "cluster: %s of %s: %d segments, %.2f s clustering (%.1f s in all)",
        method, path, summary["n_segments"], summary["clustering_s"], summary["total_s"],
    )
    return {"kind": "embeddings", "method": method, **summary}


def _dropped_fraction(summaries: list[dict]) -> float:
    """Share of the clustered pixels whose consistency cluster was dropped (0 when none was clustered)."""
    clustered = sum(int(s.get("clustered", 0)) for s in summaries)
    return round(sum(int(s.get("dropped", 0)) for s in summaries) / clustered, 4) if clustered else 0.0


def _with_method(params, method: str):
    import dataclasses

    return dataclasses.replace(params, method=method)

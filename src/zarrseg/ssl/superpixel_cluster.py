"""Colour baselines on superpixels (Leng et al. Table 1): K-means or spectral clustering of the
mean colours of SLIC superpixels, projected back to the pixels.

Each slice is over-segmented on its own (``superpixels.superpixels``); the clusterer sees one row
per superpixel (its mean colour in [0, 1], or standardised). K-means is fitted on the superpixels
of every slice (a bounded sample) and then labels each slice, so a label means the same colour
cluster everywhere in a volume. Spectral clustering (scikit-learn ``SpectralClustering``, RBF
affinity of the colours) labels the superpixels it was fitted on and has no ``predict``: it takes
2D images only.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from .. import ome
from ..errors import InputError
from .superpixels import region_means, superpixels
from .tiling import ImageSource

log = logging.getLogger(__name__)


def _slice(src: ImageSource, z: int) -> np.ndarray:
    h, w = src.shape_yx
    return src.read_raw(z, slice(0, h), slice(0, w))


def superpixel_colours(src: ImageSource, z: int, params) -> tuple[np.ndarray, np.ndarray]:
    """Superpixel ids (H, W) and mean colours (N, C) of slice ``z``."""
    x = _slice(src, z)
    labels = superpixels(x, params.superpixels, where=f"{src.path} z={z}")
    _, colour = region_means(labels, x)
    return labels, colour.astype(np.float32)


def fit_labels(colour: np.ndarray, params) -> np.ndarray:
    """Cluster ids 1..k of superpixel colours with scikit-learn (spectral or K-means)."""
    from sklearn.cluster import KMeans, SpectralClustering

    if params.method == "spectral":
        model = SpectralClustering(params.n_clusters, affinity="rbf", random_state=params.seed)
        return model.fit_predict(colour).astype(np.int32) + 1
    return KMeans(params.n_clusters, n_init=params.n_init, random_state=params.seed).fit_predict(colour) + 1


def cluster_superpixels(src: ImageSource, out: str | Path, params) -> dict:
    """The superpixel colour baseline of ``src`` written to the label OME-Zarr ``out``."""
    from .cluster import Clusterer, Embedding

    t0 = time.perf_counter()
    if params.method not in ("kmeans", "spectral"):
        raise InputError(f"superpixel colours are clustered by kmeans or spectral, not {params.method!r}", src.path)
    if params.method == "spectral" and src.is_3d and src.n_slices > 1:
        raise InputError("spectral clustering labels one 2D image (it has no predict for other slices)", src.path)
    first_labels, first = superpixel_colours(src, 0, params)
    colours = [first]
    rng = np.random.default_rng(params.seed)
    for z in range(1, src.n_slices):  # K-means over a volume: a bounded sample of every slice's superpixels
        colours.append(superpixel_colours(src, z, params)[1])
    fit = np.concatenate(colours)
    if len(fit) < params.n_clusters:
        raise InputError(f"only {len(fit)} superpixels, fewer than n_clusters={params.n_clusters}", src.path)
    if len(fit) > params.max_fit_samples:
        fit = fit[rng.choice(len(fit), params.max_fit_samples, replace=False)]
    embed = Embedding(params).fit(None, fit)
    shape = (src.n_slices, *src.shape_yx) if src.is_3d else src.shape_yx
    axes = "".join(a for a in src.image.axes if a in "zyx")
    scale = [s for a, s in zip(src.image.axes, src.image.scale, strict=True) if a in "zyx"]
    if not src.is_3d and len(axes) == 3:
        axes, scale = "yx", scale[-2:]
    counts = np.zeros(params.n_clusters + 1, np.int64)
    with ome.atomic_output(out) as tmp:
        chunks = (1, *params.chunks) if src.is_3d else tuple(params.chunks)
        arr = ome.create_image(
            tmp, shape=shape, dtype="uint16", axes=axes, scale=scale, chunks=chunks, is_label=True,
            name=Path(str(out)).name,
            attrs={"stage": "cluster", "source": str(src.path), "kind": "superpixels", "method": params.method},
        )
        if params.method == "spectral":
            per_node = fit_labels(embed(None, first), params)
            arr[...] = per_node[first_labels].astype(np.uint16)
            counts += np.bincount(per_node[first_labels].ravel(), minlength=counts.size)
        else:
            model = Clusterer(params).fit(embed(None, fit))
            for z in range(src.n_slices):
                labels, colour = (first_labels, first) if z == 0 else superpixel_colours(src, z, params)
                pixels = model.predict(embed(None, colour))[labels].astype(np.uint16)
                arr[(z, slice(None), slice(None)) if src.is_3d else (slice(None), slice(None))] = pixels
                counts += np.bincount(pixels.ravel(), minlength=counts.size)
    log.info("cluster: %s superpixel colours (%d) -> %s in %.1f s", params.method, len(fit), out, time.perf_counter() - t0)
    return {"kind": "superpixels", "n_clusters": int((counts[1:] > 0).sum()), "counts": counts}

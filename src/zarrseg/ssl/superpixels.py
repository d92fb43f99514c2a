"""Superpixels of one 2D image and their region adjacency graph (RAG).

Used by the superpixel colour baselines of ``zarrseg cluster`` (K-means / spectral clustering of
superpixel mean colours, Leng et al. Table 1) and by the sparse losses of the ``wnet`` method
(Leng et al. §2.3), so both see the same superpixels and the same graph:

* ``superpixels``: SLIC (Achanta et al. 2012) or compact watershed (Neubert & Protzel 2014),
  both from scikit-image, relabelled 0..N-1;
* ``superpixel_graph``: node sizes and mean colours (``np.bincount``) and the graph's edges
  (``rag_edges``) from the RAG machinery the segment stage uses (elf ``compute_rag`` on
  bioimage-cpp), not a third RAG; the spectral baseline's affinity uses the same edges.

Images are (C, H, W) float arrays scaled to [0, 1]. SLIC measures colour in CIELAB for three
channels (scikit-image's default); other channel counts are scaled to 0-100 (the range of Lab
lightness) so ``compactness`` means the same for grey and colour images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import ConfigError, InputError


@dataclass
class SuperpixelParams:
    """How an image is over-segmented into superpixels."""

    method: Literal["slic", "watershed"] = "slic"  # SLIC, or compact watershed of the Sobel gradient
    n_segments: int = 3000  # wanted number of superpixels (SLIC returns about this many)
    # colour vs space, higher: more regular superpixels (SLIC: 10 suits Lab colour; compact
    # watershed: scikit-image's compactness of the gradient, e.g. 0.001)
    compactness: float = 10.0
    sigma: float = 0.0  # Gaussian pre-smoothing of the image (pixels; SLIC only)

    def validate(self) -> None:
        if self.n_segments < 2:
            raise ConfigError(f"superpixels.n_segments must be >= 2, got {self.n_segments}")
        if self.compactness < 0 or self.sigma < 0:
            raise ConfigError("superpixels.compactness and superpixels.sigma must be >= 0")


def superpixels(image: np.ndarray, params: SuperpixelParams, where: str = "image") -> np.ndarray:
    """(H, W) int64 superpixel ids 0..N-1 of a (C, H, W) image in [0, 1].

    Asking for more superpixels than the image has pixels is an input error (one line).
    """
    from skimage.segmentation import relabel_sequential, slic, watershed

    if image.ndim != 3:
        raise InputError(f"superpixels need a (C, H, W) image, got shape {image.shape}", where)
    c, h, w = image.shape
    if params.n_segments > h * w:
        raise InputError(
            f"{params.n_segments} superpixels asked for but the image has only {h} x {w} = {h * w} pixels",
            where,
        )
    yxc = np.moveaxis(image, 0, -1).astype(np.float64)
    if params.method == "slic":
        lab = c == 3
        data = yxc if lab else yxc * 100.0
        labels = slic(
            data,
            n_segments=params.n_segments,
            compactness=params.compactness,
            sigma=params.sigma,
            start_label=1,
            channel_axis=-1,
            convert2lab=lab,
            enforce_connectivity=True,
        )
    else:
        from skimage.filters import sobel

        gradient = sobel(yxc.mean(axis=-1))
        labels = watershed(gradient, markers=params.n_segments, compactness=params.compactness)
    labels, _, _ = relabel_sequential(labels.astype(np.int64))
    return labels - 1  # 0..N-1


@dataclass
class SuperpixelGraph:
    """Superpixels of an image as a graph: sizes and mean colours of the nodes, RAG edges."""

    labels: np.ndarray  # (H, W) ids 0..N-1
    sizes: np.ndarray  # (N,) pixels per superpixel
    colour: np.ndarray  # (N, C) mean colour
    edges: np.ndarray  # (E, 2) adjacent pairs (u < v), each once

    @property
    def n(self) -> int:
        return int(self.sizes.size)

    def distances(self) -> np.ndarray:
        """Euclidean colour distance of every edge (Leng et al. Eq. 5: ŵ as a distance)."""
        u, v = self.edges[:, 0], self.edges[:, 1]
        return np.sqrt(((self.colour[u] - self.colour[v]) ** 2).sum(axis=1))


def region_means(labels: np.ndarray, image: np.ndarray, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sizes (N,) and mean values (N, C) of a (C, H, W) image over the regions of ``labels`` (0..N-1)."""
    flat = labels.ravel()
    n = int(flat.max()) + 1 if n is None else n
    sizes = np.bincount(flat, minlength=n).astype(np.float64)
    sums = np.stack([np.bincount(flat, weights=ch.ravel(), minlength=n) for ch in image], axis=1)
    return sizes, sums / np.maximum(sizes, 1)[:, None]


def rag_edges(labels: np.ndarray) -> np.ndarray:
    """(E, 2) adjacent superpixel pairs (u < v) of ids 0..N-1 (elf ``compute_rag``, the segment stage's RAG)."""
    from elf.segmentation.features import compute_rag

    rag = compute_rag(labels.astype(np.uint32), n_threads=1)
    return np.asarray(rag.uv_ids(), dtype=np.int64).reshape(-1, 2)


def superpixel_graph(image: np.ndarray, labels: np.ndarray) -> SuperpixelGraph:
    """Node sizes, mean colours and RAG edges (``rag_edges``)."""
    sizes, colour = region_means(labels, image)
    return SuperpixelGraph(labels=labels, sizes=sizes, colour=colour, edges=rag_edges(labels))

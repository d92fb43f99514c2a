"""Colour baselines on superpixels (Leng et al. Table 1): K-means or spectral clustering of the
mean colours of SLIC superpixels, projected back to the pixels.

Spectral clustering (scikit-learn ``SpectralClustering``) sees by default the region adjacency
graph of the superpixels (``spectral_affinity: rag``): a sparse precomputed affinity, the RBF
kernel of the colour distance on adjacent pairs only, so the eigenproblem is sparse (ARPACK, or
AMG when pyamg is installed) and takes a fraction of a second for 3,000 superpixels. The dense RBF
affinity of every pair of colours (``rbf``, scikit-learn's default) ignores where a superpixel is;
its spectral embedding is computed here with a dense symmetric eigensolver (LAPACK through
``scipy.linalg.eigh``), because scikit-learn's ARPACK shift-invert fails to converge on these
nearly complete graphs (clustered eigenvalues) and its LOBPCG fallback took up to an hour per
BSDS300 image; the dense solver takes 1-3 s a fit (eigenvectors + K-means) for 3,000 superpixels on one core.

Each slice is over-segmented on its own (``superpixels.superpixels``); the clusterer sees one row
per superpixel (its mean colour in [0, 1], or standardised). K-means is fitted on the superpixels
of every slice (a bounded sample) and then labels each slice, so a label means the same colour
cluster everywhere in a volume. Spectral clustering labels the superpixels it was fitted on and
has no ``predict``: it takes 2D images only.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from scipy import sparse

from .. import ome
from ..errors import InputError
from .superpixels import rag_edges, region_means, superpixels
from .tiling import ImageSource

log = logging.getLogger(__name__)

# spectral_affinity rbf: the largest superpixel count whose dense (N, N) float64 affinity, Laplacian
# and eigensolver workspace fit in a few GB (3 x 2 GB at this N); beyond it the RAG affinity scales
MAX_DENSE_SPECTRAL = 16_384


def _slice(src: ImageSource, z: int) -> np.ndarray:
    h, w = src.shape_yx
    return src.read_raw(z, slice(0, h), slice(0, w))


def superpixel_colours(src: ImageSource, z: int, params) -> tuple[np.ndarray, np.ndarray]:
    """Superpixel ids (H, W) and mean colours (N, C) of slice ``z``."""
    x = _slice(src, z)
    labels = superpixels(x, params.superpixels, where=f"{src.path} z={z}")
    _, colour = region_means(labels, x)
    return labels, colour.astype(np.float32)


def rag_affinity(labels: np.ndarray, colour: np.ndarray, gamma: float) -> sparse.csr_array:
    """(N, N) symmetric sparse affinity ``exp(-gamma |c_I - c_J|^2)`` of adjacent superpixels (else 0).

    The edges are those of ``superpixel_graph`` (4-connected RAG), the graph the W-Net's sparse
    losses use; the kernel is scikit-learn's RBF, so only the pairs differ from ``affinity='rbf'``.
    """
    edges = rag_edges(labels)
    u, v = edges[:, 0], edges[:, 1]
    w = np.exp(-gamma * ((colour[u].astype(np.float64) - colour[v]) ** 2).sum(axis=1))
    n = len(colour)
    rows, cols = np.concatenate([u, v]).astype(np.int32), np.concatenate([v, u]).astype(np.int32)
    out = sparse.csr_array((np.concatenate([w, w]), (rows, cols)), shape=(n, n))
    out.indices, out.indptr = out.indices.astype(np.int32), out.indptr.astype(np.int32)  # scikit-learn's need
    return out


def dense_spectral_embedding(affinity: np.ndarray, k: int) -> np.ndarray:
    """(N, k) spectral embedding of a dense affinity, as ``sklearn.manifold.spectral_embedding`` makes it.

    The same steps (normalised Laplacian, the k eigenvectors with the smallest eigenvalues divided
    by the square root of the degrees, signs fixed deterministically); only the eigensolver differs
    (LAPACK's, not ARPACK's), so the embedding spans the same subspace whenever ARPACK converges.
    """
    from scipy.linalg import eigh
    from scipy.sparse.csgraph import laplacian

    lap, dd = laplacian(np.asarray(affinity, np.float64), normed=True, return_diag=True)
    _, vectors = eigh(lap, subset_by_index=[0, k - 1], driver="evr", check_finite=False)
    embedding = vectors / dd[:, None]
    signs = np.sign(embedding[np.abs(embedding).argmax(axis=0), np.arange(k)])
    return embedding * np.where(signs == 0, 1.0, signs)


def dense_spectral_labels(affinity: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Cluster ids 0..k-1: ``sklearn.cluster.spectral_clustering`` (assign_labels 'kmeans', 10
    restarts) on ``dense_spectral_embedding``."""
    from sklearn.cluster import KMeans

    return KMeans(k, n_init=10, random_state=seed).fit_predict(dense_spectral_embedding(affinity, k))


def _eigen_solver() -> str:
    """AMG when pyamg is installed (fastest on large sparse graphs), else ARPACK (scipy)."""
    try:
        import pyamg  # noqa: F401
    except ImportError:
        return "arpack"
    return "amg"


def fit_labels(colour: np.ndarray, params, labels: np.ndarray | None = None) -> np.ndarray:
    """Cluster ids 1..k of superpixel colours with scikit-learn (spectral or K-means).

    Spectral clustering with ``spectral_affinity: rag`` needs the superpixel ids ``labels`` (H, W).
    """
    from sklearn.cluster import KMeans, SpectralClustering
    from sklearn.metrics.pairwise import rbf_kernel

    if params.method == "spectral":
        k, seed = params.n_clusters, params.seed
        if params.spectral_affinity == "rbf":  # scikit-learn's kernel; the eigensolver: see the module docstring
            affinity = rbf_kernel(colour.astype(np.float64), gamma=params.spectral_gamma)
            return dense_spectral_labels(affinity, k, seed).astype(np.int32) + 1
        if labels is None:
            raise ValueError("spectral_affinity 'rag' needs the superpixel ids")
        affinity = rag_affinity(labels, colour, params.spectral_gamma)
        model = SpectralClustering(k, affinity="precomputed", eigen_solver=_eigen_solver(), random_state=seed)
        return model.fit_predict(affinity).astype(np.int32) + 1
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
    if params.method == "spectral" and params.spectral_affinity == "rbf" and len(fit) > MAX_DENSE_SPECTRAL:
        raise InputError(
            f"{len(fit)} superpixels: spectral_affinity rbf builds a dense {len(fit)} x {len(fit)} affinity "
            f"(at most {MAX_DENSE_SPECTRAL}); use cluster.spectral_affinity: rag or fewer superpixels",
            src.path,
        )
    if len(fit) > params.max_fit_samples:
        fit = fit[rng.choice(len(fit), params.max_fit_samples, replace=False)]
    embed = Embedding(params).fit(None, fit)
    shape = (src.n_slices, *src.shape_yx) if src.is_3d else src.shape_yx
    axes = "".join(a for a in src.image.axes if a in "zyx")
    scale = list(src.image.spatial_scale)
    shift = list(src.image.spatial_translation)
    if not src.is_3d and len(axes) == 3:
        axes, scale, shift = "yx", scale[-2:], shift[-2:]
    counts = np.zeros(params.n_clusters + 1, np.int64)
    with ome.atomic_output(out) as tmp:
        chunks = (1, *params.chunks) if src.is_3d else tuple(params.chunks)
        arr = ome.create_image(
            tmp, shape=shape, dtype="uint16", axes=axes, scale=scale, chunks=chunks, is_label=True,
            name=Path(str(out)).name, translation=shift,
            attrs={"stage": "cluster", "source": str(src.path), "kind": "superpixels", "method": params.method},
        )
        if params.method == "spectral":
            per_node = fit_labels(embed(None, first), params, first_labels)
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

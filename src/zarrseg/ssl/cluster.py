"""Cluster ViT patch features (or plain colour) into a pixel-resolution label image.

Feature clustering (thesis §3.3): optional PCA of the patch tokens (20 components by default),
concatenation of the patch's mean colour, K-means (k = 2 by default) or HDBSCAN. The models
are fitted on a bounded random sample of patches and then applied blockwise, so the label
image of a huge volume streams. Labels are upsampled from the patch grid to the pixels of
the original image (nearest patch), with the image's geometry; 0 means "no cluster"
(HDBSCAN noise), clusters are 1..k.

Colour baseline (thesis §3.2): K-means on the mean intensity of m x m pixel patches of the
image itself (m = 1: per pixel; m = 8: the ViT's patch grid), standardised with the image's
own statistics.

Superpixel colour baselines (Leng et al. Table 1; ``superpixels`` set): K-means or spectral
clustering of the mean colours of SLIC superpixels (``superpixel_cluster``).

Argmax (``method: argmax``): the label of a pixel is the channel with the highest value of a
soft class map (e.g. a W-Net's softmax), 1..K; the model defines the classes, so the label ids
are the same in every slice and every image a model predicts.

Pixel embeddings (a SPOCO prediction; ``embedding_cluster``): HDBSCAN, mean-shift,
consistency clustering or the affinity mutex watershed, per image.

Threshold (``method: threshold``): the two classes of a probability map split at a fixed value
(label 2 where value >= threshold, else 1), e.g. a foreground U-Net's output, so supervised
rows give label images of the same form as the clustering rows and are scored identically.
It reads the raw values (no percentile scaling) blockwise.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import zarr

from .. import ome
from ..blocks import Block, BlockGrid
from ..errors import ConfigError, InputError
from ..parallel import DaskParams, map_blocks
from .superpixels import SuperpixelParams
from .tiling import ImageSource, Preprocess

log = logging.getLogger(__name__)


@dataclass
class ClusterParams:
    """Parameters of ``zarrseg cluster`` (config section ``cluster``)."""

    # auto: kmeans (ViT features, colours), affinity (pixel embeddings). Colours: kmeans | hdbscan | spectral
    # (superpixel colours only); maps: threshold | argmax (soft class maps); embeddings (SPOCO): hdbscan,
    # mean_shift, consistency (Algorithm 1) or affinity (Eq. 3.10 + mutex watershed)
    method: Literal[
        "auto", "kmeans", "hdbscan", "spectral", "threshold", "argmax", "mean_shift", "consistency", "affinity"
    ] = "auto"
    n_clusters: int = 2  # K-means / spectral k
    # spectral: which superpixel pairs have an affinity exp(-spectral_gamma |colour_I - colour_J|^2):
    # rag: adjacent superpixels only (the region adjacency graph the W-Net's sparse losses use; sparse,
    # ~0.2 s for 3,000 superpixels); rbf: every pair (scikit-learn's default, the Table 1 grid's reading;
    # dense: 1-3 s a fit for 3,000 superpixels)
    spectral_affinity: Literal["rag", "rbf"] = "rag"
    spectral_gamma: float = 1.0  # scikit-learn's default RBF gamma (colours in [0, 1])
    n_init: int = 4  # K-means restarts (the best inertia is kept)
    threshold: float = 0.5  # method threshold: label 2 where the image value >= threshold, else 1
    pca_components: int = 20  # 0: no PCA
    use_colour: bool = True  # concatenate the patch's mean colour to the features
    colour_weight: float = 1.0  # colour block variance relative to the (PCA) feature block
    colour_patch: int = 8  # colour baseline only: m of the m x m patches (1 = pixels)
    # colour baseline: standardise each channel with the image's statistics (false: the intensities
    # scaled to [0, 1] by preprocess.percentiles, as Leng et al.'s K-means baselines use them)
    standardize: bool = True
    # colour baseline: cluster the mean colours of these superpixels instead of m x m patches
    superpixels: SuperpixelParams | None = None
    max_fit_samples: int = 100_000  # patches used to fit PCA / K-means / HDBSCAN
    min_cluster_size: int = 100  # HDBSCAN (of embeddings: min_size)
    min_samples: int | None = None  # HDBSCAN
    seed: int = 0
    bandwidth: float | None = None  # embeddings, mean_shift / consistency: null = the model's delta_v
    iou_threshold: float = 0.6  # consistency: t_IoU, clusters with a lower median IoU are dropped
    n_anchors: int = 10  # consistency: M anchors per cluster
    background: Literal["none", "largest"] = "none"  # embeddings: largest: the largest segment becomes 0
    # embeddings: ground_truth: cluster only the pixels inside the sample's ground-truth foreground
    # (label > 0), as the thesis' "GT FG" rows and its annotation-budget table do (the workflow
    # passes the ground truth; 'zarrseg cluster' takes it as --foreground); outside is 0
    foreground: Literal["none", "ground_truth"] = "none"
    min_segment_size: int = 0  # embeddings: smaller segments are absorbed by neighbours (watershed on Eq. 3.10 evidence)
    max_voxels: int = 2**21  # embeddings: largest image / volume a whole-image clustering takes
    block_shape: tuple[int, int] = (1024, 1024)  # output blocks (y, x); 3D volumes: one slice per block
    chunks: tuple[int, int] = (512, 512)  # output chunks (y, x)
    preprocess: Preprocess = field(default_factory=Preprocess)  # colour baseline: how the image is read
    dask: DaskParams = field(default_factory=DaskParams)

    def validate(self) -> None:
        if self.n_clusters < 2:
            raise ConfigError(f"cluster.n_clusters must be >= 2, got {self.n_clusters}")
        if self.pca_components < 0 or self.colour_patch < 1 or self.max_fit_samples < 10:
            raise ConfigError(
                "cluster: pca_components >= 0, colour_patch >= 1, max_fit_samples >= 10 required"
            )
        if self.colour_weight < 0:
            raise ConfigError("cluster.colour_weight must be >= 0")
        if self.n_init < 1:
            raise ConfigError(f"cluster.n_init must be >= 1, got {self.n_init}")
        if self.method == "spectral" and self.superpixels is None:
            raise ConfigError(
                "cluster.method spectral needs cluster.superpixels (spectral clustering of every pixel "
                "does not scale; of a few thousand superpixels it does)"
            )
        if self.spectral_gamma <= 0:
            raise ConfigError(f"cluster.spectral_gamma must be > 0, got {self.spectral_gamma}")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise ConfigError(f"cluster.bandwidth must be > 0, got {self.bandwidth}")
        if not 0.0 < self.iou_threshold <= 1.0 or self.n_anchors < 1 or self.max_voxels < 1:
            raise ConfigError("cluster: iou_threshold in (0, 1], n_anchors >= 1 and max_voxels >= 1 required")
        if self.min_segment_size < 0:
            raise ConfigError(f"cluster.min_segment_size must be >= 0, got {self.min_segment_size}")


class Embedding:
    """Feature vector of a patch: scaled PCA of the tokens (+ weighted, standardised mean colour)."""

    def __init__(self, params: ClusterParams):
        self.params = params
        self.pca = None
        self.feat_mean: np.ndarray | None = None
        self.feat_scale = 1.0
        self.col_mean: np.ndarray | None = None
        self.col_std: np.ndarray | None = None

    def fit(self, feats: np.ndarray | None, colour: np.ndarray | None) -> Embedding:
        if feats is not None:
            self.feat_mean = feats.mean(0)
            x = feats - self.feat_mean
            if self.params.pca_components and self.params.pca_components < feats.shape[1]:
                from sklearn.decomposition import PCA

                self.pca = PCA(self.params.pca_components, random_state=self.params.seed).fit(x)
                x = self.pca.transform(x)
            # Unit total variance, so colour_weight has the same meaning for any feature width.
            self.feat_scale = 1.0 / max(float(np.sqrt(x.var(0).sum())), 1e-12)
        if colour is not None:
            self.col_mean, self.col_std = colour.mean(0), np.maximum(colour.std(0), 1e-6)
        return self

    def __call__(self, feats: np.ndarray | None, colour: np.ndarray | None) -> np.ndarray:
        parts = []
        if feats is not None:
            x = feats.astype(np.float32) - self.feat_mean
            x = self.pca.transform(x) if self.pca is not None else x
            parts.append(x * self.feat_scale)
        if colour is not None:
            w = self.params.colour_weight / np.sqrt(colour.shape[1]) if feats is not None else 1.0
            if self.params.standardize:
                colour = (colour - self.col_mean) / self.col_std
            parts.append(colour * w)
        return np.concatenate(parts, axis=1).astype(np.float32)


class Clusterer:
    """K-means or HDBSCAN fitted on a sample; ``predict`` gives labels 1..k (0: HDBSCAN noise)."""

    def __init__(self, params: ClusterParams):
        self.params = params
        self.model = None

    def fit(self, x: np.ndarray) -> Clusterer:
        p = self.params
        if p.method == "kmeans":
            from sklearn.cluster import KMeans

            self.model = KMeans(p.n_clusters, n_init=p.n_init, random_state=p.seed).fit(x)
        else:
            import hdbscan

            self.model = hdbscan.HDBSCAN(
                min_cluster_size=p.min_cluster_size, min_samples=p.min_samples, prediction_data=True
            ).fit(x)
            n = int(self.model.labels_.max()) + 1
            log.info(
                "cluster: HDBSCAN found %d clusters (%.1f %% of the sample is noise)",
                n,
                100 * float((self.model.labels_ < 0).mean()),
            )
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.params.method == "kmeans":
            return self.model.predict(x).astype(np.int32) + 1
        import hdbscan

        labels, _ = hdbscan.approximate_predict(self.model, x)
        return labels.astype(np.int32) + 1


def _sample_blocks(grid: BlockGrid, total: int, n: int, rng: np.random.Generator):
    """Per block, the flat indices to keep so that about ``n`` of ``total`` items are sampled."""
    frac = min(1.0, n / max(total, 1))
    for block in grid:
        size = int(np.prod(block.shape))
        k = size if frac >= 1 else rng.binomial(size, frac)
        yield block, np.sort(rng.choice(size, size=k, replace=False)) if k < size else np.arange(size)


def _to_rows(a: np.ndarray) -> np.ndarray:
    """(C, *spatial) -> (N, C)."""
    return a.reshape(a.shape[0], -1).T


class _Source:
    """What is clustered: feature volume patches, or m x m colour patches of an image."""

    def __init__(self, path: str | Path, params: ClusterParams, image: str | Path | None):
        self.params = params
        self.path = Path(path)
        group = zarr.open_group(str(path), mode="r") if (Path(path) / ".zgroup").exists() else None
        if group is not None and "zarrseg_features" in group.attrs:
            from .features import open_features  # (imports torch: only for feature volumes)

            self.kind = "features"
            self.group, meta = open_features(path)
            self.feats, self.colour = self.group["features"], self.group["colour"]
            self.is_3d = bool(meta["is_3d"])
            self.image_path = Path(image) if image else Path(meta["image"])
            self.shape_yx = tuple(meta["image_shape_yx"])
            # patch grid -> pixel scale: features live on the resized image
            self.grid_yx = tuple(self.feats.shape[-2:])
            self.axes, self.scale = meta["image_axes"], meta["image_scale"]
            self.n_slices = int(meta["n_slices"])
            if image is not None:
                img = ome.open_image(image)
                src = ImageSource(
                    image,
                    Preprocess(
                        **{**meta["preprocess"], "percentiles": tuple(meta["preprocess"]["percentiles"])}
                    ),
                )
                if src.shape_yx != self.shape_yx or src.n_slices != self.n_slices:
                    raise InputError(
                        f"image geometry {src.shape_yx} x {src.n_slices} slices differs from that of "
                        f"the features {self.shape_yx} x {self.n_slices}",
                        image,
                    )
                self.axes, self.scale = img.axes, img.scale
        else:
            self.kind = "colour"
            src = ImageSource(path, params.preprocess)
            self.src = src
            self.image_path, self.is_3d, self.n_slices = self.path, src.is_3d, src.n_slices
            self.shape_yx = src.shape_yx
            m = params.colour_patch
            self.grid_yx = (-(-self.shape_yx[0] // m), -(-self.shape_yx[1] // m))
            self.axes, self.scale = src.image.axes, src.image.scale

    def read(self, z: int, ys: slice, xs: slice) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(N, C) features and (N, c) colour of the patch box (ys, xs) of slice z (row-major); NaN
        or Inf anywhere is an input error (scikit-learn's estimators refuse them with a traceback)."""
        rows = self._read(z, ys, xs)
        for part in rows:
            if part is not None and not np.isfinite(part).all():
                where = f"slice {z}, " if self.is_3d else ""
                raise InputError(f"holds NaN or Inf values ({where}rows {ys.start}:{ys.stop}, columns "
                                 f"{xs.start}:{xs.stop} of the patch grid); replace them (e.g. by 0) before "
                                 "clustering", self.path)
        return rows

    def _read(self, z: int, ys: slice, xs: slice) -> tuple[np.ndarray | None, np.ndarray | None]:
        if self.kind == "features":
            idx = (slice(None), z, ys, xs) if self.is_3d else (slice(None), ys, xs)
            feats = _to_rows(np.asarray(self.feats[idx]))
            colour = _to_rows(np.asarray(self.colour[idx])) if self.params.use_colour else None
            return feats, colour
        m = self.params.colour_patch
        y1, x1 = min(ys.stop * m, self.shape_yx[0]), min(xs.stop * m, self.shape_yx[1])
        raw = self.src.read_raw(z, slice(ys.start * m, y1), slice(xs.start * m, x1))
        ph, pw = ys.stop - ys.start, xs.stop - xs.start
        pad = ((0, 0), (0, ph * m - raw.shape[1]), (0, pw * m - raw.shape[2]))
        if any(p[1] for p in pad):  # last partial patch: mean of the pixels that exist
            raw = np.pad(raw, pad, mode="edge")
        means = raw.reshape(raw.shape[0], ph, m, pw, m).mean(axis=(2, 4))
        return None, _to_rows(means)


def patch_index(
    n_pixels: int, n_patches: int, start: int, stop: int, grid_len: int | None = None
) -> np.ndarray:
    """Patch of each pixel in [start, stop): pixel centres mapped onto the patch grid (nearest patch)."""
    pos = (np.arange(start, stop) + 0.5) * (n_patches / n_pixels)
    return np.minimum(pos.astype(np.int64), (grid_len or n_patches) - 1)


class _LabelBlock:
    def __init__(self, source: _Source, embed: Embedding, clusterer: Clusterer, out: str, n_patches_yx):
        self.source, self.embed, self.clusterer, self.out = source, embed, clusterer, out
        self.n_patches_yx = n_patches_yx

    def __call__(self, block: Block) -> dict:
        src = self.source
        z = block.inner[0].start if src.is_3d else 0
        ys, xs = block.inner[-2], block.inner[-1]
        py = patch_index(src.shape_yx[0], self.n_patches_yx[0], ys.start, ys.stop, src.grid_yx[0])
        px = patch_index(src.shape_yx[1], self.n_patches_yx[1], xs.start, xs.stop, src.grid_yx[1])
        pys, pxs = slice(int(py.min()), int(py.max()) + 1), slice(int(px.min()), int(px.max()) + 1)
        feats, colour = src.read(z, pys, pxs)
        labels = self.clusterer.predict(self.embed(feats, colour)).reshape(
            pys.stop - pys.start, pxs.stop - pxs.start
        )
        out = labels[np.ix_(py - pys.start, px - pxs.start)]
        arr = zarr.open_array(self.out, mode="r+")
        arr[block.inner] = (out[None] if src.is_3d else out).astype(arr.dtype)
        return {"counts": np.bincount(out.ravel(), minlength=64)[:64]}  # fixed length: summable over blocks


class _PixelLabels:
    """Block function: labels from the values of each voxel alone (threshold, argmax), written in place."""

    def __init__(self, views: list[ome.SpatialView], out: str, method: str, threshold: float):
        self.views, self.out, self.method, self.threshold = views, out, method, threshold

    def labels(self, box: tuple[slice, ...]) -> np.ndarray:
        if self.method == "threshold":
            return (np.asarray(self.views[0][box]) >= self.threshold).astype(np.uint16) + 1
        best = np.asarray(self.views[0][box], dtype=np.float32)  # argmax, one channel at a time
        labels = np.ones(best.shape, np.uint16)
        for k, view in enumerate(self.views[1:], start=2):
            value = np.asarray(view[box], dtype=np.float32)
            higher = value > best  # ties keep the lower channel, as np.argmax does
            best[higher], labels[higher] = value[higher], k
        return labels

    def __call__(self, block: Block) -> dict:
        labels = self.labels(block.inner)
        arr = zarr.open_array(self.out, mode="r+")
        arr[block.inner] = labels
        n = len(self.views) + 2 if self.method == "argmax" else 3
        return {"counts": np.bincount(labels.ravel(), minlength=n)[:n]}


def pixel_labels(path: str | Path, out: str | Path, params: ClusterParams) -> dict:
    """Labels of an OME-Zarr map from each voxel's values, blockwise.

    ``threshold``: 2 where the value of channel ``preprocess.channel`` is >= ``params.threshold``,
    else 1. ``argmax``: 1 + the channel with the highest value (a map with one channel per class).
    """
    t0 = time.perf_counter()
    image = ome.open_image(path)  # a label image too: threshold 0.5 of ground truth is its foreground
    n_channels = dict(zip(image.axes, image.shape, strict=True)).get("c", 1)
    t = params.preprocess.timepoint
    if params.method == "argmax":
        if n_channels < 2:
            raise InputError(f"argmax needs a map with one channel per class, got {n_channels} channel(s)", path)
        views = [ome.SpatialView.of(image, channel=c, timepoint=t) for c in range(n_channels)]
    else:
        views = [ome.SpatialView.of(image, channel=max(params.preprocess.channel, 0), timepoint=t)]
    view = views[0]
    if view.ndim not in (2, 3):
        raise InputError(f"expected a 2D or 3D image, got spatial shape {view.shape}", path)
    axes = "".join(a for a in image.axes if a in "zyx")
    scale = list(image.spatial_scale)
    chunks = (1, *params.chunks) if view.ndim == 3 else tuple(params.chunks)
    attrs = {"stage": "cluster", "source": str(path), "kind": params.method, "method": params.method}
    if params.method == "threshold":
        attrs["threshold"] = params.threshold
    with ome.atomic_output(out) as tmp:
        ome.create_image(
            tmp, shape=view.shape, dtype="uint16", axes=axes, scale=scale, chunks=chunks, is_label=True,
            name=Path(str(out)).name, attrs=attrs, translation=image.spatial_translation,
        )
        yx = tuple(-(-b // c) * c for b, c in zip(params.block_shape, params.chunks, strict=True))
        grid = BlockGrid(view.shape, (1, *yx) if view.ndim == 3 else yx)
        fn = _PixelLabels(views, str(Path(tmp) / "0"), params.method, params.threshold)
        summaries = map_blocks(fn, grid, name=params.method, dask_params=params.dask)
    counts = np.sum([s["counts"] for s in summaries], axis=0)
    log.info("cluster: %s -> %s (%s) in %.1f s", path, out, params.method, time.perf_counter() - t0)
    return {"kind": params.method, "n_clusters": int((counts[1:] > 0).sum()), "counts": counts}


def threshold(path: str | Path, out: str | Path, params: ClusterParams | None = None) -> dict:
    """Two-class label image of an OME-Zarr map: 2 where value >= ``params.threshold``, else 1."""
    params = params or ClusterParams(method="threshold")
    return pixel_labels(path, out, dataclasses.replace(params, method="threshold"))


def argmax(path: str | Path, out: str | Path, params: ClusterParams | None = None) -> dict:
    """Label image 1..K of a K-channel soft class map (the channel with the highest value)."""
    params = params or ClusterParams(method="argmax")
    return pixel_labels(path, out, dataclasses.replace(params, method="argmax"))


def cluster(
    path: str | Path,
    out: str | Path,
    params: ClusterParams | None = None,
    image: str | Path | None = None,
    foreground: str | Path | None = None,
) -> dict:
    """Cluster a feature volume (or, given an OME-Zarr image, its m x m colour patches) into ``out``.

    ``out`` is a label OME-Zarr (NGFF image-label) with the spatial geometry of the image.
    Returns a summary: kind, number of clusters found, pixel count per label.
    With ``method: threshold``, ``path`` is an image (e.g. a probability map) split at ``threshold``.
    ``foreground``: a label / mask OME-Zarr; pixel embeddings are clustered inside its pixels > 0 only.
    """
    params = params or ClusterParams()
    if params.foreground == "ground_truth" and foreground is None:
        raise ConfigError(
            "cluster.foreground: ground_truth needs the foreground image (zarrseg cluster --foreground "
            "GT.ome.zarr; the workflow passes the sample's ground truth)"
        )
    if params.method == "threshold":
        return threshold(path, out, params)
    if params.method == "argmax":
        return argmax(path, out, params)
    from .embedding_cluster import METHODS, cluster_embeddings, is_embedding_input

    meta = is_embedding_input(path)
    if meta is not None:
        return cluster_embeddings(path, out, params, meta, foreground)
    if foreground is not None:
        raise ConfigError(f"a foreground mask applies to pixel embeddings; {path} holds none")
    if params.method in METHODS and params.method != "hdbscan":
        raise ConfigError(f"cluster.method {params.method!r} clusters pixel embeddings; {path} holds none")
    if params.method == "auto":
        params = dataclasses.replace(params, method="kmeans")
    t0 = time.perf_counter()
    src = _Source(path, params, image)
    if params.superpixels is not None:
        if src.kind != "colour":
            raise ConfigError("cluster.superpixels applies to the colour baseline (an image), not to features")
        from .superpixel_cluster import cluster_superpixels

        return cluster_superpixels(src.src, out, params)
    rng = np.random.default_rng(params.seed)
    patch_grid = BlockGrid((src.n_slices, *src.grid_yx), (1, 256, 256))
    total = src.n_slices * src.grid_yx[0] * src.grid_yx[1]
    fs, cs = [], []
    for block, keep in _sample_blocks(patch_grid, total, params.max_fit_samples, rng):
        f, c = src.read(block.inner[0].start, *block.inner[1:])
        fs.append(None if f is None else f[keep])
        cs.append(None if c is None else c[keep])
    feats = None if fs[0] is None else np.concatenate(fs).astype(np.float32)
    colour = None if cs[0] is None else np.concatenate(cs).astype(np.float32)
    embed = Embedding(params).fit(feats, colour)
    x = embed(feats, colour)
    if len(x) < params.n_clusters:
        raise InputError(f"only {len(x)} patches to cluster, fewer than n_clusters={params.n_clusters}", path)
    clusterer = Clusterer(params).fit(x)
    log.info(
        "cluster: fitted %s on %d x %d (%s) in %.1f s",
        params.method,
        *x.shape,
        src.kind,
        time.perf_counter() - t0,
    )
    spatial_axes = "".join(a for a in src.axes if a in "zyx")
    spatial_scale = [s for a, s in zip(src.axes, src.scale, strict=True) if a in "zyx"]
    if not src.is_3d and len(spatial_axes) == 3:  # a 3D image with one slice stays 3D
        spatial_axes, spatial_scale = "yx", spatial_scale[-2:]
    shape = (src.n_slices, *src.shape_yx) if src.is_3d else src.shape_yx
    if src.kind == "features":
        # The patch grid covers the *resized* image: pixel -> patch goes through the resize factor.
        n_patches_yx: tuple[float, float] = src.grid_yx
    else:
        m = params.colour_patch
        n_patches_yx = (src.shape_yx[0] / m, src.shape_yx[1] / m)
    with ome.atomic_output(out) as tmp:
        chunks = (1, *params.chunks) if src.is_3d else tuple(params.chunks)
        arr = ome.create_image(
            tmp,
            shape=shape,
            dtype="uint16",
            axes=spatial_axes,
            scale=spatial_scale,
            chunks=chunks,
            is_label=True,
            name=Path(str(out)).name,
            attrs={"stage": "cluster", "source": str(path), "kind": src.kind, "method": params.method},
        )
        # Blocks are whole chunks: two blocks never write the same chunk concurrently.
        yx = tuple(-(-b // c) * c for b, c in zip(params.block_shape, params.chunks, strict=True))
        block_shape = (1, *yx) if src.is_3d else yx
        grid = BlockGrid(shape, block_shape)
        fn = _LabelBlock(src, embed, clusterer, str(Path(tmp) / "0"), n_patches_yx)
        summaries = map_blocks(fn, grid, name="cluster", dask_params=params.dask)
        del arr
    counts = np.sum([s["counts"] for s in summaries], axis=0)
    log.info("cluster: %s labels written in %.1f s", out, time.perf_counter() - t0)
    return {"kind": src.kind, "n_clusters": int((counts[1:] > 0).sum()), "counts": counts}

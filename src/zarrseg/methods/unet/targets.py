"""Training targets from instance labels: boundaries (PlantSeg Eq. 2.1), foreground, affinities.

Every target comes with a mask of the voxels that are supervised (label ``ignore_label`` and,
for partial supervision, unselected objects are excluded), so losses never learn from
unlabelled regions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage
from skimage.segmentation import find_boundaries

from ...errors import ConfigError


@dataclass
class TargetParams:
    """What the network learns (config section ``train.target``)."""

    kind: Literal["boundaries", "foreground", "affinities"] = "boundaries"
    sigma: float = 1.0  # Eq. 2.1: Gaussian smoothing of the boundary image before thresholding
    threshold: float = 0.5  # Eq. 2.1 threshold
    mode: Literal["thick", "inner", "outer"] = "thick"  # skimage find_boundaries mode
    offsets: list[list[int]] | None = None  # affinities; default: the direct neighbour along each axis
    ignore_label: int | None = None  # label value that is not supervised (e.g. unannotated)
    background_is_boundary: bool = False  # label 0 is membrane (e.g. ISBI 2012 labels), part of the boundary

    def validate(self) -> None:
        if self.sigma < 0:
            raise ConfigError(f"train.target.sigma must be >= 0, got {self.sigma}")

    def channels(self, ndim: int) -> int:
        return len(self.affinity_offsets(ndim)) if self.kind == "affinities" else 1

    def affinity_offsets(self, ndim: int) -> list[tuple[int, ...]]:
        if self.offsets:
            if any(len(o) != ndim for o in self.offsets):
                raise ConfigError(f"train.target.offsets must have {ndim} entries each, got {self.offsets}")
            return [tuple(o) for o in self.offsets]
        return [tuple(-1 if a == b else 0 for b in range(ndim)) for a in range(ndim)]

    def halo(self, ndim: int) -> int:
        """Context a patch needs around it so its target equals the whole-volume target."""
        h = 1 + (int(np.ceil(4 * self.sigma)) if self.kind == "boundaries" else 0)
        if self.kind == "affinities":
            h = max(abs(v) for o in self.affinity_offsets(ndim) for v in o)
        return h


def boundaries(
    labels: np.ndarray, sigma: float = 1.0, threshold: float = 0.5, mode: str = "thick"
) -> np.ndarray:
    """PlantSeg Eq. 2.1: find_boundaries, Gaussian smoothing (sigma), threshold; float32 in {0, 1}."""
    b = find_boundaries(labels, mode=mode).astype(np.float32)
    if sigma > 0:
        b = ndimage.gaussian_filter(b, sigma, truncate=4.0) > threshold
    return b.astype(np.float32)


def affinities(labels: np.ndarray, offsets: list[tuple[int, ...]]) -> tuple[np.ndarray, np.ndarray]:
    """Boundary-style affinities: 1 where the voxel and its offset neighbour differ (or are background).

    Returns (target, valid) of shape (len(offsets), *labels.shape); ``valid`` is 0 where the
    neighbour lies outside the array.
    """
    out = np.zeros((len(offsets), *labels.shape), dtype=np.float32)
    valid = np.zeros_like(out)
    for c, off in enumerate(offsets):
        dst, src = [], []
        for o, n in zip(off, labels.shape, strict=True):
            dst.append(slice(max(-o, 0), n - max(o, 0)))
            src.append(slice(max(o, 0), n - max(-o, 0)))
        a, b = labels[tuple(dst)], labels[tuple(src)]
        out[(c, *dst)] = ((a != b) | (a == 0) | (b == 0)).astype(np.float32)
        valid[(c, *dst)] = 1.0
    return out, valid


def make_target(
    labels: np.ndarray, params: TargetParams, supervised: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(target, mask), both float32 of shape (channels, *labels.shape).

    ``supervised``: boolean array of voxels whose objects are labelled (partial supervision);
    their 1-voxel surroundings are supervised too so the object's boundary is learned.
    """
    labels = np.asarray(labels)
    mask = np.ones(labels.shape, dtype=bool)
    if params.ignore_label is not None:
        mask &= labels != params.ignore_label
        labels = np.where(labels == params.ignore_label, 0, labels)
    if supervised is not None:
        mask &= ndimage.binary_dilation(supervised, iterations=2)
    if params.kind == "boundaries":
        target = boundaries(labels, params.sigma, params.threshold, params.mode)[None]
        if params.background_is_boundary:
            target = np.maximum(target, (labels == 0)[None].astype(np.float32))
        m = mask[None].astype(np.float32)
    elif params.kind == "foreground":
        target = (labels > 0).astype(np.float32)[None]
        m = mask[None].astype(np.float32)
    else:
        target, valid = affinities(labels, params.affinity_offsets(labels.ndim))
        m = valid * mask[None]
    return target, m.astype(np.float32)

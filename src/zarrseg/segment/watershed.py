"""Distance-transform watershed of one block: the only place that calls elf's watershed.

3D: ``elf.segmentation.watershed.distance_transform_watershed``; stacked-2D mode (PlantSeg's
2D superpixels): ``elf.segmentation.watershed.stacked_watershed`` with the same function per
z-slice. Runs single-threaded: blocks are the unit of parallelism.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from elf.segmentation.watershed import distance_transform_watershed, stacked_watershed


@dataclass(frozen=True)
class WatershedSettings:
    threshold: float
    sigma_seeds: float
    sigma_weights: float
    min_size: int
    alpha: float
    pixel_pitch: tuple[float, ...] | None
    stacked_2d: bool

    def kwargs(self, ndim: int) -> dict:
        return {
            "threshold": self.threshold,
            "sigma_seeds": self.sigma_seeds,
            "sigma_weights": self.sigma_weights,
            "min_size": self.min_size,
            "alpha": self.alpha,
            "pixel_pitch": None if self.pixel_pitch is None else list(self.pixel_pitch)[-ndim:],
        }


def dt_watershed(boundaries: np.ndarray, s: WatershedSettings, mask: np.ndarray | None = None) -> np.ndarray:
    """Supervoxels (uint64, 0 = masked out) of one block read with its halo."""
    if mask is not None and not mask.any():
        return np.zeros(boundaries.shape, np.uint64)
    if s.stacked_2d and boundaries.ndim == 3:
        labels, _ = stacked_watershed(boundaries, mask=mask, n_threads=1, **s.kwargs(2))
    else:
        labels, _ = distance_transform_watershed(boundaries, mask=mask, **s.kwargs(boundaries.ndim))
    return labels.astype(np.uint64, copy=False)

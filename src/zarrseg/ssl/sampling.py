"""Random training tiles read lazily from OME-Zarr images (pretraining and fine-tuning).

Only the window of each sampled tile is read from disk, so the training set can be far
larger than memory; intensity scaling and normalisation come from ``ImageSource`` so
training and feature extraction see identically pre-processed pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from .tiling import ImageSource, Preprocess, resize_box


class TileSampler:
    """Draws (3, size, size) normalised tiles at random positions of random images/slices."""

    def __init__(self, images: Sequence[str | Path], prep: Preprocess, size: int, seed: int = 0):
        if not images:
            raise ConfigError("no training images given (parameter 'images' is empty)")
        self.sources = [ImageSource(p, prep) for p in images]
        self.size = size
        self.rng = np.random.default_rng(seed)
        # Images are drawn proportionally to their area so every pixel is equally likely.
        areas = np.array([s.n_slices * s.shape_yx[0] * s.shape_yx[1] for s in self.sources], dtype=np.float64)
        self.weights = areas / areas.sum()

    def tile(self, rng: np.random.Generator | None = None) -> np.ndarray:
        rng = self.rng if rng is None else rng
        src = self.sources[rng.choice(len(self.sources), p=self.weights)]
        z = int(rng.integers(src.n_slices))
        h, w = src.shape_yx
        # Tiles live at the scale of the resized image the feature stage sees.
        sy, sx = src.resized_yx[0] / h, src.resized_yx[1] / w
        th, tw = min(h, round(self.size / sy)), min(w, round(self.size / sx))
        y0, x0 = int(rng.integers(h - th + 1)), int(rng.integers(w - tw + 1))
        raw = src.read_raw(z, slice(y0, y0 + th), slice(x0, x0 + tw))
        if raw.shape[1:] != (self.size, self.size):
            raw = resize_box(
                lambda ys, xs: raw[:, ys, xs],
                raw.shape[1:],
                (self.size, self.size),
                (slice(0, self.size), slice(0, self.size)),
            )
        return src.normalise(raw).astype(np.float32)

    def batch(self, n: int, rng: np.random.Generator | None = None) -> torch.Tensor:
        """``n`` tiles; with ``rng`` (e.g. seeded by the training step) instead of the sampler's own."""
        return torch.from_numpy(np.stack([self.tile(rng) for _ in range(n)]))

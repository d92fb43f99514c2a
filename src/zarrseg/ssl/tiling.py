"""Pre-processing of images for the ViT: resize to tile multiples, grey -> RGB, normalise, tile.

Follows the thesis: bilinear resize so both sides are multiples of the tile size (nearest
multiple: 1536 x 2048 -> 1600 x 1920 for 320-px tiles), grey replicated to three channels,
normalisation with ImageNet statistics (for DINO weights) or the image's own statistics
(colour baseline), 320 x 320 tiles, 3D volumes slice by slice.

Everything works on boxes of the *resized* image so that huge images stream tile by tile:
``ImageSource.read_resized`` reads only the source window a box needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .. import ome
from ..errors import ConfigError, InputError
from ..params import check_percentiles

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass
class Preprocess:
    """How raw intensities become ViT input (config section ``features.preprocess``)."""

    tile_size: int = 320
    normalize: Literal["imagenet", "dataset"] = "imagenet"
    percentiles: tuple[float, float] = (1.0, 99.8)  # raw range mapped to [0, 1] before normalising
    channel: int = -1  # -1: RGB if the image has 3 channels, else channel 0; >= 0: that channel as grey
    timepoint: int = 0
    resize: bool = True  # False: no resize; the image sides must already be multiples of tile_size

    def validate(self) -> None:
        if self.tile_size < 8:
            raise ConfigError(f"tile_size must be >= 8, got {self.tile_size}")
        check_percentiles(*self.percentiles, "percentiles")


def tiled_length(n: int, tile: int) -> int:
    """Nearest multiple of ``tile`` to ``n`` (at least one tile): the thesis' resize target."""
    return max(1, int(round(n / tile))) * tile


def _axis_weights(n_src: int, n_dst: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Same sampling as torch.nn.functional.interpolate(mode="bilinear", align_corners=False):
    # computed per box so a blockwise resize equals the whole-image resize exactly.
    scale = n_src / n_dst
    pos = (np.arange(start, stop, dtype=np.float64) + 0.5) * scale - 0.5
    pos = np.clip(pos, 0, None)
    i0 = np.minimum(np.floor(pos).astype(np.int64), n_src - 1)
    i1 = np.minimum(i0 + 1, n_src - 1)
    w1 = (pos - i0).astype(np.float32)
    return i0, i1, w1


def resize_box(
    read, src_shape: tuple[int, int], dst_shape: tuple[int, int], box: tuple[slice, slice]
) -> np.ndarray:
    """Bilinear resize of a (C, H, W) image to ``dst_shape``, computing only ``box`` of the result.

    ``read(ybox, xbox)`` returns the (C, h, w) source window; only the rows/columns the box
    needs are read. skimage/torch resize whole arrays; this is their sampling, restricted to a box.
    """
    (ys, xs) = box
    yi0, yi1, wy = _axis_weights(src_shape[0], dst_shape[0], ys.start, ys.stop)
    xi0, xi1, wx = _axis_weights(src_shape[1], dst_shape[1], xs.start, xs.stop)
    y_lo, y_hi = int(yi0.min()), int(yi1.max()) + 1
    x_lo, x_hi = int(xi0.min()), int(xi1.max()) + 1
    src = read(slice(y_lo, y_hi), slice(x_lo, x_hi)).astype(np.float32, copy=False)
    yi0, yi1, xi0, xi1 = yi0 - y_lo, yi1 - y_lo, xi0 - x_lo, xi1 - x_lo
    rows = src[:, yi0] * (1 - wy)[None, :, None] + src[:, yi1] * wy[None, :, None]
    return rows[:, :, xi0] * (1 - wx) + rows[:, :, xi1] * wx


def to_tiles(image: np.ndarray, tile: int) -> np.ndarray:
    """(C, H, W) with H, W multiples of ``tile`` -> (n_tiles, C, tile, tile) in row-major tile order."""
    c, h, w = image.shape
    if h % tile or w % tile:
        raise ValueError(f"image {h}x{w} is not a multiple of the tile size {tile}")
    return (
        image.reshape(c, h // tile, tile, w // tile, tile).transpose(1, 3, 0, 2, 4).reshape(-1, c, tile, tile)
    )


def from_tiles(tiles: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of ``to_tiles`` (works for any per-tile resolution, e.g. patch-token maps)."""
    n, c, th, tw = tiles.shape
    gy, gx = shape[0] // th, shape[1] // tw
    if gy * gx != n:
        raise ValueError(f"{n} tiles of {th}x{tw} do not make an image of {shape}")
    return tiles.reshape(gy, gx, c, th, tw).transpose(2, 0, 3, 1, 4).reshape(c, gy * th, gx * tw)


class ImageSource:
    """An OME-Zarr image seen as a stack of 2D (C=1|3, Y, X) slices, read lazily.

    Holds the intensity range (robust percentiles of a strided sample) and the statistics used
    for normalisation, so every tile of the image is treated identically.
    """

    def __init__(self, path: str | Path, prep: Preprocess | None = None, max_sample: int = 2_000_000):
        self.path = Path(path)
        self.prep = prep or Preprocess()
        self.image = ome.open_image(self.path)
        ome.check_intensity(self.image)  # a label image given as the raw image: refused before any pass over it
        axes = self.image.axes
        if "y" not in axes or "x" not in axes:
            raise InputError(f"image axes {axes!r} have no y/x", self.path)
        n_channels = self.image.shape[axes.index("c")] if "c" in axes else 1
        if self.prep.channel >= 0:
            self.channels = [self.prep.channel]
        else:
            self.channels = [0, 1, 2] if n_channels == 3 else [0]
        if max(self.channels) >= n_channels:
            raise InputError(f"channel {max(self.channels)} out of range (image has {n_channels})", self.path)
        self.views = [
            ome.SpatialView.of(self.image, channel=c, timepoint=self.prep.timepoint) for c in self.channels
        ]
        shape = self.views[0].shape
        if len(shape) not in (2, 3):
            raise InputError(f"expected a 2D or 3D image, got spatial shape {shape}", self.path)
        self.is_3d = len(shape) == 3
        self.n_slices = shape[0] if self.is_3d else 1
        self.shape_yx: tuple[int, int] = (int(shape[-2]), int(shape[-1]))
        t = self.prep.tile_size
        if self.prep.resize:
            self.resized_yx = (tiled_length(self.shape_yx[0], t), tiled_length(self.shape_yx[1], t))
        else:
            if self.shape_yx[0] % t or self.shape_yx[1] % t:
                raise InputError(
                    f"sides {self.shape_yx} are not multiples of tile_size {t} and resize is off", self.path
                )
            self.resized_yx = self.shape_yx
        self.low, self.high, self.mean, self.std = self._statistics(max_sample)

    @property
    def n_colour(self) -> int:
        return len(self.channels)

    def _statistics(self, max_sample: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        shape = self.views[0].shape
        step = max(1, int(np.ceil((np.prod(shape) / max_sample) ** (1 / len(shape)))))
        box = tuple(slice(0, s, step) for s in shape)
        lows, highs, means, stds = [], [], [], []
        for view in self.views:
            sample = view[box].astype(np.float32)
            self._check_finite(sample, "a strided sample")
            lo, hi = np.percentile(sample, self.prep.percentiles)
            hi = hi if hi > lo else lo + 1.0
            scaled = np.clip((sample - lo) / (hi - lo), 0, 1)
            (
                lows.append(lo),
                highs.append(hi),
                means.append(scaled.mean()),
                stds.append(max(scaled.std(), 1e-3)),
            )
        return (
            np.array(lows, np.float32),
            np.array(highs, np.float32),
            np.array(means, np.float32),
            np.array(stds, np.float32),
        )

    def read_raw(self, z: int, ys: slice, xs: slice) -> np.ndarray:
        """(C, h, w) float32 source window of slice ``z`` scaled to [0, 1]."""
        box = (slice(z, z + 1), ys, xs) if self.is_3d else (ys, xs)
        out = np.stack([v[box].reshape(ys.stop - ys.start, xs.stop - xs.start) for v in self.views]).astype(
            np.float32
        )
        self._check_finite(out, f"slice {z}, rows {ys.start}:{ys.stop}, columns {xs.start}:{xs.stop}")
        return np.clip((out - self.low[:, None, None]) / (self.high - self.low)[:, None, None], 0, 1)

    def _check_finite(self, values: np.ndarray, where: str) -> None:
        """NaN would pass np.clip and come out as NaN features, embeddings or a diverged training."""
        if not np.isfinite(values).all():
            bad = int(values.size - np.count_nonzero(np.isfinite(values)))
            raise InputError(f"holds NaN or Inf values ({bad} of {values.size} in {where}); replace them "
                             "(e.g. by 0) first", self.path)

    def read_resized(self, z: int, box: tuple[slice, slice]) -> np.ndarray:
        """(C, h, w) box of the resized slice ``z``, intensities in [0, 1]."""
        if self.resized_yx == self.shape_yx:
            return self.read_raw(z, *box)
        return resize_box(lambda ys, xs: self.read_raw(z, ys, xs), self.shape_yx, self.resized_yx, box)

    def normalise(self, x: np.ndarray) -> np.ndarray:
        """[0, 1] (C, h, w) -> normalised (3, h, w) network input (grey replicated to 3 channels)."""
        if self.prep.normalize == "imagenet":
            mean, std = IMAGENET_MEAN, IMAGENET_STD
            if x.shape[0] == 1:
                x = np.repeat(x, 3, axis=0)
        else:
            mean, std = self.mean, self.std
            x = (x - mean[:, None, None]) / std[:, None, None]
            return np.repeat(x, 3, axis=0) if x.shape[0] == 1 else x
        return (x - mean[:, None, None]) / std[:, None, None]

    def tile(self, z: int, ty: int, tx: int) -> np.ndarray:
        """Normalised (3, tile, tile) network input of tile (ty, tx) of slice ``z``."""
        t = self.prep.tile_size
        return self.normalise(
            self.read_resized(z, (slice(ty * t, (ty + 1) * t), slice(tx * t, (tx + 1) * t)))
        )

"""Training data of the W-Net: whole images (or chosen slices of volumes) and augmented patches.

A W-Net learns from one or a few images (few-shot, §2.1): each training image is held in memory
whole, normalised with the statistics of its whole volume (the statistics the tiled predictor
computes, so prediction sees the intensities training saw), and is the input of the
segmentation losses at every step. The reconstruction loss of the "Patch" types uses square
patches of several sizes, cut at random places of the images, flipped and rotated by multiples
of 90 degrees; a fraction of them may be centred on foreground pixels (above Otsu's threshold of
the mean channel), for images where the background predominates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ... import ome
from ...errors import ConfigError, InputError
from ...normalize import apply, volume_stats
from .params import WNetParams

log = logging.getLogger(__name__)


@dataclass
class TrainingImage:
    """One 2D training image: (C, H, W) float32 normalised, and where it came from."""

    x: np.ndarray
    source: str
    z: int | None = None
    foreground: np.ndarray | None = None  # flat indices of foreground pixels (patch centres)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.x.shape[1]), int(self.x.shape[2])

    @property
    def name(self) -> str:
        return self.source if self.z is None else f"{self.source} z={self.z}"


def image_channels(image: ome.Image) -> int:
    return int(dict(zip(image.axes, image.shape, strict=True)).get("c", 1))


def load_images(params: WNetParams) -> list[TrainingImage]:
    """Every training image (every chosen slice of a 3D image), normalised per channel."""
    if not params.images:
        raise ConfigError("wnet.images needs at least one OME-Zarr image (the workflow fills it in)")
    out: list[TrainingImage] = []
    channels = None
    for path in params.images:
        image = ome.open_image(path)
        n_c = image_channels(image)
        if channels is not None and n_c != channels:
            raise InputError(f"has {n_c} channel(s) but the other training images have {channels}", path)
        channels = n_c
        views = [ome.SpatialView.of(image, channel=c) for c in range(n_c)]
        if views[0].ndim not in (2, 3):
            raise InputError(f"expected a 2D image or a 3D stack, got spatial shape {views[0].shape}", path)
        stats = [volume_stats(v, params.normalization) for v in views]
        if views[0].ndim == 2:
            if params.slices is not None:
                raise InputError(f"wnet.slices {params.slices} given but the image is 2D", path)
            planes: list[int | None] = [None]
        else:
            n_z = views[0].shape[0]
            planes = list(params.slices) if params.slices is not None else list(range(n_z))
            bad = [z for z in planes if z >= n_z]
            if bad:
                raise InputError(f"wnet.slices {bad} out of range: the stack has {n_z} slices", path)
        for z in planes:
            box = (slice(None), slice(None)) if z is None else (z, slice(None), slice(None))
            x = np.stack([apply(v[box], st, params.normalization) for v, st in zip(views, stats, strict=True)])
            out.append(TrainingImage(x=x.astype(np.float32), source=str(path), z=z))
    if params.patches.foreground > 0:
        for item in out:
            item.foreground = foreground_pixels(item.x)
    return out


def foreground_pixels(x: np.ndarray) -> np.ndarray:
    """Flat indices of the pixels above Otsu's threshold of the channel mean (empty: none)."""
    from skimage.filters import threshold_otsu

    grey = x.mean(axis=0)
    if float(grey.max()) <= float(grey.min()):
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(grey.ravel() > threshold_otsu(grey))


def check_patch_sizes(images: list[TrainingImage], sizes: list[int]) -> None:
    """A patch larger than a training image is a configuration error (one line)."""
    for item in images:
        h, w = item.shape
        too_big = [s for s in sizes if s > min(h, w)]
        if too_big:
            raise ConfigError(
                f"wnet.patches.sizes {too_big} are larger than the training image {item.name} ({h} x {w}); "
                "use smaller patches or reconstruction: image"
            )


def per_step(counts: list[int], batches_per_epoch: int) -> list[int]:
    """Patches of each size per image and step: an epoch's count split over its mini-batches."""
    return [max(1, int(round(c / batches_per_epoch))) for c in counts]


def sample_patches(
    images: list[TrainingImage], size: int, n_per_image: int, rng: np.random.Generator, foreground: float = 0.0
) -> torch.Tensor:
    """(n_per_image * len(images), C, size, size) patches: random place, flip and rot90 (§2.1)."""
    out = []
    for item in images:
        h, w = item.shape
        for _ in range(n_per_image):
            if item.foreground is not None and item.foreground.size and rng.random() < foreground:
                centre = int(item.foreground[rng.integers(item.foreground.size)])
                cy, cx = divmod(centre, w)
                y0 = int(np.clip(cy - size // 2, 0, h - size))
                x0 = int(np.clip(cx - size // 2, 0, w - size))
            else:
                y0, x0 = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
            patch = item.x[:, y0 : y0 + size, x0 : x0 + size]
            if rng.random() < 0.5:
                patch = patch[:, :, ::-1]
            patch = np.rot90(patch, int(rng.integers(4)), axes=(1, 2))
            out.append(np.ascontiguousarray(patch))
    return torch.from_numpy(np.stack(out))


def pad_to(x: torch.Tensor, divisor: int) -> torch.Tensor:
    """A (C, H, W) image reflect-padded at the bottom / right to multiples of ``divisor`` (as the
    tiled predictor pads a tile that reaches past the image)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % divisor, (-w) % divisor
    if not ph and not pw:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return torch.nn.functional.pad(x[None], (0, pw, 0, ph), mode=mode)[0]

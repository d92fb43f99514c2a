"""Patch augmentations (numpy, run in DataLoader workers): flips, rot90, elastic, blur, noise, jitter.

Geometric transforms act on image and labels together *before* targets are computed, so a
deformed patch gets a target computed from deformed labels (thin boundaries stay thin).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ...errors import ConfigError


@dataclass
class AugmentParams:
    """Config section ``train.augment``; probabilities are per patch."""

    flip: bool = True  # random flips along every spatial axis
    rot90: bool = True  # random multiples of 90 degrees in the yx plane
    elastic: float = 0.3  # probability of an elastic deformation
    elastic_alpha: float = 4.0  # displacement amplitude (voxels)
    elastic_sigma: float = 8.0  # smoothness of the displacement field (voxels)
    gaussian_noise: float = 0.5  # probability of additive Gaussian noise
    noise_std: float = 0.1  # its maximum standard deviation (normalised intensity units)
    poisson_noise: float = 0.0  # probability of Poisson (shot) noise
    poisson_peak: float = 50.0  # photons per unit intensity
    jitter: float = 0.5  # probability of contrast/brightness jitter
    jitter_scale: float = 0.2  # contrast factor in [1 - s, 1 + s], brightness shift in [-s, s]
    blur: float = 0.0  # probability of a Gaussian blur
    blur_sigma: float = 1.0  # its maximum sigma (voxels)

    def validate(self) -> None:
        for name in ("elastic", "gaussian_noise", "poisson_noise", "jitter", "blur"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(
                    f"train.augment.{name} is a probability in [0, 1], got {getattr(self, name)}"
                )


def geometric(
    image: np.ndarray, others: list[np.ndarray], rng: np.random.Generator, p: AugmentParams
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The same flip / rot90 / elastic deformation for the image (linear) and label-like arrays (nearest)."""
    nd = image.ndim
    arrays = [image, *others]
    if p.flip:
        for axis in range(nd):
            if rng.random() < 0.5:
                arrays = [np.flip(a, axis) for a in arrays]
    if p.rot90 and image.shape[-1] == image.shape[-2]:
        k = int(rng.integers(4))
        arrays = [np.rot90(a, k, axes=(nd - 2, nd - 1)) for a in arrays]
    if p.elastic > 0 and rng.random() < p.elastic:
        coords = elastic_coordinates(image.shape, rng, p.elastic_alpha, p.elastic_sigma)
        arrays = [
            ndimage.map_coordinates(a, coords, order=1 if i == 0 else 0, mode="reflect").astype(a.dtype)
            for i, a in enumerate(arrays)
        ]
    arrays = [np.ascontiguousarray(a) for a in arrays]
    return arrays[0], arrays[1:]


def elastic_coordinates(shape: tuple[int, ...], rng: np.random.Generator, alpha: float, sigma: float) -> list:
    """Sample coordinates of a smooth random in-plane (y, x) displacement (coarse noise, cubic upsampling)."""
    coarse = [max(2, int(np.ceil(s / sigma))) for s in shape]
    coords = list(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    for axis in range(max(0, len(shape) - 2), len(shape)):  # z is often anisotropic: left alone
        field = rng.normal(0.0, alpha, size=coarse).astype(np.float32)
        zoom = [s / c for s, c in zip(shape, coarse, strict=True)]
        up = ndimage.zoom(field, zoom, order=3, mode="nearest", grid_mode=True)
        coords[axis] += np.pad(
            up, [(0, max(0, s - u)) for s, u in zip(shape, up.shape, strict=True)], mode="edge"
        )[tuple(slice(0, s) for s in shape)]
    return coords


def intensity(image: np.ndarray, rng: np.random.Generator, p: AugmentParams) -> np.ndarray:
    """Gaussian blur, contrast/brightness jitter and Gaussian/Poisson noise on a normalised float32 patch."""
    x = image.astype(np.float32, copy=True)
    if p.blur > 0 and rng.random() < p.blur:
        x = ndimage.gaussian_filter(x, rng.uniform(0, p.blur_sigma)).astype(np.float32)
    if p.jitter > 0 and rng.random() < p.jitter:
        x = x * np.float32(rng.uniform(1 - p.jitter_scale, 1 + p.jitter_scale)) + np.float32(
            rng.uniform(-p.jitter_scale, p.jitter_scale)
        )
    if p.poisson_noise > 0 and rng.random() < p.poisson_noise:
        lo = float(x.min())
        x = (rng.poisson(np.clip(x - lo, 0, None) * p.poisson_peak) / p.poisson_peak + lo).astype(np.float32)
    if p.gaussian_noise > 0 and rng.random() < p.gaussian_noise:
        x = x + rng.normal(0.0, rng.uniform(0, p.noise_std), size=x.shape).astype(np.float32)
    return x

"""A small picture of a segmentation for checking a night at a glance.

The image's middle z-plane (from the pyramid level nearest the thumbnail size, read with a
stride, so a large volume is never loaded whole), contrast-stretched between its 1st and 99.5th
percentile, with the outlines of the labels of the same plane drawn on top: what is outlined is
what is shown (a maximum projection under one plane's outlines showed objects of other planes,
and noise for EM). Small images are enlarged to about ``MIN_SIZE`` pixels. One PNG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from skimage.segmentation import find_boundaries

from .. import ome

OUTLINE_RGB = (255, 40, 200)  # magenta: visible on grey images and on most stains
MIN_SIZE = 384  # pixels on the longest side a small image is enlarged to (whole factors, nearest)


def _pick_level(image: ome.Image, max_size: int) -> int:
    """The finest pyramid level whose y/x fit in ``2 * max_size`` (else the coarsest)."""
    yx = [image.axes.index("y"), image.axes.index("x")]
    for level in range(len(image.level_paths)):
        shape = image.level(level).shape
        if max(shape[i] for i in yx) <= 2 * max_size:
            return level
    return len(image.level_paths) - 1


def middle_plane(image: ome.Image, channel: int = 0, max_size: int = 512) -> np.ndarray:
    """The middle z-plane of one channel (timepoint 0), at most ``max_size`` pixels wide, float32."""
    view = ome.SpatialView.of(image, channel=channel, level=_pick_level(image, max_size))
    step = max(1, -(-max(view.shape[-2:]) // max_size))
    yx = (slice(None, None, step), slice(None, None, step))
    middle = () if view.ndim == 2 else (view.shape[0] // 2,)
    return np.asarray(view[(*middle, *yx)]).astype(np.float32)


def label_plane(labels: ome.Image, shape: tuple[int, int]) -> np.ndarray:
    """The middle z-plane of a label image, nearest-neighbour resampled to ``shape`` (y, x).

    Read with a stride, so a huge plane costs memory of a few thumbnails, not of the plane.
    """
    view = ome.SpatialView.of(labels)
    steps = [max(1, n // s) for n, s in zip(view.shape[-2:], shape, strict=True)]
    middle = () if view.ndim == 2 else (view.shape[0] // 2,)
    plane = view[(*middle, *(slice(None, None, st) for st in steps))]
    rows = np.arange(shape[0]) * plane.shape[0] // shape[0]
    cols = np.arange(shape[1]) * plane.shape[1] // shape[1]
    return plane[np.ix_(rows, cols)]


def thumbnail(image_path: str | Path, labels_path: str | Path | None, output: str | Path,
              channel: int = 0, max_size: int = 512) -> Path:
    """Write the PNG: the middle plane in grey, its label outlines in magenta."""
    image = ome.open_image(image_path)
    proj = middle_plane(image, channel, max_size)
    finite = proj[np.isfinite(proj)]
    lo, hi = np.percentile(finite, [1.0, 99.5]) if finite.size else (0.0, 1.0)
    grey = np.clip((proj - lo) / max(hi - lo, 1e-12), 0, 1)
    rgb = np.repeat((np.nan_to_num(grey) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    if labels_path is not None:
        plane = label_plane(ome.open_image(labels_path), proj.shape)
        rgb[find_boundaries(plane, mode="inner") & (plane > 0)] = OUTLINE_RGB
    factor = max(1, min(MIN_SIZE, max_size) // max(rgb.shape[:2]))  # never beyond max_size
    if factor > 1:  # a 200 x 100 image made a stamp-sized picture
        rgb = rgb.repeat(factor, axis=0).repeat(factor, axis=1)
    with ome.atomic_output(output) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")
    return Path(output)

"""Predicting at the voxel size a model was trained at, block by block.

A network learns the size of cells and membranes in voxels of its training images: run on a
volume sampled 2x coarser, every structure is half the size it expects. ``predict`` therefore
resamples each input region to the model's voxel size, predicts there with the usual tiled,
blended predictor (tiles, margins and halos in *model* voxels) and resamples the blended
prediction back onto the image grid, so the output has the image's shape and scale.

The model grid is a virtual volume of ``round(n * image_voxel / model_voxel)`` voxels per axis,
aligned to the image by voxel centres. Resampling is linear (scipy ``affine_transform`` with a
diagonal matrix), preceded when it downsamples by a Gaussian anti-aliasing filter with
skimage's ``(factor - 1) / 2`` sigma. Every value depends only on global coordinates and a
support that each block reads in full (clipped only at the volume border), so blocks agree
where they meet and memory is bounded by the block, never the volume.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .. import ome

log = logging.getLogger(__name__)

SAME_SCALE = 1.02  # voxel sizes within 2 % count as equal (metadata rounding); resampling would only blur
WARN_FACTOR = 1.5  # above this factor on any axis, predicting without rescaling gets a warning
TRUNCATE = 4.0  # Gaussian kernel radius in sigmas (scipy's default)


def image_voxel_size(image: ome.Image) -> list[float] | None:
    """µm per voxel along the image's spatial axes, or None when unknown.

    Unknown means every axis is at 1.0, the fallback ingest writes when the file has no physical
    size, unless the user gave ``ingest.voxel_size`` explicitly.
    """
    scale = [float(s) for s in image.spatial_scale]
    if any(abs(s - 1.0) > 1e-9 for s in scale):
        return scale
    given = (image.attrs.get("ingest_params") or {}).get("voxel_size")
    return scale if given is not None else None


def _support(dst: slice, step: float, n_src: int, reduce: str = "mean") -> slice:
    """Source voxels that dst voxels ``dst`` interpolate from (``step``: source voxels per dst voxel)."""
    lo = (dst.start + 0.5) * step - 0.5
    hi = (dst.stop - 0.5) * step - 0.5
    halo = _halo(step, reduce)
    return slice(max(0, math.floor(lo) - halo), min(n_src, math.floor(hi) + 2 + halo))


def _sigma(step: float) -> float:
    """Anti-aliasing sigma (source voxels) when one dst voxel spans ``step`` > 1 source voxels."""
    return max(0.0, (step - 1.0) / 2.0)


def _halo(step: float, reduce: str) -> int:
    """Radius (source voxels) of the filter applied before sampling: Gaussian (mean) or maximum."""
    if reduce == "max":
        return max(0, math.ceil((step - 1.0) / 2.0))
    return int(TRUNCATE * _sigma(step) + 0.5)  # scipy's Gaussian kernel radius


def resample(
    x: np.ndarray, src_box: tuple[slice, ...], dst_box: tuple[slice, ...], steps, reduce: str = "mean"
) -> np.ndarray:
    """Values at the voxel centres of ``dst_box`` of an array covering ``src_box`` of the source grid.

    ``steps[a]`` is the number of source voxels per destination voxel along spatial axis ``a``;
    leading (channel) axes of ``x`` are kept. Where a dst voxel spans several source voxels,
    ``reduce="mean"`` low-passes first (anti-aliasing) and ``"max"`` takes the maximum over the
    dst voxel's footprint, which keeps thin structures (a membrane one source voxel thick) at
    full strength instead of diluting them.
    """
    lead = x.ndim - len(steps)
    x = np.asarray(x, dtype=np.float32)
    if reduce == "max":
        size = [1] * lead + [2 * _halo(s, "max") + 1 for s in steps]
        if any(v > 1 for v in size):
            x = ndimage.maximum_filter(x, size=size, mode="nearest")
    else:
        sigma = [0.0] * lead + [_sigma(s) for s in steps]
        if any(sigma):
            x = ndimage.gaussian_filter(x, sigma, mode="nearest", truncate=TRUNCATE)
    offset = [0.0] * lead + [
        (d.start + 0.5) * s - 0.5 - b.start for d, s, b in zip(dst_box, steps, src_box, strict=True)
    ]
    shape = x.shape[:lead] + tuple(d.stop - d.start for d in dst_box)
    return ndimage.affine_transform(
        x, np.array([1.0] * lead + list(steps)), offset=offset, output_shape=shape, order=1, mode="nearest"
    )


@dataclass(frozen=True)
class Resampling:
    """The model grid of an image and the maps between the two grids."""

    image_shape: tuple[int, ...]
    ratio: tuple[float, ...]  # model voxel / image voxel per axis: image voxels per model voxel
    output_reduce: str = "mean"  # how a coarser image grid samples the prediction ("max": boundary maps)

    @property
    def model_shape(self) -> tuple[int, ...]:
        return tuple(max(1, round(n / r)) for n, r in zip(self.image_shape, self.ratio, strict=True))

    def model_box(self, image_box: tuple[slice, ...]) -> tuple[slice, ...]:
        """Model voxels the image voxels of ``image_box`` are interpolated from."""
        return tuple(
            _support(b, 1.0 / r, n, self.output_reduce)
            for b, r, n in zip(image_box, self.ratio, self.model_shape, strict=True)
        )

    def to_image(
        self, y: np.ndarray, model_box: tuple[slice, ...], image_box: tuple[slice, ...]
    ) -> np.ndarray:
        """The prediction ``y`` over ``model_box`` (leading channel axes kept) at the voxels of ``image_box``."""
        return resample(y, model_box, image_box, [1.0 / r for r in self.ratio], self.output_reduce)

    def image_box(self, model_box: tuple[slice, ...]) -> tuple[slice, ...]:
        """Image voxels the model voxels of ``model_box`` are interpolated from."""
        return tuple(
            _support(b, r, n) for b, r, n in zip(model_box, self.ratio, self.image_shape, strict=True)
        )

    def image_blocks(self, model_block: list[int]) -> list[int]:
        """An image-grid block shape whose model box is about ``model_block``."""
        return [
            min(n, max(1, math.ceil(b * r)))
            for b, r, n in zip(model_block, self.ratio, self.image_shape, strict=True)
        ]


class ResampledSource:
    """An image-grid source (``ChannelViews``) seen on the model grid: ``[model box]`` -> (C, *box)."""

    def __init__(self, source, resampling: Resampling):
        self.source, self.resampling = source, resampling
        self.shape = resampling.model_shape

    def __getitem__(self, box: tuple[slice, ...]) -> np.ndarray:
        src = self.resampling.image_box(box)
        return resample(self.source[src], src, box, self.resampling.ratio)


def decide(
    image: ome.Image, shape: tuple[int, ...], model_voxel: list[float] | None, rescale: bool, kind: str = ""
) -> tuple[Resampling | None, dict]:
    """Whether to rescale the spatial volume ``shape`` of ``image``, with a warning for every case a
    user must hear about, and the record kept in the output's attributes.

    A boundary map (output ``kind`` "boundaries") is brought onto a coarser image grid by its
    maximum over each image voxel (``resample(reduce="max")``): averaged, a membrane one model
    voxel thick comes out at about half strength and the segmentation merges cells across it
    (ovule crop 2x coarser, multicut beta 0.5: ARand 0.261 averaged, 0.089 by maximum; see README).
    Every other output (probabilities of regions, embeddings, soft clusters) is averaged."""
    view_ndim = len(shape)
    img = image_voxel_size(image)
    record: dict = {
        "image_voxel_size": img,
        "model_voxel_size": model_voxel,
        "enabled": rescale,
        "applied": False,
    }
    spatial = list(image.spatial_scale)
    if model_voxel is None:
        record["reason"] = "the model does not record its training voxel size"
        log.info(
            "predict: %s: the model does not record the voxel size it was trained at; predicting on the "
            "image grid as is",
            image.path,
        )
        return None, record
    model = list(model_voxel)[-view_ndim:]
    model = spatial[: view_ndim - len(model)] + model  # a 2D model over a stack: z is not rescaled
    if img is None:
        record["reason"] = "the image's voxel size is unknown (1 µm fallback)"
        log.warning(
            "predict: %s: VOXEL SIZE UNKNOWN (every axis at the 1 µm fallback); the model was trained at %s µm "
            "and is applied unscaled, which can make its map worse than the raw stain: re-ingest with "
            "ingest.voxel_size set to the real (z, y, x) µm",
            image.path,
            model,
        )
        return None, record
    # axes that agree within SAME_SCALE are copied, not interpolated (a slicewise 2D model's z among them)
    ratio = tuple(1.0 if max(m / i, i / m) <= SAME_SCALE else m / i for m, i in zip(model, img, strict=True))
    record["factors"] = [round(r, 6) for r in ratio]
    worst = max(max(r, 1.0 / r) for r in ratio)
    if worst <= SAME_SCALE:
        record["reason"] = f"voxel sizes agree within {SAME_SCALE - 1:.0%}"
        return None, record
    if not rescale:
        record["reason"] = "predict.rescale is off"
        log_fn = log.warning if worst > WARN_FACTOR else log.info
        log_fn(
            "predict: %s: image voxel size %s µm differs from the model's %s µm by up to %.2fx and "
            "predict.rescale is off: the model sees structures at a size it was not trained on",
            image.path,
            img,
            model,
            worst,
        )
        return None, record
    resampling = Resampling(tuple(shape), ratio, "max" if kind == "boundaries" else "mean")
    record.update(
        applied=True,
        model_grid_shape=list(resampling.model_shape),
        output_reduce=resampling.output_reduce,
        reason="rescaled to the model's voxel size",
    )
    log.info(
        "predict: rescaling %s from %s µm to the model's %s µm (model grid %s, back to %s)",
        image.path,
        img,
        model,
        list(resampling.model_shape),
        list(resampling.image_shape),
    )
    return resampling, record

"""``zarrseg predict``: one entry point for both boundary-map methods, written atomically."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from .. import ome
from ..errors import ConfigError, InputError
from .params import PredictParams

log = logging.getLogger(__name__)


def predict(
    image_path: str | Path, out_path: str | Path, params: PredictParams, checkpoint: str | Path | None = None
) -> dict:
    """Predict a boundary map of ``image_path`` into the OME-Zarr ``out_path``.

    Every input (image, checkpoint) is opened and checked before anything is written, so a
    bad input leaves no output behind.
    """
    t0 = time.perf_counter()
    image = ome.open_image(image_path)
    view = ome.SpatialView.of(image, channel=params.channel, timepoint=params.timepoint)
    if view.ndim not in (2, 3):
        raise InputError(f"expected a 2D or 3D image, got spatial axes {view.spatial_axes!r}", image_path)
    model = None
    if params.method == "unet":
        if checkpoint is None:
            raise ConfigError("predict.method 'unet' needs --checkpoint")
        from .checkpoint import load_checkpoint

        model = load_checkpoint(checkpoint)
        if model.config.ndim > view.ndim:
            raise InputError(
                f"the checkpoint is a {model.config.ndim}D model but the image is {view.ndim}D", checkpoint
            )
        if model.config.ndim < view.ndim:
            log.info("predict: 2D model applied slice by slice to the %s stack", view.spatial_axes)
    elif checkpoint is not None:
        log.warning("predict: --checkpoint is ignored by the 'intensity' method")
    with ome.atomic_output(out_path) as tmp:
        if params.method == "intensity":
            from .intensity import predict_intensity

            info = predict_intensity(image, tmp, params)
        else:
            from .inference import predict_unet

            info = predict_unet(image, tmp, params, model)
    info["seconds"] = time.perf_counter() - t0
    log.info("predict %s: %s -> %s in %.1f s", params.method, image_path, out_path, info["seconds"])
    return info

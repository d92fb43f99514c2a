"""``zarrseg predict``: one entry point for both boundary-map methods, written atomically and resumable.

The output is built inside ``<output>.partial`` (``ome.atomic_output(resume=True)``) together with
a ``_work`` folder holding a fingerprint of the run (input, checkpoint hash, parameters), the
volume statistics and per-block done markers (``parallel.DoneMarkers``, the ones ``map_blocks``
keeps). A killed run, rerun with the same input, checkpoint and parameters, redoes only the
blocks without a marker; anything else starts over. ``_work`` is removed before the rename.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

from .. import ome
from ..errors import ConfigError, InputError
from ..normalize import VolumeStats, volume_stats
from ..params import to_dict
from .params import PredictParams

log = logging.getLogger(__name__)

WORK = ome.WORK


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _fingerprint(image_path, params: PredictParams, checkpoint, shape) -> dict:
    p = to_dict(params)
    for key in ("dask", "num_workers", "checkpoint"):  # how the work is scheduled, not what it computes
        p.pop(key, None)
    return {
        "image": str(Path(image_path).resolve()),
        "shape": list(shape),
        "checkpoint_sha256": None if checkpoint is None else file_sha256(checkpoint),
        "params": p,
    }


def run_stats(work: Path | None, view, norm, dask_params) -> VolumeStats:
    """Volume statistics: those saved by the run being resumed, else a blockwise pass over the input."""
    if work is not None and (work / "stats.json").exists():
        return VolumeStats(**json.loads((work / "stats.json").read_text()))
    return volume_stats(view, norm, dask_params=dask_params)


def mark_started(tmp: Path, fingerprint: dict, stats: VolumeStats) -> None:
    """Called once the output array exists (creating it clears the folder): from now on it can be resumed."""
    work = tmp / WORK
    work.mkdir(parents=True, exist_ok=True)
    (work / "stats.json").write_text(json.dumps(stats.to_dict()))
    ome.mark_resumable(tmp, fingerprint)  # last: marks the partial as resumable


def predict(
    image_path: str | Path, out_path: str | Path, params: PredictParams, checkpoint: str | Path | None = None
) -> dict:
    """Predict a boundary map of ``image_path`` into the OME-Zarr ``out_path``.

    Every input (image, checkpoint) is opened and checked before anything is written, so a
    bad input leaves no output behind. A previous killed run of the same job is resumed.
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
        checkpoint = None
    fingerprint = _fingerprint(image_path, params, checkpoint, view.shape)
    with ome.atomic_output(out_path, resume=True) as tmp:
        resume = ome.same_run(tmp, fingerprint, "predict")
        if resume:
            log.info("predict: resuming %s", tmp)
        work = tmp / WORK
        if params.method == "intensity":
            from .intensity import predict_intensity

            info = predict_intensity(image, tmp, params, work=work, resume=resume, fingerprint=fingerprint)
        else:
            from .inference import predict_unet

            info = predict_unet(image, tmp, params, model, work=work, resume=resume, fingerprint=fingerprint)
        shutil.rmtree(work)
    info["resumed"] = resume
    info["seconds"] = time.perf_counter() - t0
    log.info("predict %s: %s -> %s in %.1f s", params.method, image_path, out_path, info["seconds"])
    return info

"""``zarrseg predict``: one entry point for the intensity map and every trained model, atomic and resumable.

The output is built inside ``<output>.partial`` (``ome.atomic_output(resume=True)``) together with
a ``_work`` folder holding a fingerprint of the run (input, checkpoint hash, parameters), the
volume statistics and per-block done markers (``runs.DoneMarkers``, the ones ``map_blocks``
keeps). A killed run, rerun with the same input, checkpoint and parameters, redoes only the
blocks without a marker; anything else starts over. ``_work`` is removed before the rename.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from .. import ome, runs
from ..errors import ConfigError, InputError
from ..learn import model_file
from ..params import to_dict
from .params import PredictParams

log = logging.getLogger(__name__)


def _fingerprint(image_path, params: PredictParams, checkpoint, shape) -> dict:
    p = to_dict(params)
    for key in ("dask", "num_workers", "checkpoint", "online"):  # how the work is scheduled, not what it computes
        p.pop(key, None)
    p["method"] = "model" if params.uses_model else p["method"]
    sha = None
    if checkpoint is not None:  # bioimageio imports torch: not needed (nor loaded) by the intensity method
        from .bioimageio import is_package, is_remote, package_sha256

        sha = package_sha256(checkpoint) if is_package(checkpoint) or is_remote(checkpoint) else runs.file_sha256(
            checkpoint)
    return {"image": str(Path(image_path).resolve()), "image_identity": runs.input_identity(image_path),
            "shape": list(shape), "checkpoint_sha256": sha, "params": p}


def load_model(checkpoint: str | Path, online: bool = False):
    """A zarrseg checkpoint or a BioImage.IO package (folder, zip, rdf.yaml; an id or URL when online)."""
    from ..learn.checkpoint import load
    from .bioimageio import is_package, is_remote, load_package

    if is_package(checkpoint) or is_remote(checkpoint):
        return load_package(checkpoint, online)
    if Path(checkpoint).is_dir():
        raise InputError("a folder without rdf.yaml: neither a checkpoint nor a BioImage.IO package", checkpoint)
    return load(checkpoint)


def predict(
    image_path: str | Path, out_path: str | Path, params: PredictParams, checkpoint: str | Path | None = None
) -> dict:
    """Predict a dense map (boundaries, embeddings, ...) of ``image_path`` into the OME-Zarr ``out_path``.

    Every input (image, checkpoint) is opened and checked before anything is written, so a
    bad input leaves no output behind. A previous killed run of the same job is resumed.
    """
    t0 = time.perf_counter()
    image = ome.open_image(image_path)
    ome.check_intensity(image)
    view = ome.SpatialView.of(image, channel=params.channel, timepoint=params.timepoint)
    if view.ndim not in (2, 3):
        raise InputError(f"expected a 2D or 3D image, got spatial axes {view.spatial_axes!r}", image_path)
    model = None
    if params.uses_model:
        if checkpoint is None:
            raise ConfigError(f"predict.method {params.method!r} needs --checkpoint")
        checkpoint = model_file(checkpoint)  # MODEL_DIR: its best.pt, as train.init and features take it
        model = load_model(checkpoint, params.online)
        if model.io.kind == "embedding":  # one vector per input (contrastive_global): no map to tile
            raise InputError(
                f"a {model.method} checkpoint gives one embedding per image (a pretraining stage), not a map to "
                "predict: train a method from it (contrastive_local.init, train.init)",
                checkpoint,
            )
        if model.io.kind == "features":
            raise InputError(
                f"a {model.method} checkpoint gives patch features: use 'zarrseg features', not predict",
                checkpoint,
            )
        if model.io.ndim > view.ndim:
            raise InputError(f"the checkpoint is a {model.io.ndim}D model but the image is {view.ndim}D", checkpoint)
        if model.io.ndim < view.ndim:
            log.info("predict: 2D model applied slice by slice to the %s stack", view.spatial_axes)
    elif checkpoint is not None:
        log.warning("predict: --checkpoint is ignored by the 'intensity' method")
        checkpoint = None
    fingerprint = _fingerprint(image_path, params, checkpoint, view.shape)
    with ome.atomic_output(out_path, resume=True) as tmp:
        resume = runs.same_run(tmp, fingerprint, "predict")
        if resume:
            log.info("predict: resuming %s", tmp)
        work = tmp / runs.WORK
        if params.method == "intensity":
            from .intensity import predict_intensity

            info = predict_intensity(image, tmp, params, work=work, resume=resume, fingerprint=fingerprint)
        else:
            from .tiled import predict_model

            info = predict_model(image, tmp, params, model, work=work, resume=resume, fingerprint=fingerprint)
            if model.io.kind == "embeddings":  # a look at them: PCA of f's channels as RGB, inside the output
                from ..embeddings import PREVIEW, write_preview

                write_preview(tmp, int(model.model_config.get("embedding_dim", model.io.channels)), tmp / PREVIEW)
        runs.remove_work(work)
    info["resumed"] = resume
    info["seconds"] = time.perf_counter() - t0
    log.info("predict %s: %s -> %s in %.1f s", params.method, image_path, out_path, info["seconds"])
    return info

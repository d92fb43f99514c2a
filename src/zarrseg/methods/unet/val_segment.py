"""Validation by the full pipeline: predicted boundaries of a crop -> blockwise segment engine -> ARand/VOI.

Threshold + connected components (the thesis' validation) saturates on 3D EM crops and says little
about the segmentation the workflow will actually produce; this runs the real ``segment`` stage
(``zarrseg.segment.engine.segment``) on a temporary OME-Zarr of the prediction and scores the labels
with the evaluation module's ARand / VOI (ground-truth label 0 ignored, as everywhere in training).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from ... import ome
from ...evaluation.contingency import Contingency
from ...evaluation.instance import adapted_rand, voi
from .train_params import ValSegmentParams

log = logging.getLogger(__name__)


def boundary_map(prob: np.ndarray, target: str) -> np.ndarray:
    """(C, *spatial) network probabilities -> one boundary map (affinities: mean over offsets)."""
    return prob.mean(axis=0) if target == "affinities" else prob[0]


def segment_scores(
    boundaries: np.ndarray,
    gt: np.ndarray,
    params: ValSegmentParams,
    *,
    scale: tuple[float, ...] | None = None,
    slicewise: bool = False,
    work_dir: str | Path | None = None,
) -> dict[str, float]:
    """Segment ``boundaries`` (an in-memory crop) with the blockwise engine; ARand/VOI against ``gt``.

    ``slicewise`` (a 2D model over a stack): every slice is segmented and scored as a 2D image
    and the scores are averaged, like the threshold + CC validation and the ISBI protocol;
    with ``segment.stacked_2d: true`` the crop is segmented at once instead (supervoxels per
    slice, merged across slices by the partitioner), for ground truth consistent across slices.
    """
    if boundaries.ndim == 3 and boundaries.shape[0] == 1:  # one slice: a 2D segmentation (no z edges)
        return _segment_and_score(boundaries[0], np.asarray(gt)[0], params, scale and scale[-2:], work_dir)
    if slicewise and boundaries.ndim == 3 and not params.segment.stacked_2d:
        per_slice = [
            _segment_and_score(boundaries[z], np.asarray(gt[z]), params, scale and scale[-2:], work_dir)
            for z in range(boundaries.shape[0])
        ]
        return {k: _nanmean([s[k] for s in per_slice]) for k in ("arand", "voi")}
    return _segment_and_score(boundaries, np.asarray(gt), params, scale, work_dir)


def _nanmean(values: list[float]) -> float:
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def _segment_and_score(boundaries, gt, params, scale, work_dir) -> dict[str, float]:
    from ...segment.engine import segment

    t0 = time.perf_counter()
    seg_params = params.segment
    ndim = boundaries.ndim
    with tempfile.TemporaryDirectory(prefix="val_segment_", dir=work_dir) as tmp:
        bnd_path, seg_path = Path(tmp) / "boundaries.ome.zarr", Path(tmp) / "segmentation.ome.zarr"
        arr = ome.create_image(
            bnd_path,
            shape=boundaries.shape,
            dtype=np.float32,
            axes="zyx"[-ndim:],
            scale=list(scale or (1.0,) * ndim)[-ndim:],
            chunks=seg_params.spatial("chunks", ndim),
        )
        arr[...] = np.clip(boundaries, 0.0, 1.0).astype(np.float32)
        segment(bnd_path, seg_path, seg_params)
        seg = np.asarray(ome.open_image(seg_path).data[...])
    table = Contingency.from_arrays(seg.astype(np.uint64).ravel(), gt.astype(np.uint64).ravel())
    if table.without_gt(0).n == 0:
        return {"arand": float("nan"), "voi": float("nan")}
    scores = {"arand": adapted_rand(table)["arand"], "voi": voi(table)["voi"]}
    log.info(
        "val_segment: %s crop, ARand %.4f, VOI %.4f (%.1f s)",
        boundaries.shape,
        scores["arand"],
        scores["voi"],
        time.perf_counter() - t0,
    )
    return scores

"""Score an OME-Zarr segmentation against one or more ground truths (the ``evaluate`` stage).

The stage reads both label images blockwise into one sparse contingency table per annotator and
computes every requested metric from it; the volumes are never loaded whole.
"""

from __future__ import annotations

import difflib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .. import ome
from ..errors import ConfigError, InputError
from ..parallel import DaskParams
from .contingency import Contingency, blockwise_contingency
from .instance import DEFAULT_IOU_THRESHOLDS, INSTANCE_METRICS, THRESHOLDED, instance_metrics, threshold_name
from .semantic import (
    BINARY_METRICS,
    CLUSTERING_METRICS,
    binary_metrics,
    clustering_metrics,
    combine_annotators,
)

log = logging.getLogger(__name__)

Kind = Literal["instance", "semantic", "clustering"]


@dataclass
class EvaluateParams:
    """Parameters of ``zarrseg evaluate`` (config section ``evaluate``)."""

    # instance: ARand/VOI/SEG/AP/SBD...; semantic: binary-mask IoU/Dice; clustering: RI/AMI/FMI/V-measure
    kind: Kind = "instance"
    # instance/clustering: ground-truth voxels with this label are not scored (0 in gala, FlyEM,
    # CREMI, PlantSeg) and, for object metrics, it is the background of both images;
    # semantic: the background class. null: every label is an object and every voxel scored.
    ignore_label: int | None = 0
    iou_thresholds: list[float] = field(default_factory=lambda: list(DEFAULT_IOU_THRESHOLDS))
    metrics: list[str] | str = "all"  # "all" or names; "ap" selects ap@<every threshold>
    block_shape: list[int] = field(default_factory=lambda: [64, 512, 512])  # (z, y, x); 2D uses (y, x)
    dask: DaskParams = field(default_factory=DaskParams)

    def validate(self) -> None:
        if self.ignore_label is not None and self.ignore_label < 0:
            raise ConfigError(f"evaluate.ignore_label must be a label id >= 0 or null, got {self.ignore_label}")
        if not self.iou_thresholds or any(not 0.0 < t <= 1.0 for t in self.iou_thresholds):
            raise ConfigError(
                f"evaluate.iou_thresholds must be non-empty values in (0, 1], got {self.iou_thresholds}"
            )
        if not self.block_shape or any(b <= 0 for b in self.block_shape):
            raise ConfigError(f"evaluate.block_shape must be positive, got {self.block_shape}")
        if isinstance(self.metrics, str) and self.metrics != "all":
            self.metrics = [self.metrics]
        if self.metrics != "all":
            self.metrics = [resolve_metric(m, self.kind, self.iou_thresholds) for m in self.metrics]


def available_metrics(kind: str, thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS) -> list[str]:
    if kind == "semantic":
        return list(BINARY_METRICS)
    if kind == "clustering":
        return list(CLUSTERING_METRICS)
    names = [m for m in INSTANCE_METRICS if m not in THRESHOLDED]
    return names + [threshold_name(m, t) for m in THRESHOLDED for t in thresholds]


def resolve_metric(name: str, kind: str, thresholds: Sequence[float]) -> str:
    """Canonical metric name (``ap@0.5`` -> ``ap@0.50``); unknown names fail with a hint."""
    name = str(name).strip().lower()
    if "@" in name:
        base, _, value = name.partition("@")
        try:
            name = threshold_name(base, float(value))
        except ValueError:
            pass
    known = available_metrics(kind, thresholds)
    if name in known or (kind == "instance" and name in THRESHOLDED):
        return name
    hint = difflib.get_close_matches(name, known + (list(THRESHOLDED) if kind == "instance" else []), n=1)
    extra = f" (did you mean {hint[0]!r}?)" if hint else ""
    raise ConfigError(f"unknown {kind} metric {name!r} in evaluate.metrics{extra}; known: {', '.join(known)}")


def select(scores: dict[str, float], selection: list[str] | str) -> dict[str, float]:
    if selection == "all":
        return scores
    out = {}
    for name in selection:
        if name in THRESHOLDED:
            out.update({k: v for k, v in scores.items() if k.startswith(name + "@")})
        elif name in scores:
            out[name] = scores[name]
    return out


def score_table(table: Contingency, params: EvaluateParams) -> dict[str, float]:
    """The metrics of ``params.kind`` from one contingency table."""
    if params.kind == "semantic":
        scores = binary_metrics(table, params.ignore_label)
    elif params.kind == "clustering":
        scores = clustering_metrics(table, params.ignore_label)
    else:
        scores = instance_metrics(table, params.ignore_label, params.iou_thresholds)
    return select(scores, params.metrics)


def _label_view(path: str | Path, what: str, channel: int = 0) -> ome.SpatialView:
    image = ome.open_image(path)
    view = ome.SpatialView.of(image, channel=channel)
    if view.dtype.kind not in "uib":
        raise InputError(f"{what} must be an integer label image, got dtype {view.dtype}", path)
    if view.ndim not in (2, 3):
        raise InputError(f"{what} must be 2D or 3D, got spatial shape {list(view.shape)}", path)
    ome.warn_if_intensity(image, what)
    return view


def annotator_views(path: str | Path) -> list[ome.SpatialView]:
    """One view per annotator: a ground truth with a channel axis holds one annotator per channel."""
    image = ome.open_image(path)
    n = image.shape[image.axes.index("c")] if "c" in image.axes else 1
    return [_label_view(path, "ground truth", channel=c) for c in range(n)]


def evaluate_images(
    segmentation: str | Path,
    ground_truth: Sequence[str | Path],
    params: EvaluateParams,
    mask: str | Path | None = None,
) -> dict[str, dict[str, float]]:
    """Scores per annotator (``""`` for a single ground truth; else "0", "1", ..., "mean", "best")."""
    if not ground_truth:
        raise ConfigError("no ground truth given")
    seg = _label_view(segmentation, "segmentation")
    gts = [(path, view) for path in ground_truth for view in annotator_views(path)]
    for path, view in gts:
        if view.shape != seg.shape:
            raise InputError(
                f"ground truth shape {list(view.shape)} differs from segmentation shape "
                f"{list(seg.shape)} ({segmentation})",
                path,
            )
    mask_view = None
    if mask is not None:
        mask_view = ome.SpatialView.of(ome.open_image(mask))
        if mask_view.shape != seg.shape:
            raise InputError(
                f"mask shape {list(mask_view.shape)} differs from segmentation shape {list(seg.shape)}", mask
            )
        if mask_view.dtype.kind not in "uib":  # as segment's: a float map (NaN included) is no mask
            raise InputError(f"mask must be integer or boolean (nonzero = scored), got {mask_view.dtype}", mask)
    per_annotator = []
    for k, (path, gt) in enumerate(gts):
        t0 = time.perf_counter()
        table = blockwise_contingency(
            seg,
            gt,
            mask=mask_view,
            block_shape=params.block_shape,
            dask_params=params.dask,
            name=f"evaluate: overlap (annotator {k})",
        )
        if table.without_gt(params.ignore_label if params.kind != "semantic" else None).n == 0:
            raise InputError("ground truth has no voxels to score (all are the ignore label or masked)", path)
        t1 = time.perf_counter()
        per_annotator.append(score_table(table, params))
        log.info(
            "evaluate: annotator %d: table %.2f s (%d pairs), metrics %.2f s",
            k,
            t1 - t0,
            len(table),
            time.perf_counter() - t1,
        )
    if len(per_annotator) == 1:
        return {"": per_annotator[0]}
    return combine_annotators(per_annotator)

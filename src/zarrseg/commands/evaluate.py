"""Score a segmentation against ground truth into one tidy (long-format) metrics table.

Both inputs are OME-Zarr label images (an ingested container resolves to scene 0) of the same
spatial shape. The overlap table is computed blockwise with Dask, so memory scales with the
number of overlapping id pairs, not with the volume. One row per metric is written to OUTPUT
(Parquet) and to the same name with '.csv', with the --meta values as columns and runtime /
peak memory of the producing jobs parsed from their Snakemake benchmark files, and the
metric clustering_s: the seconds the cluster / segment stage recorded for making the labels
(without process start-up and I/O of other stages).

Example:
  zarrseg evaluate results/exp/seg/s1.ome.zarr --gt data/s1_gt.ome.zarr -o results/exp/metrics/s1.parquet \\
      --meta experiment=exp --meta sample=s1 --meta method=segment --meta cell=beta-0.5 \\
      --meta params='{"segment.beta": 0.5}' --benchmark segment=benchmarks/segment/s1.tsv \\
      --set kind=instance --set ignore_label=0

Parameters (config section 'evaluate'; --params / --set key=value):
  kind            instance | semantic | clustering (default instance)
                  instance: ARand (+ precision/recall), RI, ARI, VOI split/merge, SEG, SBD, DiC,
                  AP/precision/recall/F1 at each IoU threshold, mSA; semantic: binary-mask IoU, Dice,
                  precision, recall; clustering: RI, ARI, AMI, FMI, homogeneity, completeness,
                  V-measure, Hungarian-matched IoU
  ignore_label    ground-truth label not scored (instance/clustering; also the background of object
                  metrics) or the background class (semantic); null: none (default 0)
  iou_thresholds  matching thresholds (default 0.5, 0.55, ..., 0.95)
  metrics         "all" or a list of names; "ap" selects every ap@threshold (default all)
  block_shape     (z, y, x) block read at a time; 2D images use (y, x) (default [64, 512, 512])
  dask            scheduler / n_workers / address (the config's dask section)
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from ..evaluation.score import EvaluateParams, evaluate_images
from ..evaluation.tables import metrics_frame, parse_benchmarks, parse_meta, write_table
from ..params import to_dict
from ..runs import check_output
from ._common import add_params_arguments, params_from_args

HELP = "score a segmentation against ground truth (one tidy table)"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("segmentation", metavar="SEGMENTATION", help="OME-Zarr label image to score")
    parser.add_argument(
        "--gt",
        metavar="GROUND_TRUTH",
        action="append",
        required=True,
        help="OME-Zarr ground-truth label image; repeat (or give a channel axis) for several "
        "annotators, scored each and as 'mean' / 'best'",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="METRICS.parquet",
        required=True,
        help="output table (Parquet); a CSV copy is written next to it",
    )
    parser.add_argument(
        "--mask", metavar="MASK", help="OME-Zarr mask: only voxels where it is non-zero are scored"
    )
    parser.add_argument(
        "--meta",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="table columns: experiment, sample, method, cell, params (JSON object); "
        "other keys become extra columns",
    )
    parser.add_argument(
        "--benchmark",
        metavar="STAGE=FILE",
        action="append",
        default=[],
        help="Snakemake benchmark TSV of a producing job (runtime_s, max_rss_mb columns)",
    )
    add_params_arguments(parser, "evaluate", "ignore_label=null")


def sample_name(path: str) -> str:
    """The file name without its image suffix: ``seg_b0.5.ome.zarr`` -> ``seg_b0.5`` (dots are kept)."""
    name = Path(path.rstrip("/")).name
    for suffix in (".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def labelling_seconds(path: str) -> float | None:
    """Seconds the cluster / segment stage spent making these labels (its ``zarrseg.summary``), if recorded."""
    from .. import ome
    from ..errors import InputError

    try:
        summary = ome.open_image(path).attrs.get("zarrseg", {}).get("summary") or {}
    except InputError:
        return None
    value = summary.get("clustering_s", summary.get("total_s"))
    return None if value is None else float(value)


def run(args: argparse.Namespace) -> int:
    params = params_from_args(EvaluateParams, args, "evaluate")
    meta = parse_meta(args.meta)
    meta.setdefault("sample", sample_name(args.segmentation))
    benchmarks = parse_benchmarks(args.benchmark)
    check_output(args.output, ".csv")
    t0 = time.perf_counter()
    scores = evaluate_images(args.segmentation, args.gt, params, mask=args.mask)
    seconds = labelling_seconds(args.segmentation)
    if seconds is not None:  # the clustering / segmentation's own runtime, as thesis Table 3.7 reports it
        for metrics in scores.values():
            metrics["clustering_s"] = seconds
    frame = metrics_frame(scores, meta, benchmarks)
    frame.attrs["evaluate_params"] = to_dict(params)
    parquet, csv = write_table(frame, args.output)
    log.info(
        "evaluate: %d metrics in %.2f s -> %s (+ %s)", len(frame), time.perf_counter() - t0, parquet, csv.name
    )
    return 0

"""Describe a segmentation without ground truth: number of segments and their sizes, and a thumbnail.

One segmentation:
  zarrseg describe LABELS.ome.zarr -o segments.parquet [--image IMAGE.ome.zarr] [--thumbnail thumb.png]
      [--meta sample=s1 --meta cell=base]
writes one row (n_segments, size_min / median / mean / max in µm² or µm³ from the voxel size, or in
voxels when it is unknown; voxels_median / mean, axes, shape, voxel size) to segments.parquet
(+ .csv), and with --thumbnail a PNG: the image's middle z-plane with the outlines of its labels.

Many segmentations:
  zarrseg describe --summary a/segments.parquet b/segments.parquet -o OUTDIR
writes OUTDIR/segments.parquet, segments.csv and segments.md (one row per sample and cell).
"""

from __future__ import annotations

import argparse

from ..errors import ConfigError
from ..parallel import DaskParams
from ._common import add_params_arguments, params_from_args

HELP = "segment counts and sizes of a segmentation (no ground truth needed), thumbnail, summary table"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", metavar="LABELS", nargs="+",
                        help="OME-Zarr label image (with --summary: segments.parquet tables)")
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                        help="segments.parquet (a CSV copy is written next to it); with --summary: a folder")
    parser.add_argument("--image", metavar="IMAGE", help="the segmented image: its voxel size, and the thumbnail")
    parser.add_argument("--channel", type=int, default=0, help="channel of IMAGE in the thumbnail (default 0)")
    parser.add_argument("--thumbnail", metavar="PNG", help="also write a thumbnail (needs --image)")
    parser.add_argument("--summary", action="store_true", help="combine segments tables into OUTPUT/segments.*")
    parser.add_argument("--meta", metavar="KEY=VALUE", action="append", default=[],
                        help="columns of the row, e.g. sample=s1, cell=base")
    add_params_arguments(parser, "dask=zarrseg.parallel:DaskParams", "n_workers=2")  # parameters: the dask section (scheduler, n_workers)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.describe import describe, summarize_descriptions, write_description
    from ..evaluation.tables import parse_meta
    from ..runs import check_output

    if args.summary:
        print(summarize_descriptions(args.inputs, args.output).read_text(), end="")
        return 0
    if len(args.inputs) != 1:
        raise ConfigError(f"give one label image (or --summary for tables), got {len(args.inputs)}")
    if args.thumbnail and not args.image:
        raise ConfigError("--thumbnail needs --image")
    dask = params_from_args(DaskParams, args, "dask")
    check_output(args.output, ".csv")  # before any work
    if args.thumbnail:
        check_output(args.thumbnail)
    row = describe(args.inputs[0], args.image, dask_params=dask)
    if args.thumbnail:  # first: the table is the output that says the sample is described
        from ..evaluation.thumbnail import thumbnail

        thumbnail(args.image, args.inputs[0], args.thumbnail, channel=args.channel)
    write_description(row, parse_meta(args.meta), args.output)
    return 0

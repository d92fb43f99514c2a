"""Blockwise segmentation of a boundary map: DT-watershed supervoxels -> RAG -> multicut / GASP / mutex watershed.

Reads a boundary-probability OME-Zarr (float, or uint8/uint16 intensities scaled to [0, 1]),
2D or 3D, and writes a label OME-Zarr (uint32 when the ids fit, else uint64) with the same
axes and scale. Work is done block by block with Dask (threads, processes, distributed or
SLURM via `dask`), with per-block done markers: rerunning a killed command resumes it.
The partitioner is a parameter (default gasp; multicut, mutex_watershed, ...); with
'partitioner=connected_components' the input is a foreground map instead (high = object) and its
connected components, optionally split at necks, are the segments.

Examples:
  zarrseg segment boundaries.ome.zarr -o labels.ome.zarr --set partitioner=multicut --set beta=0.6
  zarrseg segment foreground.ome.zarr -o nuclei.ome.zarr --set partitioner=connected_components --set split=true
"""

from __future__ import annotations

import argparse
import json

from ._common import add_params_arguments, params_from_args

HELP = "blockwise DT-watershed -> RAG -> multicut/GASP/MWS segmentation"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "boundaries", metavar="BOUNDARIES", help="boundary map OME-Zarr (an ingested container: scene 0)"
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="LABELS.ome.zarr", help="output label OME-Zarr"
    )
    parser.add_argument(
        "--mask", metavar="MASK", help="foreground mask OME-Zarr (nonzero = segment); optional"
    )
    parser.add_argument("--channel", type=int, default=0, help="channel of BOUNDARIES to use (default 0)")
    add_params_arguments(parser, "segment", "partitioner=multicut")


def run(args: argparse.Namespace) -> int:
    from ..segment import SegmentParams
    from ..segment.engine import segment

    params = params_from_args(SegmentParams, args, where="segment")
    summary = segment(args.boundaries, args.output, params, mask_path=args.mask, channel=args.channel)
    print(json.dumps(summary))
    return 0

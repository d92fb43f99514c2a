"""Stage a CZI / TIFF / OME-TIFF / HDF5 file into a chunked, compressed OME-Zarr container.

The output is a bioformats2raw.layout container with one NGFF 0.4 multiscale image per
scene at OUTPUT/<k> (k-th ingested scene; OUTPUT itself opens as scene 0). HDF5 inputs are
given as FILE.h5:DATASET. Re-running on an up-to-date output does nothing.
"""

from __future__ import annotations

import argparse

from ._common import add_params_arguments, params_from_args

HELP = "stage CZI / TIFF / OME-TIFF / HDF5 into chunked, compressed OME-Zarr"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT", help="CZI, TIFF/OME-TIFF/ImageJ TIFF, or FILE.h5:DATASET")
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT.ome.zarr", help="output container")
    parser.add_argument(
        "--labels",
        action="store_true",
        help="the input is a label image: keep its integer type, nearest-neighbour pyramid",
    )
    parser.add_argument(
        "--scene",
        type=int,
        action="append",
        default=None,
        metavar="N",
        help="ingest only scene N (repeatable; default: all scenes)",
    )
    add_params_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..ingest import IngestParams, ingest

    params = params_from_args(IngestParams, args, where="ingest")
    ingest(args.input, args.output, params, labels=args.labels, scenes=args.scene)
    return 0

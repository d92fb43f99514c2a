"""Stage a CZI / TIFF / OME-TIFF / HDF5 / PNG / JPEG file into chunked, compressed OME-Zarr.

One scene (a single-scene file, or one --scene of a multi-scene file) becomes a plain NGFF 0.4
multiscale image at OUTPUT (zarr.open('OUTPUT/0') is level 0). Several scenes become a
bioformats2raw.layout container with one image per scene at OUTPUT/<k> (k-th ingested scene;
OUTPUT itself opens as scene 0). HDF5 inputs are given as FILE.h5:DATASET; PNG/JPEG are 2D
(grey or RGB) and take their pixel size from voxel_size. Re-running on an up-to-date output
does nothing. An output folder that cannot be written ends with one line and exit code 2.
"""

from __future__ import annotations

import argparse

from ._common import add_params_arguments, params_from_args

HELP = "stage CZI / TIFF / OME-TIFF / HDF5 / PNG / JPEG into chunked, compressed OME-Zarr"

PARAMETERS = """\
parameters (config sections 'storage' + 'ingest'; --set key=value):
  chunks=[32,256,256]      spatial chunk shape (z, y, x); 2D images use the last two
  compression={codec: zstd, level: 5, shuffle: bitshuffle}   Blosc compressor of every array
                           (fast staging: compression.codec=lz4, several times faster, larger)
  pyramid_levels=null      number of levels; null: halve Y/X until both are < 512 px
  voxel_size=null          (z, y, x) or (y, x) in µm, overrides the file's metadata
  reader=auto              auto | pylibczirw | tifffile | h5py | pillow (PNG/JPEG)
  axes=null                TIFF/HDF5 only: one of t/c/z/y/x per source axis, e.g. zcyx
  slab_mb=128              memory budget (MB) of the slabs in flight; peak RSS ~ 3x this
  threads=0                threads encoding chunks; 0: all cores given to the job
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = PARAMETERS
    parser.add_argument("input", metavar="INPUT", help="CZI, TIFF/OME-TIFF/ImageJ TIFF, PNG, JPEG or FILE.h5:DATASET")
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT.ome.zarr", help="output image (one scene) or container (several)")
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
    add_params_arguments(parser, "ingest", "chunks=[16,256,256]")


def run(args: argparse.Namespace) -> int:
    from ..ingest import IngestParams, ingest

    params = params_from_args(IngestParams, args, where="ingest")
    ingest(args.input, args.output, params, labels=args.labels, scenes=args.scene)
    return 0

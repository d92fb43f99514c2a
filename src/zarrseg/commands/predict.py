"""Predict a boundary-probability map of an OME-Zarr image.

Methods: 'intensity' (the normalised membrane stain itself, optionally smoothed / inverted;
no training needed) and 'unet' (a checkpoint written by 'zarrseg train', run over
overlapping tiles with Gaussian/cosine blending, block by block, on GPU when available).
The output is an OME-Zarr with the input's spatial axes and scale, written atomically into
'<output>.partial'; a killed run, rerun with the same input, checkpoint and parameters, redoes
only the blocks that had not finished.
"""

from __future__ import annotations

import argparse

from ._common import add_params_arguments, params_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE", help="input OME-Zarr image")
    parser.add_argument(
        "-o", "--output", required=True, metavar="BOUNDARIES.ome.zarr", help="output OME-Zarr"
    )
    parser.add_argument(
        "--checkpoint",
        metavar="CKPT",
        help="model checkpoint (method 'unet'); overrides the 'checkpoint' parameter",
    )
    add_params_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..unet.params import PredictParams
    from ..unet.predict import predict

    params = params_from_args(PredictParams, args, "predict")
    predict(args.image, args.output, params, checkpoint=args.checkpoint or params.checkpoint)
    return 0

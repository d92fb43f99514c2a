"""Predict a dense map of an OME-Zarr image: boundaries, foreground, affinities, embeddings, ...

Methods: 'intensity' (the normalised membrane stain itself, optionally smoothed / inverted;
no training needed) and 'model' (a checkpoint of any method trained by 'zarrseg train', or a
BioImage.IO model package; 'unet' is its former name), run over overlapping tiles with
Gaussian/cosine blending, block by block, on GPU when available. The checkpoint says how many
channels the model takes and returns and which activation (sigmoid, softmax, none) turns its
outputs into the map; the input is resampled to the voxel size the model was trained at.
The output is an OME-Zarr with the input's spatial axes and scale, written atomically into
'<output>.partial'; a killed run, rerun with the same input, checkpoint and parameters, redoes
only the blocks that had not finished.

Examples:
  zarrseg predict raw.ome.zarr -o boundaries.ome.zarr --checkpoint models/unet/best.pt
  zarrseg predict raw.ome.zarr -o boundaries.ome.zarr --set sigma=1.0   # the stain itself, smoothed
"""

from __future__ import annotations

import argparse

from ._common import add_params_arguments, given_keys, params_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE", help="input OME-Zarr image")
    parser.add_argument(
        "-o", "--output", required=True, metavar="BOUNDARIES.ome.zarr", help="output OME-Zarr"
    )
    parser.add_argument(
        "--checkpoint",
        metavar="CKPT",
        help="model checkpoint (a file, or the MODEL_DIR zarrseg train wrote: its best.pt) or BioImage.IO package "
        "(folder, zip, rdf.yaml; an id with --set online=true) "
        "for method 'model' (which it selects unless 'method' is given); overrides the 'checkpoint' parameter",
    )
    add_params_arguments(parser, "predict", "method=model")


def run(args: argparse.Namespace) -> int:
    from ..predict.params import PredictParams
    from ..predict.stage import predict

    if args.checkpoint and "method" not in given_keys(PredictParams, args, "predict"):
        args.overrides = ["method=model", *args.overrides]  # a checkpoint given means: run that model
    params = params_from_args(PredictParams, args, "predict")
    predict(args.image, args.output, params, checkpoint=args.checkpoint or params.checkpoint)
    return 0

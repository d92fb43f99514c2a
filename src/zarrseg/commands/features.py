"""DINO ViT patch features of an OME-Zarr image into a chunked Zarr feature volume.

The image is resized to multiples of the tile size (bilinear), grey is replicated to three
channels, tiles are normalised (ImageNet statistics by default) and embedded tile by tile;
the output holds the last-layer patch tokens (C x [Z x] H/p x W/p) and each patch's mean
colour. Weights: --checkpoint FILE (a 'zarrseg pretrain/finetune' output or a plain state
dict), or --set weights=hub when online; with neither, a loud warning and random weights.
"""

from __future__ import annotations

import argparse

from ._common import add_params_arguments, params_from_args

HELP = "DINO ViT patch features of an image into a Zarr feature volume"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "image", metavar="IMAGE", help="input OME-Zarr image (2D, or 3D processed slice by slice)"
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="FEATURES.zarr", help="output feature volume"
    )
    parser.add_argument(
        "--checkpoint", metavar="CKPT", help="ViT weights: checkpoint file or pretrain/finetune folder"
    )
    parser.add_argument(
        "--attention",
        metavar="DIR",
        help="write CLS attention maps (one PNG per head) of the first tiles to DIR "
        "(number of tiles: parameter attention_tiles, default 1 with this flag)",
    )
    add_params_arguments(parser, "features", "vit.patch_size=16")


def run(args: argparse.Namespace) -> int:
    from ..ssl.features import FeatureParams, extract_features

    params = params_from_args(FeatureParams, args, "features")
    if args.checkpoint:
        params.checkpoint = args.checkpoint
    if args.attention and not params.attention_tiles:
        params.attention_tiles = 1
    extract_features(args.image, args.output, params, attention_dir=args.attention)
    return 0

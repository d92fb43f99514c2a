"""DINO self-distillation pretraining of a ViT on tiles of OME-Zarr images.

The training images are listed in the parameters (``images: [a.ome.zarr, ...]``). The output
folder holds ``checkpoint.pt`` (the teacher ViT, usable by ``zarrseg features --checkpoint``),
``history.csv`` (loss per step) and ``params.yaml``.
"""

from __future__ import annotations

import argparse
import logging

from ._common import add_params_arguments, params_from_args

HELP = "DINO self-distillation pretraining of a ViT on OME-Zarr tiles"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", required=True, metavar="MODEL_DIR", help="output folder")
    parser.add_argument(
        "--checkpoint", metavar="CKPT", help="start from these ViT weights (default: random init)"
    )
    parser.add_argument(
        "--images", nargs="+", metavar="IMAGE", help="training OME-Zarr images (else params 'images')"
    )
    add_params_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..ssl.dino import PretrainParams, pretrain

    params = params_from_args(PretrainParams, args, "pretrain")
    if args.images:
        params.images = list(args.images)
    if args.checkpoint:
        params.init_checkpoint = args.checkpoint
    summary = pretrain(params, args.output)
    log.info(
        "pretrain: %d steps, loss %.4f -> %.4f, %.0f s",
        summary["steps"],
        summary["first_loss"],
        summary["last_loss"],
        summary["seconds"],
    )
    return 0

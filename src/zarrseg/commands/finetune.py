"""Fine-tune a DINO ViT by reconstruction (thesis §3.4): last two blocks + up-sampling decoder, L1 loss.

Training images are listed in the parameters (``images: [...]``) or given with --images.
The output folder holds ``checkpoint.pt`` (the adapted ViT, for ``zarrseg features
--checkpoint``), ``decoder.pt``, ``history.csv`` and ``params.yaml``.
"""

from __future__ import annotations

import argparse
import logging

from ._common import add_params_arguments, params_from_args

HELP = "fine-tune a DINO ViT with a reconstruction head (L1)"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", required=True, metavar="MODEL_DIR", help="output folder")
    parser.add_argument(
        "--checkpoint", metavar="CKPT", help="ViT to fine-tune (file or pretrain output folder)"
    )
    parser.add_argument(
        "--images", nargs="+", metavar="IMAGE", help="training OME-Zarr images (else params 'images')"
    )
    add_params_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..ssl.finetune import FinetuneParams, finetune

    params = params_from_args(FinetuneParams, args, "finetune")
    if args.images:
        params.images = list(args.images)
    if args.checkpoint:
        params.checkpoint = args.checkpoint
    summary = finetune(params, args.output)
    log.info(
        "finetune: %d steps, L1 %.4f -> %.4f, %.0f s",
        summary["steps"],
        summary["first_loss"],
        summary["last_loss"],
        summary["seconds"],
    )
    return 0

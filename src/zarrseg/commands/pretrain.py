"""DINO self-distillation pretraining of a ViT on tiles of OME-Zarr images ('zarrseg train --method dino').

The training images are listed in the parameters (``images: [a.ome.zarr, ...]``) or given with
--images. MODEL_DIR receives best.pt when training ends (the teacher ViT, usable by
``zarrseg features --checkpoint``), last.pt (resume point: student, teacher, DINO centre,
optimiser, RNG states), history.csv (loss per step) and metrics.csv.
"""

from __future__ import annotations

import argparse
import logging

from ._common import add_params_arguments
from .train import add_train_arguments, run_method

HELP = "DINO self-distillation pretraining of a ViT on OME-Zarr tiles"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_train_arguments(parser)
    parser.add_argument("--checkpoint", metavar="CKPT", help="start from these ViT weights (default: random init)")
    add_params_arguments(parser, "pretrain", "loop.steps=200")


def run(args: argparse.Namespace) -> int:
    summary = run_method("dino", args, init_checkpoint_key="init_checkpoint")
    log.info(
        "pretrain: %d steps, loss %.4f -> %.4f, %.0f s",
        summary["steps"],
        summary.get("first_loss", float("nan")),
        summary.get("last_loss", float("nan")),
        summary["seconds"],
    )
    return 0

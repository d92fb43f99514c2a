"""Fine-tune a DINO ViT by reconstruction (thesis §3.4) ('zarrseg train --method finetune').

The last ``trainable_blocks`` ViT blocks and an up-sampling decoder learn an L1 reconstruction.
Training images are listed in the parameters (``images: [...]``) or given with --images.
MODEL_DIR receives best.pt when training ends (the adapted ViT, for ``zarrseg features
--checkpoint``), last.pt (resume point, with the decoder), history.csv and metrics.csv.
"""

from __future__ import annotations

import argparse
import logging

from ._common import add_params_arguments
from .train import add_train_arguments, run_method

HELP = "fine-tune a DINO ViT with a reconstruction head (L1)"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_train_arguments(parser)
    parser.add_argument("--checkpoint", metavar="CKPT", help="ViT to fine-tune (file or dino model folder)")
    add_params_arguments(parser, "finetune", "loop.steps=200")


def run(args: argparse.Namespace) -> int:
    summary = run_method("finetune", args, init_checkpoint_key="checkpoint")
    log.info(
        "finetune: %d steps, L1 %.4f -> %.4f, %.0f s",
        summary["steps"],
        summary.get("first_loss", float("nan")),
        summary.get("last_loss", float("nan")),
        summary["seconds"],
    )
    return 0

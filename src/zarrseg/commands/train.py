"""Train a 2D/3D U-Net boundary (or foreground / affinity) predictor on OME-Zarr images.

Training data are lists of {image, labels, roi} entries (parameters 'train' and 'val');
patches are read lazily from Zarr. MODEL_DIR receives best.pt (best by 'val_metric': ARand of
threshold + connected components, validation loss, or ARand / VOI of the full segment pipeline
on a validation crop with 'val_segment.enabled'), last.pt (for --resume), metrics.csv and, when
available, TensorBoard logs. With several visible CUDA devices one DDP process runs per device
('multi_gpu'); 'torchrun --nproc-per-node N -m zarrseg train ...' works too. The checkpoint
carries the model config and normalisation, so 'zarrseg predict --checkpoint MODEL_DIR/best.pt'
needs nothing else; 'zarrseg export' packages it for BioImage.IO.
"""

from __future__ import annotations

import argparse

from ._common import add_params_arguments, params_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", required=True, metavar="MODEL_DIR", help="folder for checkpoints and logs"
    )
    parser.add_argument("--resume", action="store_true", help="continue from MODEL_DIR/last.pt")
    parser.add_argument(
        "--torchscript", action="store_true", help="also export MODEL_DIR/best.torchscript.pt"
    )
    add_params_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..unet.train_params import TrainParams
    from ..unet.trainer import train

    params = params_from_args(TrainParams, args, "train")
    train(params, args.output, resume=args.resume)
    if args.torchscript:
        from ..unet.checkpoint import export_torchscript

        export_torchscript(Path(args.output) / "best.pt", Path(args.output) / "best.torchscript.pt")
    return 0

"""Train a learning method (default: the U-Net) on OME-Zarr images; every method through one loop.

--method picks a registered method (zarrseg train --list-methods shows them); its parameters
come from --params / --set (the method's config section, e.g. 'train' for unet, 'pretrain' for
dino; the parameters listed at the end are the unet's). MODEL_DIR receives best.pt when training
ends (the best validation, or the final weights for methods without one: the file zarrseg predict
and features take), best-so-far.pt (the best weights while training runs), last.pt (every
loop.checkpoint_every steps: the resume point), history.csv (loss per step), metrics.csv (one
row per evaluation) and, when installed, TensorBoard logs. A killed run continues exactly with
--resume (or --resume auto: resume when MODEL_DIR holds the same run, else start over).
With several visible CUDA devices one DDP process runs per device (loop.multi_gpu); 'torchrun
--nproc-per-node N -m zarrseg train ...' works too. 'zarrseg export' packages a U-Net for
BioImage.IO.

The U-Net's images and labels are pairs in its parameters, not --images, e.g. unet.yaml:
  train: [{image: raw.ome.zarr, labels: cells_labels.ome.zarr, roi: "0:40"}]
  val: [{image: raw.ome.zarr, labels: cells_labels.ome.zarr, roi: "40:50"}]
  model: {ndim: 3}
  zarrseg train -o models/unet --params unet.yaml --set loop.steps=2000
"""

from __future__ import annotations

import argparse

from ._common import add_params_arguments, params_from_args


def add_train_arguments(parser: argparse.ArgumentParser, output_required: bool = True) -> None:
    """Options every training command shares (train, pretrain, finetune)."""
    parser.add_argument(
        "-o", "--output", required=output_required, metavar="MODEL_DIR", help="folder for checkpoints and logs"
        + ("" if output_required else " (required unless --list-methods)"),
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="yes",
        default="no",
        choices=["yes", "auto", "no"],
        help="continue from MODEL_DIR/last.pt; 'auto': resume when MODEL_DIR holds the same run, else start over",
    )
    parser.add_argument(
        "--images", nargs="+", metavar="IMAGE", help="training OME-Zarr images (methods that learn from images)"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", default="unet", help="learning method (default: unet)")
    parser.add_argument("--list-methods", action="store_true", help="list the registered methods and exit")
    add_train_arguments(parser, output_required=False)  # --list-methods needs no folder
    parser.add_argument(
        "--torchscript", action="store_true", help="unet: also export MODEL_DIR/best.torchscript.pt"
    )
    add_params_arguments(parser, "train", "loop.steps=500")


def run_method(method: str, args: argparse.Namespace, init_checkpoint_key: str | None = None) -> dict:
    """Load the method's parameters from the arguments, train, return the loop's summary."""
    from ..learn.loop import train
    from ..learn.registry import get_method

    spec = get_method(method)
    params = params_from_args(spec.params, args, spec.config_section)
    if getattr(args, "images", None):
        if not hasattr(params, "images"):
            from ..errors import ConfigError

            raise ConfigError(f"--images does not apply to method {method!r}")
        params.images = list(args.images)
    if init_checkpoint_key and getattr(args, "checkpoint", None):
        setattr(params, init_checkpoint_key, args.checkpoint)
    resume = {"yes": True, "no": False, "auto": "auto"}[args.resume]
    summary = train(spec, params, args.output, resume=resume)
    print(summary_line(args.output, summary))
    return summary


def summary_line(out_dir: str, summary: dict) -> str:
    """One line on stdout when training ends (the progress bar and log go to stderr): where the
    model is, how far it trained and why it stopped, the loss, and the last validation scores."""
    last = summary["rows"][-1] if summary.get("rows") else {}
    scores = ", ".join(f"{k} {float(v):.4g}" for k, v in last.items()
                       if k.startswith("val_") and v not in ("", None) and float(v) == float(v))
    return (f"{out_dir}/best.pt: {summary['steps']} steps ({summary['stop']}) in {summary['seconds']:.0f} s; "
            f"loss {summary.get('first_loss', float('nan')):.4g} -> {summary.get('last_loss', float('nan')):.4g}"
            + (f"; {scores}" if scores else ""))


def run(args: argparse.Namespace) -> int:
    if args.list_methods:
        from ..learn.registry import all_methods

        specs = list(all_methods())
        width = max(len(spec.name) for spec in specs)
        for spec in specs:
            print(f"{spec.name:{width}s}  section '{spec.config_section}': {spec.summary}")
        return 0
    if args.output is None:
        from ..errors import ConfigError

        raise ConfigError("-o/--output MODEL_DIR is required (unless --list-methods)")
    run_method(args.method, args)
    if args.torchscript:
        from pathlib import Path

        from ..methods.unet.checkpoint import export_torchscript

        export_torchscript(Path(args.output) / "best.pt", Path(args.output) / "best.torchscript.pt")
    return 0

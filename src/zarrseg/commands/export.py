"""Export a checkpoint written by 'zarrseg train' as a BioImage.IO-style model package.

DIR receives rdf.yaml (model description format 0.5), weights_torchscript.pt (runs without
zarrseg: torch.jit.load), weights.pt (state dict for zarrseg.methods.unet.models.build_unet), a test
input/output pair (.npy) and README.md. Nothing is downloaded; when the bioimageio.spec package
is installed the description is validated with it.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint (MODEL_DIR/best.pt, or MODEL_DIR itself)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="package folder to write")
    parser.add_argument("--name", help="model name (default: 'zarrseg <target> U-Net (<n>D)')")
    parser.add_argument("--description", help="one-paragraph description")
    parser.add_argument(
        "--author", action="append", default=[], metavar="NAME", help="author name (repeatable)"
    )
    parser.add_argument("--license", default="MIT", help="SPDX license identifier (default: MIT)")
    parser.add_argument("--tag", action="append", default=[], metavar="TAG", help="extra tag (repeatable)")
    parser.add_argument(
        "--test-shape",
        type=int,
        nargs="+",
        metavar="N",
        help="spatial shape of the test tensor (default: the training patch shape)",
    )


def run(args: argparse.Namespace) -> int:
    from ..methods.unet.export import ExportOptions, export_bioimageio

    opts = ExportOptions(
        name=args.name,
        description=args.description,
        authors=args.author,
        license=args.license,
        tags=args.tag,
        test_shape=args.test_shape,
    )
    from ..learn import model_file

    rdf = export_bioimageio(model_file(args.checkpoint), args.output, opts)
    print(rdf)
    return 0

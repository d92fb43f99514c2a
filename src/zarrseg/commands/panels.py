"""Side-by-side figure of one image: original | label images of several methods | ground truth.

One panel per input, left to right (e.g. original, colour clustering, DINO clustering, fine-tuned
clustering, ground truth). 3D volumes show one z-slice (parameter z, default the middle one) and
the image one channel (parameter channel, default 0); planes are read at display resolution.
Labels keep their ids' colours across panels (0 black).

Example:
  zarrseg panels results/ingest/s1/image.ome.zarr/0 --labels colour=results/exp/s1/c1/labels.ome.zarr \\
      --labels dino=results/exp/s1/c2/labels.ome.zarr --gt results/ingest/s1/ground_truth.ome.zarr \\
      -o results/exp/figures/s1_side_by_side.png --set max_size=512
"""

from __future__ import annotations

import argparse

from ..errors import InputError
from ._common import add_params_arguments, params_from_args

HELP = "side-by-side figure: original | label images | ground truth"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE", help="original OME-Zarr image")
    parser.add_argument(
        "--labels",
        metavar="TITLE=LABELS",
        action="append",
        default=[],
        help="a label image and its title (repeat)",
    )
    parser.add_argument("--gt", metavar="GROUND_TRUTH", help="ground-truth label image (last panel)")
    parser.add_argument("-o", "--output", required=True, metavar="FIGURE.png", help="output PNG")
    add_params_arguments(parser, "panels", "z=10")


def run(args: argparse.Namespace) -> int:
    from ..evaluation.panels import PanelParams, side_by_side

    params = params_from_args(PanelParams, args, "panels")
    labels = []
    for item in args.labels:
        title, sep, path = item.partition("=")
        if not sep or not title or not path:
            raise InputError(f"--labels expects TITLE=LABELS, got {item!r}")
        labels.append((title, path))
    side_by_side(args.image, labels, args.output, ground_truth=args.gt, params=params)
    return 0

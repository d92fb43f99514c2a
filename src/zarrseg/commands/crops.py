"""Sliding-window crops of the middle z-planes of staged images, split by acquisition (a crop store).

Each acquisition (IMAGE[=SPLIT[:MASK]] or the `images` parameter: {image, split, labels, name})
goes whole to one split (pretrain, finetune, test); its middle `planes` z-planes are normalised,
cut into crop_size x crop_size crops with a window step of `step` x crop_size, and crops whose
mask covers less than `min_foreground` are dropped (acquisitions with masks only). OUTPUT is a
Zarr group with one array per split (<split>/image: N x S x S, <split>/mask: uint8 0/1) and
origins.parquet / origins.csv (split, index, name, image, z, y, x, foreground, labelled).
Rotations (rotations: true) are drawn when crops are read, not stored. Training methods read
the store by path: the contrastive stages take it as their `crops` parameter, and a U-Net trains
on its fine-tuning crops as an image stack, e.g. train: [{image: STORE/finetune/image, labels:
STORE/finetune/mask}]. Defaults (crop_size 320, step 0.5, ...) are listed at the end.

Example:
  zarrseg crops a.ome.zarr=pretrain b.ome.zarr=finetune:b_mask.ome.zarr -o crops.zarr --set crop_size=256
"""

from __future__ import annotations

import argparse
import json

from ._common import add_params_arguments

HELP = "sliding-window crops of staged images into a Zarr crop store, split by acquisition"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "sources", nargs="*", metavar="IMAGE=SPLIT[:MASK]",
        help="staged OME-Zarr image, its split (pretrain, finetune, test) and optionally its mask",
    )
    parser.add_argument("-o", "--output", required=True, metavar="CROPS", help="output crop store (folder)")
    add_params_arguments(parser, "crops", "crop_size=128")


def parse_source(text: str) -> dict:
    from ..errors import ConfigError

    image, sep, rest = text.rpartition("=")
    if not sep or not image:
        raise ConfigError(f"{text!r} is not of the form IMAGE=SPLIT[:MASK]")
    split, _, mask = rest.partition(":")
    return {"image": image, "split": split, "labels": mask or None}


def run(args: argparse.Namespace) -> int:
    from ..crops import CropParams, prepare_crops
    from ..params import load_params, parse_overrides

    extra = {"images": [parse_source(s) for s in args.sources]} if args.sources else {}
    params = load_params(CropParams, *args.params, parse_overrides(args.overrides), extra, where="crops")
    summary = prepare_crops(params, args.output)
    print(json.dumps({"counts": summary["counts"], "seconds": round(summary["seconds"], 2)}))
    return 0

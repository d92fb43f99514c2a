"""Cluster a feature volume (PCA + mean colour + K-means/HDBSCAN) into a pixel label image.

Given a feature volume of 'zarrseg features', its patch tokens are clustered; given an
OME-Zarr image instead, the colour baseline runs (K-means on the mean intensity of m x m
patches, m = parameter colour_patch). The output is a label OME-Zarr with the image's
geometry; labels are 1..k (0: HDBSCAN noise; threshold: 1 below, 2 at or above the threshold;
argmax: 1 + the channel with the highest score). The method is a parameter (default auto: kmeans
with n_clusters 2 for features and colours, affinity for pixel embeddings; all keys at the end).

Example:
  zarrseg cluster features.zarr -o labels.ome.zarr --set method=kmeans --set n_clusters=4
"""

from __future__ import annotations

import argparse

from ._common import add_params_arguments, params_from_args

HELP = "cluster feature volumes (PCA + colour + K-means/HDBSCAN) or pixel embeddings into labels"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "features",
        metavar="FEATURES.zarr",
        help="feature volume of 'zarrseg features', embeddings of 'zarrseg predict' (or an OME-Zarr image: colour baseline)",
    )
    parser.add_argument(
        "--image", metavar="IMAGE", help="the image the features belong to (default: as recorded)"
    )
    parser.add_argument("-o", "--output", required=True, metavar="LABELS.ome.zarr", help="output label image")
    parser.add_argument(
        "--foreground", metavar="MASK.ome.zarr",
        help="pixel embeddings: cluster only inside this image's pixels > 0 (e.g. the ground truth); 0 outside",
    )
    add_params_arguments(parser, "cluster", "method=hdbscan")


def run(args: argparse.Namespace) -> int:
    from ..ssl.cluster import ClusterParams, cluster

    params = params_from_args(ClusterParams, args, "cluster")
    cluster(args.features, args.output, params, image=args.image, foreground=args.foreground)
    return 0

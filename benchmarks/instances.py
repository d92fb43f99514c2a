"""From foreground to instances: what the distance-transform split adds, in F1@0.5 and SEG.

For the shared nuclei sets (Cell Tracking Challenge Fluo-N2DH-GOWT1, 6 frames; the DSB2018
sample and the second DSB2018 crop of the StarDist samples), two foregrounds per image:

- ``gt``: the ground truth's foreground (label > 0), i.e. a perfect semantic segmentation,
  where everything lost is touching nuclei merged;
- ``kmeans``: colour K-means (k = 2) of 8 x 8 patch means, the grid's ``colour_kmeans`` row
  (``zarrseg cluster``), the brighter cluster taken as foreground;

each turned into instances by the segment stage's ``connected_components`` partitioner
(blockwise, 256-pixel blocks): plain components, with ``split`` (DT-watershed), and with
``split`` + ``split_neck`` (pieces joined where their contact is not a neck). Scores are the
evaluate stage's (``zarrseg.evaluation``), ground-truth label 0 = background. Usage:

    python benchmarks/instances.py [--workdir DIR] [--neck 0.5] [--sigma 2.0] [--min-size 30]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ZARRSEG_SHARED_DATA", REPO.parent / "shared" / "data"))


def samples() -> list[tuple[str, Path, Path]]:
    gowt1 = DATA / "nuclei2d" / "N2DH-GOWT1"
    out = [(f"gowt1_{p.stem}", p, gowt1 / "gt" / f"man_seg{p.stem[1:]}.tif") for p in sorted((gowt1 / "img").glob("t*.tif"))]
    out.append(("dsb2018", DATA / "dsb2018_sample" / "img2d.tif", DATA / "dsb2018_sample" / "mask2d.tif"))
    crop = DATA / "stardist_samples"
    out.append(("dsb2018_crop256", crop / "crop256_img2d.tif", crop / "crop256_mask2d.tif"))
    return out


def write(path: Path, data: np.ndarray, is_label: bool = False) -> Path:
    from zarrseg import ome

    arr = ome.create_image(path, shape=data.shape, dtype=data.dtype, axes="yx", scale=(1.0, 1.0),
                           chunks=(256, 256), is_label=is_label)
    arr[...] = data
    return path


def kmeans_foreground(image: Path, image_data: np.ndarray, work: Path) -> np.ndarray:
    """The grid's colour K-means row; the cluster with the brighter mean intensity is the foreground."""
    from zarrseg import ome
    from zarrseg.params import load_params
    from zarrseg.ssl.cluster import ClusterParams, cluster

    params = load_params(ClusterParams, {"n_clusters": 2, "colour_patch": 8, "use_colour": True,
                                         "dask": {"scheduler": "synchronous"}})
    cluster(image, work / "kmeans.ome.zarr", params)
    labels = np.asarray(ome.open_image(work / "kmeans.ome.zarr").data[...])
    means = [image_data[labels == k].mean() if (labels == k).any() else -np.inf for k in (1, 2)]
    return labels == (1 + int(np.argmax(means)))


def instances(fg_path: Path, out: Path, args: argparse.Namespace, split: bool, neck: float) -> dict:
    from zarrseg.params import load_params
    from zarrseg.segment import SegmentParams
    from zarrseg.segment.engine import segment

    params = load_params(SegmentParams, {
        "partitioner": "connected_components", "split": split, "split_neck": neck,
        "sigma_seeds": args.sigma, "min_size": args.min_size, "post_min_size": args.min_size,
        "block_shape": [256, 256], "halo": [64, 64], "chunks": [256, 256],
        "dask": {"scheduler": "synchronous"},
    })
    return segment(fg_path, out, params)


def scores(seg: Path, gt: Path) -> dict[str, float]:
    from zarrseg.evaluation.score import EvaluateParams, evaluate_images
    from zarrseg.params import load_params

    params = load_params(EvaluateParams, {"metrics": ["f1@0.5", "seg", "n_seg_objects", "n_gt_objects"],
                                          "iou_thresholds": [0.5], "dask": {"scheduler": "synchronous"}})
    return evaluate_images(seg, [gt], params)[""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", help="scratch folder (created when missing; default: a temporary one)")
    parser.add_argument("--neck", type=float, default=0.5, help="split_neck of the third variant")
    parser.add_argument("--sigma", type=float, default=2.0, help="sigma_seeds of the split")
    parser.add_argument("--min-size", type=int, default=30, help="min_size and post_min_size (pixels)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("ZARRSEG_NO_PROGRESS", "1")
    import tifffile

    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    variants = [("components", False, 0.0), ("split", True, 0.0), (f"split, neck {args.neck:g}", True, args.neck)]
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for name, image_file, gt_file in samples():
            work = Path(tmp) / name
            image_data, gt = tifffile.imread(image_file), tifffile.imread(gt_file).astype(np.uint32)
            image = write(work / "image.ome.zarr", image_data)
            gt_path = write(work / "gt.ome.zarr", gt, is_label=True)
            for source, fg in (("gt", gt > 0), ("kmeans", kmeans_foreground(image, image_data, work))):
                fg_path = write(work / f"fg_{source}.ome.zarr", fg.astype(np.uint8))
                for k, (variant, split, neck) in enumerate(variants):
                    seg = work / f"seg_{source}_{k}.ome.zarr"
                    instances(fg_path, seg, args, split, neck)
                    s = scores(seg, gt_path)
                    rows.append((name, source, variant, s["f1@0.50"], s["seg"], int(s["n_seg_objects"]),
                                 int(s["n_gt_objects"])))
                    print(f"  {name:16s} {source:7s} {variant:16s} F1@0.5 {s['f1@0.50']:.3f}  SEG {s['seg']:.3f}  "
                          f"objects {int(s['n_seg_objects'])} / {int(s['n_gt_objects'])}", flush=True)
    print(f"\nmeans (sigma_seeds {args.sigma:g}, min sizes {args.min_size} px, blocks 256 px):")
    print("| set | foreground | " + " | ".join(f"{v} F1@0.5 / SEG" for v, _, _ in variants) + " |")
    print("|---|---|" + "---|" * len(variants))
    for group in ("gowt1", "dsb2018"):
        for source in ("gt", "kmeans"):
            cells = []
            for variant, _, _ in variants:
                sel = [r for r in rows if r[0].startswith(group) and r[1] == source and r[2] == variant]
                cells.append(f"{np.mean([r[3] for r in sel]):.3f} / {np.mean([r[4] for r in sel]):.3f}")
            n = len({r[0] for r in rows if r[0].startswith(group)})
            print(f"| {group} ({n}) | {source} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

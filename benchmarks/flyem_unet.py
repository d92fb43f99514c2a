"""FlyEM medulla 250^3: 3D U-Net trained on z < 150, predicted on z >= 150, blockwise multicut, ARand/VOI.

    nice -n 10 python benchmarks/flyem_unet.py --workdir /tmp/zarrseg_flyem [--minutes 25]

The baseline is the inverted raw image as boundary map (intensity method, invert) with the
same blockwise segmentation settings.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import h5py
import imageio.v3 as iio
import numpy as np

from zarrseg import ome
from zarrseg.cli import main as cli

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "flyem_fibsem_medulla"
SPLIT = 150


def prepare(work: Path) -> None:
    if (work / "test_gt.ome.zarr").exists():
        return
    files = sorted((DATA / "grayscale_maps").glob("iso.*.png"), key=lambda p: int(p.stem.split(".")[1]))
    raw = np.stack([iio.imread(f) for f in files])
    with h5py.File(DATA / "groundtruth_bodies_derived.h5", "r") as f:
        gt = f["stack"][...].astype(np.uint32)
    # sanity check of the alignment: membranes (label changes) must be darker than cell interiors
    from skimage.segmentation import find_boundaries

    b = find_boundaries(gt[::25], mode="inner")
    print(f"raw at GT boundaries {raw[::25][b].mean():.1f} vs inside {raw[::25][~b].mean():.1f}")
    for name, data, is_label in (
        ("train", raw[:SPLIT], False),
        ("train_gt", gt[:SPLIT], True),
        ("test", raw[SPLIT:], False),
        ("test_gt", gt[SPLIT:], True),
    ):
        arr = ome.create_image(
            work / f"{name}.ome.zarr",
            shape=data.shape,
            dtype=data.dtype,
            axes="zyx",
            scale=[0.01, 0.01, 0.01],
            chunks=(64, 128, 128),
            is_label=is_label,
        )
        arr[...] = data


def train_params(work: Path, minutes: float) -> dict:
    img, gt = str(work / "train.ome.zarr"), str(work / "train_gt.ome.zarr")
    return {
        "train": [{"image": img, "labels": gt, "roi": "0:130"}],
        "val": [{"image": img, "labels": gt, "roi": "130:150, 0:128, 0:128"}],
        "model": {"ndim": 3, "f_maps": 8, "depth": 3, "norm": "batch"},
        "target": {"kind": "boundaries"},
        "val_metric": "loss",  # threshold + CC ARand saturates on 3D EM crops (picked iteration 200 in our run)
        "patch_shape": [32, 64, 64],
        "batch_size": 2,
        "iterations": 3000,
        "validate_every": 100,
        "max_cpu_minutes": minutes,
        "max_minutes": 3 * minutes,
        "optimizer": {"lr": 1e-3, "lr_patience": 3},
        "early_stopping": 0,
        "num_workers": 0,
        "threads": 1,
        "seed": 0,
        "augment": {"elastic": 0.2, "gaussian_noise": 0.3},
    }


SEGMENT = {
    "partitioner": "multicut",
    "solver": "gaec",
    "beta": 0.5,
    "threshold": 0.5,
    "sigma_seeds": 2.0,
    "min_size": 50,
    "post_min_size": 50,
    "block_shape": [64, 128, 128],
    "halo": [8, 16, 16],
}


def score(boundaries: Path, work: Path, tag: str, beta: float) -> dict:
    from zarrseg.evaluation.contingency import Contingency
    from zarrseg.evaluation.instance import adapted_rand, voi
    from zarrseg.params import load_params
    from zarrseg.segment import SegmentParams, segment

    out = work / f"{tag}_seg_b{beta}.ome.zarr"
    if not out.exists():
        segment(boundaries, out, load_params(SegmentParams, {**SEGMENT, "beta": beta}))
    seg = ome.open_image(out).data[...]
    gt = ome.open_image(work / "test_gt.ome.zarr").data[...]
    table = Contingency.from_arrays(seg, gt)
    return {**adapted_rand(table), **voi(table), "n_segments": int(len(np.unique(seg)))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/zarrseg_flyem"))
    ap.add_argument("--minutes", type=float, default=25.0)
    ap.add_argument("--steps", default="all", help="comma list of prepare,train,predict,evaluate,baseline")
    ap.add_argument("--betas", type=float, nargs="+", default=[0.5])
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    steps = (
        {"prepare", "train", "predict", "evaluate", "baseline"}
        if args.steps == "all"
        else set(args.steps.split(","))
    )
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    if "prepare" in steps:
        prepare(work)
    model_dir = work / "model"
    if "train" in steps and not (model_dir / "best.pt").exists():
        t0 = time.process_time()
        cli(["train", "-o", str(model_dir), "--params", json.dumps(train_params(work, args.minutes)), "-v"])
        print(f"training CPU time: {(time.process_time() - t0) / 60:.1f} min")
    results_path = work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if "predict" in steps:
        t0 = time.perf_counter()
        cli(
            [
                "predict",
                str(work / "test.ome.zarr"),
                "-o",
                str(work / "unet.ome.zarr"),
                "--checkpoint",
                str(model_dir / "best.pt"),
                "--set",
                "method=unet",
                "--set",
                "num_workers=0",
                "--set",
                "tile_shape=[48,96,96]",
            ]
        )
        results["predict_seconds"] = time.perf_counter() - t0
    for beta in args.betas:
        if "evaluate" in steps:
            results[f"unet_beta{beta}"] = score(work / "unet.ome.zarr", work, "unet", beta)
        if "baseline" in steps:
            if not (work / "raw.ome.zarr").exists():
                cli(
                    [
                        "predict",
                        str(work / "test.ome.zarr"),
                        "-o",
                        str(work / "raw.ome.zarr"),
                        "--set",
                        "invert=true",
                    ]
                )
            results[f"inverted_raw_beta{beta}"] = score(work / "raw.ome.zarr", work, "raw", beta)
    print(json.dumps(results, indent=1))
    results_path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

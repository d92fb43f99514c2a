"""FlyEM medulla 250^3: 3D U-Net trained on z < 150, predicted on z >= 150, blockwise multicut, ARand/VOI.

    nice -n 10 python benchmarks/flyem_unet.py --workdir /tmp/zarrseg_flyem [--minutes 25]

The baseline is the inverted raw image as boundary map (intensity method, invert) with the
same blockwise segmentation settings.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import imageio.v3 as iio
import numpy as np
from unet_driver import run, write_split

from zarrseg import ome

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
    write_split(work, raw, gt, slice(None, SPLIT), slice(SPLIT, None), scale=[0.01, 0.01, 0.01], chunks=(64, 128, 128))


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
        "optimizer": {"lr": 1e-3, "lr_patience": 3},
        "num_workers": 0,
        "loop": {
            "steps": 3000,
            "eval_every": 100,
            "checkpoint_every": 100,
            "max_cpu_minutes": minutes,
            "max_minutes": 3 * minutes,
            "early_stopping": 0,
            "threads": 1,
            "seed": 0,
        },
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
    def record(boundaries: Path, work: Path, kind: str, beta: float) -> dict:
        return {f"{kind}_beta{beta}": score(boundaries, work, "unet" if kind == "unet" else "raw", beta)}

    run(default_workdir=Path("/tmp/zarrseg_flyem"), default_minutes=25.0, default_betas=[0.5], prepare=prepare,
        train_params=train_params, tile_shape=[48, 96, 96], score=record)


if __name__ == "__main__":
    main()

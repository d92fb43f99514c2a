"""ISBI 2012: train a 2D U-Net on slices 0-19, predict 20-29, segment with the blockwise engine, score ARand.

Usage (each step skips what already exists under --workdir):
    nice -n 10 python benchmarks/isbi_unet.py --workdir /tmp/zarrseg_isbi [--minutes 28] [--steps all]

Ground truth per slice: connected components (4-connectivity) of the label interior (255);
membranes (0) are ignored by the metric. The classical baseline uses the inverted raw image
as boundary map (intensity method, invert) with the same segmentation settings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from skimage.measure import label as connected_components
from unet_driver import run, write_split

from zarrseg import ome

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012_em_membrane"
TRAIN_SLICES, TEST_SLICES = slice(0, 20), slice(20, 30)


def prepare(work: Path) -> None:
    if (work / "test_gt.ome.zarr").exists():
        return
    raw = tifffile.imread(DATA / "train-volume_from_png.tif")
    lab = tifffile.imread(DATA / "train-labels_from_png.tif")
    gt = np.stack([connected_components(s > 127, connectivity=1) for s in lab]).astype(np.uint32)
    write_split(work, raw, gt, TRAIN_SLICES, TEST_SLICES, scale=[0.05, 0.004, 0.004], chunks=(1, 512, 512))


def train_params(work: Path, minutes: float) -> dict:
    img, gt = str(work / "train.ome.zarr"), str(work / "train_gt.ome.zarr")
    return {
        "train": [{"image": img, "labels": gt, "roi": "0:18"}],
        "val": [{"image": img, "labels": gt, "roi": "18:20"}],
        "model": {"ndim": 2, "f_maps": 16, "depth": 4, "norm": "batch"},
        "target": {"kind": "boundaries", "background_is_boundary": True},
        "patch_shape": [192, 192],
        "batch_size": 4,
        "optimizer": {"lr": 1e-3, "lr_patience": 3},
        "num_workers": 0,
        "loop": {
            "steps": 1200,
            "eval_every": 100,
            "checkpoint_every": 100,
            "max_cpu_minutes": minutes,
            "max_minutes": 3 * minutes,
            "early_stopping": 0,
            "threads": 1,
            "seed": 0,
        },
        "augment": {"elastic": 0.3, "poisson_noise": 0.0, "gaussian_noise": 0.3},
    }


SEGMENT = {
    "partitioner": "multicut",
    "solver": "gaec",
    "beta": 0.3,
    "threshold": 0.5,
    "sigma_seeds": 2.0,
    "min_size": 20,
    "post_min_size": 20,
    "block_shape": [512, 512],
    "halo": [32, 32],
}


def score_slices(boundaries: Path, work: Path, tag: str, segment_params: dict) -> list[float]:
    """Segment every predicted slice in 2D with zarrseg.segment and score it against the slice's GT."""
    from zarrseg.evaluation.contingency import Contingency
    from zarrseg.evaluation.instance import adapted_rand, voi
    from zarrseg.params import load_params
    from zarrseg.segment import SegmentParams, segment

    pred = ome.open_image(boundaries).data
    gt = ome.open_image(work / "test_gt.ome.zarr").data
    scores = []
    for z in range(pred.shape[0]):
        sl = work / f"{tag}_slice{z}.ome.zarr"
        arr = ome.create_image(
            sl, shape=pred.shape[1:], dtype=np.float32, axes="yx", scale=[1, 1], chunks=(512, 512)
        )
        arr[...] = np.asarray(pred[z], dtype=np.float32)
        out = work / f"{tag}_seg{z}.ome.zarr"
        segment(sl, out, load_params(SegmentParams, segment_params))
        seg = ome.open_image(out).data[...]
        table = Contingency.from_arrays(seg, gt[z])
        scores.append({**adapted_rand(table), **voi(table)})
    return scores


def main() -> None:
    def record(boundaries: Path, work: Path, kind: str, beta: float) -> dict:
        per_slice = score_slices(boundaries, work, f"{'unet' if kind == 'unet' else 'raw'}_b{beta}",
                                 {**SEGMENT, "beta": beta})
        out = {f"{kind}_beta{beta}": {k: float(np.mean([x[k] for x in per_slice])) for k in per_slice[0]}}
        if kind == "unet":
            out[f"unet_beta{beta}_per_slice_arand"] = [round(x["arand"], 4) for x in per_slice]
        return out

    run(default_workdir=Path("/tmp/zarrseg_isbi"), default_minutes=28.0, default_betas=[0.3, 0.5], prepare=prepare,
        train_params=train_params, tile_shape=[256, 256], score=record)


if __name__ == "__main__":
    main()

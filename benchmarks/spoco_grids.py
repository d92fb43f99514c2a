"""Data and thesis-layout reports for the SPOCO grids (config/experiments/spoco_*.yaml).

  sheet    write the images the SPOCO sample sheet (config/samples_spoco.tsv) names, as TIFFs
           under work/spoco_data/ (outside git), from ../shared/data (read-only):
             GOWT1 nuclei frames, 4x downsampled (256^2, nuclei 12-25 px across): train t01 t21
             t31 t39, test t52 t72; the train frames cut into 16 tiles of 128^2 (annotation budget);
             GOAT organoids, 4x downsampled (384 x 512, one grey channel): train 291 545 651 731,
             test 301 668 (split by image); the train images cut into 12 tiles of 128^2 each, those
             with an organoid kept (47 tiles: annotation budget);
             FlyEM medulla 250^3: train z < 150, test z >= 150 (as benchmarks/flyem_unet.py).
  report   thesis-style tables from a grid's results/<experiment>/metrics.parquet: per row, the mean
           over the test images of each run, then mean +- sd over the runs (the seeds), with the
           clustering's own runtime per image (clustering_s).

    python benchmarks/spoco_grids.py sheet
    snakemake --snakefile workflow/Snakefile --profile profiles/local --configfile config/spoco_cpu.yaml \\
        --config experiment=spoco_sparsity
    python benchmarks/spoco_grids.py report results/spoco_sparsity/metrics.parquet
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ZARRSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
OUT = REPO / "work" / "spoco_data"
GOWT1 = {"train": ["01", "21", "31", "39"], "test": ["52", "72"]}
ORGANOIDS = {"train": ["291", "545", "651", "731"], "test": ["301", "668"]}
FLYEM_SPLIT = 150


def _down(image: np.ndarray, f: int = 4) -> np.ndarray:
    """f x f mean (images; labels take every f-th pixel)."""
    h, w = (image.shape[0] // f) * f, (image.shape[1] // f) * f
    return image[:h, :w].reshape(h // f, f, w // f, f).mean((1, 3)).astype(image.dtype)


def _write(name: str, image: np.ndarray, labels: np.ndarray, axes: str = "YX") -> None:
    import tifffile

    tifffile.imwrite(OUT / f"{name}.tif", image, imagej=True, metadata={"axes": axes})
    tifffile.imwrite(OUT / f"{name}_labels.tif", labels, imagej=labels.dtype != np.uint32, metadata={"axes": axes})


def sheet() -> None:
    import h5py
    import imageio.v3 as iio
    import tifffile

    OUT.mkdir(parents=True, exist_ok=True)
    nuclei = SHARED / "nuclei2d" / "N2DH-GOWT1"
    for part, frames in GOWT1.items():
        for t in frames:
            image = _down(tifffile.imread(nuclei / "img" / f"t{t}.tif"))
            labels = tifffile.imread(nuclei / "gt" / f"man_seg{t}.tif")[::4, ::4]
            _write(f"gowt1_t{t}", image, labels)
            if part == "train":
                for k, (y, x) in enumerate([(0, 0), (0, 128), (128, 0), (128, 128)]):
                    _write(f"gowt1_t{t}_tile{k}", image[y : y + 128, x : x + 128], labels[y : y + 128, x : x + 128])
    goat = SHARED / "organoid_goat"
    for frames in ORGANOIDS.values():
        for name in frames:
            image = iio.imread(goat / "images" / f"{name}.png")
            image = image[..., 0] if image.ndim == 3 else image
            labels = iio.imread(goat / "labels" / f"{name}_labels.png")[::4, ::4]
            small = _down(image)
            _write(f"organoid_{name}", small, labels)
            if name in ORGANOIDS["train"]:  # 128^2 tiles with at least one organoid (budget grid)
                for k, (y, x) in enumerate(np.ndindex(labels.shape[0] // 128, labels.shape[1] // 128)):
                    box = np.s_[128 * y : 128 * (y + 1), 128 * x : 128 * (x + 1)]
                    if labels[box].any():
                        _write(f"organoid_{name}_tile{k}", small[box], labels[box])
    flyem = SHARED / "flyem_fibsem_medulla"
    files = sorted((flyem / "grayscale_maps").glob("iso.*.png"), key=lambda p: int(p.stem.split(".")[1]))
    raw = np.stack([iio.imread(f) for f in files])
    with h5py.File(flyem / "groundtruth_bodies_derived.h5", "r") as f:
        gt = f["stack"][...].astype(np.uint32)
    _write("flyem_train", raw[:FLYEM_SPLIT], gt[:FLYEM_SPLIT], "ZYX")
    _write("flyem_test", raw[FLYEM_SPLIT:], gt[FLYEM_SPLIT:], "ZYX")
    print(f"wrote the SPOCO grid data to {OUT}")


def report(paths: list[str], metrics: list[str], by: list[str] | None = None) -> str:
    """Rows (grid.row, and the ``by`` parameters, in grid order) x metrics: mean +- sd over the runs
    of each run's mean over the test images."""
    import json

    import pandas as pd

    table = pd.concat([pd.read_parquet(p) for p in paths])
    table = table[table["metric"].isin(metrics)].copy()
    keys = ["method", *(by or [])]
    for key in by or []:
        table[key] = [json.loads(p).get(key, "–") for p in table["params"]]
    per_run = table.groupby([*keys, "cell", "metric"], sort=False)["value"].mean().reset_index()
    lines = [f"| {' | '.join(keys)} | runs | {' | '.join(metrics)} |", "|---" * (len(keys) + len(metrics) + 1) + "|"]
    for key, frame in per_run.groupby(keys, sort=False):
        cells = []
        for m in metrics:
            v = frame[frame["metric"] == m]["value"].to_numpy()
            cells.append("–" if not len(v) else f"{v.mean():.3f}" + (f" ± {v.std(ddof=1):.3f}" if len(v) > 1 else ""))
        label = " | ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
        lines.append(f"| {label} | {frame['cell'].nunique()} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("sheet")
    rep = sub.add_parser("report")
    rep.add_argument("tables", nargs="+")
    rep.add_argument("--metrics", nargs="+", default=["sbd", "abs_dic", "ap@0.50", "msa", "clustering_s"])
    rep.add_argument("--by", nargs="+", default=[], help="parameters (e.g. cluster.method) that split the rows")
    args = parser.parse_args(argv)
    if args.command == "sheet":
        sheet()
    else:
        print(report(args.tables, args.metrics, args.by))
    return 0


if __name__ == "__main__":
    sys.exit(main())

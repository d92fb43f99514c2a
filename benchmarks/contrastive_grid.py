"""The contrastive grids (Zwijghuizen 2023): their data and their figures against the thesis.

  sheet    write the organoid TIFFs that config/samples_organoid.tsv names (work/contrastive_data/, outside
           git: the GOAT data is GPL test data): one channel of each greyscale PNG and its instance labels,
           halved (2 x 2 mean / nearest label) for the CPU configuration unless --scale 1
  report   read the grids' metrics tables (results/<experiment>/metrics.parquet per data set) and print the
           targets: F1 at the lowest labelled (local-stage) fraction with vs without pretraining, and the
           orderings of Tables 5.1 / 5.2 side by side with the thesis

  python benchmarks/contrastive_grid.py sheet
  snakemake ... --configfile config/contrastive_cpu.yaml --config experiment=contrastive_fractions
  python benchmarks/contrastive_grid.py report --results results --results results/nuclei
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ZARRSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
ORGANOIDS = ("291", "301", "545", "651", "668", "731")
THESIS_51 = {"bce_dice": 0.893, "ssim_dice": 0.885, "ssim_mae_dice": 0.886}
THESIS_52 = {  # (a) 40 % global / 60 % local
    ("frozen", "bce_dice"): 0.886, ("frozen", "ssim_dice"): 0.867, ("frozen", "ssim_mae_dice"): 0.864,
    ("trained", "bce_dice"): 0.901, ("trained", "ssim_dice"): 0.891, ("trained", "ssim_mae_dice"): 0.893,
}


def sheet(out: Path, scale: int) -> list[Path]:
    """Organoid TIFFs (image: one channel; labels: uint16 instances), downscaled by ``scale``."""
    import imageio.v3 as iio
    import tifffile

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ORGANOIDS:
        image = iio.imread(SHARED / "organoid_goat" / "images" / f"{name}.png")
        labels = iio.imread(SHARED / "organoid_goat" / "labels" / f"{name}_labels.png")
        image = image[..., 0] if image.ndim == 3 else image  # R = G = B
        if scale > 1:
            h, w = (s // scale * scale for s in image.shape)
            image = image[:h, :w].reshape(h // scale, scale, w // scale, scale).mean((1, 3)).round().astype(np.uint8)
            labels = labels[:h:scale, :w:scale]
        for path, data in ((out / f"{name}.tif", image), (out / f"{name}_labels.tif", labels.astype(np.uint16))):
            tifffile.imwrite(path, data, compression="zlib")
            written.append(path)
    return written


def cell_f1(results: Path, experiment: str) -> pd.DataFrame:
    """One row per grid cell: its parameters and its mean F1 (Dice) over the test images."""
    table = pd.read_parquet(results / experiment / "metrics.parquet")
    table = table[table["metric"] == "dice"]
    rows = []
    for (method, params), frame in table.groupby(["method", "params"], sort=False):
        p = json.loads(params)
        rows.append({"method": method, "loss": p.get("train.loss.name"), "seed": p.get("grid.seed"),
                     "global": p.get("contrastive_global.fraction"), "local": p.get("contrastive_local.fraction"),
                     "frozen": p.get("contrastive_local.freeze_encoder"), "f1": frame["value"].mean(),
                     "n_images": len(frame)})
    return pd.DataFrame(rows)


def _ms(values: pd.Series) -> str:
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) > 1 else f"{values.mean():.3f}"


def report(results: list[Path]) -> None:
    for root in results:
        print(f"\n## {root}")
        if (root / "contrastive_fractions" / "metrics.parquet").is_file():
            cells = cell_f1(root, "contrastive_fractions")
            pre, sup = cells[cells["method"] != "supervised"], cells[cells["method"] == "supervised"]
            low = pre["local"].min()
            print(f"lowest labelled (local-stage) fraction {low}: F1 mean ± sd over seeds")
            for loss, frame in pre[pre["local"] == low].groupby("loss", sort=False):
                base = sup[sup["loss"] == loss]["f1"]
                gain = frame["f1"].mean() - base.mean()
                print(f"  {loss:14s} pretrained {_ms(frame['f1'])} (n={len(frame)})  supervised {_ms(base)}"
                      f" (n={len(base)})  difference {gain:+.3f}")
            overall = pre[pre["local"] == low]["f1"].mean() - sup["f1"].mean()
            print(f"  all losses: pretrained - supervised {overall:+.3f}")
            per_global = pre.groupby(["global", "local"])["f1"].mean().unstack()
            print("mean F1 per global (rows) x local (columns) fraction:\n" + per_global.round(3).to_string())
        if (root / "contrastive_losses" / "metrics.parquet").is_file():
            cells = cell_f1(root, "contrastive_losses")
            print("Table 5.1 (mean F1 per loss)            here              thesis")
            t51 = cells.groupby("loss", sort=False)["f1"]
            for loss, values in t51:
                print(f"  {loss:14s} {_ms(values):>24s}   {THESIS_51[loss]:.3f}")
            order = list(t51.mean().sort_values(ascending=False).index)
            print(f"  order here: {' > '.join(order)}; thesis: {' > '.join(sorted(THESIS_51, key=THESIS_51.get, reverse=True))}")
            print("Table 5.2 (frozen vs trained encoder)   here              thesis (a)")
            for (frozen, loss), values in cells.groupby(["frozen", "loss"], sort=False)["f1"]:
                key = ("frozen" if frozen else "trained", loss)
                print(f"  {key[0]:8s} {loss:14s} {_ms(values):>18s}   {THESIS_52[key]:.3f}")
            means = cells.groupby(["loss", "frozen"])["f1"].mean().unstack()
            wins = int((means[False] >= means[True]).sum())
            print(f"  trained >= frozen for {wins} of {len(means)} losses (thesis: 3 of 3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    s = sub.add_parser("sheet")
    s.add_argument("--out", type=Path, default=REPO / "work" / "contrastive_data" / "organoid")
    s.add_argument("--scale", type=int, default=2, help="downscaling factor (1: full size, for GPU runs)")
    r = sub.add_parser("report")
    r.add_argument("--results", type=Path, action="append", default=None)
    args = parser.parse_args()
    if args.step == "sheet":
        for path in sheet(args.out, args.scale):
            print(path)
    else:
        report(args.results or [REPO / "results"])


if __name__ == "__main__":
    main()

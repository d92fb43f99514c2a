"""Unsupervised vs supervised segmentation on shared real data (layout of the thesis' Table 3.4).

Steps (each idempotent, run them in order or all at once):

  sheet     write the ISBI slices that config/samples_ssl.tsv names (work/ssl_data/*.tif, outside git):
            the Snakemake version of this grid (experiment unsupervised_vs_supervised) reads them

  prepare   convert the shared nuclei / ISBI images and ground truth to OME-Zarr under WORK/data
            and write the pretraining / evaluation split (WORK/split.json)
  evaluate  for every held-apart image: colour K-means (m = 1 and 8), clustering of ViT features
            for every model given with --model NAME=CHECKPOINT (or NAME=random), via the
            ``zarrseg features`` / ``zarrseg cluster`` library calls; writes WORK/table.csv,
            WORK/summary.csv and side-by-side figures WORK/figures/<image>.png

Foreground: nuclei for the nuclei sets, membrane (label 0) for ISBI. Binary foreground IoU is
taken after the best cluster<->class assignment (Hungarian on the overlap matrix); V-measure
and ARI are computed between the cluster labels and the binary ground truth.

Example (the CPU demonstration of DINO pretraining with a small ViT: patch 8, 192-d, 4 blocks, 3 heads):
  python benchmarks/unsupervised_grid.py prepare --work /tmp/ssl_grid
  OMP_NUM_THREADS=1 nohup nice -n 10 zarrseg pretrain -o /tmp/ssl_grid/dino_small \
      --params /tmp/ssl_grid/pretrain.yaml &
  zarrseg finetune -o /tmp/ssl_grid/dino_small_ft --checkpoint /tmp/ssl_grid/dino_small \
      --params /tmp/ssl_grid/finetune.yaml
  python benchmarks/unsupervised_grid.py evaluate --work /tmp/ssl_grid --model random=random \
      --model dino=/tmp/ssl_grid/dino_small/best.pt --model dino_ft=/tmp/ssl_grid/dino_small_ft/best.pt
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("ZARRSEG_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

# The small ViT of the CPU demonstration (stated in the report): patch 8 like ViT-S/8, narrower and shallower.
SMALL_VIT = {"patch_size": 8, "embed_dim": 192, "depth": 4, "num_heads": 3, "img_size": 96}
EVAL_TILE = 160


def _write(path: Path, array: np.ndarray, is_label: bool = False) -> None:
    from zarrseg import ome

    if path.exists():
        return
    with ome.atomic_output(path) as tmp:
        arr = ome.create_image(
            tmp,
            shape=array.shape,
            dtype=array.dtype,
            axes="yx",
            scale=(1.0, 1.0),
            chunks=(256, 256),
            is_label=is_label,
        )
        arr[...] = array


def prepare(work: Path) -> dict:
    """OME-Zarr copies of the shared images (outside the repo) and the pretrain / held-apart split."""
    import imageio.v3 as iio
    import tifffile

    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    split: dict[str, list] = {"pretrain": [], "evaluate": []}
    isbi = SHARED / "isbi2012_em_membrane" / "png"
    for i in range(30):
        img = iio.imread(isbi / "train" / "image" / f"{i}.png")
        lab = iio.imread(isbi / "train" / "label" / f"{i}.png")
        _write(data / f"isbi_train{i:02d}.ome.zarr", img)
        if i < 20:  # instance labels (connected cell interiors) for the U-Net rows
            from skimage.measure import label as connected

            _write(
                data / f"isbi_train{i:02d}_labels.ome.zarr",
                connected(lab > 0).astype(np.uint32),
                is_label=True,
            )
            split.setdefault("unet_isbi", []).append(
                {
                    "image": str(data / f"isbi_train{i:02d}.ome.zarr"),
                    "labels": str(data / f"isbi_train{i:02d}_labels.ome.zarr"),
                }
            )
        if i < 20:
            split["pretrain"].append(str(data / f"isbi_train{i:02d}.ome.zarr"))
        else:
            _write(data / f"isbi_train{i:02d}_fg.ome.zarr", (lab == 0).astype(np.uint8), is_label=True)
            split["evaluate"].append(
                {
                    "dataset": "isbi",
                    "image": str(data / f"isbi_train{i:02d}.ome.zarr"),
                    "gt": str(data / f"isbi_train{i:02d}_fg.ome.zarr"),
                }
            )
    for i in range(30):  # test slices have no labels: pretraining only
        _write(data / f"isbi_test{i:02d}.ome.zarr", iio.imread(isbi / "test" / "image" / f"{i}.png"))
        split["pretrain"].append(str(data / f"isbi_test{i:02d}.ome.zarr"))
    gowt = SHARED / "nuclei2d" / "N2DH-GOWT1"
    frames = sorted(p.stem[1:] for p in (gowt / "img").glob("t*.tif"))
    for k, t in enumerate(frames):
        _write(data / f"gowt1_t{t}.ome.zarr", tifffile.imread(gowt / "img" / f"t{t}.tif"))
        if k < len(frames) - 2:
            split["pretrain"].append(str(data / f"gowt1_t{t}.ome.zarr"))
            gt = tifffile.imread(gowt / "gt" / f"man_seg{t}.tif").astype(np.uint32)
            _write(data / f"gowt1_t{t}_labels.ome.zarr", gt, is_label=True)
            split.setdefault("unet_gowt1", []).append(
                {
                    "image": str(data / f"gowt1_t{t}.ome.zarr"),
                    "labels": str(data / f"gowt1_t{t}_labels.ome.zarr"),
                }
            )
        else:
            gt = tifffile.imread(gowt / "gt" / f"man_seg{t}.tif")
            _write(data / f"gowt1_t{t}_fg.ome.zarr", (gt > 0).astype(np.uint8), is_label=True)
            split["evaluate"].append(
                {
                    "dataset": "gowt1",
                    "image": str(data / f"gowt1_t{t}.ome.zarr"),
                    "gt": str(data / f"gowt1_t{t}_fg.ome.zarr"),
                }
            )
    dsb = SHARED / "dsb2018_sample"
    _write(data / "dsb2018.ome.zarr", tifffile.imread(dsb / "img2d.tif"))
    _write(
        data / "dsb2018_fg.ome.zarr",
        (tifffile.imread(dsb / "mask2d.tif") > 0).astype(np.uint8),
        is_label=True,
    )
    split["evaluate"].append(
        {
            "dataset": "dsb2018",
            "image": str(data / "dsb2018.ome.zarr"),
            "gt": str(data / "dsb2018_fg.ome.zarr"),
        }
    )
    (work / "split.json").write_text(json.dumps(split, indent=1))
    import yaml

    pretrain = {
        "images": split["pretrain"],
        "vit": SMALL_VIT,
        "preprocess": {"tile_size": EVAL_TILE},
        "sample_size": EVAL_TILE,
        "global_crop_size": 96,
        "local_crop_size": 48,
        "n_local_crops": 4,
        "global_scale": [0.3, 1.0],
        "local_scale": [0.05, 0.3],
        "out_dim": 4096,
        "hidden_dim": 1024,
        "bottleneck_dim": 128,
        "batch_size": 16,
        "warmup_steps": 40,
        "lr": 0.008,
        "freeze_last_layer_steps": 20,
        "teacher_momentum": [0.99, 1.0],
        "loop": {"steps": 500, "max_minutes": 80.0, "checkpoint_every": 50, "eval_every": 50, "threads": 1},
    }
    (work / "pretrain.yaml").write_text(yaml.safe_dump(pretrain, sort_keys=False))
    finetune = {
        "images": split["pretrain"],
        "preprocess": {"tile_size": EVAL_TILE},
        "sample_size": EVAL_TILE,
        "trainable_blocks": 2,
        "batch_size": 4,
        "lr": 5e-4,
        "loop": {"steps": 300, "max_cpu_minutes": 15.0, "checkpoint_every": 100, "eval_every": 100, "threads": 1},
    }
    (work / "finetune.yaml").write_text(yaml.safe_dump(finetune, sort_keys=False))
    print(
        f"prepared {len(split['pretrain'])} pretraining and {len(split['evaluate'])} held-apart images in {data}"
    )
    return split


def scores(labels: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Foreground IoU after the best cluster<->class assignment (Hungarian), plus the metrics stage's scores."""
    from scipy.optimize import linear_sum_assignment

    from zarrseg.evaluation.contingency import Contingency
    from zarrseg.evaluation.semantic import clustering_metrics

    ids = np.unique(labels)
    inter = np.array(
        [[np.logical_and(labels == k, gt == c).sum() for k in ids] for c in (0, 1)], dtype=np.float64
    )
    union = np.array(
        [[np.logical_or(labels == k, gt == c).sum() for k in ids] for c in (0, 1)], dtype=np.float64
    )
    iou = inter / np.maximum(union, 1)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    fg = float(iou[1, cols[list(rows).index(1)]]) if 1 in rows else 0.0
    m = clustering_metrics(
        Contingency.from_arrays(labels.astype(np.uint32), gt.astype(np.uint32) + 1), ignore_label=None
    )
    return {
        "iou_fg": fg,
        "matched_iou": m["matched_iou"],
        "v_measure": m["v_measure"],
        "ari": m["adjusted_rand_index"],
    }


UNET_FRACTIONS = (0.2, 0.5, 1.0)


def unet_dir(work: Path, dataset: str, fraction: float) -> Path:
    return work / "unet" / f"{dataset}_{round(fraction * 100)}"


def train_unets(work: Path, cpu_minutes: float) -> None:
    """U-Net rows: foreground U-Nets ('zarrseg train') on 20 / 50 / 100 % of the labelled pretraining images."""
    import subprocess

    split = json.loads((work / "split.json").read_text())
    for dataset in ("gowt1", "isbi"):
        for fraction in UNET_FRACTIONS:
            out = unet_dir(work, dataset, fraction)
            if (out / "best.pt").exists():
                continue
            params = {
                "train": split[f"unet_{dataset}"],
                "model": {"ndim": 2, "f_maps": 16, "depth": 4},
                "target": {"kind": "foreground"},
                "patch_shape": [128, 128],
                "batch_size": 4,
                "optimizer": {"lr": 1e-3},
                "supervision_fraction": fraction,
                "num_workers": 0,
                "loop": {
                    "steps": 5000,
                    "max_cpu_minutes": cpu_minutes,
                    "eval_every": 50,
                    "checkpoint_every": 50,
                    "threads": 1,
                    "tensorboard": False,
                    "early_stopping": 0,
                    "seed": 0,
                },
            }
            print(f"training U-Net {out.name} ({cpu_minutes} CPU-min)", flush=True)
            subprocess.run(
                [sys.executable, "-m", "zarrseg", "train", "-o", str(out), "--params", json.dumps(params)],
                check=True,
                env={**os.environ, "ZARRSEG_NO_PROGRESS": "1"},
            )


def unet_labels(work: Path, item: dict, dataset: str, fraction: float) -> Path | None:
    """Foreground labels (1 = background, 2 = foreground class of the table) of a trained U-Net, or None."""
    import subprocess

    from zarrseg import ome

    model = unet_dir(work, "isbi" if dataset == "isbi" else "gowt1", fraction)
    if not (model / "best.pt").exists():
        return None
    name = Path(item["image"]).name.removesuffix(".ome.zarr")
    prob = work / "results" / f"unet_{round(fraction * 100)}" / f"{name}.prob.ome.zarr"
    if prob.exists() and prob.stat().st_mtime < (model / "best.pt").stat().st_mtime:
        import shutil

        shutil.rmtree(prob)  # the model changed since (training was still running): predict again
    if not prob.exists():
        params = {"method": "unet", "num_workers": 0, "chunks": [256, 256], "device": "cpu"}
        subprocess.run(
            [
                sys.executable,
                "-m",
                "zarrseg",
                "predict",
                item["image"],
                "-o",
                str(prob),
                "--checkpoint",
                str(model / "best.pt"),
                "--params",
                json.dumps(params),
            ],
            check=True,
            env={**os.environ, "ZARRSEG_NO_PROGRESS": "1"},
        )
    p = np.asarray(ome.open_image(prob).data).squeeze()
    fg = (
        p < 0.5 if dataset == "isbi" else p >= 0.5
    )  # ISBI U-Nets predict cell interior; the table's class is membrane
    return fg.astype(np.uint8) + 1


def random_checkpoint(work: Path) -> Path:
    """The small ViT at the random initialisation pretraining starts from (same seed as pretrain)."""
    import torch

    from zarrseg.ssl.vit import ViTSpec, build_vit, save_checkpoint

    path = work / "random_init.pt"
    if not path.exists():
        torch.manual_seed(0)
        spec = ViTSpec(**SMALL_VIT)
        save_checkpoint(path, build_vit(spec), spec, method="dino", init="random initialisation, not trained")
    return path


def evaluate(work: Path, models: dict[str, str]) -> None:
    """Colour baselines and feature clustering for every model on every held-apart image."""
    import pandas as pd
    import torch

    from zarrseg import ome
    from zarrseg.params import from_dict
    from zarrseg.ssl.cluster import ClusterParams, cluster
    from zarrseg.ssl.features import FeatureParams, extract_features

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    split = json.loads((work / "split.json").read_text())
    out = work / "results"
    rows = []
    labels_of: dict[tuple[str, str], np.ndarray] = {}
    for item in split["evaluate"]:
        name = Path(item["image"]).name.removesuffix(".ome.zarr")
        gt = np.asarray(ome.open_image(item["gt"]).data)
        runs: list[tuple[str, str, Path, ClusterParams]] = []
        for m in (1, 8):
            runs.append(
                (f"colour_m{m}", "colour", Path(item["image"]), from_dict(ClusterParams, {"colour_patch": m}))
            )
        for model, ckpt in models.items():
            ckpt = str(random_checkpoint(work)) if ckpt == "random" else ckpt
            feats = out / model / f"{name}.features.zarr"
            if not feats.exists():
                extract_features(
                    item["image"],
                    feats,
                    from_dict(
                        FeatureParams,
                        {"checkpoint": ckpt, "preprocess": {"tile_size": EVAL_TILE}, "dtype": "float32"},
                    ),
                )
            runs.append((f"{model}+colour", model, feats, from_dict(ClusterParams, {})))
            runs.append((f"{model}", model, feats, from_dict(ClusterParams, {"use_colour": False})))
        for fraction in UNET_FRACTIONS:
            labels = unet_labels(work, item, item["dataset"], fraction)
            if labels is not None:
                method = f"unet_{round(fraction * 100)}"
                labels_of[(name, method)] = labels
                rows.append(
                    {
                        "dataset": item["dataset"],
                        "image": name,
                        "method": method,
                        "model": "unet",
                        **scores(labels, gt),
                    }
                )
        for method, model, source, params in runs:
            target = out / method / f"{name}.labels.ome.zarr"
            if not target.exists():
                cluster(source, target, params)
            labels = np.asarray(ome.open_image(target).data)
            labels_of[(name, method)] = labels
            rows.append(
                {
                    "dataset": item["dataset"],
                    "image": name,
                    "method": method,
                    "model": model,
                    **scores(labels, gt),
                }
            )
            print(
                f"{name:18s} {method:22s} "
                + " ".join(f"{k}={v:.3f}" for k, v in rows[-1].items() if isinstance(v, float)),
                flush=True,
            )
    table = pd.DataFrame(rows)
    table.to_csv(work / "table.csv", index=False)
    summary = table.groupby(["dataset", "method"])[["iou_fg", "matched_iou", "v_measure", "ari"]].mean()
    summary.to_csv(work / "summary.csv")
    print(summary.round(3).to_string())
    table34(work, table, list(models))
    methods = [
        "colour_m8",
        *(f"{k}+colour" for k in models),
        *(f"unet_{round(f * 100)}" for f in UNET_FRACTIONS),
    ]
    figures(work, split, labels_of, methods)


THESIS_IOU = {
    "colour_m8": 0.637,
    "dino": 0.644,
    "dino_ft": 0.647,
    "unet_20": 0.735,
    "unet_50": 0.800,
    "unet_100": 0.896,
}


def table34(work: Path, table, models: list[str]) -> None:
    """Foreground IoU per row and dataset in the layout of the thesis' Table 3.4 (+ its synthetic-data numbers)."""
    iou = table.groupby(["method", "dataset"]).iou_fg.mean().unstack()
    vm = table.groupby(["method", "dataset"]).v_measure.mean().unstack()
    order = (
        ["colour_m1", "colour_m8"]
        + [m for k in models for m in (k, f"{k}+colour")]
        + [f"unet_{round(f * 100)}" for f in UNET_FRACTIONS]
    )
    lines = [
        "| row | " + " | ".join(f"{d} IoU (V)" for d in iou.columns) + " | thesis IoU (synthetic AMF) |",
        "|---|" + "---|" * (len(iou.columns) + 1),
    ]
    for row in order:
        if row not in iou.index:
            lines.append(
                f"| {row} | " + " | ".join("not run" for _ in iou.columns) + f" | {THESIS_IOU.get(row, '')} |"
            )
            continue
        cells = [
            "not run" if np.isnan(iou.loc[row, d]) else f"{iou.loc[row, d]:.3f} ({vm.loc[row, d]:.3f})"
            for d in iou.columns
        ]
        lines.append(
            f"| {row} | " + " | ".join(cells) + f" | {THESIS_IOU.get(row.removesuffix('+colour'), '')} |"
        )
    text = "\n".join(lines) + "\n"
    (work / "table34.md").write_text(text)
    print(text)


def figures(work: Path, split: dict, labels_of: dict, methods: list[str]) -> None:
    """Original | clusterings | ground truth side by side (layout of the thesis' Tables 3.5-3.7)."""
    from zarrseg import ome
    from zarrseg.evaluation.panels import Panel, draw_panels

    for item in split["evaluate"]:
        name = Path(item["image"]).name.removesuffix(".ome.zarr")
        panels = [Panel("original", np.asarray(ome.open_image(item["image"]).data), "image")]
        panels += [Panel(m, labels_of[(name, m)]) for m in methods if (name, m) in labels_of]
        panels.append(Panel("ground truth", np.asarray(ome.open_image(item["gt"]).data) + 1))
        draw_panels(panels, work / "figures" / f"{name}.png")


ISBI_SLICES = {"train": range(0, 8), "test": range(26, 30)}


def write_sheet_data(repo: Path) -> None:
    """ISBI 2012 slices for config/samples_ssl.tsv: train (0-7) and held-apart test (26-29) stacks + labels."""
    import tifffile

    out = repo / "work" / "ssl_data"
    out.mkdir(parents=True, exist_ok=True)
    isbi = SHARED / "isbi2012_em_membrane"
    image = tifffile.imread(isbi / "train-volume_from_png.tif")
    labels = tifffile.imread(isbi / "train-labels_from_png.tif")
    for part, slices in ISBI_SLICES.items():
        tifffile.imwrite(out / f"isbi_{part}.tif", image[list(slices)])
        tifffile.imwrite(
            out / f"isbi_{part}_labels.tif", labels[list(slices)]
        )  # 255 cell interior, 0 membrane
    print(f"wrote ISBI slices {dict((k, list(v)) for k, v in ISBI_SLICES.items())} to {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("step", choices=["sheet", "prepare", "unet", "evaluate", "all"])
    parser.add_argument("--unet-cpu-minutes", type=float, default=3.0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/ssl_grid"))
    parser.add_argument("--model", action="append", default=[], metavar="NAME=CKPT|random")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    if args.step == "sheet":
        write_sheet_data(Path(__file__).resolve().parents[1])
    if args.step in ("prepare", "all"):
        prepare(args.work)
    if args.step in ("unet", "all"):
        train_unets(args.work, args.unet_cpu_minutes)
    if args.step in ("evaluate", "all"):
        evaluate(args.work, dict(m.split("=", 1) for m in args.model))
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The shared driver of the real-data U-Net benchmarks (ISBI 2012, FlyEM): prepare -> train ->
predict -> score the U-Net and the inverted-raw baseline for each multicut beta.

Each benchmark supplies only what differs: how to prepare its data, its training parameters,
the tile shape and how to score a boundary map.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from zarrseg import ome
from zarrseg.cli import main as cli

STEPS = ("prepare", "train", "predict", "evaluate", "baseline")

# score(boundaries, workdir, kind ("unet" | "inverted_raw"), beta) -> result entries to record
Scorer = Callable[[Path, Path, str, float], dict]


def write_split(work: Path, raw: np.ndarray, gt: np.ndarray, train: slice, test: slice,
                scale: list[float], chunks: tuple[int, ...]) -> None:
    """The four volumes every benchmark trains and scores on: train/test image and ground truth."""
    for name, data, is_label in (("train", raw[train], False), ("train_gt", gt[train], True),
                                 ("test", raw[test], False), ("test_gt", gt[test], True)):
        ome.create_image(work / f"{name}.ome.zarr", shape=data.shape, dtype=data.dtype, axes="zyx", scale=scale,
                         chunks=chunks, is_label=is_label)[...] = data


def run(*, default_workdir: Path, default_minutes: float, default_betas: list[float],
        prepare: Callable[[Path], None], train_params: Callable[[Path, float], dict],
        tile_shape: list[int], score: Scorer) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, default=default_workdir)
    ap.add_argument("--minutes", type=float, default=default_minutes)
    ap.add_argument("--steps", default="all", help=f"comma list of {','.join(STEPS)}")
    ap.add_argument("--betas", type=float, nargs="+", default=default_betas)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    steps = set(STEPS) if args.steps == "all" else set(args.steps.split(","))
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
    test_image = str(work / "test.ome.zarr")
    if "predict" in steps:
        t0 = time.perf_counter()
        cli(["predict", test_image, "-o", str(work / "unet.ome.zarr"), "--checkpoint", str(model_dir / "best.pt"),
             "--set", "method=unet", "--set", "num_workers=0", "--set", f"tile_shape={json.dumps(tile_shape)}"])
        results["predict_seconds"] = time.perf_counter() - t0
    for beta in args.betas:
        if "evaluate" in steps:
            results.update(score(work / "unet.ome.zarr", work, "unet", beta))
        if "baseline" in steps:
            if not (work / "raw.ome.zarr").exists():
                cli(["predict", test_image, "-o", str(work / "raw.ome.zarr"), "--set", "invert=true"])
            results.update(score(work / "raw.ome.zarr", work, "inverted_raw", beta))
    print(json.dumps(results, indent=1))
    results_path.write_text(json.dumps(results, indent=1))

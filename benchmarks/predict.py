"""Benchmark ``zarrseg predict --set method=model`` (a U-Net checkpoint): overhead vs bare model forwards, and peak memory.

1. Throughput: the full pipeline (Zarr read, normalisation, tiling, blending, Zarr write) on a
   volume, against a bare loop of model forwards over the same number of tiles of the same
   shape in the same process. Prints tiles/s, voxels/s and the overhead ratio (target <= 1.2).
2. Memory: peak RSS of ``zarrseg predict`` in a subprocess on a small and on a >= 1 GVoxel
   volume; bounded memory means the two peaks are close (not proportional to the volume).

    nice -n 10 python benchmarks/predict.py [--shape 96 384 384] [--big 1024 1024 1024] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from zarrseg import ome
from zarrseg.blocks import BlockGrid
from zarrseg.methods.unet.checkpoint import load_checkpoint, save_checkpoint
from zarrseg.methods.unet.models import ModelConfig, build_model
from zarrseg.normalize import Normalization
from zarrseg.predict.params import PredictParams
from zarrseg.predict.stage import predict
from zarrseg.predict.tiled import TilePlan

TILE = [32, 96, 96]


def make_volume(path: Path, shape: tuple[int, ...], chunks=(64, 256, 256)) -> Path:
    """A compressible synthetic uint8 volume, written chunk by chunk (never whole in memory)."""
    arr = ome.create_image(path, shape=shape, dtype=np.uint8, axes="zyx", scale=[1, 1, 1], chunks=chunks)
    for block in BlockGrid(shape, chunks):
        z, y, x = np.meshgrid(*[np.arange(s.start, s.stop) for s in block.inner], indexing="ij", sparse=True)
        arr[block.inner] = (127 + 60 * np.sin(x / 7.0) * np.cos(y / 9.0) + 60 * np.sin(z / 5.0)).astype(
            np.uint8
        )
    return path


def make_checkpoint(path: Path, f_maps: int, depth: int, ndim: int = 3) -> Path:
    torch.manual_seed(0)
    tiny = depth == 1
    cfg = ModelConfig(
        ndim=ndim,
        f_maps=f_maps,
        depth=depth,
        norm="none" if tiny else "batch",
        layer_order="cr" if tiny else "ncr",
    )
    save_checkpoint(
        path,
        build_model(cfg).eval(),
        cfg,
        Normalization(method="meanstd"),
        "boundaries",
        {"patch_shape": TILE[-ndim:]},
    )
    return path


def throughput(work: Path, shape, ckpt: Path, batch: int, workers: int) -> dict:
    img = make_volume(work / "vol.ome.zarr", tuple(shape))
    params = PredictParams(
        method="model", tile_shape=TILE, batch_size=batch, num_workers=workers, dtype="float16"
    )
    loaded = load_checkpoint(ckpt)
    plan = TilePlan.create(shape, TILE, 0.5, 0.125, "gaussian", loaded.config)  # ndim + divisor
    x0 = torch.randn(batch, 1, *plan.tile)
    with torch.inference_mode():  # bare loop before the pipeline (over the unique tiles)
        loaded.model(x0)
        t1 = time.perf_counter()
        for i in range(0, plan.n_tiles(), batch):
            torch.sigmoid(loaded.model(x0[: min(batch, plan.n_tiles() - i)])).numpy()
        bare_before = time.perf_counter() - t1
    t0 = time.perf_counter()
    info = predict(img, work / "pred.ome.zarr", params, checkpoint=ckpt)
    total = time.perf_counter() - t0
    # bare loop: the same number of forwards of the same tile shape and batch size, no I/O, no
    # blending; run before and after the pipeline (shared machines drift) and the faster one kept
    x = torch.randn(batch, 1, *plan.tile)
    n = info["tiles"]

    def bare_loop() -> float:
        with torch.inference_mode():
            loaded.model(x)  # warm-up, as the pipeline's first batch also pays it
            t1 = time.perf_counter()
            done = 0
            while done < n:
                b = min(batch, n - done)
                torch.sigmoid(loaded.model(x[:b])).numpy()
                done += b
            return time.perf_counter() - t1

    bare = min(bare_before / plan.n_tiles() * n, bare_loop())
    voxels = int(np.prod(shape))
    return {
        "shape": list(shape),
        "tile": list(plan.tile),
        "tiles_computed": n,
        "unique_tiles": plan.n_tiles(),
        "pipeline_s": round(total, 2),
        "pipeline_loop_s": round(info["loop_seconds"], 2),
        "bare_forward_s": round(bare, 2),
        "pipeline_forward_s": round(info["forward_seconds"], 2),
        "tiles_per_s": round(n / total, 2),
        "voxels_per_s": round(voxels / total),
        "overhead_total": round(total / bare, 3),
        "overhead_loop": round(info["loop_seconds"] / bare, 3),
        "overhead_vs_unique_tiles": round(total / (bare * plan.n_tiles() / n), 3),
    }


def peak_rss(work: Path, shape, ckpt: Path, name: str, threads: int, tile: list[int]) -> dict:
    img = make_volume(work / f"{name}.ome.zarr", tuple(shape))
    out = work / f"{name}_pred.ome.zarr"
    params = json.dumps(
        {"method": "model", "tile_shape": list(tile), "batch_size": 1, "num_workers": 1, "dtype": "float16"}
    )
    code = (
        "import resource, sys, time; from zarrseg.cli import main; t=time.perf_counter(); "
        f"rc = main(['predict', {str(img)!r}, '-o', {str(out)!r}, '--checkpoint', {str(ckpt)!r}, "
        f"'--params', {params!r}]); "
        "own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
        "kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss; "
        "print('RSS', own, kids, time.perf_counter()-t, rc)"
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "ZARRSEG_NO_PROGRESS": "1"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("RSS")][-1].split()
    return {
        "shape": list(shape),
        "gvoxels": round(float(np.prod(shape)) / 1e9, 3),
        "tile": list(tile),
        "peak_rss_main_mb": round(int(line[1]) / 1024),
        "peak_rss_worker_mb": round(int(line[2]) / 1024),
        "seconds": round(float(line[3]), 1),
        "rc": int(line[4]),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", type=int, nargs=3, default=[96, 384, 384])
    ap.add_argument("--big", type=int, nargs=3, default=[1024, 1024, 1024])
    ap.add_argument("--small", type=int, nargs=3, default=[128, 512, 512])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--f-maps", type=int, default=4)
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("ZARRSEG_NO_PROGRESS", "1")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        ckpt = make_checkpoint(work / "model.pt", args.f_maps, 2)
        result = {"torch_threads": args.threads, "model": f"3D U-Net f_maps={args.f_maps} depth=2"}
        if not args.skip_throughput:
            result["throughput"] = throughput(work, args.shape, ckpt, args.batch, args.workers)
            print(json.dumps(result, indent=1), flush=True)
        if not args.skip_big:
            # memory run: the cheapest model (2D, one level, 1 feature map) slice by slice with
            # whole-slice tiles, so the >= 1 GVoxel run finishes on a shared CPU; memory is set by
            # the block size, not by the model
            tiny = make_checkpoint(work / "tiny.pt", 1, 1, ndim=2)
            result["rss_model"] = "2D U-Net f_maps=1 depth=1, slice by slice, tile = one slice"
            result["rss_small"] = peak_rss(work, args.small, tiny, "small", args.threads, args.small[1:])
            print(json.dumps(result["rss_small"]), flush=True)
            result["rss_big"] = peak_rss(work, args.big, tiny, "big", args.threads, args.big[1:])
            print(json.dumps(result["rss_big"]), flush=True)
        print(json.dumps(result, indent=1))
    print("bench self maxrss MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)


if __name__ == "__main__":
    main()

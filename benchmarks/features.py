"""Throughput and memory of ``zarrseg features`` against a bare timm forward loop.

1. Overhead: tiles/s of the feature stage (OME-Zarr read, resize, normalise, ViT, Zarr write,
   Dask block scheduling) vs a bare ``model.forward_features`` loop over the same number of
   in-memory tiles with the same model, batch size and thread count (target: ratio <= 1.2).
2. Memory: peak RSS of the feature stage on a large image, compared with the sizes of the
   image and of the feature volume (bounded: it must not grow with the image).

Each measurement runs in its own subprocess so peak RSS (ru_maxrss) belongs to it alone.

  python benchmarks/features.py                     # ViT-S/8 overhead on 3x3 tiles + small-ViT large image
  python benchmarks/features.py --tiles 4 --large 8000
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

SMALL_VIT = {"patch_size": 8, "embed_dim": 192, "depth": 4, "num_heads": 3, "img_size": 96}
VIT_S8 = {"patch_size": 8, "embed_dim": 384, "depth": 12, "num_heads": 6, "img_size": 320}


def make_image(path: Path, side: int) -> None:
    from zarrseg import ome

    if path.exists():
        return
    arr = ome.create_image(
        path, shape=(side, side), dtype="uint8", axes="yx", scale=(1.0, 1.0), chunks=(512, 512)
    )
    rng = np.random.default_rng(0)
    for y in range(0, side, 512):  # written in strips: the benchmark itself stays small in memory
        h = min(512, side - y)
        arr[y : y + h] = rng.integers(0, 255, (h, side), dtype=np.uint8)


def checkpoint(work: Path, vit: dict) -> Path:
    import torch

    from zarrseg.ssl.vit import ViTSpec, build_vit, save_checkpoint

    path = work / f"vit_{vit['embed_dim']}_{vit['depth']}.pt"
    if not path.exists():
        torch.manual_seed(0)
        spec = ViTSpec(**vit)
        save_checkpoint(path, build_vit(spec), spec)
    return path


def child_zarrseg(args) -> dict:
    from zarrseg.params import from_dict
    from zarrseg.ssl.features import FeatureParams, extract_features, get_model

    params = from_dict(
        FeatureParams,
        {
            "checkpoint": args.checkpoint,
            "batch_size": args.batch,
            "preprocess": {"tile_size": 320},
            "device": "cpu",
        },
    )
    get_model(params)  # model loading is a one-off cost outside the loop in both measurements
    t0 = time.perf_counter()
    extract_features(args.image, args.out, params)
    return {"seconds": time.perf_counter() - t0}


def child_bare(args) -> dict:
    import torch

    from zarrseg.ssl.vit import load_vit

    model, _, _ = load_vit(checkpoint=args.checkpoint)
    tiles = torch.randn(args.n_tiles, 3, 320, 320)
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, args.n_tiles, args.batch):
            model.forward_features(tiles[i : i + args.batch])
    return {"seconds": time.perf_counter() - t0}


def run_child(mode: str, **kw) -> dict:
    cmd = [sys.executable, __file__, "--child", mode] + [
        f"--{k.replace('_', '-')}={v}" for k, v in kw.items()
    ]
    env = {**os.environ, "ZARRSEG_NO_PROGRESS": "1"}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", choices=["zarrseg", "bare"])
    parser.add_argument("--image"), parser.add_argument("--out"), parser.add_argument("--checkpoint")
    parser.add_argument("--n-tiles", type=int, default=0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--tiles", type=int, default=3, help="overhead run: image of tiles x tiles 320-px tiles"
    )
    parser.add_argument(
        "--vit", choices=["s8", "small"], default="s8", help="overhead run: ViT-S/8 or the small ViT"
    )
    parser.add_argument(
        "--large", type=int, default=6400, help="memory run: side of the large image (0: skip)"
    )
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "zarrseg_features_bench")
    args = parser.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        result = child_zarrseg(args) if args.child == "zarrseg" else child_bare(args)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return 0

    args.work.mkdir(parents=True, exist_ok=True)
    threads = os.environ.get("OMP_NUM_THREADS", "1")
    vit = VIT_S8 if args.vit == "s8" else SMALL_VIT
    ckpt = checkpoint(args.work, vit)
    side = 320 * args.tiles
    image = args.work / f"img_{side}.ome.zarr"
    make_image(image, side)
    n = args.tiles**2
    import shutil

    shutil.rmtree(args.work / "f.zarr", ignore_errors=True)
    bare = run_child("bare", checkpoint=ckpt, n_tiles=n, batch=args.batch)
    ours = run_child("zarrseg", image=image, out=args.work / "f.zarr", checkpoint=ckpt, batch=args.batch)
    ratio = ours["seconds"] / bare["seconds"]
    print(f"overhead ({args.vit}, {n} tiles of 320 px, batch {args.batch}, {threads} thread(s)):")
    print(
        f"  bare timm loop    {n / bare['seconds']:7.2f} tiles/s  ({bare['seconds']:.1f} s, peak RSS {bare['peak_rss_mb']:.0f} MB)"
    )
    print(
        f"  zarrseg features  {n / ours['seconds']:7.2f} tiles/s  ({ours['seconds']:.1f} s, peak RSS {ours['peak_rss_mb']:.0f} MB)"
    )
    print(
        f"  time ratio zarrseg / bare = {ratio:.3f}  (target <= 1.2: {'met' if ratio <= 1.2 else 'NOT met'})"
    )
    if args.large:
        big = args.work / f"img_{args.large}.ome.zarr"
        make_image(big, args.large)
        small_ckpt = checkpoint(args.work, SMALL_VIT)
        shutil.rmtree(args.work / "big.zarr", ignore_errors=True)
        res = run_child(
            "zarrseg", image=big, out=args.work / "big.zarr", checkpoint=small_ckpt, batch=args.batch
        )
        from zarrseg.ssl.tiling import tiled_length

        rs = tiled_length(args.large, 320)
        n_big = (rs // 320) ** 2
        img_mb = rs * rs * 3 * 4 / 2**20  # the normalised float32 RGB image if held whole
        feat_mb = SMALL_VIT["embed_dim"] * (rs // 8) ** 2 * 2 / 2**20  # float16 feature volume
        print(f"memory (small ViT, {args.large}^2 image, {n_big} tiles):")
        print(
            f"  {n_big / res['seconds']:.2f} tiles/s, peak RSS {res['peak_rss_mb']:.0f} MB; whole normalised image "
            f"{img_mb:.0f} MB, feature volume {feat_mb:.0f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GPU check of the learning core (run by benchmarks/gpu_check.sh on a CUDA machine, <= 8 minutes).

1. Every registered learning method with an ``example`` in the registry trains a few hundred
   steps on synthetic data with AMP (float16 + GradScaler), on the first GPU; the U-Net also
   with bfloat16. Printed: steps/s, first/last loss, peak GPU memory, the GradScaler's scale.
2. DDP over all visible GPUs (nccl; with one GPU a single-rank nccl group, which still runs
   the spawn / rendezvous / rank-0-writes path).
3. ``zarrseg predict`` throughput of the trained 3D U-Net against a bare forward loop over the
   same tiles on the same device (ratio = predict time / bare time; target <= 1.2).

Without CUDA it says so and exits 0 (``--device cpu --steps 3`` runs every path on the CPU, to
check the script itself).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from zarrseg import ome  # noqa: E402
from zarrseg.learn import checkpoint as ckpt  # noqa: E402
from zarrseg.learn.loop import train  # noqa: E402
from zarrseg.learn.registry import all_methods  # noqa: E402
from zarrseg.params import deep_update, from_dict, load_params  # noqa: E402


def write(path: Path, data: np.ndarray, axes: str, is_label: bool = False) -> str:
    arr = ome.create_image(path, shape=data.shape, dtype=data.dtype, axes=axes, scale=[1.0] * data.ndim,
                           chunks=ome.chunk_shape(axes, data.shape, [32, 128, 128]), is_label=is_label)
    arr[...] = data
    return str(path)


def synthetic_data(work: Path) -> dict[str, str]:
    """Voronoi cells with bright membranes: 2D (512²), 3D (64 × 256²), RGB (256²), and a ViT checkpoint."""
    from scipy import ndimage
    from skimage.segmentation import find_boundaries

    rng = np.random.default_rng(0)

    def cells(shape, n):
        seeds = np.zeros(shape, np.int32)
        idx = tuple(rng.integers(0, s, n) for s in shape)
        seeds[idx] = np.arange(1, n + 1)
        _, near = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
        return seeds[tuple(near)].astype(np.uint32)

    lab2, lab3 = cells((512, 512), 120), cells((64, 256, 256), 150)
    img2 = (find_boundaries(lab2) * 150 + rng.normal(60, 20, lab2.shape)).clip(0, 255).astype(np.uint8)
    img3 = (find_boundaries(lab3) * 150 + rng.normal(60, 20, lab3.shape)).clip(0, 255).astype(np.uint8)
    rgb = np.stack([img2[:256, :256], img2[256:, :256], img2[:256, 256:]])
    data = {
        "image2d": write(work / "i2.ome.zarr", img2, "yx"),
        "labels2d": write(work / "l2.ome.zarr", lab2, "yx", True),
        "image3d": write(work / "i3.ome.zarr", img3, "zyx"),
        "labels3d": write(work / "l3.ome.zarr", lab3, "zyx", True),
        "rgb": write(work / "rgb.ome.zarr", rgb, "cyx"),
    }
    from zarrseg.ssl.vit import RandomInitWarning, ViTSpec, build_vit, save_checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        spec = ViTSpec(patch_size=8, embed_dim=192, depth=4, num_heads=3, img_size=96)
        data["vit"] = str(save_checkpoint(work / "vit.pt", build_vit(spec), spec))
    return data


def loop_section(args, steps: int, **extra) -> dict:
    return {"steps": steps, "eval_every": steps, "checkpoint_every": steps, "device": args.device,
            "amp": True, "multi_gpu": False, "tensorboard": False, "max_minutes": args.minutes_per_method,
            "threads": 0, **extra}


def train_methods(args, data: dict, work: Path) -> dict[str, Path]:
    models = {}
    for spec in all_methods():
        if spec.example is None:
            print(f"{spec.name:12s} no example parameters in the registry: skipped", flush=True)
            continue
        for dtype in ("float16", "bfloat16") if spec.name == "unet" else ("float16",):
            values = deep_update(spec.example(data), {"loop": loop_section(args, args.steps, amp_dtype=dtype)})
            params = from_dict(spec.params, values, where=spec.name)
            out = work / f"{spec.name}_{dtype}"
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            summary = train(spec, params, out)
            seconds = time.perf_counter() - t0
            peak = torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else float("nan")
            print(
                f"{spec.name:12s} amp {dtype:8s} {summary['steps']:4d} steps in {seconds:6.1f} s "
                f"({summary['steps'] / seconds:6.1f} steps/s), loss {summary['first_loss']:.4f} -> "
                f"{summary['last_loss']:.4f}, peak GPU memory {peak:.0f} MiB, stop: {summary['stop']}",
                flush=True,
            )
            models.setdefault(spec.name, out / "best.pt")
            data.setdefault(f"model:{spec.name}", str(out / "best.pt"))  # a later stage may start from it
    return models


def ddp_check(args, data: dict, work: Path) -> None:
    from zarrseg.learn.distributed import launch
    from zarrseg.learn.loop import run_worker
    from zarrseg.learn.registry import get_method

    spec = get_method("unet")
    world = max(1, torch.cuda.device_count()) if args.device.startswith("cuda") else 2
    backend = "nccl" if args.device.startswith("cuda") else "gloo"
    values = deep_update(spec.example(data), {"num_workers": 0, "loop": loop_section(args, args.ddp_steps)})
    params = from_dict(spec.params, values, where="unet")
    t0 = time.perf_counter()
    launch("unet", params, work / "ddp", world, backend=backend, worker=run_worker)
    last = ckpt.read(work / "ddp" / "last.pt")
    print(
        f"DDP          {world} rank(s) over {backend}: {last['loop']['step']} steps in "
        f"{time.perf_counter() - t0:.1f} s (spawn, rendezvous, rank 0 wrote last.pt and best.pt: "
        f"{(work / 'ddp' / 'best.pt').exists()})",
        flush=True,
    )


def predict_check(args, data: dict, model: Path, work: Path) -> None:
    """Tiled, blended, resumable predict vs a bare forward loop over the same number of tiles."""
    from zarrseg.predict.params import PredictParams
    from zarrseg.predict.stage import predict
    from zarrseg.predict.tiled import TilePlan

    device = torch.device(args.device)
    loaded = ckpt.load(model, device)
    shape = (128, 512, 512) if device.type == "cuda" else (32, 128, 128)
    rng = np.random.default_rng(1)
    image = write(work / "big.ome.zarr", rng.integers(0, 255, shape).astype(np.uint8), "zyx")
    tile = loaded.io.tile
    params = load_params(PredictParams, {"method": "model", "device": args.device, "batch_size": 8,
                                         "dtype": "float16", "tile_shape": tile})
    t0 = time.perf_counter()
    info = predict(image, work / "pred.ome.zarr", params, checkpoint=model)
    total = time.perf_counter() - t0
    plan = TilePlan.create(shape, tile, params.overlap, params.margin, params.blend, loaded.io)
    x = torch.randn(8, 1, *plan.tile, device=device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
        loaded.module(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        done = 0
        while done < info["tiles"]:
            b = min(8, info["tiles"] - done)
            torch.sigmoid(loaded.module(x[:b]).float()).cpu()
            done += b
        if device.type == "cuda":
            torch.cuda.synchronize()
        bare = time.perf_counter() - t1
    voxels = int(np.prod(shape))
    print(
        f"predict      {shape} in {total:.1f} s ({voxels / total / 1e6:.1f} Mvoxel/s, {info['tiles']} tiles); "
        f"bare forward loop {bare:.1f} s: ratio {total / bare:.2f} (target <= 1.2)",
        flush=True,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--ddp-steps", type=int, default=100)
    ap.add_argument("--minutes-per-method", type=float, default=1.5)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible (a CPU machine): nothing to check.")
        return 0
    os.environ.setdefault("ZARRSEG_NO_PROGRESS", "1")
    if args.device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        print(f"gpu_check: {torch.cuda.device_count()} x {props.name} ({props.total_memory / 2**30:.0f} GiB), "
              f"torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    t0 = time.perf_counter()
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)  # created when missing
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        data = synthetic_data(work)
        models = train_methods(args, data, work)
        ddp_check(args, data, work)
        if "unet" in models:
            predict_check(args, data, models["unet"], work)
    print(json.dumps({"total_seconds": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

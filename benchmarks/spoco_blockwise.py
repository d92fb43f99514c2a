"""Blockwise SPOCO segmentation of large volumes: peak memory at 512^3 vs 256^3, parity with whole-volume.

The FlyEM medulla cube (250^3) is mirror-tiled to N^3 (symmetric padding keeps membranes
continuous); a 3D SPOCO model (``--checkpoint``, e.g. the spoco_vs_plantseg grid's) predicts its
embeddings with the tiled predictor, and the segment engine segments them blockwise (Eq. 3.10
boundary evidence -> supervoxels -> mutex watershed). Each stage runs in its own subprocess so
its peak RSS is its own, at N = 256 and N = 512; the issue's target is RSS(512) <= 1.25 x RSS(256).
At 256^3 the blockwise segmentation is also compared with the same algorithm on the whole volume
in memory (``segment.reference.segment_whole`` on ``embeddings.boundary_evidence``), ARand.

    python benchmarks/spoco_blockwise.py --checkpoint results/spoco_vs_plantseg/models/spoco/<id>/best.pt
    python benchmarks/spoco_blockwise.py --no-parity   # no checkpoint: train the small memory-benchmark model

Without ``--checkpoint`` a small 3D SPOCO model (U-Net 4..16 features, depth 3, D = 16, batch norm) is
trained for 20 steps on FlyEM z < 150 (SPOCO@0.4) and its output layer scaled by 30, so that the
embeddings vary on the scale of the push margin: as briefly trained they are nearly constant and the
whole volume is one segment, which would measure no graph. It measures memory, not accuracy.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from spoco_grids import SHARED  # noqa: E402

PREDICT = {"method": "model", "device": "cpu", "num_workers": 0, "dtype": "float16", "overlap": 0.25,
           "tile_shape": [64, 128, 128], "block_shape": [128, 256, 256], "chunks": [64, 128, 128]}
SEGMENT = {"partitioner": "mutex_watershed", "block_shape": [128, 256, 256], "halo": [16, 32, 32],
           "sigma_seeds": 2.0, "min_size": 50, "post_min_size": 50, "dask": {"scheduler": "threads", "n_workers": 1}}


def build_raw(path: Path, size: int) -> None:
    import imageio.v3 as iio

    from zarrseg import ome

    files = sorted((SHARED / "flyem_fibsem_medulla" / "grayscale_maps").glob("iso.*.png"))
    raw = np.stack([iio.imread(f) for f in files])
    pad = [(0, max(0, size - s)) for s in raw.shape]
    vol = np.pad(raw, pad, mode="symmetric")[:size, :size, :size]
    arr = ome.create_image(path, shape=vol.shape, dtype=vol.dtype, axes="zyx", scale=(1.0,) * 3, chunks=(64, 128, 128))
    arr[...] = vol


def memory_checkpoint(work: Path, scale: float = 30.0) -> Path:
    """Train the small 3D SPOCO model of the memory benchmark; its output layer scaled by ``scale``."""
    import spoco_throughput as st
    import torch
    from spoco_grids import OUT, sheet

    from zarrseg.learn.loop import train
    from zarrseg.methods.spoco.params import SpocoParams
    from zarrseg.params import load_params

    scaled = work / "model" / f"best_x{scale:g}.pt"
    if scaled.exists():
        return scaled
    if not (OUT / "flyem_test.tif").exists():
        sheet()
    image, labels = st._zarr(work, "flyem_train")
    params = {"train": [{"image": image, "labels": labels}],
              "model": {"ndim": 3, "f_maps": 4, "depth": 3, "norm": "batch"}, "patch_shape": [32, 64, 64],
              "batch_size": 1, "num_workers": 0, "embedding_dim": 16, "object_fraction": 0.4,
              "export_momentum": False, "loop": {"steps": 20, "threads": 1, "device": "cpu", "tensorboard": False,
                                                 "eval_every": 10**6, "checkpoint_every": 10**6}}
    train("spoco", load_params(SpocoParams, params), work / "model")
    ckpt = torch.load(work / "model" / "best.pt", map_location="cpu", weights_only=False)
    for key in ("f.head.weight", "f.head.bias"):
        ckpt["state_dict"][key] = ckpt["state_dict"][key] * scale
    torch.save(ckpt, scaled)
    return scaled


def child(stage: str, source: str, out: str, checkpoint: str) -> None:
    from zarrseg.params import load_params

    t0, cpu0 = time.perf_counter(), time.process_time()
    if stage == "predict":
        from zarrseg.predict.params import PredictParams
        from zarrseg.predict.stage import predict

        predict(source, out, load_params(PredictParams, PREDICT), checkpoint)
    else:
        from zarrseg.segment import SegmentParams, segment

        segment(source, out, load_params(SegmentParams, SEGMENT))
    print(json.dumps({"seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - cpu0,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parity(work: Path, size: int) -> float:
    from elf.evaluation import rand_index

    from zarrseg import embeddings, ome
    from zarrseg.params import load_params
    from zarrseg.segment import SegmentParams
    from zarrseg.segment.reference import segment_whole

    emb_path = work / f"emb{size}.ome.zarr"
    meta = embeddings.Meta.of(ome.open_image(emb_path).attrs)
    emb = np.asarray(ome.open_image(emb_path).data[: meta.dim], np.float32)
    whole = segment_whole(embeddings.boundary_evidence(emb, meta.delta_d), load_params(SegmentParams, SEGMENT))
    blockwise = np.asarray(ome.open_image(work / f"seg{size}.ome.zarr").data[...])
    return float(rand_index(blockwise.astype(np.uint64), whole.astype(np.uint64))[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--workdir")
    parser.add_argument("--parity", action=argparse.BooleanOptionalAction, default=True,
                        help="compare with the whole-volume segmentation at the smallest size (minutes)")
    parser.add_argument("--child", nargs=4, metavar=("STAGE", "SOURCE", "OUT", "CHECKPOINT"))
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    work = Path(args.workdir or tempfile.mkdtemp(prefix="spoco_blockwise_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.checkpoint is None:
        args.checkpoint = str(memory_checkpoint(work / "ckpt3d"))
        print(f"memory-benchmark model: {args.checkpoint}", flush=True)
    results = {}
    for size in args.sizes:
        raw = work / f"raw{size}.ome.zarr"
        if not raw.exists():
            build_raw(raw, size)
        pred = run_child("predict", str(raw), str(work / f"emb{size}.ome.zarr"), args.checkpoint)
        seg = run_child("segment", str(work / f"emb{size}.ome.zarr"), str(work / f"seg{size}.ome.zarr"), "-")
        results[size] = {"predict": pred, "segment": seg}
        print(f"{size}^3: predict {pred['seconds']:.0f} s, {pred['rss_mb']:.0f} MB; "
              f"segment {seg['seconds']:.0f} s, {seg['rss_mb']:.0f} MB", flush=True)
    lo, hi = min(args.sizes), max(args.sizes)
    for stage in ("predict", "segment"):
        ratio = results[hi][stage]["rss_mb"] / results[lo][stage]["rss_mb"]
        print(f"{stage}: peak RSS {hi}^3 / {lo}^3 = {ratio:.2f} (target <= 1.25)")
    if args.parity:
        print(f"blockwise vs whole-volume at {lo}^3: ARand {parity(work, lo):.4f} (target <= 0.02)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

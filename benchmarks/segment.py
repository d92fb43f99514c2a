"""Benchmark of the blockwise segmentation engine against whole-volume elf (same input, same algorithm).

Builds an N^3 float32 boundary map by mirror-tiling the 250^3 FlyEM medulla cube (boundaries
from its learned oversegmentation blended with the inverted raw, as in the tests), then runs
each variant in its own subprocess so its peak RSS is its own:

- zarrseg with 1 and 2 workers (Dask threads; ``--scheduler2 processes|distributed`` for the 2-worker run) at N^3,
- whole-volume elf (``zarrseg.segment.reference.segment_whole``: elf DT-watershed, RAG,
  features, the same solver) at N^3,
- zarrseg with 1 worker at N/2 ^3 (peak RSS must not grow with the volume).

A speed ratio only counts at equal output: next to each throughput the benchmark prints the
segment count, and for the blockwise results the ARand and VOI (split, merge) against the
whole-volume result. The halo is the engine's own advice: the 1-worker run starts at
``--halo`` (default 16), and when the engine reports that halo short (summary ``halo_advice``)
it prints the parity reached there and reruns at the advised halo, which every later run uses.
CPU seconds (user + system) are printed too: on a shared machine wall-clock throughput
depends on the load, CPU time much less. Peak RSS of a process-scheduler run is the parent's peak plus workers x the largest worker's
peak (an upper bound). Usage:

    nice -n 10 python benchmarks/segment.py [--size 512] [--partitioner gasp] [--workdir DIR]

Measured with parity (shared 2-core machine, load ~3, 512^3, GASP, blocks 256^3): the engine
calls halo 16 short and advises 35; ARand / VOI split / VOI merge against whole-volume elf 0.0074 /
0.0099 / 0.0096 at halo 16 and 0.0074 / 0.0096 / 0.0096 at halo 35 (1 and 2 workers alike), segments
12632 and 12612 vs elf's 12606. At halo 35: 1 worker 136.6 s (0.98 Mvox/s, CPU 138 s, 1035 MB),
2 workers 90.8 s (1.50x, 1932 MB), elf 172.4 s wall / CPU 110 s (6480 MB): 1 worker / elf 1.26 by
wall clock, 0.80 by CPU; peak RSS 512^3 / 256^3 1.33 (the 256^3 run is one block without halo;
at halo 16 it is 1.14). Earlier, without parity, at halo 16 (load ~1-2): zarrseg 1 worker 78.6 s (1.71 Mvox/s, 1032 MB), 2 workers 47.4 s (1.66x, 1507 MB), whole-volume
elf 85.8 s (1.56 Mvox/s, 6507 MB): 1 worker / elf 1.09; zarrseg at 256^3: 940 MB (512^3 / 256^3
peak RSS: 1.10). Before the distance-transform stage, input staging, fused graph statistics and
the cheaper size filter (blocks 192^3): 1 worker 0.93 Mvox/s vs elf 1.36 Mvox/s (0.68x).
Under heavy load (load average ~10) wall-clock ratios swing by 2x; compare CPU seconds then.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ZARRSEG_SHARED_DATA", REPO.parent / "shared" / "data")) / "flyem_fibsem_medulla"
ALGO = {
    "threshold": 0.4,
    "sigma_seeds": 2.0,
    "sigma_weights": 2.0,
    "min_size": 100,
    "alpha": 0.9,
    "post_min_size": 0,
}


def flyem_boundaries() -> np.ndarray:
    import h5py
    from skimage.filters import gaussian
    from skimage.io import imread
    from skimage.segmentation import find_boundaries

    raw = (
        np.stack([imread(f) for f in sorted((DATA / "grayscale_maps").glob("iso.*.png"))]).astype(np.float32)
        / 255
    )
    with h5py.File(io.BytesIO(gzip.open(DATA / "oversegmented_stack_labels.h5.gz").read())) as f:
        overseg = f["stack"][:]
    b = gaussian(0.7 * find_boundaries(overseg, mode="inner") + 0.3 * (1.0 - raw), sigma=1.0)
    return (b / b.max()).astype(np.float32)


def build_volume(path: Path, size: int, chunks: int = 128) -> None:
    """Mirror-tile the 250^3 cube to size^3 (symmetric padding keeps membranes continuous)."""
    from zarrseg import ome

    base = flyem_boundaries()
    reps = [(0, max(0, size - s)) for s in base.shape]
    vol = np.pad(base, reps, mode="symmetric")[:size, :size, :size]
    arr = ome.create_image(
        path, shape=vol.shape, dtype=np.float32, axes="zyx", scale=(1.0, 1.0, 1.0), chunks=(chunks,) * 3
    )
    arr[...] = vol


def run_variant(args: argparse.Namespace) -> dict:
    """Child process: run one variant, report time and own peak RSS."""
    from zarrseg import ome
    from zarrseg.params import load_params
    from zarrseg.segment import SegmentParams

    params = load_params(
        SegmentParams,
        {
            **ALGO,
            "partitioner": args.partitioner,
            "block_shape": args.block,
            "halo": args.halo,
            "chunks": args.block,
            "dask": {"scheduler": args.scheduler, "n_workers": max(args.workers, 1)},
        },
    )
    t0 = time.perf_counter()
    out = Path(args.workdir) / f"seg_{args.variant}_{args.workers}_{Path(args.input).stem}_h{args.halo[0]}.ome.zarr"
    advice = None
    if args.variant == "elf":
        from zarrseg.segment.reference import segment_whole

        data = np.asarray(ome.open_image(args.input).data[...])
        seg = segment_whole(data, params, n_threads=1)
        seconds = time.perf_counter() - t0
        del data
        n_segments = int(np.count_nonzero(np.bincount(seg.ravel())[1:]))  # ids need not be consecutive
        seg = seg.astype(np.uint32 if seg.max() < 2**32 else np.uint64)  # elf may return 'Q', which zarr refuses
        arr = ome.create_image(out, shape=seg.shape, dtype=seg.dtype, axes="zyx", scale=(1.0,) * 3,
                               chunks=(128,) * 3, is_label=True)
        arr[...] = seg  # for the parity check, outside the timing
    else:
        from zarrseg.segment.engine import segment

        summary = segment(args.input, out, params)
        seconds = time.perf_counter() - t0
        n_segments, advice = summary["n_segments"], summary["halo_advice"]
    shape = ome.open_image(args.input).shape
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.scheduler == "processes":  # add workers x the largest worker's peak (an upper bound)
        rss_mb += max(args.workers, 1) * resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    cpu_s = sum(
        getattr(resource.getrusage(who), f)
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        for f in ("ru_utime", "ru_stime")
    )
    return {
        "variant": args.variant,
        "cpu_s": cpu_s,
        "workers": args.workers,
        "scheduler": args.scheduler,
        "shape": list(shape),
        "seconds": seconds,
        "voxels_per_s": float(np.prod(shape)) / seconds,
        "peak_rss_mb": rss_mb,
        "n_segments": n_segments,
        "halo": list(args.halo),
        "halo_advice": advice,
        "output": str(out),
    }


def parity(result: str, reference: str) -> dict:
    """ARand and VOI (split, merge) of a blockwise result against the whole-volume one (every voxel scored)."""
    from zarrseg.evaluation.score import EvaluateParams, evaluate_images
    from zarrseg.params import load_params

    params = load_params(EvaluateParams, {"ignore_label": None, "metrics": ["arand", "voi_split", "voi_merge"],
                                          "dask": {"n_workers": 1}})
    return evaluate_images(result, [reference], params)[""]


def child(*argv: str) -> dict:
    """Run this script in a fresh process (``--child ...``) and return its JSON line.

    Everything heavy (building the input, every variant, the parity check) runs in a child:
    on Linux a child's peak RSS counts what its parent held when it forked, so the parent
    stays small.
    """
    env = {**os.environ, "ZARRSEG_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, __file__, "--child", *argv], capture_output=True, text=True, env=env)
    if out.returncode:
        sys.exit(f"{' '.join(argv[:2])} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def spawn(
    args: argparse.Namespace,
    variant: str,
    workers: int,
    input_path: Path,
    scheduler: str = "threads",
    halo: list[int] | None = None,
) -> dict:
    result = child(
        variant,
        "--workers",
        str(workers),
        "--input",
        str(input_path),
        "--scheduler",
        scheduler,
        "--workdir",
        str(args.workdir),
        "--partitioner",
        args.partitioner,
        "--block",
        *map(str, args.block),
        "--halo",
        *map(str, halo or args.halo),
    )
    print(
        f"  {variant:8s} workers={workers} ({scheduler}) shape={result['shape']} halo={result['halo']}: "
        f"{result['seconds']:.1f} s, {result['voxels_per_s'] / 1e6:.2f} Mvox/s, CPU {result['cpu_s']:.0f} s, "
        f"peak RSS {result['peak_rss_mb']:.0f} MB, {result['n_segments']} segments",
        flush=True,
    )
    return result


def print_parity(result: dict, reference: dict) -> dict:
    p = child("parity", "--input", result["output"], "--reference", reference["output"])
    print(
        f"    vs whole-volume elf: ARand {p['arand']:.4f}, VOI split {p['voi_split']:.4f} merge {p['voi_merge']:.4f}; "
        f"segments {result['n_segments']} vs {reference['n_segments']}",
        flush=True,
    )
    return p


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--partitioner", default="gasp")
    parser.add_argument("--block", type=int, nargs=3, default=[256, 256, 256])
    parser.add_argument("--halo", type=int, nargs=3, default=[16, 16, 16],
                        help="halo of the first run; raised to the engine's advice when it calls it short")
    parser.add_argument("--workdir", help="scratch folder (created when missing; default: a temporary one)")
    parser.add_argument("--child")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--input")
    parser.add_argument("--reference")
    parser.add_argument("--scheduler", default="threads")
    parser.add_argument("--scheduler2", default="threads", help="Dask scheduler of the 2-worker run")
    args = parser.parse_args()
    if args.child == "build":
        build_volume(Path(args.input), args.size)
        print(json.dumps({}))
        return
    if args.child == "parity":
        print(json.dumps(parity(args.input, args.reference)))
        return
    if args.child:
        args.variant = args.child
        print(json.dumps(run_variant(args)))
        return
    os.environ.setdefault("ZARRSEG_NO_PROGRESS", "1")
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        args.workdir = tmp
        big, half = Path(tmp) / f"b{args.size}.ome.zarr", Path(tmp) / f"b{args.size // 2}.ome.zarr"
        t0 = time.perf_counter()
        child("build", "--input", str(big), "--size", str(args.size))
        child("build", "--input", str(half), "--size", str(args.size // 2))
        print(
            f"segment benchmark: {args.partitioner}, blocks {args.block}, inputs built in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        re = spawn(args, "elf", 1, big)
        r1 = spawn(args, "zarrseg", 1, big)
        p1 = print_parity(r1, re)
        advice = r1["halo_advice"]
        if advice and any(a > h for a, h in zip(advice, args.halo, strict=True)):
            halo = [max(a, h) for a, h in zip(advice, args.halo, strict=True)]
            print(f"  the engine calls halo {args.halo} short and advises {advice}: rerunning at {halo}", flush=True)
            args.halo = halo
            r1 = spawn(args, "zarrseg", 1, big)
            p1 = print_parity(r1, re)
        r2 = spawn(args, "zarrseg", 2, big, args.scheduler2)
        p2 = print_parity(r2, re)
        rh = spawn(args, "zarrseg", 1, half)
    print(f"\nratios at halo {args.halo} (targets in brackets):")
    print(f"  zarrseg 1 worker / elf throughput : {r1['voxels_per_s'] / re['voxels_per_s']:.2f}  [>= 0.8]")
    print(
        f"  elf CPU s / zarrseg 1-worker CPU s: {re['cpu_s'] / r1['cpu_s']:.2f}  (load-independent efficiency)"
    )
    print(f"  zarrseg 2 workers / 1 worker      : {r2['voxels_per_s'] / r1['voxels_per_s']:.2f}  [>= 1.6]")
    print(
        f"  zarrseg peak RSS {args.size}^3 / {args.size // 2}^3    : {r1['peak_rss_mb'] / rh['peak_rss_mb']:.2f}  "
        "[< 1.25]"
    )
    print(f"  zarrseg peak RSS / elf peak RSS   : {r1['peak_rss_mb'] / re['peak_rss_mb']:.2f}  [< 1]")
    print(f"  parity ARand 1 / 2 workers vs elf : {p1['arand']:.4f} / {p2['arand']:.4f}  [<= 0.02]")
    print(f"  segments 1 worker / elf           : {r1['n_segments']} / {re['n_segments']}")


if __name__ == "__main__":
    main()

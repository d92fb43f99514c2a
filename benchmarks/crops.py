"""Crop preparation: peak RSS against the number of acquisitions, throughput against reading the planes.

Stages the six full-size organoid images and their instance labels (../shared/data/organoid_goat,
converted to TIFF in a scratch folder, then ``zarrseg ingest``: the real staged format), and
lists them repeatedly as N acquisitions (N = 5, 10, 20, 40). For each N, in fresh subprocesses:

  read   reads each acquisition's image plane and mask plane from Zarr (the bare reading peer)
  crops  ``prepare_crops`` on the same acquisitions (320-px crops, step 0.5, < 3 % foreground
         dropped, per-plane normalisation to float16; the default layout, or ``--set`` JSON)

Both clocks start after the imports and parameter parsing, in the same kind of child, so neither
counts interpreter start-up. Each is run ``--repeat`` times, alternating; it prints the fastest
wall and CPU seconds (CPU of all threads, and of the stage's reader process: on a busy machine
the wall ratio mostly measures the other load), their ratios crops / read and peak RSS: the
reading peer's, the stage's main process and its forked reader process (``crops/reader.py``;
pages they share since the fork count in both).
The last line is the throughput from the smallest to the largest N (seconds per added acquisition),
which the stage's fixed costs (starting its reader, the first plane, the last write) do not enter.
Targets: the crops RSS does not grow with N (>= 20 acquisitions); crops within 1.5x of read.

    python benchmarks/crops.py [--work /tmp/crops_bench] [--n 5 10 20 40] [--crop 320] [--repeat 3]
                               [--set '{"chunk": 1}']
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ZARRSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
ORGANOIDS = ("291", "301", "545", "651", "668", "731")


def stage(work: Path) -> list[dict]:
    """Ingest the organoid images and labels once; returns the acquisitions (image, labels)."""
    import imageio.v3 as iio
    import tifffile

    from zarrseg.ingest.writer import ingest

    out = []
    for name in ORGANOIDS:
        image = work / f"{name}.ome.zarr"
        labels = work / f"{name}_labels.ome.zarr"
        if not labels.exists():
            tif = work / f"{name}.tif"
            tifffile.imwrite(tif, iio.imread(SHARED / "organoid_goat" / "images" / f"{name}.png")[..., 0])
            ingest(tif, image)
            tif_l = work / f"{name}_labels.tif"
            tifffile.imwrite(tif_l, iio.imread(SHARED / "organoid_goat" / "labels" / f"{name}_labels.png"))
            ingest(tif_l, labels, labels=True)
        out.append({"image": f"{image}/0", "labels": f"{labels}/0"})
    return out


def acquisitions(work: Path, n: int) -> list[dict]:
    staged = stage(work)
    return [{**staged[i % len(staged)], "name": f"acq{i}", "split": "pretrain"} for i in range(n)]


def child(mode: str, work: Path, n: int, crop: int, extra: dict) -> dict:
    """Body of one measured subprocess: wall and CPU seconds (all threads) of the timed part."""
    from zarrseg import ome
    from zarrseg.crops import CropParams, prepare_crops
    from zarrseg.params import load_params

    items = acquisitions(work, n)
    params = load_params(CropParams, {"images": items, "crop_size": crop, "masks": "instances", **extra})
    # both clocks start here: imports, staging checks and parameter parsing are outside both
    t0, c0 = time.perf_counter(), time.process_time()
    if mode == "read":
        total = 0
        for item in items:
            for key in ("image", "labels"):
                view = ome.SpatialView.of(ome.open_image(item[key]))
                total += int(np.asarray(view[(slice(None), slice(None))]).size)
        return {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, "pixels": total}
    out = work / f"store_{n}"
    children = _children_cpu()
    summary = prepare_crops(params, out)
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - c0 + _children_cpu() - children  # + the reader process (joined by now)
    import resource
    import shutil

    shutil.rmtree(out)
    reader_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"seconds": seconds, "cpu": cpu, "crops": summary["rows"], "reader_mb": reader_mb,
            "main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _children_cpu() -> float:
    times = os.times()
    return times.children_user + times.children_system


def measure(mode: str, work: Path, n: int, crop: int, extra: dict) -> dict:
    cmd = [sys.executable, __file__, "child", mode, "--work", str(work), "--n", str(n), "--crop", str(crop),
           "--set", json.dumps(extra)]
    env = {**os.environ, "ZARRSEG_NO_PROGRESS": "1", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
    out = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{mode} n={n} failed")
    return {**json.loads(out.strip().splitlines()[-1]), "rss_mb": usage.ru_maxrss / 1024}


def best(runs: list[dict]) -> dict:
    """Fastest wall and CPU time of repeated runs (other load only adds time), largest peak RSS."""
    return {**runs[0], "seconds": min(r["seconds"] for r in runs), "cpu": min(r["cpu"] for r in runs),
            **{k: max(r.get(k, 0.0) for r in runs) for k in ("rss_mb", "main_mb", "reader_mb")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", nargs="?", default="run", choices=["run", "child"])
    parser.add_argument("mode", nargs="?", default="crops")
    parser.add_argument("--work", type=Path, default=Path("/tmp/crops_bench"))
    parser.add_argument("--n", type=int, nargs="+", default=[5, 10, 20, 40])
    parser.add_argument("--crop", type=int, default=320)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement, alternating read / crops")
    parser.add_argument("--set", default="{}", help='crops parameters as JSON, e.g. \'{"chunk": 1}\'')
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    extra = json.loads(args.set)
    if args.step == "child":
        print(json.dumps(child(args.mode, args.work, args.n[0], args.crop, extra)))
        return
    stage(args.work)
    measure("read", args.work, 6, args.crop, extra)  # warm the page cache
    print(f"crops parameters {extra or 'defaults'}; best of {args.repeat} runs")
    print(f"{'N':>4} {'read s':>7} {'crops s':>8} {'ratio':>6} {'read cpu':>9} {'crops cpu':>10} {'ratio':>6} "
          f"{'read MB':>8} {'crops MB':>9} {'reader MB':>10} {'crops':>6}")
    done: list[tuple[int, float, float]] = []
    for n in args.n:
        runs: dict[str, list[dict]] = {"read": [], "crops": []}
        for _ in range(args.repeat):
            for mode in runs:
                runs[mode].append(measure(mode, args.work, n, args.crop, extra))
        read, crops = best(runs["read"]), best(runs["crops"])
        print(f"{n:>4} {read['seconds']:7.2f} {crops['seconds']:8.2f} {crops['seconds'] / read['seconds']:6.2f} "
              f"{read['cpu']:9.2f} {crops['cpu']:10.2f} {crops['cpu'] / read['cpu']:6.2f} {read['rss_mb']:8.0f} "
              f"{crops['main_mb']:9.0f} {crops['reader_mb']:10.0f} {crops['crops']:6d}", flush=True)
        done.append((n, read["seconds"], crops["seconds"]))
    if len(done) > 1:  # the rate per added acquisition: the fixed start (fork, first plane) and end cancel
        (n0, r0, c0), (n1, r1, c1) = done[0], done[-1]
        print(f"throughput from N = {n0} to {n1}: crops {(c1 - c0) / (n1 - n0) * 1e3:.1f} ms, read "
              f"{(r1 - r0) / (n1 - n0) * 1e3:.1f} ms per acquisition: {(c1 - c0) / (r1 - r0):.2f}x")


if __name__ == "__main__":
    main()

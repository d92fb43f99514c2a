"""Partitioner x beta x DT-WS threshold grid on the shared gala FIB-SEM data: segment -> evaluate -> table.

Runs the cells of ``config/experiments/partitioner_grid.yaml`` on the gala train/test crops with
their precomputed boundary maps (``*-p1``) and ground truth (``*-gt``, 0 = ignore), the way the
workflow does: each segmentation is a separate ``zarrseg segment`` process whose runtime and
peak RSS are recorded in a Snakemake-format benchmark TSV, each is scored by ``zarrseg evaluate``
(with ``--benchmark``) and the grid is aggregated by ``zarrseg table``. Prints the summary table
and, as a speed figure, the time of one ``evaluate`` against scikit-image + elf on whole arrays.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/partitioner_grid.py --out /tmp/pgrid
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from zarrseg import ome  # noqa: E402
from zarrseg.cli import main as zarrseg  # noqa: E402
from zarrseg.experiments import load_experiment, stage_overrides  # noqa: E402

SHARED = Path(os.environ.get("ZARRSEG_SHARED_DATA", REPO.parent / "shared" / "data")) / "gala_fibsem"
SAMPLES = {"gala_train": "train", "gala_test": "test"}
BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def to_ome(h5_path: Path, out: Path, is_label: bool) -> Path:
    if not out.exists():
        with h5py.File(h5_path) as f:
            data = f["stack"][:]
        level0 = ome.create_image(
            out,
            shape=data.shape,
            dtype=data.dtype,
            axes="zyx",
            scale=(1.0, 1.0, 1.0),
            chunks=(25, 50, 100),
            is_label=is_label,
            name=h5_path.name,
        )
        level0[...] = data
    return out


def run_measured(cmd: list[str], bench: Path) -> float:
    """Run ``cmd``; write its wall time and peak RSS (this child only, via wait4) as a benchmark TSV."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    rss_mb = usage.ru_maxrss / 1024.0  # Linux: KiB
    cpu = usage.ru_utime + usage.ru_stime
    hms = time.strftime("%H:%M:%S", time.gmtime(seconds))
    bench.parent.mkdir(parents=True, exist_ok=True)
    bench.write_text(
        BENCH_HEADER + f"{seconds:.4f}\t{hms}\t{rss_mb:.2f}\tNA\tNA\tNA\tNA\tNA\t"
        f"{100 * cpu / seconds:.2f}\t{cpu:.2f}\n"
    )
    return seconds


def reference_timing(seg_path: Path, gt_path: Path) -> None:
    """One evaluate (blockwise table + every instance metric) vs skimage + elf on whole arrays."""
    import elf.evaluation as elf_eval
    from skimage.metrics import adapted_rand_error, variation_of_information

    from zarrseg.evaluation.score import EvaluateParams, evaluate_images

    seg = np.asarray(ome.open_image(seg_path).data[...])
    gt = np.asarray(ome.open_image(gt_path).data[...])
    params = EvaluateParams()
    params.dask.n_workers = 1
    t0 = time.perf_counter()
    ours = evaluate_images(seg_path, [gt_path], params)[""]
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    are = adapted_rand_error(gt, seg, ignore_labels=(0,))[0]
    split, merge = variation_of_information(gt, seg, ignore_labels=(0,))
    for t in params.iou_thresholds:
        elf_eval.matching(seg, gt, threshold=t)
    elf_eval.symmetric_best_dice_score(seg, gt)
    t_ref = time.perf_counter() - t0
    print(
        f"\nevaluate on {seg.shape} ({seg.size / 1e6:.1f} Mvoxel), {len(ours)} metrics: zarrseg blockwise "
        f"{t_ours:.2f} s (reads Zarr, computes everything) vs skimage ARand+VOI + elf matching x10 + SBD on "
        f"in-memory arrays {t_ref:.2f} s: ratio {t_ours / t_ref:.2f}; |ARand diff| {abs(ours['arand'] - are):.1e}, "
        f"|VOI diff| {abs(ours['voi_split'] - split) + abs(ours['voi_merge'] - merge):.1e}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/zarrseg_partitioner_grid"))
    parser.add_argument(
        "--grid", type=Path, default=REPO / "config" / "experiments" / "partitioner_grid.yaml"
    )
    parser.add_argument("--samples", nargs="+", default=list(SAMPLES), choices=list(SAMPLES))
    parser.add_argument("--workers", type=int, default=1, help="Dask workers per segment job")
    args = parser.parse_args()
    if not SHARED.exists():
        print(f"shared data not found at {SHARED}; set ZARRSEG_SHARED_DATA", file=sys.stderr)
        return 1
    exp = load_experiment(args.grid)
    cells = exp.cells()
    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    inputs = {}
    for sample, stem in SAMPLES.items():
        if sample in args.samples:
            inputs[sample] = (
                to_ome(SHARED / f"{stem}-p1.lzf.h5", work / f"{sample}_p1.ome.zarr", False),
                to_ome(SHARED / f"{stem}-gt.lzf.h5", work / f"{sample}_gt.ome.zarr", True),
            )
    env_python = [sys.executable, "-m", "zarrseg"]
    os.environ["PYTHONPATH"] = str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
    os.environ.setdefault("ZARRSEG_NO_PROGRESS", "1")
    tables, t_start, seg_seconds = [], time.perf_counter(), 0.0
    for cell, values in cells.items():
        values = {**exp.fixed, **values}
        seg_params = stage_overrides(values, "segment")
        seg_params["dask"] = {"n_workers": args.workers}
        for sample, (p1, gt) in inputs.items():
            seg = work / sample / cell / "labels.ome.zarr"
            bench = work / sample / cell / "segment.tsv"
            if not seg.exists():
                seg_seconds += run_measured(
                    [*env_python, "segment", str(p1), "-o", str(seg), "--params", json.dumps(seg_params)],
                    bench,
                )
            metrics = work / sample / cell / "metrics.parquet"
            if not metrics.exists():
                rc = zarrseg(
                    [
                        "evaluate",
                        str(seg),
                        "--gt",
                        str(gt),
                        "-o",
                        str(metrics),
                        "--meta",
                        f"experiment={exp.name}",
                        "--meta",
                        f"sample={sample}",
                        "--meta",
                        f"method={values.get('segment.partitioner', 'gasp')}",
                        "--meta",
                        f"cell={cell}",
                        "--meta",
                        f"params={json.dumps(values)}",
                        "--benchmark",
                        f"segment={bench}",
                        "--set",
                        "dask.n_workers=1",
                    ]
                )
                if rc != 0:
                    return rc
            tables.append(str(metrics))
        print(f"{cell}: done", file=sys.stderr, flush=True)
    total = time.perf_counter() - t_start
    rc = zarrseg(["table", *tables, "-o", str(args.out / "results")])
    print(
        f"\n{len(tables)} segmentations ({len(cells)} cells x {len(inputs)} samples) in {total:.0f} s "
        f"({seg_seconds:.0f} s in segment processes); outputs under {args.out / 'results'}"
    )
    first = next(iter(cells))
    sample = next(iter(inputs))
    reference_timing(work / sample / first / "labels.ome.zarr", inputs[sample][1])
    return rc


if __name__ == "__main__":
    sys.exit(main())

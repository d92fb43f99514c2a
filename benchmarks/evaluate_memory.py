"""Peak memory and time of ``zarrseg evaluate`` (blockwise) vs scikit-image on whole arrays.

Writes a synthetic label pair (Voronoi-like cells, a perturbed copy) of ``--shape`` to Zarr, then
runs, each in its own process (peak RSS of that process via wait4): (a) ``zarrseg evaluate`` with
ARand + VOI, (b) the same two metrics with scikit-image after loading both volumes. The claim to
check: blockwise evaluation needs memory for blocks and the table, not for the volumes.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/evaluate_memory.py --shape 128 512 512
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from zarrseg import ome  # noqa: E402

SKIMAGE = """
import sys, numpy as np
from skimage.metrics import adapted_rand_error, variation_of_information
from zarrseg import ome
seg = np.asarray(ome.open_image(sys.argv[1]).data[...]); gt = np.asarray(ome.open_image(sys.argv[2]).data[...])
are = adapted_rand_error(gt, seg, ignore_labels=(0,))[0]
split, merge = variation_of_information(gt, seg, ignore_labels=(0,))
print(f"{are:.12f} {split:.12f} {merge:.12f}")
"""


def write_pair(root: Path, shape: tuple[int, ...], rng: np.random.Generator) -> tuple[Path, Path]:
    """Cells on a jittered grid (ids up to ~1e5), written slab by slab; seg = gt with shifted borders."""
    cell = 16
    seg_arr = ome.create_image(
        root / "seg.zarr",
        shape=shape,
        dtype=np.uint64,
        axes="zyx",
        scale=(1, 1, 1),
        chunks=(32, 256, 256),
        is_label=True,
    )
    gt_arr = ome.create_image(
        root / "gt.zarr",
        shape=shape,
        dtype=np.uint32,
        axes="zyx",
        scale=(1, 1, 1),
        chunks=(32, 256, 256),
        is_label=True,
    )
    zz, yy, xx = np.meshgrid(np.arange(32), np.arange(shape[1]), np.arange(shape[2]), indexing="ij")
    for z0 in range(0, shape[0], 32):
        z = zz[: min(32, shape[0] - z0)] + z0
        y, x = yy[: z.shape[0]], xx[: z.shape[0]]
        gt = ((z // cell) * 10_000 + (y // cell) * 100 + (x // cell) + 1).astype(np.uint32)
        gt[(y % cell == 0) | (x % cell == 0)] = 0  # ignore label on cell borders
        seg = (((z + 3) // cell) * 10_000 + ((y + 5) // cell) * 100 + ((x + 2) // (cell * 2)) + 1).astype(
            np.uint64
        )
        gt_arr[z0 : z0 + z.shape[0]] = gt
        seg_arr[z0 : z0 + z.shape[0]] = seg
    return root / "seg.zarr", root / "gt.zarr"


def run_rss(cmd: list[str]) -> tuple[float, float, str]:
    """Wall time and peak RSS (MB) of one child process."""
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(REPO / "src"), "ZARRSEG_NO_PROGRESS": "1"},
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{cmd} failed")
        out.seek(0)
        return seconds, usage.ru_maxrss / 1024.0, out.read()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[128, 512, 512])
    parser.add_argument("--block-shape", type=int, nargs=3, default=[32, 256, 256])
    args = parser.parse_args()
    shape = tuple(args.shape)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        seg, gt = write_pair(root, shape, np.random.default_rng(0))
        out = root / "m.parquet"
        ours = run_rss(
            [
                sys.executable,
                "-m",
                "zarrseg",
                "evaluate",
                str(seg),
                "--gt",
                str(gt),
                "-o",
                str(out),
                "--set",
                "metrics=[arand, voi_split, voi_merge]",
                "--set",
                "dask.n_workers=1",
                "--set",
                f"block_shape={list(args.block_shape)}",
            ]
        )
        ref = run_rss([sys.executable, "-c", SKIMAGE, str(seg), str(gt)])
        import pandas as pd

        table = pd.read_parquet(out).set_index("metric")["value"]
        are, split, merge = (float(v) for v in ref[2].split())
        volume_mb = np.prod(shape) * (8 + 4) / 2**20
        print(
            f"volume {shape} = {np.prod(shape) / 1e6:.1f} Mvoxel (seg uint64 + gt uint32 = {volume_mb:.0f} MB)"
        )
        print(f"zarrseg evaluate (blocks {args.block_shape}): {ours[0]:.1f} s, peak RSS {ours[1]:.0f} MB")
        print(f"skimage on whole arrays:                  {ref[0]:.1f} s, peak RSS {ref[1]:.0f} MB")
        print(
            f"ratio time {ours[0] / ref[0]:.2f}, ratio peak memory {ours[1] / ref[1]:.2f}; |diff| ARand "
            f"{abs(table['arand'] - are):.1e}, VOI split {abs(table['voi_split'] - split):.1e}, "
            f"merge {abs(table['voi_merge'] - merge):.1e}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How far blockwise segmentation is from one block, as the blocks get smaller (FlyEM 250^3).

The blockwise engine stitches supervoxels across blocks (``zarrseg.segment.supervoxels``);
with small blocks more supervoxels cross faces and edges, so its errors show there first.
For each watershed setting (PlantSeg's defaults, and threshold 0.4 / sigma 2 / alpha 0.9 as
in ``benchmarks/segment.py``) and each partitioner, the volume is segmented once as a single
volume by elf (``segment_whole``) and then blockwise with 64^3 and 128^3 blocks; the script prints
ARand and VOI (split, merge) of the blockwise result against the whole-volume one, and the seconds
each run took.
Raw supervoxels (``dtws``) show the stitching itself; the partitioners show what reaches users.

    nice -n 10 python benchmarks/supervoxel_stitching.py [--halo 35] [--blocks 64 128]

Measured (2 cores, 2026-12-01, halo 35; ARand 64^3 / 128^3): defaults dtws 0.075 / 0.069,
multicut 0.0000 / 0.0000, GASP 0.0001 / 0.0000, mutex watershed 0.020 / 0.045; threshold 0.4
setting dtws 0.0028 / 0.0005, multicut and GASP 0.0000, mutex watershed 0.0008 / 0.0004. The
stitching before seed identity (overlap equivalences) gave for dtws 0.549 / 0.102 and 0.018 /
0.0008, for the mutex watershed 0.053 / 0.0008 and 0.0005 / 0.0000.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segment import ALGO, flyem_boundaries  # noqa: E402

SETTINGS = {"defaults": {}, "threshold 0.4": {k: v for k, v in ALGO.items() if k != "post_min_size"}}
PARTITIONERS = ("dtws", "multicut", "gasp", "mutex_watershed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--halo", type=int, default=35)
    parser.add_argument("--blocks", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    from elf.evaluation import rand_index, variation_of_information

    from zarrseg import ome
    from zarrseg.params import load_params
    from zarrseg.segment import SegmentParams
    from zarrseg.segment.engine import segment
    from zarrseg.segment.reference import segment_whole

    work = Path(args.workdir or tempfile.mkdtemp(prefix="zarrseg-stitching-"))
    work.mkdir(parents=True, exist_ok=True)
    source = work / "boundaries.ome.zarr"
    if not source.exists():
        b = flyem_boundaries()
        ome.create_image(source, shape=b.shape, dtype=np.float32, axes="zyx", scale=(1.0,) * 3, chunks=(64,) * 3)[
            ...
        ] = b
    volume = np.asarray(ome.open_image(source).data[...])

    def run(setting: dict, partitioner: str, block: int, halo: int) -> tuple[np.ndarray, float]:
        params = load_params(
            SegmentParams,
            {**setting, "partitioner": partitioner, "post_min_size": 0, "block_shape": [block] * 3,
             "halo": [halo] * 3, "chunks": [min(block, 128)] * 3, "dask": {"scheduler": "synchronous"}},
        )
        out = work / f"seg_{partitioner}_{block}.ome.zarr"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        segment(source, out, params)
        seconds = time.perf_counter() - t0
        return np.asarray(ome.open_image(out).data[...]), seconds

    print(f"{'setting':<14} {'partitioner':<16} {'blocks':>6} {'ARand':>7} {'VOI split':>9} {'merge':>7} {'s':>6}")
    for name, setting in SETTINGS.items():
        for partitioner in PARTITIONERS:
            t0 = time.perf_counter()
            one = segment_whole(volume, load_params(SegmentParams, {**setting, "partitioner": partitioner,
                                                                      "post_min_size": 0}))
            seconds = time.perf_counter() - t0
            print(f"{name:<14} {partitioner:<16} {'whole':>6} {'':>7} {'':>9} {'':>7} {seconds:6.1f}", flush=True)
            for block in args.blocks:
                seg, seconds = run(setting, partitioner, block, args.halo)
                split, merge = variation_of_information(seg, one)
                arand = rand_index(seg, one)[0]
                print(f"{name:<14} {partitioner:<16} {block:>6} {arand:7.4f} {split:9.4f} {merge:7.4f} {seconds:6.1f}",
                      flush=True)
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

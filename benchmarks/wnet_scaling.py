"""Sparse W-Net losses scale with the number of superpixels: step time with 8,000 vs 1,000 superpixels.

One training step (encoder + decoder on the whole 481 x 321 BSDS300 image and on the reconstruction
patches, the three sparse losses of Eq. 5-7, backward, Adam) is timed with SLIC asked for 1,000
and for 8,000 superpixels, alternating the two in the same process (so load on the machine hits
both alike). The superpixel means cost O(K HW) whatever N is, the sparse products O(K E) with
E ~ 3 N edges: the ratio should stay near 1 (target <= 1.5). A small network (8 features, 3
levels) is used on purpose: the bigger the network, the smaller the losses' share of a step.

    flock /tmp/zarrseg-heavy.lock python benchmarks/wnet_scaling.py [--image 3096] [--steps 12]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("ZARRSEG_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def image_zarr(name: str, folder: Path) -> str:
    import imageio.v3 as iio

    from zarrseg import ome

    rgb = np.moveaxis(iio.imread(SHARED / "bsds300_test" / "images" / f"{name}.jpg"), -1, 0).copy()
    path = folder / f"{name}.ome.zarr"
    arr = ome.create_image(path, shape=rgb.shape, dtype=rgb.dtype, axes="cyx", scale=[1.0] * 3, chunks=[1, 512, 512])
    arr[...] = rgb
    return str(path)


def method_for(image: str, n_segments: int, threads: int):
    from zarrseg.learn.loop import Context
    from zarrseg.methods.wnet.method import WNetMethod
    from zarrseg.methods.wnet.params import WNetParams
    from zarrseg.params import load_params

    cfg = {
        "images": [image], "graph": "sparse", "segmentation": "all", "reconstruction": "patch", "beta": 0.1,
        "model": {"f_maps": 8, "depth": 3}, "superpixels": {"n_segments": n_segments},
        "loop": {"threads": threads, "device": "cpu", "tensorboard": False},
    }
    params = load_params(WNetParams, cfg, where="wnet")
    method = WNetMethod(params, Context(params.loop, Path(tempfile.mkdtemp())))
    parts = method.build()
    method.modules = parts.modules
    return method, parts.optimizer


def one_step(method, optimizer, batches, step: int) -> tuple[float, float]:
    t, c = time.perf_counter(), time.process_time()
    optimizer.zero_grad(set_to_none=True)
    out = method.step(next(batches), step)
    out["loss"].backward()
    optimizer.step()
    return time.perf_counter() - t, time.process_time() - c


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default="3096", help="BSDS300 test image id (481 x 321)")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per setting (after 2 warm-up steps)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    image = image_zarr(args.image, Path(tempfile.mkdtemp()))
    runs = {}
    for n in (1000, 8000):
        method, opt = method_for(image, n, args.threads)
        runs[n] = {"method": method, "opt": opt, "batches": method.batches(0), "wall": [], "cpu": [],
                   "n": method.terms[0].n_superpixels, "edges": int(method.terms[0].adjacency._nnz()) // 2}
    for step in range(args.steps + 2):
        for run in runs.values():  # alternate, so machine load hits both settings alike
            wall, cpu = one_step(run["method"], run["opt"], run["batches"], step)
            if step >= 2:
                run["wall"].append(wall)
                run["cpu"].append(cpu)
    for n, run in runs.items():
        print(f"SLIC n_segments {n}: {run['n']} superpixels, {run['edges']} RAG edges; step median "
              f"{np.median(run['wall']):.3f} s wall, {np.median(run['cpu']):.3f} s CPU")
    wall = np.median(runs[8000]["wall"]) / np.median(runs[1000]["wall"])
    cpu = np.median(runs[8000]["cpu"]) / np.median(runs[1000]["cpu"])
    print(f"step time ratio 8000 / 1000 superpixels: {wall:.2f} wall, {cpu:.2f} CPU (target <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

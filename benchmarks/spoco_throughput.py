"""Training time per step: SPOCO vs the U-Net trainer at the same patch size and network.

Both methods train the same U-Net (``--f-maps``, ``--depth``) on the same patches (GOWT1 nuclei
frames, 2x downsampled, or a FlyEM crop with ``--3d``) through the one learning loop, with the
same batch size and the same number of CPU threads, in turns in one process (so both see the
same machine load): U-Net, SPOCO, U-Net, SPOCO, ... The figure is the median wall and CPU time
of a step after ``--warmup`` steps, from each run's history.csv. SPOCO adds the momentum network's
forward pass, a second intensity augmentation and the loss terms; the issue's target is <= 1.3x.
The last line times g's forward alone (training mode, no gradient) against the U-Net step: the
ratio no cheaper loss can go below.

    python benchmarks/spoco_throughput.py [--rounds 3] [--steps 40] [--3d]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from spoco_grids import OUT, sheet  # noqa: E402


def _zarr(work: Path, name: str) -> tuple[str, str]:
    import tifffile

    from zarrseg import ome

    out = []
    for suffix, is_label in (("", False), ("_labels", True)):
        path = work / f"{name}{suffix}.ome.zarr"
        if not path.exists():
            data = tifffile.imread(OUT / f"{name}{suffix}.tif")
            data = data.astype(np.uint32) if is_label else data
            arr = ome.create_image(path, shape=data.shape, dtype=data.dtype, axes="zyx"[-data.ndim :],
                                   scale=[1.0] * data.ndim, chunks=[64] * data.ndim, is_label=is_label)
            arr[...] = data
        out.append(str(path))
    return out[0], out[1]


def step_times(history: Path, warmup: int) -> tuple[float, float]:
    with open(history) as f:
        rows = list(csv.DictReader(f))
    wall = np.diff([float(r["seconds"]) for r in rows])[warmup:]
    cpu = np.diff([float(r["cpu_seconds"]) for r in rows])[warmup:]
    return float(np.median(wall)), float(np.median(cpu))


def floor(ndim: int, patch: list[int], batch: int, model: dict, threads: int, repeats: int = 7) -> tuple[float, float]:
    """Median CPU seconds of the U-Net's training-mode forward without gradient (g's share of a SPOCO
    step) and of its forward + backward (f's), same network, batch and threads: g alone adds
    forward / step to the ratio, however cheap the loss terms are."""
    import time

    import torch

    from zarrseg.methods.unet.models import ModelConfig, build_model

    torch.set_num_threads(threads)
    net = build_model(ModelConfig(ndim=ndim, norm="batch", out_channels=16, **model)).train()
    x = torch.randn(batch, 1, *patch)

    def forward() -> None:
        with torch.no_grad():
            net(x)

    def forward_backward() -> None:
        net.zero_grad()
        net(x).sum().backward()

    out = []
    for fn in (forward, forward_backward):
        fn()
        times = []
        for _ in range(repeats):
            t = time.process_time()
            fn()
            times.append(time.process_time() - t)
        out.append(float(np.median(times)))
    return out[0], out[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--3d", dest="three_d", action="store_true")
    args = parser.parse_args(argv)

    from zarrseg.learn.loop import train
    from zarrseg.methods.spoco.params import SpocoParams
    from zarrseg.methods.unet.train_params import TrainParams
    from zarrseg.params import load_params

    if not (OUT / "flyem_test.tif").exists():
        sheet()
    work = Path(tempfile.mkdtemp(prefix="spoco_throughput_"))
    if args.three_d:
        names, ndim, patch, model = ["flyem_train"], 3, [40, 64, 64], {"f_maps": 8, "depth": 3}
        batch = 2
    else:
        names, ndim, patch, model = ["gowt1_t01", "gowt1_t21"], 2, [128, 128], {"f_maps": 16, "depth": 4}
        batch = 4
    items = [dict(zip(("image", "labels"), _zarr(work, n), strict=True)) for n in names]
    loop = {"steps": args.steps, "threads": args.threads, "device": "cpu", "tensorboard": False,
            "eval_every": 10**6, "checkpoint_every": 10**6}
    common = {"train": items, "model": {"ndim": ndim, **model, "norm": "batch"}, "patch_shape": patch,
              "batch_size": batch, "num_workers": 0, "loop": loop}
    unet = {**common, "target": {"kind": "boundaries"}, "val_metric": "loss"}
    spoco = {**common, "embedding_dim": 16, "object_fraction": 0.4, "momentum": 0.99}
    times: dict[str, list[tuple[float, float]]] = {"unet": [], "spoco": []}
    for r in range(args.rounds):
        for name, cls, params in (("unet", TrainParams, unet), ("spoco", SpocoParams, spoco)):
            out = work / f"{name}{r}"
            train(name, load_params(cls, params), out)
            times[name].append(step_times(out / "history.csv", args.warmup))
            shutil.rmtree(out)
            print(f"round {r} {name}: {times[name][-1][0]:.3f} s/step wall, {times[name][-1][1]:.3f} s CPU", flush=True)
    u, s = np.median(times["unet"], axis=0), np.median(times["spoco"], axis=0)
    print(f"{ndim}D patch {patch} batch {batch} U-Net {model}, {args.threads} thread(s), median of {args.rounds} rounds:")
    print(f"  U-Net {u[0]:.3f} s/step ({u[1]:.3f} CPU s), SPOCO {s[0]:.3f} s/step ({s[1]:.3f} CPU s)")
    print(f"  SPOCO / U-Net per step: {s[0] / u[0]:.2f}x wall, {s[1] / u[1]:.2f}x CPU (target <= 1.3x)")
    g_fwd, f_step = floor(ndim, patch, batch, model, args.threads)
    print(f"  g's forward {g_fwd:.3f} CPU s, f's forward + backward {f_step:.3f} CPU s: g alone sets a floor of "
          f"{1 + g_fwd / u[1]:.2f}x the U-Net step's CPU time")
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())

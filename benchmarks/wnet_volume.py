"""A W-Net trained on one slice segments a whole volume (Leng et al. Fig. 5), and its memory stays bounded.

  demo     ISBI 2012 ssTEM stack (30 x 512 x 512, ../shared/data): train a W-Net on ONE slice,
           predict every slice through ``zarrseg predict`` (a 2D model over the stack, labels =
           argmax over K, ``output: argmax``), score each slice against the membrane ground truth
           (V-measure, ARI; the trained slice vs the 29 unseen ones) and draw original | W-Net labels |
           ground truth for several slices side by side (--figure).
  memory   peak RSS of ``zarrseg predict`` (2D W-Net slice by slice, ``output: argmax``) on a
           1024^3 (1.07 GVoxel) volume and on a 64x smaller 256^3 one, each in its own process, with
           the same block shape: memory follows the block, not the volume (target: ratio <= 1.25).

    flock /tmp/zarrseg-heavy.lock python benchmarks/wnet_volume.py demo [--slice 15] [--epochs 20]
    flock /tmp/zarrseg-heavy.lock python benchmarks/wnet_volume.py memory
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

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ZARRSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _train(image: str, out: Path, extra: dict) -> Path:
    from zarrseg.methods.wnet import WNetParams, model_type_values, train
    from zarrseg.params import load_params

    cfg = {"images": [image], **model_type_values(extra.pop("type")), **extra}
    train(load_params(WNetParams, cfg, where="wnet"), out, resume="auto")
    return out / "best.pt"


def _predict(image: str, out: Path, checkpoint: Path, **extra) -> None:
    from zarrseg.predict.params import PredictParams
    from zarrseg.predict.stage import predict

    if not out.exists():
        params = PredictParams(method="model", output="argmax", device="cpu", num_workers=0, **extra)
        predict(image, out, params, checkpoint=checkpoint)


def demo(args) -> None:
    import tifffile
    from sklearn.metrics import adjusted_rand_score, v_measure_score

    from zarrseg import ome
    from zarrseg.ingest import IngestParams, ingest

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    isbi = SHARED / "isbi2012_em_membrane"
    image = work / "isbi.ome.zarr"
    if not image.exists():
        ingest(isbi / "train-volume_from_png.tif", image, IngestParams())
    image_input = str(image / "0") if (image / "0").exists() else str(image)
    truth = tifffile.imread(isbi / "train-labels_from_png.tif") > 0  # True: cell interior, False: membrane
    t0 = time.perf_counter()
    model = _train(image_input, work / f"wnet_slice{args.slice}", {
        "type": args.type, "beta": args.beta, "slices": [args.slice], "epochs": args.epochs,
        "model": {"n_classes": args.classes, "f_maps": args.f_maps, "depth": args.depth},
        "loop": {"threads": args.threads, "device": "cpu", "tensorboard": False, "seed": args.seed},
    })
    t_train = time.perf_counter() - t0
    labels_path = work / f"labels_slice{args.slice}.ome.zarr"
    t0 = time.perf_counter()
    _predict(image_input, labels_path, model)
    t_pred = time.perf_counter() - t0
    labels = ome.open_image(labels_path).data[...]
    vm = [v_measure_score(truth[z].ravel(), labels[z].ravel()) for z in range(len(labels))]
    ari = [adjusted_rand_score(truth[z].ravel(), labels[z].ravel()) for z in range(len(labels))]
    unseen = [z for z in range(len(labels)) if z != args.slice]
    ids = [sorted(np.unique(labels[z]).tolist()) for z in range(len(labels))]
    result = {
        "model": f"{args.type} beta {args.beta}, K {args.classes}, f_maps {args.f_maps}, depth {args.depth}, "
                 f"{args.epochs} epochs on slice {args.slice}",
        "train_s": round(t_train), "predict_s": round(t_pred, 1), "slices": len(labels),
        "labels_used": sorted(set().union(*map(set, ids))),
        "v_measure_trained_slice": round(vm[args.slice], 3),
        "v_measure_unseen_mean": round(float(np.mean([vm[z] for z in unseen])), 3),
        "v_measure_unseen_min": round(float(np.min([vm[z] for z in unseen])), 3),
        "ari_trained_slice": round(ari[args.slice], 3),
        "ari_unseen_mean": round(float(np.mean([ari[z] for z in unseen])), 3),
    }
    print(json.dumps(result, indent=1))
    figure(ome.open_image(image_input).data, labels, truth, args.figure, args.slice)


def figure(raw, labels: np.ndarray, truth: np.ndarray, out: Path, trained: int) -> None:
    """original | W-Net labels | ground truth for a few slices (columns), the trained one first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(labels)
    slices = [trained] + [z for z in np.linspace(0, n - 1, 4).astype(int) if z != trained][:3]
    fig, axes = plt.subplots(3, len(slices), figsize=(3 * len(slices), 9))
    for col, z in enumerate(slices):
        for row, (img, cmap, name) in enumerate(
            ((np.asarray(raw[z]), "gray", "image"), (labels[z], "tab20", "W-Net labels"), (truth[z], "gray", "membranes"))
        ):
            ax = axes[row, col]
            ax.imshow(img, cmap=cmap, interpolation="nearest", vmin=0 if cmap == "tab20" else None,
                      vmax=20 if cmap == "tab20" else None)
            ax.set_axis_off()
            ax.set_title(f"z {z}{' (trained)' if z == trained else ''}: {name}", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"figure: {out}")


# --- memory ------------------------------------------------------------------------------------------
def peak_rss(volume: Path, checkpoint: Path, out: Path, predict_params: dict, threads: int) -> dict:
    """Peak RSS (MB) of ``zarrseg predict`` in a fresh process: its VmHWM, the high-water mark of
    its own address space (``getrusage`` would also count this benchmark's memory, which Linux
    carries over into a forked-and-exec'd child's ru_maxrss)."""
    argv = ["predict", str(volume), "-o", str(out), "--checkpoint", str(checkpoint), "--params", json.dumps(predict_params)]
    code = (
        "import re, time; from zarrseg.cli import main; t = time.perf_counter(); "
        f"rc = main({argv!r}); "
        "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1); "
        "print('RSS', hwm, time.perf_counter() - t, rc)"
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "ZARRSEG_NO_PROGRESS": "1"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    hwm, seconds, rc = [ln for ln in res.stdout.splitlines() if ln.startswith("RSS")][-1].split()[1:]
    return {"peak_rss_mb": round(int(hwm) / 1024), "seconds": round(float(seconds)), "rc": int(rc)}


def memory(args) -> None:
    from predict import make_volume  # benchmarks/predict.py: a compressible synthetic uint8 volume

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        small = make_volume(work / "small.ome.zarr", (args.small,) * 3)
        # a tiny W-Net (the memory of predict is set by the block and the K channels, not the model)
        model = _train(str(small), work / "model", {
            "type": "Sparse-SimCon-Patch", "slices": [0], "epochs": None,
            "model": {"n_classes": 20, "f_maps": 4, "depth": 2}, "superpixels": {"n_segments": 500},
            "patches": {"sizes": [min(64, args.small)], "counts": [8]},
            "loop": {"steps": 2, "threads": args.threads, "device": "cpu", "tensorboard": False},
        })
        block = [8, args.small, args.small]
        params = {"method": "model", "output": "argmax", "device": "cpu", "num_workers": 0, "overlap": 0.25,
                  "block_shape": block, "chunks": block, "batch_size": 4}
        result = {"predict": params, "model": f"2D W-Net K=20, f_maps 4, depth 2, tile {args.small}^2 (its training slice)"}
        result["small"] = {"shape": [args.small] * 3,
                           **peak_rss(small, model, work / "small_labels.ome.zarr", params, args.threads)}
        print(json.dumps(result["small"]), flush=True)
        big = make_volume(work / "big.ome.zarr", (args.big,) * 3)
        result["big"] = {"shape": [args.big] * 3, "gvoxels": round(args.big**3 / 1e9, 3),
                         **peak_rss(big, model, work / "big_labels.ome.zarr", params, args.threads)}
        result["rss_ratio"] = round(result["big"]["peak_rss_mb"] / result["small"]["peak_rss_mb"], 3)
        print(json.dumps(result, indent=1))
    print("benchmark process max RSS MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["demo", "memory"])
    parser.add_argument("--work", type=Path, default=REPO / "work" / "wnet_volume")
    parser.add_argument("--workdir", type=Path, default=None, help="memory: where the temporary volumes go")
    parser.add_argument("--figure", type=Path, default=REPO / "benchmarks" / "out" / "wnet_volume_isbi.png")
    parser.add_argument("--slice", type=int, default=15, help="the one training slice")
    parser.add_argument("--type", default="Sparse-NCut-Patch")
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--f-maps", type=int, default=8)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--big", type=int, default=1024, help="memory: side of the big cube (1024: 1.07 GVoxel)")
    parser.add_argument("--small", type=int, default=256, help="memory: side of the small cube (64x fewer voxels)")
    args = parser.parse_args(argv)
    os.environ.setdefault("ZARRSEG_NO_PROGRESS", "1")
    demo(args) if args.step == "demo" else memory(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

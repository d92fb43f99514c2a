"""The shipped ovule model on the ovule crop sampled 2x coarser in y and x: predict with and without rescaling.

The model (``src/zarrseg/methods/unet/pretrained/ovule_boundaries_3d.pt``) was trained at
0.235 x 0.15 x 0.15 µm on this very crop (z 0-23; it has seen it, so the figures measure the
effect of the voxel size, not generalisation). Here the crop is resampled to 0.235 x 0.3 x 0.3 µm
(raw: mean of each 2 x 2 pixels, as a coarser camera integrates; labels: the most frequent of
the four) and the boundary maps of ``predict`` with ``rescale: true`` (input resampled to the
model's voxel size, output back) and ``rescale: false`` (the model applied to the coarse grid)
are segmented with the default workflow's settings and scored against the coarse labels.
Peers measured in the same run: the model at its own voxel size on the original crop (what the
rescaled run can at best approach), the raw membrane stain as the boundary map (the no-model
baseline), the rescaled run with its output averaged onto the coarse grid instead of taking
the maximum (the design choice's peer), and the same rescaled prediction through the model
exported as a BioImage.IO package (round-trip difference).

    python benchmarks/ovule_rescale.py [--workdir /tmp/zarrseg_ovule_rescale] [--betas 0.3 0.4 0.5 0.6 0.7]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
from scipy import stats

from zarrseg import ome
from zarrseg.evaluation.contingency import Contingency
from zarrseg.evaluation.instance import adapted_rand, voi
from zarrseg.methods.unet.export import export_bioimageio
from zarrseg.params import load_params
from zarrseg.predict import tiled
from zarrseg.predict.params import PredictParams
from zarrseg.predict.stage import predict
from zarrseg.segment import SegmentParams, segment

REPO = Path(__file__).resolve().parents[1]
CROP = REPO.parent / "shared" / "data" / "plantseg_crops" / "sample_ovule.h5"
MODEL = REPO / "src" / "zarrseg" / "methods" / "unet" / "pretrained" / "ovule_boundaries_3d.pt"
SEGMENT = {  # config/config.yaml's segment section, blocks sized to the crop
    "partitioner": "multicut",
    "solver": "gaec",
    "threshold": 0.5,
    "sigma_seeds": 1.0,
    "sigma_weights": 2.0,
    "min_size": 100,
    "post_min_size": 100,
    "block_shape": [32, 128, 128],
    "halo": [8, 16, 16],
}


def write(path: Path, data: np.ndarray, scale, is_label: bool = False) -> Path:
    arr = ome.create_image(
        path,
        shape=data.shape,
        dtype=data.dtype,
        axes="zyx",
        scale=list(scale),
        chunks=data.shape,
        is_label=is_label,
    )
    arr[...] = data
    return path


def prepare(work: Path) -> dict:
    with h5py.File(CROP, "r") as f:
        raw, labels = f["raw"][:], f["label"][:]
        voxel = [float(v) for v in f["raw"].attrs["element_size_um"]]
    z, y, x = raw.shape
    coarse = raw.reshape(z, y // 2, 2, x // 2, 2).mean(axis=(2, 4)).astype(np.float32)
    quads = np.stack([labels[:, i::2, j::2] for i in (0, 1) for j in (0, 1)])
    coarse_labels = stats.mode(quads, axis=0, keepdims=False).mode.astype(labels.dtype)
    coarse_voxel = [voxel[0], 2 * voxel[1], 2 * voxel[2]]
    write(work / "fine.ome.zarr", raw, voxel)
    write(work / "fine_gt.ome.zarr", labels, voxel, is_label=True)
    write(work / "coarse.ome.zarr", coarse, coarse_voxel)
    write(work / "coarse_gt.ome.zarr", coarse_labels, coarse_voxel, is_label=True)
    return {
        "voxel_um": voxel,
        "coarse_voxel_um": coarse_voxel,
        "shape": list(raw.shape),
        "coarse_shape": list(coarse.shape),
    }


def score(boundaries: Path, gt: Path, beta: float) -> dict:
    out = boundaries.with_name(f"{boundaries.name.split('.')[0]}_seg_b{beta}.ome.zarr")
    shutil.rmtree(out, ignore_errors=True)
    segment(boundaries, out, load_params(SegmentParams, {**SEGMENT, "beta": beta}))
    seg, ref = ome.open_image(out).data[...], ome.open_image(gt).data[...]
    table = Contingency.from_arrays(seg, ref)
    return {**adapted_rand(table), **voi(table), "n_segments": int(len(np.unique(seg)))}


def run_predict(
    image: Path, out: Path, checkpoint: Path | None, output_mean: bool = False, **settings
) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    method = {"method": "model", "num_workers": 0} if checkpoint else {"method": "intensity"}
    decide = tiled.decide

    def averaged(*args, **kwargs):  # the peer: the boundary map averaged onto the coarse grid
        resampling, record = decide(*args, **kwargs)
        return dataclasses.replace(resampling, output_reduce="mean"), {**record, "output_reduce": "mean"}

    tiled.decide = averaged if output_mean else decide
    try:
        t0 = time.perf_counter()
        info = predict(image, out, load_params(PredictParams, {**method, **settings}), checkpoint)
    finally:
        tiled.decide = decide
    return {"seconds": round(time.perf_counter() - t0, 2), "rescale": info.get("rescale")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/zarrseg_ovule_rescale"))
    ap.add_argument("--betas", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.6, 0.7])
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"data": prepare(work)}
    runs = {
        "coarse_rescaled": (work / "coarse.ome.zarr", MODEL, {"rescale": True}, "coarse_gt"),
        "coarse_rescaled_output_averaged": (
            work / "coarse.ome.zarr",
            MODEL,
            {"output_mean": True},
            "coarse_gt",
        ),
        "coarse_not_rescaled": (work / "coarse.ome.zarr", MODEL, {"rescale": False}, "coarse_gt"),
        "coarse_raw_stain": (work / "coarse.ome.zarr", None, {}, "coarse_gt"),
        "fine_model_voxel_size": (work / "fine.ome.zarr", MODEL, {}, "fine_gt"),
    }
    for name, (image, ckpt, settings, gt) in runs.items():
        results[name] = {"predict": run_predict(image, work / f"{name}.ome.zarr", ckpt, **settings)}
        for beta in args.betas:
            results[name][f"beta{beta}"] = score(work / f"{name}.ome.zarr", work / f"{gt}.ome.zarr", beta)

    # the same rescaled prediction through the model exported as a BioImage.IO package
    shutil.rmtree(work / "package", ignore_errors=True)
    export_bioimageio(MODEL, work / "package")
    run_predict(work / "coarse.ome.zarr", work / "package_rescaled.ome.zarr", work / "package")
    a = ome.open_image(work / "package_rescaled.ome.zarr").data[...]
    b = ome.open_image(work / "coarse_rescaled.ome.zarr").data[...]
    results["bioimageio_round_trip_max_abs_diff"] = float(np.abs(a - b).max())

    print(json.dumps(results, indent=1))
    for beta in args.betas:
        key = f"beta{beta}"
        on, off = results["coarse_rescaled"][key], results["coarse_not_rescaled"][key]
        print(
            f"beta {beta}: ARand rescaled {on['arand']:.3f} vs not {off['arand']:.3f} "
            f"(not-rescaled / rescaled {off['arand'] / max(on['arand'], 1e-9):.2f}x), VOI {on['voi']:.3f} vs {off['voi']:.3f}; "
            f"output averaged {results['coarse_rescaled_output_averaged'][key]['arand']:.3f} / "
            f"{results['coarse_rescaled_output_averaged'][key]['voi']:.3f}; "
            f"raw stain {results['coarse_raw_stain'][key]['arand']:.3f} / {results['coarse_raw_stain'][key]['voi']:.3f}; "
            f"model at its voxel size {results['fine_model_voxel_size'][key]['arand']:.3f} / "
            f"{results['fine_model_voxel_size'][key]['voi']:.3f}"
        )
    print(
        f"BioImage.IO package vs checkpoint, rescaled coarse crop: max |diff| {results['bioimageio_round_trip_max_abs_diff']:.2e}"
    )
    (work / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

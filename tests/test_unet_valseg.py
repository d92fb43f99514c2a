"""Validation by the full segment pipeline on a validation crop: a metrics.csv column that selects best.pt."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from conftest import unet_params, voronoi_cells, write_image
from scipy import ndimage
from skimage.segmentation import find_boundaries

from zarrseg.errors import ConfigError
from zarrseg.methods.unet.checkpoint import load_checkpoint
from zarrseg.methods.unet.method import train
from zarrseg.methods.unet.train_params import TrainParams
from zarrseg.params import load_params


@pytest.fixture
def cells(tmp_path, rng):
    lab = np.stack([voronoi_cells(rng, (48, 48), 12) for _ in range(3)])
    img = np.stack([find_boundaries(s) for s in lab]).astype(np.float32) * 100 + rng.normal(50, 20, lab.shape)
    img = ndimage.gaussian_filter(img, (0, 0.7, 0.7)).astype(np.float32)
    return write_image(tmp_path / "img.ome.zarr", img, "zyx", [1, 32, 32]), write_image(
        tmp_path / "lab.ome.zarr", lab, "zyx", [1, 32, 32], is_label=True
    )


def _params(image, labels, **kw):
    base = {
        "batch_size": 4,
        "loop": {"steps": 30, "eval_every": 10, "checkpoint_every": 10, "seed": 1},
        "optimizer": {"lr": 0.01},
        "val_metric": "segment_arand",
        "val_segment": {
            "enabled": True,
            "every": 2,
            "roi": ":, 4:44, 4:44",  # both val slices, cropped in-plane: segmented and scored per slice
            "segment": {
                "partitioner": "multicut",
                "beta": 0.4,
                "block_shape": [1, 48, 48],
                "halo": [0, 8, 8],
                "chunks": [1, 48, 48],
                "min_size": 5,
                "post_min_size": 5,
                "dask": {"scheduler": "synchronous"},
            },
        },
    }
    base.update(kw)
    return load_params(TrainParams, unet_params(image, labels, "0:2", "1:3", **base))


def test_segment_validation_column_selects_best(tmp_path, cells):
    image, labels = cells
    out = train(_params(image, labels), tmp_path / "run")
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and {"val_seg_arand", "val_seg_voi"} <= set(rows[0])
    seg = [float(r["val_seg_arand"]) for r in rows]
    voi = [float(r["val_seg_voi"]) for r in rows]
    # every=2: validation 1 skips the segment run, validation 2 runs it, the last one always does
    assert math.isnan(seg[0]) and math.isnan(voi[0])
    assert all(0.0 <= v <= 1.0 for v in seg[1:]) and all(v >= 0.0 for v in voi[1:])
    assert seg[1] != seg[2] or voi[1] != voi[2]  # another model, another segmentation
    assert out["best"] == min(seg[1:])
    best = load_checkpoint(tmp_path / "run" / "best.pt").metrics
    assert best["val_seg_arand"] == min(seg[1:])


def test_segment_validation_bad_settings(tmp_path, cells):
    image, labels = cells
    with pytest.raises(ConfigError, match="val_segment.enabled"):
        _params(image, labels, val_segment={"enabled": False})
    with pytest.raises(ConfigError, match="foreground"):
        _params(image, labels, target={"kind": "foreground"})
    with pytest.raises(ConfigError, match="partitioner"):
        _params(image, labels, val_segment={"enabled": True, "segment": {"partitioner": "nope"}})


def test_segment_scores_of_a_stack(tmp_path, rng):
    """Per-slice scoring of a 2D model's stack; a single slice also with stacked_2d (no z edges)."""
    from zarrseg.methods.unet.train_params import ValSegmentParams
    from zarrseg.methods.unet.val_segment import segment_scores
    from zarrseg.params import load_params

    gt = np.stack([voronoi_cells(rng, (40, 40), 8) for _ in range(2)])
    bnd = (
        ndimage.gaussian_filter(np.stack([find_boundaries(s) for s in gt]).astype(np.float32), (0, 1, 1)) * 2
    )
    seg = {
        "partitioner": "multicut",
        "block_shape": [1, 40, 40],
        "halo": [0, 0, 0],
        "chunks": [1, 40, 40],
        "min_size": 5,
        "post_min_size": 5,
        "dask": {"scheduler": "synchronous"},
    }
    params = load_params(ValSegmentParams, {"enabled": True, "segment": seg})
    both = segment_scores(bnd, gt, params, slicewise=True, work_dir=tmp_path)
    each = [segment_scores(bnd[z : z + 1], gt[z : z + 1], params, slicewise=True) for z in range(2)]
    assert both["arand"] == pytest.approx(np.mean([e["arand"] for e in each]))
    assert both["arand"] < 0.2  # near-perfect boundaries segment nearly perfectly
    noise = segment_scores(rng.random(bnd.shape).astype(np.float32), gt, params, slicewise=True)
    assert noise["arand"] > both["arand"] and noise["voi"] > both["voi"]
    stacked = load_params(ValSegmentParams, {"enabled": True, "segment": {**seg, "stacked_2d": True}})
    assert segment_scores(bnd[:1], gt[:1], stacked, slicewise=True)["arand"] == pytest.approx(
        each[0]["arand"]
    )
    assert list(tmp_path.glob("val_segment_*")) == []  # temporary Zarrs are removed

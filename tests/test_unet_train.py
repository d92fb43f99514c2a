"""U-Net training: targets, a tiny run that learns, seeded reproducibility, resume, bad inputs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from conftest import unet_params, voronoi_cells, write_image
from scipy import ndimage
from skimage.segmentation import find_boundaries

from zarrseg import ome
from zarrseg.cli import main
from zarrseg.errors import ConfigError, InputError
from zarrseg.methods.unet.checkpoint import load_checkpoint
from zarrseg.methods.unet.method import train
from zarrseg.methods.unet.targets import TargetParams, affinities, boundaries, make_target
from zarrseg.methods.unet.train_params import TrainParams
from zarrseg.params import load_params


@pytest.fixture
def synthetic(tmp_path, rng):
    """A 3-slice stack of 2D Voronoi cells with bright, noisy membranes."""
    lab = np.stack([voronoi_cells(rng, (64, 64), 30) for _ in range(3)])
    img = np.stack([find_boundaries(s) for s in lab]).astype(np.float32) * 100 + rng.normal(50, 20, lab.shape)
    img = ndimage.gaussian_filter(img, (0, 0.7, 0.7)).astype(np.float32)
    return write_image(tmp_path / "img.ome.zarr", img, "zyx"), write_image(
        tmp_path / "lab.ome.zarr", lab, "zyx", is_label=True
    )


def _params(image, labels, **kw):
    loop = {"steps": 60, "eval_every": 20, "checkpoint_every": 20, "seed": 3, **kw.pop("loop", {})}
    base = {"batch_size": 4, "optimizer": {"lr": 0.01}, "augment": {"elastic": 0.5}, "loop": loop}
    return load_params(TrainParams, unet_params(image, labels, "0:2", "2:3", **{**base, **kw}))


def test_boundary_target_is_eq_2_1():
    lab = np.zeros((20, 20), np.uint32)
    lab[:, :10], lab[:, 10:] = 1, 2
    b = boundaries(lab, sigma=1.0)
    raw = find_boundaries(lab, mode="thick").astype(float)
    np.testing.assert_array_equal(b, (ndimage.gaussian_filter(raw, 1.0) > 0.5).astype(np.float32))
    assert b[:, 9:11].all() and not b[:, :7].any()
    aff, valid = affinities(lab, [(0, -1)])
    assert aff[0, :, 10].all() and not aff[0, :, 5].any() and not valid[0, :, 0].any()
    t, m = make_target(np.where(lab == 2, 7, lab), TargetParams(kind="foreground", ignore_label=7))
    assert t[0, :, :10].all() and not m[0, :, 10:].any()


def test_training_learns_and_is_reproducible(tmp_path, synthetic):
    image, labels = synthetic
    out1 = train(_params(image, labels), tmp_path / "run1")
    losses = [r["train_loss"] for r in out1["rows"]]
    assert losses[-1] < losses[0]
    arand = [r["val_arand"] for r in out1["rows"]]
    assert min(arand) < arand[0] or arand[0] < 0.5
    out2 = train(_params(image, labels), tmp_path / "run2")
    assert [r["train_loss"] for r in out2["rows"]] == losses  # same seed, same thread count: identical
    for name in ("best.pt", "last.pt", "metrics.csv"):
        assert (tmp_path / "run1" / name).exists()
    with open(tmp_path / "run1" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(np.isfinite(float(r["val_loss"])) for r in rows)
    loaded = load_checkpoint(tmp_path / "run1" / "best.pt")
    assert loaded.config.ndim == 2 and loaded.normalization.method == "meanstd"
    assert loaded.train_params["patch_shape"] == [32, 32]


def test_resume_continues_exactly(tmp_path, synthetic):
    image, labels = synthetic
    kw = {"val_metric": "loss"}
    full = train(_params(image, labels, loop={"steps": 40}, **kw), tmp_path / "full")
    train(_params(image, labels, loop={"steps": 20}, **kw), tmp_path / "part")
    with pytest.raises(ConfigError):  # an existing run is never overwritten silently
        train(_params(image, labels, loop={"steps": 40}, **kw), tmp_path / "part")
    resumed = train(_params(image, labels, loop={"steps": 40}, **kw), tmp_path / "part", resume=True)
    assert [r["train_loss"] for r in resumed["rows"]] == [r["train_loss"] for r in full["rows"]]
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "part" / "last.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_train_then_predict_3d_partial_supervision(tmp_path, rng):
    lab = voronoi_cells(rng, (16, 32, 32), 12)
    img = (find_boundaries(lab).astype(np.float32) * 100 + rng.normal(50, 10, lab.shape)).astype(np.float32)
    image, labels = (
        write_image(tmp_path / "i.ome.zarr", img, "zyx"),
        write_image(tmp_path / "l.ome.zarr", lab, "zyx", is_label=True),
    )
    params = {
        "train": [{"image": image, "labels": labels}],
        "model": {"ndim": 3, "f_maps": 2, "depth": 2, "norm": "group", "name": "residual_unet"},
        "patch_shape": [8, 16, 16],
        "batch_size": 2,
        "loop": {"steps": 6, "eval_every": 3, "checkpoint_every": 3, "threads": 1},
        "num_workers": 1,
        "supervision_fraction": 0.5,
        "supervision_unit": "objects",
        "target": {"kind": "affinities"},
    }
    model_dir = tmp_path / "model"
    assert main(["train", "-o", str(model_dir), "--params", json.dumps(params), "--torchscript"]) == 0
    assert (model_dir / "best.torchscript.pt").exists()
    out = tmp_path / "aff.ome.zarr"
    assert (
        main(
            [
                "predict",
                image,
                "-o",
                str(out),
                "--checkpoint",
                str(model_dir / "best.pt"),
                "--set",
                "method=unet",
                "--set",
                "num_workers=0",
            ]
        )
        == 0
    )
    pred = ome.open_image(out)
    assert pred.axes == "czyx" and pred.shape == (3, 16, 32, 32)
    assert np.isfinite(pred.data[...]).all()


def test_bad_training_inputs(tmp_path, synthetic, capsys):
    image, labels = synthetic
    with pytest.raises(ConfigError, match="patch_shape"):
        train(_params(image, labels, patch_shape=[33, 33]), tmp_path / "a")
    small = write_image(tmp_path / "small.ome.zarr", np.zeros((3, 32, 32), np.uint32), "zyx", is_label=True)
    with pytest.raises(InputError, match="small.ome.zarr"):
        train(_params(image, small), tmp_path / "b")
    bad = {"train": [{"image": image, "labels": str(tmp_path / "nope.ome.zarr")}], "model": {"ndim": 2}}
    assert main(["train", "-o", str(tmp_path / "c"), "--params", json.dumps(bad)]) == 2
    assert "nope.ome.zarr" in capsys.readouterr().err
    assert main(["train", "-o", str(tmp_path / "d"), "--params", json.dumps({**bad, "lossy": 1})]) == 2
    assert "unknown parameter 'lossy'" in capsys.readouterr().err

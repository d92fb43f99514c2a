"""Bad input to ``zarrseg predict``: NaN / Inf voxels give one line naming the file, exit 2, no output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import write_image

from zarrseg import ome
from zarrseg.cli import main
from zarrseg.methods.unet.checkpoint import save_checkpoint
from zarrseg.methods.unet.models import ModelConfig, build_model
from zarrseg.normalize import Normalization


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("method", ["intensity", "model"])
def test_nan_or_inf_voxels_are_refused(tmp_path, rng, capsys, bad, method):
    data = rng.normal(100, 10, size=(4, 40, 40)).astype(np.float32)
    data[2, 30, 7] = bad
    img = write_image(tmp_path / "img.ome.zarr", data, chunks=(2, 16, 16))
    out = tmp_path / "pred.ome.zarr"
    args = ["predict", img, "-o", str(out), "--set", f"method={method}"]
    if method == "model":
        cfg = ModelConfig(ndim=3, f_maps=2, depth=2)
        torch.manual_seed(0)
        save_checkpoint(tmp_path / "m.pt", build_model(cfg).eval(), cfg, Normalization(), "boundaries", {})
        args += ["--checkpoint", str(tmp_path / "m.pt"), "--set", "num_workers=0"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "img.ome.zarr" in err and "1 of 6400 voxels are NaN or Inf" in err
    assert not out.exists() and not ome.partial_path(out).exists()


def test_finite_float_image_still_predicts(tmp_path, rng):
    data = rng.normal(100, 10, size=(40, 40)).astype(np.float32)
    img = write_image(tmp_path / "img.ome.zarr", data)
    out = tmp_path / "pred.ome.zarr"
    assert main(["predict", img, "-o", str(out)]) == 0
    assert np.isfinite(ome.open_image(out).data[...]).all()

"""A killed 'zarrseg predict' resumes: the rerun redoes only unfinished blocks and equals an uninterrupted run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import write_image

from zarrseg import ome
from zarrseg.methods.unet.checkpoint import save_checkpoint
from zarrseg.methods.unet.models import ModelConfig, build_model
from zarrseg.normalize import Normalization
from zarrseg.params import load_params
from zarrseg.predict import intensity
from zarrseg.predict import tiled as inference
from zarrseg.predict.params import PredictParams
from zarrseg.predict.stage import predict


class Crash(RuntimeError):
    pass


def _image(path, data):
    return write_image(path, data, "zyx", (4, 16, 16))


def _count_calls(monkeypatch, owner, name, crash_at=None):
    """Wrap ``owner.name`` to count calls and raise ``Crash`` on call number ``crash_at``."""
    original = getattr(owner, name)
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if crash_at is not None and len(calls) == crash_at:
            raise Crash("simulated kill")
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


@pytest.fixture
def unet_job(tmp_path, rng):
    torch.manual_seed(0)
    cfg = ModelConfig(ndim=3, f_maps=2, depth=2, norm="batch")
    save_checkpoint(
        tmp_path / "m.pt",
        build_model(cfg).eval(),
        cfg,
        Normalization(method="meanstd"),
        "boundaries",
        {"patch_shape": [8, 16, 16]},
    )
    img = _image(tmp_path / "img.ome.zarr", (rng.random((8, 48, 32)) * 255).astype(np.uint8))
    params = load_params(
        PredictParams, {"method": "unet", "block_shape": [8, 16, 16], "num_workers": 0, "chunks": [8, 16, 16]}
    )
    return img, tmp_path / "m.pt", params


def test_unet_predict_resumes_after_a_crash(tmp_path, unet_job, monkeypatch):
    img, ckpt, params = unet_job
    ref = predict(img, tmp_path / "ref.ome.zarr", params, ckpt)
    n_blocks = ref["blocks"]
    assert n_blocks == 6 and ref["computed_blocks"] == n_blocks and not ref["resumed"]

    out = tmp_path / "out.ome.zarr"
    with monkeypatch.context() as m:
        _count_calls(m, inference.TiledPredictor, "predict_block", crash_at=4)
        with pytest.raises(Crash):
            predict(img, out, params, ckpt)
    assert not out.exists() and ome.partial_path(out).exists()  # kept for the rerun

    with monkeypatch.context() as m:
        calls = _count_calls(m, inference.TiledPredictor, "predict_block")
        info = predict(img, out, params, ckpt)
    assert info["resumed"] and len(calls) == info["computed_blocks"] == n_blocks - 3
    assert not ome.partial_path(out).exists() and not (out / "_work").exists()
    np.testing.assert_array_equal(
        ome.open_image(out).data[...], ome.open_image(tmp_path / "ref.ome.zarr").data[...]
    )


def test_changed_parameters_start_over(tmp_path, unet_job, monkeypatch):
    img, ckpt, params = unet_job
    out = tmp_path / "out.ome.zarr"
    with monkeypatch.context() as m:
        _count_calls(m, inference.TiledPredictor, "predict_block", crash_at=3)
        with pytest.raises(Crash):
            predict(img, out, params, ckpt)
    params.overlap = 0.25  # another job: the partial output must not be reused
    info = predict(img, out, params, ckpt)
    assert not info["resumed"] and info["computed_blocks"] == info["blocks"]


def test_intensity_predict_resumes(tmp_path, rng, monkeypatch):
    img = _image(tmp_path / "img.ome.zarr", (rng.random((8, 64, 64)) * 255).astype(np.uint8))
    params = load_params(
        PredictParams,
        {
            "sigma": 1.0,
            "block_shape": [8, 16, 16],
            "chunks": [8, 16, 16],
            "dask": {"scheduler": "synchronous"},
        },
    )
    predict(img, tmp_path / "ref.ome.zarr", params)
    out = tmp_path / "out.ome.zarr"
    with monkeypatch.context() as m:
        _count_calls(m, intensity._IntensityBlock, "__call__", crash_at=10)
        with pytest.raises(Crash):
            predict(img, out, params)
    with monkeypatch.context() as m:
        calls = _count_calls(m, intensity._IntensityBlock, "__call__")
        assert predict(img, out, params)["resumed"]
    assert len(calls) == 16 - 9
    np.testing.assert_array_equal(
        ome.open_image(out).data[...], ome.open_image(tmp_path / "ref.ome.zarr").data[...]
    )

"""The 'intensity' boundary map and blockwise normalisation statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_image
from scipy import ndimage

from zarrseg import ome
from zarrseg.cli import main
from zarrseg.normalize import Normalization, array_stats, volume_stats


def _write(path, data, axes, scale=None, chunks=(8, 16, 16)):
    write_image(path, data, axes, chunks, scale=scale)
    return path


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_blockwise_percentiles_match_numpy(tmp_path, rng, dtype):
    data = (rng.gamma(2.0, 300.0, size=(13, 37, 29))).astype(dtype)
    view = ome.SpatialView.of(ome.open_image(_write(tmp_path / "a.ome.zarr", data, "zyx")))
    norm = Normalization(lower=2.0, upper=98.5)
    got = volume_stats(view, norm, block_shape=(5, 16, 11))
    ref = array_stats(data, norm)
    assert got.count == data.size
    assert got.mean == pytest.approx(ref.mean, rel=1e-9)
    assert got.std == pytest.approx(ref.std, rel=1e-6)
    tol = 0.0 if dtype != np.float32 else (data.max() - data.min()) / 65536
    assert abs(got.low - ref.low) <= tol + 1e-9
    assert abs(got.high - ref.high) <= tol + 1e-9


def _reference(data, lower, upper, sigma, invert):
    lo, hi = np.percentile(data.astype(np.float64), [lower, upper])
    y = (data.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo)
    if sigma:
        y = ndimage.gaussian_filter(y, sigma, mode="reflect", truncate=4.0)
    if invert:
        y = 1 - y
    return np.clip(y, 0, 1)


@pytest.mark.parametrize("sigma,invert", [(0.0, False), (1.5, True)])
def test_intensity_matches_whole_array_reference(tmp_path, rng, sigma, invert):
    data = ndimage.gaussian_filter(rng.random((2, 20, 45, 38)), 1.0)  # c z y x, channel 1 is the stain
    data = (data * 4000).astype(np.uint16)
    img = _write(tmp_path / "img.ome.zarr", data, "czyx", scale=[1.0, 0.5, 0.2, 0.2], chunks=(8, 16, 16))
    out = tmp_path / "bd.ome.zarr"
    params = {
        "channel": 1,
        "sigma": sigma,
        "invert": invert,
        "block_shape": [8, 16, 16],
        "chunks": [8, 16, 16],
        "normalization": {"lower": 1.0, "upper": 99.0},
    }
    assert main(["predict", str(img), "-o", str(out), "--params", json.dumps(params)]) == 0
    got = ome.open_image(out)
    assert got.axes == "zyx"
    assert got.scale == (0.5, 0.2, 0.2)
    result = got.data[...]
    assert result.dtype == np.float32
    ref = _reference(data[1], 1.0, 99.0, sigma, invert)
    np.testing.assert_allclose(result, ref, atol=2e-6)
    assert 0.0 <= result.min() and result.max() <= 1.0


def test_intensity_2d_and_bad_inputs(tmp_path, rng, capsys):
    data = (rng.random((40, 50)) * 255).astype(np.uint8)
    img = _write(tmp_path / "img2d.ome.zarr", data, "yx", chunks=(16, 16))
    out = tmp_path / "bd.ome.zarr"
    assert main(["predict", str(img), "-o", str(out), "--set", "invert=true"]) == 0
    np.testing.assert_allclose(ome.open_image(out).data[...], _reference(data, 1, 99, 0, True), atol=2e-6)
    # user errors: one line naming the file, exit code 2, nothing written
    assert main(["predict", str(tmp_path / "missing.ome.zarr"), "-o", str(tmp_path / "x.ome.zarr")]) == 2
    assert "missing.ome.zarr" in capsys.readouterr().err
    assert main(["predict", str(img), "-o", str(tmp_path / "y.ome.zarr"), "--set", "sigmaa=1"]) == 2
    assert "did you mean 'sigma'" in capsys.readouterr().err
    assert not (tmp_path / "x.ome.zarr").exists() and not (tmp_path / "y.ome.zarr").exists()

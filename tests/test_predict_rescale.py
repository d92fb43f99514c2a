"""Predicting at the model's voxel size: blockwise resampling in and out, warnings, provenance, resume."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from conftest import unet_checkpoint, write_image

from zarrseg import ome
from zarrseg.learn.checkpoint import Loaded, ModelIO
from zarrseg.methods.unet.models import ModelConfig, receptive_field
from zarrseg.normalize import Normalization, apply, array_stats
from zarrseg.params import load_params
from zarrseg.predict import tiled
from zarrseg.predict.params import PredictParams
from zarrseg.predict.rescale import Resampling, resample
from zarrseg.predict.stage import predict


def _params(**kw) -> PredictParams:
    return load_params(PredictParams, {"method": "model", "num_workers": 0, "margin": 0.25, **kw})


def _unet(path, cfg, voxel_size, patch):
    return unet_checkpoint(path, cfg, patch=patch, voxel_size=voxel_size)


def _whole_rescaled(model, data, ratio):
    """Reference: normalise, resample the whole image to the model grid, one forward, resample back."""
    norm = Normalization("meanstd")
    x = apply(data, array_stats(data, norm), norm)
    res = Resampling(data.shape, tuple(ratio))
    img_box = tuple(slice(0, n) for n in data.shape)
    mod_box = tuple(slice(0, n) for n in res.model_shape)
    xm = resample(x, img_box, mod_box, ratio)
    with torch.no_grad():
        ym = torch.sigmoid(model(torch.from_numpy(xm)[None, None])).numpy()[0, 0]
    return resample(ym, mod_box, img_box, [1 / r for r in ratio], reduce="max")  # a boundary map


@pytest.mark.parametrize(
    ("image_voxel", "model_voxel"),
    [
        ([0.5, 0.4], [0.25, 0.3]),
        ([0.2, 0.2], [0.3, 0.5]),
    ],  # model finer (upsampled input) / coarser (anti-aliased)
)
def test_rescaled_tiles_equal_a_whole_rescaled_forward_for_any_blocks(
    tmp_path, rng, image_voxel, model_voxel
):
    cfg = ModelConfig(ndim=2, f_maps=4, depth=2, norm="batch")
    assert receptive_field(cfg) // 2 <= 12  # fits in the margin (0.25 * 48)
    model = _unet(tmp_path / "m.pt", cfg, model_voxel, [48, 48])
    data = (rng.random((72, 90)) * 200).astype(np.uint8)  # model grids 144 x 150 and 48 x 36
    img = write_image(tmp_path / "img.ome.zarr", data, chunks=(32, 32), scale=image_voxel)
    outs = []
    for i, block in enumerate(([32, 32], [64, 96])):
        out = tmp_path / f"p{i}.ome.zarr"
        info = predict(img, out, _params(block_shape=block), tmp_path / "m.pt")
        assert info["rescale"]["applied"]
        outs.append(ome.open_image(out))
    got = outs[0].data[...]
    assert got.shape == data.shape and outs[0].spatial_scale == tuple(image_voxel)
    np.testing.assert_allclose(outs[1].data[...], got, atol=1e-5)  # no seams between blocks
    ratio = [m / i for m, i in zip(model_voxel, image_voxel, strict=True)]
    np.testing.assert_allclose(got, _whole_rescaled(model, data, ratio), atol=1e-4)
    rec = outs[0].attrs["zarrseg"]["rescale"]
    assert (
        rec["applied"] and rec["factors"] == pytest.approx(ratio) and rec["model_voxel_size"] == model_voxel
    )
    assert rec["output_reduce"] == "max"


def test_boundaries_keep_their_strength_on_a_coarser_grid():
    """A membrane one model voxel thick, sampled onto a 2x coarser grid: the maximum keeps it, the mean halves it."""
    fine = np.zeros((8, 40), np.float32)
    fine[:, 21] = 1.0
    src, dst = (slice(0, 8), slice(0, 40)), (slice(0, 8), slice(0, 20))
    kept = resample(fine, src, dst, [1, 2], reduce="max")
    diluted = resample(fine, src, dst, [1, 2])
    assert kept.max() == pytest.approx(1.0) and diluted.max() < 0.6
    assert kept[0, 10] == pytest.approx(1.0) and np.flatnonzero(kept[0]).tolist() == [10, 11]  # stays thin
    sub = (slice(2, 6), slice(5, 15))  # a block reading only its support gets the same values
    np.testing.assert_allclose(
        resample(fine[:, 9:31], (slice(0, 8), slice(9, 31)), sub, [1, 2], "max"), kept[sub]
    )


class _Diff(torch.nn.Module):
    """y[..., i] = x[..., i + 1] - x[..., i] along x: the slope per voxel of the grid the model sees."""

    def forward(self, x):
        d = x[..., 1:] - x[..., :-1]
        return torch.cat([d, d[..., -1:]], dim=-1)


def _loaded(voxel_size) -> Loaded:
    io = ModelIO(
        kind="embeddings", channels=1, activation="identity", ndim=3, divisor=[1, 1, 1], tile=[4, 16, 16]
    )
    return Loaded(_Diff(), "test", {}, io, Normalization("none"), voxel_size=voxel_size)


def _run(tmp_path, name, data, scale, voxel_size, **kw):
    img = ome.open_image(write_image(tmp_path / f"{name}_in.ome.zarr", data, chunks=(4, 16, 16), scale=scale))
    out = tmp_path / f"{name}.ome.zarr"
    info = tiled.predict_model(img, out, _params(block_shape=[4, 24, 24], **kw), _loaded(voxel_size))
    return ome.open_image(out).data[...], info["rescale"]


def test_the_model_sees_its_own_voxel_size_and_the_output_lands_on_the_image_grid(tmp_path, caplog):
    z, y, x = np.meshgrid(np.arange(6), np.arange(40), np.arange(50), indexing="ij")
    data = (3.0 * x + 0.5 * y + z).astype(np.float32)  # slope 3 per image voxel along x
    # the model was trained at 0.25 µm, the image is at 0.5 µm: the model grid is 2x finer in y and x
    got, rec = _run(tmp_path, "fine", data, [1.0, 0.5, 0.5], [1.01, 0.25, 0.25])  # z within 2 %: copied
    assert rec["applied"] and rec["model_grid_shape"] == [6, 80, 100] and rec["factors"] == [1.0, 0.5, 0.5]
    np.testing.assert_allclose(got[:, 1:-1, 1:-2], 1.5, atol=1e-4)  # slope per model voxel
    # 1.5x coarser model grid (anti-aliased): slope 4.5 per model voxel away from the borders
    got, rec = _run(tmp_path, "coarse", data, [1.0, 0.5, 0.5], [1.0, 0.75, 0.75])
    assert rec["model_grid_shape"] == [6, 27, 33]
    np.testing.assert_allclose(got[:, 4:-4, 4:-4], 4.5, atol=1e-3)

    caplog.set_level(logging.INFO, "zarrseg")
    caplog.clear()
    got, rec = _run(tmp_path, "off", data, [1.0, 0.5, 0.5], [1.0, 0.25, 0.25], rescale=False)
    assert not rec["applied"] and rec["reason"] == "predict.rescale is off"
    np.testing.assert_allclose(got[..., :-1], 3.0, atol=1e-4)  # the image grid as is
    assert any(r.levelno == logging.WARNING and "by up to 2.00x" in r.getMessage() for r in caplog.records)

    caplog.clear()
    _, rec = _run(tmp_path, "near", data, [1.0, 0.5, 0.5], [1.0, 0.4, 0.4], rescale=False)  # 1.25x: info only
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)

    caplog.clear()
    got, rec = _run(tmp_path, "unknown", data, [1.0, 1.0, 1.0], [1.0, 0.25, 0.25])  # the 1 µm fallback
    assert not rec["applied"] and "unknown" in rec["reason"] and rec["image_voxel_size"] is None
    assert any(
        r.levelno == logging.WARNING and "VOXEL SIZE UNKNOWN" in r.getMessage() for r in caplog.records
    )
    np.testing.assert_allclose(got[..., :-1], 3.0, atol=1e-4)

    _, rec = _run(tmp_path, "same", data, [1.0, 0.5, 0.5], [1.0, 0.505, 0.5])  # within 2 %: not resampled
    assert not rec["applied"] and "agree" in rec["reason"]
    _, rec = _run(tmp_path, "old", data, [1.0, 0.5, 0.5], None)  # a checkpoint without a voxel size
    assert not rec["applied"] and rec["model_voxel_size"] is None


def test_a_rescaled_run_resumes_after_a_crash(tmp_path, rng, monkeypatch):
    cfg = ModelConfig(ndim=3, f_maps=2, depth=2, norm="batch")
    _unet(tmp_path / "m.pt", cfg, [1.0, 0.3, 0.3], [8, 16, 16])
    img = write_image(
        tmp_path / "img.ome.zarr", (rng.random((8, 20, 16)) * 255).astype(np.uint8), scale=[1, 0.6, 0.6]
    )
    params = _params(block_shape=[8, 8, 8], chunks=[8, 8, 8])
    ref = predict(img, tmp_path / "ref.ome.zarr", params, tmp_path / "m.pt")
    assert ref["blocks"] == 6 and ref["rescale"]["applied"]

    original, calls = tiled.TiledPredictor.predict_block, []

    def crash_at_4(self, *args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original(self, *args)

    out = tmp_path / "out.ome.zarr"
    with monkeypatch.context() as m:
        m.setattr(tiled.TiledPredictor, "predict_block", crash_at_4)
        with pytest.raises(KeyboardInterrupt):
            predict(img, out, params, tmp_path / "m.pt")
    info = predict(img, out, params, tmp_path / "m.pt")
    assert info["resumed"] and info["computed_blocks"] == 3
    np.testing.assert_array_equal(
        ome.open_image(out).data[...], ome.open_image(tmp_path / "ref.ome.zarr").data[...]
    )


def test_training_records_the_voxel_size_of_its_images(tmp_path, rng):
    from conftest import unet_params, voronoi_cells

    from zarrseg.learn.checkpoint import load
    from zarrseg.methods.unet.method import train
    from zarrseg.methods.unet.train_params import TrainParams

    labels = voronoi_cells(rng, (3, 40, 40), 12)
    image = (np.where(np.roll(labels, 1, 2) != labels, 200, 50) + rng.normal(0, 5, labels.shape)).astype(
        np.float32
    )
    img = write_image(tmp_path / "img.ome.zarr", image, scale=[2.0, 0.3, 0.3])
    lab = write_image(tmp_path / "lab.ome.zarr", labels, is_label=True, scale=[2.0, 0.3, 0.3])
    params = load_params(
        TrainParams,
        unet_params(img, lab, val_roi=None, loop={"steps": 2, "threads": 1, "tensorboard": False}),
    )
    train(params, tmp_path / "model")
    assert load(tmp_path / "model" / "best.pt").voxel_size == [0.3, 0.3]  # a 2D model: its y and x


def test_the_shipped_ovule_model_records_its_training_voxel_size():
    from conftest import REPO

    from zarrseg.learn.checkpoint import load

    path = REPO / "src" / "zarrseg" / "methods" / "unet" / "pretrained" / "ovule_boundaries_3d.pt"
    assert load(path).voxel_size == [0.235, 0.15, 0.15]  # sample_ovule.h5 element_size_um

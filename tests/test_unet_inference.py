"""Tiled, blended U-Net inference: equals whole-image prediction, no seams, bad checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import write_image

from zarrseg import ome
from zarrseg.cli import main
from zarrseg.methods.unet.checkpoint import load_checkpoint, save_checkpoint
from zarrseg.methods.unet.models import ModelConfig, build_model, receptive_field
from zarrseg.normalize import Normalization, apply, array_stats
from zarrseg.predict.tiled import TilePlan


def _model(cfg: ModelConfig, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():  # non-trivial BatchNorm statistics so eval-mode norm is not the identity
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _checkpoint(path, cfg, norm=None, patch=None, seed=0):
    model = _model(cfg, seed)
    save_checkpoint(
        path,
        model,
        cfg,
        norm or Normalization(method="meanstd"),
        "boundaries",
        {"patch_shape": patch or [64] * cfg.ndim},
    )
    return model


def _image(path, data, axes, chunks):
    return write_image(path, data, axes, chunks)


def _predict(img, out, checkpoint, *settings: str, params: str | None = None) -> int:
    """``zarrseg predict`` through the CLI with ``--set`` overrides (and optional ``--params``)."""
    args = ["predict", str(img), "-o", str(out), "--checkpoint", str(checkpoint)]
    args += ["--params", params] if params else []
    for setting in settings:
        args += ["--set", setting]
    return main(args)


def _whole(model, data, norm):
    x = apply(data, array_stats(data, norm), norm)
    with torch.no_grad():
        return torch.sigmoid(model(torch.from_numpy(x)[None, None])).numpy()[0, 0]


@pytest.mark.parametrize("blend", ["gaussian", "cosine"])
def test_tiled_2d_equals_whole_image(tmp_path, rng, blend):
    cfg = ModelConfig(ndim=2, f_maps=4, depth=3, norm="batch")
    assert receptive_field(cfg) // 2 <= 32  # fits in the margin below (0.25 * 128)
    model = _checkpoint(tmp_path / "m.pt", cfg)
    data = (rng.random((320, 256)) * 200).astype(np.uint8)
    img = _image(tmp_path / "img.ome.zarr", data, "yx", (64, 64))
    out = tmp_path / "pred.ome.zarr"
    params = {
        "method": "unet",
        "tile_shape": [128, 128],
        "overlap": 0.5,
        "margin": 0.25,
        "blend": blend,
        "block_shape": [96, 160],
        "batch_size": 3,
        "num_workers": 1,
    }
    assert _predict(img, out, tmp_path / "m.pt", params=json.dumps(params)) == 0
    got = ome.open_image(out).data[...]
    ref = _whole(model, data, Normalization(method="meanstd"))
    assert got.shape == data.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_no_seams_3d_gaussian_blend(tmp_path, rng):
    """With a small margin the model sees zero padding inside tiles; blending must still leave no seams."""
    cfg = ModelConfig(ndim=3, f_maps=2, depth=2, norm="batch")
    _checkpoint(tmp_path / "m.pt", cfg, patch=[16, 32, 32])
    z, y, x = np.meshgrid(np.arange(24), np.arange(64), np.arange(64), indexing="ij")
    data = (100 + 50 * np.sin(x / 5.0) * np.cos(y / 7.0) + 20 * np.sin(z / 3.0)).astype(np.float32)
    img = _image(tmp_path / "img.ome.zarr", data, "zyx", (8, 32, 32))
    out = tmp_path / "pred.ome.zarr"
    assert (
        _predict(
            img,
            out,
            tmp_path / "m.pt",
            "method=unet",
            "margin=0.0",
            "num_workers=0",
            "block_shape=[16,40,24]",
            "dtype=float16",
        )
        == 0
    )
    pred = ome.open_image(out).data[...].astype(np.float32)
    assert pred.dtype == np.float32 and np.isfinite(pred).all()
    # seams would show as jumps across tile borders larger than the smooth signal's own jumps
    plan = TilePlan.create(data.shape, [16, 32, 32], 0.5, 0.0, "gaussian", cfg)
    for axis in (1, 2):
        steps = np.abs(np.diff(pred, axis=axis))
        borders = sorted(
            {s for s in plan.starts[axis] if s > 0}
            | {s + plan.tile[axis] for s in plan.starts[axis] if s + plan.tile[axis] < data.shape[axis]}
        )
        at_borders = np.take(steps, [b - 1 for b in borders], axis=axis).max()
        typical = np.percentile(steps, 99.9)
        assert at_borders <= typical + 1e-3


def test_3d_tiled_equals_whole_and_small_axes(tmp_path, rng):
    """3D; z smaller than the tile (tile clipped to the volume); anisotropic pooling."""
    cfg = ModelConfig(ndim=3, f_maps=2, depth=2, norm="none", layer_order="cr", pool_z=False)
    model = _checkpoint(tmp_path / "m.pt", cfg, norm=Normalization(method="percentile"), patch=[32, 48, 48])
    data = rng.normal(size=(12, 72, 96)).astype(np.float32)
    img = _image(tmp_path / "img.ome.zarr", data, "zyx", (6, 32, 32))
    out = tmp_path / "pred.ome.zarr"
    assert _predict(img, out, tmp_path / "m.pt", "method=unet", "margin=0.25", "num_workers=0") == 0
    got = ome.open_image(out).data[...]
    norm = Normalization(method="percentile")
    x = apply(data, array_stats(data, norm), norm)
    with torch.no_grad():
        ref = torch.sigmoid(model(torch.from_numpy(x)[None, None])).numpy()[0, 0]
    # float histogram percentiles differ from numpy's by < 1 bin: compare at a matching tolerance
    np.testing.assert_allclose(got, ref, atol=1e-3)


def test_bad_checkpoints(tmp_path, rng, capsys):
    data = (rng.random((32, 32)) * 255).astype(np.uint8)
    img = _image(tmp_path / "img.ome.zarr", data, "yx", (32, 32))
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint at all")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    for name in ("missing.pt", "corrupt.pt", "foreign.pt"):
        out = tmp_path / f"out_{name}.ome.zarr"
        code = _predict(img, out, tmp_path / name, "method=unet")
        err = capsys.readouterr().err
        assert code == 2, err
        assert name in err and len(err.strip().splitlines()) == 1
        assert not out.exists() and not ome.partial_path(out).exists()


def test_checkpoint_round_trip_and_torchscript(tmp_path):
    from zarrseg.methods.unet.checkpoint import export_torchscript, slim_checkpoint

    cfg = ModelConfig(name="residual_unet", ndim=3, f_maps=4, depth=2, norm="group", num_groups=2)
    model = _checkpoint(tmp_path / "m.pt", cfg, norm=Normalization(method="percentile", lower=2, upper=98))
    loaded = load_checkpoint(slim_checkpoint(tmp_path / "m.pt", tmp_path / "slim.pt"))
    assert loaded.config == cfg
    assert loaded.normalization == Normalization(method="percentile", lower=2, upper=98)
    x = torch.randn(1, 1, 8, 24, 16)  # not the traced example shape
    with torch.no_grad():
        np.testing.assert_array_equal(loaded.model(x).numpy(), model(x).numpy())
        scripted = torch.jit.load(str(export_torchscript(tmp_path / "m.pt", tmp_path / "m.ts", [4, 8, 8])))
        np.testing.assert_allclose(scripted(x).numpy(), model(x).numpy(), atol=1e-6)


def test_2d_model_over_a_stack_is_slicewise(tmp_path, rng):
    cfg = ModelConfig(ndim=2, f_maps=4, depth=3, norm="batch")
    model = _checkpoint(tmp_path / "m.pt", cfg, patch=[64, 64])
    data = (rng.random((3, 96, 128)) * 200).astype(np.uint8)
    img = _image(tmp_path / "img.ome.zarr", data, "zyx", (1, 64, 64))
    out = tmp_path / "pred.ome.zarr"
    assert _predict(img, out, tmp_path / "m.pt", "method=unet", "margin=0.25", "num_workers=0") == 0
    got = ome.open_image(out).data[...]
    norm = Normalization(method="meanstd")
    x = apply(data, array_stats(data, norm), norm)  # statistics of the whole stack, as predict computes them
    with torch.no_grad():
        ref = torch.sigmoid(model(torch.from_numpy(x)[:, None])).numpy()[:, 0]
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_a_checkpoint_given_runs_the_model_unless_a_method_is_set(tmp_path, rng):
    cfg = ModelConfig(ndim=2, f_maps=4, depth=2, norm="batch")
    model = _checkpoint(tmp_path / "m.pt", cfg)
    data = (rng.random((64, 64)) * 200).astype(np.uint8)
    img = _image(tmp_path / "img.ome.zarr", data, "yx", (64, 64))
    assert _predict(img, tmp_path / "model.ome.zarr", tmp_path / "m.pt", "tile_shape=[64,64]") == 0
    norm = Normalization(method="meanstd")
    got = ome.open_image(tmp_path / "model.ome.zarr").data[:]
    np.testing.assert_allclose(got.reshape(data.shape), _whole(model, data, norm), atol=1e-4)
    # method set explicitly: the checkpoint is ignored (with a warning), the stain itself is the map
    assert _predict(img, tmp_path / "stain.ome.zarr", tmp_path / "m.pt", "method=intensity") == 0
    stain = ome.open_image(tmp_path / "stain.ome.zarr").data[:]
    assert np.corrcoef(stain.ravel(), data.ravel().astype(float))[0, 1] > 0.99

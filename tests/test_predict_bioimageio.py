"""BioImage.IO packages through ``zarrseg predict``: our exports round-trip, foreign layouts, offline ids."""

from __future__ import annotations

import hashlib
import shutil
import textwrap

import numpy as np
import pytest
import torch
import yaml
from conftest import write_image

from zarrseg import ome
from zarrseg.cli import main
from zarrseg.methods.unet.checkpoint import save_checkpoint
from zarrseg.methods.unet.export import export_bioimageio
from zarrseg.methods.unet.models import ModelConfig, build_model
from zarrseg.normalize import Normalization, array_stats
from zarrseg.predict.bioimageio import load_package

pytest.importorskip("bioimageio.spec")


def _predict(img, out, model, *settings) -> int:
    args = ["predict", str(img), "-o", str(out), "--checkpoint", str(model), "--set", "method=model"]
    for s in ("num_workers=0", "margin=0.25", *settings):
        args += ["--set", s]
    return main(args)


def test_exported_packages_predict_what_their_checkpoint_predicts(tmp_path, rng):
    cfg = ModelConfig(ndim=3, f_maps=2, depth=2, norm="batch")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    norm = Normalization("percentile", 2, 98)
    save_checkpoint(
        tmp_path / "m.pt",
        model,
        cfg,
        norm,
        "boundaries",
        {"patch_shape": [8, 16, 16]},
        voxel_size=[0.5, 0.15, 0.15],
    )
    export_bioimageio(tmp_path / "m.pt", tmp_path / "pkg")
    shutil.make_archive(str(tmp_path / "pkg"), "zip", tmp_path / "pkg")
    # 2x coarser in y and x than the model: every source rescales (the package's axis scales carry the voxel size)
    data = (rng.random((10, 30, 26)) * 255).astype(np.uint8)
    img = write_image(tmp_path / "img.ome.zarr", data, scale=[0.5, 0.3, 0.3])
    preds = {}
    for name, source in (("ckpt", "m.pt"), ("folder", "pkg"), ("zip", "pkg.zip"), ("yaml", "pkg/rdf.yaml")):
        assert _predict(img, tmp_path / f"{name}.ome.zarr", tmp_path / source) == 0
        out = ome.open_image(tmp_path / f"{name}.ome.zarr")
        assert out.attrs["zarrseg"]["rescale"]["applied"], name
        preds[name] = out.data[...]
    for name in ("folder", "zip", "yaml"):
        assert np.abs(preds[name] - preds["ckpt"]).max() <= 1e-5, name

    # the package's own test: its test input, per-sample preprocessing, the loaded weights -> its test output
    loaded = load_package(tmp_path / "pkg")
    assert loaded.voxel_size == pytest.approx([0.5, 0.15, 0.15]) and loaded.io.tile == [8, 16, 16]
    x = np.load(tmp_path / "pkg" / "test_input.npy")
    xp = loaded.preprocessing(x[0, 0], array_stats(x[0, 0], loaded.preprocessing.stats_normalization), 0)
    with torch.no_grad():
        y = torch.sigmoid(loaded.module(torch.from_numpy(xp)[None, None])).numpy()
    np.testing.assert_allclose(y, np.load(tmp_path / "pkg" / "test_output.npy"), atol=1e-5)


ARCH = textwrap.dedent(
    """
    import torch

    class XYC(torch.nn.Module):
        '''Takes (batch, x, y, channel), returns (batch, channel, y, x) logits of a 3x3 convolution.'''

        def __init__(self, out_channels):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, out_channels, 3, padding=1)

        def forward(self, x):
            return self.conv(x.permute(0, 3, 2, 1))
    """
)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _foreign_package(root, weights: str = "pytorch_state_dict", size=None):
    """A package unlike ours: input axes (batch, x, y, channel), sizes 20 + 8k, scale_linear -> scale_range
    -> clip preprocessing, two softmax output channels (batch, channel, y, x) with a halo of 2, nm units."""
    root.mkdir()
    ns: dict = {}
    exec(ARCH, ns)
    torch.manual_seed(3)
    net = ns["XYC"](2).eval()
    (root / "arch.py").write_text(ARCH)
    torch.save(net.state_dict(), root / "weights.pt")
    np.save(root / "in.npy", np.zeros((1, 20, 20, 1), np.float32))
    np.save(root / "out.npy", np.zeros((1, 2, 20, 20), np.float32))
    (root / "onnx.bin").write_bytes(b"not really onnx")
    space = [
        {
            "type": "space",
            "id": a,
            "size": size or {"min": 20, "step": 8},
            "scale": 200.0,
            "unit": "nanometer",
        }
        for a in "xy"
    ]
    weight_entries = {
        "pytorch_state_dict": {
            "source": "weights.pt",
            "sha256": _sha(root / "weights.pt"),
            "architecture": {
                "source": "arch.py",
                "sha256": _sha(root / "arch.py"),
                "callable": "XYC",
                "kwargs": {"out_channels": 2},
            },
            "pytorch_version": "2.0",
        },
        "onnx": {"source": "onnx.bin", "sha256": _sha(root / "onnx.bin"), "opset_version": 15},
    }
    rdf = {
        "type": "model",
        "format_version": "0.5.3",
        "name": "foreign xyc model",
        "description": "a hand-written test package",
        "authors": [{"name": "Test"}],
        "cite": [{"text": "none", "doi": "10.1000/182"}],
        "license": "MIT",
        "timestamp": "2024-01-01T00:00:00",
        "inputs": [
            {
                "id": "image",
                "axes": [{"type": "batch"}, *space, {"type": "channel", "channel_names": ["membranes"]}],
                "test_tensor": {"source": "in.npy", "sha256": _sha(root / "in.npy")},
                "preprocessing": [
                    {"id": "scale_linear", "kwargs": {"gain": 2.0, "offset": 3.0}},
                    {
                        "id": "scale_range",
                        "kwargs": {"axes": ["x", "y"], "min_percentile": 5.0, "max_percentile": 95.0},
                    },
                    {"id": "clip", "kwargs": {"min": 0.0, "max": 1.0}},
                ],
            }
        ],
        "outputs": [
            {
                "id": "classes",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": ["inside", "boundary"]},
                    *[
                        {
                            "type": "space",
                            "id": a,
                            "size": {"tensor_id": "image", "axis_id": a},
                            "halo": 2,
                            "scale": 200.0,
                            "unit": "nanometer",
                        }
                        for a in "yx"
                    ],
                ],
                "test_tensor": {"source": "out.npy", "sha256": _sha(root / "out.npy")},
                "postprocessing": [{"id": "softmax", "kwargs": {"axis": "channel"}}],
            }
        ],
        "weights": {weights: weight_entries[weights]},
    }
    (root / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    return net


def test_a_package_with_other_axes_preprocessing_and_halo(tmp_path, rng):
    net = _foreign_package(tmp_path / "pkg")
    loaded = load_package(tmp_path / "pkg")
    io = loaded.io
    assert (io.ndim, io.in_channels, io.channels, io.activation, io.halo) == (2, 1, 2, "softmax", [2, 2])
    assert loaded.voxel_size == pytest.approx([0.2, 0.2])
    data = (rng.random((60, 52)) * 255).astype(np.uint8)
    img = write_image(tmp_path / "img.ome.zarr", data, chunks=(32, 32), scale=[0.2, 0.2])
    # whole-image reference: the declared chain with whole-volume statistics, one forward, softmax
    p5, p95 = np.percentile(data.astype(np.float64), [5, 95])
    x = np.clip((2.0 * data + 3.0 - (2 * p5 + 3)) / (2 * (p95 - p5) + 1e-6), 0, 1).astype(np.float32)
    with torch.no_grad():
        ref = torch.softmax(net(torch.from_numpy(x.T.copy())[None, :, :, None]), dim=1).numpy()[0]
    assert (
        _predict(img, tmp_path / "a.ome.zarr", tmp_path / "pkg", "tile_shape=[28,28]", "block_shape=[32,32]")
        == 0
    )
    got = ome.open_image(tmp_path / "a.ome.zarr")
    assert got.data.shape == (2, 60, 52)
    steps = [
        s["id"] for s in got.attrs["zarrseg"]["preprocessing"] if s["id"] != "ensure_dtype"
    ]  # spec adds casts
    assert steps == ["scale_linear", "scale_range", "clip"]
    np.testing.assert_allclose(got.data[...], ref, atol=1e-5)
    # a tile size the model does not accept (24): padded to 28 inside each tile and cropped back; only the
    # last row / column (reflected padding where the whole image sees the convolution's zeros) differ
    assert _predict(img, tmp_path / "b.ome.zarr", tmp_path / "pkg", "tile_shape=[24,24]") == 0
    np.testing.assert_allclose(
        ome.open_image(tmp_path / "b.ome.zarr").data[:, :-1, :-1], ref[:, :-1, :-1], atol=1e-5
    )


def test_unusable_packages_and_offline_ids_are_one_line_errors(tmp_path, rng, capsys, monkeypatch):
    import httpx

    calls = []

    def no_network(*args, **kwargs):
        calls.append(args)
        raise httpx.ConnectError("offline")

    monkeypatch.setattr(httpx, "get", no_network)
    monkeypatch.setattr(httpx.Client, "send", no_network)
    img = write_image(tmp_path / "img.ome.zarr", (rng.random((32, 32)) * 255).astype(np.uint8), scale=[0.2, 0.2])
    _foreign_package(tmp_path / "onnx_only", weights="onnx")
    _foreign_package(tmp_path / "fixed", size=20)  # takes 20 x 20 tiles only
    (tmp_path / "empty").mkdir()
    cases = [
        ("affable-shark", [], "predict.online: true (nothing was downloaded)"),
        ("onnx_only", [], "no PyTorch weights"),
        ("empty", [], "without rdf.yaml"),
        ("fixed", ["tile_shape=[28,28]"], "exceeds the model's fixed size 20"),
        ("affable-shark", ["online=true"], "not a valid BioImage.IO model package"),
    ]
    for source, settings, message in cases:
        out = tmp_path / "out.ome.zarr"
        path = source if source == "affable-shark" else tmp_path / source
        assert _predict(img, out, path, *settings) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and (source in err or "tile_shape" in err), err
        assert not out.exists() and not ome.partial_path(out).exists()
        if "online=true" not in settings:
            assert not calls  # offline: not even an attempt
    assert calls  # online: the id was looked up (and failed here)
    assert _predict(img, tmp_path / "fixed.ome.zarr", tmp_path / "fixed") == 0  # 20 x 20 tiles over 32 x 32
    assert ome.open_image(tmp_path / "fixed.ome.zarr").data.shape == (2, 32, 32)

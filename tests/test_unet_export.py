"""'zarrseg export': TorchScript equals the torch model; rdf.yaml references existing files with their sha256."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import unet_checkpoint

from zarrseg.cli import main
from zarrseg.methods.unet.export import ExportOptions, export_bioimageio
from zarrseg.methods.unet.models import ModelConfig
from zarrseg.normalize import Normalization


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _checkpoint(path, cfg, norm, patch):
    return unet_checkpoint(path, cfg, norm, patch, seed=1)


def _files(package: Path, rdf: dict) -> list[tuple[Path, str]]:
    refs = [(t["test_tensor"]["source"], t["test_tensor"]["sha256"]) for t in rdf["inputs"] + rdf["outputs"]]
    refs += [(w["source"], w["sha256"]) for w in rdf["weights"].values()]
    return [(package / src, sha) for src, sha in refs]


def test_cli_export_2d_package(tmp_path, capsys):
    cfg = ModelConfig(ndim=2, f_maps=4, depth=3, norm="batch")
    model = _checkpoint(tmp_path / "best.pt", cfg, Normalization(method="meanstd"), [32, 48])
    out = tmp_path / "pkg"
    code = main(
        ["export", str(tmp_path / "best.pt"), "-o", str(out), "--author", "A. Person", "--tag", "ovules"]
    )
    assert code == 0, capsys.readouterr().err
    rdf = yaml.safe_load((out / "rdf.yaml").read_text())
    assert rdf["type"] == "model" and rdf["format_version"].startswith("0.5")
    for key in ("name", "description", "license", "documentation", "cite", "timestamp"):
        assert rdf[key]
    assert rdf["authors"] == [{"name": "A. Person"}] and "ovules" in rdf["tags"]
    assert set(rdf["weights"]) == {"torchscript", "pytorch_state_dict"}
    assert (out / rdf["documentation"]).is_file()
    for path, sha in _files(out, rdf):
        assert path.is_file() and _sha(path) == sha, path
    in_axes = [a.get("id", a["type"]) for a in rdf["inputs"][0]["axes"]]
    assert in_axes == ["batch", "channel", "y", "x"]
    assert rdf["inputs"][0]["axes"][2]["size"] == {"min": 4, "step": 4}
    assert rdf["inputs"][0]["preprocessing"][0]["id"] == "zero_mean_unit_variance"

    # TorchScript == torch model on a random input of another (valid) shape
    scripted = torch.jit.load(str(out / "weights_torchscript.pt"))
    x = torch.randn(2, 1, 40, 24)
    with torch.no_grad():
        np.testing.assert_allclose(scripted(x).numpy(), model(x).numpy(), atol=1e-5)
    # the test tensors are reproduced by the declared pre-/postprocessing and either weight format
    test_in = np.load(out / "test_input.npy")
    assert test_in.shape == (1, 1, 32, 48)
    xin = (test_in - test_in.mean()) / (test_in.std() + 1e-6)
    with torch.no_grad():
        got = torch.sigmoid(scripted(torch.from_numpy(xin.astype(np.float32)))).numpy()
    np.testing.assert_allclose(got, np.load(out / "test_output.npy"), atol=1e-5)
    arch = rdf["weights"]["pytorch_state_dict"]["architecture"]
    module = __import__(arch["import_from"], fromlist=[arch["callable"]])
    rebuilt = getattr(module, arch["callable"])(**arch["kwargs"])
    rebuilt.load_state_dict(torch.load(out / "weights.pt", weights_only=True))
    with torch.no_grad():
        np.testing.assert_array_equal(rebuilt.eval()(x).numpy(), model(x).numpy())


def test_export_3d_percentile_and_bad_inputs(tmp_path, capsys):
    cfg = ModelConfig(ndim=3, f_maps=2, depth=2, norm="group", num_groups=2, pool_z=False)
    _checkpoint(tmp_path / "m.pt", cfg, Normalization(method="percentile", lower=2, upper=98), [8, 16, 16])
    rdf_path = export_bioimageio(tmp_path / "m.pt", tmp_path / "pkg", ExportOptions(test_shape=[3, 8, 8]))
    rdf = yaml.safe_load(rdf_path.read_text())
    pre = rdf["inputs"][0]["preprocessing"][0]
    assert pre["id"] == "scale_range" and pre["kwargs"]["min_percentile"] == 2
    assert rdf["inputs"][0]["axes"][2] == {"type": "space", "id": "z", "size": {"min": 1, "step": 1}}
    assert np.load(tmp_path / "pkg" / "test_output.npy").shape == (1, 1, 3, 8, 8)
    for path, sha in _files(tmp_path / "pkg", rdf):
        assert _sha(path) == sha

    for bad in ("missing.pt", "corrupt.pt"):
        (tmp_path / "corrupt.pt").write_bytes(b"garbage")
        out = tmp_path / f"out_{bad}"
        assert main(["export", str(tmp_path / bad), "-o", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert bad in err and len(err.splitlines()) == 1
        assert not out.exists()
    assert (
        main(["export", str(tmp_path / "m.pt"), "-o", str(tmp_path / "x"), "--test-shape", "3", "8", "7"])
        == 2
    )
    assert "test shape" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_bioimageio_spec_validates_our_packages(tmp_path):
    """Format validation by bioimageio.spec (a dev dependency): 'valid-format' is its best status without
    bioimageio.core's test run, which tests/test_predict_bioimageio.py does with zarrseg's loader."""
    spec = pytest.importorskip("bioimageio.spec")
    cfg = ModelConfig(ndim=3, f_maps=2, depth=2)
    unet_checkpoint(tmp_path / "m.pt", cfg, Normalization(), [8, 16, 16], voxel_size=[0.5, 0.2, 0.2], metrics={"val_arand": 0.25})
    descr = spec.load_description(str(export_bioimageio(tmp_path / "m.pt", tmp_path / "pkg")), perform_io_checks=True)
    summary = descr.validation_summary
    assert summary.status == "valid-format", summary.format()
    assert not [e for d in summary.details for e in d.errors]
    warnings = [w.msg for d in summary.details for w in d.warnings]
    assert all("github_user" in w for w in warnings), warnings  # only what zarrseg cannot know: a GitHub name
    assert [(a.scale, a.unit) for a in descr.inputs[0].axes[2:]] == [(0.5, "micrometer"), (0.2, "micrometer"), (0.2, "micrometer")]
    assert descr.inputs[0].sample_tensor is not None and "Trained at [0.5, 0.2, 0.2]" in (tmp_path / "pkg" / "README.md").read_text()

"""The ``wnet`` method: the nine model types as configurations, training through the learning core
(exact resume after SIGKILL), prediction of every slice of a volume, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_image
from resume_check import assert_same_weights, kill_and_resume

from zarrseg import ome
from zarrseg.cli import main as cli_main
from zarrseg.errors import ConfigError, InputError
from zarrseg.learn.loop import read_csv
from zarrseg.methods.wnet import MODEL_TYPES, WNetParams, model_type_values, train
from zarrseg.params import load_params

LOOP = {"steps": 4, "checkpoint_every": 2, "eval_every": 2, "threads": 1, "device": "cpu", "tensorboard": False}


def two_colours(rng, shape=(32, 32)) -> np.ndarray:
    """(3, H, W) uint8: a red disc on a blue background, with noise."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    disc = (yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 < (shape[0] / 3) ** 2
    rgb = np.where(disc, np.array([200, 40, 40])[:, None, None], np.array([30, 60, 190])[:, None, None])
    return np.clip(rgb + rng.normal(0, 12, rgb.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def rgb_image(tmp_path, rng) -> str:
    return write_image(tmp_path / "rgb.ome.zarr", two_colours(rng), "cyx")


def wnet_params(image: str, **extra) -> dict:
    return {
        "images": [image],
        "model": {"n_classes": 4, "f_maps": 4, "depth": 2},
        "superpixels": {"n_segments": 40},
        "patches": {"sizes": [16, 8], "counts": [8, 8]},
        "epochs": None,
        "loop": LOOP,
        **extra,
    }


def test_the_nine_model_types_are_configurations_of_one_method(tmp_path, rgb_image):
    expected_terms = {"ncut": {"cut"}, "simcon": {"sim", "con"}}
    for name, (_graph, segmentation, reconstruction) in MODEL_TYPES.items():
        values = model_type_values(name)
        params = load_params(WNetParams, wnet_params(rgb_image, beta=0.5, **values, loop={**LOOP, "steps": 1}), where="wnet")
        assert params.model_type == name
        weights = params.weights()
        used = {k for k, v in weights.items() if v}
        assert used == expected_terms[segmentation] | ({"rec"} if reconstruction != "none" else set())
        assert all(weights[k] == 0.5 for k in expected_terms[segmentation])
        train(params, tmp_path / name)
        history = read_csv(tmp_path / name / "history.csv")
        assert {"rec", "cut", "sim", "con"} & set(history[0]) == used, name
        assert np.isfinite(history[0]["loss"])
    with pytest.raises(ConfigError, match="unknown W-Net model type"):
        model_type_values("Sparse-Magic-Patch")


def test_training_lowers_the_loss_and_predicts_through_the_checkpoint(tmp_path, rgb_image):
    from zarrseg.learn.checkpoint import load
    from zarrseg.predict.params import PredictParams
    from zarrseg.predict.stage import predict
    from zarrseg.ssl.cluster import ClusterParams, argmax

    params = load_params(WNetParams, wnet_params(rgb_image, lr=0.01, loop={**LOOP, "steps": 12}), where="wnet")
    summary = train(params, tmp_path / "model")
    assert summary["last_loss"] < summary["first_loss"]
    loaded = load(tmp_path / "model" / "best.pt")
    assert (loaded.io.activation, loaded.io.channels, loaded.io.in_channels) == ("softmax", 4, 3)
    predict(rgb_image, tmp_path / "soft.ome.zarr", PredictParams(method="model", device="cpu"),
            checkpoint=tmp_path / "model" / "best.pt")
    soft = ome.open_image(tmp_path / "soft.ome.zarr").data[...]
    assert soft.shape == (4, 32, 32)
    np.testing.assert_allclose(soft.sum(0), 1.0, rtol=1e-5)
    argmax(tmp_path / "soft.ome.zarr", tmp_path / "labels.ome.zarr", ClusterParams(method="argmax"))
    labels = ome.open_image(tmp_path / "labels.ome.zarr").data[...]
    np.testing.assert_array_equal(labels, soft.argmax(0) + 1)


def test_wnet_resumes_exactly_after_sigkill(tmp_path, rgb_image):
    params = wnet_params(rgb_image, loop={**LOOP, "steps": 6})
    full, resumed = kill_and_resume("wnet", params, tmp_path, kill_after=3)
    assert_same_weights(full, resumed)


def test_one_slice_model_predicts_every_slice_with_the_same_label_ids(tmp_path, rng):
    """Trained on slice 1 of a stack whose slices show the same two materials, the model labels
    every slice, and a material gets the same id in every slice (one model, one set of classes)."""
    from zarrseg.predict.params import PredictParams
    from zarrseg.predict.stage import predict

    stack = np.stack([two_colours(rng, (32, 32))[0] for _ in range(4)])  # (z, y, x), grey
    path = write_image(tmp_path / "stack.ome.zarr", stack, "zyx")
    params = load_params(
        WNetParams,
        wnet_params(path, slices=[1], graph="dense", segmentation="ncut", beta=1.0, lr=0.01, loop={**LOOP, "steps": 30}),
        where="wnet",
    )
    train(params, tmp_path / "model")
    predict(path, tmp_path / "labels.ome.zarr", PredictParams(method="model", device="cpu", output="argmax"),
            checkpoint=tmp_path / "model" / "best.pt")
    labels = ome.open_image(tmp_path / "labels.ome.zarr").data[...]
    assert labels.shape == stack.shape and labels.dtype == np.uint16
    disc = stack > 100
    ids_in, ids_out = [np.bincount(labels[z][disc[z]]).argmax() for z in range(4)], [
        np.bincount(labels[z][~disc[z]]).argmax() for z in range(4)
    ]
    assert len(set(ids_in)) == 1 and len(set(ids_out)) == 1 and ids_in[0] != ids_out[0]


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


BAD_TRAINING = {  # wnet parameters -> the one line the CLI ends with (exit 2, no output folder)
    "K < 2": ({"model": {"n_classes": 1, "f_maps": 4, "depth": 2}}, "wnet.model.n_classes (K) must be >= 2, got 1"),
    "more superpixels than pixels": (
        {"superpixels": {"n_segments": 5000}},
        "5000 superpixels asked for but the image has only 32 x 32 = 1024 pixels",
    ),
    "a patch larger than the image": (
        {"patches": {"sizes": [48, 8], "counts": [2, 2]}},
        "wnet.patches.sizes [48] are larger than the training image",
    ),
}


@pytest.mark.parametrize("case", list(BAD_TRAINING))
def test_bad_training_input_ends_with_one_clear_line_and_writes_nothing(tmp_path, rgb_image, capsys, case):
    extra, message = BAD_TRAINING[case]
    out = tmp_path / "model"
    params = json.dumps(wnet_params(rgb_image, **extra))
    assert cli_main(["train", "--method", "wnet", "-o", str(out), "--params", params]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("zarrseg train: error:") and message in line, line
    assert not out.exists()


def test_a_grey_model_applied_to_rgb_ends_with_one_clear_line_and_writes_nothing(tmp_path, rgb_image, rng, capsys):
    grey = write_image(tmp_path / "grey.ome.zarr", two_colours(rng)[0], "yx")
    train(load_params(WNetParams, wnet_params(grey, loop={**LOOP, "steps": 1}), where="wnet"), tmp_path / "grey_model")
    capsys.readouterr()
    pred = tmp_path / "pred.ome.zarr"
    args = ["predict", rgb_image, "-o", str(pred), "--set", "method=model", "--set", "device=cpu",
            "--checkpoint", str(tmp_path / "grey_model" / "best.pt")]
    assert cli_main(args) == 2
    line = _one_line(capsys.readouterr().err)
    assert "trained on 1-channel images but this image has 3 channel(s)" in line, line
    assert not pred.exists() and not pred.with_name(pred.name + ".partial").exists()
    # slices of a 2D image: refused before anything is written
    with pytest.raises(InputError, match="wnet.slices"):
        train(load_params(WNetParams, wnet_params(grey, slices=[0], loop=LOOP), where="wnet"), tmp_path / "m2")
    assert not (tmp_path / "m2").exists()

"""Self-supervised path: tiling, ViT loading, feature volumes, DINO, fine-tuning, clustering."""

from __future__ import annotations

import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import zarr
from conftest import write_image

from zarrseg import ome
from zarrseg.cli import main as cli_main
from zarrseg.errors import ConfigError, InputError
from zarrseg.learn.checkpoint import read as read_checkpoint
from zarrseg.methods.dino import PretrainParams, pretrain
from zarrseg.methods.finetune import FinetuneParams, finetune
from zarrseg.params import from_dict
from zarrseg.ssl import vit as vitmod
from zarrseg.ssl.cluster import ClusterParams, cluster
from zarrseg.ssl.features import FeatureParams, embed_tiles, extract_features, open_features
from zarrseg.ssl.tiling import ImageSource, Preprocess, from_tiles, resize_box, tiled_length, to_tiles

TINY = {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32}

torch.set_num_threads(1)


def two_class_image(rng: np.random.Generator, shape=(96, 128)) -> tuple[np.ndarray, np.ndarray]:
    """Bright blobs (class 1) on a dark textured background (class 0), blobs aligned to 8-px patches."""
    gt = np.zeros(shape, np.uint8)
    for y, x in [(8, 8), (48, 64), (16, 88), (64, 16)]:
        gt[y : y + 24, x : x + 24] = 1
    img = 40 + 140 * gt + rng.normal(0, 12, shape)
    return np.clip(img, 0, 255).astype(np.uint8), gt


def tiny_params(**kw) -> FeatureParams:
    return from_dict(
        FeatureParams,
        {"vit": TINY, "preprocess": {"tile_size": 32}, "dtype": "float32", "tiles_per_block": 1, **kw},
    )


def best_iou(labels: np.ndarray, gt: np.ndarray) -> float:
    """Foreground IoU after the best assignment of the two clusters to the two classes."""
    return max(
        np.logical_and(labels == k, gt == 1).sum() / np.logical_or(labels == k, gt == 1).sum()
        for k in np.unique(labels)
    )


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt (a hub download) fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    import timm.models._builder as builder

    monkeypatch.setattr(builder, "load_pretrained", refuse)


# --- tiling -------------------------------------------------------------------------------------------


def test_tiled_length_follows_the_thesis_example():
    assert (tiled_length(1536, 320), tiled_length(2048, 320)) == (1600, 1920)
    assert tiled_length(100, 320) == 320


def test_tiles_round_trip(rng):
    img = rng.random((3, 64, 96)).astype(np.float32)
    tiles = to_tiles(img, 32)
    assert tiles.shape == (6, 3, 32, 32)
    np.testing.assert_array_equal(tiles[1], img[:, :32, 32:64])
    np.testing.assert_array_equal(from_tiles(tiles, (64, 96)), img)


def test_box_resize_equals_whole_image_bilinear(rng):
    img = rng.random((1, 50, 70)).astype(np.float32)
    whole = F.interpolate(torch.from_numpy(img)[None], size=(64, 96), mode="bilinear", align_corners=False)[
        0
    ].numpy()
    read = lambda ys, xs: img[:, ys, xs]  # noqa: E731
    box = (slice(16, 48), slice(32, 96))
    np.testing.assert_allclose(resize_box(read, (50, 70), (64, 96), box), whole[:, 16:48, 32:96], atol=1e-5)
    full = resize_box(read, (50, 70), (64, 96), (slice(0, 64), slice(0, 96)))
    np.testing.assert_allclose(full, whole, atol=1e-5)


def test_image_source_grey_to_rgb_and_normalisation(tmp_path, rng):
    data = rng.integers(0, 4000, (50, 70)).astype(np.uint16)
    src = ImageSource(write_image(tmp_path / "a.ome.zarr", data), Preprocess(tile_size=32))
    assert src.resized_yx == (64, 64) and src.n_colour == 1
    tile = src.tile(0, 1, 1)
    assert tile.shape == (3, 32, 32)
    np.testing.assert_allclose(tile[0] * 0.229 + 0.485, tile[1] * 0.224 + 0.456, atol=1e-6)  # replicated grey
    ds = ImageSource(tmp_path / "a.ome.zarr", Preprocess(tile_size=32, normalize="dataset"))
    norm = ds.normalise(ds.read_raw(0, slice(0, 50), slice(0, 70)))
    assert abs(float(norm.mean())) < 0.1 and abs(float(norm.std()) - 1) < 0.1  # the image's own statistics
    with pytest.raises(InputError, match="not multiples"):
        ImageSource(tmp_path / "a.ome.zarr", Preprocess(tile_size=32, resize=False))
    with pytest.raises(InputError, match="does not exist"):
        ImageSource(tmp_path / "missing.ome.zarr")


# --- ViT weights ----------------------------------------------------------------------------------------


def test_random_init_warns_loudly_without_network(no_network):
    with pytest.warns(vitmod.RandomInitWarning, match="RANDOMLY INITIALISED"):
        model, spec, source = vitmod.load_vit(vitmod.ViTSpec(**TINY))
    assert source == "random initialisation" and spec.embed_dim == 32
    assert patch_tokens_shape(model, 32) == (1, 32, 4, 4)


def patch_tokens_shape(model, size):
    with torch.no_grad():
        return tuple(vitmod.patch_tokens(model, torch.zeros(1, 3, size, size)).shape)


def test_state_dict_file_is_loaded(tmp_path, no_network):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", vitmod.RandomInitWarning)
        ref, spec, _ = vitmod.load_vit(vitmod.ViTSpec(**TINY))
    plain = tmp_path / "plain.pth"
    torch.save({"module." + k: v for k, v in ref.state_dict().items()}, plain)  # DDP-style plain state dict
    x = torch.randn(2, 3, 48, 48)
    with warnings.catch_warnings():
        warnings.simplefilter("error", vitmod.RandomInitWarning)  # loading must not fall back to random
        loaded, _, source = vitmod.load_vit(spec, checkpoint=plain)
        ours, spec2, _ = vitmod.load_vit(
            vitmod.ViTSpec(), checkpoint=vitmod.save_checkpoint(tmp_path / "z.pt", ref, spec)
        )
    assert "plain.pth" in source and spec2.embed_dim == 32  # our checkpoints carry their architecture
    with torch.no_grad():
        expected = vitmod.patch_tokens(ref, x)
        torch.testing.assert_close(vitmod.patch_tokens(loaded, x), expected)
        torch.testing.assert_close(vitmod.patch_tokens(ours, x), expected)


def test_bad_checkpoints_are_input_errors(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="bad.pt"):
        vitmod.load_vit(vitmod.ViTSpec(**TINY), checkpoint=bad)
    with pytest.raises(InputError, match="does not exist"):
        vitmod.load_vit(vitmod.ViTSpec(**TINY), checkpoint=tmp_path / "none.pt")
    other = tmp_path / "other.pt"
    torch.save({"foo": torch.zeros(3)}, other)
    with pytest.raises(InputError, match="does not match"):
        vitmod.load_vit(vitmod.ViTSpec(**TINY), checkpoint=other)
    with pytest.raises(ConfigError, match="divisible"):
        vitmod.ViTSpec(embed_dim=30, num_heads=4).validate()


# --- features -------------------------------------------------------------------------------------------


def test_feature_volume_shape_and_blockwise_equals_whole(tmp_path, rng):
    data = rng.integers(0, 255, (70, 100)).astype(np.uint8)  # resized to 64 x 96: 2 x 3 tiles of 32
    image = write_image(tmp_path / "img.ome.zarr", data)
    params = tiny_params(checkpoint=str(_tiny_checkpoint(tmp_path)))
    out = extract_features(image, tmp_path / "f.zarr", params, attention_dir=None)
    group, meta = open_features(out)
    feats = np.asarray(group["features"])
    assert feats.shape == (32, 64 // 8, 96 // 8)
    assert group["colour"].shape == (1, 8, 12) and meta["resized_yx"] == [64, 96]
    assert not (tmp_path / "f.zarr.partial").exists()
    # whole image at once: resize everything, all tiles in one batch
    model, _, _ = vitmod.load_vit(checkpoint=tmp_path / "tiny.pt")
    src = ImageSource(image, params.preprocess)
    whole = src.normalise(src.read_resized(0, (slice(0, 64), slice(0, 96))))
    expected = from_tiles(embed_tiles(model, to_tiles(whole, 32), batch_size=6), (8, 12))
    np.testing.assert_allclose(feats, expected, atol=1e-4)
    np.testing.assert_allclose(
        np.asarray(group["colour"])[0, 0, 0],
        src.read_resized(0, (slice(0, 8), slice(0, 8))).mean(),
        rtol=1e-5,
    )


def _tiny_checkpoint(tmp_path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", vitmod.RandomInitWarning)
        torch.manual_seed(0)
        model, spec, _ = vitmod.load_vit(vitmod.ViTSpec(**TINY))
    return vitmod.save_checkpoint(tmp_path / "tiny.pt", model, spec)


def test_3d_volume_slice_by_slice_and_attention_png(tmp_path, rng):
    data = rng.integers(0, 255, (2, 32, 64)).astype(np.uint8)
    image = write_image(tmp_path / "vol.ome.zarr", data, axes="zyx", chunks=(1, 32, 32))
    params = tiny_params(checkpoint=str(_tiny_checkpoint(tmp_path)), attention_tiles=2)
    out = extract_features(image, tmp_path / "f.zarr", params, attention_dir=tmp_path / "attn")
    group, meta = open_features(out)
    assert group["features"].shape == (32, 2, 4, 8) and meta["is_3d"]
    f = np.asarray(group["features"])
    assert not np.allclose(f[:, 0], f[:, 1])  # each slice its own features
    pngs = sorted(p.name for p in (tmp_path / "attn").glob("*.png"))
    assert "z0_y0_x0_head1.png" in pngs and "z0_y0_x1_tile.png" in pngs
    import imageio.v3 as iio

    head = iio.imread(tmp_path / "attn" / "z0_y0_x0_head0.png")
    assert head.shape == (32, 32) and head.max() == 255  # per-head map, normalised to the full range
    cluster(out, tmp_path / "lab.ome.zarr", from_dict(ClusterParams, {"pca_components": 4}))
    labels = ome.open_image(tmp_path / "lab.ome.zarr")
    assert labels.axes == "zyx" and labels.shape == data.shape and set(np.unique(labels.data[...])) <= {1, 2}


def test_features_cli_errors_before_output(tmp_path, capsys):
    rc = cli_main(["features", str(tmp_path / "missing.ome.zarr"), "-o", str(tmp_path / "f.zarr")])
    assert rc == 2 and "missing.ome.zarr" in capsys.readouterr().err
    assert not (tmp_path / "f.zarr").exists()
    rc = cli_main(["features", str(tmp_path / "x"), "-o", str(tmp_path / "f.zarr"), "--set", "batch_sise=3"])
    assert rc == 2 and "did you mean" in capsys.readouterr().err


def weights(path) -> dict:
    """The inference weights of a checkpoint (any zarrseg format)."""
    return read_checkpoint(path)["state_dict"]


# --- training -------------------------------------------------------------------------------------------


def test_dino_steps_reduce_loss_and_checkpoint_feeds_features(tmp_path, rng):
    img, _ = two_class_image(rng)
    image = write_image(tmp_path / "img.ome.zarr", img)
    base = {
        "images": [str(image)],
        "vit": TINY,
        "preprocess": {"tile_size": 32},
        "sample_size": 32,
        "global_crop_size": 32,
        "local_crop_size": 16,
        "n_local_crops": 2,
        "out_dim": 256,
        "hidden_dim": 64,
        "bottleneck_dim": 64,
        "batch_size": 8,
        "warmup_steps": 5,
        "lr": 0.05,
        "freeze_last_layer_steps": 0,
    }
    # With the teacher and centre held fixed the objective is stationary: the student must learn to
    # predict the sharpened teacher distribution of the other views, so the loss has to go down.
    fixed = from_dict(
        PretrainParams, {**base, "loop": {"steps": 30}, "teacher_momentum": [1.0, 1.0], "center_momentum": 1.0}
    )
    pretrain(fixed, tmp_path / "fixed")
    import pandas as pd

    hist = pd.read_csv(tmp_path / "fixed" / "history.csv")
    assert len(hist) == 30
    assert hist.loss.tail(5).mean() < 0.9 * hist.loss.head(5).mean()
    # The full recipe (EMA teacher, centring) from a given checkpoint moves the teacher and saves it.
    init = _tiny_checkpoint(tmp_path)
    summary = pretrain(
        from_dict(PretrainParams, {**base, "loop": {"steps": 8}, "init_checkpoint": str(init)}), tmp_path / "dino"
    )
    assert summary["steps"] == 8 and np.isfinite(summary["last_loss"])
    before = weights(init)["blocks.1.mlp.fc1.weight"]
    after = weights(tmp_path / "dino" / "best.pt")["blocks.1.mlp.fc1.weight"]
    assert not torch.equal(before, after)
    out = extract_features(image, tmp_path / "f.zarr", tiny_params(checkpoint=str(tmp_path / "dino")))
    _, meta = open_features(out)
    assert meta["weights"].endswith("best.pt")


def test_finetune_trains_only_last_blocks_and_decoder(tmp_path, rng):
    img, _ = two_class_image(rng)
    image = write_image(tmp_path / "img.ome.zarr", img)
    ckpt = _tiny_checkpoint(tmp_path)
    params = from_dict(
        FinetuneParams,
        {
            "images": [str(image)],
            "checkpoint": str(ckpt),
            "preprocess": {"tile_size": 32},
            "trainable_blocks": 1,
            "sample_size": 32,
            "batch_size": 4,
            "loop": {"steps": 12},
            "lr": 3e-3,
        },
    )
    summary = finetune(params, tmp_path / "ft")
    assert summary["last_loss"] < summary["first_loss"]
    before = weights(ckpt)
    after = weights(tmp_path / "ft" / "best.pt")
    assert torch.equal(before["blocks.0.attn.qkv.weight"], after["blocks.0.attn.qkv.weight"])  # frozen
    assert not torch.equal(before["blocks.1.attn.qkv.weight"], after["blocks.1.attn.qkv.weight"])  # trained
    decoder = read_checkpoint(tmp_path / "ft" / "last.pt")["loop"]["modules"]["model"]
    assert any(k.startswith("decoder.") for k in decoder)  # the decoder is kept for a resume
    # a CPU-time budget stops training early and still leaves a usable checkpoint
    params.loop.max_cpu_minutes, params.loop.steps = 1e-6, 50
    assert finetune(params, tmp_path / "ft2")["steps"] == 1
    assert (tmp_path / "ft2" / "best.pt").exists()


# --- clustering -----------------------------------------------------------------------------------------


def test_feature_clustering_recovers_two_classes(tmp_path, rng):
    img, gt = two_class_image(rng)
    image = write_image(tmp_path / "img.ome.zarr", img)
    feats = extract_features(
        image, tmp_path / "f.zarr", tiny_params(checkpoint=str(_tiny_checkpoint(tmp_path)))
    )
    params = from_dict(ClusterParams, {"pca_components": 8, "block_shape": [40, 48], "chunks": [32, 32]})
    summary = cluster(feats, tmp_path / "lab.ome.zarr", params, image=image)
    labels = ome.open_image(tmp_path / "lab.ome.zarr")
    assert "image-label" in labels.attrs and labels.axes == "yx"
    lab = np.asarray(labels.data)
    assert lab.shape == gt.shape and summary["n_clusters"] == 2 and set(np.unique(lab)) == {1, 2}
    assert best_iou(lab, gt) > 0.85
    # features alone (no colour) still separate the classes
    cluster(
        feats,
        tmp_path / "nocol.ome.zarr",
        from_dict(ClusterParams, {"use_colour": False, "pca_components": 8}),
    )
    assert best_iou(np.asarray(ome.open_image(tmp_path / "nocol.ome.zarr").data), gt) > 0.7


@pytest.mark.parametrize("m", [1, 8])
def test_colour_baseline(tmp_path, rng, m):
    img, gt = two_class_image(rng)
    image = write_image(tmp_path / "img.ome.zarr", img)
    cluster(
        image,
        tmp_path / "lab.ome.zarr",
        from_dict(ClusterParams, {"colour_patch": m, "block_shape": [50, 50]}),
    )
    lab = np.asarray(ome.open_image(tmp_path / "lab.ome.zarr").data)
    assert lab.shape == gt.shape
    assert best_iou(lab, gt) > (0.9 if m == 1 else 0.95)


def test_hdbscan_option_and_bad_input(tmp_path, rng):
    img, gt = two_class_image(rng)
    image = write_image(tmp_path / "img.ome.zarr", img)
    cluster(
        image,
        tmp_path / "h.ome.zarr",
        from_dict(ClusterParams, {"method": "hdbscan", "colour_patch": 8, "min_cluster_size": 10}),
    )
    lab = np.asarray(ome.open_image(tmp_path / "h.ome.zarr").data)
    assert len(np.unique(lab[lab > 0])) >= 2
    with pytest.raises(InputError, match="does not exist"):
        cluster(tmp_path / "nothing.zarr", tmp_path / "x.ome.zarr")
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=2)
    with pytest.raises(InputError, match="plain.zarr"):
        cluster(tmp_path / "plain.zarr", tmp_path / "x.ome.zarr")
    assert not (tmp_path / "x.ome.zarr").exists()
    with pytest.raises(ConfigError, match="n_clusters"):
        from_dict(ClusterParams, {"n_clusters": 1})


def test_hub_weights_only_on_request_and_fail_cleanly_offline(monkeypatch):
    import timm

    calls = []
    real = timm.create_model

    def spy(name, pretrained=False, **kw):
        calls.append(pretrained)
        if pretrained:
            raise OSError("offline")  # what a download attempt gives on a node without network
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", spy)
    with pytest.warns(vitmod.RandomInitWarning):
        vitmod.load_vit(vitmod.ViTSpec(**TINY))
    assert calls == [False]  # no weights asked for: no download attempted
    with pytest.raises(InputError, match="--checkpoint"):
        vitmod.load_vit(vitmod.ViTSpec(), weights="hub")
    assert calls[-1] is True
    with pytest.raises(ConfigError, match="ViT-S/8"):
        vitmod.load_vit(vitmod.ViTSpec(**TINY), weights="hub")


@pytest.mark.parametrize("total", [1, 2, 3, 10, 19, 20, 21, 40, 1000])
def test_the_finetune_learning_rate_cycle_runs_for_any_number_of_steps(total):
    import torch

    from zarrseg.methods.finetune.method import one_cycle

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    schedule = one_cycle(optimizer, 1e-3, total)  # 20 steps divided by zero (a warm-up of 0 steps)
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert all(0 < r <= 1e-3 + 1e-12 for r in rates)
    if total >= 3:
        assert rates[0] < max(rates) and rates[-1] < max(rates)  # warms up, then anneals

"""Segment counts and sizes without ground truth, thumbnails, and the per-experiment segments table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import voronoi_cells
from PIL import Image

from zarrseg import ome
from zarrseg.cli import main
from zarrseg.evaluation.describe import describe, segment_sizes
from zarrseg.evaluation.thumbnail import OUTLINE_RGB, thumbnail


def _image(path, data, scale, is_label=False):
    axes = "zyx"[-data.ndim:]
    ome.create_image(path, shape=data.shape, dtype=data.dtype, axes=axes, scale=scale, chunks=[4, 128, 128][-data.ndim:],
                     is_label=is_label)[...] = data
    return path


def test_segment_sizes_match_a_whole_array_count(tmp_path, rng):
    labels = voronoi_cells(rng, (10, 40, 50), 23)
    labels[labels == 5] = 0  # background is not a segment
    path = _image(tmp_path / "l.ome.zarr", labels, [2.0, 0.5, 0.5], is_label=True)
    view = ome.SpatialView.of(ome.open_image(path))
    sizes = segment_sizes(view, block_shape=(4, 16, 16))  # many blocks: counts are summed across them
    ids, expected = np.unique(labels[labels > 0], return_counts=True)
    np.testing.assert_array_equal(np.sort(sizes), np.sort(expected))
    row = describe(path)
    assert row["n_segments"] == len(ids) == 22
    assert row["size_mean"] == pytest.approx(expected.mean() * 2.0 * 0.5 * 0.5)  # µm³ from the scale
    assert row["size_unit"] == "µm³" and row["shape"] == "10x40x50" and row["voxel_size_um"] == "2x0.5x0.5"
    assert row["voxels_median"] == pytest.approx(np.median(expected))


def test_empty_segmentation_and_non_label_input(tmp_path):
    path = _image(tmp_path / "e.ome.zarr", np.zeros((20, 30), np.uint32), [1.0, 1.0], is_label=True)
    row = describe(path)
    # every axis at 1 µm and no voxel_size given: ingest's fallback, so sizes are in voxels
    assert row["n_segments"] == 0 and np.isnan(row["size_mean"]) and row["size_unit"] == "voxels (voxel size unknown)"
    known = _image(tmp_path / "k.ome.zarr", np.ones((20, 30), np.uint32), [0.5, 0.5], is_label=True)
    assert describe(known)["size_unit"] == "µm²"
    floats = _image(tmp_path / "f.ome.zarr", np.zeros((20, 30), np.float32), [1.0, 1.0])
    with pytest.raises(Exception, match="not a label image"):
        describe(floats)


def test_thumbnail_draws_the_outlines_of_the_plane_it_shows_enlarged(tmp_path, rng):
    image = rng.integers(0, 1000, (6, 64, 80)).astype(np.uint16)
    image[3, 10:20, 10:20] = 5000  # bright in the middle plane (z = 3), the one outlined
    image[0, 50:60, 5:15] = 5000  # bright in another plane only: not shown
    labels = np.zeros((6, 64, 80), np.uint32)
    labels[:, 30:50, 40:70] = 1
    img = _image(tmp_path / "i.ome.zarr", image, [1.0, 1.0, 1.0])
    lab = _image(tmp_path / "l.ome.zarr", labels, [1.0, 1.0, 1.0], is_label=True)
    png = thumbnail(img, lab, tmp_path / "t.png")
    rgb = np.asarray(Image.open(png))[::4, ::4]  # 64 x 80 enlarged 4x (to about 384 px)
    assert np.asarray(Image.open(png)).shape == (256, 320, 3) and rgb.shape == (64, 80, 3)
    outline = np.all(rgb == OUTLINE_RGB, axis=-1)
    assert outline[30, 40:70].all() and outline[30:50, 40].all()  # the label's border
    assert not outline[35:45, 45:65].any() and not outline[:25].any()  # not its inside, nothing elsewhere
    assert rgb[15, 15].mean() > 200 and rgb[55, 10].mean() < 200  # the middle plane, not a projection


def test_large_images_give_small_thumbnails(tmp_path, rng):
    image = rng.integers(0, 255, (1500, 1100)).astype(np.uint8)
    labels = np.zeros((1500, 1100), np.uint32)
    labels[300:900, 200:800] = 3
    img = _image(tmp_path / "i.ome.zarr", image, [1.0, 1.0])
    lab = _image(tmp_path / "l.ome.zarr", labels, [1.0, 1.0], is_label=True)
    rgb = np.asarray(Image.open(thumbnail(img, lab, tmp_path / "t.png", max_size=256)))
    assert max(rgb.shape[:2]) <= 256 and np.all(rgb == OUTLINE_RGB, axis=-1).sum() > 100


def test_describe_command_and_summary(tmp_path, rng, capsys):
    tables = []
    for k, n in enumerate((7, 12)):
        labels = voronoi_cells(rng, (30, 40), n)
        lab = _image(tmp_path / f"l{k}.ome.zarr", labels, [0.5, 0.5], is_label=True)
        img = _image(tmp_path / f"i{k}.ome.zarr", rng.random((30, 40)).astype(np.float32), [0.5, 0.5])
        out = tmp_path / f"s{k}" / "segments.parquet"
        assert main(["describe", str(lab), "--image", str(img), "--thumbnail", str(tmp_path / f"t{k}.png"),
                     "-o", str(out), "--meta", f"sample=s{k}", "--meta", "cell=base"]) == 0
        assert (tmp_path / f"t{k}.png").is_file() and out.with_suffix(".csv").is_file()
        tables.append(str(out))
    assert main(["describe", "--summary", *tables, "-o", str(tmp_path / "exp")]) == 0
    frame = pd.read_parquet(tmp_path / "exp" / "segments.parquet")
    assert list(frame["sample"]) == ["s0", "s1"] and list(frame["n_segments"]) == [7, 12]
    text = (tmp_path / "exp" / "segments.md").read_text()
    assert "| s1 | base | 12 |" in text
    capsys.readouterr()
    assert main(["describe", str(tmp_path / "l0.ome.zarr"), "--thumbnail", "x.png", "-o", "y.parquet"]) == 2
    assert "--thumbnail needs --image" in capsys.readouterr().err

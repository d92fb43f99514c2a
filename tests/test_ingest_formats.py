"""Ingest of PNG/JPEG, the single-scene layout, channel names, time scales, 64-bit labels, unwritable outputs."""

from __future__ import annotations

import errno
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from conftest import shared_path
from PIL import Image
from test_ingest_synthetic import write_czi

from zarrseg import ome
from zarrseg.cli import main
from zarrseg.ingest import IngestParams, ingest
from zarrseg.ingest.czi import timestamps_step


@pytest.mark.parametrize(
    "suffix,mode,dtype",
    [(".png", "L", "u1"), (".png", "I;16", "u2"), (".png", "RGB", "u1"), (".jpg", "L", "u1"), (".jpg", "RGB", "u1")],
    ids=["png-grey8", "png-grey16", "png-rgb", "jpeg-grey", "jpeg-rgb"],
)
def test_png_and_jpeg(tmp_path, rng, suffix, mode, dtype):
    shape = (37, 53, 3) if mode == "RGB" else (37, 53)
    truth = rng.integers(0, 250 if dtype == "u1" else 60000, shape).astype(dtype)
    path = tmp_path / f"img{suffix}"
    Image.fromarray(truth).save(path, **({"quality": 95} if suffix == ".jpg" else {}))
    expected = np.asarray(Image.open(path))  # JPEG is lossy: Pillow's own decode is the reference
    if suffix == ".png":
        np.testing.assert_array_equal(expected, truth)
    image = ome.open_image(ingest(path, tmp_path / "out.ome.zarr", IngestParams(voxel_size=[0.4, 0.25])))
    if mode == "RGB":
        assert image.axes == "cyx" and image.channel_names == ["R", "G", "B"]
        np.testing.assert_array_equal(image.data[...], np.moveaxis(expected, -1, 0))
    else:
        assert image.axes == "yx"
        np.testing.assert_array_equal(image.data[...], expected)
    assert image.data.dtype == np.dtype(dtype)
    assert image.spatial_scale == pytest.approx((0.4, 0.25))  # from the config: the files carry none
    assert image.attrs["zarrseg"]["reader"] == "Pillow"


@pytest.mark.parametrize("channels,names", [(3, ["R", "G", "B"]), (4, ["R", "G", "B", "A"]), (2, ["grey", "alpha"])])
def test_16_bit_colour_png_keeps_16_bits(tmp_path, rng, channels, names):
    import imagecodecs

    truth = rng.integers(0, 65535, (21, 23, channels)).astype(np.uint16)
    path = tmp_path / "deep.png"
    path.write_bytes(imagecodecs.png_encode(truth))
    assert np.asarray(Image.open(path)).dtype == np.uint8  # what Pillow alone would have stored
    image = ome.open_image(ingest(path, tmp_path / "out.ome.zarr"))
    assert image.data.dtype == np.uint16 and image.channel_names == names
    np.testing.assert_array_equal(image.data[...], np.moveaxis(truth, -1, 0))


def test_truncated_16_bit_png_is_one_line(tmp_path, rng, capsys):
    import imagecodecs

    path = tmp_path / "cut.png"
    data = imagecodecs.png_encode(rng.integers(0, 65535, (200, 300, 3)).astype(np.uint16))
    path.write_bytes(data[: len(data) // 2])
    assert main(["ingest", str(path), "-o", str(tmp_path / "out.ome.zarr")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and str(path) in lines[0] and "truncated or corrupt" in lines[0], lines


def test_truncated_png_is_one_line(tmp_path, rng, capsys):
    path = tmp_path / "cut.png"
    Image.fromarray(rng.integers(0, 255, (200, 300), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out.ome.zarr"
    capsys.readouterr()
    assert main(["ingest", str(path), "-o", str(out)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and str(path) in lines[0] and "truncated or corrupt" in lines[0], lines
    assert not out.exists() and not ome.partial_path(out).exists()


def test_single_scene_is_a_plain_image_and_multi_scene_a_container(tmp_path, rng):
    truth = rng.integers(0, 255, (4, 30, 40), dtype=np.uint8)
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, truth, metadata={"axes": "ZYX"}, photometric="minisblack")
    out = ingest(path, tmp_path / "v.ome.zarr")
    assert "multiscales" in zarr.open_group(str(out), mode="r").attrs
    level0 = zarr.open(str(out / "0"), mode="r")
    assert isinstance(level0, zarr.Array)
    np.testing.assert_array_equal(level0[...], truth)
    assert ome.scene_path(out, 0) == out
    with pytest.raises(Exception, match="scene 1 does not exist"):
        ome.scene_path(out, 1)
    info = subprocess.run([str(Path(sys.executable).parent / "ome_zarr"), "info", str(out)],
                          capture_output=True, text=True)
    assert info.returncode == 0 and "Multiscales" in info.stdout, info.stdout + info.stderr
    # the old addressing "<output>/0" still opens the image, with its metadata
    assert ome.open_image(out / "0").spatial_scale == ome.open_image(out).spatial_scale

    planes = {(0, 0, 0): rng.integers(0, 255, (20, 20), dtype=np.uint8)}
    two = tmp_path / "two.czi"
    write_czi(two, planes, [(0, 0, slice(None), slice(None))])
    container = ingest(two, tmp_path / "two.ome.zarr", scenes=None)
    assert ome.scene_path(container, 0) == container  # one scene in this CZI too: plain image
    three = ingest(shared_path("czi", "S3_1Pos_2Mosaic_T2_Z3_CH2_sm.czi"), tmp_path / "s3.ome.zarr")
    root = zarr.open_group(str(three), mode="r")
    assert root.attrs["bioformats2raw.layout"] == 3 and "multiscales" not in root.attrs
    shapes = [ome.open_image(ome.scene_path(three, k)).shape for k in range(3)]
    assert len(set(shapes)) == 3  # three different scenes
    single = ome.open_image(ingest(shared_path("czi", "S3_1Pos_2Mosaic_T2_Z3_CH2_sm.czi"),
                                   tmp_path / "s3_1.ome.zarr", scenes=[1]))
    assert single.shape == shapes[1] and single.path == tmp_path / "s3_1.ome.zarr"


def test_old_single_scene_containers_still_open(tmp_path, rng):
    """Outputs of earlier versions: a bioformats2raw container holding one image at <output>/0."""
    old = tmp_path / "old.ome.zarr"
    zarr.open_group(str(old), mode="w", zarr_format=2).attrs["bioformats2raw.layout"] = 3
    data = rng.integers(0, 255, (8, 9), dtype=np.uint8)
    ome.create_image(old / "0", shape=data.shape, dtype=data.dtype, axes="yx", scale=[0.5, 0.5],
                     chunks=[8, 8])[...] = data
    for path in (old, old / "0", ome.scene_path(old, 0)):
        image = ome.open_image(path)
        np.testing.assert_array_equal(image.data[...], data)
        assert image.spatial_scale == (0.5, 0.5)


def test_single_channel_keeps_its_name(tmp_path, rng):
    path = tmp_path / "one.ome.tif"
    tifffile.imwrite(path, rng.integers(0, 255, (3, 16, 16), dtype=np.uint8), ome=True,
                     metadata={"axes": "ZYX", "Channel": {"Name": ["membrane"]}})
    out = ingest(path, tmp_path / "one.ome.zarr")
    image = ome.open_image(out)
    assert image.axes == "zyx" and image.channel_names == ["membrane"]
    assert zarr.open_group(str(out), mode="r").attrs["omero"]["channels"][0]["label"] == "membrane"


def test_czi_time_axis_without_interval_warns(tmp_path, rng, caplog):
    planes = {(t, 0, 0): rng.integers(0, 255, (12, 12), dtype=np.uint8) for t in range(3)}
    path = tmp_path / "t.czi"
    write_czi(path, planes, [(0, 0, slice(None), slice(None))])
    caplog.set_level(logging.WARNING, logger="zarrseg")
    image = ome.open_image(ingest(path, tmp_path / "t.ome.zarr"))
    assert image.axes[0] == "t" and image.scale[0] == 1.0
    assert "time interval" in caplog.text and "invented" in caplog.text


def test_czi_time_step_from_the_timestamps_attachment(tmp_path, caplog):
    """ZEN files keep the acquisition times in a TimeStamps attachment; its mean step matches the metadata."""
    path = shared_path("czi", "CellDivision_T3_Z5_CH2_X240_Y170.czi")
    assert timestamps_step(path) == pytest.approx(60.075, rel=0.01)  # metadata: T interval 60.075 s
    assert timestamps_step(shared_path("czi", "DAPI_GFP.czi")) is None  # a thumbnail only
    caplog.set_level(logging.WARNING, logger="zarrseg")
    plain = ome.open_image(ingest(shared_path("czi", "S3_1Pos_2Mosaic_T2_Z3_CH2_sm.czi"),
                                  tmp_path / "s3.ome.zarr", scenes=[0]))
    assert plain.scale[0] == pytest.approx(33.412, rel=1e-3) and "invented" not in caplog.text


@pytest.mark.parametrize("dtype", ["u8", "i8"])
def test_64bit_tiff_labels(tmp_path, dtype):
    labels = np.zeros((20, 30), dtype)
    labels[2:8, 3:9] = 2**40 if dtype == "u8" else -(2**40)
    labels[10:15, 10:20] = 7
    path = tmp_path / "labels.tif"
    tifffile.imwrite(path, labels)
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].dtype.char in "Qq"  # what tifffile reports, which zarr rejected
    image = ome.open_image(ingest(path, tmp_path / "labels.ome.zarr", labels=True))
    assert image.data.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(image.data[...], labels)


def test_read_only_output_folder_is_one_line(tmp_path, rng, capsys, monkeypatch):
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, rng.integers(0, 255, (4, 16, 16), dtype=np.uint8), photometric="minisblack")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    out = folder / "v.ome.zarr"
    mkdir = Path.mkdir

    def refuse(self, *args, **kwargs):  # root ignores the mode bits: refuse as a read-only folder would
        if str(self).startswith(str(folder) + "/"):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    capsys.readouterr()
    try:
        code = main(["ingest", str(path), "-o", str(out), "--set", "voxel_size=[1,1,1]"])
    finally:
        folder.chmod(0o755)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2
    assert len(lines) == 1 and str(out) in lines[0] and "Permission denied" in lines[0], lines
    assert not out.exists() and not ome.partial_path(out).exists()

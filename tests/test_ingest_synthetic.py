"""Ingest of small generated CZI / TIFF / HDF5 files whose true pixels and metadata we know."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import zarr
from pylibCZIrw import czi as pyczi

from zarrseg import ome
from zarrseg.errors import ConfigError, InputError
from zarrseg.ingest import IngestParams, ingest
from zarrseg.ingest.tiff import TiffSource
from zarrseg.ingest.writer import plan_slabs
from zarrseg.params import load_params


def write_czi(
    path: Path,
    planes: dict,
    tiles: list[tuple[int, int, slice, slice]],
    *,
    scale_um=(0.5, 0.25, 0.25),
    compression: str | None = None,
    channel_names=None,
) -> None:
    """planes: {(t, c, z): full 2D/3D array}; tiles: (x, y, rows, cols) pieces written at stage offsets."""
    with pyczi.create_czi(str(path), exist_ok=True, compression_options=compression) as w:
        for (t, c, z), plane in planes.items():
            for x, y, rows, cols in tiles:
                w.write(
                    np.ascontiguousarray(plane[rows, cols]), location=(x, y), plane={"T": t, "C": c, "Z": z}
                )
        w.write_metadata(
            channel_names=channel_names or {},
            scale_x=scale_um[2] * 1e-6,
            scale_y=scale_um[1] * 1e-6,
            scale_z=scale_um[0] * 1e-6,
        )  # CZI stores metres


@pytest.mark.parametrize(
    "dtype,rgb,compression",
    [
        ("u1", False, None),
        ("u2", False, "zstd1:ExplicitLevel=1;PreProcess=HiLoByteUnpack"),
        ("f4", False, None),
        ("u1", True, None),
        ("u2", True, "zstd0:ExplicitLevel=2"),
    ],
    ids=["Gray8", "Gray16-zstd1", "Gray32Float", "Bgr24", "Bgr48-zstd0"],
)
def test_czi_mosaic_with_negative_origin(tmp_path, rng, dtype, rgb, compression):
    """Tiles at negative stage positions assemble into the known image; BGR samples become R, G, B channels."""
    shape = (2, 3, 40, 50, 3) if rgb else (2, 3, 40, 50)  # (C, Z, Y, X[, BGR])
    truth = (rng.random(shape) * (200 if dtype == "u1" else 60000)).astype(dtype)
    planes = {(0, c, z): truth[c, z] for c in range(2) for z in range(3)}
    tiles = [(-10, -5, slice(0, 40), slice(0, 30)), (20, -5, slice(0, 40), slice(30, 50))]
    path = tmp_path / "mosaic.czi"
    write_czi(path, planes, tiles, compression=compression, channel_names={0: "DAPI", 1: "GFP"})
    out = ingest(path, tmp_path / "out.ome.zarr", IngestParams(chunks=[2, 16, 16]))
    image = ome.open_image(out)
    expected = truth
    if rgb:  # memory order B, G, R -> channels R, G, B
        expected = np.moveaxis(truth[..., ::-1], -1, 1).reshape(6, 3, 40, 50)
    assert image.axes == "czyx"
    assert image.data.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(image.data[...], expected)
    assert image.spatial_scale == pytest.approx((0.5, 0.25, 0.25))
    assert image.units["z"] == "micrometer"
    names = image.channel_names
    assert names == (["DAPI R", "DAPI G", "DAPI B", "GFP R", "GFP G", "GFP B"] if rgb else ["DAPI", "GFP"])
    assert image.attrs["zarrseg"]["czi_origin_yx"] == [-5, -10]


def test_czi_time_series_and_provenance(tmp_path, rng):
    truth = rng.integers(0, 255, (3, 1, 4, 20, 24), dtype=np.uint8)  # T, C, Z, Y, X
    planes = {(t, 0, z): truth[t, 0, z] for t in range(3) for z in range(4)}
    path = tmp_path / "series.czi"
    write_czi(path, planes, [(0, 0, slice(None), slice(None))])
    out = ingest(path, tmp_path / "out.ome.zarr")
    image = ome.open_image(out)
    assert image.axes == "tzyx"  # c of size 1 dropped
    np.testing.assert_array_equal(image.data[...], truth[:, 0])
    meta = image.attrs["zarrseg"]
    assert meta["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["reader"] == "pylibCZIrw" and meta["reader_version"]
    assert meta["source"] == str(path.resolve())
    assert meta["created_utc"].endswith("+00:00") and meta["zarrseg_version"]
    root = zarr.open_group(str(out), mode="r")  # one scene: a plain NGFF image at the root
    assert "bioformats2raw.layout" not in root.attrs and "multiscales" in root.attrs
    assert isinstance(zarr.open(str(out / "0"), mode="r"), zarr.Array)


def test_imagej_hyperstack_axes_and_calibration(tmp_path, rng):
    truth = rng.integers(0, 4000, (2, 5, 3, 32, 40), dtype=np.uint16)  # ImageJ order T Z C Y X
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(
        path,
        truth,
        imagej=True,
        resolution=(1 / 0.2, 1 / 0.1),
        metadata={"axes": "TZCYX", "spacing": 0.7, "unit": "um", "finterval": 2.5},
    )
    image = ome.open_image(ingest(path, tmp_path / "out.ome.zarr"))
    assert image.axes == "tczyx"
    np.testing.assert_array_equal(image.data[...], truth.transpose(0, 2, 1, 3, 4))
    assert image.spatial_scale == pytest.approx((0.7, 0.1, 0.2))
    assert image.scale[0] == pytest.approx(2.5)  # seconds per frame


def test_imagej_per_axis_and_time_units(tmp_path):
    """ImageJ writes yunit / zunit when they differ from unit, and tunit when frames are not seconds."""
    path = tmp_path / "units.tif"
    description = ("ImageJ=1.54f\nimages=12\nslices=4\nframes=3\nhyperstack=true\nunit=micron\nyunit=nm\n"
                   "zunit=nm\ntunit=min\nspacing=250.0\nfinterval=5.0\nloop=false\n")
    tifffile.imwrite(path, np.zeros((12, 20, 20), np.uint16), description=description, resolution=(10, 1 / 200),
                     metadata=None)
    image = ome.open_image(ingest(path, tmp_path / "out.ome.zarr"))
    assert image.axes == "tzyx"
    assert image.scale == pytest.approx((300.0, 0.25, 0.2, 0.1))  # 5 min; 250 nm; 200 nm; 0.1 micron


def test_ome_tiff_units_and_channel_names(tmp_path, rng):
    truth = rng.random((2, 6, 24, 20)).astype(np.float32)  # C Z Y X
    path = tmp_path / "img.ome.tif"
    tifffile.imwrite(
        path,
        truth,
        ome=True,
        metadata={
            "axes": "CZYX",
            "PhysicalSizeX": 120.0,
            "PhysicalSizeXUnit": "nm",
            "PhysicalSizeY": 0.12,
            "PhysicalSizeYUnit": "µm",
            "PhysicalSizeZ": 0.001,
            "PhysicalSizeZUnit": "mm",
            "Channel": {"Name": ["membrane", "nuclei"]},
        },
    )
    image = ome.open_image(ingest(path, tmp_path / "out.ome.zarr"))
    assert image.axes == "czyx"
    np.testing.assert_array_equal(image.data[...], truth)
    assert image.spatial_scale == pytest.approx((1.0, 0.12, 0.12))
    assert image.channel_names == ["membrane", "nuclei"]


def test_plain_multipage_and_rgb_tiff(tmp_path, rng):
    stack = rng.integers(0, 255, (7, 30, 20), dtype=np.uint8)
    plain = tmp_path / "plain.tif"
    with tifffile.TiffWriter(plain) as tw:  # pages without any shape metadata
        for page in stack:
            tw.write(page, metadata=None, contiguous=False)
    image = ome.open_image(ingest(plain, tmp_path / "plain.ome.zarr"))
    assert image.axes == "zyx"
    np.testing.assert_array_equal(image.data[...], stack)

    rgb = rng.integers(0, 255, (30, 20, 3), dtype=np.uint8)
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, rgb, photometric="rgb")
    image = ome.open_image(ingest(path, tmp_path / "rgb.ome.zarr"))
    assert image.axes == "cyx"
    np.testing.assert_array_equal(image.data[...], np.moveaxis(rgb, -1, 0))


def test_axes_override_resolves_ambiguous_tiff(tmp_path, rng):
    truth = rng.integers(0, 255, (3, 2, 16, 16), dtype=np.uint8)
    path = tmp_path / "qq.tif"
    tifffile.imwrite(path, truth, photometric="minisblack")  # shaped series: axes 'QQYX'
    with pytest.raises(InputError, match="cannot resolve image axes"):
        ingest(path, tmp_path / "a.ome.zarr")
    image = ome.open_image(ingest(path, tmp_path / "b.ome.zarr", IngestParams(axes="zcyx")))
    assert image.axes == "czyx"
    np.testing.assert_array_equal(image.data[...], truth.transpose(1, 0, 2, 3))


def test_hdf5_dataset_with_element_size_and_labels(tmp_path, rng):
    labels = rng.integers(0, 40, (10, 36, 44), dtype=np.int32)
    path = tmp_path / "vol.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("seg/gt", data=labels, chunks=(4, 16, 16))
        ds.attrs["element_size_um"] = (0.4, 0.02, 0.02)
        f.create_dataset("raw", data=labels.astype(np.uint8))
    out = ingest(
        f"{path}:seg/gt",
        tmp_path / "gt.ome.zarr",
        IngestParams(chunks=[4, 16, 16], pyramid_levels=3),
        labels=True,
    )
    image = ome.open_image(out)
    assert image.data.dtype == np.int32
    np.testing.assert_array_equal(image.data[...], labels)
    assert image.spatial_scale == pytest.approx((0.4, 0.02, 0.02))
    assert "image-label" in image.attrs
    # nearest-neighbour pyramid: only existing label values, every second voxel in y/x
    np.testing.assert_array_equal(image.level(1)[...], labels[:, ::2, ::2])
    with pytest.raises(InputError, match="--labels needs an integer image"):
        ingest(_float_h5(tmp_path), tmp_path / "x.ome.zarr", labels=True)
    # voxel size from parameters when the dataset has none
    image = ome.open_image(
        ingest(f"{path}:raw", tmp_path / "raw.ome.zarr", IngestParams(voxel_size=[1.0, 0.5, 0.5]))
    )
    assert image.spatial_scale == pytest.approx((1.0, 0.5, 0.5))


def _float_h5(tmp_path: Path) -> str:
    path = tmp_path / "prob.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("p", data=np.zeros((4, 8, 8), np.float32))
    return f"{path}:p"


def test_small_slabs_stream_and_pyramid_means(tmp_path, rng):
    """A tiny slab budget forces y- and x-bands; result and mean pyramid are unchanged."""
    truth = rng.integers(0, 60000, (4, 200, 4096), dtype=np.uint16)
    path = tmp_path / "vol.tif"
    tifffile.imwrite(path, truth, metadata={"axes": "ZYX"}, tile=(64, 64), photometric="minisblack")
    params = IngestParams(chunks=[2, 64, 64], slab_mb=1, pyramid_levels=2)
    with TiffSource(path) as src:
        slabs, (_cb, zb, yb, xb) = plan_slabs(src.scenes[0], (2, 64, 64), params.slab_mb * 2**20 // 2)
    assert (zb, yb, xb) == (2, 64, 2048) and len(slabs) == 2 * 4 * 2
    assert {(s.z.start, s.y.start, s.x.start) for s in slabs} == {
        (z, y, x) for z in (0, 2) for y in (0, 64, 128, 192) for x in (0, 2048)
    }
    image = ome.open_image(ingest(path, tmp_path / "out.ome.zarr", params))
    np.testing.assert_array_equal(image.data[...], truth)
    expected = (
        truth.astype(np.float64).reshape(4, 100, 2, 2048, 2).mean(axis=(2, 4)).round().astype(np.uint16)
    )
    np.testing.assert_array_equal(image.level(1)[...], expected)
    assert image.level_paths == ["0", "1"]


def test_rerun_is_noop_and_params_change_rewrites(tmp_path, rng, caplog):
    truth = rng.integers(0, 255, (4, 20, 20), dtype=np.uint8)
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, truth, metadata={"axes": "ZYX"}, photometric="minisblack")
    out = tmp_path / "v.ome.zarr"
    ingest(path, out)
    stamp = zarr.open_group(str(out), mode="r").attrs["zarrseg"]["created_utc"]
    marker = out / ".zattrs"
    mtime = marker.stat().st_mtime_ns
    caplog.set_level("INFO", logger="zarrseg.ingest.writer")
    ingest(path, out)
    assert "up to date" in caplog.text
    assert marker.stat().st_mtime_ns == mtime
    # same content, new modification time: sha256 decides, still a no-op
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    ingest(path, out)
    assert marker.stat().st_mtime_ns == mtime
    # other parameters: rewritten
    ingest(path, out, IngestParams(chunks=[2, 10, 10]))
    assert zarr.open_array(str(out / "0"), mode="r").chunks == (2, 10, 10)
    assert zarr.open_group(str(out), mode="r").attrs["zarrseg"]["created_utc"] >= stamp
    # damaged since (an array's metadata cut): not "up to date", written again
    (out / "0" / ".zarray").write_text("{")
    ingest(path, out, IngestParams(chunks=[2, 10, 10]))
    assert "is damaged" in caplog.text
    np.testing.assert_array_equal(ome.open_image(out).data[:], truth)


def test_failure_inside_writer_leaves_nothing(tmp_path, rng, monkeypatch):
    truth = rng.integers(0, 255, (8, 64, 64), dtype=np.uint8)
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, truth, metadata={"axes": "ZYX"}, photometric="minisblack")
    calls = {"n": 0}
    original = TiffSource.read

    def failing(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk fell off")
        return original(self, *args)

    monkeypatch.setattr(TiffSource, "read", failing)
    out = tmp_path / "v.ome.zarr"
    with pytest.raises(RuntimeError, match="disk fell off"):
        ingest(path, out, IngestParams(chunks=[2, 64, 64]))
    assert not out.exists() and not ome.partial_path(out).exists()


def test_killed_ingest_leaves_no_complete_output(tmp_path, rng):
    truth = rng.integers(0, 60000, (48, 512, 512), dtype=np.uint16)  # 25 MB, many tiny slabs
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, truth, metadata={"axes": "ZYX"}, photometric="minisblack")
    out = tmp_path / "big.ome.zarr"
    env = {**os.environ, "ZARRSEG_NO_PROGRESS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zarrseg.cli",
            "ingest",
            str(path),
            "-o",
            str(out),
            "--set",
            "slab_mb=1",
            "--set",
            "chunks=[1,64,64]",
        ],
        env=env,
    )
    try:
        deadline = time.time() + 60
        while (
            not (ome.partial_path(out) / "0").exists()
            and time.time() < deadline
            and proc.poll() is None
        ):
            time.sleep(0.05)
        assert proc.poll() is None, "ingest finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists()  # only the .partial folder may remain, never a finished-looking output
    image = ome.open_image(ingest(path, out, IngestParams(pyramid_levels=1)))  # a re-run starts over cleanly
    np.testing.assert_array_equal(image.data[...], truth)
    assert not ome.partial_path(out).exists()


def test_params_from_config_storage_section():
    params = load_params(
        IngestParams,
        {"chunks": [16, 128, 128], "compression": {"codec": "lz4", "level": 3, "shuffle": "shuffle"}},
        where="ingest",
    )
    assert params.compression.codec == "lz4" and params.chunks == [16, 128, 128]
    with pytest.raises(ConfigError, match="did you mean 'chunks'"):
        load_params(IngestParams, {"chunk": [1, 2, 3]}, where="ingest")
    with pytest.raises(ConfigError, match="voxel_size"):
        load_params(IngestParams, {"voxel_size": [0, 1, 1]}, where="ingest")


@pytest.mark.parametrize("labels", [False, True])
def test_streamed_pyramid_equals_ome_write_pyramid(tmp_path, rng, labels):
    """Levels built from the slabs in memory equal ome.write_pyramid run on the finished level 0."""
    truth = rng.integers(0, 5000, (2, 3, 2, 133, 261), dtype=np.uint16)  # T Z C Y X, odd sizes
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, truth, imagej=True, metadata={"axes": "TZCYX"})
    params = IngestParams(chunks=[3, 64, 128], pyramid_levels=4)
    image = ome.open_image(ingest(path, tmp_path / "a.ome.zarr", params, labels=labels))
    assert len(image.level_paths) == 4
    ref_path = tmp_path / "ref.ome.zarr"
    level0 = ome.create_image(
        ref_path,
        shape=image.shape,
        dtype=image.data.dtype,
        axes=image.axes,
        scale=image.scale,
        chunks=image.data.chunks,
        n_levels=4,
        is_label=labels,
    )
    level0[...] = image.data[...]
    ome.write_pyramid(ref_path, is_label=labels)
    ref = ome.open_image(ref_path)
    for level in range(1, 4):
        np.testing.assert_array_equal(image.level(level)[...], ref.level(level)[...])


def test_czi_scenes_become_images_and_can_be_selected(tmp_path, rng, capsys):
    a = rng.integers(0, 255, (30, 40), dtype=np.uint8)
    b = rng.integers(0, 255, (20, 24), dtype=np.uint8)
    path = tmp_path / "scenes.czi"
    with pyczi.create_czi(str(path), exist_ok=True) as w:
        w.write(a, location=(0, 0), scene=0)
        w.write(b, location=(500, -300), scene=1)
    out = ingest(path, tmp_path / "all.ome.zarr")
    assert zarr.open_group(str(out), mode="r")["OME"].attrs["series"] == ["0", "1"]
    np.testing.assert_array_equal(ome.open_image(out).data[...], a)  # the container opens as scene 0
    np.testing.assert_array_equal(ome.open_image(out / "1").data[...], b)
    from zarrseg.cli import main

    assert main(["ingest", str(path), "-o", str(tmp_path / "one.ome.zarr"), "--scene", "1"]) == 0
    image = ome.open_image(tmp_path / "one.ome.zarr")
    np.testing.assert_array_equal(image.data[...], b)
    assert image.attrs["zarrseg"]["scene"] == 1 and image.attrs["zarrseg"]["czi_origin_yx"] == [-300, 500]


def test_big_endian_tiff_becomes_native(tmp_path, rng):
    truth = rng.integers(0, 60000, (3, 20, 30), dtype=np.uint16)
    path = tmp_path / "be.tif"
    tifffile.imwrite(path, truth, byteorder=">", metadata={"axes": "ZYX"}, photometric="minisblack")
    image = ome.open_image(ingest(path, tmp_path / "be.ome.zarr"))
    assert image.data.dtype == np.dtype("<u2")
    np.testing.assert_array_equal(image.data[...], truth)


def test_refuses_to_overwrite_a_foreign_folder(tmp_path, rng):
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8))
    precious = tmp_path / "my_data"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="refusing to overwrite"):
        ingest(path, precious)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_contiguous_tiff_reads_exact_byte_ranges(tmp_path, rng):
    """Uncompressed contiguous stacks bypass strip decoding; bands in y and x still give the exact pixels."""
    from zarrseg.ingest.tiff import ContiguousArray

    truth = rng.integers(0, 60000, (4, 130, 4100), dtype=np.uint16)
    path = tmp_path / "raw.tif"
    tifffile.imwrite(path, truth, byteorder=">", metadata={"axes": "ZYX"}, photometric="minisblack")
    with TiffSource(path) as src:
        assert isinstance(src._array(0), ContiguousArray)
        np.testing.assert_array_equal(
            src.read(0, 0, slice(0, 1), slice(1, 3), slice(5, 70), slice(100, 2000))[0],
            truth[1:3, 5:70, 100:2000],
        )
    image = ome.open_image(
        ingest(path, tmp_path / "raw.ome.zarr", IngestParams(chunks=[2, 64, 64], slab_mb=1))
    )
    np.testing.assert_array_equal(image.data[...], truth)


def test_container_lists_its_images_in_ome_xml(tmp_path, rng):
    """bioformats2raw readers find every scene (with its name and pixel sizes) from OME/METADATA.ome.xml."""
    import xml.etree.ElementTree as ET

    from ome_zarr.utils import find_multiscales

    path = tmp_path / "two.czi"
    with pyczi.create_czi(str(path), exist_ok=True) as w:
        w.write(rng.integers(0, 9, (12, 16), dtype=np.uint16), location=(0, 0), scene=0)
        w.write(rng.integers(0, 9, (10, 14), dtype=np.uint16), location=(100, 100), scene=1)
        w.write_metadata(scale_x=0.2e-6, scale_y=0.2e-6)
    out = ingest(path, tmp_path / "two.ome.zarr")
    found = find_multiscales(out)
    assert [Path(p).name for p, _name, _dir in found] == ["0", "1"]
    pixels = ET.parse(out / "OME" / "METADATA.ome.xml").getroot().findall(".//{*}Pixels")
    assert [(p.get("SizeX"), p.get("SizeY"), p.get("Type")) for p in pixels] == [
        ("16", "12", "uint16"),
        ("14", "10", "uint16"),
    ]
    assert float(pixels[1].get("PhysicalSizeX")) == pytest.approx(0.2)


def test_many_channels_are_split_across_slabs(tmp_path, rng):
    """When even one chunk row of all channels exceeds the budget, slabs take fewer channels."""
    truth = rng.integers(0, 60000, (6, 4, 300, 300), dtype=np.uint16)  # C Z Y X
    path = tmp_path / "multi.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("raw", data=truth)
    params = IngestParams(chunks=[4, 64, 64], slab_mb=1, pyramid_levels=2)
    from zarrseg.ingest.hdf5 import Hdf5Source

    with Hdf5Source(path, "raw") as src:
        scene = src.scenes[0]
        chunks = ome.chunk_shape(scene.axes, scene.shape, params.chunks)
        slabs, (cb, zb, yb, xb) = plan_slabs(scene, chunks, params.slab_mb * 2**20 // 2)
    assert (cb, zb, yb, xb) == (3, 4, 64, 300)
    assert cb * zb * yb * xb * 2 <= 2**19 and {(s.c.start, s.c.stop) for s in slabs} == {(0, 3), (3, 6)}
    image = ome.open_image(ingest(f"{path}:raw", tmp_path / "out.ome.zarr", params))
    np.testing.assert_array_equal(image.data[...], truth)
    expected = (
        truth.astype(np.float64).reshape(6, 4, 150, 2, 150, 2).mean(axis=(3, 5)).round().astype(np.uint16)
    )
    np.testing.assert_array_equal(image.level(1)[...], expected)


def test_czi_rgb_channel_subsets(tmp_path, rng):
    """Reading any channel range of a BGR CZI gives the matching R/G/B planes."""
    from zarrseg.ingest.czi import CziSource

    truth = rng.integers(0, 255, (2, 1, 20, 30, 3), dtype=np.uint8)  # C Z Y X BGR
    path = tmp_path / "rgb.czi"
    write_czi(path, {(0, c, 0): truth[c, 0] for c in range(2)}, [(0, 0, slice(None), slice(None))])
    rgb = np.moveaxis(truth[..., ::-1], -1, 1).reshape(6, 1, 20, 30)
    with CziSource(path) as src:
        for start, stop in [(0, 6), (1, 2), (2, 5), (5, 6)]:
            got = src.read(0, 0, slice(start, stop), slice(0, 1), slice(0, 20), slice(0, 30))
            np.testing.assert_array_equal(got, rgb[start:stop])


def test_a_single_plane_keeps_the_files_z_spacing_in_its_attributes(tmp_path):
    path = tmp_path / "plane.ome.tif"
    tifffile.imwrite(path, np.zeros((1, 16, 16), np.uint8), ome=True,
                     metadata={"axes": "ZYX", "PhysicalSizeZ": 2.5, "PhysicalSizeY": 0.5, "PhysicalSizeX": 0.5})
    image = ome.open_image(ingest(path, tmp_path / "out.ome.zarr"))
    assert image.axes == "yx" and image.attrs["zarrseg"]["plane_z_spacing_um"] == pytest.approx(2.5)


def test_ome_tiff_channel_colours_reach_omero(tmp_path):
    path = tmp_path / "two.ome.tif"
    red, green = -16776961, 16711935  # OME Color: signed RGBA (0xFF0000FF, 0x00FF00FF)
    tifffile.imwrite(path, np.zeros((2, 8, 8), np.uint16), ome=True,
                     metadata={"axes": "CYX", "Channel": {"Name": ["mCherry", "GFP"], "Color": [red, green]}})
    image = ome.open_image(ingest(path, tmp_path / "out.ome.zarr"))
    assert [(c["label"], c["color"]) for c in image.attrs["omero"]["channels"]] == [("mCherry", "FF0000"),
                                                                                   ("GFP", "00FF00")]

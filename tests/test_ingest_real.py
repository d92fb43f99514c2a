"""Every CZI / TIFF of the shared data ingests pixel-exactly with the metadata's voxel size."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import SHARED_DATA, shared_path
from ome_zarr.io import parse_url
from ome_zarr.reader import Multiscales, Reader
from pylibCZIrw import czi as pyczi

from zarrseg import ome
from zarrseg.ingest import IngestParams, ingest

CZI_FILES = sorted(p.name for p in (SHARED_DATA / "czi").glob("*.czi"))
TIFF_FILES = sorted(p.name for p in (SHARED_DATA / "ome_tiff").glob("*.tif*"))
# CZI <-> OME-TIFF/ImageJ counterparts listed in MANIFEST.md
PAIRS = [
    ("s_1_t_1_c_1_z_1.czi", "s_1_t_1_c_1_z_1.ome.tiff"),
    ("s_1_t_1_c_1_z_1.czi", "s_1_t_1_c_1_z_1.tiff"),
    ("FOV7_HV110_P0500510000.czi", "czitools_FOV7_HV110_P0500510000.ome.tiff"),
    ("CH=1_16bit.czi", "czitools_CH1_16bit.tif"),
]
# Small chunks so that even these small files are written in several slabs and chunks.
PARAMS = IngestParams(chunks=[2, 128, 128])


def _ingested(tmp_path_factory, folder: str, name: str) -> Path:
    path = shared_path(folder, name)
    out = tmp_path_factory.getbasetemp() / "ingested" / f"{name}.ome.zarr"
    if not out.exists():
        ingest(path, out, PARAMS)
    return out


def _opens_with_ome_zarr(path: Path) -> None:
    nodes = list(Reader(parse_url(str(path)))())
    assert nodes and any(isinstance(spec, Multiscales) for spec in nodes[0].specs)


@pytest.mark.shared_data
@pytest.mark.parametrize("name", CZI_FILES or ["<no shared data>"])
def test_czi_pixels_and_voxel_size(tmp_path_factory, name):
    out = _ingested(tmp_path_factory, "czi", name)
    path = shared_path("czi", name)
    with pyczi.open_czi(str(path)) as reader:
        box = reader.total_bounding_box_no_pyramid
        rects = reader.scenes_bounding_rectangle_no_pyramid or {
            None: reader.total_bounding_rectangle_no_pyramid
        }
        meta = reader.metadata["ImageDocument"]["Metadata"]
        distances = meta.get("Scaling", {}).get("Items", {}).get("Distance", [])
        distances = {d["@Id"].lower(): float(d["Value"] or 0) for d in np.atleast_1d(distances)}
        for k, (scene, rect) in enumerate(
            sorted(rects.items(), key=lambda kv: -1 if kv[0] is None else kv[0])
        ):
            image = ome.open_image(ome.scene_path(out, k))
            _opens_with_ome_zarr(ome.scene_path(out, k))
            n_t, n_c, n_z = (box[d][1] - box[d][0] for d in "TCZ")
            data = image.data[...]
            full = data.reshape(n_t, -1, n_z, rect.h, rect.w)  # restore the dropped size-1 axes
            for t in range(n_t):
                for c in range(n_c):
                    for z in range(n_z):
                        plane = reader.read(roi=rect, plane={"T": t, "C": c, "Z": z}, scene=scene)
                        if plane.shape[-1] == 3:
                            np.testing.assert_array_equal(
                                full[t, 3 * c : 3 * c + 3, z], np.moveaxis(plane[..., ::-1], -1, 0)
                            )
                        else:
                            np.testing.assert_array_equal(full[t, c, z], plane[..., 0])
            for axis, scale in zip(image.axes, image.scale, strict=True):
                if axis in "zyx":
                    expected = distances.get(axis, 0) * 1e6
                    assert scale == pytest.approx(expected if expected > 0 else 1.0)
            # the scene's place in the mosaic (its bounding rectangle's origin) in µm
            assert image.spatial_translation[-2:] == pytest.approx(
                (rect.y * image.spatial_scale[-2], rect.x * image.spatial_scale[-1]))
            assert image.units["x"] == "micrometer"
            if "t" in image.axes:  # seconds between timepoints from T/Positions (interval or offsets)
                t_meta = (meta["Information"]["Image"]["Dimensions"].get("T") or {}).get("Positions") or {}
                step = 0.0
                if "Interval" in t_meta:
                    step = float(t_meta["Interval"]["Increment"])
                elif "List" in t_meta:
                    offsets = [float(v) for v in t_meta["List"]["Offsets"].split()]
                    step = (offsets[-1] - offsets[0]) / (len(offsets) - 1)
                assert image.scale[0] == pytest.approx(step if step > 0 else 1.0)


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "name,channels",
    [
        ("DAPI_GFP.czi", [("DAPI", "0000FF"), ("GFP", "00FF00")]),  # names only in the display settings
        ("nuc_small_new_red.czi", [("nuclei", "FF0000")]),
        ("CellDivision_T3_Z5_CH2_X240_Y170.czi", [("LED555", "FF7E00"), ("LED470", "00FF33")]),
    ],
)
def test_czi_channel_names_and_colours(tmp_path_factory, name, channels):
    image = ome.open_image(_ingested(tmp_path_factory, "czi", name))
    shown = image.attrs["omero"]["channels"]
    assert [(c["label"], c["color"]) for c in shown] == channels


@pytest.mark.shared_data
@pytest.mark.parametrize("name", TIFF_FILES or ["<no shared data>"])
def test_tiff_pixels_and_voxel_size(tmp_path_factory, name):
    out = _ingested(tmp_path_factory, "ome_tiff", name)
    path = shared_path("ome_tiff", name)
    image = ome.open_image(out)
    _opens_with_ome_zarr(out)  # one scene: a plain image at the root
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        ref = series.asarray()
        letters = series.axes.replace("S", "C")
        keep = [i for i, n in enumerate(ref.shape) if n > 1 or letters[i] in "YX"]
        ref = ref.reshape([ref.shape[i] for i in keep])
        order = sorted(range(len(keep)), key=lambda i: "TCZYX".index(letters[keep[i]]))
        np.testing.assert_array_equal(image.data[...], ref.transpose(order))
        expected = {}
        if tif.is_ome:
            pixels = ET.fromstring(tif.ome_metadata).find(".//{*}Pixels")
            expected = {
                a: float(pixels.get(f"PhysicalSize{a.upper()}"))
                for a in "yx"
                if pixels.get(f"PhysicalSize{a.upper()}")
            }
        elif tif.is_imagej and tif.imagej_metadata.get("unit") in ("micron", "um", "µm"):
            num, den = series.keyframe.tags["XResolution"].value
            expected = {"x": den / num, "y": den / num}
    assert image.spatial_scale[-2:] == pytest.approx((expected.get("y", 1.0), expected.get("x", 1.0)))


@pytest.mark.shared_data
@pytest.mark.parametrize("czi_name,tiff_name", PAIRS)
def test_czi_matches_its_tiff_counterpart(tmp_path_factory, czi_name, tiff_name):
    a = ome.open_image(_ingested(tmp_path_factory, "czi", czi_name))
    b = ome.open_image(_ingested(tmp_path_factory, "ome_tiff", tiff_name))
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.data[...], b.data[...])


@pytest.mark.shared_data
def test_zstd_compressed_czis_decode_like_the_uncompressed_one(tmp_path_factory):
    plain = ome.open_image(_ingested(tmp_path_factory, "czi", "CellDivision_T3_Z5_CH2_X240_Y170.czi")).data[
        ...
    ]
    for name in ("CellDivision_T3_Z5_CH2_X240_Y170_comp1.czi", "CellDivision_T3_Z5_CH2_X240_Y170_comp2.czi"):
        np.testing.assert_array_equal(
            ome.open_image(_ingested(tmp_path_factory, "czi", name)).data[...], plain
        )


@pytest.mark.shared_data
def test_bgr24_against_raw_subblock_bytes(tmp_path_factory):
    """Independent decode: the one uncompressed Bgr24 subblock of Fluorescence_RGB.czi, read from the file bytes.

    (Its listed TIFF counterpart differs: R and G are swapped and shifted by one pixel there, B matches.)
    """
    raw = shared_path("czi", "Fluorescence_RGB.czi").read_bytes()
    seg = raw.index(b"ZISRAWSUBBLOCK") + 32
    meta_size, _attachment, data_size = struct.unpack_from("<iiq", raw, seg)
    assert struct.unpack_from("<i", raw, seg + 16 + 18)[0] == 0  # uncompressed
    n_dims = struct.unpack_from("<i", raw, seg + 16 + 28)[0]
    start = seg + max(256, 16 + 32 + 20 * n_dims) + meta_size
    image = ome.open_image(_ingested(tmp_path_factory, "czi", "Fluorescence_RGB.czi"))
    c, h, w = image.shape
    bgr = np.frombuffer(raw[start : start + data_size], np.uint8).reshape(h, w, 3)
    np.testing.assert_array_equal(image.data[...], np.moveaxis(bgr[..., ::-1], -1, 0))
    tiff = ome.open_image(_ingested(tmp_path_factory, "ome_tiff", "czitools_CH3_Fluorescence_8bit.tif")).data[
        ...
    ]
    np.testing.assert_array_equal(image.data[2], tiff[2])


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["tiles.czi", "S3_1Pos_2Mosaic_T2_Z3_CH2_sm.czi", "1_tileregion.czi"])
def test_mosaic_tiles_land_at_their_stage_positions(tmp_path_factory, name):
    """Each layer-0 subblock's region (stage coordinates, also negative) is where the reader puts it."""
    out = _ingested(tmp_path_factory, "czi", name)
    with pyczi.open_czi(str(shared_path("czi", name))) as reader:
        rects = reader.scenes_bounding_rectangle_no_pyramid or {
            None: reader.total_bounding_rectangle_no_pyramid
        }
        ordered = sorted(rects.items(), key=lambda kv: -1 if kv[0] is None else kv[0])
        found: set[tuple[int, int, int, int]] = set()

        def collect(_index, info) -> bool:
            r = info.logicalRect
            found.add((r.x, r.y, r.w, r.h))
            return True

        reader.enumerate_subblocks_subset(collect, only_layer0=True)
        tiles = sorted(found)
        assert len(tiles) >= 2  # a mosaic
        checked = 0
        for k, (scene, rect) in enumerate(ordered):
            image = ome.open_image(ome.scene_path(out, k))
            view = ome.SpatialView.of(image)
            for tx, ty, tw, th in tiles:
                x0, y0 = tx - rect.x, ty - rect.y
                if not (0 <= x0 and 0 <= y0 and x0 + tw <= rect.w and y0 + th <= rect.h):
                    continue  # tile of another scene
                expected = reader.read(roi=(tx, ty, tw, th), plane={"C": 0, "T": 0, "Z": 0}, scene=scene)
                box = (slice(y0, y0 + th), slice(x0, x0 + tw))
                got = view[box] if view.ndim == 2 else view[(slice(0, 1), *box)][0]
                np.testing.assert_array_equal(got, expected[..., 0])
                checked += 1
        assert checked == len(tiles)  # every tile lies inside one scene


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "spec,labels",
    [
        ("gala_fibsem/train-p1.lzf.h5:stack", False),
        ("plantseg_crops/sample_ovule.h5:raw", False),
        ("plantseg_crops/sample_ovule.h5:label", True),
    ],
)
def test_hdf5_shared_datasets(tmp_path, spec, labels):
    import h5py

    file, dataset = spec.split(":")
    path = shared_path(*file.split("/"))
    image = ome.open_image(ingest(f"{path}:{dataset}", tmp_path / "out.ome.zarr", labels=labels))
    with h5py.File(path, "r") as f:
        ref = f[dataset][...]
        element = f[dataset].attrs.get("element_size_um")
    np.testing.assert_array_equal(image.data[...], ref)
    assert image.data.dtype == ref.dtype
    if element is not None:
        assert image.spatial_scale == pytest.approx(tuple(float(v) for v in element))
    assert ("image-label" in image.attrs) == labels


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "parts,axes,labels",
    [
        (("plantseg_crops", "rgb_3D_0.tiff"), None, False),  # ImageJ hyperstack, deflate
        (("plantseg_crops", "rgb_3D_0_segm.tiff"), None, True),
        (("plantseg_crops", "rgb_3D_c_raw.tif"), "czyx", False),  # shaped 'QQYX': needs the axes parameter
        (("isbi2012_em_membrane", "train-volume_from_png.tif"), None, False),  # plain pages -> z
        (("dsb2018_sample", "img2d.tif"), None, False),
    ],
)
def test_other_shared_tiffs(tmp_path, parts, axes, labels):
    path = shared_path(*parts)
    image = ome.open_image(ingest(path, tmp_path / "out.ome.zarr", IngestParams(axes=axes), labels=labels))
    ref = tifffile.imread(path)
    np.testing.assert_array_equal(image.data[...], np.squeeze(ref))
    assert image.axes == {2: "yx", 3: "zyx", 4: "czyx"}[np.squeeze(ref).ndim]
    assert ("image-label" in image.attrs) == labels

"""Bad inputs: one error line naming the file and problem, non-zero exit, nothing left behind."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from conftest import shared_path
from pylibCZIrw import czi as pyczi

from zarrseg import ome
from zarrseg.cli import main


def _run_cli(capsys, *argv: str) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(["ingest", *argv])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


def _assert_clean_failure(
    capsys, tmp_path: Path, source: str, *needles: str, extra: tuple[str, ...] = ()
) -> None:
    out = tmp_path / "out.ome.zarr"
    code, lines = _run_cli(capsys, source, "-o", str(out), *extra)
    assert code != 0
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("zarrseg ingest: error:")
    for needle in needles:
        assert needle in line, line
    assert not out.exists() and not ome.partial_path(out).exists()


def _small_czi(path: Path) -> Path:
    with pyczi.create_czi(str(path), exist_ok=True) as w:
        for z in range(4):
            w.write(np.full((64, 80), z * 10, np.uint16), plane={"Z": z})
    return path


def test_truncated_real_czi(tmp_path, capsys):
    data = shared_path("czi", "CellDivision_T3_Z5_CH2_X240_Y170.czi").read_bytes()
    path = tmp_path / "cut.czi"
    path.write_bytes(data[: len(data) // 2])
    _assert_clean_failure(capsys, tmp_path, str(path), str(path), "truncated")


def test_truncated_written_czi(tmp_path, capsys):
    path = _small_czi(tmp_path / "small.czi")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    _assert_clean_failure(capsys, tmp_path, str(path), str(path), "truncated")


def test_non_image_renamed_czi(tmp_path, capsys):
    path = tmp_path / "notes.czi"
    path.write_text("this is a lab notebook, not an image\n" * 20)
    _assert_clean_failure(capsys, tmp_path, str(path), str(path), "not a CZI file")


def test_empty_file(tmp_path, capsys):
    for name in ("empty.czi", "empty.tif"):
        path = tmp_path / name
        path.touch()
        _assert_clean_failure(capsys, tmp_path, str(path), str(path), "empty")


def test_missing_file(tmp_path, capsys):
    _assert_clean_failure(capsys, tmp_path, str(tmp_path / "nope.czi"), "nope.czi", "does not exist")


def test_unsupported_pixel_type_tiff(tmp_path, capsys):
    path = tmp_path / "complex.tif"
    tifffile.imwrite(path, np.zeros((16, 16), np.complex64))
    _assert_clean_failure(capsys, tmp_path, str(path), str(path), "unsupported pixel type complex64")


def test_unsupported_pixel_type_czi(tmp_path, capsys):
    """A Gray16 CZI whose directory and subblock say Gray32 (int32, not decodable by libCZI's accessor)."""
    path = _small_czi(tmp_path / "gray32.czi")
    raw = bytearray(path.read_bytes())
    pos = 0
    while (pos := raw.find(b"DV", pos)) != -1:  # directory entries and subblock headers
        if struct.unpack_from("<i", raw, pos + 2)[0] == 1:  # Gray16
            struct.pack_into("<i", raw, pos + 2, 7)  # Gray32
        pos += 2
    path.write_bytes(bytes(raw))
    _assert_clean_failure(capsys, tmp_path, str(path), str(path), "unsupported CZI pixel type")


def test_tiff_axes_cannot_be_resolved(tmp_path, capsys):
    path = tmp_path / "ambiguous.tif"
    tifffile.imwrite(path, np.zeros((3, 2, 16, 16), np.uint8), photometric="minisblack")  # axes QQYX
    _assert_clean_failure(capsys, tmp_path, str(path), str(path), "cannot resolve image axes", "axes=")


def test_hdf5_without_the_dataset(tmp_path, capsys):
    path = tmp_path / "vol.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("raw", data=np.zeros((4, 8, 8), np.uint8))
    _assert_clean_failure(capsys, tmp_path, f"{path}:labels", str(path), "no dataset 'labels'", "raw")


def test_scene_out_of_range_and_bad_parameter(tmp_path, capsys):
    path = _small_czi(tmp_path / "small.czi")
    _assert_clean_failure(
        capsys, tmp_path, str(path), str(path), "scene 3 does not exist", extra=("--scene", "3")
    )
    _assert_clean_failure(
        capsys, tmp_path, str(path), "unknown parameter 'chunk'", extra=("--set", "chunk=[1,2,3]")
    )
    # checked before any work (Blosc alone would refuse a level only when writing; NaN would
    # reach the image's metadata as invalid JSON)
    _assert_clean_failure(
        capsys, tmp_path, str(path), "compression.level must be in 0..9, got 99", extra=("--set", "compression.level=99")
    )
    for bad in ("[.nan, 1, 1]", "[.inf, 1, 1]"):
        _assert_clean_failure(capsys, tmp_path, str(path), "positive, finite", extra=("--set", f"voxel_size={bad}"))


def test_corrupt_existing_output_is_replaced(tmp_path, capsys):
    """A leftover partial folder from a killed run does not block or pollute a new run."""
    path = _small_czi(tmp_path / "small.czi")
    out = tmp_path / "out.ome.zarr"
    partial = ome.partial_path(out)
    partial.mkdir()
    (partial / "junk").write_text("x")
    code, lines = _run_cli(capsys, str(path), "-o", str(out))
    assert code == 0 and not [line for line in lines if "error" in line.lower()]
    assert not partial.exists()
    assert ome.open_image(out).shape == (4, 64, 80)
    shutil.rmtree(out)


@pytest.mark.parametrize("content", [b"II*\x00" + b"\x00" * 60, b"\x89HDF\r\n\x1a\n" + b"\x00" * 60])
def test_corrupt_tiff_and_hdf5_headers(tmp_path, capsys, content):
    path = tmp_path / ("bad.tif" if content.startswith(b"II") else "bad.h5")
    path.write_bytes(content)
    _assert_clean_failure(capsys, tmp_path, str(path), str(path), "not a readable")


def test_truncated_uncompressed_tiff(tmp_path, capsys):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(
        path, np.ones((6, 64, 64), np.uint16), metadata={"axes": "ZYX"}, photometric="minisblack"
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 5000])
    _assert_clean_failure(capsys, tmp_path, str(path), str(path), "truncated")

"""OME-Zarr writing/reading, pyramids, spatial views and atomic outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from zarrseg.errors import InputError
from zarrseg.ome import SpatialView, atomic_output, create_image, open_image, partial_path, write_pyramid
from zarrseg.runs import RECORD


def test_image_round_trip_with_pyramid(tmp_path, rng):
    data = rng.integers(0, 4000, (3, 2, 40, 1100, 300), dtype=np.uint16)
    path = tmp_path / "img.ome.zarr"
    arr = create_image(path, shape=data.shape, dtype=data.dtype, axes="tczyx", scale=(1, 1, 2.0, 0.5, 0.5),
                       chunks=(1, 1, 16, 256, 256), channel_names=["dapi", "gfp"], n_levels=None)
    arr[:] = data
    write_pyramid(path)
    image = open_image(path)
    assert image.axes == "tczyx" and image.scale == (1, 1, 2.0, 0.5, 0.5)
    assert image.channel_names == ["dapi", "gfp"]
    assert np.array_equal(image.data[:], data)
    # down to < 512 px in y/x: 1100 -> 550 -> 275
    assert [image.level(i).shape[-2:] for i in range(len(image.level_paths))] == [(1100, 300), (550, 150), (275, 75)]
    expected = data[..., :2, :2].reshape(3, 2, 40, 1, 2, 1, 2).mean(axis=(4, 6)).round()[..., 0, 0]
    assert np.array_equal(image.level(1)[:, :, :, 0, 0], expected.astype(np.uint16))
    view = SpatialView.of(image, channel=1, timepoint=2)
    assert view.shape == (40, 1100, 300)
    assert np.array_equal(view[(slice(0, 5), slice(10, 20), slice(0, 300))], data[2, 1, 0:5, 10:20])
    with pytest.raises(InputError, match="channel 2"):
        SpatialView.of(image, channel=2)


def test_translation_round_trips_and_each_level_gets_its_first_voxel_centre(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    for is_label, shift in ((False, 0.25), (True, 0.0)):  # mean: a level's first voxel averages 2^k voxels
        path = tmp_path / f"t{int(is_label)}.ome.zarr"
        create_image(path, shape=(2, 64, 48), dtype=np.uint16, axes="zyx", scale=(2.0, 0.5, 0.5), chunks=(1, 32, 32),
                     n_levels=3, is_label=is_label, translation=(4.0, 10.0, -5.0))
        image = open_image(path)
        assert image.translation == (4.0, 10.0, -5.0) and image.spatial_translation == (4.0, 10.0, -5.0)
        datasets = image.attrs["multiscales"][0]["datasets"]
        levels = [d["coordinateTransformations"][1]["translation"] for d in datasets]
        assert levels == [[4.0, 10.0, -5.0], [4.0, 10.0 + shift, -5.0 + shift], [4.0, 10.0 + 3 * shift, -5.0 + 3 * shift]]
        assert list(Reader(parse_url(str(path)))())  # ome-zarr-py reads the transformations
    plain = tmp_path / "plain.ome.zarr"  # no translation: none written, zeros read
    create_image(plain, shape=(8, 8), dtype=np.uint8, axes="yx", scale=(1, 1), chunks=(8, 8))
    assert len(open_image(plain).attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"]) == 1
    assert open_image(plain).spatial_translation == (0.0, 0.0)
    attrs = dict(open_image(path).attrs)  # a translation of the wrong length is malformed metadata
    attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][1]["translation"] = [1.0, 2.0]
    import zarr

    zarr.open_group(str(path), mode="r+").attrs.update(attrs)
    with pytest.raises(InputError, match="malformed OME-Zarr multiscales metadata"):
        open_image(path)


def test_label_pyramid_is_nearest(tmp_path):
    labels = np.repeat(np.arange(1, 5, dtype=np.uint32), 300).reshape(4, 300)
    labels = np.broadcast_to(labels[:, None, :], (4, 1100, 300)).copy()
    path = tmp_path / "lab.ome.zarr"
    create_image(path, shape=labels.shape, dtype=labels.dtype, axes="zyx", scale=(1, 1, 1), chunks=(2, 256, 256),
                 n_levels=3, is_label=True)[:] = labels
    write_pyramid(path)
    image = open_image(path)
    assert "image-label" in image.attrs
    assert set(np.unique(image.level(2)[:])) <= set(np.unique(labels))


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "x.ome.zarr"
    with pytest.raises(RuntimeError), atomic_output(out) as tmp:
        create_image(tmp, shape=(4, 4), dtype="u1", axes="yx", scale=(1, 1), chunks=(4, 4))
        raise RuntimeError("crash")
    assert not out.exists() and not partial_path(out).exists()
    with atomic_output(out) as tmp:
        create_image(tmp, shape=(4, 4), dtype="u1", axes="yx", scale=(1, 1), chunks=(4, 4))
        assert not out.exists()  # never visible before it is complete
    assert out.exists() and open_image(out).shape == (4, 4)


def test_atomic_output_resume_keeps_partial(tmp_path):
    out = tmp_path / "y.zarr"
    with pytest.raises(RuntimeError), atomic_output(out, resume=True) as tmp:
        tmp.mkdir()
        (tmp / "marker").write_text("done block")
        raise RuntimeError("killed")
    assert (partial_path(out) / "marker").exists() and not out.exists()
    with atomic_output(out, resume=True) as tmp:
        assert (tmp / "marker").read_text() == "done block"
    assert (out / "marker").exists()


def test_open_image_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_image(tmp_path / "missing.ome.zarr")
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError):
        open_image(tmp_path / "folder")


def test_snakemake_marker_warning_is_silenced_and_nothing_else(tmp_path):
    """zarr warns about the .snakemake_timestamp Snakemake puts into directory outputs; only that is silenced."""
    import warnings

    import zarr

    from zarrseg.ome import ignore_snakemake_markers

    path = tmp_path / "labels.ome.zarr"
    create_image(path, shape=(8, 8), dtype="uint32", axes="yx", scale=(1, 1), chunks=(8, 8), is_label=True)
    (path / ".snakemake_timestamp").touch()

    def listed() -> list[str]:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("default")
            ignore_snakemake_markers() if silenced else None
            list(zarr.open_group(str(path), mode="r"))
        return [str(w.message) for w in seen if "not recognized" in str(w.message)]

    silenced = False
    assert any(".snakemake_timestamp" in m for m in listed())  # zarr does warn without the filter
    silenced = True
    assert listed() == []
    (path / "junk").touch()
    assert [m for m in listed() if "junk" in m]  # other foreign files still warn


def test_atomic_output_never_replaces_what_zarrseg_did_not_write(tmp_path):
    from zarrseg.errors import OutputError

    data = tmp_path / "my_data"
    data.mkdir()
    (data / "important.txt").write_text("years of work")
    with pytest.raises(OutputError, match="not written by zarrseg"), atomic_output(data) as tmp:
        tmp.mkdir()
    assert (data / "important.txt").read_text() == "years of work" and not partial_path(data).exists()
    # a folder output zarrseg wrote (its mark, or zarrseg attributes) is replaced by a rerun
    out = tmp_path / "out"
    for _ in range(2):
        with atomic_output(out) as tmp:
            tmp.mkdir()
            (tmp / "result").write_text("x")
    assert (out / "result").exists()
    # someone's file is replaced neither by a folder nor by a file output: refused before the body runs
    note = tmp_path / "note.txt"
    note.write_text("keep")
    for make in (Path.mkdir, lambda p: p.write_text("new")):
        ran = []
        with pytest.raises(OutputError, match="no record of writing it"), atomic_output(note) as tmp:
            ran.append(make(tmp))
        assert not ran and note.read_text() == "keep" and not partial_path(note).exists()
    # a file output zarrseg wrote (named in its folder's record) is replaced by a rerun, but not by a folder
    table = tmp_path / "table.csv"
    for text in ("first", "second"):
        with atomic_output(table) as tmp:
            tmp.write_text(text)
    assert table.read_text() == "second" and (tmp_path / RECORD).read_text().splitlines() == ["table.csv"]
    with pytest.raises(OutputError, match="exists as a file"), atomic_output(table) as tmp:
        tmp.mkdir()
    assert table.read_text() == "second" and not partial_path(table).exists()


def test_bare_arrays_and_damaged_chunks_are_one_clear_line(tmp_path, capsys):
    import zarr
    from conftest import write_image

    from zarrseg.cli import main

    bare = tmp_path / "bare.zarr"
    zarr.open(str(bare), mode="w", shape=(8, 8), dtype="f4")[:] = 1.0
    with pytest.raises(InputError, match="bare Zarr array"):
        open_image(bare)
    one_channel = write_image(tmp_path / "one.ome.zarr", np.zeros((8, 8), "f4"))
    with pytest.raises(InputError, match="channel 1 asked for, but the image has no channel axis"):
        SpatialView.of(open_image(one_channel), channel=1)  # not silently channel 0
    image = write_image(tmp_path / "img.ome.zarr", np.random.default_rng(0).random((16, 16)).astype("f4"),
                        chunks=(8, 8))
    chunk = next(p for p in (tmp_path / "img.ome.zarr" / "0").rglob("*") if p.is_file() and not p.name.startswith("."))
    chunk.write_bytes(chunk.read_bytes()[:10])  # a truncated chunk file
    with pytest.raises(InputError, match=r"img.ome.zarr: cannot read the block \[0:16, 0:16\]"):
        SpatialView.of(open_image(image))[(slice(0, 16), slice(0, 16))]
    out = tmp_path / "p.ome.zarr"
    assert main(["predict", image, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "img.ome.zarr: cannot read the block" in err[0]
    assert not out.exists()


def test_resumable_state_files_are_never_half_written_and_removal_starts_with_the_fingerprint(tmp_path):
    from zarrseg.runs import atomic_save, remove_work

    table = tmp_path / "node_of.npy"
    atomic_save(table, lambda tmp: np.save(tmp, np.arange(5)))
    assert np.load(table).tolist() == [0, 1, 2, 3, 4] and sorted(p.name for p in tmp_path.iterdir()) == ["node_of.npy"]

    def killed(tmp):  # the process dies halfway through the write
        tmp.write_bytes(b"\x93NUMPY half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_save(table, killed)
    assert np.load(table).tolist() == [0, 1, 2, 3, 4]  # the whole earlier table, never the half one
    work = tmp_path / "_work"
    (work / "blocks").mkdir(parents=True)
    (work / "fingerprint.json").write_text("{}")
    removed = []
    import shutil

    real = shutil.rmtree
    shutil.rmtree = lambda p, *a, **k: removed.append((work / "fingerprint.json").exists()) or real(p, *a, **k)
    try:
        remove_work(work)
    finally:
        shutil.rmtree = real
    assert removed == [False] and not work.exists()

"""The encoding pipeline of ingest: parallel chunk writes, lower levels from slabs, each chunk once."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import tifffile
import zarr

from zarrseg import ome
from zarrseg.ingest import IngestParams, ingest, pipeline
from zarrseg.ingest.pipeline import chunk_boxes, mean_2x2


@pytest.mark.parametrize("dtype", ["u1", "u2", "i2", "u4", "i4"])
def test_integer_mean_rounds_like_numpy(rng, dtype):
    info = np.iinfo(dtype)
    plane = rng.integers(info.min, info.max, (37, 51), dtype=dtype, endpoint=True)
    plane[:4, :4] = np.array([[0, 1, 0, 2], [1, 0, 2, 1], [3, 3, 5, 5], [3, 3, 5, 5]], dtype)  # exact .5 ties
    np.testing.assert_array_equal(mean_2x2(plane), ome.downsample(plane, (2, 2), False))


def test_chunk_boxes_split_on_the_grid():
    boxes = list(chunk_boxes((0, slice(0, 5), slice(3, 11)), (1, 4, 4)))
    assert [b for b, _ in boxes] == [(0, slice(0, 4), slice(3, 4)), (0, slice(0, 4), slice(4, 8)),
                                     (0, slice(0, 4), slice(8, 11)), (0, slice(4, 5), slice(3, 4)),
                                     (0, slice(4, 5), slice(4, 8)), (0, slice(4, 5), slice(8, 11))]
    assert boxes[1][1] == (slice(0, 4), slice(1, 5))  # the integer axis is not in the block


def _reference_pyramid(image: ome.Image, path, n_levels: int) -> ome.Image:
    level0 = ome.create_image(path, shape=image.shape, dtype=image.data.dtype, axes=image.axes, scale=image.scale,
                              chunks=image.data.chunks, n_levels=n_levels)
    level0[...] = image.data[...]
    ome.write_pyramid(path)
    return ome.open_image(path)


@pytest.mark.parametrize("width", [700, 4100], ids=["y-bands", "x-bands"])
def test_many_slabs_on_many_threads_write_every_chunk_once(tmp_path, rng, monkeypatch, width):
    """Small slabs (y bands; x bands for a wide image) on 4 threads: the levels equal write_pyramid's,
    and no chunk of any level is stored twice (each is encoded once, never read back and redone)."""
    truth = rng.integers(0, 60000, (6, 300, width), dtype=np.uint16)
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, truth, metadata={"axes": "ZYX"}, photometric="minisblack")
    stores: Counter = Counter()
    original = zarr.storage.LocalStore.set

    async def counting_set(self, key, value):
        if not key.rsplit("/", 1)[-1].startswith(".") and self.root.name.startswith("out.ome.zarr"):
            stores[key] += 1
        return await original(self, key, value)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", counting_set)
    params = IngestParams(chunks=[2, 64, 64], slab_mb=1, pyramid_levels=4, threads=4)
    image = ome.open_image(ingest(path, tmp_path / "out.ome.zarr", params))
    np.testing.assert_array_equal(image.data[...], truth)
    ref = _reference_pyramid(image, tmp_path / "ref.ome.zarr", 4)
    for level in range(1, 4):
        np.testing.assert_array_equal(image.level(level)[...], ref.level(level)[...])
    written = [k for k in stores if k.startswith(("0/", "1/", "2/", "3/"))]
    expected = sum(int(np.prod([-(-n // c) for n, c in zip(image.level(k).shape, image.level(k).chunks,
                                                               strict=True)])) for k in range(4))
    assert len(written) == expected  # every chunk of every level, empty ones included
    if width == 700:
        assert max(stores[k] for k in written) == 1
    else:  # x bands: only lower-level chunks shared by two bands are completed in a second write
        assert all(stores[k] == 1 for k in written if k.startswith("0/"))


def test_a_failing_chunk_write_stops_the_ingest(tmp_path, rng, monkeypatch):
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, rng.integers(0, 255, (8, 256, 256), dtype=np.uint8), photometric="minisblack")
    calls = {"n": 0}
    original = pipeline._write_chunk

    def failing(*args):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk fell off")
        return original(*args)

    monkeypatch.setattr(pipeline, "_write_chunk", failing)
    out = tmp_path / "v.ome.zarr"
    with pytest.raises(OSError, match="disk fell off"):
        ingest(path, out, IngestParams(chunks=[1, 64, 64], slab_mb=1, threads=2))
    assert not out.exists() and not ome.partial_path(out).exists()


def test_another_thread_count_is_the_same_output(tmp_path, rng, caplog):
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, rng.integers(0, 255, (4, 64, 64), dtype=np.uint8), photometric="minisblack")
    out = ingest(path, tmp_path / "v.ome.zarr", IngestParams(threads=1))
    caplog.set_level("INFO", logger="zarrseg.ingest.writer")
    ingest(path, out, IngestParams(threads=3))
    assert "up to date" in caplog.text

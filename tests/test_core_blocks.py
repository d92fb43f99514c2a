"""The block contract and the Dask block scheduler shared by every blockwise stage."""

from __future__ import annotations

import numpy as np
import pytest

from zarrseg.blocks import BlockGrid, check_halo
from zarrseg.errors import ConfigError
from zarrseg.parallel import DaskParams, map_blocks


def test_grid_covers_volume_exactly_once():
    grid = BlockGrid((10, 33, 17), (4, 8, 8), halo=(1, 2, 3))
    cover = np.zeros((10, 33, 17), int)
    for block in grid:
        cover[block.inner] += 1
        for i, o, h, s in zip(block.inner, block.outer, grid.halo, grid.shape, strict=True):
            assert o.start == max(i.start - h, 0) and o.stop == min(i.stop + h, s)
    assert (cover == 1).all()
    assert len(grid) == 3 * 5 * 3


def test_local_crop_maps_outer_read_to_inner():
    vol = np.arange(20 * 20).reshape(20, 20)
    grid = BlockGrid(vol.shape, (7, 7), halo=3)
    for block in grid:
        assert np.array_equal(vol[block.outer][block.local], vol[block.inner])


def test_face_neighbours_and_colours():
    grid = BlockGrid((8, 8), (4, 4))
    b0 = grid.block_at((0, 0))
    axes = sorted(axis for axis, _ in grid.face_neighbours(b0))
    assert axes == [0, 1]
    for _, nb in grid.face_neighbours(b0):
        assert nb.colour != b0.colour
    assert grid.face_slices() == [(0, 4), (1, 4)]


@pytest.mark.parametrize("bad", [dict(block_shape=(4,)), dict(block_shape=(0, 4)), dict(halo=(-1, 0))])
def test_grid_rejects_bad_geometry(bad):
    kwargs = dict(shape=(8, 8), block_shape=(4, 4), halo=(0, 0)) | bad
    with pytest.raises(ConfigError):
        BlockGrid(**kwargs)


def test_check_halo():
    check_halo((8, 8), (2, 2))
    with pytest.raises(ConfigError, match="larger than halo"):
        check_halo((8, 4), (2, 4))


def _square(block):
    return {"id": block.id, "sum": int(np.sum(block.begin)) ** 2}


@pytest.mark.parametrize("scheduler", ["synchronous", "threads", "processes"])
def test_map_blocks_ordered_results(scheduler):
    grid = BlockGrid((30, 30), (10, 10))
    out = map_blocks(_square, grid, name="t", dask_params=DaskParams(scheduler=scheduler, n_workers=2))
    assert [r["id"] for r in out] == list(range(len(grid)))
    assert [r["sum"] for r in out] == [int(sum(b.begin)) ** 2 for b in grid]


class _FailOn:
    def __init__(self, bad: int):
        self.bad, self.calls = bad, []

    def __call__(self, block):
        self.calls.append(block.id)
        if block.id == self.bad:
            raise RuntimeError("boom")
        return {"v": np.arange(3) + block.id}


class _FailThird(_FailOn):
    """Fails the third block it is given, whichever that is (Dask picks the order)."""

    def __call__(self, block):
        if len(self.calls) == 2:
            self.bad = block.id
        return super().__call__(block)


def test_map_blocks_resumes_from_done_markers(tmp_path):
    grid = BlockGrid((20, 20), (5, 5))
    # a fixed failing block id ran first in some runs (Dask's order is not the block order), leaving
    # no finished block to resume from: fail the third block run instead
    failing = _FailThird(bad=-1)
    with pytest.raises(RuntimeError):
        map_blocks(failing, grid, name="t", dask_params=DaskParams(scheduler="synchronous"), done_dir=tmp_path)
    done_before = {int(p.stem) for p in tmp_path.glob("*.npz")}
    assert failing.bad not in done_before and done_before  # finished blocks have markers, the failed one not
    ok = _FailOn(bad=-1)
    out = map_blocks(ok, grid, name="t", dask_params=DaskParams(scheduler="synchronous"), done_dir=tmp_path)
    assert set(ok.calls) == set(range(len(grid))) - done_before  # only unfinished blocks recomputed
    assert all(np.array_equal(r["v"], np.arange(3) + i) for i, r in enumerate(out))

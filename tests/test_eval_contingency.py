"""The blockwise overlap table equals the whole-volume one (>= 8 blocks), with and without a mask."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import shared_path, write_image
from skimage.metrics import contingency_table

from zarrseg import ome
from zarrseg.errors import InputError
from zarrseg.evaluation import Contingency, blockwise_contingency
from zarrseg.parallel import DaskParams


def label_image(path, array: np.ndarray, chunks=(8, 16, 16)) -> ome.SpatialView:
    return ome.SpatialView.of(ome.open_image(write_image(path, array, chunks=chunks, is_label=True)))


def test_from_arrays_matches_skimage_contingency(rng):
    gt = rng.integers(0, 7, (11, 13))
    seg = rng.integers(0, 5, (11, 13)) * 1000
    table = Contingency.from_arrays(seg, gt)
    dense = contingency_table(gt, seg).toarray()
    nz_gt, nz_seg = np.nonzero(dense)
    order = np.lexsort((nz_gt, nz_seg))
    assert np.array_equal(table.seg, nz_seg[order]) and np.array_equal(table.gt, nz_gt[order])
    assert np.array_equal(table.count, dense[nz_gt, nz_seg][order])
    assert table.n == gt.size


def test_merge_of_parts_equals_whole(rng):
    gt = rng.integers(0, 9, 1000)
    seg = rng.integers(0, 4, 1000).astype(np.uint64) * np.uint64(2**50)
    parts = [Contingency.from_arrays(seg[i : i + 130], gt[i : i + 130]) for i in range(0, 1000, 130)]
    assert Contingency.merge(parts).equals(Contingency.from_arrays(seg, gt))
    assert Contingency.merge([]).n == 0


@pytest.mark.parametrize("scheduler", ["threads", "synchronous"])
def test_blockwise_equals_whole_volume(tmp_path, rng, scheduler):
    shape = (21, 37, 45)  # not divisible by the block shape: ragged border blocks
    gt = rng.integers(0, 40, shape).astype(np.int32)
    seg = rng.integers(0, 300, shape).astype(np.uint64) << np.uint64(33)  # ids beyond 32 bits
    seg_v, gt_v = label_image(tmp_path / "seg.zarr", seg), label_image(tmp_path / "gt.zarr", gt)
    block_shape = (8, 16, 16)
    n_blocks = int(np.prod([-(-s // b) for s, b in zip(shape, block_shape, strict=True)]))
    assert n_blocks >= 8
    table = blockwise_contingency(
        seg_v, gt_v, block_shape=block_shape, dask_params=DaskParams(scheduler=scheduler, n_workers=2)
    )
    assert table.equals(Contingency.from_arrays(seg, gt))
    # a mask drops exactly the masked voxels
    mask = (rng.random(shape) < 0.7).astype(np.uint8)
    mask_v = label_image(tmp_path / "mask.zarr", mask)
    masked = blockwise_contingency(seg_v, gt_v, mask=mask_v, block_shape=block_shape)
    keep = mask != 0
    assert masked.equals(Contingency.from_arrays(seg[keep], gt[keep]))


def test_blockwise_equals_whole_volume_on_gala(tmp_path, shared_data):
    with h5py.File(shared_path("gala_fibsem", "test-gt.lzf.h5")) as f:
        gt = f["stack"][:]
    with h5py.File(shared_path("gala_fibsem", "test-ws.lzf.h5")) as f:
        ws = f["stack"][:]
    views = (
        label_image(tmp_path / "ws.zarr", ws, (16, 32, 32)),
        label_image(tmp_path / "gt.zarr", gt, (16, 32, 32)),
    )
    table = blockwise_contingency(*views, block_shape=(20, 40, 64))  # 3 x 3 x 4 = 36 blocks
    assert table.equals(Contingency.from_arrays(ws, gt))
    assert table.n == gt.size


def test_2d_and_bad_inputs(tmp_path, rng):
    gt = rng.integers(0, 5, (40, 50)).astype(np.uint16)
    seg_v, gt_v = label_image(tmp_path / "s.zarr", gt.astype(np.uint32)), label_image(tmp_path / "g.zarr", gt)
    table = blockwise_contingency(seg_v, gt_v, block_shape=(64, 16, 16))  # (z, y, x) config on a 2D image
    assert table.equals(Contingency.from_arrays(gt, gt))
    other = label_image(tmp_path / "o.zarr", np.zeros((40, 49), np.uint8))
    with pytest.raises(InputError, match="differs"):
        blockwise_contingency(seg_v, other)
    neg = label_image(tmp_path / "n.zarr", -np.ones((40, 50), np.int16))
    with pytest.raises(InputError, match="negative"):
        blockwise_contingency(neg, gt_v)

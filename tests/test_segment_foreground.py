"""Foreground map -> instances (segment partitioner ``connected_components``, optional ``split``):
exact components across blocks, splitting of touching objects, necks, resumability, input forms."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_image
from skimage.measure import label

from zarrseg import ome
from zarrseg.errors import ConfigError
from zarrseg.evaluation.contingency import Contingency
from zarrseg.evaluation.instance import instance_metrics
from zarrseg.params import load_params
from zarrseg.segment import SegmentParams
from zarrseg.segment import supervoxels as sv_mod
from zarrseg.segment.engine import segment


def _balls(rng, shape, n, radius, specks=0) -> np.ndarray:
    """Instance labels of ``n`` random balls (later ones overwrite earlier where they overlap), plus tiny specks."""
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    labels = np.zeros(shape, np.uint32)
    for k in range(n):
        centre = [rng.integers(r, s - r) for s, r in zip(shape, radius, strict=True)]
        d = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radius, strict=True))
        labels[d <= 1.0] = k + 1
    for _ in range(specks):  # 1-voxel specks: foreground below any size filter
        labels[tuple(rng.integers(0, s) for s in shape)] = n + 1
    return labels


def _touching_discs(shape=(192, 256), radius=18, step=30) -> np.ndarray:
    """Rows of pairs of overlapping discs (centres ``step`` apart): each pair one connected component."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.uint32)
    k = 0
    for cy in range(radius + 4, shape[0] - radius - 4, 2 * radius + 12):
        for cx in range(radius + 4, shape[1] - radius - step - 4, 2 * radius + step + 12):
            for dx in (0, step):
                k += 1
                disc = (yy - cy) ** 2 + (xx - cx - dx) ** 2 <= radius**2
                labels[disc & (labels == 0)] = k
    return labels


def _params(ndim, block, halo, **extra) -> SegmentParams:
    base = {
        "partitioner": "connected_components",
        "block_shape": [block] * ndim,
        "halo": [halo] * ndim,
        "chunks": [block] * ndim,
        "min_size": 20,
        "post_min_size": 20,
        "dask": {"scheduler": "synchronous"},
    }
    return load_params(SegmentParams, {**base, **extra})


def _run(tmp_path, fg, params, name="seg") -> tuple[np.ndarray, dict]:
    src = tmp_path / f"{name}_in.ome.zarr"
    if not src.exists():
        write_image(src, fg, chunks=[32] * fg.ndim)
    summary = segment(src, tmp_path / f"{name}.ome.zarr", params)
    return np.asarray(ome.open_image(tmp_path / f"{name}.ome.zarr").data[...]), summary


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to the ids: every id of one maps to exactly one id of the other (0 to 0)."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1] and not (
        (pairs[0] == 0) ^ (pairs[1] == 0)
    ).any()


def _f1_seg(seg, gt) -> tuple[float, float]:
    m = instance_metrics(Contingency.from_arrays(seg.astype(np.uint64), gt.astype(np.uint64)), 0, [0.5])
    return m["f1@0.50"], m["seg"]


@pytest.mark.parametrize("block", [16, 24, 64])
def test_components_are_the_whole_volume_components_for_any_blocking(tmp_path, rng, block):
    gt = _balls(rng, (40, 64, 64), 30, (4, 6, 6), specks=30)
    fg = (gt > 0).astype(np.float32) * 0.9  # a probability map: foreground where >= threshold 0.5
    seg, summary = _run(tmp_path, fg, _params(3, block, 8))
    whole = label(fg >= 0.5, connectivity=1)
    sizes = np.bincount(whole.ravel())
    whole[(sizes < 20)[whole]] = 0  # post_min_size: specks without neighbours become background
    assert summary["n_blocks"] > 1 or block == 64
    assert summary["n_segments"] == len(np.unique(whole)) - 1 > 10
    assert _same_partition(seg, whole)
    assert summary["halo_advice"] is None and summary["timings_s"].get("distance") is None  # no DT pass


@pytest.mark.parametrize("split", [False, True])
def test_same_instances_for_any_worker_count(tmp_path, rng, split):
    fg = (_balls(rng, (40, 64, 64), 30, (4, 6, 6)) > 0).astype(np.uint8)
    outs = []
    for i, dask in enumerate([{"scheduler": "synchronous"}, {"scheduler": "threads", "n_workers": 2}]):
        seg, _ = _run(tmp_path, fg, _params(3, 24, 12, split=split, dask=dask), name=f"w{i}")
        outs.append(seg)
    assert len(np.unique(outs[0])) > 5 and np.array_equal(outs[0], outs[1])


def test_split_separates_touching_discs_and_blocks_agree(tmp_path):
    gt = _touching_discs()
    fg = (gt > 0).astype(np.uint8)
    n_gt = len(np.unique(gt)) - 1
    plain, _ = _run(tmp_path, fg, _params(2, 64, 0), name="plain")
    whole, _ = _run(tmp_path, fg, _params(2, 256, 40, split=True), name="whole")
    blocks, summary = _run(tmp_path, fg, _params(2, 64, 40, split=True), name="blocks")
    assert summary["n_blocks"] == 12 and summary["halo_advice"] is None  # 40 >= 1.5 x radius 18 + smoothing
    assert len(np.unique(plain)) - 1 == n_gt // 2  # components: each pair is one object
    assert len(np.unique(whole)) - 1 == n_gt
    assert _same_partition(blocks, whole)
    (f1_plain, seg_plain), (f1_split, seg_split) = _f1_seg(plain, gt), _f1_seg(blocks, gt)
    assert f1_plain < 0.7 and f1_split > 0.95 and seg_split > seg_plain + 0.2  # a pair matches one disc at best


def test_split_neck_joins_one_elongated_object_but_not_a_dumbbell(tmp_path):
    yy, xx = np.mgrid[:128, :256]
    ellipse = ((yy - 64) / 20.0) ** 2 + ((xx - 128) / 90.0) ** 2 <= 1
    dumbbell = ((yy - 64) ** 2 + (xx - 80) ** 2 <= 30**2) | ((yy - 64) ** 2 + (xx - 170) ** 2 <= 30**2)
    dumbbell |= (abs(yy - 64) <= 4) & (xx > 80) & (xx < 170)  # a bridge 9 px wide between two discs
    counts = {}
    for name, fg in (("ellipse", ellipse), ("dumbbell", dumbbell)):
        for neck in (0.0, 0.85):
            seg, summary = _run(tmp_path, fg.astype(np.uint8), _params(2, 64, 48, split=True, split_neck=neck),
                                name=f"{name}{neck}")
            counts[name, neck] = summary["n_segments"]
            assert (seg > 0).sum() == fg.sum()  # pieces and joins cover the foreground exactly
    assert counts["ellipse", 0.0] > 1 and counts["ellipse", 0.85] == 1  # plain split cuts the ellipse
    assert counts["dumbbell", 0.0] > 2 and counts["dumbbell", 0.85] == 2  # the bridge joins one side only


def test_foreground_run_resumes_after_a_crash(tmp_path, monkeypatch, rng):
    fg = (_balls(rng, (32, 48, 48), 20, (5, 8, 8)) > 0).astype(np.uint8)
    params = _params(3, 16, 0)  # 2 x 3 x 3 = 18 blocks
    real, calls = sv_mod.components, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 12:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(sv_mod, "components", flaky)
    with pytest.raises(RuntimeError, match="killed"):
        _run(tmp_path, fg, params)
    calls.clear()
    resumed, summary = _run(tmp_path, fg, params)
    assert summary["resumed"] and len(calls) == 18 - 11
    monkeypatch.setattr(sv_mod, "components", real)
    fresh, _ = _run(tmp_path, fg, params, name="fresh")
    assert np.array_equal(resumed, fresh)


def test_binary_masks_probabilities_and_invert_give_the_same_instances(tmp_path, rng):
    gt = _balls(rng, (24, 48, 48), 15, (4, 7, 7))
    fg = gt > 0
    params = _params(3, 24, 0)
    ref, _ = _run(tmp_path, fg.astype(np.float32), params, name="float")
    for name, data, extra in [
        ("uint8_01", fg.astype(np.uint8), {}),  # 0/1 integer mask: binary, not 1/255
        ("bool", fg, {}),
        ("uint8_255", fg.astype(np.uint8) * 255, {}),
        ("background_high", (~fg).astype(np.float32), {"invert": True}),
    ]:
        seg, _ = _run(tmp_path, data, _params(3, 24, 0, **extra), name=name)
        assert _same_partition(seg, ref), name


def test_split_instances_score_through_the_evaluate_cli(tmp_path):
    import pandas as pd

    from zarrseg.cli import main

    gt = _touching_discs()
    gt_path = write_image(tmp_path / "gt.ome.zarr", gt, is_label=True)
    _run(tmp_path, (gt > 0).astype(np.uint8), _params(2, 64, 40, split=True), name="seg_split.b0.5")
    out = tmp_path / "metrics.parquet"
    rc = main(["evaluate", str(tmp_path / "seg_split.b0.5.ome.zarr"), "--gt", gt_path, "-o", str(out)])
    assert rc == 0
    table = pd.read_parquet(out)
    values = dict(zip(table["metric"], table["value"], strict=True))
    assert values["f1@0.50"] > 0.95 and values["seg"] > 0.8
    assert set(table["sample"]) == {"seg_split.b0.5"}  # the default sample name keeps the dots


def test_foreground_parameters_are_checked():
    with pytest.raises(ConfigError, match="split needs partitioner"):
        load_params(SegmentParams, {"split": True})
    with pytest.raises(ConfigError, match="split_neck"):
        load_params(SegmentParams, {"partitioner": "connected_components", "split_neck": 1.5})

"""The crop-preparation stage: sliding windows of the middle planes, the foreground filter, the split by
acquisition, the store's reader (fractions, rotations) and bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import zarr
from conftest import write_image

from zarrseg.crops import CropParams, CropSet, prepare_crops
from zarrseg.crops.prepare import middle_planes, window_starts, window_sums
from zarrseg.normalize import Normalization, apply, array_stats
from zarrseg.params import load_params


def acquisition(tmp_path, name: str, rng, shape=(5, 70, 90), labelled: bool = True) -> dict:
    image = rng.integers(0, 4000, shape).astype(np.uint16)
    labels = np.zeros(shape, np.uint16)
    labels[..., 5:30, 10:40] = 3  # one object near the top-left corner
    source = {"image": write_image(tmp_path / f"{name}.ome.zarr", image), "name": name}
    if labelled:
        source["labels"] = write_image(tmp_path / f"{name}_labels.ome.zarr", labels, is_label=True)
    return source


def test_windows_cover_the_plane_and_middle_planes_are_centred(rng):
    assert window_starts(90, 32, 16) == [0, 16, 32, 48, 58]  # the last window ends at the border
    mask = (rng.random((70, 90)) < 0.3).astype(np.uint8)
    ys, xs = window_starts(70, 32, 16), window_starts(90, 32, 16)
    brute = [[mask[y:y + 32, x:x + 32].sum() for x in xs] for y in ys]
    np.testing.assert_array_equal(window_sums(mask, ys, xs, 32), brute)
    assert window_starts(32, 32, 16) == [0]
    assert middle_planes(5, 3) == [1, 2, 3] and middle_planes(5, 1) == [2] and middle_planes(2, 4) == [0, 1]


def test_crops_split_by_acquisition_keep_the_foreground_and_match_the_planes(tmp_path, rng):
    sources = [
        {**acquisition(tmp_path, "a", rng), "split": "pretrain"},
        {**acquisition(tmp_path, "b", rng), "split": "finetune"},
        {**acquisition(tmp_path, "c", rng), "split": "test"},
        {**acquisition(tmp_path, "d", rng, labelled=False), "split": "pretrain"},
    ]
    params = load_params(CropParams, {"images": sources, "crop_size": 32, "step": 0.5, "planes": 3,
                                      "min_foreground": 0.03, "buffer": 5})
    summary = prepare_crops(params, tmp_path / "store")
    table = pd.read_parquet(tmp_path / "store" / "origins.parquet")
    # every acquisition's crops (overlapping windows of one image) sit in exactly one split
    assert table.groupby("name")["split"].nunique().max() == 1
    assert dict(table.groupby("name")["split"].first()) == {"a": "pretrain", "b": "finetune", "c": "test", "d": "pretrain"}
    windows = len(window_starts(70, 32, 16)) * len(window_starts(90, 32, 16))  # 4 x 5 per plane
    per_name = table.groupby("name").size()
    assert per_name["d"] == 3 * windows  # unlabelled: nothing dropped
    assert per_name["a"] < 3 * windows  # windows off the object (< 3 % foreground) are dropped
    labelled = table[table["labelled"]]
    assert (labelled["foreground"] >= 0.03).all() and set(table["z"]) == {1, 2, 3}
    assert summary["counts"] == {"pretrain": per_name["a"] + per_name["d"], "finetune": per_name["b"],
                                 "test": per_name["c"]}
    # a crop is its window of the normalised plane; its mask the binary foreground
    root = zarr.open_group(str(tmp_path / "store"), mode="r")
    row = labelled[labelled["split"] == "finetune"].iloc[0]
    from zarrseg import ome

    plane = ome.open_image(sources[1]["image"]).data[int(row.z)]
    norm = Normalization(method="meanstd")
    expected = apply(plane, array_stats(plane, norm), norm)[row.y:row.y + 32, row.x:row.x + 32]
    crop = root["finetune/image"][int(row["index"])]
    assert crop.dtype == np.float16 and np.allclose(crop, expected, atol=5e-3)
    assert set(np.unique(root["finetune/mask"][:])) <= {0, 1}
    for split, count in summary["counts"].items():  # arrays grow by doubling and are cut to the count
        assert root[f"{split}/image"].shape == root[f"{split}/mask"].shape == (count, 32, 32)


def test_the_reader_gives_nested_fractions_and_rotates_image_and_mask_together(tmp_path, rng):
    src = {**acquisition(tmp_path, "a", rng, shape=(64, 64)), "split": "pretrain"}
    prepare_crops(load_params(CropParams, {"images": [src], "crop_size": 16, "step": 0.25, "min_foreground": 0.0}),
                  tmp_path / "store")
    crops = CropSet(tmp_path / "store", "pretrain")
    small, large = crops.subset(0.2, seed=3), crops.subset(0.6, seed=3)
    assert len(small) == int(np.ceil(0.2 * len(crops))) and set(small) <= set(large)
    rows = np.array([5, 5, 9])
    image, mask = crops.read(rows, np.random.default_rng(0))
    plain_image = crops.images.oindex[rows].astype(np.float32)
    plain_mask = crops.masks.oindex[rows]
    for i in range(3):  # each crop is one rotation of its window, the mask the same rotation
        k = next(k for k in range(4) if np.array_equal(np.rot90(plain_image[i], k), image[i, 0]))
        assert np.array_equal(np.rot90(plain_mask[i], k), mask[i])


def _crops_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zarrseg", "crops", *args], capture_output=True, text=True,
                          timeout=300)


def test_a_crop_larger_than_the_image_fails_with_one_line_and_writes_nothing(tmp_path, rng):
    src = acquisition(tmp_path, "a", rng, shape=(40, 50))
    run = _crops_cli(f"{src['image']}=pretrain:{src['labels']}", "-o", str(tmp_path / "store"),
                     "--set", "crop_size=48")
    assert run.returncode == 2
    assert "crop size 48 is larger than the image (40 x 50 pixels)" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and src["image"] in run.stderr
    assert not (tmp_path / "store").exists() and not (tmp_path / "store.partial").exists()
    # a source without its split, and an image of NaN: one line, exit code 2, nothing written
    run = _crops_cli(src["image"], "-o", str(tmp_path / "store"))
    assert run.returncode == 2 and "is not of the form IMAGE=SPLIT[:MASK]" in run.stderr
    nan = write_image(tmp_path / "nan.ome.zarr", np.full((40, 50), np.nan, np.float32))
    run = _crops_cli(f"{nan}=pretrain", "-o", str(tmp_path / "store"), "--set", "crop_size=16")
    assert run.returncode == 2 and "2000 of 2000 pixels are NaN or Inf" in run.stderr and nan in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "store").exists() and not (tmp_path / "store.partial").exists()


def test_a_mask_that_is_not_binary_fails_with_one_line_and_writes_nothing(tmp_path, rng):
    src = acquisition(tmp_path, "a", rng, shape=(40, 50))
    labels = np.zeros((40, 50), np.uint16)
    labels[:10], labels[20:] = 1, 2  # two objects: instance labels, not a binary mask
    mask = write_image(tmp_path / "inst.ome.zarr", labels, is_label=True)
    run = _crops_cli(f"{src['image']}=finetune:{mask}", "-o", str(tmp_path / "store"), "--set", "crop_size=16")
    assert run.returncode == 2 and "mask is not binary" in run.stderr and mask in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "store").exists() and not (tmp_path / "store.partial").exists()
    # the same labels as instances: label > 0 is foreground
    run = _crops_cli(f"{src['image']}=finetune:{mask}", "-o", str(tmp_path / "store"), "--set", "crop_size=16",
                     "--set", "masks=instances")
    assert run.returncode == 0, run.stderr
    assert CropSet(tmp_path / "store", "finetune").masks[:].max() == 1


def test_unlabelled_acquisitions_only_join_pretraining(tmp_path, rng):
    from zarrseg.errors import ConfigError

    src = acquisition(tmp_path, "a", rng, shape=(40, 50), labelled=False)
    with pytest.raises(ConfigError, match="can only join the pretrain split"):
        load_params(CropParams, {"images": [{**src, "split": "finetune"}], "crop_size": 16})


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32])
@pytest.mark.parametrize("method", ["meanstd", "percentile"])
@pytest.mark.parametrize("shape", [(50, 70), (301, 257)])  # one block, and several with a partial last one
def test_plane_normalisation_equals_the_volume_normalisation(rng, dtype, method, shape):
    from zarrseg.crops.prepare import normalised

    plane = (rng.gamma(2.0, 300.0 if dtype != np.uint8 else 30.0, shape)).clip(0, 30000).astype(dtype)
    if dtype == np.int16:
        plane -= 200  # negative values cannot index a lookup table
    norm = Normalization(method=method, lower=2.0, upper=98.0)
    expected = apply(plane, array_stats(plane, norm), norm)
    np.testing.assert_allclose(normalised(plane, norm).astype(np.float32), expected, rtol=2e-3, atol=2e-3)


def _store_arrays(path) -> dict:
    root = zarr.open_group(str(path), mode="r")
    return {f"{s}/{k}": root[f"{s}/{k}"][:] for s in ("pretrain", "finetune") for k in ("image", "mask")}


def test_the_reader_process_gives_the_threads_store_and_its_errors(tmp_path, rng, monkeypatch):
    import multiprocessing

    from zarrseg.crops import reader
    from zarrseg.errors import InputError

    if not reader.process_available():
        pytest.skip("no fork here: the stage reads in threads only")
    sources = [{**acquisition(tmp_path, name, rng), "split": split}
               for name, split in (("a", "pretrain"), ("b", "finetune"), ("c", "pretrain"))]
    sources.append({**acquisition(tmp_path, "d", rng, labelled=False), "split": "pretrain"})
    params = load_params(CropParams, {"images": sources, "crop_size": 32, "planes": 3, "buffer": 4})
    real, served = reader._serve, tmp_path / "served_by"
    monkeypatch.setattr(reader, "_serve", lambda *a: (served.write_text(str(os.getpid())), real(*a)))
    prepare_crops(params, tmp_path / "process")
    assert int(served.read_text()) != os.getpid()  # another process read the planes
    monkeypatch.setattr(reader, "process_available", lambda: False)
    prepare_crops(params, tmp_path / "threads")
    by_process, by_threads = _store_arrays(tmp_path / "process"), _store_arrays(tmp_path / "threads")
    for key, array in by_threads.items():  # 12 planes through 3 slots: every slot reused, in order
        np.testing.assert_array_equal(by_process[key], array, err_msg=key)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "process" / "origins.parquet"),
                                  pd.read_parquet(tmp_path / "threads" / "origins.parquet"))
    # an error found by the reader (the third acquisition's mask is not binary) is raised here, the
    # reader is gone and nothing is left
    monkeypatch.undo()
    labels = np.zeros((5, 70, 90), np.uint16)
    labels[:, :10], labels[:, 20:] = 1, 2
    sources[2]["labels"] = write_image(tmp_path / "inst.ome.zarr", labels, is_label=True)
    params = load_params(CropParams, {"images": sources, "crop_size": 32, "planes": 3, "buffer": 4})
    with pytest.raises(InputError, match="mask is not binary") as error:
        prepare_crops(params, tmp_path / "bad")
    assert sources[2]["labels"] in str(error.value)
    assert not multiprocessing.active_children()
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.partial").exists()


def test_a_killed_stage_leaves_no_reader_process_behind(tmp_path, rng):
    from zarrseg.crops import reader

    if not reader.process_available():
        pytest.skip("no fork here: the stage reads in threads only")
    sources = [{**acquisition(tmp_path, f"a{i}", rng), "split": "pretrain"} for i in range(3)]
    pids = tmp_path / "reader_pid"
    # the cutter writes down its reader's pid and is killed (SIGKILL: no clean-up runs) at its first plane
    script = f"""
import multiprocessing, os, signal
from zarrseg.crops import CropParams, prepare, prepare_crops
from zarrseg.params import load_params
def die(*args):
    open({str(pids)!r}, "w").write(str(multiprocessing.active_children()[0].pid))
    os.kill(os.getpid(), signal.SIGKILL)
prepare._cut = die
prepare_crops(load_params(CropParams, {{"images": {sources!r}, "crop_size": 32, "planes": 3}}), {str(tmp_path / "store")!r})
"""
    with open(tmp_path / "stderr", "w") as err:  # not a pipe: a surviving reader would hold it open
        run = subprocess.run([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=err, timeout=120)
    assert run.returncode == -9, (tmp_path / "stderr").read_text()
    pid = int(pids.read_text())
    for _ in range(100):  # the reader sees the pipe close and exits (it was waiting for a free slot)
        if _exited(pid):
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        raise AssertionError(f"reader process {pid} outlived the killed stage by 10 s")


def _exited(pid: int) -> bool:
    """Gone, or a zombie (exited; reaping it is up to whoever adopted it: not every container's init does)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True

"""Acceptance test of `zarrseg nightly`: three simulated nights on real files, one of them killed.

Night 1: a multi-scene CZI and a TIFF with ground truth arrive. Night 2: one new file, one still
being written by a background writer during the run, one corrupt file; the run is SIGKILLed once
(with everything it started) and restarted. Night 3: the growing file is complete and an earlier
file is re-exported. Then a single run over all final files into a fresh folder gives the same
outputs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import tifffile
from conftest import shared_path

from zarrseg import ome

REPO = Path(__file__).resolve().parents[1]
QUIET = 20  # seconds; files that "arrived earlier in the day" are aged by an hour


def _nightly(inp: Path, out: Path, night: str, **popen) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), ZARRSEG_NO_PROGRESS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    # one thread per job: the jobs on these small files are start-up bound, and two of them share the
    # 2 cores (with the rules' 2-4 threads, Snakemake ran them one at a time)
    cmd = [sys.executable, "-m", "zarrseg", "nightly", str(inp), "-o", str(out), "--quiet-period", str(QUIET),
           "--night", night, "--snakemake-args", "--cores 2 --max-threads 1"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _night(inp: Path, out: Path, night: str) -> tuple[int, pd.DataFrame, dict]:
    proc = _nightly(inp, out, night)
    text, _ = proc.communicate(timeout=900)
    report = out / "nights" / night
    assert (report / "report.md").is_file(), text[-3000:]
    table = pd.read_parquet(out / "acquisitions.parquet")
    return proc.returncode, table[table["night"] == night], json.loads((report / "jobs.json").read_text())


def _statuses(rows: pd.DataFrame) -> dict[str, str]:
    return dict(zip(rows["sample"], rows["status"], strict=True))


def _arrive(src: Path, dst: Path, age: float = 3600.0) -> Path:
    shutil.copyfile(src, dst)
    t = time.time() - age
    os.utime(dst, (t, t))
    return dst


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and everything it started, as a node failure would."""
    parent = psutil.Process(pid)
    procs = [*parent.children(recursive=True), parent]
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)


class Writer(threading.Thread):
    """Writes a file in pieces, as an acquisition in progress; ``finish`` writes the rest at once."""

    def __init__(self, src: Path, dst: Path, pieces: int, pause: float):
        super().__init__(daemon=True)
        self.data, self.dst, self.pieces, self.pause = src.read_bytes(), dst, pieces, pause
        self.finish = threading.Event()

    def run(self) -> None:
        step = -(-len(self.data) // self.pieces)
        with open(self.dst, "wb") as fh:
            for k in range(0, len(self.data), step):
                fh.write(self.data[k:] if self.finish.is_set() else self.data[k:k + step])
                fh.flush()
                if self.finish.is_set():
                    return
                self.finish.wait(self.pause)


@pytest.mark.shared_data
def test_three_nights(tmp_path):
    plate = shared_path("czi", "S3_1Pos_2Mosaic_T2_Z3_CH2_sm.czi")  # 3 scenes: TR1, P1, TR2
    nuclei, nuclei_gt = shared_path("stardist_samples", "crop256_img2d.tif"), shared_path(
        "stardist_samples", "crop256_mask2d.tif")
    single, growing = shared_path("czi", "CH=1_16bit.czi"), shared_path("czi", "s_1_t_1_c_1_z_1.czi")
    inp, out = tmp_path / "microscope", tmp_path / "results"
    inp.mkdir()

    # ---- night 1: two acquisitions -------------------------------------------------------------
    _arrive(plate, inp / "plate.czi")
    _arrive(nuclei, inp / "nuclei.tif")
    _arrive(nuclei_gt, inp / "nuclei_labels.tif")
    code, rows, jobs = _night(inp, out, "2025-03-01")
    assert code == 0
    assert _statuses(rows) == {"plate_TR1": "processed", "plate_P1": "processed", "plate_TR2": "processed",
                               "nuclei": "processed"}  # every scene is a sample
    assert list(rows.loc[rows["sample"].str.startswith("plate"), "scene"]) == [0, 1, 2]
    assert jobs["ingest"] == 4 and jobs["ingest_ground_truth"] == 1 and jobs["segment"] == 4
    scored = rows.set_index("sample").loc["nuclei"]
    assert 0 <= scored["arand"] <= 1 and scored["n_segments"] > 0  # metrics where ground truth exists
    assert pd.isna(rows.set_index("sample").loc["plate_P1", "arand"])
    assert (out / "nights" / "2025-03-01" / scored["thumbnail"]).stat().st_size > 500

    # ---- night 2: new, growing, corrupt; killed once and restarted ---------------------------
    _arrive(single, inp / "single.czi")
    data = shared_path("czi", "DAPI_GFP.czi").read_bytes()
    (inp / "corrupt.czi").write_bytes(data[: len(data) * 2 // 3])
    t = time.time() - 3600
    os.utime(inp / "corrupt.czi", (t, t))
    writer = Writer(growing, inp / "growing.czi", pieces=400, pause=0.5)  # up to 200 s of writing
    writer.start()
    proc = _nightly(inp, out, "2025-03-02", start_new_session=True)
    started = out / "logs" / "default" / "ingest" / "single" / "image.log"
    deadline = time.time() + 300
    while not started.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "night 2 ended before it could be killed"
    time.sleep(1.0)
    _kill_tree(proc.pid)
    locks = list((out / ".nightly" / ".snakemake" / "locks").glob("*"))
    assert locks, "the killed run left no Snakemake lock to recover from"
    assert writer.is_alive(), "the writer finished before the restart: make it slower"
    code, rows, jobs = _night(inp, out, "2025-03-02")  # the restart: no manual unlock
    assert writer.is_alive(), "the writer finished before night 2 did: make it slower"
    writer.finish.set()
    writer.join()
    assert code == 1  # one acquisition failed
    assert _statuses(rows) == {"plate": "unchanged", "nuclei": "unchanged", "single": "processed",
                               "growing": "waiting", "corrupt": "failed"}
    reason = rows.set_index("sample").loc["corrupt", "reason"]
    assert "corrupt.czi" in reason and "truncated" in reason and "\n" not in reason
    report = (out / "nights" / "2025-03-02" / "report.md").read_text()
    assert "cleared a stale Snakemake lock" in report and "| corrupt.czi |  | corrupt | failed |" in report
    assert set(jobs) <= {"ingest", "predict", "segment", "describe", "samples"}  # only what single still needed
    assert jobs.get("ingest", 0) <= 1 and jobs.get("segment", 0) <= 1

    # ---- night 3: the growing file is complete, an earlier file is re-exported ----------------
    os.utime(inp / "growing.czi", (t, t))  # written an hour ago
    image = tifffile.imread(nuclei)
    tifffile.imwrite(inp / "nuclei.tif", (image // 2 + 7).astype(image.dtype))  # re-exported just now ...
    (inp / "nuclei.tif.done").touch()  # ... and marked complete by the acquisition software
    code, rows, jobs = _night(inp, out, "2025-03-03")
    assert code == 0
    assert _statuses(rows) == {"plate": "unchanged", "nuclei": "processed", "single": "unchanged",
                               "growing": "processed", "corrupt": "unchanged"}
    assert reason in rows.set_index("sample").loc["corrupt", "reason"]  # not retried: the file did not change
    assert jobs["ingest"] == 2 and jobs.get("ingest_ground_truth", 0) == 0 and jobs["segment"] == 2

    # ---- the same outputs as one run over all final files ------------------------------------
    fresh = tmp_path / "fresh"
    code, rows, _ = _night(inp, fresh, "2025-03-04")
    assert code == 1 and _statuses(rows) == {"plate_TR1": "processed", "plate_P1": "processed",
                                             "plate_TR2": "processed", "nuclei": "processed", "single": "processed",
                                             "growing": "processed", "corrupt": "failed"}
    for sample in ("plate_TR1", "plate_P1", "plate_TR2", "nuclei", "single", "growing"):
        for name in ("labels.ome.zarr",):
            a = ome.open_image(out / "default" / sample / "base" / name).data[...]
            b = ome.open_image(fresh / "default" / sample / "base" / name).data[...]
            np.testing.assert_array_equal(a, b, err_msg=sample)
        for table, columns in (("segments.parquet", ["sample", "n_segments", "size_median", "size_mean", "shape",
                                                     "voxel_size_um"]), ("metrics.parquet", ["metric", "value"])):
            if (fresh / "default" / sample / "base" / table).exists():
                a = pd.read_parquet(out / "default" / sample / "base" / table)[columns]
                b = pd.read_parquet(fresh / "default" / sample / "base" / table)[columns]
                if "metric" in columns:  # clustering_s: seconds the labels took, not a result
                    a, b = (t[t["metric"] != "clustering_s"].reset_index(drop=True) for t in (a, b))
                pd.testing.assert_frame_equal(a, b)

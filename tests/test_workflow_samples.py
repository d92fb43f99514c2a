"""Where samples come from, through the Snakemake CLI: input folders, sheets switched off, missing files,
and the segments summary of a run without ground truth."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import shared_path

REPO = Path(__file__).resolve().parents[1]


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               ZARRSEG_NO_PROGRESS="1", PYTHONPATH=str(REPO / "src"))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"),
           "--directory", str(workdir), "--profile", str(REPO / "profiles" / "local"), "--cores", "2", *args]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "config", tmp_path / "config")
    shutil.copytree(REPO / "data" / "sample", tmp_path / "data" / "sample")  # the default sheet's sample
    (tmp_path / "in").mkdir()
    shutil.copy(shared_path("stardist_samples", "crop256_img2d.tif"), tmp_path / "in" / "A1.TIF")
    return tmp_path


def _jobs(run: subprocess.CompletedProcess) -> str:
    return run.stdout + run.stderr


@pytest.mark.parametrize("samples", ["{input_dir: in}", "{sheet: null, input_dir: in}"])
def test_input_dir_alone_does_not_process_the_default_sheet(workdir, samples):
    run = _snakemake(workdir, "-n", "--config", f"samples={samples}")
    assert run.returncode == 0, _jobs(run)[-3000:]
    assert "results/ingest/A1/image.ome.zarr" in _jobs(run)  # the upper-case .TIF is found
    assert "ovule" not in _jobs(run)


def test_run_without_ground_truth_and_a_missing_sheet_file(workdir):
    shutil.copy(shared_path("stardist_samples", "crop256_img2d.tif"), workdir / "kept.tif")
    (workdir / "mine.tsv").write_text("sample\timage\nkept\tkept.tif\ngone\tnot_there.tif\n")
    run = _snakemake(workdir, "--config", "samples={sheet: mine.tsv, input_dir: in}")
    assert run.returncode == 0, _jobs(run)[-4000:]
    assert "sample 'gone' skipped: input not_there.tif does not exist" in _jobs(run)
    out = workdir / "results" / "default"
    table = pd.read_parquet(out / "segments.parquet")
    assert sorted(table["sample"]) == ["A1", "kept"]
    assert (table["n_segments"] > 0).all() and (table["shape"] == "256x256").all()
    text = (out / "segments.md").read_text()
    assert "| A1 | base |" in text and "| kept | base |" in text
    assert (out / "A1" / "base" / "thumbnail.png").stat().st_size > 1000
    assert not (out / "summary.md").exists()  # no ground truth: no metrics summary, but the segments table

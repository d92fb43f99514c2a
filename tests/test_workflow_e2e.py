"""The default workflow end to end through the Snakemake CLI, in a temporary working directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from zarrseg.ome import open_image

REPO = Path(__file__).resolve().parents[1]


def _snakemake(workdir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               ZARRSEG_NO_PROGRESS="1")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"),
           "--directory", str(workdir), "--profile", str(REPO / "profiles" / "local"), "--cores", "2", *args]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "config", tmp_path / "config")
    shutil.copytree(REPO / "data" / "sample", tmp_path / "data" / "sample")
    return tmp_path


def test_default_workflow_end_to_end_and_second_run_is_noop(workdir):
    run = _snakemake(workdir)
    assert run.returncode == 0, run.stderr[-4000:]
    results = workdir / "results"
    image = open_image(results / "ingest" / "ovule" / "image.ome.zarr")
    assert image.data.shape == (32, 128, 128)
    assert image.spatial_scale == pytest.approx((0.235, 0.15, 0.15))
    labels = open_image(results / "default" / "ovule" / "base" / "labels.ome.zarr")
    seg = labels.data[:]
    assert seg.shape == (32, 128, 128) and len(set(seg.ravel().tolist())) > 10  # a real segmentation
    for name in ("metrics.parquet", "metrics.csv", "summary.md"):
        assert (results / "default" / name).is_file(), name
    table = pd.read_parquet(results / "default" / "metrics.parquet")
    values = dict(zip(table["metric"], table["value"], strict=False))
    assert {"arand", "voi_split", "voi_merge"} <= set(values)
    assert 0.0 <= values["arand"] < 0.9  # far better than a random labelling of 51 cells
    assert (table["sample"] == "ovule").all()
    # nothing that is not the user's business: Snakemake's own RuntimeWarning, zarr on Snakemake's markers
    assert "RuntimeWarning" not in run.stderr
    logs = [p.read_text() for p in (results / "logs").rglob("*.log")]
    assert logs and not any("not recognized as a component" in text for text in logs)

    report = _snakemake(workdir, "--report", "report.html")  # make report
    assert report.returncode == 0, report.stderr[-3000:]
    html = (workdir / "report.html").read_text()
    for shown in ("summary.md", "summary.csv", "best.csv", "box_cell.png"):
        assert shown in html, shown  # the results are in the report, not only the workflow graph

    again = _snakemake(workdir)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "Nothing to be done" in again.stdout + again.stderr


def test_config_typo_fails_before_any_job(workdir):
    config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    config["segment"] = {**(config.get("segment") or {})}
    config["dask"]["n_worker"] = 2
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    run = _snakemake(workdir)
    assert run.returncode != 0
    assert "n_worker" in run.stderr + run.stdout
    assert not (workdir / "results").exists()


def test_dry_run_lists_every_stage(workdir):
    run = _snakemake(workdir, "-n")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "RuntimeWarning" not in run.stderr + run.stdout
    for rule in ("ingest", "ingest_ground_truth", "predict", "segment", "evaluate", "aggregate"):
        assert rule in run.stdout, rule

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


def _snakemake(workdir: Path, *args: str, timeout: int = 900, bare_path: bool = False) -> subprocess.CompletedProcess:
    """``bare_path``: the interpreter's folder is not on PATH, as for `.venv/bin/snakemake` run
    without activating the venv (the rules must still run this interpreter, not the system's)."""
    path = "/usr/bin:/bin" if bare_path else f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = dict(os.environ, PATH=path, ZARRSEG_NO_PROGRESS="1")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"),
           "--directory", str(workdir), "--profile", str(REPO / "profiles" / "local"), "--cores", "2", *args]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "config", tmp_path / "config")
    shutil.copytree(REPO / "data" / "sample", tmp_path / "data" / "sample")
    return tmp_path


def test_default_workflow_end_to_end_and_second_run_is_noop(workdir):
    run = _snakemake(workdir, bare_path=True)
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
    # one line naming the key and the nearest known one, exit code 2, nothing run
    assert run.returncode == 2, run.stderr[-2000:]
    said = [line for line in run.stderr.strip().splitlines() if not line.startswith("Using profile")]  # Snakemake's
    assert run.stdout.strip() == "" and len(said) == 1, run.stderr[-2000:]
    assert "unknown key 'n_worker' in dask (did you mean 'n_workers'?)" in run.stderr
    assert not (workdir / "results").exists()


def test_dry_run_lists_every_stage(workdir):
    run = _snakemake(workdir, "-n")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "RuntimeWarning" not in run.stderr + run.stdout
    for rule in ("ingest", "ingest_ground_truth", "predict", "segment", "evaluate", "aggregate"):
        assert rule in run.stdout, rule


def test_foreground_instances_are_scored_in_a_grid(workdir):
    """A grid over segment.split on a given foreground map: instance scores (F1, SEG) per cell."""
    import numpy as np
    import tifffile

    yy, xx = np.mgrid[:160, :224]
    gt = np.zeros((160, 224), np.uint16)
    k = 0
    for cy in (40, 120):
        for cx in (40, 130):
            for dx in (0, 30):  # pairs of touching discs: one component each, two nuclei
                k += 1
                gt[((yy - cy) ** 2 + (xx - cx - dx) ** 2 <= 18**2) & (gt == 0)] = k
    data = workdir / "data"
    tifffile.imwrite(data / "nuclei.tif", (gt > 0).astype(np.uint8) * 200)
    tifffile.imwrite(data / "nuclei_labels.tif", gt)
    tifffile.imwrite(data / "nuclei_fg.tif", (gt > 0).astype(np.float32) * 0.9)
    (workdir / "config" / "samples_nuclei.tsv").write_text(
        "sample\timage\tground_truth\tboundaries\nnuclei\tdata/nuclei.tif\tdata/nuclei_labels.tif\tdata/nuclei_fg.tif\n"
    )
    (workdir / "config" / "experiments" / "instances.yaml").write_text(yaml.safe_dump({
        "name": "instances",
        "sheet": "config/samples_nuclei.tsv",
        "grid": {"segment.split": [False, True]},
        "fixed": {"segment.partitioner": "connected_components", "segment.halo": [16, 40, 40],
                  "segment.post_min_size": 20, "segment.min_size": 20},
    }))
    run = _snakemake(workdir, "--config", "experiment=instances")
    assert run.returncode == 0, run.stderr[-4000:]
    table = pd.read_parquet(workdir / "results" / "instances" / "metrics.parquet")
    assert set(table["method"]) == {"connected_components"}
    f1 = table[table["metric"] == "f1@0.50"].set_index("cell")["value"]
    assert len(f1) == 2
    split_cell = next(c for c in f1.index if "True" in c or "true" in c)
    assert f1[split_cell] > 0.95 and f1.drop(split_cell).iloc[0] < 0.7  # pairs merged without the split
    assert (table["metric"] == "seg").sum() == 2

"""The Table 1 grid through the workflow: per-image W-Nets, superpixel baselines, annotators, selection;
and the full BSDS300 protocol dry-run with the SLURM profile."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO

TINY_GRID = {
    "name": "tiny_table1",
    "sheet": "samples.tsv",
    "grid": [
        {"grid.row": ["Sparse-SimCon-Patch"], "wnet.beta": [0.5]},
        {"grid.row": ["Kmeans-Superpixel"], "cluster.n_clusters": [2]},
    ],
    "linked": {"grid.row": {
        "Sparse-SimCon-Patch": {"grid.model": "wnet", "wnet.graph": "sparse", "wnet.segmentation": "simcon",
                                "wnet.reconstruction": "patch"},
        "Kmeans-Superpixel": {"grid.labels": "cluster", "cluster.superpixels": {"n_segments": 30}},
    }},
    "fixed": {
        "wnet.samples": ["{sample}"],
        "cluster.standardize": False,
        "cluster.preprocess": {"percentiles": [0.0, 100.0]},
        "evaluate.kind": "clustering",
        "evaluate.metrics": ["rand_index", "ami", "fmi", "homogeneity", "completeness", "v_measure"],
        "table.metrics": ["rand_index", "ami", "fmi", "homogeneity", "completeness", "v_measure"],
        "table.figure_metrics": ["v_measure"],
        "table.box_by": "method",
        "table.rank_by": "v_measure",
        "table.selection": {"metric": "v_measure", "samples": ["a"]},
        "panels.enabled": False,
    },
}


def _env() -> dict[str, str]:
    return {**os.environ, "ZARRSEG_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1",
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def _snakemake(work: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"), *args]
    return subprocess.run(cmd, cwd=work, env=_env(), capture_output=True, text=True, timeout=timeout)


def test_table1_grid_runs_through_the_workflow_on_two_tiny_images(tmp_path, rng):
    import tifffile

    work = tmp_path / "wd"
    (work / "config" / "experiments").mkdir(parents=True)
    yy, xx = np.mgrid[:40, :48]
    rows = ["sample\timage\tground_truth"]
    for name, r in (("a", 12), ("b", 15)):
        disc = (yy - 20) ** 2 + (xx - 24) ** 2 < r**2
        rgb = np.where(disc[..., None], [200, 180, 40], [30, 40, 200]) + rng.normal(0, 4, (40, 48, 3))
        tifffile.imwrite(work / f"{name}.tif", np.clip(rgb, 0, 255).astype(np.uint8), photometric="rgb")
        annotators = np.stack([disc + 1, np.where(xx < 24, 1, 2) * disc + 1]).astype(np.uint16)  # 2 annotators
        tifffile.imwrite(work / f"{name}_gt.ome.tif", annotators, ome=True, metadata={"axes": "CYX"})
        rows.append(f"{name}\t{name}.tif\t{name}_gt.ome.tif")
    (work / "samples.tsv").write_text("\n".join(rows) + "\n")
    (work / "config" / "experiments" / "tiny_table1.yaml").write_text(yaml.safe_dump(TINY_GRID, sort_keys=False))
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config.update(
        experiment="tiny_table1",
        wnet={"model": {"n_classes": 4, "f_maps": 4, "depth": 2}, "superpixels": {"n_segments": 30},
              "patches": {"sizes": [16], "counts": [8]}, "epochs": 2,
              "loop": {"threads": 1, "device": "cpu", "tensorboard": False}},
        predict={"device": "cpu", "num_workers": 0},
    )
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    # one thread per job: the tiny jobs are start-up bound, two of them share the 2 cores
    run = _snakemake(work, "--cores", "2", "--max-threads", "1", "--configfile", str(work / "config" / "config.yaml"))
    assert run.returncode == 0, run.stderr[-4000:]
    out = work / "results" / "tiny_table1"
    models = sorted(p.parent.name for p in (out / "models" / "wnet").glob("*/best.pt"))
    assert len(models) == 2 and models[0].endswith("+a") and models[1].endswith("+b")  # one W-Net per image
    table = pd.read_parquet(out / "metrics.parquet")
    assert set(table["method"]) == {"Sparse-SimCon-Patch", "Kmeans-Superpixel"}
    assert set(table["annotator"]) == {"0", "1", "mean", "best"}
    vm = table[(table["metric"] == "v_measure")].set_index(["sample", "cell", "annotator"])["value"]
    for sample, cell, _ in vm.index:
        a0, a1 = vm[(sample, cell, "0")], vm[(sample, cell, "1")]
        assert vm[(sample, cell, "mean")] == pytest.approx((a0 + a1) / 2)
        assert vm[(sample, cell, "best")] == pytest.approx(max(a0, a1))
    # K-means of two clear colours finds the disc: the first annotator's two regions, exactly
    assert vm[("a", "row-Kmeans-Superpixel_n_clusters-2", "0")] > 0.9
    selection = (out / "selection.md").read_text()
    assert "Sparse-SimCon-Patch" in selection and "best annotator" in selection
    fixed = pd.read_csv(out / "selection.csv")
    km = fixed[(fixed["method"] == "Kmeans-Superpixel") & (fixed["annotator"] == "mean")].iloc[0]
    assert km["fixed_n"] == 1 and km["oracle_n"] == 2  # fixed k chosen on sample a, reported on b


def test_full_bsds300_protocol_dry_runs_with_the_slurm_profile(tmp_path):
    """The experiment file and sample sheet as committed, with the SLURM profile (stand-in input files:
    a dry run reads none). Targets one W-Net cell and one baseline cell of one image (the whole
    DAG has ~335,000 jobs: README)."""
    work = tmp_path / "wd"
    shutil.copytree(REPO / "config", work / "config")
    sheet = pd.read_csv(REPO / "config" / "samples_bsds300.tsv", sep="\t", comment="#")
    assert len(sheet) == 100
    for column in ("image", "ground_truth"):
        for path in sheet[column]:
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).touch()
    cells = ["row-Sparse-SimCon-Patch_beta-0.1_loop.seed-3", "row-Spectral-Superpixel_n_clusters-4"]
    targets = [f"results/bsds300_table1/bsds_3096/{c}/metrics.parquet" for c in cells]
    run = _snakemake(work, *targets, "-n", "--profile", str(REPO / "profiles" / "slurm"),
                     "--config", "experiment=bsds300_table1")
    assert run.returncode == 0, run.stderr[-4000:] + run.stdout[-4000:]
    text = run.stdout + run.stderr
    for rule in ("ingest", "ingest_ground_truth", "train", "predict", "cluster", "evaluate"):
        assert f"rule {rule}:" in text or f"localrule {rule}:" in text, rule
    assert "+bsds_3096/best.pt" in text  # the W-Net of this image, trained on it alone


def test_a_list_of_grids_is_the_union_of_their_cells_and_per_sample_model_ids(tmp_path):
    from zarrseg.experiments import MAX_ID, Experiment, load_experiment
    from zarrseg.workflow import Plan, Sample

    exp = Experiment(
        name="e",
        grid=[{"grid.row": ["w"], "wnet.beta": [1, 0.1]}, {"grid.row": ["k"], "cluster.n_clusters": [2, 3]}],
        linked={"grid.row": {"w": {"grid.model": "wnet"}, "k": {"grid.labels": "cluster"}}},
        fixed={"wnet.samples": ["{sample}"], "wnet.patches": {"sizes": [96, 64, 48] * 12, "counts": [32, 72, 128] * 12}},
    )
    cells = exp.cells()
    assert list(cells) == ["row-w_beta-1", "row-w_beta-0.1", "row-k_n_clusters-2", "row-k_n_clusters-3"]
    assert "cluster.n_clusters" not in cells["row-w_beta-1"] and "wnet.beta" not in cells["row-k_n_clusters-2"]
    samples = {s: Sample(s, f"{s}.tif", f"{s}_gt.tif") for s in ("a", "b")}
    plan = Plan({}, exp, samples, "results")
    ids = {plan.model_id("wnet", plan.values(c), s) for c in ("row-w_beta-1", "row-w_beta-0.1") for s in "ab"}
    assert len(ids) == 4 and all(len(i) <= MAX_ID + 2 for i in ids)  # long ids: a head and a hash
    assert {i.rsplit("+", 1)[1] for i in ids} == {"a", "b"}
    assert plan.model_path("wnet", plan.values("row-w_beta-1"), "a").endswith("+a/best.pt")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"grid": [{"a.b": [1]}, "oops"]}))
    with pytest.raises(Exception, match="list of such mappings"):
        load_experiment(path)

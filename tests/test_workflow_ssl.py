"""The unsupervised-vs-supervised grid (thesis Table 3.4) through the Snakemake CLI, plus the pieces it adds:
grid rows with linked values, the threshold 'clustering' of U-Net outputs and the side-by-side figures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
from conftest import write_image

from zarrseg import ome
from zarrseg.cli import main as cli_main
from zarrseg.errors import ConfigError, InputError
from zarrseg.evaluation.panels import Panel, PanelParams, draw_panels, read_plane, side_by_side
from zarrseg.experiments import Experiment, cell_for, load_experiment
from zarrseg.ssl.cluster import ClusterParams, cluster

REPO = Path(__file__).resolve().parents[1]
ROWS = ["colour_kmeans", "dino", "dino_finetuned", "unet_20", "unet_20_contrastive", "unet_50", "unet_100", "wnet"]
UNETS = ROWS[3:7]


def blobs(rng: np.random.Generator, shape=(96, 96)) -> tuple[np.ndarray, np.ndarray]:
    """Bright discs (instance labels 1..n) on a dark, noisy background."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.uint16)
    for i in range(6):
        cy, cx = rng.integers(12, shape[0] - 12), rng.integers(12, shape[1] - 12)
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(36, 100)] = i + 1
    image = 40 + 150 * (labels > 0) + rng.normal(0, 10, shape)
    return np.clip(image, 0, 255).astype(np.uint8), labels


# ---- experiment rows ------------------------------------------------------------------------------
def test_the_grid_file_links_each_unet_row_to_its_supervision_level():
    exp = load_experiment(REPO / "config" / "experiments" / "unsupervised_vs_supervised.yaml")
    cells = exp.cells()
    rows = {v["grid.row"]: v for v in cells.values()}
    assert list(rows) == ROWS
    fractions = {r: rows[r].get("train.supervision_fraction") for r in ROWS}
    assert fractions == {
        "colour_kmeans": None,
        "dino": None,
        "dino_finetuned": None,
        "unet_20": 0.2,
        "unet_20_contrastive": 0.2,
        "unet_50": 0.5,
        "unet_100": 1.0,
        "wnet": None,
    }
    assert all(rows[r]["grid.labels"] == "threshold" and rows[r]["grid.model"] == "unet" for r in UNETS)
    assert [rows[r].get("grid.model") for r in ROWS[:3]] == [None, "dino", "finetune"]
    # linked values are not part of the id, but they separate the U-Nets' training sub-cells
    assert "row-unet20" in cells
    trained = {cell_for({**exp.fixed, **rows[r]}, ("train",)) for r in UNETS}
    assert len(trained) == 4
    assert rows["unet_20_contrastive"]["train.init"] == "model:contrastive_local"
    assert exp.fixed["contrastive_local.init"] == "model:contrastive_global"
    # the unsupervised W-Net learns from each scored image itself (no labels)
    assert rows["wnet"]["grid.model"] == "wnet" and rows["wnet"]["wnet.samples"] == ["{sample}"]
    # the models learn from train_* samples; the scored samples are held apart
    assert exp.fixed["train.samples"] == ["train_*"]
    assert exp.samples and all(s.startswith("test_") for s in exp.samples)


def test_linked_values_are_validated(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text(
        yaml.safe_dump({"grid": {"grid.row": ["a", "b"]}, "linked": {"grid.row": {"c": {"train.seed": 1}}}})
    )
    with pytest.raises(ConfigError, match="not among the grid values"):
        load_experiment(path)
    path.write_text(
        yaml.safe_dump({"grid": {"grid.row": ["a"]}, "linked": {"grid.rows": {"a": {"train.seed": 1}}}})
    )
    with pytest.raises(ConfigError, match="must be a grid key"):
        load_experiment(path)
    path.write_text(yaml.safe_dump({"grid": {"grid.row": ["a"]}, "linked": {"grid.row": {"a": {"seed": 1}}}}))
    with pytest.raises(ConfigError, match="<stage>.<parameter>"):
        load_experiment(path)
    exp = Experiment(name="e", grid={"grid.row": ["a", "b"]}, linked={"grid.row": {"b": {"train.seed": 3}}})
    assert exp.cells() == {"row-a": {"grid.row": "a"}, "row-b": {"grid.row": "b", "train.seed": 3}}


# ---- threshold rows -------------------------------------------------------------------------------
def test_threshold_splits_a_probability_map_at_the_value_and_keeps_geometry(tmp_path, rng):
    prob = rng.random((3, 40, 50)).astype(np.float32)
    src = write_image(tmp_path / "p.ome.zarr", prob, axes="zyx", scale=(2.0, 0.5, 0.5), translation=(0, 3.0, -1.5))
    out = tmp_path / "l.ome.zarr"
    summary = cluster(
        src, out, ClusterParams(method="threshold", threshold=0.3, chunks=(16, 16), block_shape=(16, 16))
    )
    labels = ome.open_image(out)
    assert labels.axes == "zyx" and labels.data.dtype == np.uint16
    assert labels.scale == (2.0, 0.5, 0.5) and labels.translation == (0.0, 3.0, -1.5)
    np.testing.assert_array_equal(labels.data[:], (prob >= 0.3).astype(np.uint16) + 1)
    assert summary["counts"][2] == int((prob >= 0.3).sum())


def test_threshold_through_the_cli_and_of_instance_labels_gives_the_foreground(tmp_path, rng):
    _, inst = blobs(rng)
    src = write_image(tmp_path / "gt.ome.zarr", inst, is_label=True)
    out = tmp_path / "fg.ome.zarr"
    assert cli_main(["cluster", str(src), "-o", str(out), "--set", "method=threshold"]) == 0
    np.testing.assert_array_equal(ome.open_image(out).data[:], (inst > 0) + 1)
    assert (
        cli_main(
            [
                "cluster",
                str(tmp_path / "missing.ome.zarr"),
                "-o",
                str(tmp_path / "x.ome.zarr"),
                "--set",
                "method=threshold",
            ]
        )
        == 2
    )
    assert not (tmp_path / "x.ome.zarr").exists()


# ---- side-by-side figures -------------------------------------------------------------------------
def test_side_by_side_draws_one_panel_per_input_and_reads_a_middle_slice(tmp_path, rng):
    import matplotlib.image as mpimg

    vol = rng.integers(0, 255, (5, 64, 64)).astype(np.uint8)
    lab = np.stack([np.full((64, 64), z + 1, np.uint16) for z in range(5)])
    image = write_image(tmp_path / "img.ome.zarr", vol, axes="zyx")
    labels = write_image(tmp_path / "lab.ome.zarr", lab, axes="zyx", is_label=True)
    plane = read_plane(labels, PanelParams())
    assert plane.shape == (64, 64) and (plane == 3).all()  # the middle slice (z = 2)
    assert (read_plane(labels, PanelParams(z=4)) == 5).all()
    small = read_plane(image, PanelParams(max_size=16))
    assert max(small.shape) <= 16
    params = PanelParams(panel_inches=1.0, dpi=50)
    two = side_by_side(image, [("a", labels)], tmp_path / "two.png", params=params)
    four = side_by_side(
        image, [("a", labels), ("b", labels)], tmp_path / "four.png", ground_truth=labels, params=params
    )
    w2, w4 = mpimg.imread(two).shape[1], mpimg.imread(four).shape[1]
    assert w4 == pytest.approx(2 * w2, rel=0.05)
    with pytest.raises(InputError, match="outside"):
        read_plane(labels, PanelParams(z=9))


def test_panels_cli_rejects_bad_arguments_before_writing(tmp_path, rng):
    image = write_image(tmp_path / "img.ome.zarr", rng.integers(0, 9, (32, 32)).astype(np.uint8))
    out = tmp_path / "fig.png"
    assert cli_main(["panels", str(image), "--labels", "no-title", "-o", str(out)]) == 2
    assert (
        cli_main(["panels", str(image), "--labels", f"x={tmp_path / 'nope.ome.zarr'}", "-o", str(out)]) == 2
    )
    assert not out.exists()
    draw_panels([Panel("o", np.zeros((8, 8)), "image"), Panel("l", np.arange(64).reshape(8, 8))], out)
    assert out.is_file()


# ---- the grid through Snakemake ------------------------------------------------------------------
LOOP = {"checkpoint_every": 2, "eval_every": 2, "threads": 1, "device": "cpu", "tensorboard": False}
TINY_CONFIG = {
    "pretrain": {
        "vit": {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2, "img_size": 32},
        "preprocess": {"tile_size": 32},
        "sample_size": 32,
        "global_crop_size": 32,
        "local_crop_size": 16,
        "n_local_crops": 2,
        "out_dim": 64,
        "hidden_dim": 32,
        "bottleneck_dim": 16,
        "batch_size": 2,
        "warmup_steps": 1,
        "loop": {**LOOP, "steps": 2},
    },
    "finetune": {
        "preprocess": {"tile_size": 32},
        "sample_size": 32,
        "batch_size": 2,
        "loop": {**LOOP, "steps": 2},
    },
    "features": {"preprocess": {"tile_size": 32}, "dtype": "float32", "device": "cpu"},
    "cluster": {"pca_components": 4},
    "train": {
        "model": {"f_maps": 4, "depth": 2},
        "patch_shape": [32, 32],
        "batch_size": 2,
        "val_metric": "loss",
        "num_workers": 0,
        "loop": {**LOOP, "steps": 2, "early_stopping": 0},
    },
    "crops": {"crop_size": 32, "step": 0.5, "buffer": 8},
    "contrastive_global": {"model": {"ndim": 2, "f_maps": 4, "depth": 2}, "projection_dim": 8, "batch_size": 4,
                           "epochs": None, "loop": {**LOOP, "steps": 2}},
    "contrastive_local": {"embedding_dim": 4, "batch_size": 2, "epochs": None, "loop": {**LOOP, "steps": 2}},
    "wnet": {
        "model": {"f_maps": 4, "depth": 2},
        "superpixels": {"n_segments": 50},
        "patches": {"sizes": [32], "counts": [8]},
        "epochs": 1,
        "loop": {**LOOP},
    },
    "predict": {"device": "cpu", "num_workers": 0},
    "table": {
        "metrics": ["matched_iou", "v_measure", "adjusted_rand_index"],
        "figure_metrics": ["matched_iou", "v_measure"],
        "box_by": "method",
        "rank_by": "v_measure",
    },
}


@pytest.fixture
def grid_workdir(tmp_path: Path, rng) -> Path:
    """The real experiment file with a synthetic sheet: one training and one held-apart image."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    data = tmp_path / "data"
    data.mkdir()
    rows = ["sample\timage\tground_truth"]
    for name in ("train_a", "test_a"):
        image, labels = blobs(rng)
        tifffile.imwrite(data / f"{name}.tif", image)
        tifffile.imwrite(data / f"{name}_labels.tif", labels)
        rows.append(f"{name}\tdata/{name}.tif\tdata/{name}_labels.tif")
    (tmp_path / "config" / "samples_tiny.tsv").write_text("\n".join(rows) + "\n")
    path = tmp_path / "config" / "experiments" / "unsupervised_vs_supervised.yaml"
    exp = yaml.safe_load(path.read_text())
    exp.update(sheet="config/samples_tiny.tsv", samples=["test_a"])
    fixed = exp["fixed"]
    fixed["cluster.pca_components"] = 4  # 32-d features of the tiny ViT
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    return tmp_path


def read_checkpoint_init(path: Path) -> str | None:
    from zarrseg.learn.checkpoint import read

    return read(path)["params"].get("init")


def snakemake_grid(workdir: Path, cores: int) -> list[str]:
    """The Snakemake CLI call of the grid on the tiny configuration in ``workdir``."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "workflow" / "Snakefile"),
        "--directory",
        str(workdir),
        "--profile",
        str(REPO / "profiles" / "local"),
        "--cores",
        str(cores),
        "--configfile",
        "tiny.yaml",
        "--config",
        "experiment=unsupervised_vs_supervised",
    ]


def test_grid_runs_through_snakemake_with_every_row_and_figures(grid_workdir):
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        ZARRSEG_NO_PROGRESS="1",
        OMP_NUM_THREADS="1",
    )
    cmd = [
        *snakemake_grid(grid_workdir, cores=2),
        "--set-threads",
        "train=1",
        "features=1",
        "predict=1",
        "cluster=1",
        "--max-threads",  # and the staging jobs (ingest: 4 threads): start-up bound, two share the 2 cores
        "1",
    ]
    run = subprocess.run(cmd, cwd=grid_workdir, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    out = grid_workdir / "results" / "unsupervised_vs_supervised"
    table = pd.read_parquet(out / "metrics.parquet")
    assert sorted(table["method"].unique()) == sorted(ROWS)
    assert set(table["sample"]) == {"test_a"}  # only the held-apart image is scored
    summary = (out / "summary.md").read_text()
    assert all(row in summary for row in ROWS)
    positions = [summary.index(f"| {row} |") for row in ROWS]
    assert positions == sorted(positions)  # rows in grid order (unet_20 before unet_100)
    vm = table[table["metric"] == "v_measure"].set_index("method")["value"]
    assert ((vm >= 0) & (vm <= 1)).all()
    assert vm["colour_kmeans"] > 0.5  # bright discs on a dark background: colour alone separates them
    figure = out / "figures" / "test_a_side_by_side.png"
    assert figure.is_file() and figure.stat().st_size > 1000
    # four U-Nets, one DINO ViT and its fine-tuned copy, the two contrastive stages, each trained once on
    # the training image only; the contrastive chain: crops -> stage 1 -> stage 2 -> the U-Net 20 % from it
    logs = grid_workdir / "results" / "logs" / "unsupervised_vs_supervised" / "train"
    methods = ("unet", "dino", "finetune", "contrastive_global", "contrastive_local")
    assert {m: len(list((logs / m).glob("*.log"))) for m in methods} == {
        "unet": 4, "dino": 1, "finetune": 1, "contrastive_global": 1, "contrastive_local": 1}
    origins = pd.read_parquet(next((out / "crops").glob("*/origins.parquet")))
    assert set(origins["name"]) == {"train_a"} and set(origins["split"]) == {"pretrain"}
    inits = [read_checkpoint_init(p) for p in (out / "models" / "unet").glob("*/best.pt")]
    assert sorted(i is not None for i in inits) == [False, False, False, True]
    train_cmds = [
        line for line in run.stdout.splitlines() + run.stderr.splitlines() if "zarrseg train" in line
    ]
    supervised = [c for c in train_cmds if "--method wnet" not in c]
    # (the contrastive stages name the crop store, which holds crops of train_a only: see above)
    assert supervised and all(("train_a" in c or "/crops/" in c) and "test_a" not in c for c in supervised)
    # the W-Net (no labels) is trained on the scored image itself, once
    assert [p.parent.name.rsplit("+", 1)[-1] for p in (out / "models" / "wnet").glob("*/best.pt")] == ["test_a"]
    # on demand: a BioImage.IO / TorchScript package of one trained model (rule export)
    model = sorted((out / "models" / "unet").glob("*/best.pt"))[0]
    target = model.parent / "bioimageio" / "rdf.yaml"
    run = subprocess.run(
        [*cmd[:3], str(target.relative_to(grid_workdir)), *cmd[3:]],  # targets before options
        cwd=grid_workdir,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    rdf = yaml.safe_load(target.read_text())
    assert (target.parent / rdf["weights"]["torchscript"]["source"]).is_file()


def test_training_sample_patterns_that_match_nothing_fail_before_any_job(grid_workdir):
    path = grid_workdir / "config" / "experiments" / "unsupervised_vs_supervised.yaml"
    exp = yaml.safe_load(path.read_text())
    exp["fixed"]["train.samples"] = ["nothing_*"]
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    cmd = [*snakemake_grid(grid_workdir, cores=1), "-n"]
    run = subprocess.run(cmd, cwd=grid_workdir, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "'nothing_*' matches no sample" in run.stdout + run.stderr
    assert not (grid_workdir / "results").exists()

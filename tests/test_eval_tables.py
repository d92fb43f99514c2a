"""`zarrseg evaluate` and `zarrseg table`: tidy tables, benchmarks, summaries, figures, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import write_image
from matplotlib.image import imread
from skimage.metrics import adapted_rand_error

from zarrseg.cli import main
from zarrseg.errors import InputError
from zarrseg.evaluation.tables import metrics_frame, read_benchmark, write_table

BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def write_labels(path, array: np.ndarray, axes: str | None = None) -> str:
    return write_image(path, array, axes, is_label=True)


def bench(path, *rows: str) -> str:
    path.write_text(BENCH_HEADER + "".join(r + "\n" for r in rows))
    return str(path)


@pytest.fixture
def pair(tmp_path, rng):
    gt = np.repeat(np.repeat(np.arange(1, 17).reshape(4, 4), 8, 0), 8, 1)[None].repeat(6, 0).astype(np.uint16)
    gt[:, :2] = 0  # ignore band
    seg = gt.astype(np.uint32) * 3
    seg[:, 10:14] = 999  # a merge across a row of objects
    return write_labels(tmp_path / "seg.ome.zarr", seg), write_labels(tmp_path / "gt.ome.zarr", gt), seg, gt


def test_read_benchmark_handles_repeats_and_na(tmp_path):
    one = read_benchmark(bench(tmp_path / "a.tsv", "12.5\t0:00:12\t350.2\t900\t300\t310\t1\t2\t95\t11"))
    assert one == {"runtime_s": 12.5, "max_rss_mb": 350.2}
    rep = read_benchmark(
        bench(
            tmp_path / "b.tsv",
            "10\t0:00:10\t100\t1\t1\t1\t1\t1\t1\t1",
            "20\t0:00:20\t300\t1\t1\t1\t1\t1\t1\t1",
        )
    )
    assert rep == {"runtime_s": 15.0, "max_rss_mb": 300.0}
    na = read_benchmark(bench(tmp_path / "c.tsv", "0.4\t0:00:00\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA"))
    assert na["runtime_s"] == 0.4 and np.isnan(na["max_rss_mb"])
    (tmp_path / "d.tsv").write_text("hello\n")
    with pytest.raises(InputError, match="benchmark"):
        read_benchmark(tmp_path / "d.tsv")


def test_evaluate_cli_writes_long_table(tmp_path, pair, capsys):
    seg_path, gt_path, seg, gt = pair
    out = tmp_path / "res" / "metrics.parquet"
    b1 = bench(tmp_path / "seg.tsv", "30\t0:00:30\t500\t1\t1\t1\t1\t1\t1\t1")
    b2 = bench(tmp_path / "pred.tsv", "10\t0:00:10\t800\t1\t1\t1\t1\t1\t1\t1")
    rc = main(
        [
            "evaluate",
            seg_path,
            "--gt",
            gt_path,
            "-o",
            str(out),
            "--meta",
            "experiment=exp1",
            "--meta",
            "sample=s1",
            "--meta",
            "method=gasp",
            "--meta",
            "cell=beta-0.5",
            "--meta",
            'params={"segment.beta": 0.5, "segment.partitioner": "gasp"}',
            "--meta",
            "note=x",
            "--benchmark",
            f"segment={b1}",
            "--benchmark",
            f"predict={b2}",
            "--set",
            "block_shape=[4,16,16]",
            "--set",
            "dask.scheduler=synchronous",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    table = pd.read_parquet(out)
    csv = pd.read_csv(out.with_suffix(".csv"))
    assert len(table) == len(csv) and list(table.columns) == list(csv.columns)
    assert list(table.columns[:10]) == [
        "experiment",
        "sample",
        "method",
        "cell",
        "params",
        "annotator",
        "metric",
        "value",
        "runtime_s",
        "max_rss_mb",
    ]
    row = table.set_index("metric").loc["arand"]
    assert row["value"] == pytest.approx(adapted_rand_error(gt, seg, ignore_labels=(0,))[0], abs=1e-12)
    assert (row["experiment"], row["sample"], row["method"], row["cell"], row["note"]) == (
        "exp1",
        "s1",
        "gasp",
        "beta-0.5",
        "x",
    )
    assert json.loads(row["params"]) == {"segment.beta": 0.5, "segment.partitioner": "gasp"}
    assert row["runtime_s"] == 40.0 and row["max_rss_mb"] == 800.0
    assert row["segment_runtime_s"] == 30.0 and row["predict_max_rss_mb"] == 800.0
    assert {"ap@0.50", "seg", "sbd", "voi_split", "msa"} <= set(table["metric"])
    assert not list(tmp_path.glob("res/*.partial"))


def test_evaluate_multi_annotator_and_clustering(tmp_path, rng):
    gt = rng.integers(1, 4, (2, 24, 24)).astype(np.uint8)  # 2 annotators as channels, classes 1..3
    seg = gt[0].astype(np.uint16) * 5
    seg_path = write_labels(tmp_path / "seg.zarr", seg)
    gt_path = write_labels(tmp_path / "gt.zarr", gt, axes="cyx")
    out = tmp_path / "m.parquet"
    assert main(["evaluate", seg_path, "--gt", gt_path, "-o", str(out), "--set", "kind=clustering"]) == 0
    table = pd.read_parquet(out)
    assert set(table["annotator"]) == {"0", "1", "mean", "best"}
    v = table[table["metric"] == "v_measure"].set_index("annotator")["value"]
    assert v["0"] == pytest.approx(1.0) and v["1"] < 0.1
    assert v["best"] == v["0"] and v["mean"] == pytest.approx((v["0"] + v["1"]) / 2)
    assert table["sample"].iloc[0] == "seg"  # default sample name: the segmentation's file name


def test_evaluate_semantic_with_mask(tmp_path, rng):
    from sklearn.metrics import f1_score, jaccard_score

    gt = (rng.random((4, 32, 32)) < 0.4).astype(np.uint8)
    seg = np.where(rng.random(gt.shape) < 0.15, 1 - gt, gt).astype(np.uint8) * 255  # 0/255 mask
    mask = np.zeros(gt.shape, np.uint8)
    mask[:, 4:28, 4:28] = 1
    out = tmp_path / "sem.parquet"
    args = [
        "evaluate",
        write_labels(tmp_path / "s.zarr", seg),
        "--gt",
        write_labels(tmp_path / "g.zarr", gt),
        "--mask",
        write_labels(tmp_path / "m.zarr", mask),
        "-o",
        str(out),
        "--set",
        "kind=semantic",
    ]
    assert main(args) == 0
    values = pd.read_parquet(out).set_index("metric")["value"]
    keep = mask != 0
    assert values["iou"] == pytest.approx(jaccard_score(gt[keep] != 0, seg[keep] != 0), abs=1e-12)
    assert values["dice"] == pytest.approx(f1_score(gt[keep] != 0, seg[keep] != 0), abs=1e-12)


@pytest.mark.parametrize(
    "case,match",
    [
        ("missing", "does not exist"),
        ("float", "integer label image"),
        ("shape", "differs"),
        ("meta", "key=value"),
        ("bench", "benchmark file does not exist"),
        ("metric", "unknown instance metric"),
        ("empty", "no voxels to score"),
    ],
)
def test_evaluate_bad_input_fails_before_output(tmp_path, pair, capsys, case, match):
    seg_path, gt_path, _, gt = pair
    args = ["evaluate", seg_path, "--gt", gt_path, "-o", str(tmp_path / "out.parquet")]
    if case == "missing":
        args[1] = str(tmp_path / "nope.zarr")
    elif case == "float":
        args[1] = write_labels(tmp_path / "f.zarr", gt.astype(np.float32))
    elif case == "shape":
        args[3] = write_labels(tmp_path / "small.zarr", gt[:3])
    elif case == "meta":
        args += ["--meta", "sample"]
    elif case == "bench":
        args += ["--benchmark", f"segment={tmp_path / 'none.tsv'}"]
    elif case == "metric":
        args += ["--set", "metrics=[arand, vio_split]"]
    elif case == "empty":
        args[3] = write_labels(tmp_path / "zeros.zarr", np.zeros_like(gt))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.parquet").exists() and not (tmp_path / "out.csv").exists()


def grid_tables(tmp_path) -> list[str]:
    """Per-cell tables of a 2 partitioners x 2 betas grid on 3 samples, with known values."""
    paths = []
    for partitioner in ("gasp", "multicut"):
        for beta in (0.4, 0.6):
            for k, sample in enumerate(("a", "b", "c")):
                base = 0.1 if partitioner == "gasp" else 0.3
                scores = {
                    "": {
                        "arand": base + beta / 10 + 0.01 * k,
                        "voi_split": 1.0 + k,
                        "voi_merge": beta,
                        "seg": 0.8 - 0.1 * k,
                    }
                }
                meta = {
                    "experiment": "grid",
                    "sample": sample,
                    "method": partitioner,
                    "cell": f"partitioner-{partitioner}_beta-{beta:g}",
                    "params": {
                        "segment.partitioner": partitioner,
                        "segment.beta": beta,
                        "segment.sigma_seeds": 2.0,
                    },
                }
                frame = metrics_frame(scores, meta, {"segment": {"runtime_s": 10.0 + k, "max_rss_mb": 100.0}})
                path = tmp_path / "cells" / f"{sample}_{partitioner}_{beta}.parquet"
                paths.append(str(write_table(frame, path)[0]))
    return paths


def test_table_cli_summary_and_figures(tmp_path, capsys):
    paths = grid_tables(tmp_path)
    out = tmp_path / "results"
    assert main(["table", *paths, "-o", str(out)]) == 0
    capsys.readouterr()
    assert len(pd.read_parquet(out / "metrics.parquet")) == 12 * 4
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 4 and set(summary["n"]) == {3}
    row = summary[(summary["partitioner"] == "gasp") & (summary["beta"] == 0.4)].iloc[0]
    expected = [0.1 + 0.04 + 0.01 * k for k in range(3)]
    assert row["arand_mean"] == pytest.approx(np.mean(expected))
    assert row["arand_sd"] == pytest.approx(np.std(expected, ddof=1))
    assert row["runtime_s_mean"] == pytest.approx(11.0)
    assert "sigma_seeds" not in summary.columns  # fixed parameters are not row labels
    md = (out / "summary.md").read_text()
    assert "| method | beta | n | ARand ↓ | VOI_split ↓ | VOI_merge ↓ | SEG |" in md  # partitioner = method
    assert f"**{np.mean(expected):.3f} ± {np.std(expected, ddof=1):.3f}**" in md  # best ARand in bold
    assert "**2.000 ± 1.000**" not in md  # equal in every row: nothing to highlight
    best = pd.read_csv(out / "best.csv")  # one row per method: its best beta by mean ARand
    assert list(best["method"]) == ["gasp", "multicut"] and list(best["beta"]) == [0.4, 0.4]
    assert "best parameter set per method by mean ARand" in (out / "best.md").read_text()
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert figures == ["box_partitioner.png", "curve_beta.png"]
    for name in figures:
        image = imread(out / "figures" / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert image[..., :3].std() > 0  # something is drawn


def test_summary_rows_keep_the_order_of_the_tables(tmp_path, capsys):
    """Rows follow the grid (input) order, e.g. unet_20 before unet_100, not alphabetical order."""
    paths = grid_tables(tmp_path)[::-1]  # multicut first, beta 0.6 before 0.4
    assert main(["table", *paths, "-o", str(tmp_path / "results")]) == 0
    capsys.readouterr()
    summary = pd.read_csv(tmp_path / "results" / "summary.csv")
    assert list(zip(summary["partitioner"], summary["beta"], strict=True)) == [
        ("multicut", 0.6),
        ("multicut", 0.4),
        ("gasp", 0.6),
        ("gasp", 0.4),
    ]


def test_table_bad_input(tmp_path, capsys):
    paths = grid_tables(tmp_path)
    out = tmp_path / "results"
    assert main(["table", *paths, str(tmp_path / "missing.parquet"), "-o", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    assert main(["table", str(tmp_path / "bad.parquet"), "-o", str(out)]) == 2
    assert "cannot be read" in capsys.readouterr().err
    assert main(["table", *paths, "-o", str(out), "--set", "metrics=[arand, sbd]"]) == 2
    assert "not in the metric tables" in capsys.readouterr().err
    assert not out.exists()


def test_table_refuses_one_sample_scored_twice_and_reads_csv_ids_as_text(tmp_path, capsys):
    meta = {"experiment": "e", "sample": "labels", "method": "m", "cell": "c", "params": {}}
    a, b = (write_table(metrics_frame({"": {"arand": v}}, meta, {}), tmp_path / name / "labels.parquet")[0]
            for name, v in (("x", 0.1), ("y", 0.3)))
    out = tmp_path / "out"
    assert main(["table", str(a), str(b), "-o", str(out)]) == 2  # two images both called 'labels'
    err = capsys.readouterr().err
    assert "sample 'labels' of cell 'c'" in err and "in 2 metric tables" in err and "--meta sample" in err
    assert main(["table", str(a), str(a), "-o", str(out)]) == 2 and "scored twice" in capsys.readouterr().err
    assert not out.exists()
    # a CSV keeps sample '001' as its Parquet twin does: the pair is one sample, scored twice
    meta["sample"] = "001"
    parquet, csv = write_table(metrics_frame({"": {"arand": 0.1}}, meta, {}), tmp_path / "001.parquet")
    from zarrseg.evaluation.tables import read_metrics

    assert list(read_metrics([csv])["sample"]) == ["001"]
    assert main(["table", str(parquet), str(csv), "-o", str(out)]) == 2
    assert "sample '001'" in capsys.readouterr().err


def test_a_parameter_only_some_rows_set_shows_as_a_dash(tmp_path, capsys):
    """Grid rows with linked values: clustering rows have no supervision fraction, U-Net rows do;
    a value linked to every U-Net row alike (predict.method) is no row label."""
    paths = []
    for method, params in (
        ("colour_kmeans", {}),
        ("unet_20", {"train.supervision_fraction": 0.2, "predict.method": "unet"}),
        ("unet_50", {"train.supervision_fraction": 0.5, "predict.method": "unet"}),
    ):
        meta = {"experiment": "ssl", "sample": "a", "method": method, "cell": method, "params": params}
        frame = metrics_frame({"": {"v_measure": 0.5}}, meta, {})
        paths.append(str(write_table(frame, tmp_path / f"{method}.parquet")[0]))
    assert main(["table", *paths, "-o", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "| method | supervision_fraction | n |" in md
    assert "| colour_kmeans | – | 1 |" in md and "| unet_20 | 0.2 | 1 |" in md


def test_boolean_grid_values_get_boxes_not_curves():
    """A grid over a switch (e.g. segment.split: [false, true]) is no curve axis: True - False fails in numpy."""
    from zarrseg.evaluation.plots import _numeric

    assert not _numeric(pd.Series([True, False, None], dtype=object))
    assert _numeric(pd.Series([0.4, 0.5])) and _numeric(pd.Series(["0.4", "0.5"]))


def test_signed_dic_is_best_nearest_zero_counts_are_not_ranked_and_n_is_per_metric(tmp_path, capsys):
    from zarrseg.evaluation.semantic import combine_annotators

    best = combine_annotators([{"dic": -32.0, "n_seg_objects": 10.0}, {"dic": 16.0, "n_seg_objects": 10.0}])["best"]
    assert best["dic"] == 16.0 and best["n_seg_objects"] == 10.0
    paths = []
    for method, dic, seg in (("a", -40.0, [0.9, np.nan, 0.1]), ("b", -39.5, [0.5, 0.5, 0.5])):
        for k, sample in enumerate("xyz"):
            meta = {"experiment": "e", "sample": sample, "method": method, "cell": method, "params": {}}
            scores = {"dic": dic, "n_seg_objects": 200.0 + (method == "a"), "seg": seg[k]}
            paths.append(str(write_table(metrics_frame({"": scores}, meta, {}), tmp_path / f"{method}{sample}.parquet")[0]))
    out = tmp_path / "out"
    assert main(["table", *paths, "-o", str(out), "--set", "metrics=[dic, n_seg_objects, seg]"]) == 0
    capsys.readouterr()
    md = (out / "summary.md").read_text()
    assert "**-39.500 ± 0.000**" in md and "**-40.000" not in md  # nearer 0, not the most negative
    assert "**201.000" not in md and "**200.000" not in md  # a count has no best
    assert "0.500 ± 0.566 (n=2)" in md  # SEG NaN on one of the three samples of row a
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["seg_n"]) == [2, 3] and list(summary["n"]) == [3, 3]


def test_curves_draw_a_line_per_method_skip_seeds_and_baselines_follow_their_panel(tmp_path, monkeypatch):
    from zarrseg.evaluation import groups, plots
    from zarrseg.evaluation.tables import CurveParams, read_metrics

    figures = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.setdefault(path.name, fig) and path)
    paths = []
    for method, slope in (("A", 0.4), ("B", -0.4)):  # opposite trends: pooled, they made one flat line
        for beta in (0.3, 0.6):
            for seed in (0, 1):
                meta = {"experiment": "e", "sample": "s", "method": method, "cell": f"{method}{beta}{seed}",
                        "params": {"segment.beta": beta, "train.loop.seed": seed}}
                frame = metrics_frame({"": {"arand": 0.5 + slope * (beta - 0.45)}}, meta, {})
                paths.append(write_table(frame, tmp_path / f"{method}{beta}{seed}.parquet")[0])
    table = read_metrics(paths)
    plots.make_figures(table, tmp_path, plots.TableParams(figure_metrics=["arand"]))
    assert "curve_beta.png" in figures and "curve_seed.png" not in figures
    (ax,) = figures["curve_beta.png"].axes
    assert len(ax.containers) == 2 and {t.get_text() for t in ax.get_legend().get_texts()} == {"A", "B"}
    # a baseline of each loss is drawn in that loss' panel (both were drawn at their pooled mean)
    rows = []
    for loss, base in (("bce", 0.8), ("ssim", 0.6)):
        meta = {"experiment": "e", "sample": "s", "method": "supervised", "cell": f"sup_{loss}",
                "params": {"train.loss.name": loss}}
        rows.append(write_table(metrics_frame({"": {"dice": base}}, meta, {}), tmp_path / f"sup_{loss}.parquet")[0])
        for fraction in (0.2, 0.6):
            meta = {"experiment": "e", "sample": "s", "method": "pre", "cell": f"pre_{loss}{fraction}",
                    "params": {"train.loss.name": loss, "contrastive_global.fraction": fraction}}
            rows.append(write_table(metrics_frame({"": {"dice": 0.7}}, meta, {}), tmp_path / f"p{loss}{fraction}.parquet")[0])
    from matplotlib.figure import Figure

    saved, savefig = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (saved.append(fig), savefig(fig, *a, **k)))
    spec = CurveParams(x="contrastive_global.fraction", panels="train.loss.name")
    groups.curve_figures(read_metrics(rows), spec, "dice", tmp_path)
    baselines = [[line.get_ydata()[0] for line in ax.lines if line.get_label() == "supervised (mean)"]
                 for ax in saved[0].axes if ax.get_visible()]
    assert baselines == [[0.8], [0.6]]  # bce panel, ssim panel
    table = groups.group_table(read_metrics(rows), ["train.loss.name"], ["dice"])
    assert groups.group_markdown(table).startswith("# By train.loss.name\n\n| train.loss.name | cells |")


def test_box_plots_keep_rows_without_the_box_parameter_and_skip_big_single_method_grids(tmp_path, monkeypatch):
    from zarrseg.evaluation import plots
    from zarrseg.evaluation.tables import read_metrics

    figures = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.setdefault(path.name, fig) and path)
    paths = []
    for method, params in (("multicut", {"segment.partitioner": "multicut"}), ("kmeans", {}), ("unet", {})):
        for sample in "xy":
            meta = {"experiment": "e", "sample": sample, "method": method, "cell": method, "params": params}
            paths.append(write_table(metrics_frame({"": {"arand": 0.3}}, meta, {}), tmp_path / f"{method}{sample}.parquet")[0])
    plots.make_figures(read_metrics(paths), tmp_path, plots.TableParams(figure_metrics=["arand"]))
    (ax,) = figures["box_partitioner.png"].axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["(none)", "multicut"]  # k-means / U-Net rows kept
    figures.clear()
    grid = []
    for beta in range(12):
        meta = {"experiment": "e", "sample": "x", "method": "", "cell": f"b{beta}", "params": {"segment.beta": beta / 10}}
        grid.append(write_table(metrics_frame({"": {"arand": beta / 20}}, meta, {}), tmp_path / f"g{beta}.parquet")[0])
    plots.make_figures(read_metrics(grid), tmp_path, plots.TableParams(figure_metrics=["arand"]))
    assert list(figures) == ["curve_beta.png"]  # no unreadable box per cell


def test_a_rerun_removes_figures_it_no_longer_makes_but_not_others(tmp_path, capsys):
    paths = grid_tables(tmp_path)
    out = tmp_path / "results"
    assert main(["table", *paths, "-o", str(out)]) == 0
    assert (out / "figures" / "curve_beta.png").is_file()
    (out / "figures" / "mine.png").write_bytes(b"x")  # someone's figure beside ours
    one_beta = [p for p in paths if "0.4" in p]  # beta no longer swept: no curve of it
    assert main(["table", *one_beta, "-o", str(out)]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in (out / "figures").glob("*.png")) == ["box_partitioner.png", "mine.png"]
    # a third run that makes the curve again may replace it: the record kept every file it wrote
    assert main(["table", *paths, "-o", str(out)]) == 0
    assert (out / "figures" / "curve_beta.png").is_file()


def test_curve_legends_say_where_the_other_parameters_are_held(tmp_path, monkeypatch):
    from zarrseg.evaluation import plots
    from zarrseg.evaluation.tables import read_metrics

    figures = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.setdefault(path.name, fig) and path)
    paths = []
    for method in ("A", "B"):
        for beta in (0.3, 0.6):
            for threshold in (0.4, 0.5):
                meta = {"experiment": "e", "sample": "s", "method": method, "cell": f"{method}{beta}{threshold}",
                        "params": {"segment.beta": beta, "segment.threshold": threshold}}
                score = beta + (threshold if method == "A" else -threshold)  # A best at 0.5, B at 0.4
                paths.append(write_table(metrics_frame({"": {"arand": score}}, meta, {}),
                                         tmp_path / f"{method}{beta}{threshold}.parquet")[0])
    plots.make_figures(read_metrics(paths), tmp_path, plots.TableParams(figure_metrics=["arand"]))
    legend = {t.get_text() for t in figures["curve_beta.png"].axes[0].get_legend().get_texts()}
    assert legend == {"A (threshold 0.4)", "B (threshold 0.5)"}  # ARand: lower is better

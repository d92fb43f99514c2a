"""Bad input across the commands (found by a review of every command): one line naming the file and
the problem, exit code 2, and nothing left that looks complete."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import unet_params, voronoi_cells, write_image

from zarrseg.cli import main


def _run(capsys, *argv: str) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(list(argv))
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def _one_line(capsys, needle: str, *argv: str) -> None:
    code, err = _run(capsys, *argv)
    assert code == 2 and len(err) == 1 and needle in err[0], (code, err)


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    return {
        "img": write_image(tmp_path / "img.ome.zarr", rng.random((4, 32, 32)).astype("f4")),
        "gt": write_image(tmp_path / "gt.ome.zarr", voronoi_cells(rng, (4, 32, 32), 6), is_label=True),
        "small": write_image(tmp_path / "small.ome.zarr", voronoi_cells(rng, (4, 16, 32), 4), is_label=True),
        "nan": write_image(tmp_path / "nan.ome.zarr", np.full((4, 32, 32), np.nan, "f4")),
    }


def test_table_writes_nothing_unless_every_output_is_made(tmp_path, capsys):
    rows = [{"sample": s, "metric": m, "value": v} for s, v in (("a", 0.2), ("b", 0.4))
            for m, v in (("arand", v), ("voi_split", 2 * v))]
    good = tmp_path / "m.parquet"
    pd.DataFrame(rows).to_parquet(good)
    out = tmp_path / "tables"
    _one_line(capsys, "table.rank_by 'arnd' is not a metric", "table", str(good), "-o", str(out), "--set", "rank_by=arnd")
    _one_line(capsys, "'partitionr' is neither a grid parameter", "table", str(good), "-o", str(out),
              "--set", "box_by=partitionr")
    text = tmp_path / "text.parquet"
    pd.DataFrame(rows).assign(value="x").to_parquet(text)
    _one_line(capsys, "column 'value' holds 4 non-numbers", "table", str(text), "-o", str(out))
    nan = tmp_path / "nan.parquet"
    pd.DataFrame(rows).assign(value=np.nan).to_parquet(nan)
    _one_line(capsys, "every value of the 1 metric table(s) is NaN", "table", str(nan), "-o", str(out))
    (tmp_path / "afile").write_text("")
    _one_line(capsys, "exists and is not a folder", "table", str(good), "-o", str(tmp_path / "afile"))
    assert not out.exists() and not list(tmp_path.glob(".*.partial"))
    # one metric NaN on every sample: its column shows '–', the other metrics are still summarised
    part = tmp_path / "part.parquet"
    pd.DataFrame([{**r, "value": np.nan} if r["metric"] == "arand" else r for r in rows]).to_parquet(part)
    code, err = _run(capsys, "table", str(part), "-o", str(out))
    assert code == 0, err
    assert (out / "summary.md").is_file() and (out / "figures").is_dir() and not list(tmp_path.glob(".*.partial"))


def test_panels_and_describe_check_their_inputs_and_outputs(tmp_path, capsys, data):
    out = tmp_path / "f.png"
    _one_line(capsys, "spatial shape [4, 16, 32] differs from the image's [4, 32, 32]",
              "panels", data["img"], "--labels", f"seg={data['small']}", "-o", str(out))
    _one_line(capsys, "not a label image (pixel type float32)", "panels", data["img"], "--labels",
              f"seg={data['img']}", "-o", str(out))
    (tmp_path / "dir.png").mkdir()
    _one_line(capsys, "is a folder", "panels", data["img"], "-o", str(tmp_path / "dir.png"))
    assert not out.exists() and not list(tmp_path.glob("*.partial*"))
    table = tmp_path / "d.parquet"
    _one_line(capsys, "spatial shape [4, 16, 32] differs from the labels' [4, 32, 32]", "describe", data["gt"],
              "-o", str(table), "--image", data["small"], "--thumbnail", str(tmp_path / "t.png"))
    assert not table.exists()
    # the summary only takes the tables describe writes
    metrics = tmp_path / "m.parquet"
    pd.DataFrame([{"metric": "arand", "value": 0.1}]).to_parquet(metrics)
    _one_line(capsys, "is not a segment table", "describe", "--summary", str(metrics), "-o", str(tmp_path / "S"))
    (tmp_path / "cut.parquet").write_bytes(metrics.read_bytes()[:100])
    _one_line(capsys, "cannot be read as a segment table", "describe", "--summary", str(tmp_path / "cut.parquet"),
              "-o", str(tmp_path / "S"))
    assert not (tmp_path / "S").exists()


def test_panels_draw_an_image_with_nan_pixels_from_its_finite_ones(tmp_path, caplog):
    import imageio.v3 as iio

    from zarrseg.evaluation.panels import Panel, draw_panels

    image = np.tile(np.linspace(0, 100, 64, dtype=np.float32), (64, 1))
    image[10, 10] = np.nan
    with caplog.at_level("WARNING"):
        draw_panels([Panel("original", image, "image")], tmp_path / "p.png")
    grey = iio.imread(tmp_path / "p.png")[..., :3].mean(axis=-1)
    assert grey.min() < 50 and "1 of 4096 pixels" in caplog.text  # a ramp from black, not a blank panel


def test_cluster_refuses_nan_and_train_refuses_bad_rates(tmp_path, capsys, data):
    out = tmp_path / "c.ome.zarr"
    _one_line(capsys, "holds NaN or Inf values", "cluster", data["nan"], "-o", str(out))
    assert not out.exists()
    # swapped arguments: a label image where the raw image or a map belongs
    _one_line(capsys, "gt.ome.zarr: is a label image", "cluster", data["gt"], "-o", str(out))
    _one_line(capsys, "gt.ome.zarr: is a label image", "predict", data["gt"], "-o", str(out), "--set",
              "method=intensity")
    _one_line(capsys, "gt.ome.zarr: is a label image", "segment", data["gt"], "-o", str(out))
    assert not out.exists()
    params = tmp_path / "train.json"
    params.write_text(json.dumps(unet_params(data["img"], data["gt"], val_roi=None, loop={"steps": 1})))
    for bad in ("-1", ".nan"):
        _one_line(capsys, "train.optimizer.lr must be a positive, finite learning rate", "train", "-o",
                  str(tmp_path / "model"), "--params", str(params), "--set", f"optimizer.lr={bad}")
    assert not (tmp_path / "model").exists()
    _one_line(capsys, "nothing to resume: no last.pt", "train", "-o", str(tmp_path / "model"), "--params",
              str(params), "--resume")
    assert not (tmp_path / "model").exists()  # no empty model folder left behind


def test_export_refuses_a_license_the_spec_does_not_know():
    pytest.importorskip("bioimageio.spec")
    from zarrseg.errors import ConfigError
    from zarrseg.methods.unet.export import check_license

    check_license("MIT")
    with pytest.raises(ConfigError, match="did you mean 'MIT'"):
        check_license("mit")


def test_outputs_of_someone_else_are_never_replaced_and_reruns_are(tmp_path, capsys, data):
    """A file (or model folder) at an output path is replaced only when zarrseg wrote it: checked
    before any work, for tables, figures, summaries and models."""
    mine = tmp_path / "mine.parquet"
    mine.write_text("years of work")
    _one_line(capsys, "no record of writing it", "evaluate", data["gt"], "--gt", data["gt"], "-o", str(mine))
    (tmp_path / "other.csv").write_text("mine too")  # the CSV written beside a table counts as well
    _one_line(capsys, "other.csv: exists and zarrseg has no record", "evaluate", data["gt"], "--gt", data["gt"],
              "-o", str(tmp_path / "other.parquet"))
    assert not (tmp_path / "other.parquet").exists()
    ours = tmp_path / "ours.parquet"
    for _ in range(2):  # a rerun replaces what zarrseg wrote
        code, err = _run(capsys, "evaluate", data["gt"], "--gt", data["gt"], "-o", str(ours))
        assert code == 0, err
    assert pd.read_parquet(ours)["value"].notna().any()
    (tmp_path / "thumb.png").write_text("a photo")
    _one_line(capsys, "thumb.png: exists and zarrseg has no record", "describe", data["gt"], "-o",
              str(tmp_path / "d.parquet"), "--image", data["img"], "--thumbnail", str(tmp_path / "thumb.png"))
    _one_line(capsys, "thumb.png: exists and zarrseg has no record", "panels", data["img"], "-o",
              str(tmp_path / "thumb.png"))
    summary = tmp_path / "summary"
    summary.mkdir()
    (summary / "segments.md").write_text("my notes")
    code, err = _run(capsys, "describe", data["gt"], "-o", str(tmp_path / "d.parquet"))
    assert code == 0, err
    _one_line(capsys, "segments.md: exists and zarrseg has no record", "describe", "--summary",
              str(tmp_path / "d.parquet"), "-o", str(summary))
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "summary.md").write_text("my summary")
    _one_line(capsys, "summary.md: exists and zarrseg has no record", "table", str(ours), "-o", str(tables))
    assert (tables / "summary.md").read_text() == "my summary" and not list(tables.glob("*.parquet"))
    assert mine.read_text() == "years of work" and (tmp_path / "thumb.png").read_text() == "a photo"
    assert (summary / "segments.md").read_text() == "my notes" and not (tmp_path / "thumb.png.partial").exists()
    # models: a folder holding someone's files, or a file, is not trained into
    params = tmp_path / "train.json"
    params.write_text(json.dumps(unet_params(data["img"], data["gt"], val_roi=None, loop={"steps": 1})))
    model = tmp_path / "model"
    model.mkdir()
    (model / "best.pt").write_text("my model")
    _one_line(capsys, "not written by zarrseg", "train", "-o", str(model), "--params", str(params))
    _one_line(capsys, "exists as a file", "train", "-o", str(mine), "--params", str(params))
    assert (model / "best.pt").read_text() == "my model" and sorted(p.name for p in model.iterdir()) == ["best.pt"]


def test_damaged_metadata_nan_and_out_of_range_values_are_one_line(tmp_path, capsys, data):
    import shutil

    out = str(tmp_path / "out.ome.zarr")
    level = next(p for p in (tmp_path / "img.ome.zarr" / "0").iterdir() if p.name in (".zarray", "zarr.json"))
    for damage in ("corrupt", "missing"):
        bad = tmp_path / f"{damage}.ome.zarr"
        shutil.copytree(data["img"], bad)
        if damage == "corrupt":
            (bad / "0" / level.name).write_text("{")
        else:
            shutil.rmtree(bad / "0")
        for argv in (["segment", str(bad), "-o", out], ["describe", str(bad), "-o", str(tmp_path / "d.parquet")]):
            _one_line(capsys, f"{damage}.ome.zarr: level '0' cannot be opened", *argv)
    # NaN or a label image where features are computed; a float (NaN) map given as the scoring mask
    _one_line(capsys, "nan.ome.zarr: holds NaN or Inf values", "features", data["nan"], "-o", out)
    _one_line(capsys, "gt.ome.zarr: is a label image", "features", data["gt"], "-o", out)
    _one_line(capsys, "mask must be integer or boolean", "evaluate", data["gt"], "--gt", data["gt"], "-o",
              str(tmp_path / "e.parquet"), "--mask", data["nan"])
    # numbers outside their range: checked with the parameters, not found by a crash later
    for argv, said in ((["panels", data["img"], "-o", str(tmp_path / "p.png"), "--set", "dpi=0"], "panels.dpi"),
                       (["features", data["img"], "-o", out, "--set", "vit.patch_size=0"], "vit.patch_size"),
                       (["evaluate", data["gt"], "--gt", data["gt"], "-o", str(tmp_path / "e.parquet"), "--set",
                         "ignore_label=-3"], "evaluate.ignore_label")):
        _one_line(capsys, said, *argv)
    params = tmp_path / "train.json"
    params.write_text(json.dumps(unet_params(data["img"], data["gt"], val_roi=None, patch_shape=[0, 32])))
    _one_line(capsys, "train.patch_shape must be positive", "train", "-o", str(tmp_path / "m"), "--params",
              str(params))
    assert not any(p.exists() for p in (tmp_path / "out.ome.zarr", tmp_path / "e.parquet", tmp_path / "m",
                                        tmp_path / "p.png"))


def test_a_params_file_may_hold_its_section_and_a_typo_names_the_file(tmp_path, capsys, data):
    from types import SimpleNamespace

    from zarrseg.commands._common import params_from_args
    from zarrseg.errors import ConfigError
    from zarrseg.segment.params import SegmentParams

    wrapped = tmp_path / "wrapped.yaml"
    wrapped.write_text("segment:\n  beta: 0.7\n")  # as in config/config.yaml
    args = SimpleNamespace(params=[str(wrapped)], overrides=["min_size=5"])
    params = params_from_args(SegmentParams, args, "segment")
    assert params.beta == 0.7 and params.min_size == 5
    typo = tmp_path / "typo.yaml"
    typo.write_text("betta: 0.7\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown parameter 'betta' in segment \(did you mean 'beta'"):
        params_from_args(SegmentParams, SimpleNamespace(params=[str(typo)], overrides=[]), "segment")
    _one_line(capsys, "typo.yaml: unknown parameter 'betta'", "segment", data["img"], "-o",
              str(tmp_path / "s.ome.zarr"), "--params", str(typo))


def test_an_intensity_image_scored_as_labels_is_named_in_a_warning(tmp_path, capsys):
    import tifffile

    from zarrseg.ingest.writer import ingest

    rng = np.random.default_rng(1)
    tif = tmp_path / "raw.tif"
    tifffile.imwrite(tif, rng.integers(0, 4, (32, 32), dtype=np.uint8))
    raw, labels = ingest(tif, tmp_path / "raw.ome.zarr"), ingest(tif, tmp_path / "lab.ome.zarr", labels=True)
    code, err = _run(capsys, "evaluate", str(labels), "--gt", str(labels), "-o", str(tmp_path / "a.parquet"))
    assert code == 0 and not [line for line in err if "intensity image" in line], err
    code, err = _run(capsys, "evaluate", str(raw), "--gt", str(labels), "-o", str(tmp_path / "b.parquet"))
    warned = [line for line in err if "looks like an intensity image" in line]
    assert code == 0 and len(warned) == 1 and "raw.ome.zarr" in warned[0] and "segmentation" in warned[0], err
    code, err = _run(capsys, "describe", str(raw), "-o", str(tmp_path / "d.parquet"))
    assert code == 0 and [line for line in err if "looks like an intensity image" in line], err


def test_axes_outside_tczyx_or_named_twice_are_refused_on_opening(tmp_path, capsys, data):
    import shutil

    for axes, name in ((["q", "y", "x"], "odd"), (["y", "y", "x"], "twice")):
        bad = tmp_path / f"{name}.ome.zarr"
        shutil.copytree(data["img"], bad)
        meta = json.loads((bad / ".zattrs").read_text())
        meta["multiscales"][0]["axes"] = [{**a, "name": n} for a, n in zip(meta["multiscales"][0]["axes"], axes,
                                                                           strict=True)]
        (bad / ".zattrs").write_text(json.dumps(meta))
        for argv in (["predict", str(bad), "-o", str(tmp_path / "p.ome.zarr")],
                     ["describe", str(bad), "-o", str(tmp_path / "d.parquet")]):
            _one_line(capsys, f"{name}.ome.zarr: metadata names axes", *argv)
    assert not (tmp_path / "p.ome.zarr").exists() and not (tmp_path / "d.parquet").exists()


def test_table_refuses_someone_elses_summary_before_making_anything(tmp_path, monkeypatch):
    from zarrseg.errors import OutputError
    from zarrseg.evaluation import report

    rows = pd.DataFrame([{"sample": "a", "metric": "arand", "value": 0.2}])
    rows.to_parquet(tmp_path / "m.parquet")
    out = tmp_path / "tables"
    out.mkdir()
    (out / "best.md").write_text("my ranking")
    monkeypatch.setattr(report, "_write_all", lambda *a, **k: pytest.fail("tables made before the check"))
    with pytest.raises(OutputError, match="best.md: exists and zarrseg has no record"):
        report.aggregate([tmp_path / "m.parquet"], out)
    assert (out / "best.md").read_text() == "my ranking"


def test_grids_csv_and_nightly_passthrough_are_checked(tmp_path, capsys):
    mine = tmp_path / "cells.csv"
    mine.write_text("mine")
    _one_line(capsys, "cells.csv: exists and zarrseg has no record", "grids", "spoco_budget", "--csv", str(mine))
    code, _err = _run(capsys, "grids", "spoco_budget", "--csv", str(tmp_path / "new.csv"))
    assert code == 0 and pd.read_csv(tmp_path / "new.csv").shape[0] > 1 and mine.read_text() == "mine"
    _one_line(capsys, "give its NAME", "grids", "--csv", str(tmp_path / "all.csv"))  # the listing has no CSV
    assert not (tmp_path / "all.csv").exists()
    code, _err = _run(capsys, "grids", "bsds300_table1", "--csv", str(tmp_path / "bsds.csv"))
    seeds = pd.read_csv(tmp_path / "bsds.csv", dtype=str)["wnet.loop.seed"].dropna()
    assert code == 0 and len(seeds) and all(v.isdigit() for v in seeds)  # 0, not 0.0 (some cells lack it)
    (tmp_path / "in").mkdir()
    _one_line(capsys, "No closing quotation", "nightly", str(tmp_path / "in"), "-o", str(tmp_path / "r"),
              "--snakemake-args", '"unclosed')
    grid = tmp_path / "grid.yaml"
    grid.write_text("experiment: partitioner_grid\n")  # a grid with its own sample sheet: nothing would run
    _one_line(capsys, "names its own samples", "nightly", str(tmp_path / "in"), "-o", str(tmp_path / "r"),
              "--config", str(grid))
    assert not (tmp_path / "r").exists()
    # Snakemake's own parser judges them before any work, even on a night with nothing new
    for extra, message in (("--bogus-flag", "unrecognized arguments: --bogus-flag"),
                           ("--cores", "expected one argument"), ("-n", "a dry run (-n) processes nothing")):
        _one_line(capsys, message, "nightly", str(tmp_path / "in"), "-o", str(tmp_path / "r"), "--snakemake-args", extra)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", ["ingest", "crops", "predict", "segment", "evaluate", "table", "features",
                                     "cluster", "panels", "train", "pretrain", "finetune", "describe"])
def test_help_ends_with_every_parameter_and_its_default_and_the_example_key_exists(command, capsys):
    import re

    from zarrseg.commands._common import parameters_help

    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    reference = text[text.index("parameters of '"):]
    keys = re.findall(r"^  ([\w.]+) = ", reference, flags=re.M)
    assert len(keys) >= 5 and reference.strip() == parameters_help(reference.split("'")[1]
                                                                   if command != "describe" else
                                                                   "dask=zarrseg.parallel:DaskParams").strip()
    example = re.search(r"e\.g\. --set ([\w.]+)=", " ".join(text.split())).group(1)
    assert example in keys, (example, keys)


def test_argument_files_carry_lists_longer_than_a_command_line(tmp_path, capsys):
    """The workflow hands `zarrseg table` thousands of tables as @FILE (one per line): a single
    command line is limited to 128 KiB."""
    from zarrseg.workflow import write_lines

    tables = []
    for k in range(3):
        path = tmp_path / "metrics" / f"cell{k}.parquet"
        path.parent.mkdir(exist_ok=True)
        pd.DataFrame([{"sample": "a", "cell": f"c{k}", "metric": "arand", "value": 0.1 * k}]).to_parquet(path)
        tables.append(path)
    listing = write_lines(tmp_path / "inputs.txt", tables)
    assert listing.read_text().splitlines() == [str(t) for t in tables]
    code, err = _run(capsys, "table", f"@{listing}", "-o", str(tmp_path / "out"))
    assert code == 0, err
    assert sorted(pd.read_parquet(tmp_path / "out" / "metrics.parquet")["cell"]) == ["c0", "c1", "c2"]


def test_many_panels_wrap_onto_rows(tmp_path):
    import imageio.v3 as iio

    from zarrseg.evaluation.panels import Panel, PanelParams, draw_panels

    labels = np.arange(64 * 64).reshape(64, 64) % 7
    panels = [Panel(f"row {k}, loss.name: ssim_mae_dice", labels) for k in range(8)]
    draw_panels(panels, tmp_path / "p.png", PanelParams(columns=3, panel_inches=2.0, dpi=50))
    height, width = iio.imread(tmp_path / "p.png").shape[:2]
    assert width <= 3 * 2.0 * 50 + 2 and height >= 3 * 2.0 * 50  # 3 columns, 3 rows


def test_label_panels_outline_touching_segments_and_spread_colours():
    from zarrseg.evaluation.panels import _label_colours

    labels = np.repeat(np.repeat(np.arange(1, 401).reshape(20, 20), 8, axis=0), 8, axis=1)  # 400 touching squares
    rgb = _label_colours(labels)
    centres = rgb[4::8, 4::8].reshape(-1, 3)
    assert len({tuple(c) for c in centres}) >= 40  # ids spread over the palette, not a 10-colour cycle
    between = rgb[4::8, 8::8]  # first pixel of each right neighbour: the border, darker than its segment
    assert (between.sum(axis=-1) < rgb[4::8, 12::8][:, : between.shape[1]].sum(axis=-1)).all()
    semantic = _label_colours(np.array([[1, 1, 2, 2]]))
    assert (semantic[0, 1] == semantic[0, 0]).all()  # two classes: no outline

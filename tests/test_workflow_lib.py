"""Sample discovery, experiment grids and per-cell stage parameters (the workflow's library side)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import shared_path
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from zarrseg.errors import ConfigError
from zarrseg.experiments import Experiment, cell_for, cell_id, load_experiment, stage_overrides
from zarrseg.parallel import DaskParams
from zarrseg.params import load_params, parse_overrides
from zarrseg.workflow import (
    DEFAULT_SHEET,
    discover_folder,
    discover_samples,
    read_sample_sheet,
    scene_labels,
    sheet_setting,
    stage_params,
)

REPO = Path(__file__).resolve().parents[1]


def _config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def _schema() -> dict:
    return yaml.safe_load((REPO / "config" / "schema.yaml").read_text())


def test_default_config_is_valid_against_schema():
    Draft202012Validator(_schema()).validate(_config())
    assert _schema()["$schema"].endswith("draft/2020-12/schema")


@pytest.mark.parametrize("mutate", [
    lambda c: c.update(sampels={}),                                   # typo at top level
    lambda c: c["dask"].update(scheduler="slrum"),                      # unknown scheduler
    lambda c: c["storage"].update(chunks=[0, 64, 64]),                 # impossible chunk
    lambda c: c["storage"]["compression"].update(codec="gzipp"),       # unknown codec
    lambda c: c["samples"].update(sheet=3),                             # wrong type
])
def test_schema_rejects_bad_config(mutate):
    config = _config()
    mutate(config)
    with pytest.raises(ValidationError):
        Draft202012Validator(_schema()).validate(config)


@pytest.mark.parametrize(("change", "message"), [
    ({"segment": {"partitionr": "gasp"}}, r"unknown parameter 'partitionr' in segment \(did you mean 'partitioner'\?\)"),
    ({"segment": {"partitioner": "gsap"}}, r"segment.partitioner: 'gsap' is not one of \['multicut'"),
    ({"segment": {"beta": "high"}}, r"segment.beta: 'high' is not of type 'number'"),
    ({"spoco": {"loss": {"kernel_treshold": 0.5}}}, r"'kernel_treshold' in spoco.loss \(did you mean 'kernel_threshold'"),
    ({"resuls_dir": "x"}, r"unknown key 'resuls_dir' in the config \(did you mean 'results_dir'\?\)"),
    ({"dask": {"n_worker": 2}}, r"unknown key 'n_worker' in dask \(did you mean 'n_workers'\?\)"),
    ({"storage": {"compression": {"level": 99}}}, r"storage.compression.level: 99 is greater than the maximum of 9"),
    ({"segment": [1, 2]}, r"config section 'segment' must be a mapping"),
])
def test_workflow_config_problems_are_one_line_naming_the_key(change, message):
    """What the Snakefile checks before any job (``check_config_or_exit``): each section against
    its own schema, then the rest; never the dump of a section's whole schema."""
    from zarrseg.params import deep_update
    from zarrseg.schema import check_config

    schema = REPO / "config" / "schema.yaml"
    check_config(_config(), schema)  # the shipped config passes
    with pytest.raises(ConfigError, match=message) as err:
        check_config(deep_update(_config(), change), schema)
    assert "\n" not in str(err.value) and len(str(err.value)) < 1000


def test_sample_sheet_and_folder(tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("a.czi", "b.ome.tif", "b_labels.tif", "notes.txt"):
        (tmp_path / "in" / name).write_bytes(b"x")
    found = discover_folder(tmp_path / "in")
    assert [(s.name, Path(s.ground_truth).name if s.ground_truth else None) for s in found] == [
        ("a", None), ("b", "b_labels.tif")]
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("sample\timage\tground_truth\tscene\n"
                     "s1\tin/a.czi\t\t2\ns2\tin/b.ome.tif\tin/b_labels.tif\t\n")
    samples = read_sample_sheet(sheet, tmp_path)
    assert samples[0].scene == 2 and samples[0].ground_truth is None
    assert samples[1].ground_truth == str(tmp_path / "in" / "b_labels.tif")
    both = discover_samples({"samples": {"sheet": "samples.tsv", "input_dir": "in"}}, tmp_path)
    assert set(both) == {"s1", "s2", "a", "b"}


def test_awkward_file_names_become_valid_unique_samples(tmp_path):
    """Names microscopes write: a leading '_' or accent, '#' (not a sheet comment), one stem twice."""
    from zarrseg.workflow import sample_name

    assert [sample_name(Path(n)) for n in ("_scan 2.tif", "äpfel.czi", "(1).png", "well#12.tif")] == [
        "s_scan_2", "apfel", "s_1_", "well_12"]
    folder = tmp_path / "run#5"
    folder.mkdir()
    for name in ("well#12.tif", "_scan 2.tif"):
        (folder / name).write_bytes(b"x")
    sheet = tmp_path / "s.tsv"
    sheet.write_text("# acquisitions of run 5\nsample\timage\n" + "".join(
        f"{sample_name(p)}\t{p}\n" for p in sorted(folder.iterdir())))
    assert [Path(s.image).name for s in read_sample_sheet(sheet, tmp_path)] == ["_scan 2.tif", "well#12.tif"]
    (folder / "well#12.czi").write_bytes(b"x")  # same stem: both acquisitions seen, the clash named
    with pytest.raises(ConfigError, match="'well_12' of well#12.tif is already that of well#12.czi"):
        discover_folder(folder)


def test_sample_sheet_errors(tmp_path, caplog):
    sheet = tmp_path / "s.tsv"
    (tmp_path / "here.tif").write_bytes(b"x")
    sheet.write_text("sample\timage\nx\tmissing.tif\ny\there.tif\n")
    # one missing file skips its sample (with a warning naming it), not the whole workflow
    assert [s.name for s in read_sample_sheet(sheet, tmp_path)] == ["y"]
    assert "missing.tif does not exist" in caplog.text and "'x' skipped" in caplog.text
    sheet.write_text("sample\timgae\nx\ty\n")
    with pytest.raises(ConfigError, match="lacks column"):
        read_sample_sheet(sheet, tmp_path)
    (tmp_path / "a.tif").write_bytes(b"x")
    sheet.write_text("sample\timage\nx\ta.tif\nx\ta.tif\n")
    with pytest.raises(ConfigError, match="appears twice"):
        discover_samples({"samples": {"sheet": "s.tsv"}}, tmp_path)


def test_hdf5_dataset_entries_resolve(tmp_path):
    (tmp_path / "v.h5").write_bytes(b"")
    sheet = tmp_path / "s.tsv"
    sheet.write_text("sample\timage\tboundaries\nv\tv.h5:raw\tv.h5:pred\n")
    (sample,) = read_sample_sheet(sheet, tmp_path)
    assert sample.image == f"{tmp_path}/v.h5:raw" and sample.boundaries.endswith("v.h5:pred")


def test_grid_cells_are_stable_and_shared(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"name": "g", "grid": {"predict.sigma": [1.0, 2.0],
                                                          "segment.beta": [0.3, 0.5]}}))
    exp = load_experiment(path)
    cells = exp.cells()
    assert len(cells) == 4 and "sigma-1_beta-0.3" in cells
    # adding a value keeps every existing cell id
    grown = Experiment(name="g", grid={"predict.sigma": [1.0, 2.0], "segment.beta": [0.3, 0.5, 0.7]})
    assert set(cells) < set(grown.cells())
    # cells differing only in segment params share the predicted boundaries
    assert cell_for(cells["sigma-1_beta-0.3"], ("predict",)) == cell_for(cells["sigma-1_beta-0.5"], ("predict",))
    assert cell_id({}) == "base"
    assert stage_overrides({"segment.dask.n_workers": 2, "predict.sigma": 1}, "segment") == {"dask": {"n_workers": 2}}


def test_bad_grid_files(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"name": "g", "grid": {"beta": [0.3]}}))
    with pytest.raises(ConfigError, match="<stage>.<parameter>"):
        load_experiment(path)
    path.write_text(yaml.safe_dump({"name": "g", "gird": {}}))
    with pytest.raises(ConfigError, match="unknown keys"):
        load_experiment(path)


def test_a_grid_variant_extends_its_base(tmp_path):
    base = {"name": "base", "samples": ["a", "b"], "description": "the base grid",
            "grid": {"grid.row": ["full", "sparse"], "train.seed": [0, 1]},
            "linked": {"grid.row": {"full": {"train.supervision": "full"}, "sparse": {"train.fraction": 0.1}},
                       "train.seed": {0: {"predict.seed": 0}, 1: {"predict.seed": 1}}},
            "fixed": {"train.steps": 100, "segment.beta": 0.5}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    variant = {"extends": "base", "name": "longer", "samples": ["c"],
               "grid": {"grid.row": ["sparse"], "train.seed": [1, 2]},
               "linked": {"train.seed": {2: {"predict.seed": 2}}, "grid.row": {"sparse": {"train.lr": 0.5}}},
               "fixed": {"train.steps": 900}}
    (tmp_path / "longer.yaml").write_text(yaml.safe_dump(variant))
    exp = load_experiment(tmp_path / "longer.yaml")
    assert exp.name == "longer" and exp.samples == ["c"] and exp.description == "the base grid"
    assert exp.fixed == {"train.steps": 900, "segment.beta": 0.5}  # merged, the variant's value wins
    cells = exp.cells()
    assert sorted(cells) == ["row-sparse_seed-1", "row-sparse_seed-2"]
    # linked values of the base still apply, merged per grid value with the variant's (train.lr);
    # those of rows the variant dropped are gone
    assert cells["row-sparse_seed-1"] == {"grid.row": "sparse", "train.seed": 1, "train.fraction": 0.1,
                                          "train.lr": 0.5, "predict.seed": 1}
    assert cells["row-sparse_seed-2"]["predict.seed"] == 2
    assert "full" not in exp.linked["grid.row"]
    # a cell of the base keeps its id in the variant: grown grids share their outputs
    assert "row-sparse_seed-1" in load_experiment(tmp_path / "base.yaml").cells()


def test_bad_grid_extensions_name_the_file(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"extends": "b", "grid": {"train.seed": [0]}}))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({"extends": "a"}))
    with pytest.raises(ConfigError, match="cycle"):
        load_experiment(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"extends": "missing", "grid": {"train.seed": [0]}}))
    with pytest.raises(ConfigError, match=r"does not exist \(extended by .*c.yaml\)"):
        load_experiment(tmp_path / "c.yaml")
    # the variant's own linked values are checked in full: a typo stays an error
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"grid": {"train.seed": [0]}}))
    (tmp_path / "e.yaml").write_text(yaml.safe_dump({"extends": "d", "linked": {"train.seed": {7: {"x.y": 1}}}}))
    with pytest.raises(ConfigError, match="linked value 7"):
        load_experiment(tmp_path / "e.yaml")


def test_grids_command_lists_grids_and_shows_a_variants_cells(tmp_path, capsys):
    from zarrseg.cli import main

    (tmp_path / "base.yaml").write_text(yaml.safe_dump(
        {"description": "two rows", "grid": {"grid.row": ["a", "b"]}, "fixed": {"train.steps": 10},
         "linked": {"grid.row": {"a": {"train.lr": 0.1}, "b": {"train.lr": 0.2}}}}))
    (tmp_path / "more.yaml").write_text(yaml.safe_dump(
        {"extends": "base", "grid": {"grid.row": ["b"], "train.seed": [0, 1]}, "fixed": {"train.steps": 99}}))
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump({"gird": {}}))
    assert main(["grids", "--dir", str(tmp_path)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in listing[1:3]] == [["base", "2", "two"], ["broken", "<NA>", "ERROR:"]]
    assert listing[3].split()[:3] == ["more", "2", "base"]
    csv = tmp_path / "cells.csv"
    assert main(["grids", "more", "--dir", str(tmp_path), "--csv", str(csv)]) == 0
    shown = capsys.readouterr().out
    assert "more (extends base)" in shown and "train.steps = 99" in shown and "2 cells:" in shown
    cells = pd.read_csv(csv)
    assert cells["cell"].tolist() == ["row-b_seed-0", "row-b_seed-1"] and set(cells["train.lr"]) == {0.2}
    assert main(["grids", "nope", "--dir", str(tmp_path)]) == 2
    assert "nope.yaml: experiment file does not exist" in capsys.readouterr().err


def test_stage_params_merge_storage_dask_and_cell():
    config = _config()
    params = stage_params(config, "segment", {"segment.beta": 0.7, "predict.sigma": 2.0})
    assert params["beta"] == 0.7 and "sigma" not in params
    assert params["chunks"] == config["storage"]["chunks"] and params["dask"]["scheduler"] == "threads"
    assert "dask" not in stage_params(config, "ingest")


def test_typed_params_reject_typos_with_hint():
    with pytest.raises(ConfigError, match="did you mean 'n_workers'"):
        load_params(DaskParams, {"n_worker": 2})
    with pytest.raises(ConfigError, match="must be one of"):
        load_params(DaskParams, {"scheduler": "slrum"})
    assert load_params(DaskParams, '{"n_workers": 3}', parse_overrides(["scheduler=processes"])).scheduler == "processes"


def test_experiment_with_its_own_sample_sheet(tmp_path):
    (tmp_path / "v.h5").write_bytes(b"")
    (tmp_path / "s.tsv").write_text("sample\timage\nv\tv.h5:raw\n")
    exp = Experiment(name="e", sheet="s.tsv")
    samples = discover_samples({"samples": {"sheet": "missing.tsv"}}, tmp_path, experiment=exp)
    assert list(samples) == ["v"]


def test_shared_sample_sheet_resolves(shared_data):
    samples = read_sample_sheet(REPO / "config" / "samples_shared.tsv", REPO)
    assert {"gala_train", "gala_test", "plantseg_ovule"} <= {s.name for s in samples}
    assert all(s.ground_truth for s in samples)


# ---- the Plan: what every job of a grid needs, with no row or method named in the rules ----------
def _plan(config_extra=None, **experiment):
    from zarrseg.workflow import Plan, Sample

    samples = {
        "train_a": Sample("train_a", "a.tif", ground_truth="a_gt.tif"),
        "train_b": Sample("train_b", "b.tif"),
        "test_a": Sample("test_a", "t.tif", ground_truth="t_gt.tif", scene=2),
    }
    exp = load_experiment(REPO / "config" / "experiments" / "unsupervised_vs_supervised.yaml")
    for key, value in experiment.items():
        setattr(exp, key, value)
    exp.samples = ["test_a"]
    return Plan({**(config_extra or {})}, exp, samples, "R")


def test_plan_of_the_table_3_4_grid():
    plan = _plan()
    cells = {plan.values(c)["grid.row"]: c for c in plan.cells}
    methods = sorted(m for m, _ in plan.models)
    # one model per distinct training setup; the W-Net: one per scored sample, trained on it alone
    assert methods == ["contrastive_global", "contrastive_local", "dino", "finetune", "unet", "unet", "unet", "unet",
                       "wnet"]
    routes = {row: plan.labels_route(c) for row, c in cells.items()}
    assert routes == {"colour_kmeans": "cluster", "dino": "cluster", "dino_finetuned": "cluster",
                      "unet_20": "threshold", "unet_20_contrastive": "threshold", "unet_50": "threshold",
                      "unet_100": "threshold", "wnet": "argmax"}
    (wnet_id,) = [i for m, i in plan.models if m == "wnet"]
    assert wnet_id.endswith("+test_a")
    assert plan.model_params("wnet", wnet_id)["images"] == ["R/ingest/test_a/image.ome.zarr"]
    src = {row: plan.cluster_source("test_a", c) for row, c in cells.items()}
    assert src["colour_kmeans"] == plan.image_path("test_a")
    assert src["dino"].endswith("features.zarr") and src["dino"] != src["dino_finetuned"]
    assert src["unet_20"].endswith("boundaries.ome.zarr") and src["unet_20"] != src["unet_50"]
    assert plan.cluster_params(cells["unet_20"])["method"] == "threshold"
    assert plan.scores_foreground(cells["dino"]) and plan.row_label(cells["unet_50"]) == "unet_50"
    # the fine-tuning starts from the dino row's model: the reference resolves to its checkpoint
    (ft_id,) = [i for m, i in plan.models if m == "finetune"]
    (dino_id,) = [i for m, i in plan.models if m == "dino"]
    ft = plan.model_params("finetune", ft_id)
    assert ft["checkpoint"] == f"R/unsupervised_vs_supervised/models/dino/{dino_id}/best.pt"
    assert plan.model_inputs("finetune", ft_id)[0] == ft["checkpoint"]
    # every model learns from train.samples only; the U-Nets only from samples with ground truth
    assert ft["images"] == ["R/ingest/train_a/image.ome.zarr", "R/ingest/train_b/image.ome.zarr"]
    unet_id = plan.model_id("unet", plan.values(cells["unet_20"]))
    unet = plan.model_params("unet", unet_id)
    assert [i["image"] for i in unet["train"]] == ["R/ingest/train_a/image.ome.zarr"]
    assert unet["supervision_fraction"] == 0.2 and "samples" not in unet
    assert plan.image_input("test_a") == "R/ingest/test_a/image.ome.zarr"  # the ingest rule stages scene 2 alone
    # unet_20_contrastive: the same U-Net from stage 2, which starts from stage 1; both learn from the
    # crops of the training samples (the unlabelled train_b too, pretraining only)
    pre = plan.values(cells["unet_20_contrastive"])
    unet_c = plan.model_params("unet", plan.model_id("unet", pre))
    assert unet_c["init"] == plan.model_path("contrastive_local", pre) and unet_c["train"] == unet["train"]
    (ccell,) = [c for s, c in plan.subcells if s == "crops"]
    assert {(i["name"], i["split"], i["labels"] is not None) for i in plan.crops_params(ccell)["images"]} == {
        ("train_a", "pretrain", True), ("train_b", "pretrain", False)}


def test_plan_uses_given_models_instead_of_training_them_and_legacy_names():
    plan = _plan({"models": {"dino": "/models/vit.pt"}})
    assert sorted(m for m, _ in plan.models) == ["contrastive_global", "contrastive_local", "finetune", "unet", "unet",
                                                  "unet", "unet", "wnet"]  # no dino training
    dino = next(c for c in plan.cells if plan.values(c)["grid.row"] == "dino")
    assert plan.checkpoints("features", plan.values(dino)) == ["/models/vit.pt"]
    (ft_id,) = [i for m, i in plan.models if m == "finetune"]
    assert plan.model_params("finetune", ft_id)["checkpoint"] == "/models/vit.pt"  # fine-tunes the given ViT
    legacy = _plan(linked={}, grid={"grid.row": ["u"]}, fixed={"predict.method": "unet", "predict.checkpoint": "train"})
    (cell,) = legacy.cells
    assert legacy.values(cell)["predict.checkpoint"] == "model:unet"
    assert [m for m, _ in legacy.models] == ["unet"] and legacy.labels_route(cell) == "segment"


def test_plan_rejects_bad_routes_and_patterns():
    with pytest.raises(ConfigError, match="grid.labels"):
        _plan(linked={}, grid={"grid.row": ["x"]}, fixed={"grid.labels": "magic"})
    with pytest.raises(ConfigError, match="'nope_\\*' matches no sample"):
        _plan(linked={}, grid={"grid.row": ["x"]}, fixed={"grid.model": "unet", "train.samples": ["nope_*"]})


def test_model_refs_and_workers():
    from zarrseg.workflow import model_refs, with_workers

    assert model_refs({"a": "model:dino", "b": [{"c": "model:unet"}, "model:dino"], "d": "x"}) == ["dino", "unet"]
    assert with_workers({"beta": 1}, 3) == {"beta": 1, "dask": {"n_workers": 3}}
    assert with_workers({"dask": {"n_workers": 1}}, 3)["dask"]["n_workers"] == 1


def test_long_cell_ids_are_shortened_by_a_hash():
    many = {f"train.key_number_{i}": i for i in range(20)}
    long_id = cell_id(many)
    assert len(long_id) <= 100 and long_id.startswith("key_number_0-0_key_number_1-1")
    assert cell_id({**many, "train.key_number_19": 99}) != long_id  # the hash covers every value
    assert cell_id({"segment.beta": 0.5}) == "beta-0.5"  # short ids unchanged
def test_folder_matching_ignores_case(tmp_path):
    for name in ("A1.CZI", "x.TIF", "y.Tiff", "z.OME.TIF", "z_labels.TIF", "w.PNG", "v.jpeg", "notes.TXT"):
        (tmp_path / name).write_bytes(b"x")  # unreadable: one sample each, the ingest job reports it
    found = {s.name: s for s in discover_folder(tmp_path)}
    assert set(found) == {"A1", "x", "y", "z", "w", "v"}
    assert Path(found["z"].ground_truth).name == "z_labels.TIF"


def test_every_scene_of_a_multi_scene_file_is_a_sample(tmp_path):
    source = shared_path("czi", "S3_1Pos_2Mosaic_T2_Z3_CH2_sm.czi")
    (tmp_path / "plate.czi").symlink_to(source)
    (tmp_path / "single.czi").symlink_to(shared_path("czi", "CH=1_16bit.czi"))
    samples = discover_folder(tmp_path)
    assert [(s.name, s.scene) for s in samples] == [
        ("plate_TR1", 0), ("plate_P1", 1), ("plate_TR2", 2), ("single", 0)]  # scene names from the file
    assert scene_labels(source) == ["TR1", "P1", "TR2"]


def test_unnamed_or_repeated_scene_names_become_indices(tmp_path, monkeypatch):
    import zarrseg.workflow as wf

    class FakeSource:
        def __init__(self, names):
            self.scenes = [type("S", (), {"name": n})() for n in names]

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    for names, expected in ((["scene 0", "scene 1"], ["0", "1"]), (["A", "A"], ["0", "1"]),
                            (["well A1", "B/2"], ["well_A1", "B_2"])):
        monkeypatch.setattr("zarrseg.ingest.open_source", lambda *a, names=names: FakeSource(names))
        assert wf.scene_labels(tmp_path / "x.czi") == expected


def test_sheet_switches(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "a.tif").write_bytes(b"x")
    (tmp_path / "config" / "samples.tsv").write_text("sample\timage\nsheet_sample\ta.tif\n")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "b.tif").write_bytes(b"x")
    default = {"sheet": DEFAULT_SHEET}
    assert set(discover_samples({"samples": default}, tmp_path)) == {"sheet_sample"}
    # input_dir set: the default sheet is not processed as well
    assert set(discover_samples({"samples": {**default, "input_dir": "in"}}, tmp_path)) == {"b"}
    # null from the command line (Snakemake's --config hands over the string "null") switches the sheet off
    for off in ("null", "None", "", None):
        assert sheet_setting({"sheet": off}) is None
        with pytest.raises(ConfigError, match="no samples"):
            discover_samples({"samples": {"sheet": off}}, tmp_path)
    assert set(discover_samples({"samples": {"sheet": "null", "input_dir": "in"}}, tmp_path)) == {"b"}
    # a sheet named on purpose is combined with the folder
    (tmp_path / "mine.tsv").write_text("sample\timage\nmine\ta.tif\n")
    assert set(discover_samples({"samples": {"sheet": "mine.tsv", "input_dir": "in"}}, tmp_path)) == {"mine", "b"}


@pytest.mark.parametrize("path", sorted((REPO / "config" / "experiments").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_grid_loads_and_names_each_cell_once(path):
    exp = load_experiment(path)
    cells = exp.cells()
    assert exp.name == path.stem and cells  # the workflow finds a grid by its file name
    # every grid key is '<stage>.<parameter>' and each cell's id is distinct (no two cells collapse)
    assert all("." in key for values in cells.values() for key in values)
    assert len(set(cells)) == len(cells) == len({cell_id(v) for v in cells.values()})


def test_clustering_inside_the_ground_truth_needs_one_on_every_scored_sample():
    from zarrseg.errors import ConfigError
    from zarrseg.workflow import Plan, Sample

    samples = {"a": Sample("a", "a.tif", ground_truth="a_gt.tif"), "b": Sample("b", "b.tif")}
    exp = Experiment(name="e", fixed={"cluster.foreground": "ground_truth", "grid.labels": "cluster"})
    exp.samples = ["a"]
    plan = Plan({}, exp, samples, "R")
    cell = next(iter(plan.cells))
    assert plan.cluster_foreground("a", cell) == "R/ingest/a/ground_truth.ome.zarr"
    exp.samples = ["a", "b"]
    with pytest.raises(ConfigError, match="sample 'b' has no ground truth"):
        Plan({}, exp, samples, "R")


def test_training_jobs_request_per_method_resources_and_no_gpu_on_the_cpu():
    plan = _plan({"wnet": {"loop": {"device": "cpu"}, "resources": {"runtime": 90}},
                  "pretrain": {"resources": {"mem_mb": 32000}}})
    ids = {m: i for m, i in plan.models}
    assert plan.model_resources("wnet", ids["wnet"]) == {"mem_mb": 16000, "runtime": 90, "gpu": 0}
    assert plan.model_resources("dino", ids["dino"]) == {"mem_mb": 32000, "runtime": 720, "gpu": 1}
    assert plan.model_resources("finetune", ids["finetune"]) == {"mem_mb": 16000, "runtime": 720, "gpu": 1}
    assert "resources" not in plan.model_params("wnet", ids["wnet"])  # a workflow key: not for `zarrseg train`
    from zarrseg.schema import build_schema

    (section,) = [s for s in build_schema()["properties"]["wnet"]["anyOf"] if s["type"] == "object"]
    schema = section["properties"]["resources"]
    assert schema["additionalProperties"] is False and set(schema["properties"]) == {"mem_mb", "runtime", "gpu"}


def test_feature_and_predict_jobs_request_a_gpu_only_for_a_network_off_the_cpu():
    def requests(plan, stage):  # (runs a network, GPUs asked) of every job of the stage
        return {(stage == "features" or plan.uses_model(v), plan.stage_gpu(stage, v))
                for (s, _), v in plan.subcells.items() if s == stage}

    plan = _plan()
    assert requests(plan, "features") == {(True, 1)}
    assert requests(plan, "predict") == {(True, 1), (False, 0)}  # U-Net rows and intensity rows
    cpu = _plan({"features": {"device": "cpu"}, "predict": {"device": "cpu"}})
    assert requests(cpu, "features") == {(True, 0)} and requests(cpu, "predict") == {(True, 0), (False, 0)}


def test_side_by_side_panels_show_each_setting_once_with_a_title_that_tells_it_apart():
    from zarrseg.workflow import Plan, Sample

    exp = load_experiment(REPO / "config" / "experiments" / "contrastive_fractions.yaml")
    names = ["pretrain_a", "finetune_a", "test_a"]
    exp.samples = ["test_a"]
    plan = Plan({}, exp, {n: Sample(n, f"{n}.tif", ground_truth=f"{n}_gt.tif") for n in names}, "R")
    panels = plan.panel_cells(list(plan.cells))
    assert len(plan.cells) == 30 and len(panels) == 15  # 2 seeds of each setting: one panel
    titles = [t for _c, t in panels]
    assert len(set(titles)) == 15 and "g0.2_l0.6, loss.name: ssim_dice" in titles and "=" not in "".join(titles)
    assert all(plan.values(c)["grid.seed"] == 0 for c, _t in panels)

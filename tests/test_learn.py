"""The learning core: exact resume after a real kill for every method, the registry, the one
checkpoint format (old files too), deprecated keys, and predict driven by a checkpoint's output."""

from __future__ import annotations

import json
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, unet_params, voronoi_cells, write_image
from resume_check import assert_same_weights, kill_and_resume
from skimage.segmentation import find_boundaries

from zarrseg import ome
from zarrseg.errors import ConfigError, InputError
from zarrseg.learn import checkpoint as ckpt
from zarrseg.learn import registry
from zarrseg.learn.checkpoint import ModelIO
from zarrseg.learn.loop import read_csv, train
from zarrseg.params import from_dict, load_params
from zarrseg.predict.params import PredictParams
from zarrseg.predict.stage import predict

TINY_VIT = {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32}
LOOP = {"steps": 6, "checkpoint_every": 2, "eval_every": 3, "threads": 1, "device": "cpu", "tensorboard": False}


@pytest.fixture
def cells(tmp_path, rng):
    lab = np.stack([voronoi_cells(rng, (48, 48), 20) for _ in range(3)])
    img = (find_boundaries(lab).astype(np.float32) * 100 + rng.normal(50, 15, lab.shape)).astype(np.float32)
    return write_image(tmp_path / "img.ome.zarr", img, "zyx"), write_image(
        tmp_path / "lab.ome.zarr", lab, "zyx", is_label=True
    )


def unet_args(image: str, labels: str, **loop) -> dict:
    return unet_params(image, labels, val_metric="loss", loop={**LOOP, **loop})


def vit_params(image: str) -> dict:
    return {
        "images": [image],
        "vit": TINY_VIT,
        "preprocess": {"tile_size": 32},
        "sample_size": 32,
        "batch_size": 2,
        "loop": LOOP,
    }


def dino_params(image: str) -> dict:
    return {
        **vit_params(image),
        "global_crop_size": 32,
        "local_crop_size": 16,
        "n_local_crops": 2,
        "out_dim": 64,
        "hidden_dim": 32,
        "bottleneck_dim": 16,
        "warmup_steps": 2,
        "freeze_last_layer_steps": 1,
    }


@pytest.fixture
def tiny_vit(tmp_path) -> str:
    from zarrseg.ssl import vit

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", vit.RandomInitWarning)
        torch.manual_seed(0)
        model, spec, _ = vit.load_vit(vit.ViTSpec(**TINY_VIT))
    return str(vit.save_checkpoint(tmp_path / "vit.pt", model, spec))


# ---- exact resume after SIGKILL, every method -------------------------------------------------------
def test_unet_resumes_exactly_after_sigkill(tmp_path, cells):
    full, resumed = kill_and_resume("unet", unet_args(*cells), tmp_path, kill_after=5)
    assert_same_weights(full, resumed)
    rows = read_csv(tmp_path / "killed" / "metrics.csv")
    assert [r["step"] for r in rows] == [3, 6]  # the evaluation rows of the killed part are not doubled


def test_dino_resumes_exactly_after_sigkill(tmp_path, rng):
    image = write_image(tmp_path / "i.ome.zarr", rng.integers(0, 255, (64, 64)).astype(np.uint8), "yx")
    full, resumed = kill_and_resume("dino", dino_params(image), tmp_path, kill_after=3)
    assert_same_weights(full, resumed)  # student, teacher and the DINO centre
    assert "last.criterion" in full and len(read_csv(tmp_path / "killed" / "history.csv")) == 6


def test_finetune_resumes_exactly_after_sigkill(tmp_path, rng, tiny_vit):
    image = write_image(tmp_path / "i.ome.zarr", rng.integers(0, 255, (64, 64)).astype(np.uint8), "yx")
    params = {**vit_params(image), "checkpoint": tiny_vit, "trainable_blocks": 1}
    full, resumed = kill_and_resume("finetune", params, tmp_path, kill_after=5)
    assert_same_weights(full, resumed)


def test_resume_refuses_another_run_and_auto_starts_over(tmp_path, cells):
    from zarrseg.methods.unet.train_params import TrainParams

    train("unet", load_params(TrainParams, unet_args(*cells, steps=2)), tmp_path / "m")
    other = load_params(TrainParams, {**unet_args(*cells, steps=4), "batch_size": 1})
    with pytest.raises(InputError, match="batch_size"):
        train("unet", other, tmp_path / "m", resume=True)
    with pytest.raises(ConfigError, match="already holds a training run"):
        train("unet", other, tmp_path / "m")
    out = train("unet", other, tmp_path / "m", resume="auto")
    assert out["steps"] == 4 and read_csv(tmp_path / "m" / "metrics.csv")[0]["batch_size"] == 1


def test_resume_refuses_another_seed_or_length_but_takes_runtime_changes(tmp_path, cells):
    from zarrseg.methods.unet.train_params import TrainParams

    train("unet", load_params(TrainParams, unet_args(*cells, steps=2)), tmp_path / "m")
    with pytest.raises(InputError, match="loop.seed"):  # was resumed silently
        train("unet", load_params(TrainParams, unet_args(*cells, steps=2, seed=3)), tmp_path / "m", resume=True)
    out = train("unet", load_params(TrainParams, unet_args(*cells, steps=2, threads=2, checkpoint_every=1)),
                tmp_path / "m", resume=True)
    assert out["stop"] == "already complete"
    image = write_image(tmp_path / "i.ome.zarr", np.random.default_rng(0).integers(0, 255, (64, 64)).astype(np.uint8),
                        "yx")
    dino, spec = tmp_path / "d", registry.get_method("dino")  # cosine schedules span the steps: another run
    train(spec, load_params(spec.params, {**dino_params(image), "loop": {**LOOP, "steps": 2}}), dino)
    with pytest.raises(InputError, match="loop.steps"):
        train(spec, load_params(spec.params, {**dino_params(image), "loop": {**LOOP, "steps": 4}}), dino, resume=True)


def test_an_early_stopped_run_is_complete_and_a_fresh_start_drops_rows_of_a_run_without_checkpoint(tmp_path, cells):
    from zarrseg.methods.unet.train_params import TrainParams

    stopping = load_params(TrainParams, unet_args(*cells, steps=40, eval_every=1, early_stopping=1))
    first = train("unet", stopping, tmp_path / "m")
    assert first["stop"] == "early stopping" and first["steps"] < 40
    again = train("unet", stopping, tmp_path / "m", resume="auto")  # what the workflow runs
    assert again["steps"] == first["steps"] and again["stop"].startswith("already complete: stopped by")
    fresh = tmp_path / "f"
    fresh.mkdir()
    (fresh / ".zarrseg").touch()
    (fresh / "history.csv").write_text("step,loss\n1,0.5\n2,0.4\n")  # killed before its first last.pt
    train("unet", load_params(TrainParams, unet_args(*cells, steps=3)), fresh)
    assert [r["step"] for r in read_csv(fresh / "history.csv")] == [1, 2, 3]


# ---- parameters ------------------------------------------------------------------------------------
def test_old_key_names_work_with_a_deprecation_message(cells):
    import zarrseg.params
    from zarrseg.methods.dino import PretrainParams
    from zarrseg.methods.unet.train_params import TrainParams

    zarrseg.params._WARNED.clear()  # each message is shown once per process
    old = {**unet_args(*cells), "iterations": 7, "validate_every": 5, "threads": 1}
    old.pop("loop")
    with pytest.warns(FutureWarning, match=r"train\.iterations is deprecated.*train\.loop\.steps"):
        p = load_params(TrainParams, old, where="train")
    assert (p.loop.steps, p.loop.eval_every, p.loop.checkpoint_every, p.loop.threads) == (7, 5, 5, 1)
    # an explicit new key wins over its old name
    p = from_dict(TrainParams, {**old, "loop": {"steps": 3}})
    assert p.loop.steps == 3
    p = from_dict(PretrainParams, {"num_threads": 2, "steps": 9, "checkpoint_every": 3})
    assert (p.loop.threads, p.loop.steps, p.loop.checkpoint_every) == (2, 9, 3)
    with pytest.raises(ConfigError, match="unknown parameter 'stepz'"):
        from_dict(PretrainParams, {"stepz": 1})


# ---- registry ---------------------------------------------------------------------------------------
def test_registry_lists_builtins_and_rejects_unknown_names():
    names = registry.method_names()
    assert names[:3] == ["unet", "dino", "finetune"]
    assert registry.get_method("dino").config_section == "pretrain"
    # the table that answers "whose section is this?" without importing the methods matches the specs
    assert {n: s for n, (_, s) in registry.BUILTIN.items()} == {
        n: registry.get_method(n).config_section for n in registry.BUILTIN
    }
    assert registry.method_for_section("pretrain").name == "dino" and registry.method_for_section("predict") is None
    with pytest.raises(ConfigError, match="unknown learning method 'unett'"):
        registry.get_method("unett")
    with pytest.raises(ConfigError, match="cannot be imported"):
        registry.load_modules(["no_such_module_xyz"])


TOY_METHOD = textwrap.dedent(
    '''
    """A minimal third-party method: one 3x3 convolution learning the foreground from labels."""
    from dataclasses import dataclass, field
    from itertools import count

    import numpy as np
    import torch

    from zarrseg import ome
    from zarrseg.learn.checkpoint import ModelIO
    from zarrseg.learn.loop import Export, Method, Parts
    from zarrseg.learn.params import LoopParams
    from zarrseg.learn.registry import MethodSpec
    from zarrseg.methods.unet.train_params import DataItem
    from zarrseg.normalize import Normalization


    @dataclass
    class ToyParams:
        train: list[DataItem] = field(default_factory=list)
        val: list[DataItem] = field(default_factory=list)
        lr: float = 0.05
        loop: LoopParams = field(default_factory=lambda: LoopParams(steps=20, checkpoint_every=10))


    def build(config):
        return torch.nn.Conv2d(1, 1, 3, padding=1)


    class Toy(Method):
        def build(self):
            item = self.params.train[0]
            image = ome.open_image(item.image).data[...].astype(np.float32)
            self.x = torch.from_numpy((image - image.mean()) / (image.std() + 1e-6))[None, None]
            self.y = torch.from_numpy((ome.open_image(item.labels).data[...] > 0).astype(np.float32))[None, None]
            self.model = build({})
            return Parts({"model": self.model}, torch.optim.Adam(self.model.parameters(), lr=self.params.lr))

        def batches(self, start):
            for _ in count(start):
                yield self.x, self.y

        def step(self, batch, step):
            x, y = batch
            return {"loss": torch.nn.functional.binary_cross_entropy_with_logits(self.model(x), y)}

        def export(self):
            io = ModelIO(kind="foreground", channels=1, activation="sigmoid", ndim=2, divisor=[1, 1], tile=[32, 32])
            return Export(self.model, {}, io, Normalization(method="meanstd"))  # as trained


    METHOD = MethodSpec(name="toy", params=ToyParams, hooks=Toy, build_model=build, postprocess="threshold")
    '''
)


@pytest.fixture
def toy_module(tmp_path, monkeypatch):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "toy_method.py").write_text(TOY_METHOD)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", f"{folder}:{REPO / 'src'}")
    yield folder
    registry._REGISTRY.pop("toy", None)
    sys.modules.pop("toy_method", None)


def test_a_method_from_outside_the_package_runs_through_the_workflow(tmp_path, toy_module, rng):
    """Registered by naming its module in the config: train -> predict -> threshold -> evaluate,
    with no edit of the rules, the CLI or the schema code."""
    import subprocess

    import pandas as pd
    import tifffile
    import yaml

    work = tmp_path / "wd"
    (work / "config" / "experiments").mkdir(parents=True)
    labels = np.zeros((48, 48), np.uint16)
    labels[8:24, 8:24], labels[30:44, 26:40] = 1, 2
    image = (40 + 150 * (labels > 0) + rng.normal(0, 10, labels.shape)).clip(0, 255).astype(np.uint8)
    tifffile.imwrite(work / "a.tif", image)
    tifffile.imwrite(work / "a_labels.tif", labels)
    (work / "samples.tsv").write_text("sample\timage\tground_truth\na\ta.tif\ta_labels.tif\n")
    (work / "config" / "experiments" / "toy.yaml").write_text(
        yaml.safe_dump(
            {"name": "toy", "grid": {"grid.row": ["toy"]},
             "fixed": {"grid.model": "toy", "grid.ground_truth": "foreground", "evaluate.kind": "clustering"}}
        )
    )
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config.update(
        samples={"sheet": "samples.tsv"},
        experiment="toy",
        methods=["toy_method"],
        toy={"loop": {"steps": 30, "threads": 1, "device": "cpu", "tensorboard": False}},
        predict={"device": "cpu", "num_workers": 0},
    )
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"),
           "--directory", str(work), "--cores", "2", "--max-threads", "1",  # start-up bound jobs: two at a time
           "--configfile", str(work / "config" / "config.yaml")]
    env = {**__import__("os").environ, "ZARRSEG_NO_PROGRESS": "1",
           "PATH": f"{Path(sys.executable).parent}:{__import__('os').environ['PATH']}"}
    run = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    assert (work / "results" / "toy" / "models" / "toy").is_dir()
    table = pd.read_parquet(work / "results" / "toy" / "metrics.parquet")
    assert set(table["method"]) == {"toy"}
    # the toy model's foreground, split at 0.5 (its registry post-processing), finds the two squares
    iou = table[table["metric"] == "matched_fg_iou"]["value"]
    assert len(iou) == 1 and float(iou.iloc[0]) > 0.8
    # a typo in the plugin's section fails at start-up, before any job
    config["toy"]["lr_typo"] = 1.0
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    run = subprocess.run([*cmd, "-n"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "lr_typo" in run.stdout + run.stderr


def test_a_loss_not_backed_by_the_model_fails_with_a_clear_message(tmp_path, toy_module, rng, monkeypatch):
    """A method whose loss does not depend on its parameters (e.g. a batch without supervised
    pixels) stops with a message naming the method and the step, not an autograd error."""
    import toy_method

    from zarrseg.learn.loop import TrainingDiverged

    labels = (rng.random((32, 32)) > 0.5).astype(np.uint16)
    image = write_image(tmp_path / "a.ome.zarr", labels.astype(np.float32) + rng.normal(0, 0.1, labels.shape), "yx")
    labels_path = write_image(tmp_path / "a_labels.ome.zarr", labels, "yx", is_label=True)
    monkeypatch.setattr(toy_method.Toy, "step", lambda self, batch, step: {"loss": torch.zeros(())})
    registry.load_modules(["toy_method"])
    spec = registry.get_method("toy")
    params = load_params(spec.params, {"train": [{"image": image, "labels": labels_path}],
                                       "loop": {**LOOP, "steps": 2}})
    with pytest.raises(TrainingDiverged, match="training toy: the loss at step 0 does not depend on"):
        train(spec, params, tmp_path / "out")


def test_entry_points_register_methods(monkeypatch, toy_module):
    from importlib import metadata

    class FakeEntryPoint:
        name = "toy"

        def load(self):
            import toy_method

            return toy_method.METHOD

    def entry_points(group):
        return [FakeEntryPoint()] if group == registry.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    monkeypatch.setattr(registry, "_ENTRY_POINTS_LOADED", False)
    assert registry.get_method("toy").postprocess == "threshold"
    assert "toy" in registry.method_names()


# ---- checkpoints and predict ---------------------------------------------------------------------------
def test_the_shipped_format_1_checkpoint_loads_through_the_registry():
    path = REPO / "src" / "zarrseg" / "methods" / "unet" / "pretrained" / "ovule_boundaries_3d.pt"
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "zarrseg-unet"  # an old file, converted on reading
    loaded = ckpt.load(path)
    assert loaded.method == "unet" and loaded.io.kind == "boundaries" and loaded.io.ndim == 3
    assert loaded.io.activation == "sigmoid" and loaded.normalization is not None
    with pytest.raises(InputError, match="not a zarrseg checkpoint"):
        torch.save({"weights": torch.zeros(1)}, Path(raw_path := str(path) + ".nope"))
        try:
            ckpt.read(raw_path)
        finally:
            Path(raw_path).unlink()


class Doubler(torch.nn.Module):
    """Two output channels: the input and its negative (logits of a two-class model)."""

    def forward(self, x):
        return torch.cat([x, -x], dim=1)


@pytest.mark.parametrize("activation", ["softmax", "identity", "sigmoid"])
def test_predict_applies_the_activation_the_checkpoint_declares(tmp_path, rng, activation, monkeypatch):
    spec = registry.MethodSpec(name="doubler", params=dict, hooks=object, build_model=lambda c: Doubler())
    monkeypatch.setitem(registry._REGISTRY, "doubler", spec)
    io = ModelIO(kind="soft_clusters", channels=2, activation=activation, ndim=2, divisor=[1, 1], tile=[16, 16])
    ckpt.save(tmp_path / "m.pt", method="doubler", model_config={}, io=io, state_dict={},
              normalization={"method": "none"})
    data = rng.normal(0, 2, (40, 24)).astype(np.float32)
    image = write_image(tmp_path / "x.ome.zarr", data, "yx")
    params = load_params(PredictParams, {"method": "model", "num_workers": 0, "chunks": [16, 16]})
    predict(image, tmp_path / "out.ome.zarr", params, checkpoint=tmp_path / "m.pt")
    out = ome.open_image(tmp_path / "out.ome.zarr")
    assert out.axes == "cyx" and out.shape == (2, 40, 24)
    logits = torch.from_numpy(np.stack([data, -data]))
    expected = {"softmax": torch.softmax(logits, 0), "identity": logits, "sigmoid": torch.sigmoid(logits)}[activation]
    np.testing.assert_allclose(out.data[...], expected.numpy(), atol=1e-5)
    provenance = out.attrs["zarrseg"]
    assert provenance["activation"] == activation and provenance["method"] == "doubler"


def test_predict_refuses_a_vit_checkpoint(tmp_path, rng, tiny_vit):
    image = write_image(tmp_path / "x.ome.zarr", rng.random((32, 32)).astype(np.float32), "yx")
    params = load_params(PredictParams, {"method": "model"})
    with pytest.raises(InputError, match="use 'zarrseg features'"):
        predict(image, tmp_path / "o.ome.zarr", params, checkpoint=tiny_vit)
    assert not (tmp_path / "o.ome.zarr").exists()


def test_train_cli_lists_methods(capsys):
    from zarrseg.cli import main

    assert main(["train", "--list-methods"]) == 0  # no model folder needed to list
    out = capsys.readouterr().out
    assert all(f"{m} " in out for m in ("unet", "dino", "finetune"))
    assert main(["train"]) == 2 and "-o/--output MODEL_DIR is required" in capsys.readouterr().err


def test_params_json_round_trip_of_a_loop_section():
    from zarrseg.learn.params import LoopParams

    lp = from_dict(LoopParams, json.loads(json.dumps({"steps": 5, "amp_dtype": "bfloat16"})))
    assert lp.steps == 5 and lp.amp_dtype == "bfloat16"
    with pytest.raises(ConfigError, match="loop.steps"):
        from_dict(LoopParams, {"steps": -1})  # 0 is allowed: publish the initial weights


def test_a_partial_nested_section_keeps_the_fields_own_defaults():
    """``pretrain.loop: {steps: 5}`` keeps DINO's loop defaults (checkpoint_every 500), not LoopParams'."""
    from zarrseg.methods.dino import PretrainParams
    from zarrseg.methods.spoco.params import SpocoParams

    p = from_dict(PretrainParams, {"loop": {"steps": 5}})
    assert (p.loop.steps, p.loop.checkpoint_every, p.loop.eval_every) == (5, 500, 500)
    s = from_dict(SpocoParams, {"train": [{"image": "i", "labels": "l"}], "augment": {"flip": False}, "model": {"ndim": 3}})
    assert s.augment.blur == 0.5 and not s.augment.flip  # SPOCO's own augmentation default survives
    assert (s.model.ndim, s.model.f_maps, s.model.depth) == (3, 16, 6)


def test_method_specs_and_their_parameters_load_without_torch():
    """Snakemake asks the registry while it plans (and again in every SLURM job): specs, sections,
    parameter classes and the schema reference must not import torch (~3 s and ~0.9 GB per job)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from zarrseg.learn.registry import all_methods, method_for_section\n"
        "from zarrseg.params import to_dict\n"
        "for spec in all_methods():\n"
        "    assert method_for_section(spec.config_section) is spec\n"
        "    to_dict(spec.params())\n"
        "    (spec.data, spec.postprocess, spec.inference)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    # and the methods still train: hooks and model builders are imported when asked for
    from zarrseg.learn.registry import all_methods

    for spec in all_methods():
        assert callable(spec.model_builder()) and hasattr(spec.hooks_class(), "batches")


def test_an_exponent_without_a_dot_is_a_number_in_yaml_and_set(tmp_path, cells):
    """YAML 1.1 reads 1e-3 as text; `--set optimizer.lr=1e-3` and a params file were refused."""
    import yaml

    from zarrseg.learn.params import LoopParams
    from zarrseg.methods.unet.train_params import TrainParams

    loop = load_params(LoopParams, yaml.safe_load("max_minutes: 5E+1\nmax_cpu_minutes: 1e-3"))
    assert loop.max_minutes == 50.0 and loop.max_cpu_minutes == 0.001
    params = load_params(TrainParams, {**unet_args(*cells), **yaml.safe_load("optimizer: {lr: 1e-3}")})
    assert params.optimizer.lr == 0.001
    with pytest.raises(ConfigError, match="fast"):
        load_params(LoopParams, {"max_minutes": "fast"})


def test_the_train_command_ends_with_a_summary_line_on_stdout(tmp_path, cells, capsys):
    import yaml

    from zarrseg.cli import main

    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"train": unet_args(*cells, steps=3, eval_every=3)}))  # under the section's name
    capsys.readouterr()
    assert main(["train", "--method", "unet", "-o", str(tmp_path / "m"), "--params", str(params)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"{tmp_path / 'm'}/best.pt: 3 steps (steps)") and "val_loss" in out[0]
    # the model folder is a checkpoint for predict too (it was refused while train.init took it)
    assert main(["predict", cells[0], "-o", str(tmp_path / "p.ome.zarr"), "--checkpoint", str(tmp_path / "m"),
                 "--set", "num_workers=0"]) == 0
    assert ome.open_image(tmp_path / "p.ome.zarr").data.shape[-2:] == (48, 48)


def test_a_best_so_far_from_after_the_resume_point_is_not_published(tmp_path, cells):
    from zarrseg.methods.unet.train_params import TrainParams

    out = tmp_path / "m"
    train("unet", load_params(TrainParams, unet_args(*cells, steps=6, eval_every=1, checkpoint_every=2)), out)
    shorter = load_params(TrainParams, unet_args(*cells, steps=2, eval_every=1, checkpoint_every=2))
    train("unet", shorter, tmp_path / "two")
    # as if killed after step 6's evaluation but before its last.pt: best-so-far from step 6, last.pt from step 2
    (out / "best-so-far.pt").write_bytes((out / "last.pt").read_bytes())
    (out / "last.pt").write_bytes((tmp_path / "two" / "last.pt").read_bytes())
    assert ckpt.read(out / "best-so-far.pt")["step"] == 6
    train("unet", shorter, out, resume=True)  # ends at step 2: the later evaluation must not become best.pt
    assert ckpt.read(out / "best.pt")["step"] <= 2


def test_a_second_training_into_the_same_model_folder_is_refused_while_the_first_runs(tmp_path, cells):
    import fcntl

    from zarrseg.methods.unet.train_params import TrainParams

    out = tmp_path / "m"
    out.mkdir()
    (out / ".zarrseg").touch()
    with open(out / ".train.lock", "w") as held:  # another process's training holds the folder
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("pid 4242 on node7 since 2026-12-01 13:00:00\n")
        held.flush()
        import subprocess
        import sys

        code = ("import sys; sys.path.insert(0, 'tests'); from zarrseg.learn.loop import train; from zarrseg.params import "
                "load_params; from zarrseg.methods.unet.train_params import TrainParams; import json; "
                f"train('unet', load_params(TrainParams, json.loads(sys.argv[1])), {str(out)!r})")
        run = subprocess.run([sys.executable, "-c", code, json.dumps(unet_args(*cells, steps=2))],
                             capture_output=True, text=True, cwd=REPO)
    assert run.returncode != 0 and "another training is writing into this model folder (pid 4242" in run.stderr
    assert not (out / "history.csv").exists()
    train("unet", load_params(TrainParams, unet_args(*cells, steps=2)), out)  # free again: it trains
    assert (out / "best.pt").is_file()


def test_the_same_images_by_relative_and_absolute_path_are_the_same_run(tmp_path, cells, monkeypatch):
    from zarrseg.methods.unet.train_params import TrainParams

    train("unet", load_params(TrainParams, unet_args(*cells, steps=2)), tmp_path / "m")
    monkeypatch.chdir(tmp_path)
    relative = [str(Path(c).relative_to(tmp_path)) for c in cells]
    out = train("unet", load_params(TrainParams, unet_args(*relative, steps=2)), tmp_path / "m", resume=True)
    assert out["stop"] == "already complete"  # was refused ("parameters differ")


def test_a_vit_checkpoint_as_the_unet_init_names_the_real_problem(tmp_path, cells, tiny_vit):
    from zarrseg.methods.unet.train_params import TrainParams

    params = load_params(TrainParams, {**unet_args(*cells, steps=1), "init": tiny_vit})
    with pytest.raises(InputError, match="holds no U-Net to start from"):  # said: "the U-Net differs (depth 2 vs 3)"
        train("unet", params, tmp_path / "m")
    assert not (tmp_path / "m").exists()

"""Semi-supervised contrastive segmentation: the losses against hand-computed values, the three stages
(SimCLR, pixel-level supervised contrastive, fine-tuning from it), resume after SIGKILL, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import write_image
from resume_check import assert_same_weights, kill_and_resume

from zarrseg.crops import CropParams, prepare_crops
from zarrseg.errors import ConfigError, InputError
from zarrseg.learn.checkpoint import read
from zarrseg.learn.loop import train
from zarrseg.learn.registry import get_method
from zarrseg.methods.contrastive.augment import ViewAugment, make_view
from zarrseg.methods.contrastive.losses import local_contrastive, nt_xent, pixel_contrastive
from zarrseg.methods.unet.losses import Loss, LossParams
from zarrseg.params import load_params

LOOP = {"steps": 4, "checkpoint_every": 2, "threads": 1, "device": "cpu", "tensorboard": False}
TINY_UNET = {"ndim": 2, "f_maps": 4, "depth": 2}


# ---- losses on hand-made embeddings --------------------------------------------------------------------
def test_nt_xent_equals_the_hand_computed_value_and_identical_views_give_the_minimum():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # two images, orthogonal projections
    loss = nt_xent(z, z.clone(), temperature=0.5)
    # each of the 4 views: positive cos 1, two negatives cos 0 -> -log(e^2 / (e^2 + 2))
    assert float(loss) == pytest.approx(math.log(1 + 2 * math.exp(-2)), abs=1e-5)
    tilted = torch.tensor([[1.0, 0.3], [0.3, 1.0]])  # views that no longer agree
    assert float(nt_xent(z, tilted, 0.5)) > float(loss)
    swapped = z.flip(0)  # each view's partner is the other image's view
    assert float(nt_xent(z, swapped, 0.5)) > float(loss) + 2


def test_pixel_loss_equals_the_hand_computed_value_and_swapping_classes_raises_it():
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([1, 1, 0])
    # anchors: the two foreground pixels; positive cos 1, the background pixel cos 0, t = 0.5
    expected = math.log(1 + math.exp(-2))
    assert float(pixel_contrastive(emb, labels, temperature=0.5)) == pytest.approx(expected, abs=1e-5)
    swapped = torch.tensor([1, 0, 1])  # same embeddings, classes across the similar pair
    # anchor 0: positive cos 0 among cos 1 and 0 -> log(e^2 + 1); anchor 2: positive cos 0 among 0, 0 -> log 2
    worse = (math.log(math.exp(2) + 1) + math.log(2)) / 2
    assert float(pixel_contrastive(emb, swapped, temperature=0.5)) == pytest.approx(worse, abs=1e-5)
    assert worse > expected


def test_background_background_pairs_do_not_count():
    """Two background pixels moved closer together or apart: the loss does not change (no background
    anchors), while SupCon over every anchor would."""
    fg = [[1.0, 0.0, 0.0, 0.0], [0.8, 0.0, 0.0, 0.6]]  # orthogonal to every background pixel below
    values, supcon_all = [], []
    for angle in (0.0, 1.0, 2.5):
        bg = [[0.0, 1.0, 0.0, 0.0], [0.0, math.cos(angle), math.sin(angle), 0.0]]
        emb, labels = torch.tensor(fg + bg), torch.tensor([1, 1, 0, 0])
        values.append(float(pixel_contrastive(emb, labels, 0.1)))
        from pytorch_metric_learning.losses import SupConLoss

        supcon_all.append(float(SupConLoss(temperature=0.1)(emb, labels)))
    assert max(values) - min(values) < 1e-6
    assert max(supcon_all) - min(supcon_all) > 1e-2


def test_pixel_loss_equals_the_library_value_and_gradient_whole_and_in_chunks():
    """pytorch-metric-learning's SupConLoss, its background anchors dropped, is the reference: the
    direct form and the chunked form (above max_pairs) give its value and gradient."""
    from pytorch_metric_learning.losses import SupConLoss
    from pytorch_metric_learning.reducers import DoNothingReducer

    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(60, 8, generator=gen, requires_grad=True)
    labels = (torch.rand(60, generator=gen) < 0.4).long()
    per_anchor = SupConLoss(temperature=0.07, reducer=DoNothingReducer())(emb, labels)["loss"]["losses"]
    library = per_anchor[labels > 0].mean()
    (g_lib,) = torch.autograd.grad(library, emb)
    for max_pairs in (1 << 24, 400):  # one matrix; 6 anchor rows at a time
        ours = pixel_contrastive(emb, labels, 0.07, max_pairs=max_pairs)
        (g_ours,) = torch.autograd.grad(ours, emb)
        assert float(ours.detach()) == pytest.approx(float(library.detach()), rel=1e-5)
        assert torch.allclose(g_ours, g_lib, atol=1e-6)


def test_block_sampling_bounds_the_sets_and_one_block_equals_stride_one():
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(4, 6, 16, 16, generator=gen)
    labels = (torch.rand(4, 16, 16, generator=gen) < 0.3).long()
    whole = local_contrastive(feats, labels, 0.07, sampling="stride", stride=1)
    one_block = local_contrastive(feats, labels, 0.07, sampling="block", block=16)
    assert float(one_block) == pytest.approx(float(whole), rel=1e-5)
    labels[:, :8] = 0  # blocks without foreground are skipped, not counted as zero
    blocks = local_contrastive(feats, labels, 0.07, sampling="block", block=8)
    manual = [pixel_contrastive(feats[:, :, y:y + 8, x:x + 8].permute(0, 2, 3, 1).reshape(-1, 6),
                                labels[:, y:y + 8, x:x + 8].reshape(-1), 0.07) for y in (8,) for x in (0, 8)]
    assert float(blocks) == pytest.approx(float(torch.stack(manual).mean()), rel=1e-5)


def test_ssim_loss_equals_the_library_value():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    target = (rng.random((1, 1, 40, 48)) < 0.3).astype(np.float32)
    logits = torch.from_numpy(rng.normal(0, 2, target.shape).astype(np.float32))
    prob = torch.sigmoid(logits).numpy()[0, 0]
    ssim = structural_similarity(prob, target[0, 0], data_range=1.0, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)
    ones = torch.ones_like(logits)
    loss = Loss(LossParams(name="ssim_dice", dice_weight=0.0))(logits, torch.from_numpy(target), ones)
    assert float(loss) == pytest.approx(1 - ssim, abs=2e-3)
    from pytorch_msssim import ssim as library_ssim  # the library the loss uses: exactly its value

    library = 1 - float(library_ssim(torch.sigmoid(logits), torch.from_numpy(target), data_range=1.0))
    assert float(loss) == pytest.approx(library, abs=1e-6)
    perfect = torch.from_numpy(target * 40 - 20)  # logits that reproduce the target
    assert float(Loss(LossParams(name="ssim_mae_dice"))(perfect, torch.from_numpy(target), ones)) < 1e-3


def test_views_are_a_function_of_the_generator_and_keep_shape():
    x = torch.randn(3, 1, 32, 32)
    aug = ViewAugment(translate=0.1, zoom=0.3, probability=1.0)
    a = make_view(x, aug, torch.Generator().manual_seed(5))
    b = make_view(x, aug, torch.Generator().manual_seed(5))
    c = make_view(x, aug, torch.Generator().manual_seed(6))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)


# ---- the stages on a tiny crop store --------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crops")
    rng = np.random.default_rng(0)
    sources = []
    for i, split in enumerate(["pretrain", "pretrain", "finetune"]):
        labels = np.zeros((64, 64), np.uint8)
        for _ in range(4):
            y, x = rng.integers(8, 56, 2)
            labels[max(0, y - 6):y + 6, max(0, x - 6):x + 6] = 1
        image = (60 + 120 * labels + rng.normal(0, 15, labels.shape)).astype(np.float32)
        sources.append({"image": write_image(tmp / f"i{i}.ome.zarr", image),
                        "labels": write_image(tmp / f"l{i}.ome.zarr", labels, is_label=True), "split": split})
    prepare_crops(load_params(CropParams, {"images": sources, "crop_size": 32, "step": 0.5, "buffer": 4}), tmp / "store")
    return tmp / "store"


def global_params(store) -> dict:
    return {"crops": str(store), "model": TINY_UNET, "projection_dim": 8, "batch_size": 4, "epochs": None,
            "loop": LOOP}


def local_params(store, init) -> dict:
    return {"crops": str(store), "init": str(init), "embedding_dim": 8, "block_size": 16, "batch_size": 2,
            "epochs": None, "loop": LOOP}


@pytest.fixture(scope="module")
def stage1(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1")
    spec = get_method("contrastive_global")
    train(spec, load_params(spec.params, global_params(store)), out)
    return out


def test_global_stage_trains_encoder_and_head(store, stage1):
    before = get_method("contrastive_global").model_builder()(read(stage1 / "best.pt")["model_config"]).state_dict()
    torch.manual_seed(0)
    after = read(stage1 / "best.pt")["state_dict"]
    assert any(k.startswith("mlp.") for k in after) and any(k.startswith("encoders.") for k in after)
    changed = {k.split(".")[0] for k in after if after[k].dtype.is_floating_point and not torch.equal(after[k], before[k])}
    assert {"encoders", "mlp"} <= changed  # the head is optimised too (the reference code leaves it untrained)


def test_frozen_encoder_stays_unchanged_and_the_chain_reaches_a_segmentation_unet(store, stage1, tmp_path):
    spec = get_method("contrastive_local")
    params = load_params(spec.params, {**local_params(store, stage1), "freeze_encoder": True})
    train(spec, params, tmp_path / "local")
    s1, s2 = read(stage1 / "best.pt")["state_dict"], read(tmp_path / "local" / "best.pt")["state_dict"]
    encoder = [k for k in s1 if k.startswith("encoders.")]
    assert encoder and all(torch.equal(s1[k], s2[k]) for k in encoder)  # weights and batch-norm statistics
    from zarrseg.learn.device import seed_step
    from zarrseg.methods.contrastive.models import unet_config
    from zarrseg.methods.unet.models import UNet

    seed_step(0, 0, salt=1)  # the loop's model initialisation: the decoder as it started
    start = UNet(unet_config(read(tmp_path / "local" / "best.pt")["model_config"])).state_dict()
    decoder = [k for k in s2 if k.startswith("decoders.") and k.endswith("weight")]
    assert decoder and all(not torch.equal(s2[k], start[k]) for k in decoder)  # the rest of the U-Net learnt
    # stage 3: the U-Net starts from stage 2 (all but the 8-channel head) and trains on the fine-tuning crops
    unet = get_method("unet")
    p = load_params(unet.params, {
        "train": [{"image": str(store / "finetune" / "image"), "labels": str(store / "finetune" / "mask")}],
        "init": str(tmp_path / "local"), "model": TINY_UNET, "patch_shape": [32, 32], "batch_size": 2,
        "num_workers": 0, "target": {"kind": "foreground"}, "loss": {"name": "ssim_mae_dice"},
        "loop": {**LOOP, "steps": 1}})
    from zarrseg.methods.unet.checkpoint import load_init

    copied = load_init(UNet(p.model), p.init, p.model, "train.init")
    assert "head.weight" not in copied and any(k.startswith("decoders.") for k in copied)
    train(unet, p, tmp_path / "seg")
    assert read(tmp_path / "seg" / "best.pt")["io"]["kind"] == "foreground"


def stage3_params(store, init, steps: int) -> dict:
    return {"train": [{"image": str(store / "finetune" / "image"), "labels": str(store / "finetune" / "mask")}],
            "init": str(init), "model": TINY_UNET, "patch_shape": [32, 32], "batch_size": 2, "num_workers": 0,
            "target": {"kind": "foreground"}, "loss": {"name": "bce_dice"},
            "loop": {**LOOP, "steps": steps, "eval_every": 2}}


def test_fine_tuning_from_stage_two_resumes_exactly(store, stage1, tmp_path):
    """Stage 3 (the unet method started from stage 2): a run stopped at step 2 and resumed to step 4
    ends with the weights of an uninterrupted 4-step run (the init is not applied over the resumed
    weights); a resume whose init differs is refused."""
    spec = get_method("contrastive_local")
    train(spec, load_params(spec.params, {**local_params(store, stage1), "loop": {**LOOP, "steps": 2}}),
          tmp_path / "local")
    unet = get_method("unet")
    train(unet, load_params(unet.params, stage3_params(store, tmp_path / "local", 4)), tmp_path / "full")
    train(unet, load_params(unet.params, stage3_params(store, tmp_path / "local", 2)), tmp_path / "part")
    train(unet, load_params(unet.params, stage3_params(store, tmp_path / "local", 4)), tmp_path / "part", resume=True)
    a, b = read(tmp_path / "full" / "last.pt"), read(tmp_path / "part" / "last.pt")
    assert a["loop"]["step"] == b["loop"]["step"] == 4
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    with pytest.raises(InputError, match="cannot resume: the parameters differ"):
        train(unet, load_params(unet.params, stage3_params(store, stage1, 4)), tmp_path / "part", resume=True)


def test_global_stage_resumes_exactly_after_sigkill(store, tmp_path):
    full, resumed = kill_and_resume("contrastive_global", global_params(store), tmp_path, kill_after=3)
    assert_same_weights(full, resumed)


def test_local_stage_resumes_exactly_after_sigkill(store, stage1, tmp_path):
    full, resumed = kill_and_resume("contrastive_local", local_params(store, stage1), tmp_path, kill_after=3)
    assert_same_weights(full, resumed)


# ---- bad input: one line, exit 2, nothing written --------------------------------------------------------
@pytest.mark.parametrize(
    "method, params, message",
    [
        ("contrastive_global", {"fraction": 1.5}, "contrastive_global.fraction is a fraction of the crops in (0, 1]"),
        ("contrastive_local", {"fraction": 0.0, "init": "x.pt"}, "contrastive_local.fraction"),
        ("contrastive_local", {}, "contrastive_local.init: the local stage starts from a stage-1 checkpoint"),
        ("contrastive_local", {"init": "no_such.pt"}, "no_such.pt: checkpoint does not exist"),
    ],
)
def test_bad_stage_parameters_fail_with_one_line_and_write_nothing(store, tmp_path, capsys, method, params, message):
    from zarrseg.cli import main

    out = tmp_path / "model"
    code = main(["train", "--method", method, "-o", str(out), "--params", json.dumps({"crops": str(store), **params})])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("step", ["0", "1.5"])
def test_a_crop_step_outside_zero_one_fails_with_one_line_and_writes_nothing(tmp_path, capsys, step):
    from zarrseg.cli import main

    image = write_image(tmp_path / "i.ome.zarr", np.zeros((40, 40), np.float32))
    code = main(["crops", f"{image}=pretrain", "-o", str(tmp_path / "store"), "--set", f"step={step}"])
    err = capsys.readouterr().err
    assert code == 2 and "crops.step is a fraction of the crop size in (0, 1]" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "store").exists()


def test_local_stage_refuses_a_checkpoint_that_is_not_stage_one(store, stage1, tmp_path):
    spec = get_method("contrastive_local")
    train(spec, load_params(spec.params, {**local_params(store, stage1), "loop": {**LOOP, "steps": 1}}), tmp_path / "l")
    with pytest.raises(InputError, match="must be a checkpoint of contrastive_global"):
        train(spec, load_params(spec.params, local_params(store, tmp_path / "l")), tmp_path / "again")
    assert not (tmp_path / "again").exists()
    with pytest.raises(ConfigError, match="f_maps"):  # another U-Net than stage 1's
        unet = get_method("unet")
        train(unet, load_params(unet.params, {
            "train": [{"image": str(store / "finetune" / "image"), "labels": str(store / "finetune" / "mask")}],
            "init": str(stage1), "model": {**TINY_UNET, "f_maps": 8}, "patch_shape": [32, 32], "num_workers": 0,
            "target": {"kind": "foreground"}, "loop": LOOP}), tmp_path / "u")


# ---- tables of the grids ------------------------------------------------------------------------------------
def test_group_tables_pool_cells_and_curves_draw_baselines_as_lines(tmp_path):
    from zarrseg.evaluation.groups import group_table
    from zarrseg.evaluation.report import aggregate
    from zarrseg.evaluation.tables import TableParams, metrics_frame, write_table

    paths = []
    for row, g, loss, seed, f1 in [("g0.2", 0.2, "bce", 0, 0.80), ("g0.2", 0.2, "bce", 1, 0.84),
                                   ("g0.6", 0.6, "bce", 0, 0.90), ("g0.6", 0.6, "ssim", 0, 0.70),
                                   ("supervised", None, "bce", 0, 0.75), ("supervised", None, "bce", 1, 0.77)]:
        params = {"grid.row": row, "train.loss.name": loss, "grid.seed": seed}
        if g is not None:
            params["contrastive_global.fraction"] = g
        for sample, delta in (("t1", 0.02), ("t2", -0.02)):
            frame = metrics_frame({"": {"dice": f1 + delta}}, {"sample": sample, "method": row, "params": json.dumps(params),
                                                               "cell": f"{row}-{loss}-{seed}"})
            paths.append(write_table(frame, tmp_path / f"{row}_{loss}_{seed}_{sample}.parquet")[0])
    from zarrseg.evaluation.tables import read_metrics

    table = read_metrics(paths)
    by_loss = group_table(table, ["train.loss.name"], ["dice"]).set_index("name")
    assert by_loss.loc["bce", "n"] == 5 and by_loss.loc["ssim", "n"] == 1  # cells, not samples
    assert by_loss.loc["bce", "dice_mean"] == pytest.approx(np.mean([0.80, 0.84, 0.90, 0.75, 0.77]))
    pooled = group_table(table, ["method", "train.loss.name"], ["dice"]).set_index(["method", "name"])
    assert pooled.loc[("g0.2", "bce"), "dice_sd"] == pytest.approx(np.std([0.80, 0.84], ddof=1))
    params = load_params(TableParams, {
        "metrics": ["dice"], "figure_metrics": ["dice"], "rank_by": "dice", "box_by": "method",
        "group_by": [["train.loss.name"]], "curves": [{"x": "contrastive_global.fraction", "figures": "train.loss.name"}]})
    out = aggregate(paths, tmp_path / "out", params)
    names = sorted(p.name for p in out["figures"] if p.name.startswith("curve_contrastive"))
    assert names == ["curve_contrastive_global.fraction_bce.png", "curve_contrastive_global.fraction_ssim.png"]
    assert "| bce | 5 | 0.812 ± " in (tmp_path / "out" / "by_train.loss.name.md").read_text()
    with pytest.raises(ConfigError, match="'nope' is neither a grid parameter"):
        aggregate(paths, tmp_path / "bad", load_params(TableParams, {"metrics": ["dice"], "group_by": [["nope"]]}))


# ---- the grids' plan ------------------------------------------------------------------------------------------
def contrastive_plan(tmp_path, experiment: str, **fixed):
    import yaml

    from zarrseg.workflow import Plan, discover_samples, experiment_for

    names = ["pretrain_a", "pretrain_b", "finetune_a", "test_a", "test_b"]
    rows = ["sample\timage\tground_truth"]
    for n in names:
        (tmp_path / f"{n}.tif").touch()
        (tmp_path / f"{n}_l.tif").touch()
        rows.append(f"{n}\t{tmp_path}/{n}.tif\t{tmp_path}/{n}_l.tif")
    (tmp_path / "sheet.tsv").write_text("\n".join(rows) + "\n")
    from conftest import REPO

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config.update(samples={"sheet": str(tmp_path / "sheet.tsv")}, experiment=experiment)
    exp = experiment_for(config, REPO)
    exp.fixed.update(fixed)
    return Plan(config, exp, discover_samples(config, experiment=exp), "res")


def test_the_fractions_grid_chains_three_models_per_pretrained_row_and_shares_the_crop_store(tmp_path):
    plan = contrastive_plan(tmp_path, "contrastive_fractions")
    assert plan.experiment_samples() == ["test_a", "test_b"]  # patterns: only the test acquisitions are scored
    count = {m: sum(1 for mm, _ in plan.models if mm == m) for m in ("contrastive_global", "contrastive_local", "unet")}
    assert count == {"contrastive_global": 4, "contrastive_local": 8, "unet": 30}  # 2 fractions x 2 seeds, ...
    assert max(len(mid) for _, mid in plan.models) <= 120  # long ids end in a hash
    stores = [c for s, c in plan.subcells if s == "crops"]
    assert len(stores) == 1
    store = plan.crops_path(plan.subcells[("crops", stores[0])])
    sources = plan.crops_params(stores[0])["images"]
    assert {s["name"]: s["split"] for s in sources} == {"pretrain_a": "pretrain", "pretrain_b": "pretrain",
                                                         "finetune_a": "finetune", "test_a": "test", "test_b": "test"}
    cells = {(v["grid.row"], v["train.loss.name"], v["grid.seed"]): c for c, v in plan.cells.items()}
    pre = plan.values(cells[("g0.2_l0.6", "ssim_dice", 1)])
    unet = plan.model_params("unet", plan.model_id("unet", pre))
    assert unet["train"] == [{"image": f"{store}/finetune/image", "labels": f"{store}/finetune/mask"}]
    assert unet["init"] == plan.model_path("contrastive_local", pre) and unet["loss"]["name"] == "ssim_dice"
    local = plan.model_params("contrastive_local", plan.model_id("contrastive_local", pre))
    assert local["init"] == plan.model_path("contrastive_global", pre) and local["crops"] == store
    assert (local["fraction"], local["loop"]["seed"]) == (0.6, 1)
    assert store in plan.model_inputs("contrastive_global", plan.model_id("contrastive_global", pre))
    sup = plan.values(cells[("supervised", "ssim_dice", 1)])
    assert "init" not in plan.model_params("unet", plan.model_id("unet", sup))
    assert plan.all_models(sup) == ["unet"]


def test_a_sample_in_two_splits_is_an_error_before_any_job(tmp_path):
    with pytest.raises(ConfigError, match="'test_a' is in both 'test' and 'finetune'"):
        split = {"pretrain": ["pretrain_*"], "test": ["test_*"], "finetune": ["finetune_*", "test_a"]}
        contrastive_plan(tmp_path, "contrastive_losses", **{"crops.split": split})


def test_a_stage_one_checkpoint_is_refused_by_predict_and_as_a_grid_model(stage1, tmp_path, capsys):
    from conftest import write_image

    from zarrseg.cli import main
    from zarrseg.experiments import Experiment
    from zarrseg.workflow import Plan, Sample

    image = write_image(tmp_path / "i.ome.zarr", np.zeros((64, 64), np.float32) + 0.5)
    out = tmp_path / "p.ome.zarr"
    assert main(["predict", str(image), "-o", str(out), "--checkpoint", str(stage1 / "best.pt")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "one embedding per image" in err[0]
    assert not out.exists() and not list(tmp_path.glob("*.partial"))
    exp = Experiment(name="e", fixed={"grid.model": "contrastive_global"})
    exp.samples = ["a"]
    with pytest.raises(ConfigError, match="pretraining stage whose model gives no map"):
        Plan({}, exp, {"a": Sample("a", "a.tif", ground_truth="g.tif")}, "R").values(next(iter(exp.cells())))

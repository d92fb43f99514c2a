"""Every metric from the contingency table equals its reference implementation on the full arrays."""

from __future__ import annotations

import itertools

import elf.evaluation as elf_eval
import h5py
import numpy as np
import pytest
from conftest import shared_path
from skimage.metrics import adapted_rand_error, variation_of_information
from skimage.segmentation import relabel_sequential
from sklearn import metrics as skm

from zarrseg.errors import ConfigError
from zarrseg.evaluation import (
    Contingency,
    binary_metrics,
    clustering_metrics,
    combine_annotators,
    instance_metrics,
)
from zarrseg.evaluation.instance import DEFAULT_IOU_THRESHOLDS, seg_score, threshold_name
from zarrseg.evaluation.score import EvaluateParams, score_table
from zarrseg.evaluation.semantic import matched_iou

TOL = 1e-9


def blobs(rng: np.random.Generator, shape: tuple[int, ...], n: int) -> np.ndarray:
    """Label volume of ``n`` Voronoi cells (compact objects, like cells or neurons)."""
    centres = np.stack([rng.integers(0, s, n) for s in shape], axis=1)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).reshape(
        -1, len(shape)
    )
    d = ((grid[:, None, :] - centres[None]) ** 2).sum(-1)
    return (d.argmin(1) + 1).reshape(shape)


def perturbed(rng: np.random.Generator, gt: np.ndarray, big_ids: bool) -> np.ndarray:
    """A plausible segmentation of ``gt``: relabelled, some objects split, some merged, noise, background."""
    ids = np.unique(gt)
    mapping = rng.permutation(ids.size) + 1
    seg = mapping[np.searchsorted(ids, gt)].astype(np.uint64)
    seg[rng.random(gt.shape) < 0.03] = rng.integers(1, ids.size + 1)  # salt noise
    split = gt == ids[1]
    seg[split & (np.indices(gt.shape)[-1] % 2 == 0)] = ids.size + 5  # one object split
    seg[gt == ids[2]] = seg[gt == ids[3]][0] if (gt == ids[3]).any() else seg[gt == ids[2]]  # two merged
    seg[rng.random(gt.shape) < 0.02] = 0  # unlabelled voxels
    if big_ids:
        seg = seg * np.uint64(2**40) + np.uint64(7)
        seg[seg == np.uint64(7)] = 0
    return seg


def check_instance(seg: np.ndarray, gt: np.ndarray, thresholds=DEFAULT_IOU_THRESHOLDS) -> dict:
    table = Contingency.from_arrays(seg, gt)
    got = instance_metrics(table, ignore_label=0, thresholds=thresholds)
    # The references index dense tables by id; ids ~2**40 need their consecutive relabelling
    # (ours compacts ids itself; every metric is invariant to relabelling).
    seg = relabel_sequential(seg)[0]
    # ARand: skimage (precision/recall reported in SNEMI3D orientation, see instance.adapted_rand)
    are, sk_prec, sk_rec = adapted_rand_error(gt, seg, ignore_labels=(0,))
    assert got["arand"] == pytest.approx(are, abs=TOL)
    assert got["arand_precision"] == pytest.approx(sk_rec, abs=TOL)
    assert got["arand_recall"] == pytest.approx(sk_prec, abs=TOL)
    # VOI: skimage and elf (split = H(seg|gt), merge = H(gt|seg))
    split, merge = variation_of_information(gt, seg, ignore_labels=(0,))
    assert got["voi_split"] == pytest.approx(split, abs=TOL)
    assert got["voi_merge"] == pytest.approx(merge, abs=TOL)
    e_split, e_merge = elf_eval.variation_of_information(seg, gt, ignore_gt=[0])
    assert got["voi_split"] == pytest.approx(e_split, abs=TOL)
    assert got["voi_merge"] == pytest.approx(e_merge, abs=TOL)
    # Rand index / ARI: sklearn on the scored voxels
    keep = gt != 0
    assert got["rand_index"] == pytest.approx(skm.rand_score(gt[keep], seg[keep]), abs=TOL)
    assert got["adjusted_rand_index"] == pytest.approx(skm.adjusted_rand_score(gt[keep], seg[keep]), abs=TOL)
    # matching: elf
    for t in thresholds:
        ref = elf_eval.matching(seg, gt, threshold=t, ignore_label=0)
        assert got[threshold_name("precision", t)] == pytest.approx(ref["precision"], abs=TOL)
        assert got[threshold_name("recall", t)] == pytest.approx(ref["recall"], abs=TOL)
        assert got[threshold_name("f1", t)] == pytest.approx(ref["f1"], abs=TOL)
        assert got[threshold_name("ap", t)] == pytest.approx(ref["segmentation_accuracy"], abs=TOL)
    msa = elf_eval.mean_segmentation_accuracy(seg, gt, thresholds=list(thresholds), ignore_label=0)
    assert got["msa"] == pytest.approx(msa, abs=TOL)
    # SBD: elf (its 1e-7 epsilon in the Dice denominator is far below TOL for these object sizes)
    assert got["sbd"] == pytest.approx(elf_eval.symmetric_best_dice_score(seg, gt), abs=TOL)
    # |DiC|: object counts
    n_seg = np.setdiff1d(np.unique(seg), [0]).size
    n_gt = np.setdiff1d(np.unique(gt), [0]).size
    assert got["dic"] == n_seg - n_gt and got["abs_dic"] == abs(n_seg - n_gt)
    return got


def check_clustering(seg: np.ndarray, gt: np.ndarray, ignore: int | None) -> dict:
    got = clustering_metrics(Contingency.from_arrays(seg, gt), ignore_label=ignore)
    keep = np.ones(gt.shape, bool) if ignore is None else gt != ignore
    t, p = gt[keep].ravel(), seg[keep].ravel()
    assert got["rand_index"] == pytest.approx(skm.rand_score(t, p), abs=TOL)
    assert got["adjusted_rand_index"] == pytest.approx(skm.adjusted_rand_score(t, p), abs=TOL)
    assert got["ami"] == pytest.approx(skm.adjusted_mutual_info_score(t, p), abs=TOL)
    assert got["fmi"] == pytest.approx(skm.fowlkes_mallows_score(t, p), abs=TOL)
    h, c, v = skm.homogeneity_completeness_v_measure(t, p)
    assert got["homogeneity"] == pytest.approx(h, abs=TOL)
    assert got["completeness"] == pytest.approx(c, abs=TOL)
    assert got["v_measure"] == pytest.approx(v, abs=TOL)
    return got


@pytest.mark.parametrize(
    "seed,shape,big_ids", [(0, (12, 30, 34), False), (1, (48, 52), True), (2, (9, 20, 25), True)]
)
def test_instance_metrics_match_references_on_random_labels(seed, shape, big_ids):
    rng = np.random.default_rng(seed)
    gt = blobs(rng, shape, 25)
    gt[rng.random(shape) < 0.05] = 0  # ignore label in the ground truth
    seg = perturbed(rng, gt, big_ids)
    got = check_instance(seg, gt)
    assert 0 < got["arand"] < 1 and got["ap@0.50"] > 0  # a non-trivial case: some objects match
    # below IoU 0.5 an object can pair with several: the maximum matching must equal elf's Hungarian
    low = check_instance(seg, gt, thresholds=(0.05, 0.1, 0.2, 0.3))
    assert low["ap@0.05"] >= low["ap@0.30"]


def test_instance_metrics_match_references_on_gala(shared_data):
    with h5py.File(shared_path("gala_fibsem", "train-gt.lzf.h5")) as f:
        gt = f["stack"][:]
    with h5py.File(shared_path("gala_fibsem", "train-ws.lzf.h5")) as f:
        ws = f["stack"][:]
    got = check_instance(ws, gt)
    assert got["voi_split"] > got["voi_merge"]  # watershed fragments over-segment


@pytest.mark.parametrize("ignore", [0, None])
def test_clustering_metrics_match_sklearn(rng, ignore):
    gt = blobs(rng, (40, 44), 6) - 1  # classes 0..5
    seg = (gt * 7 + 3) % 11
    noise = rng.random(gt.shape) < 0.2
    seg[noise] = rng.integers(0, 9, noise.sum())
    got = check_clustering(seg, gt, ignore)
    assert 0 < got["v_measure"] < 1


def test_clustering_metrics_on_gala_fragments(shared_data):
    with h5py.File(shared_path("gala_fibsem", "test-gt.lzf.h5")) as f:
        gt = f["stack"][:10]
    with h5py.File(shared_path("gala_fibsem", "test-ws.lzf.h5")) as f:
        ws = f["stack"][:10]
    check_clustering(ws, gt, 0)


def test_clustering_metrics_on_bsds_annotators(shared_data):
    """Real multi-annotator data: each BSDS annotator scored against another, and mean/best."""
    from scipy.io import loadmat

    truth = loadmat(shared_path("bsds300_test", "groundTruth", "101085.mat"))["groundTruth"]
    annotators = [truth[0, k]["Segmentation"][0, 0].astype(np.int64) for k in range(truth.shape[1])]
    seg = annotators[0]
    scores = [check_clustering(seg, gt, None) for gt in annotators[1:3]]
    combined = combine_annotators(scores)
    assert combined["best"]["v_measure"] == max(s["v_measure"] for s in scores)
    assert combined["mean"]["ami"] == pytest.approx(np.mean([s["ami"] for s in scores]))


def test_binary_metrics_match_sklearn_and_elf(rng):
    gt = (blobs(rng, (30, 40), 8) % 2).astype(np.uint8)
    seg = gt.copy() * 255
    flip = rng.random(gt.shape) < 0.1
    seg[flip] = 255 - seg[flip]
    got = binary_metrics(Contingency.from_arrays(seg, gt), background=0)
    t, p = gt.ravel() != 0, seg.ravel() != 0
    assert got["iou"] == pytest.approx(skm.jaccard_score(t, p), abs=TOL)
    assert got["dice"] == pytest.approx(skm.f1_score(t, p), abs=TOL)
    assert got["precision"] == pytest.approx(skm.precision_score(t, p), abs=TOL)
    assert got["recall"] == pytest.approx(skm.recall_score(t, p), abs=TOL)
    assert got["pixel_accuracy"] == pytest.approx(skm.accuracy_score(t, p), abs=TOL)
    assert got["dice"] == pytest.approx(elf_eval.dice_score(seg, gt), abs=1e-9)


def test_adapted_rand_precision_recall_orientation():
    # one segment covering everything: a pure merge -> SNEMI3D recall 1, precision < 1
    gt = np.array([[1, 1, 2, 2], [3, 3, 4, 4]])
    seg = np.ones_like(gt)
    got = instance_metrics(Contingency.from_arrays(seg, gt))
    assert got["arand_recall"] == pytest.approx(1.0)
    assert got["arand_precision"] < 0.5
    # and a pure split: precision 1
    got = instance_metrics(Contingency.from_arrays(gt, seg))
    assert got["arand_precision"] == pytest.approx(1.0) and got["arand_recall"] < 0.5


def test_seg_hand_computed_cases():
    # object 1 (4 px): segment 5 covers 3 of them plus 2 outside -> J = 3 / (4 + 5 - 3) = 0.5
    # object 2 (4 px): split 2 + 2 between segments 6 and 7 -> no segment covers > 50% -> 0
    # object 3 (2 px): exactly segment 8 -> 1
    gt = np.array([1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 0, 0])
    seg = np.array([5, 5, 5, 9, 6, 6, 7, 7, 8, 8, 5, 5])
    assert seg_score(Contingency.from_arrays(seg, gt)) == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    # covered mostly by segmentation background (0) -> 0, even though 0 "covers" it
    gt = np.array([1, 1, 1, 2, 2])
    seg = np.array([0, 0, 4, 3, 3])
    assert seg_score(Contingency.from_arrays(seg, gt)) == pytest.approx((0.0 + 1.0) / 2)
    # a perfect relabelled segmentation scores 1
    gt = np.array([1, 1, 2, 2, 3, 0])
    assert seg_score(Contingency.from_arrays(gt * 10 + 1, gt)) == pytest.approx(1.0)


def test_matched_iou_equals_brute_force_assignment(rng):
    gt = rng.integers(0, 4, 500)
    seg = (gt + rng.integers(0, 2, 500) * rng.integers(0, 5, 500)) % 5  # 5 clusters, 4 classes
    mat, _, _ = Contingency.from_arrays(seg, gt).matrix(np.int64)
    got = matched_iou(mat)["matched_iou"]
    best = 0.0
    for perm in itertools.permutations(range(5), 4):  # class k <- cluster perm[k]
        ious = [skm.jaccard_score(gt == k, seg == c) for k, c in enumerate(perm)]
        best = max(best, float(np.mean(ious)))
    assert got == pytest.approx(best, abs=TOL)
    # clusters that are a relabelling of the classes match perfectly
    assert clustering_metrics(Contingency.from_arrays((gt * 3 + 1) % 7, gt), None)["matched_iou"] == 1.0


def test_combine_annotators_best_and_mean():
    scores = [{"arand": 0.2, "v_measure": 0.5}, {"arand": 0.4, "v_measure": 0.9}]
    out = combine_annotators(scores)
    assert set(out) == {"0", "1", "mean", "best"}
    assert out["best"] == {"arand": 0.2, "v_measure": 0.9}
    assert out["mean"]["arand"] == pytest.approx(0.3)


def test_metric_selection_and_unknown_names():
    params = EvaluateParams(metrics=["arand", "ap", "voi_split"])
    params.validate()
    gt = np.array([[1, 1, 2, 2], [1, 1, 2, 2]])
    got = score_table(Contingency.from_arrays(gt, gt), params)
    assert set(got) == {"arand", "voi_split", *[threshold_name("ap", t) for t in DEFAULT_IOU_THRESHOLDS]}
    assert got["arand"] == 0.0 and got["ap@0.95"] == 1.0
    params = EvaluateParams(metrics=["ap@0.5"], iou_thresholds=[0.5])
    params.validate()
    assert params.metrics == ["ap@0.50"]
    with pytest.raises(ConfigError, match="did you mean 'arand'"):
        EvaluateParams(metrics=["arnd"]).validate()
    with pytest.raises(ConfigError, match="iou_thresholds"):
        EvaluateParams(iou_thresholds=[0.0]).validate()


def test_matched_fg_iou_is_binary_foreground_iou_after_assignment(rng):
    """Zöngür's Table 3.4 IoU: the foreground class (highest id) against its assigned cluster."""
    gt = rng.integers(1, 3, 2000)  # 1 = background, 2 = foreground (0 ignored)
    flip = rng.random(2000) < 0.2
    clusters = np.where(flip, 3 - gt, gt) * 7  # cluster ids unrelated to class ids
    got = clustering_metrics(Contingency.from_arrays(clusters, gt), 0)["matched_fg_iou"]
    assert got == pytest.approx(skm.jaccard_score(gt == 2, clusters == 14), abs=TOL)
    # swapped cluster ids give the same score; more than two classes has no foreground
    swapped = np.where(clusters == 7, 14, 7)
    assert clustering_metrics(Contingency.from_arrays(swapped, gt), 0)["matched_fg_iou"] == pytest.approx(got)
    assert np.isnan(
        clustering_metrics(Contingency.from_arrays(clusters, rng.integers(1, 4, 2000)), 0)["matched_fg_iou"]
    )

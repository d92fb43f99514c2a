"""Instance-segmentation metrics from one contingency table.

Two ignore conventions, each that of the reference implementation of the metric:

* partition metrics (ARand, Rand index, VOI): voxels whose *ground truth* is ``ignore_label``
  are not scored (gala, CREMI, SNEMI3D, ``skimage.metrics`` ``ignore_labels``);
* object metrics (matching AP/F1, mSA, SEG, SBD, |DiC|): ``ignore_label`` is the background of
  both label images; its voxels still count in object sizes (elf ``matching``, CTC SEG, CVPPP).

ARand and VOI are scikit-image's own functions applied to our table (they accept one); matching
follows elf's definitions. Formulas that no library offers on a table (pair counting, SEG, SBD)
are written here and cross-checked in tests against the library on the full arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.sparse import csr_array
from scipy.sparse.csgraph import maximum_bipartite_matching
from skimage.metrics import adapted_rand_error, variation_of_information

from .contingency import Contingency

DEFAULT_IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))

# Metrics where a smaller value is better (for "best" annotator, bold summary cells, box plots).
# clustering_s: seconds the cluster / segment stage took (added by 'zarrseg evaluate' from the labels)
LOWER_IS_BETTER = frozenset({"arand", "voi_split", "voi_merge", "voi", "abs_dic", "clustering_s"})
# DiC (difference in count) is signed: best nearest 0, so -32 is worse than +16
NEAREST_ZERO = frozenset({"dic"})
# object counts describe a segmentation: neither more nor fewer is better
UNRANKED = frozenset({"n_seg_objects", "n_gt_objects"})


def badness(metric: str, values):
    """``values`` (array or Series) mapped so that the smallest is the best; None for a metric with no
    better side. One rule for the best annotator, the bold summary cell, box plots and selection."""
    if metric in UNRANKED:
        return None
    if metric in NEAREST_ZERO:
        return abs(values)
    return values if metric in LOWER_IS_BETTER else -values

INSTANCE_METRICS = (
    "arand",
    "arand_precision",
    "arand_recall",
    "rand_index",
    "adjusted_rand_index",
    "voi_split",
    "voi_merge",
    "voi",
    "seg",
    "sbd",
    "dic",
    "abs_dic",
    "n_seg_objects",
    "n_gt_objects",
    "msa",
    "ap",
    "precision",
    "recall",
    "f1",
)
THRESHOLDED = ("ap", "precision", "recall", "f1")


def threshold_name(metric: str, threshold: float) -> str:
    return f"{metric}@{threshold:.2f}"


def _dummy() -> np.ndarray:
    # skimage.metrics checks image shapes even when a table is given; empty arrays pass that check.
    return np.zeros(0, dtype=np.uint8)


def adapted_rand(table: Contingency, ignore_label: int | None = 0) -> dict[str, float]:
    """Adapted Rand error (SNEMI3D) with its precision (merge score) and recall (split score).

    skimage returns its precision and recall swapped with respect to SNEMI3D (scikit-image issue
    #6485: its "precision" divides by the pairs of the *true* image); we report the SNEMI3D ones:
    precision = sum p_ij^2 / sum s_k^2 (s: segmentation), recall = sum p_ij^2 / sum t_k^2.
    """
    mat, _, _ = table.without_gt(ignore_label).matrix(np.float64)
    are, sk_precision, sk_recall = adapted_rand_error(table=mat)
    return {"arand": float(are), "arand_precision": float(sk_recall), "arand_recall": float(sk_precision)}


def voi(table: Contingency, ignore_label: int | None = 0) -> dict[str, float]:
    """Variation of information in bits: split = H(seg | gt), merge = H(gt | seg) (skimage)."""
    mat, _, _ = table.without_gt(ignore_label).matrix(np.float64)
    total = mat.sum()
    if total == 0:
        return {"voi_split": float("nan"), "voi_merge": float("nan"), "voi": float("nan")}
    split, merge = variation_of_information(_dummy(), _dummy(), table=mat / total)
    return {"voi_split": float(split), "voi_merge": float(merge), "voi": float(split + merge)}


def pair_counts(mat: csr_array) -> tuple[float, float, float, float]:
    """Pair confusion (same/same, same gt only, same seg only, different/different) in float64.

    Mirrors ``sklearn.metrics.cluster.pair_confusion_matrix``, which only takes label arrays;
    counts of ordered pairs, as sklearn. Float64 avoids its int64 overflow on large volumes.
    """
    data = mat.data.astype(np.float64)
    n = data.sum()
    rows = np.asarray(mat.sum(axis=1), dtype=np.float64).ravel()
    cols = np.asarray(mat.sum(axis=0), dtype=np.float64).ravel()
    both = data @ data - n
    same_gt = rows @ rows - n - both
    same_seg = cols @ cols - n - both
    neither = n * n - n - both - same_gt - same_seg
    return both, same_gt, same_seg, neither


def rand_scores(table: Contingency, ignore_label: int | None = 0) -> dict[str, float]:
    """Rand index and adjusted Rand index (sklearn ``rand_score`` / ``adjusted_rand_score``)."""
    mat, _, _ = table.without_gt(ignore_label).matrix(np.float64)
    both, same_gt, same_seg, neither = pair_counts(mat)
    total = both + same_gt + same_seg + neither
    ri = 1.0 if total == 0 or both + neither == total else (both + neither) / total
    # sklearn: ARI = 2 (tn tp - fn fp) / ((tp + fn)(fn + tn) + (tp + fp)(fp + tn))
    tp, fn, fp, tn = both, same_gt, same_seg, neither
    if fn == 0 and fp == 0:
        ari = 1.0
    else:
        ari = 2.0 * (tn * tp - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))
    return {"rand_index": float(ri), "adjusted_rand_index": float(ari)}


class _Objects:
    """Object view of a table: sizes and per-pair overlaps with the background removed."""

    def __init__(self, table: Contingency, background: int | None):
        self.seg_ids, self.seg_sizes = table.sizes("seg")
        self.gt_ids, self.gt_sizes = table.sizes("gt")
        si = np.searchsorted(self.seg_ids, table.seg)
        gi = np.searchsorted(self.gt_ids, table.gt)
        keep = np.ones(len(table), dtype=bool)
        seg_obj = np.ones(self.seg_ids.size, dtype=bool)
        gt_obj = np.ones(self.gt_ids.size, dtype=bool)
        if background is not None:
            bg = np.uint64(background)
            keep = (table.seg != bg) & (table.gt != bg)
            seg_obj = self.seg_ids != bg
            gt_obj = self.gt_ids != bg
        self.si, self.gi, self.overlap = si[keep], gi[keep], table.count[keep]
        self.seg_obj, self.gt_obj = seg_obj, gt_obj
        self.n_seg, self.n_gt = int(seg_obj.sum()), int(gt_obj.sum())
        a = self.seg_sizes[self.si]
        b = self.gt_sizes[self.gi]
        # Same arithmetic as elf.evaluation.matching.intersection_over_union (integers -> float64).
        self.iou = self.overlap / np.maximum(a + b - self.overlap, 1e-7)
        self.dice_pairs = 2.0 * self.overlap / (a + b)


def matching(
    table: Contingency, thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS, ignore_label: int | None = 0
) -> dict[str, float]:
    """Precision, recall, F1 and AP = TP / (TP + FP + FN) at IoU thresholds, and their mean (mSA).

    Definitions of elf ``matching`` / ``mean_segmentation_accuracy`` (StarDist, DSB 2018). elf finds
    TPs by a dense Hungarian assignment whose cost first maximises the number of pairs above the
    threshold; that number is the maximum-cardinality matching of the (sparse) graph of pairs with
    IoU >= t, which scipy computes without an objects x objects matrix.
    """
    obj = _Objects(table, ignore_label)
    out: dict[str, float] = {}
    accuracies = []
    for t in thresholds:
        cand = obj.iou >= t
        tp = 0
        if cand.any() and min(obj.n_seg, obj.n_gt) > 0:
            graph = csr_array(
                (np.ones(int(cand.sum()), dtype=np.int8), (obj.si[cand], obj.gi[cand])),
                shape=(obj.seg_ids.size, obj.gt_ids.size),
            )
            tp = int((maximum_bipartite_matching(graph, perm_type="column") >= 0).sum())
        fp, fn = obj.n_seg - tp, obj.n_gt - tp
        precision = tp / (tp + fp) if tp > 0 else 0.0
        recall = tp / (tp + fn) if tp > 0 else 0.0
        accuracy = tp / (tp + fp + fn) if tp > 0 else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0
        out[threshold_name("precision", t)] = float(precision)
        out[threshold_name("recall", t)] = float(recall)
        out[threshold_name("f1", t)] = float(f1)
        out[threshold_name("ap", t)] = float(accuracy)
        accuracies.append(accuracy)
    out["msa"] = float(np.mean(accuracies)) if accuracies else float("nan")
    return out


def seg_score(table: Contingency, ignore_label: int | None = 0) -> float:
    """Cell Tracking Challenge SEG: mean over ground-truth objects of the Jaccard index with the
    segment that covers more than half of the object (0 when no segment does).

    No library computes SEG (the CTC ships a binary), hence this implementation.
    """
    obj = _Objects(table, ignore_label)
    if obj.n_gt == 0:
        return float("nan")
    gt_size = obj.gt_sizes[obj.gi]
    hit = 2 * obj.overlap > gt_size  # |R n S| > 0.5 |R|: at most one segment per object
    jaccard = np.zeros(obj.gt_ids.size)
    jaccard[obj.gi[hit]] = obj.iou[hit]
    return float(jaccard[obj.gt_obj].mean())


def _best_dice(values: np.ndarray, index: np.ndarray, size: int, objects: np.ndarray) -> float:
    best = np.zeros(size)
    np.maximum.at(best, index, values)
    return float(best[objects].mean()) if objects.any() else 0.0


def symmetric_best_dice(table: Contingency, ignore_label: int | None = 0) -> float:
    """CVPPP Symmetric Best Dice: min of the mean best Dice of gt->seg and seg->gt objects.

    elf's ``symmetric_best_dice_score`` needs the arrays; this is its definition on the table.
    """
    obj = _Objects(table, ignore_label)
    if obj.n_gt == 0 or obj.n_seg == 0:
        return 0.0
    gt_to_seg = _best_dice(obj.dice_pairs, obj.gi, obj.gt_ids.size, obj.gt_obj)
    seg_to_gt = _best_dice(obj.dice_pairs, obj.si, obj.seg_ids.size, obj.seg_obj)
    return min(gt_to_seg, seg_to_gt)


def count_difference(table: Contingency, ignore_label: int | None = 0) -> dict[str, float]:
    """CVPPP difference in count DiC = #segments - #gt objects (and |DiC|), background excluded."""
    obj = _Objects(table, ignore_label)
    dic = obj.n_seg - obj.n_gt
    return {
        "dic": float(dic),
        "abs_dic": float(abs(dic)),
        "n_seg_objects": float(obj.n_seg),
        "n_gt_objects": float(obj.n_gt),
    }


def instance_metrics(
    table: Contingency, ignore_label: int | None = 0, thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS
) -> dict[str, float]:
    """Every instance metric of the theses, by name (see ``INSTANCE_METRICS``)."""
    out: dict[str, float] = {}
    out.update(adapted_rand(table, ignore_label))
    out.update(rand_scores(table, ignore_label))
    out.update(voi(table, ignore_label))
    out["seg"] = seg_score(table, ignore_label)
    out["sbd"] = symmetric_best_dice(table, ignore_label)
    out.update(count_difference(table, ignore_label))
    out.update(matching(table, thresholds, ignore_label))
    return out

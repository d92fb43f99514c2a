"""Semantic (binary mask) and clustering metrics from a contingency table, and multi-annotator summaries.

* ``binary_metrics``: foreground = any label other than the background label; IoU, Dice (= F1),
  precision, recall, pixel accuracy (Zöngür Table 3.4, Zwijghuizen Tables 5.1/5.2).
* ``clustering_metrics``: unsupervised labels with arbitrary ids (Leng et al. Table 1): Rand
  index, adjusted MI, Fowlkes-Mallows, homogeneity, completeness, V-measure as scikit-learn
  defines them, plus IoU after the best one-to-one cluster <-> class assignment (Hungarian).
* ``combine_annotators``: per-annotator scores -> ``mean`` and ``best`` (BSDS has 4-8 annotators).

scikit-learn's clustering scores take label arrays; where it has a table entry point
(``mutual_info_score(contingency=...)``, ``expected_mutual_information``) we call it, the rest
are its formulas on the table, cross-checked against sklearn on the arrays in the tests.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linear_sum_assignment

from .contingency import Contingency
from .instance import badness, pair_counts

BINARY_METRICS = ("iou", "dice", "precision", "recall", "pixel_accuracy")
CLUSTERING_METRICS = (
    "rand_index",
    "adjusted_rand_index",
    "ami",
    "fmi",
    "homogeneity",
    "completeness",
    "v_measure",
    "matched_iou",
    "matched_fg_iou",
    "matched_accuracy",
    "n_clusters",
    "n_classes",
)


def binary_metrics(table: Contingency, background: int | None = 0) -> dict[str, float]:
    """Foreground-vs-background scores of two masks (any non-background id is foreground)."""
    bg = np.uint64(0 if background is None else background)
    seg_fg, gt_fg = table.seg != bg, table.gt != bg
    c = table.count
    tp = float(c[seg_fg & gt_fg].sum())
    fp = float(c[seg_fg & ~gt_fg].sum())
    fn = float(c[~seg_fg & gt_fg].sum())
    tn = float(c[~seg_fg & ~gt_fg].sum())

    def ratio(num: float, den: float) -> float:
        return num / den if den > 0 else float("nan")

    return {
        "iou": ratio(tp, tp + fp + fn),
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "pixel_accuracy": ratio(tp + tn, tp + tn + fp + fn),
    }


def _mutual_information(mat) -> float:
    from sklearn.metrics import mutual_info_score  # here: scikit-learn adds ~2 s to every evaluate job

    return float(mutual_info_score(None, None, contingency=mat))


def clustering_metrics(table: Contingency, ignore_label: int | None = 0) -> dict[str, float]:
    """Clustering scores of a labelling with arbitrary ids against classes (voxels of ``ignore_label``
    in the ground truth are dropped)."""
    t = table.without_gt(ignore_label)
    mat, gt_ids, seg_ids = t.matrix(np.int64)
    n = int(mat.sum())
    if n == 0:
        raise ValueError("no ground-truth voxels left to score")
    rows = np.asarray(mat.sum(axis=1)).ravel()  # class sizes
    cols = np.asarray(mat.sum(axis=0)).ravel()  # cluster sizes
    out: dict[str, float] = {"n_clusters": float(seg_ids.size), "n_classes": float(gt_ids.size)}

    both, same_gt, same_seg, neither = pair_counts(mat)
    total = both + same_gt + same_seg + neither
    out["rand_index"] = 1.0 if total == 0 or both + neither == total else (both + neither) / total
    if same_gt == 0 and same_seg == 0:
        out["adjusted_rand_index"] = 1.0
    else:
        tp, fn, fp, tn = both, same_gt, same_seg, neither
        out["adjusted_rand_index"] = (
            2.0 * (tn * tp - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))
        )

    # Fowlkes-Mallows (sklearn.metrics.fowlkes_mallows_score): sqrt(TP/(TP+FP)) * sqrt(TP/(TP+FN)).
    tk = both
    pk = float(cols @ cols) - n
    qk = float(rows @ rows) - n
    out["fmi"] = math.sqrt(tk / pk) * math.sqrt(tk / qk) if tk != 0 else 0.0

    # Entropies (nats) from marginals; MI and EMI with sklearn's table entry points.
    from scipy.stats import entropy  # here, as scikit-learn: instance scores do not need them

    h_true, h_pred = float(entropy(rows)), float(entropy(cols))
    mi = _mutual_information(mat) if rows.size > 1 and cols.size > 1 else 0.0
    homogeneity = mi / h_true if h_true else 1.0
    completeness = mi / h_pred if h_pred else 1.0
    out["homogeneity"], out["completeness"] = homogeneity, completeness
    hc = homogeneity + completeness
    out["v_measure"] = 0.0 if hc == 0 else 2.0 * homogeneity * completeness / hc
    out["ami"] = _adjusted_mutual_information(mat, n, mi, h_true, h_pred)

    out.update(matched_iou(mat))
    return {k: float(v) for k, v in out.items()}


def _adjusted_mutual_information(mat, n: int, mi: float, h_true: float, h_pred: float) -> float:
    """sklearn ``adjusted_mutual_info_score`` (arithmetic mean normaliser), on the table."""
    n_classes, n_clusters = mat.shape
    if n_classes == n_clusters == 1 or n_classes == n_clusters == 0:
        return 1.0
    if n_classes == 1 or n_clusters == 1:
        return 0.0
    from sklearn.metrics.cluster._expected_mutual_info_fast import expected_mutual_information

    emi = float(expected_mutual_information(mat, n))
    eps = np.finfo("float64").eps
    denominator = (h_true + h_pred) / 2.0 - emi
    denominator = min(denominator, -eps) if denominator < 0 else max(denominator, eps)
    numerator = mi - emi
    numerator = min(numerator, -eps) if numerator < 0 else max(numerator, eps)
    return numerator / denominator


def matched_iou(mat) -> dict[str, float]:
    """IoU after the one-to-one cluster <-> class assignment maximising total IoU (Hungarian).

    ``matched_iou``: mean IoU over classes (a class left without a cluster scores 0);
    ``matched_fg_iou``: with two classes, the IoU of the highest class id (the foreground of a
    binary ground truth: 1 of 0/1, or 2 of 1/2 when 0 is ignored), the binary foreground IoU of
    Zöngür Table 3.4; NaN otherwise;
    ``matched_accuracy``: fraction of voxels whose cluster is assigned to their class.
    """
    dense = np.asarray(mat.toarray(), dtype=np.float64)
    rows = dense.sum(axis=1, keepdims=True)
    cols = dense.sum(axis=0, keepdims=True)
    union = rows + cols - dense
    iou = np.divide(dense, union, out=np.zeros_like(dense), where=union > 0)
    r, c = linear_sum_assignment(iou, maximize=True)
    per_class = np.zeros(dense.shape[0])
    per_class[r] = iou[r, c]
    return {
        "matched_iou": float(per_class.mean()),
        "matched_fg_iou": float(per_class[-1]) if dense.shape[0] == 2 else float("nan"),
        "matched_accuracy": float(dense[r, c].sum() / dense.sum()),
    }


def combine_annotators(per_annotator: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """{"0": scores, "1": ..., "mean": mean over annotators, "best": best annotator per metric}.

    "best" takes, per metric, the best annotator's value (min for errors, max otherwise).
    """
    out = {str(i): dict(s) for i, s in enumerate(per_annotator)}
    if len(per_annotator) < 2:
        return out
    names = [k for k in per_annotator[0] if all(k in s for s in per_annotator)]
    mean, best = {}, {}
    for name in names:
        values = np.array([s[name] for s in per_annotator], dtype=np.float64)
        mean[name] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        key = badness(name, values)
        if key is not None and np.isfinite(values).any():
            best[name] = float(values[np.nanargmin(key)])
        else:  # no annotator is better for a count: the "best" aggregate keeps their mean
            best[name] = mean[name] if key is None else float("nan")
    out["mean"], out["best"] = mean, best
    return out

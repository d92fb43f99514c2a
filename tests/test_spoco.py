"""SPOCO (thesis ch. 3): each loss term on hand-made embeddings, object sampling, the EMA update,
the four clusterings on synthetic embeddings, blockwise vs whole-volume affinity partitioning,
training with exact resume, the whole chain through the workflow, and bad inputs."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, write_image
from resume_check import assert_same_weights, kill_and_resume

from zarrseg import embeddings as E
from zarrseg import ome
from zarrseg.errors import ConfigError, InputError
from zarrseg.methods.spoco import losses as L
from zarrseg.methods.spoco.model import ema_update, momentum_copy
from zarrseg.methods.spoco.sampling import select_objects
from zarrseg.params import load_params


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def points(*xy) -> torch.Tensor:
    """(D=2, N) embeddings from (x, y) pairs."""
    return torch.tensor(xy, dtype=torch.float32).T


# ---- loss terms on hand-made embeddings ----------------------------------------------------------
def test_separated_clusters_give_zero_pull_and_push():
    emb = points((0, 0), (0, 0.3), (5, 0), (5, 0.2))  # within dv of their means, means 5 > 2 dd apart
    labels = torch.tensor([1, 1, 2, 2])
    means = L.cluster_means(emb, labels, 2)
    assert torch.allclose(means, torch.tensor([[0, 0.15], [5, 0.1]]))
    assert float(L.pull_term(emb, labels, means, 0.5)) == 0.0
    assert float(L.push_term(means, 2.0)) == 0.0


def test_pull_push_and_regulariser_known_values():
    emb = points((0, 0), (2, 0), (3, 0))  # object 1: two pixels 1 from their mean; object 2: one pixel
    labels = torch.tensor([1, 1, 2])
    means = L.cluster_means(emb, labels, 2)
    # pull: object 1: [1 - 0.5]^2 = 0.25, object 2: 0 -> mean 0.125
    assert float(L.pull_term(emb, labels, means, 0.5)) == pytest.approx(0.125)
    # push: means (1, 0) and (3, 0) 2 apart: [2 * 2 - 2]^2 = 4
    assert float(L.push_term(means, 2.0)) == pytest.approx(4.0)
    assert float(L.regulariser(means)) == pytest.approx(2.0)  # (1 + 3) / 2
    assert float(L.push_term(means[:1], 2.0)) == 0.0  # one object: nothing to push


@pytest.mark.parametrize("seed", range(3))
def test_means_and_pull_match_a_loop_over_objects(seed):
    """Per-object sums as matrix products against the plain loop over objects, values and gradients."""
    torch.manual_seed(seed)
    n_objects = 1 + 3 * seed
    labels = torch.randint(0, n_objects + 1, (500,))
    labels[: n_objects + 1] = torch.arange(n_objects + 1)  # every object present
    emb = torch.randn(6, 500, dtype=torch.float64)
    e1, e2 = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
    means_ref = torch.stack([e1[:, labels == k].mean(1) for k in range(1, n_objects + 1)])
    pull_ref = torch.stack(
        [((means_ref[k - 1][:, None] - e1[:, labels == k]).norm(dim=0) - 0.5).clamp_min(0).pow(2).mean()
         for k in range(1, n_objects + 1)]
    ).mean()
    means = L.cluster_means(e2, labels, n_objects)
    pull = L.pull_term(e2, labels, means, 0.5)
    assert torch.allclose(means, means_ref)
    assert float(pull.detach()) == pytest.approx(float(pull_ref.detach()), rel=1e-10)
    (pull_ref + means_ref.sum()).backward()
    (pull + means.sum()).backward()
    assert torch.allclose(e2.grad, e1.grad)


def test_kernel_is_t_at_delta_v():
    for t in (0.5, 0.9):
        sigma2 = L.kernel_variance(0.5, t)
        masks = L.soft_masks(points((0, 0), (0.5, 0), (0, 0.5)), torch.zeros(1, 2), sigma2)
        assert torch.allclose(masks, torch.tensor([[1.0, t, t]]))


def test_dice_instance_unlabelled_push_and_consistency_known_values():
    assert torch.allclose(L.dice_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])), torch.tensor([1 / 3]))
    # instance: object 1 = two pixels dv apart, object 2 far away; whichever pixel is the anchor,
    # S_1 = (1, t, 0), I_1 = (1, 1, 0): Dice loss 1 - 2 (1 + t) / (1 + t^2 + 2)
    t = 0.9
    emb = points((0, 0), (0.5, 0), (100, 0))
    labels = torch.tensor([1, 1, 2])
    idx = L.random_pixels(torch.ones(3, dtype=torch.bool), labels, 2, gen())
    assert labels[idx].tolist() == [1, 2]
    value = L.instance_term(emb, labels, 2, L.kernel_variance(0.5, t), idx)
    assert float(value) == pytest.approx((1 - 2 * (1 + t) / (3 + t * t)) / 2, abs=1e-6)
    # unlabelled push: mean (0, 0), unlabelled pixel 1 away: [dd - 1]^2 = 1
    means = torch.zeros(1, 2)
    assert float(L.unlabelled_push(points((1, 0), (0, 0)), torch.tensor([True, False]), means, 2.0)) == pytest.approx(1.0)
    # consistency: f puts both pixels together, g apart; either anchor: Dice((1, 1), one-hot) = 1/3
    f, g = points((0, 0), (0, 0)), points((0, 0), (10, 0))
    region = torch.tensor([True, True])
    value = L.consistency_term(f, g, region, L.kernel_variance(0.5, t), 0.5, gen())
    assert float(value) == pytest.approx(1 / 3, abs=1e-4)
    assert float(L.consistency_term(f, f, region, L.kernel_variance(0.5, t), 0.5, gen())) == pytest.approx(0.0)


def test_consistency_anchors_cover_the_region():
    f = torch.cat([torch.zeros(2, 50), torch.full((2, 50), 5.0)], 1)  # two tight clusters
    region = torch.ones(100, dtype=torch.bool)
    idx = L.consistency_anchors(f, f, region, 0.5, gen(), max_anchors=20)
    # one anchor per cluster covers everything: sampling stops after two
    assert sorted(int(i) // 50 for i in idx) == [0, 1]


def reference_anchors(ef, eg, region, delta_v, generator, max_anchors, uncovered) -> list[int]:
    """The sampling loop as the thesis states it: one anchor at a time, uniform among the uncovered
    pixels (the first uncovered one of the same random order), covering what lies within dv of it."""
    cand = torch.nonzero(region).squeeze(1)
    total = len(cand)
    cand = cand[torch.randperm(total, generator=generator)]
    todo, picked, left = region.clone(), [], total
    for _ in range(max_anchors):
        if left == 0 or left < uncovered * total:
            break
        i = next(int(c) for c in cand if todo[c])
        picked.append(i)
        todo &= ((ef - ef[:, i : i + 1]) ** 2).sum(0) >= delta_v**2
        todo &= ((eg - eg[:, i : i + 1]) ** 2).sum(0) >= delta_v**2
        todo[i] = False
        left = int(todo.sum())
    return picked


@pytest.mark.parametrize("seed", range(6))
def test_block_anchor_sampling_matches_the_one_at_a_time_loop(seed):
    torch.manual_seed(seed)
    n = 3000
    ef = torch.randn(3, n) * (1.0 + seed % 3)
    eg = ef + 0.3 * torch.randn(3, n)
    region = torch.rand(n) < (0.3 if seed % 2 else 1.0)
    max_anchors, uncovered = (20, 0.05) if seed < 3 else (200, 0.01)
    expected = reference_anchors(ef, eg, region, 0.8, gen(seed), max_anchors, uncovered)
    got = L.consistency_anchors(ef, eg, region, 0.8, gen(seed), max_anchors, uncovered)
    assert got.tolist() == expected
    assert 1 <= len(expected) <= max_anchors


@pytest.mark.parametrize("seed", range(4))
def test_soft_dice_matches_masks_and_dice_with_gradients(seed):
    """The one-op soft-mask Dice (instance and consistency terms) against the plain tensor
    expression, values and gradients, on random embeddings with duplicate and far pixels."""
    from zarrseg.methods.spoco.soft_dice import soft_dice

    torch.manual_seed(seed)
    d, n, k = 5, 400, 7
    emb = torch.randn(d, n, dtype=torch.float64) * (0.3 + seed)
    emb[:, 10] = emb[:, 11]  # two identical pixels: a distance of exactly 0 off the diagonal
    idx = torch.randperm(n)[:k]
    idx[-1] = 11
    target = torch.rand(k, n, dtype=torch.float64) if seed % 2 else (torch.rand(k, n) < 0.2).double()
    sigma2 = L.kernel_variance(0.5, 0.9)
    e1, e2 = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
    expected = L.dice_loss(L.soft_masks(e1, e1[:, idx].T, sigma2), target).mean()
    got = soft_dice(e2, idx, target, sigma2)
    (3.0 * expected).backward()
    (3.0 * got).backward()
    assert float(got.detach()) == pytest.approx(float(expected.detach()), rel=1e-10, abs=1e-12)
    assert torch.allclose(e2.grad, e1.grad, rtol=1e-8, atol=1e-12)
    small = emb[:, :30].clone().requires_grad_(True)  # finite differences: a few pixels suffice
    assert torch.autograd.gradcheck(lambda e: soft_dice(e, idx % 30, target[:, :30], sigma2), (small,), fast_mode=True)


def test_instance_and_consistency_terms_match_the_plain_expressions():
    torch.manual_seed(0)
    emb, emb_g = torch.randn(4, 300), torch.randn(4, 300)
    labels = torch.randint(0, 4, (300,))
    sigma2 = L.kernel_variance(0.5, 0.9)
    idx = L.random_pixels(torch.ones(300, dtype=torch.bool), labels, 3, gen())
    truth = (labels[None, :] == torch.arange(1, 4)[:, None]).float()
    e1, e2 = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
    expected = L.dice_loss(L.soft_masks(e1, e1[:, idx].T, sigma2), truth).mean()
    got = L.instance_term(e2, labels, 3, sigma2, idx)
    expected.backward()
    got.backward()
    assert float(got.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert torch.allclose(e2.grad, e1.grad, rtol=1e-4, atol=1e-6)
    region = labels == 0
    anchors = L.consistency_anchors(emb, emb_g, region, 0.5, gen(1))
    e1, e2 = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
    sg = L.soft_masks(emb_g, emb_g[:, anchors].T, sigma2)
    expected = L.dice_loss(L.soft_masks(e1, e1[:, anchors].T, sigma2), sg).mean()
    got = L.consistency_term(e2, emb_g, region, sigma2, 0.5, gen(1))
    expected.backward()
    got.backward()
    assert float(got.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert torch.allclose(e2.grad, e1.grad, rtol=1e-4, atol=1e-6)


def test_every_weight_changes_the_loss():
    """The authors' create_loss passes consistency_term_weight to a class reading consistency_weight,
    so delta is silently ignored there; here every weight must act on the loss."""
    torch.manual_seed(0)
    emb_f, emb_g = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    labels[:, :3, :3], labels[:, 5:, 5:] = 3, 7  # two labelled objects, the rest unlabelled
    base = L.sso_loss(emb_f, emb_g, labels, L.Weights(), gen())
    for term in L.TERMS:
        assert float(base[term]) > 0, term
        for value in (0.0, 2.0):
            w = L.Weights(**{term: value})
            out = L.sso_loss(emb_f, emb_g, labels, w, gen())
            expected = base["loss"] + (value - getattr(L.Weights(), term)) * base[term]
            assert float(out["loss"]) == pytest.approx(float(expected), rel=1e-5), (term, value)


def test_loss_has_gradients_and_full_supervision_uses_the_whole_image():
    emb = torch.randn(1, 4, 6, 6, requires_grad=True)
    labels = torch.ones(1, 6, 6, dtype=torch.long)
    labels[0, :, 3:] = 2  # everything labelled: the consistency region is the whole image
    out = L.sso_loss(emb, torch.randn(1, 4, 6, 6), labels, L.Weights(), gen())
    assert out["unlabelled_push"].item() == 0.0 and out["consistency"].detach().item() > 0
    out["loss"].backward()
    assert torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0


def test_a_batch_without_labelled_objects_steps_with_zero_gradient():
    """The discriminative baseline (instance, unlabelled push and consistency off) on sparse labels
    meets batches whose patches hold no labelled object: the loss is 0 and still backs up to f."""
    emb = torch.randn(2, 4, 6, 6, requires_grad=True)
    weights = L.Weights(instance=0.0, unlabelled_push=0.0, consistency=0.0)
    out = L.sso_loss(emb, None, torch.zeros(2, 6, 6, dtype=torch.long), weights, gen())
    assert out["loss"].item() == 0.0 and out["loss"].requires_grad
    out["loss"].backward()
    assert emb.grad is not None and emb.grad.abs().sum() == 0


# ---- object sampling ------------------------------------------------------------------------------
def test_sparse_sampling_is_seeded_and_never_labels_background():
    ids = [np.arange(0, 41), np.arange(0, 11)]  # 0 (background) is among the ids given
    a = select_objects(ids, "sparse", 0.1, seed=3)
    b = select_objects(ids, "sparse", 0.1, seed=3)
    c = select_objects(ids, "sparse", 0.1, seed=4)
    assert [len(o) for o in a.objects] == [4, 1] and not any(a.background)
    assert all(np.array_equal(x, y) for x, y in zip(a.objects, b.objects, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a.objects, c.objects, strict=True))
    assert all(0 not in o for o in a.objects)
    full = select_objects(ids, "full")
    assert all(full.background) and [len(o) for o in full.objects] == [40, 10]


def test_annotation_budget_sparse_vs_dense():
    ids = [np.arange(1, 31), np.arange(1, 17), np.arange(1, 9), np.arange(1, 21)]
    sparse = select_objects(ids, "sparse", budget=16, seed=0)
    dense = select_objects(ids, "full", budget=16, seed=0)
    assert sparse.n_objects == 16 and sum(len(o) > 0 for o in sparse.objects) >= 3 and not any(sparse.background)
    assert dense.n_objects == 16 and dense.background == [False, True, False, False]


def test_ema_update():
    f = torch.nn.Linear(2, 2)
    g = momentum_copy(f)
    with torch.no_grad():
        for q in f.parameters():
            q.add_(1.0)
    before = [q.clone() for q in g.parameters()]
    ema_update(g, f, 0.9)
    for qg, q0, qf in zip(g.parameters(), before, f.parameters(), strict=True):
        assert torch.allclose(qg, 0.9 * q0 + 0.1 * qf)
        assert not qg.requires_grad


# ---- clusterings on synthetic embeddings ---------------------------------------------------------
def synthetic_embeddings(labels: np.ndarray, dim: int = 6, noise: float = 0.02, seed: int = 0) -> np.ndarray:
    """(dim, *shape) embeddings: each label its own random centre (>= 4 apart), plus a little noise."""
    rng = np.random.default_rng(seed)
    ids = np.unique(labels)
    centres = rng.normal(0, 3, (len(ids), dim))
    centres *= 4.0 / min(np.linalg.norm(a - b) for i, a in enumerate(centres) for b in centres[i + 1 :])
    index = np.searchsorted(ids, labels)
    return np.moveaxis(centres[index], -1, 0).astype(np.float32) + rng.normal(0, noise, (dim, *labels.shape)).astype(np.float32)


def write_embeddings(path, emb: np.ndarray, model_ndim: int | None = None, momentum: bool = False) -> str:
    """An OME-Zarr as 'zarrseg predict' writes a SPOCO model's output."""
    dim = emb.shape[0] // (2 if momentum else 1)
    axes = "c" + "zyx"[-(emb.ndim - 1) :]
    cfg = {"ndim": model_ndim or emb.ndim - 1, "embedding_dim": dim, "momentum_copy": momentum, "delta_v": 0.5, "delta_d": 2.0}
    arr = ome.create_image(path, shape=emb.shape, dtype="float32", axes=axes, scale=[1.0] * emb.ndim,
                           chunks=[1] + [16] * (emb.ndim - 1), attrs={"target": "embeddings", "model_config": cfg})
    arr[...] = emb
    return str(path)


def arand(seg: np.ndarray, gt: np.ndarray) -> float:
    from elf.evaluation import rand_index

    return float(rand_index(seg.astype(np.uint64), gt.astype(np.uint64))[0])


@pytest.fixture
def blobs() -> np.ndarray:
    labels = np.zeros((40, 40), np.uint32)  # background 0 and five objects
    labels[3:15, 3:15], labels[3:12, 20:36], labels[20:37, 4:14], labels[22:30, 20:30], labels[31:38, 24:38] = 1, 2, 3, 4, 5
    return labels


@pytest.mark.parametrize("method", ["hdbscan", "mean_shift", "consistency", "affinity"])
def test_each_clustering_recovers_known_instances(tmp_path, blobs, method):
    from zarrseg.ssl.cluster import ClusterParams, cluster

    f = synthetic_embeddings(blobs)
    path = write_embeddings(tmp_path / "emb.ome.zarr", np.concatenate([f, f + 0.01]), momentum=True)
    params = load_params(ClusterParams, {"method": method, "min_cluster_size": 20, "background": "largest"})
    summary = cluster(path, tmp_path / "labels.ome.zarr", params)
    seg = np.asarray(ome.open_image(tmp_path / "labels.ome.zarr").data[...])
    assert summary["method"] == method and summary["clustering_s"] >= 0
    assert arand(seg, blobs) < 0.01 and (seg == 0).sum() == (blobs == 0).sum()  # background -> 0


@pytest.mark.parametrize("method", ["hdbscan", "mean_shift", "consistency", "affinity"])
def test_clustering_inside_a_foreground_mask_separates_what_the_background_would_merge(tmp_path, blobs, method):
    """Background embedded like object 1: without a mask the two merge; inside the ground truth's
    foreground (the thesis' GT FG evaluation) every object is recovered and the rest is 0."""
    from zarrseg.ssl.cluster import ClusterParams, cluster

    f = synthetic_embeddings(blobs)
    f[:, blobs == 0] = f[:, blobs == 1].mean(axis=1, keepdims=True)
    path = write_embeddings(tmp_path / "emb.ome.zarr", np.concatenate([f, f + 0.01]), momentum=True)
    gt = ome.create_image(tmp_path / "gt.ome.zarr", shape=blobs.shape, dtype="uint32", axes="yx", scale=[1.0, 1.0],
                          chunks=[16, 16], is_label=True)
    gt[...] = blobs
    params = {"method": method, "min_cluster_size": 20}
    out = {}
    for fg in ("none", "ground_truth"):
        where = tmp_path / f"labels_{fg}.ome.zarr"
        cluster(path, where, load_params(ClusterParams, {**params, "foreground": fg}),
                foreground=tmp_path / "gt.ome.zarr" if fg == "ground_truth" else None)
        out[fg] = np.asarray(ome.open_image(where).data[...])
    assert len(np.unique(out["none"][(blobs == 0) | (blobs == 1)])) == 1  # merged without the mask
    assert (out["ground_truth"][blobs == 0] == 0).all() and arand(out["ground_truth"], blobs) < 0.01
    with pytest.raises(ConfigError, match="needs the foreground image"):
        cluster(path, tmp_path / "x.ome.zarr", load_params(ClusterParams, {**params, "foreground": "ground_truth"}))
    small = ome.create_image(tmp_path / "small.ome.zarr", shape=(20, 40), dtype="uint32", axes="yx",
                             scale=[1.0, 1.0], chunks=[16, 16], is_label=True)
    small[...] = 1
    with pytest.raises(InputError, match="differs from the embeddings"):
        cluster(path, tmp_path / "y.ome.zarr", load_params(ClusterParams, params), foreground=tmp_path / "small.ome.zarr")
    assert not (tmp_path / "x.ome.zarr").exists() and not (tmp_path / "y.ome.zarr").exists()


def test_consistency_drops_clusters_that_g_does_not_reproduce(blobs):
    f = synthetic_embeddings(blobs)
    g = f.copy()
    g[:, blobs == 2] = synthetic_embeddings(np.arange(40 * 40).reshape(40, 40), seed=1)[:, blobs == 2]  # scattered in g
    seg = E.consistency(f, g, 0.5, 0.6, 10, seed=0)
    assert not seg[blobs == 2].any() and all(seg[blobs == k].all() for k in (1, 3, 4, 5))
    vol = np.stack([blobs, blobs])  # a volume goes through elf's 2D implementation unchanged
    assert arand(E.consistency(synthetic_embeddings(vol), synthetic_embeddings(vol), 0.5), vol) < 0.01


def test_consistency_reports_what_it_dropped_and_warns_when_most_is_gone(tmp_path, blobs, caplog):
    """A label image that is mostly 0 because g disagrees with f says so (summary + one warning)."""
    from zarrseg.ssl.cluster import ClusterParams, cluster

    f = synthetic_embeddings(blobs)
    params = load_params(ClusterParams, {"method": "consistency"})
    agree = write_embeddings(tmp_path / "agree.ome.zarr", np.concatenate([f, f + 0.01]), momentum=True)
    with caplog.at_level(logging.WARNING, logger="zarrseg"):
        summary = cluster(agree, tmp_path / "kept.ome.zarr", params)
    assert summary["consistency_dropped"] == 0.0 and not caplog.records
    g = synthetic_embeddings(np.arange(blobs.size).reshape(blobs.shape), seed=1)  # every pixel on its own in g
    scattered = write_embeddings(tmp_path / "scattered.ome.zarr", np.concatenate([f, g]), momentum=True)
    with caplog.at_level(logging.WARNING, logger="zarrseg"):
        summary = cluster(scattered, tmp_path / "dropped.ome.zarr", params)
    assert summary["consistency_dropped"] == 1.0 and summary["n_segments"] == 0
    assert [r.levelno for r in caplog.records] == [logging.WARNING] and "dropped 100 %" in caplog.text
    attrs = ome.open_image(tmp_path / "dropped.ome.zarr").attrs["zarrseg"]["summary"]
    assert attrs["consistency_dropped"] == 1.0


def test_affinities_follow_eq_3_10():
    emb = np.zeros((2, 1, 4), np.float32)
    emb[0, 0] = [0, 1, 5, 5]  # neighbour distances 1, 4, 0
    w = E.affinities(emb, 2.0, [[0, -1]])[0, 0, 1:]
    assert np.allclose(w, [1 - (3 / 4) ** 2, 1.0, 0.0])
    assert np.allclose(E.boundary_evidence(emb, 2.0)[0], [1 - (3 / 4) ** 2, 1.0, 1.0, 0.0])
    assert E.offsets(2)[:2] == [[-1, 0], [0, -1]] and [-27, 0] in E.offsets(2)


def test_blockwise_affinity_partitioning_matches_whole_volume(tmp_path):
    """Embeddings -> boundary evidence -> supervoxels -> mutex watershed, by the blockwise engine
    (8 blocks) and by elf on the whole volume: ARand between them <= 0.02."""
    from conftest import voronoi_cells

    from zarrseg.segment import SegmentParams, segment
    from zarrseg.segment.reference import segment_whole

    gt = voronoi_cells(np.random.default_rng(2), (32, 64, 64), 30)
    emb = synthetic_embeddings(gt, noise=0.05)
    path = write_embeddings(tmp_path / "emb.ome.zarr", emb)
    params = load_params(
        SegmentParams,
        {"partitioner": "mutex_watershed", "block_shape": [16, 32, 32], "halo": [8, 16, 16], "min_size": 20,
         "post_min_size": 20, "dask": {"scheduler": "synchronous"}},
    )
    summary = segment(path, tmp_path / "seg.ome.zarr", params)
    blockwise = np.asarray(ome.open_image(tmp_path / "seg.ome.zarr").data[...])
    whole = segment_whole(E.boundary_evidence(emb, 2.0), params)
    assert summary["n_blocks"] == 8
    assert arand(blockwise, whole) <= 0.02
    assert arand(blockwise, gt) < 0.1 and arand(whole, gt) < 0.1


# ---- training: exact resume, bad input ------------------------------------------------------------
LOOP = {"steps": 6, "checkpoint_every": 2, "eval_every": 3, "threads": 1, "device": "cpu", "tensorboard": False}


@pytest.fixture
def nuclei(tmp_path, blobs):
    rng = np.random.default_rng(1)
    image = (40 + 120 * (blobs > 0) + rng.normal(0, 10, blobs.shape)).astype(np.float32)
    return write_image(tmp_path / "img.ome.zarr", image), write_image(tmp_path / "lab.ome.zarr", blobs, is_label=True)


def spoco_params(image: str, labels: str, **extra) -> dict:
    return {
        "train": [{"image": image, "labels": labels}],
        "val": [{"image": image, "labels": labels}],
        "model": {"ndim": 2, "f_maps": 4, "depth": 2},
        "embedding_dim": 4,
        "patch_shape": [32, 32],
        "batch_size": 2,
        "num_workers": 0,
        "val_patches": 2,
        "object_fraction": 0.4,
        "momentum": 0.9,
        "loop": LOOP,
        **extra,
    }


def test_spoco_resumes_exactly_after_sigkill(tmp_path, nuclei):
    full, resumed = kill_and_resume("spoco", spoco_params(*nuclei), tmp_path, kill_after=3)
    assert_same_weights(full, resumed)  # f, g (the EMA) and the exported pair
    assert {"last.f", "last.g"} <= set(full) and any(k.startswith("g.") for k in full["best"])


def test_two_views_share_geometry_and_draw_their_own_noise(nuclei, blobs):
    """Both views and the ids come from one crop / flip / rot90 / elastic draw; each view has its own
    intensity noise. Full supervision: the background is one more object; sparse: unlabelled = 0."""
    from zarrseg.methods.spoco.params import SpocoParams
    from zarrseg.methods.spoco.sampling import TwoViewPatches, selection_for
    from zarrseg.methods.unet.data import open_volumes

    augment = {"elastic": 1.0, "gaussian_noise": 1.0, "noise_std": 0.3, "jitter": 0.0}
    for supervision, fraction in (("full", 1.0), ("sparse", 0.4)):
        p = load_params(SpocoParams, spoco_params(*nuclei, supervision=supervision, object_fraction=fraction,
                                                  augment=augment))
        vols = open_volumes(p.train, p, "spoco.train")
        sel = selection_for(vols, p)
        ds = TwoViewPatches(vols, p, sel, 4)
        for i in range(4):
            x_f, x_g, ids = ds[i]
            assert x_f.shape == x_g.shape == (1, 32, 32) and ids.shape == (32, 32)
            assert not torch.equal(x_f, x_g)  # own noise
            assert float((x_f - x_g).abs().mean()) < 0.5  # but the same picture
            labelled = set(ids.unique().tolist()) - {0}
            if supervision == "full":
                background = int(blobs.max()) + 1
                assert background in labelled
                fg, bg = ids != background, ids == background
                for view in (x_f[0], x_g[0]):  # objects are bright in both views, where the ids say
                    assert float(view[fg & (ids > 0)].mean()) > float(view[bg].mean()) + 1.0
            else:
                assert labelled <= set(sel.objects[0].tolist()) and int(blobs.max()) + 1 not in labelled
                assert len(sel.objects[0]) == 2 and (ids == 0).any()
        b = TwoViewPatches(vols, p, sel, 4)[3]
        assert all(torch.equal(u, v) for u, v in zip(ds[3], b, strict=True))  # seeded stream


def test_registry_example_trains(tmp_path):
    """The registry's example parameters (benchmarks/gpu_check.py trains every method with them) are
    valid and train: two steps on a synthetic 2D image, on the CPU."""
    from conftest import voronoi_cells
    from skimage.segmentation import find_boundaries

    from zarrseg.learn.loop import train
    from zarrseg.learn.registry import get_method
    from zarrseg.params import deep_update, from_dict

    spec = get_method("spoco")
    labels = voronoi_cells(np.random.default_rng(0), (128, 128), 12)
    image = (find_boundaries(labels) * 150 + 60).astype(np.uint8)
    data = {"image2d": write_image(tmp_path / "i.ome.zarr", image),
            "labels2d": write_image(tmp_path / "l.ome.zarr", labels, is_label=True)}
    loop = {**LOOP, "steps": 2, "eval_every": 2, "checkpoint_every": 2}
    values = deep_update(spec.example(data), {"num_workers": 0, "batch_size": 1, "loop": loop})
    summary = train(spec, from_dict(spec.params, values, where="spoco"), tmp_path / "model")
    assert summary["steps"] == 2 and (tmp_path / "model" / "best.pt").exists()


def test_bad_input_one_line_and_nothing_written(tmp_path, nuclei, capsys):
    from zarrseg.cli import main

    image, labels = nuclei
    empty = write_image(tmp_path / "empty.ome.zarr", np.zeros((40, 40), np.uint32), is_label=True)
    cases = [
        (spoco_params(image, empty), f"{empty}: spoco.train: the label image has no objects"),
        (spoco_params(image, labels, object_fraction=0.0), "object_fraction must be in (0, 1]"),
        (spoco_params(image, labels, object_fraction=1.5), "object_fraction must be in (0, 1]"),
        (spoco_params(image, labels, embedding_dim=1), "embedding_dim must be >= 2"),
    ]
    for i, (params, message) in enumerate(cases):
        out = tmp_path / f"model{i}"
        assert main(["train", "--method", "spoco", "-o", str(out), "--params", json.dumps(params)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
        assert not out.exists()
    emb = write_embeddings(tmp_path / "emb.ome.zarr", np.zeros((2, 20, 20), np.float32))
    out = tmp_path / "labels.ome.zarr"
    assert main(["cluster", emb, "-o", str(out), "--set", "method=hdbscan", "--set", "max_voxels=100"]) == 2
    err = capsys.readouterr().err.strip()
    assert "whole-image method" in err and "zarrseg segment" in err and len(err.splitlines()) == 1
    assert not out.exists() and not ome.partial_path(out).exists()


# ---- the whole chain through the workflow ---------------------------------------------------------
def test_spoco_runs_train_predict_cluster_evaluate_through_the_workflow(tmp_path, blobs):
    """grid.model: spoco -> train, predict (embeddings + PCA preview), cluster (the registry's
    post-processing), evaluate with clustering_s; no rule names the method."""
    import os

    import pandas as pd
    import tifffile
    import yaml

    work = tmp_path / "wd"
    (work / "config" / "experiments").mkdir(parents=True)
    rng = np.random.default_rng(0)
    tifffile.imwrite(work / "a.tif", (40 + 150 * (blobs > 0) + rng.normal(0, 10, blobs.shape)).clip(0, 255).astype(np.uint8))
    tifffile.imwrite(work / "a_labels.tif", blobs.astype(np.uint16))
    (work / "samples.tsv").write_text("sample\timage\tground_truth\na\ta.tif\ta_labels.tif\n")
    experiment = {"name": "spoco_tiny", "grid": {"cluster.foreground": ["none", "ground_truth"]},
                  "fixed": {"grid.model": "spoco", "cluster.method": "affinity", "cluster.background": "largest",
                            "grid.row": "SPOCO (tiny)"}}  # a row label with a space and parentheses reaches the table
    (work / "config" / "experiments" / "spoco_tiny.yaml").write_text(yaml.safe_dump(experiment))
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    tiny = spoco_params("", "")
    for key in ("train", "val"):
        tiny.pop(key)
    config.update(samples={"sheet": "samples.tsv"}, experiment="spoco_tiny", spoco=tiny,
                  predict={"device": "cpu", "num_workers": 0}, table={"metrics": ["sbd", "abs_dic", "clustering_s"]})
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"),
           "--directory", str(work), "--cores", "2", "--max-threads", "1",  # start-up bound jobs: two at a time
           "--configfile", str(work / "config" / "config.yaml")]
    env = {**os.environ, "ZARRSEG_NO_PROGRESS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    run = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    models = list((work / "results" / "spoco_tiny" / "models" / "spoco").glob("*/best.pt"))
    assert len(models) == 1
    previews = list((work / "results" / "spoco_tiny" / "a" / "predict").glob("*/boundaries.ome.zarr/embeddings_pca.png"))
    assert len(previews) == 1
    table = pd.read_parquet(work / "results" / "spoco_tiny" / "metrics.parquet")
    seconds = table[table["metric"] == "clustering_s"]["value"]
    assert len(seconds) == 2 and (seconds > 0).all()  # one model, clustered with and without the mask
    masked = list((work / "results" / "spoco_tiny" / "a").glob("foreground-groundtruth/labels.ome.zarr"))
    assert len(masked) == 1  # the ground truth's foreground: nothing clustered outside it
    assert not np.asarray(ome.open_image(masked[0]).data[...])[blobs == 0].any()
    assert {"sbd", "abs_dic", "arand", "voi_split", "ap@0.50", "msa"} <= set(table["metric"])
    assert "t [s]" in (work / "results" / "spoco_tiny" / "summary.md").read_text()
    assert set(table["method"]) == {"SPOCO (tiny)"}


def test_small_segments_are_absorbed_and_zeros_stay(blobs):
    f = synthetic_embeddings(blobs)
    labels = blobs.astype(np.uint64) + 1  # background 1, objects 2..6
    labels[5, 5] = 99  # a one-pixel fragment inside object 1 (label 2)
    labels[30:33, 30:33] = 0  # unassigned pixels (noise) in object 5
    out = E.absorb_small(labels, f, 2.0, min_size=4)
    assert out[5, 5] == 2 and (out[30:33, 30:33] == 0).all() and len(np.unique(out)) == 7

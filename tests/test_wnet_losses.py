"""W-Net loss terms (Leng et al. Eq. 1-8) on hand-made inputs with known values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zarrseg.errors import InputError
from zarrseg.methods.wnet import losses as L
from zarrseg.ssl.superpixels import SuperpixelParams, superpixel_graph, superpixels


def one_hot(labels: np.ndarray, k: int) -> torch.Tensor:
    """(K, *shape) one-hot soft segmentation of integer labels."""
    return torch.from_numpy(np.stack([(labels == c) for c in range(k)]).astype(np.float32))


def dense_affinity(x: np.ndarray, radius: int, s_col: float, s_sp: float) -> np.ndarray:
    """The N-cut affinity matrix of every pixel pair, written out (only for tiny images)."""
    c, h, w = x.shape
    pos = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), -1).reshape(-1, 2)
    col = x.reshape(c, -1).T
    d_sp = ((pos[:, None] - pos[None]) ** 2).sum(-1)
    d_col = ((col[:, None] - col[None]) ** 2).sum(-1)
    wt = np.exp(-d_col / s_col**2) * np.exp(-d_sp / s_sp**2)
    wt[(d_sp == 0) | (d_sp > radius**2)] = 0
    return wt


def test_soft_ncut_of_one_hot_partitions_has_the_closed_form(rng):
    # two pixels: both in one class -> assoc = degree for that class, the others are empty
    x = torch.zeros(1, 1, 2)
    weights = L.NCutWeights(x, radius=1)
    k = 4
    same = one_hot(np.array([[0, 0]]), k)
    apart = one_hot(np.array([[0, 1]]), k)
    assert float(L.soft_ncut(same, weights)) == pytest.approx(1 - 1 / k)
    assert float(L.soft_ncut(apart, weights)) == pytest.approx(1.0)  # every pair is cut
    # any one-hot partition of a small image: 1 - mean_k assoc(A_k, A_k) / assoc(A_k, V), by brute force
    x = rng.random((3, 6, 5)).astype(np.float32)
    labels = rng.integers(0, 3, (6, 5))
    w = dense_affinity(x, radius=2, s_col=0.5, s_sp=3.0)
    flat = labels.ravel()
    expected = 1 - np.mean(
        [w[np.ix_(flat == c, flat == c)].sum() / w[flat == c].sum() if (flat == c).any() else 0 for c in range(3)]
    )
    weights = L.NCutWeights(torch.from_numpy(x), radius=2, sigma_colour=0.5, sigma_space=3.0)
    assert float(L.soft_ncut(one_hot(labels, 3), weights)) == pytest.approx(expected, rel=1e-5)
    # and a soft f: sum_ij w_ij f_i f_j / sum_ij w_ij f_i per class
    f = torch.softmax(torch.from_numpy(rng.normal(size=(3, 6, 5)).astype(np.float32)), 0)
    fk = f.numpy().reshape(3, -1)
    expected = 1 - np.mean([fk[c] @ w @ fk[c] / (fk[c] @ w.sum(1)) for c in range(3)])
    assert float(L.soft_ncut(f, weights)) == pytest.approx(expected, rel=1e-5)


def test_similarity_is_the_cross_entropy_against_the_argmax():
    p = np.array([[0.7, 0.2], [0.2, 0.5], [0.1, 0.3]], dtype=np.float32)[:, :, None]  # (K=3, 2, 1)
    z = torch.log(torch.from_numpy(p))
    assert float(L.similarity(z)) == pytest.approx(-(math.log(0.7) + math.log(0.5)) / 2, rel=1e-6)
    # sparse form on superpixel means (Eq. 6)
    f_hat = torch.tensor([[0.6, 0.4], [0.1, 0.9], [0.5, 0.5]])
    assert float(L.sparse_similarity(f_hat)) == pytest.approx(-(math.log(0.6) + math.log(0.9) + math.log(0.5)) / 3)


def test_continuity_is_zero_for_constant_and_known_for_stripes():
    f = torch.full((3, 4, 5), 1 / 3)
    assert float(L.continuity(f)) == 0.0
    stripes = one_hot(np.array([[0, 1], [0, 1]]), 2)  # columns differ, rows do not
    # Eq. 4: 1/(2K) sum_p (vertical mean |diff| + horizontal mean |diff|) = 1/4 * (0 + 2)
    assert float(L.continuity(stripes)) == pytest.approx(0.5)


def test_superpixel_means_of_a_piecewise_constant_f_and_zero_sparse_continuity(rng):
    image = np.zeros((1, 8, 8), np.float32)
    labels = np.repeat(np.repeat(np.arange(4).reshape(2, 2), 4, 0), 4, 1)  # four 4x4 superpixels
    values = rng.dirichlet(np.ones(3), size=4).astype(np.float32)  # one f per superpixel
    f = torch.from_numpy(values[labels].transpose(2, 0, 1).copy())
    graph = superpixel_graph(image, labels)
    sizes = torch.from_numpy(graph.sizes).float()
    f_hat = L.superpixel_means(f, torch.from_numpy(labels.ravel()), sizes)
    np.testing.assert_allclose(f_hat.numpy(), values, rtol=1e-6)
    adj = L.continuity_adjacency(graph.edges, graph.distances(), graph.n, tau=0.0)
    same = torch.from_numpy(np.repeat(values[:1], 4, 0))  # one value on every superpixel of the graph
    assert float(L.sparse_continuity(same, adj)) == 0.0
    assert float(L.sparse_continuity(f_hat, adj)) > 0  # four different values are not continuous


def test_sparse_continuity_on_a_chain_has_the_known_value():
    edges = np.array([[0, 1], [1, 2]])
    adj = L.continuity_adjacency(edges, np.zeros(2), 3, tau=0.0)
    f_hat = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    # node 0: |f1 - f0| sums to 2; node 1: |(f0 + f2)/2 - f1| sums to 1; node 2: 0 -> 3 / (K N) = 3 / 6
    assert float(L.sparse_continuity(f_hat, adj)) == pytest.approx(0.5)


def test_continuity_adjacency_rows_sum_to_one_and_follow_the_temperature(rng):
    n = 30
    edges = np.array(sorted({(min(a, b), max(a, b)) for a, b in rng.integers(0, n, (80, 2)) if a != b}))
    dist = rng.random(len(edges))
    for tau in (0.0, 5.0):
        adj = L.continuity_adjacency(edges, dist, n, tau=tau)
        assert adj.is_sparse
        np.testing.assert_allclose(adj.to_dense().sum(1).numpy(), 1.0, rtol=1e-6)
    dense = L.continuity_adjacency(edges, dist, n, tau=0.0).to_dense().numpy()
    degree = np.bincount(edges.ravel(), minlength=n)
    for i in np.flatnonzero(degree):
        np.testing.assert_allclose(dense[i][dense[i] > 0], 1 / degree[i], rtol=1e-6)  # tau 0: neighbour mean
    # tau > 0 weighs the colour-nearest neighbour most (Eq. 8: softmax of -tau * distance)
    adj = L.continuity_adjacency(np.array([[0, 1], [0, 2]]), np.array([0.1, 0.9]), 3, tau=10.0).to_dense()
    assert float(adj[0, 1]) == pytest.approx(math.exp(-1) / (math.exp(-1) + math.exp(-9)), rel=1e-5)


def test_sparse_ncut_of_a_one_hot_partition_has_the_closed_form():
    edges = np.array([[0, 1], [1, 2], [2, 3]])  # a chain, unit affinities (equal colours)
    weights, degree = L.ncut_graph(edges, np.zeros(3), 4, sigma=0.1)
    f_hat = one_hot(np.array([0, 0, 1, 1]), 2).t()  # {0, 1} | {2, 3}
    # each class: assoc = 2 (its inner edge, both directions), degree = 1 + 2 = 3 -> 1 - (2/3 + 2/3) / 2
    assert float(L.sparse_ncut(f_hat, weights, degree)) == pytest.approx(1 / 3, rel=1e-6)
    all_one = one_hot(np.zeros(4, int), 2).t()
    assert float(L.sparse_ncut(all_one, weights, degree)) == pytest.approx(0.5)  # 1 - (1 + 0) / 2


def test_superpixels_refuse_more_segments_than_pixels():
    with pytest.raises(InputError, match="superpixels asked for but the image has only 4 x 4 = 16 pixels"):
        superpixels(np.zeros((3, 4, 4)), SuperpixelParams(n_segments=17))


def test_losses_backpropagate_through_sparse_tensors(rng):
    x = rng.random((3, 24, 24)).astype(np.float32)
    labels = superpixels(x, SuperpixelParams(n_segments=20))
    graph = superpixel_graph(x, labels)
    z = torch.zeros((4, 24, 24), requires_grad=True)
    f = torch.softmax(z + torch.from_numpy(rng.normal(size=(4, 24, 24)).astype(np.float32)), 0)
    f_hat = L.superpixel_means(f, torch.from_numpy(labels.ravel()), torch.from_numpy(graph.sizes).float())
    w, d = L.ncut_graph(graph.edges, graph.distances(), graph.n, 0.1)
    adj = L.continuity_adjacency(graph.edges, graph.distances(), graph.n, 1.0)
    total = L.sparse_ncut(f_hat, w, d) + L.sparse_similarity(f_hat) + L.sparse_continuity(f_hat, adj)
    total.backward()
    assert z.grad is not None and float(z.grad.abs().sum()) > 0

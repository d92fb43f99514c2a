"""Loss terms of the sparse W-Net (Leng et al. 2023, §2.1-2.4), pure functions of tensors.

Notation of the paper: ``z`` (K, H, W) are the logits of the encoding U-Net, ``f = softmax(z)``
over the K channels is the soft segmentation, ``x`` (C, H, W) the image in [0, 1]. The sparse
terms work on a superpixel graph: ``f_hat`` (N, K) are the superpixel means of ``f``.

Where the paper and the authors' code (stfc-sciml/sp-wnet-seg) differ, these functions follow
the paper and say so:

* N-cut weights are affinities (Xia & Kulis 2017: ``exp(-|x_i - x_j|^2 / s_I^2) *
  exp(-|p_i - p_j|^2 / s_X^2)`` within a radius); Eq. 2 / Eq. 5 call ``w`` "a distance", with
  which minimising the loss would group *unlike* pixels. The code's dense weights (taken from a
  public port) use sigma_I = 10 on [0, 1] intensities, which switches the colour term off, and
  mask the exponentiated weights instead of the distances; here the colour term is in force and
  the radius bounds the neighbourhood, so the cost is O(r^2 HW) and not O((HW)^2).
* Eq. 1 sums over the K classes; both implementations (and these functions) divide by K, so
  ``beta_cut`` means the same for every K.
* The similarity loss is the cross entropy ``-log f_y`` of the soft labels against their argmax
  (Eq. 3 writes the softmax explicitly, i.e. on the logits ``z``; Kim et al. 2020 do the same).
  Eq. 6 is its sparse form on ``f_hat``; the code instead scores the pixels against superpixel
  labels.
* Continuity (Eq. 4, Eq. 7) is taken on ``f`` / ``f_hat`` as the paper writes, not on the logits.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

EPS = 1e-8


# --- reconstruction ---------------------------------------------------------------------------------
def reconstruction(x_rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L_rec (§2.1): mean squared error of the decoding U-Net's reconstruction."""
    return F.mse_loss(x_rec.float(), x.float())


# --- dense (pixel) losses ---------------------------------------------------------------------------
def half_offsets(radius: int) -> list[tuple[int, int]]:
    """Offsets (dy, dx) with 0 < dy^2 + dx^2 <= radius^2, one of each +-pair (weights are symmetric)."""
    r = int(radius)
    return [
        (dy, dx)
        for dy in range(0, r + 1)
        for dx in range(-r, r + 1)
        if (dy > 0 or dx > 0) and dy * dy + dx * dx <= r * r
    ]


def _pair_slices(offset: tuple[int, int], h: int, w: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Slices of the pixels i and of their partners j = i + offset that lie inside an H x W image."""
    dy, dx = offset
    ys_i, ys_j = slice(0, h - dy), slice(dy, h)
    xs_i, xs_j = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    return (ys_i, xs_i), (ys_j, xs_j)


class NCutWeights:
    """The bounded-radius affinities of Xia & Kulis (2017) for the soft N-cut of one image.

    ``w_ij = exp(-|x_i - x_j|^2 / sigma_colour^2) * exp(-|p_i - p_j|^2 / sigma_space^2)`` for
    ``0 < |p_i - p_j| <= radius``, else 0. Held per offset (one (h, w) array each) with the
    degree ``d_i = sum_j w_ij``; the image is constant during training, so this is computed once.
    """

    def __init__(self, x: torch.Tensor, radius: int = 5, sigma_colour: float = 0.1, sigma_space: float = 4.0):
        x = x.float()
        _, h, w = x.shape
        self.shape = (h, w)
        self.offsets = half_offsets(radius)
        self.weights: list[torch.Tensor] = []
        degree = torch.zeros((h, w), dtype=torch.float32, device=x.device)
        for off in self.offsets:
            si, sj = _pair_slices(off, h, w)
            colour = ((x[(slice(None), *si)] - x[(slice(None), *sj)]) ** 2).sum(0)
            wt = torch.exp(-colour / sigma_colour**2) * math.exp(-(off[0] ** 2 + off[1] ** 2) / sigma_space**2)
            self.weights.append(wt)
            degree[si] += wt  # pair (i, j) adds to the degree of both pixels
            degree[sj] += wt
        self.degree = degree


def soft_ncut(f: torch.Tensor, weights: NCutWeights) -> torch.Tensor:
    """Soft N-cut (Eq. 1, divided by K): ``1 - (1/K) sum_k assoc(A_k, A_k) / assoc(A_k, V) = 1 - mean_k
    (sum_ij w_ij f_ki f_kj) / (sum_ij w_ij f_ki)`` over the pairs within the weights' radius.

    The association is summed offset by offset (each unordered pair once, hence the 2), so no
    (pairs x K) tensor is ever built: memory O(K HW), time O(r^2 K HW).
    """
    f = f.float()
    k, h, w = f.shape
    assoc = f.new_zeros(k)
    for off, wt in zip(weights.offsets, weights.weights, strict=True):
        si, sj = _pair_slices(off, h, w)
        assoc = assoc + 2.0 * torch.einsum("khw,khw,hw->k", f[(slice(None), *si)], f[(slice(None), *sj)], wt)
    degree = (f * weights.degree).sum(dim=(1, 2))
    return 1.0 - (assoc / (degree + EPS)).sum() / k


def similarity(z: torch.Tensor) -> torch.Tensor:
    """Similarity (Eq. 3): cross entropy of the soft labels against their own argmax,
    ``-1/HW sum_ij log f_{y_ij, ij}`` with ``y = argmax_k z`` (a constant, no gradient)."""
    z = z.float()
    labels = z.argmax(dim=0).detach()
    return F.cross_entropy(z[None], labels[None])


def continuity(f: torch.Tensor) -> torch.Tensor:
    """Continuity (Eq. 4): mean L1 difference of ``f`` between vertical and between horizontal
    neighbours, averaged over the two directions and the K channels."""
    f = f.float()
    dy = (f[:, 1:, :] - f[:, :-1, :]).abs().mean()
    dx = (f[:, :, 1:] - f[:, :, :-1]).abs().mean()
    return 0.5 * (dy + dx)


# --- sparse (superpixel) losses ----------------------------------------------------------------------
def superpixel_means(f: torch.Tensor, labels: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """``f_hat`` (N, K): the mean of the (K, H, W) ``f`` over each superpixel (§2.3);
    ``labels`` holds the superpixel id (0..N-1) of every pixel, flat (H*W,)."""
    k = f.shape[0]
    flat = f.float().reshape(k, -1).t()
    sums = torch.zeros((sizes.numel(), k), dtype=flat.dtype, device=flat.device).index_add(0, labels, flat)
    return sums / sizes[:, None]


def sparse_ncut(f_hat: torch.Tensor, weights: torch.Tensor, degree: torch.Tensor) -> torch.Tensor:
    """Sparse soft N-cut (Eq. 5, divided by K): ``1 - mean_k (f_k^T W f_k) / (d^T f_k)`` on the
    superpixel graph, with ``W`` a sparse (N, N) symmetric affinity and ``d = W 1``."""
    wf = torch.sparse.mm(weights, f_hat)
    assoc = (f_hat * wf).sum(dim=0)
    deg = degree @ f_hat
    return 1.0 - (assoc / (deg + EPS)).mean()


def sparse_similarity(f_hat: torch.Tensor) -> torch.Tensor:
    """Sparse similarity (Eq. 6): ``-1/N sum_I log f_hat_{y_I, I}``, ``y_I = argmax_k f_hat_kI``."""
    labels = f_hat.argmax(dim=1).detach()
    picked = f_hat.gather(1, labels[:, None])[:, 0]
    return -torch.log(picked.clamp_min(1e-12)).mean()


def sparse_continuity(f_hat: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
    """Sparse continuity (Eq. 7): ``1/(K N) sum_p sum_I |sum_J A_IJ f_hat_pJ - f_hat_pI|`` with the
    row-normalised adjacency ``A`` (sparse, Eq. 8): each superpixel against its neighbours' mean."""
    return (torch.sparse.mm(adjacency, f_hat) - f_hat).abs().mean()


# --- sparse graph tensors ----------------------------------------------------------------------------
def _symmetric(edges: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both directions of every edge: rows, columns, values."""
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    return rows, cols, np.concatenate([values, values])


def _sparse(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n: int) -> torch.Tensor:
    """An (n, n) float32 sparse COO tensor (coalesced: one entry per pair)."""
    index = torch.from_numpy(np.stack([rows, cols]).astype(np.int64))
    values = torch.from_numpy(np.asarray(vals, dtype=np.float32))
    return torch.sparse_coo_tensor(index, values, (n, n), check_invariants=True).coalesce()


def ncut_graph(edges: np.ndarray, distances: np.ndarray, n: int, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse affinity ``W_IJ = exp(-d_IJ^2 / sigma^2)`` over the RAG edges (no self-loops) and
    its degree vector, for ``sparse_ncut``."""
    rows, cols, vals = _symmetric(edges, np.exp(-(distances**2) / sigma**2))
    degree = torch.from_numpy(np.bincount(rows, weights=vals, minlength=n).astype(np.float32))
    return _sparse(rows, cols, vals, n), degree


def continuity_adjacency(edges: np.ndarray, distances: np.ndarray, n: int, tau: float) -> torch.Tensor:
    """Row-normalised adjacency of Eq. 8, a sparse (N, N) tensor: ``A_IJ = exp(-tau d_IJ) /
    sum_K exp(-tau d_IK)`` over the neighbours J, K of I (tau = 0: the plain neighbour mean).

    Rows sum to 1. A superpixel without neighbours (a one-node graph) gets a self-loop, so its
    term in Eq. 7 is zero rather than undefined.
    """
    rows, cols, d = _symmetric(edges, distances.astype(np.float64))
    logits = -tau * d
    # softmax per row, stabilised by the row maximum
    row_max = np.full(n, -np.inf)
    np.maximum.at(row_max, rows, logits)
    e = np.exp(logits - row_max[rows])
    denom = np.bincount(rows, weights=e, minlength=n)
    vals = e / denom[rows]
    lonely = np.flatnonzero(np.bincount(rows, minlength=n) == 0)
    rows = np.concatenate([rows, lonely])
    cols = np.concatenate([cols, lonely])
    vals = np.concatenate([vals, np.ones(lonely.size)])
    return _sparse(rows, cols, vals, n)

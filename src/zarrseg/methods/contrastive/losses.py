"""Contrastive losses of the semi-supervised pipeline (Zwijghuizen §3.4, after Hu et al. 2021).

Library choice: pytorch-metric-learning (PML). Its ``NTXentLoss`` is SimCLR's loss for any
number of views with positives given by labels (stage 1 calls it as is; lightly's NT-Xent
would do too, but PML also has the supervised variant). Its ``SupConLoss`` (Khosla et al.,
the loss the reference implementation of Hu et al. adapts to pixels) is the reference of the
pixel loss: the tests check that ``pixel_contrastive`` equals it, value and gradient. The step
itself evaluates the same formula directly because PML computes a row for *every* anchor
(background ones too, which Eq. 3.4 drops) and materialises all-pairs index tuples: on one
16 x 16 block of a batch of 4 (2048 pixels) that is 14x slower than the foreground rows alone,
and at 320 x 320 with stride 4 (102 400 pixels) its N x N matrices would need ~170 GB. Beyond
``max_pairs`` similarity entries the rows are computed in chunks, each recomputed in the
backward pass, so memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from pytorch_metric_learning.losses import NTXentLoss
from torch.utils.checkpoint import checkpoint

from .params import MAX_PAIRS  # noqa: F401


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """Global contrastive loss, Eq. 3.1 (SimCLR's NT-Xent): each of the 2B views against its
    partner (positive) and the 2B - 2 views of the other images (negatives), cosine similarity
    over ``temperature``, mean over the 2B anchors. ``z1``, ``z2``: (B, D) projections of two
    augmented views of the same B images (row i of both is one image)."""
    b = z1.shape[0]
    labels = torch.arange(b, device=z1.device).repeat(2)
    return NTXentLoss(temperature=temperature)(torch.cat([z1, z2]).float(), labels)


def pixel_contrastive(
    emb: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07, max_pairs: int = MAX_PAIRS
) -> torch.Tensor:
    """Local supervised contrastive loss of one set of pixels, Eq. 3.4 (Hu et al. Eq. 3).

    ``emb``: (N, D) pixel embeddings (compared by cosine similarity), ``labels``: (N,) 0 for
    background, 1 for foreground. Anchors are the foreground pixels only: background-background
    positives are removed, so Omega is the set of foreground pixels; an anchor's positives are
    the other foreground pixels, and, as in the reference implementation (SupCon), its
    denominator sums over every other pixel (the thesis' printed Eq. 3.4 lists only the
    negatives there). Per anchor: -mean over positives of log(exp(s_p / t) / sum_k exp(s_k / t));
    the loss is the mean over anchors with at least one positive (0 when there are none).
    """
    emb = F.normalize(emb.float(), dim=1)
    labels = labels.reshape(-1).long()
    fg = torch.nonzero(labels > 0).squeeze(1)
    if fg.numel() < 2:
        return emb.sum() * 0.0  # no positive pair: nothing to learn, keep the graph
    rows = max(1, max_pairs // emb.shape[0])
    if fg.numel() <= rows:
        return _anchor_losses(emb, labels, fg, temperature).mean()
    parts = [
        checkpoint(_anchor_losses, emb, labels, fg[i : i + rows], temperature, use_reentrant=False)
        for i in range(0, fg.numel(), rows)
    ]
    return torch.cat(parts).mean()


def _anchor_losses(emb: torch.Tensor, labels: torch.Tensor, anchors: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-anchor SupCon terms of ``anchors`` (row indices) against every pixel of ``emb``."""
    sim = emb[anchors] @ emb.T / temperature  # (a, N)
    rows = torch.arange(anchors.numel(), device=emb.device)
    sim[rows, anchors] = float("-inf")  # an anchor is neither its own positive nor in its denominator
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positive = labels[anchors][:, None] == labels[None, :]
    positive[rows, anchors] = False
    return -(log_prob.masked_fill(~positive, 0.0).sum(1) / positive.sum(1).clamp_min(1))


def pixel_groups(
    features: torch.Tensor, labels: torch.Tensor, sampling: str, stride: int, block: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Sets of pixels contrasted together, as (N, D) embeddings and (N,) labels.

    ``features``: (V, D, H, W) embeddings of all views of a batch, ``labels``: (V, H, W).
    ``stride``: every ``stride``-th pixel in y and x of every view, one set (stride 1: all
    pixels); ``block``: each ``block`` x ``block`` window position across all views is one set
    (pixels meet only pixels at the same place of other views and images), sets without
    foreground skipped. Either bounds the pairs a set holds: (V H W / stride^2)^2 or (V block^2)^2.
    """
    v, d, h, w = features.shape
    if sampling == "stride":
        f = features[:, :, ::stride, ::stride]
        yield f.permute(0, 2, 3, 1).reshape(-1, d), labels[:, ::stride, ::stride].reshape(-1)
        return
    # one reshape into (blocks, pixels, D), then views per block: autograd gathers the blocks'
    # gradients in one stack (slicing the map per block would allocate a full-size gradient each)
    nh, nw = h // block, w // block
    f = features[:, :, : nh * block, : nw * block].reshape(v, d, nh, block, nw, block)
    f = f.permute(2, 4, 0, 3, 5, 1).reshape(nh * nw, v * block * block, d)
    lab = labels[:, : nh * block, : nw * block].reshape(v, nh, block, nw, block)
    lab = lab.permute(1, 3, 0, 2, 4).reshape(nh * nw, -1)
    for emb, set_labels in zip(f.unbind(0), lab.unbind(0), strict=True):
        if set_labels.any():
            yield emb, set_labels


def local_contrastive(
    features: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 0.07,
    sampling: str = "block",
    stride: int = 4,
    block: int = 16,
    max_pairs: int = MAX_PAIRS,
) -> torch.Tensor:
    """Total local loss, Eq. 3.5: mean of ``pixel_contrastive`` over the pixel sets of
    ``pixel_groups``. Each set is recomputed in the backward pass (activation checkpointing), so
    the peak memory is that of one set, not of all sets of the batch."""
    losses = [
        checkpoint(pixel_contrastive, emb, lab, temperature, max_pairs, use_reentrant=False)
        for emb, lab in pixel_groups(features, labels, sampling, stride, block)
    ]
    if not losses:
        return features.sum() * 0.0
    return torch.stack(losses).mean()

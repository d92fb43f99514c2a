"""Dice loss of Gaussian-kernel soft masks around anchor pixels (Eq. 3.3 + 3.5) as one autograd op.

The instance term (Eq. 3.4) and the consistency term (Eq. 3.8) both take, for K anchor pixels of
an embedding E (D, N), the soft masks P_k = exp(-||e_i - e_{a_k}||^2 / (2 sigma^2)) over all N
pixels and their Dice loss against fixed masks Q (ground truth, or g's soft masks). Built from
tensor operations, autograd keeps about ten (K, N) intermediates and runs as many backward
kernels; here the forward works in place on one (K, N) buffer and the backward is the closed form
(two matrix products), which is what makes these terms cheap next to the network. The values are
those of ``losses.soft_masks`` + ``losses.dice_loss`` (tests compare both, and the gradients).
"""

from __future__ import annotations

import torch


class SoftDice(torch.autograd.Function):
    """mean_k Dice loss(P_k, Q_k), P_k the soft mask around pixel ``idx[k]`` of ``emb``."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)  # float32 as every loss term
    def forward(ctx, emb: torch.Tensor, idx: torch.Tensor, target: torch.Tensor, sigma2: float, eps: float):
        sq = (emb * emb).sum(0)  # (N,)
        d = emb[:, idx].T @ emb  # (K, N)
        d.mul_(-2.0).add_(sq[None, :]).add_(sq[idx, None])  # squared distances, expanded form
        passes = d >= 0  # clamp_min(0) lets the gradient through here
        p = d.clamp_min_(0.0).mul_(-0.5 / sigma2).exp_()
        num = torch.linalg.vecdot(p, target)  # row-wise dot products: no (K, N) temporaries
        den_raw = torch.linalg.vecdot(p, p) + torch.linalg.vecdot(target, target)
        den = den_raw.clamp_min(eps)
        ctx.save_for_backward(emb, idx, target, p, passes, num, den, den_raw >= eps)
        ctx.sigma2 = sigma2
        return (1.0 - 2.0 * num / den).mean()

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad: torch.Tensor):
        emb, idx, target, p, passes, num, den, den_passes = ctx.saved_tensors
        k = len(idx)
        # d loss_k / d p_ki = -2 (q_ki / den_k - 2 p_ki num_k / den_k^2); d p / d dist^2 = -p / (2 sigma^2)
        scale = (grad * (-2.0 / k)) * (-0.5 / ctx.sigma2)
        g = target * (scale / den)[:, None]
        g.addcmul_(p, (-2.0 * scale * num * den_passes / den**2)[:, None]).mul_(p).mul_(passes)  # (K, N)
        # dist^2_ki = |e_i|^2 + |a_k|^2 - 2 a_k . e_i
        a = emb[:, idx]
        grad_emb = 2.0 * emb * g.sum(0)[None, :] - 2.0 * (a @ g)
        grad_a = 2.0 * a * g.sum(1)[None, :] - 2.0 * (emb @ g.T)
        grad_emb.index_add_(1, idx, grad_a)
        return grad_emb, None, None, None, None


def soft_dice(emb: torch.Tensor, idx: torch.Tensor, target: torch.Tensor, sigma2: float, eps: float = 1e-6) -> torch.Tensor:
    """Eq. 3.5 averaged over anchors: ``emb`` (D, N), ``idx`` (K,) anchor pixels, ``target`` (K, N)
    fixed masks (no gradient); equals dice_loss(soft_masks(emb, emb[:, idx].T, sigma2), target).mean()."""
    if target.requires_grad:
        raise ValueError("soft_dice: the target masks take no gradient")
    return SoftDice.apply(emb, idx, target, sigma2, eps)

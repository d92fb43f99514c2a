"""Losses for sigmoid outputs with a supervision mask: BCE, Dice and BCE + lambda * Dice (Eq. 2.2),
and the fine-tuning losses of Zwijghuizen §3.5: SSIM + Dice and SSIM + MAE + Dice.

SSIM comes from pytorch-msssim (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, valid
windows only: the definition of Wang et al. 2004 that scikit-image also follows); the loss is
1 - SSIM (Eq. 3.8 as a loss). kornia's ``ssim_loss`` would return (1 - SSIM) / 2, i.e. half the
weight next to Dice, so it is not used.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .loss_params import LossParams  # noqa: F401 (defined without torch)


def masked_bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")  # stable in fp16/AMP
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)


def masked_dice(
    logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """1 - Dice per channel (summed over batch and space), averaged over channels."""
    prob = torch.sigmoid(logits) * mask
    target = target * mask
    dims = [0, *range(2, logits.ndim)]
    inter = (prob * target).sum(dims)
    denom = (prob * prob).sum(dims) + (target * target).sum(dims)
    return (1.0 - 2.0 * inter / denom.clamp_min(eps)).mean()


def masked_ssim(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - SSIM (Eq. 3.8) between the probability map and the target, unsupervised voxels zeroed in both."""
    from pytorch_msssim import ssim

    prob = torch.sigmoid(logits) * mask
    return 1.0 - ssim(prob, target * mask, data_range=1.0, size_average=True)


def masked_mae(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error (Eq. 3.9) between the probability map and the target over supervised voxels."""
    return ((torch.sigmoid(logits) - target).abs() * mask).sum() / mask.sum().clamp_min(1.0)


class Loss(torch.nn.Module):
    def __init__(self, params: LossParams):
        super().__init__()
        self.params = params

    def forward(self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        p = self.params
        if p.name == "bce":
            return masked_bce(logits, target, mask)
        if p.name == "dice":
            return masked_dice(logits, target, mask, p.eps)
        dice = p.dice_weight * masked_dice(logits, target, mask, p.eps)
        if p.name == "ssim_dice":
            return masked_ssim(logits, target, mask) + dice
        if p.name == "ssim_mae_dice":
            return masked_ssim(logits, target, mask) + masked_mae(logits, target, mask) + dice
        return masked_bce(logits, target, mask) + dice

"""Losses for sigmoid outputs with a supervision mask: BCE, Dice and BCE + lambda * Dice (Eq. 2.2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch.nn import functional as F

from ...errors import ConfigError


@dataclass
class LossParams:
    """Config section ``train.loss``."""

    name: Literal["bce", "dice", "bce_dice"] = "bce_dice"
    dice_weight: float = 1.0  # lambda of Eq. 2.2
    eps: float = 1e-6

    def validate(self) -> None:
        if self.dice_weight < 0:
            raise ConfigError(f"train.loss.dice_weight must be >= 0, got {self.dice_weight}")


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
        return masked_bce(logits, target, mask) + p.dice_weight * masked_dice(logits, target, mask, p.eps)

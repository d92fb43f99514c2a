"""Loss parameters of the U-Net (config section ``train.loss``), apart from the torch code (see
``model_config``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...errors import ConfigError


@dataclass
class LossParams:
    """Config section ``train.loss``."""

    # bce_dice: PlantSeg Eq. 2.2; ssim_dice, ssim_mae_dice: Zwijghuizen Eqs. 3.7-3.9 (1 - SSIM, + mean |p - y|)
    name: Literal["bce", "dice", "bce_dice", "ssim_dice", "ssim_mae_dice"] = "bce_dice"
    dice_weight: float = 1.0  # lambda of Eq. 2.2 (weight of the Dice term in every combination)
    eps: float = 1e-6

    def validate(self) -> None:
        if self.dice_weight < 0:
            raise ConfigError(f"train.loss.dice_weight must be >= 0, got {self.dice_weight}")

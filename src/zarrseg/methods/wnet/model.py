"""The W-Net (Xia & Kulis 2017; Leng et al. 2023 Fig. 1): two of the project's 2D U-Nets.

The encoding U-Net maps the image (C channels) to K logits ``z``; ``f = softmax(z)`` is the
soft segmentation; the decoding U-Net reconstructs the image from ``f``. Inference needs the
encoder only, so that is what ``best.pt`` holds (a plain U-Net, activation ``softmax``): the
tiled predictor runs it like any other dense model.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..unet.models import ModelConfig, UNet
from .params import WNetModel


def unet_configs(in_channels: int, model: WNetModel) -> tuple[ModelConfig, ModelConfig]:
    """Encoder (C -> K) and decoder (K -> C) configurations of the project's U-Net."""
    common = {"ndim": 2, "f_maps": model.f_maps, "depth": model.depth, "norm": model.norm,
              "layer_order": model.layer_order}
    return (
        ModelConfig(in_channels=in_channels, out_channels=model.n_classes, **common),
        ModelConfig(in_channels=model.n_classes, out_channels=in_channels, **common),
    )


class WNet(nn.Module):
    """Encoder U-Net -> softmax -> decoder U-Net; ``forward`` returns (logits, reconstruction)."""

    def __init__(self, in_channels: int, model: WNetModel):
        super().__init__()
        enc, dec = unet_configs(in_channels, model)
        self.encoder_config = enc
        self.encoder = UNet(enc)
        self.decoder = UNet(dec)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        return z, self.decoder(torch.softmax(z.float(), dim=1).to(z.dtype))

    def encoder_dict(self) -> dict:
        return dataclasses.asdict(self.encoder_config)

"""The stage-1 network: the U-Net's contracting path plus an MLP projection head.

Stage 2 is the full U-Net (``methods.unet.models.UNet``) with ``out_channels`` = the embedding
size (its 1 x 1 convolution head); stage 3 is the same U-Net with one output channel. The
encoder here reuses the U-Net's blocks under the U-Net's names (``encoders.*``), so every later
stage loads it by name.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ...params import from_dict
from ..unet.models import ModelConfig, UNet, encode


class GlobalModel(nn.Module):
    """Encoder f and head g of SimCLR: z = g(GAP(f(x))), g = FC -> ReLU -> FC (``projection_dim``).

    The thesis describes g as two fully connected layers after global average pooling; the
    ReLU between them is SimCLR's. (The reference code has no ReLU and never optimises g;
    here g is trained with the encoder.)
    """

    def __init__(self, cfg: ModelConfig, projection_dim: int = 256):
        super().__init__()
        unet = UNet(cfg)
        self.config, self.projection_dim = cfg, projection_dim
        self.encoders, self.pool = unet.encoders, unet.pool
        width = cfg.f_maps * 2 ** (cfg.depth - 1)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, projection_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = encode(self.encoders, self.pool, x)[-1]
        return self.mlp(h.mean(dim=tuple(range(2, h.ndim))))

    def model_config(self) -> dict:
        return {**dataclasses.asdict(self.config), "projection_dim": self.projection_dim}


def unet_config(config: dict) -> ModelConfig:
    """The U-Net part of a stage-1 or stage-2 model config."""
    return from_dict(ModelConfig, {k: v for k, v in config.items() if k != "projection_dim"},
                     where="checkpoint.model_config")


def build_global(config: dict) -> GlobalModel:
    """The registry's model builder of ``contrastive_global``."""
    return GlobalModel(unet_config(config), int(config.get("projection_dim", 256)))

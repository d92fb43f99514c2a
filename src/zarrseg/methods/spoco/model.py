"""The embedding network f (the U-Net of ``unet.models`` with D output channels, no activation),
its momentum copy g, and what ``best.pt`` holds for inference.

``best.pt`` holds ``Embedder``: f alone (D channels) or f and g side by side (2D channels: f's
embeddings, then g's), so consistency clustering (Algorithm 1) has both from one prediction.
Its model config carries the margins the clusterings need (delta_v, delta_d), and the predicted
embeddings carry that config in their attributes.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from ..unet.models import ModelConfig, UNet

# model_config keys that are not ModelConfig fields
EXTRA_KEYS = ("embedding_dim", "momentum_copy", "delta_v", "delta_d")


class Embedder(nn.Module):
    """Pixel embeddings of f, optionally followed by those of g: (B, D or 2D, *spatial)."""

    def __init__(self, f: nn.Module, g: nn.Module | None = None):
        super().__init__()
        self.f, self.g = f, g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.f(x)
        return e if self.g is None else torch.cat([e, self.g(x)], dim=1)


def momentum_copy(f: nn.Module) -> nn.Module:
    """g: a copy of f that is never trained by back-propagation."""
    g = copy.deepcopy(f)
    for q in g.parameters():
        q.requires_grad_(False)
    return g


@torch.no_grad()
def ema_update(g: nn.Module, f: nn.Module, m: float) -> None:
    """theta_g <- m theta_g + (1 - m) theta_f (Sec. 3.3.2); g's normalisation statistics are its own."""
    for pg, pf in zip(g.parameters(), f.parameters(), strict=True):
        pg.mul_(m).add_(pf.detach(), alpha=1.0 - m)


def model_config(cfg: ModelConfig, embedding_dim: int, momentum: bool, delta_v: float, delta_d: float) -> dict:
    return {
        **dataclasses.asdict(cfg),
        "embedding_dim": embedding_dim,
        "momentum_copy": momentum,
        "delta_v": delta_v,
        "delta_d": delta_d,
    }


def build_from_config(config: dict) -> Embedder:
    """The inference module of a ``spoco`` checkpoint."""
    cfg = ModelConfig(**{k: v for k, v in config.items() if k not in EXTRA_KEYS})
    f = UNet(cfg)
    return Embedder(f, UNet(cfg) if config.get("momentum_copy") else None)

"""2D/3D U-Net and residual U-Net, configured by one small dataclass.

Design follows the PlantSeg thesis / pytorch-3dunet family (written from the description,
not their code): ``depth`` resolution levels with ``f_maps * 2**level`` features, max-pool
down, nearest-neighbour up + skip concatenation, two 3x3(x3) convolutions per level, and a
configurable layer order inside each conv unit (``"ncr"``: norm -> conv -> ReLU, the order
the thesis found best). ``norm="batch"`` for several small patches per step, ``"group"`` for
one large patch. The network returns logits; inference applies the sigmoid.

Note: GroupNorm normalises over the whole input, so a GroupNorm model's output depends on
the tile it sees; BatchNorm (eval) and no-norm models are shift-equivariant, which makes
tiled prediction equal to whole-image prediction wherever the receptive field fits.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .model_config import ModelConfig  # noqa: F401 (defined without torch: read while the workflow plans)


def _groups(channels: int, wanted: int) -> int:
    return max(g for g in range(1, min(wanted, channels) + 1) if channels % g == 0)


def _conv_unit(cin: int, cout: int, cfg: ModelConfig) -> nn.Sequential:
    """One conv with its norm and ReLU in ``layer_order``; the norm sees cin or cout channels."""
    conv_cls = nn.Conv3d if cfg.ndim == 3 else nn.Conv2d
    layers: list[nn.Module] = []
    conv_done = False
    use_norm = cfg.norm != "none" and "n" in cfg.layer_order
    for letter in cfg.layer_order:
        if letter == "c":
            # no bias when a norm follows (it would be cancelled); keep it otherwise
            norm_after = use_norm and cfg.layer_order.index("n") > cfg.layer_order.index("c")
            layers.append(conv_cls(cin, cout, kernel_size=3, padding=1, bias=not norm_after))
            conv_done = True
        elif letter == "r":
            layers.append(nn.ReLU(inplace=True))
        elif letter == "n" and use_norm:
            channels = cout if conv_done else cin
            if cfg.norm == "batch":
                layers.append((nn.BatchNorm3d if cfg.ndim == 3 else nn.BatchNorm2d)(channels))
            else:
                layers.append(nn.GroupNorm(_groups(channels, cfg.num_groups), channels))
    return nn.Sequential(*layers)


class DoubleConv(nn.Module):
    def __init__(self, cin: int, cout: int, cfg: ModelConfig):
        super().__init__()
        self.body = nn.Sequential(_conv_unit(cin, cout, cfg), _conv_unit(cout, cout, cfg))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ResidualBlock(nn.Module):
    """A conv unit to ``cout`` channels, then two more with an identity skip around them."""

    def __init__(self, cin: int, cout: int, cfg: ModelConfig):
        super().__init__()
        self.entry = _conv_unit(cin, cout, cfg)
        self.body = nn.Sequential(_conv_unit(cout, cout, cfg), _conv_unit(cout, cout, cfg))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.entry(x)
        return x + self.body(x)


class UNet(nn.Module):
    """U-Net / residual U-Net for 2D or 3D inputs; returns logits of ``out_channels`` channels."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        block = ResidualBlock if cfg.name == "residual_unet" else DoubleConv
        feats = [cfg.f_maps * 2**i for i in range(cfg.depth)]
        pool_cls = nn.MaxPool3d if cfg.ndim == 3 else nn.MaxPool2d
        kernel = (1, 2, 2) if cfg.ndim == 3 and not cfg.pool_z else 2
        self.pool = pool_cls(kernel_size=kernel)
        self.up_scale = (1.0, 2.0, 2.0) if cfg.ndim == 3 and not cfg.pool_z else 2.0
        self.encoders = nn.ModuleList(
            [block(cfg.in_channels if i == 0 else feats[i - 1], feats[i], cfg) for i in range(cfg.depth)]
        )
        self.decoders = nn.ModuleList(
            [block(feats[i] + feats[i + 1], feats[i], cfg) for i in range(cfg.depth - 1)]
        )
        self.head = (nn.Conv3d if cfg.ndim == 3 else nn.Conv2d)(feats[0], cfg.out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = encode(self.encoders, self.pool, x)
        x = skips.pop()
        for dec in reversed(self.decoders):
            skip = skips.pop()
            x = nn.functional.interpolate(x, scale_factor=self.up_scale, mode="nearest")
            x = dec(torch.cat([skip, x], dim=1))
        return self.head(x)


def encode(encoders: nn.ModuleList, pool: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The contracting path: the feature map of every level, finest first (the last is the
    bottleneck). Shared with encoder-only models (contrastive pretraining), whose weights thereby
    carry the U-Net's names (``encoders.*``)."""
    skips = []
    for i, enc in enumerate(encoders):
        x = enc(x if i == 0 else pool(x))
        skips.append(x)
    return skips


def build_model(cfg: ModelConfig) -> UNet:
    return UNet(cfg)


def build_unet(**config) -> UNet:
    """``UNet`` from plain keyword arguments (the fields of ``ModelConfig``): the callable a
    BioImage.IO ``pytorch_state_dict`` entry names, since it can pass only YAML values."""
    return UNet(ModelConfig(**config))


def receptive_field(cfg: ModelConfig) -> int:
    """Receptive field (voxels, in-plane) of an output voxel: two 3x3 convs per block per level."""
    convs = 3 if cfg.name == "residual_unet" else 2
    rf, jump = 1, 1
    for level in range(cfg.depth):  # encoder, then the bottleneck's pooling jump
        rf += convs * 2 * jump
        if level < cfg.depth - 1:
            rf += jump  # max-pool of size 2
            jump *= 2
    for _level in range(cfg.depth - 1):  # decoder
        jump //= 2
        rf += convs * 2 * jump
    return rf


def count_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def tile_multiple(shape: tuple[int, ...], cfg: ModelConfig) -> tuple[int, ...]:
    """Round a tile shape up to the model's divisor."""
    return tuple(int(math.ceil(s / d) * d) for s, d in zip(shape, cfg.divisor, strict=True))

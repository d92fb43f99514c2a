"""The U-Net architecture parameters, apart from the torch modules: parameter classes are read
while Snakemake plans a workflow (and again in every SLURM job), which should not import torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...errors import ConfigError


@dataclass
class ModelConfig:
    """Architecture (config section ``train.model``); stored in every checkpoint."""

    name: Literal["unet", "residual_unet"] = "unet"
    ndim: int = 3  # 2: slices (yx), 3: volumes (zyx)
    in_channels: int = 1
    out_channels: int = 1  # 1 for boundaries/foreground; ndim (or more) for affinities
    f_maps: int = 32  # features at the first level, doubled at every level
    depth: int = 4  # resolution levels (depth - 1 poolings)
    norm: Literal["batch", "group", "none"] = "batch"
    num_groups: int = 8  # GroupNorm groups (reduced to a divisor of the channels where needed)
    layer_order: str = "ncr"  # letters n (norm), c (conv), r (ReLU) in the order applied
    pool_z: bool = True  # 3D: pool along z too (False for strongly anisotropic stacks)

    def validate(self) -> None:
        if self.ndim not in (2, 3):
            raise ConfigError(f"model.ndim must be 2 or 3, got {self.ndim}")
        if self.depth < 1 or self.f_maps < 1 or self.in_channels < 1 or self.out_channels < 1:
            raise ConfigError("model.depth, f_maps, in_channels and out_channels must be >= 1")
        if sorted(self.layer_order) != sorted("ncr") and sorted(self.layer_order) != sorted("cr"):
            raise ConfigError(
                f"model.layer_order must be a permutation of 'ncr' (or 'cr'), got {self.layer_order!r}"
            )

    @property
    def divisor(self) -> tuple[int, ...]:
        """Tile shapes (and tile offsets, for exact tiling) must be multiples of this per axis."""
        f = 2 ** (self.depth - 1)
        if self.ndim == 3 and not self.pool_z:
            return (1, f, f)
        return (f,) * self.ndim

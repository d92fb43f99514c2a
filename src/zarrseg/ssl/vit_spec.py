"""The ViT architecture parameters, apart from the torch code of ``vit`` (parameter classes are
read while Snakemake plans a workflow, and again in every SLURM job)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError


@dataclass
class ViTSpec:
    """Architecture of the ViT (defaults: ViT-S/8 as used by DINO and the thesis)."""

    patch_size: int = 8
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    img_size: int = 320  # tile size; other sizes work too (dynamic position embeddings)

    def validate(self) -> None:
        if min(self.patch_size, self.embed_dim, self.depth, self.num_heads, self.img_size) < 1:
            raise ConfigError("vit.patch_size, embed_dim, depth, num_heads and img_size must be >= 1")
        if self.embed_dim % self.num_heads:
            raise ConfigError(
                f"vit.embed_dim {self.embed_dim} must be divisible by vit.num_heads {self.num_heads}"
            )
        if self.img_size % self.patch_size:
            raise ConfigError(
                f"vit.img_size {self.img_size} must be a multiple of vit.patch_size {self.patch_size}"
            )

    @property
    def is_vit_s8(self) -> bool:
        return (self.patch_size, self.embed_dim, self.depth, self.num_heads) == (8, 384, 12, 6)

"""Parameters of the ``dino`` method (config section ``pretrain``), apart from its torch code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from ...errors import ConfigError
from ...learn.params import COMMON_RENAMES, LoopParams
from ...ssl.tiling import Preprocess
from ...ssl.vit_spec import ViTSpec


@dataclass
class PretrainParams:
    """Parameters of the ``dino`` method (config section ``pretrain``)."""

    images: list[str] = field(default_factory=list)  # OME-Zarr training images
    vit: ViTSpec = field(default_factory=ViTSpec)
    preprocess: Preprocess = field(default_factory=Preprocess)
    weights: Literal["none", "hub"] = "none"  # start from timm's DINO ViT-S/8 hub weights (needs network)
    init_checkpoint: str | None = None  # start from these weights instead of random init
    sample_size: int = 320  # side of the tile drawn from an image (pixels of the resized image)
    global_crop_size: int = 224
    local_crop_size: int = 96
    n_local_crops: int = 8
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    out_dim: int = 65536  # prototypes of the DINO head
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    batch_size: int = 32
    warmup_steps: int = 500
    lr: float = 5e-4  # peak, scaled by batch_size / 256 as in DINO
    min_lr: float = 1e-6
    weight_decay: tuple[float, float] = (0.04, 0.4)  # cosine from first to second
    teacher_momentum: tuple[float, float] = (0.996, 1.0)
    student_temp: float = 0.1
    teacher_temp: tuple[float, float] = (0.04, 0.04)  # linear warm-up over warmup_steps
    center_momentum: float = 0.9
    clip_grad: float = 3.0
    freeze_last_layer_steps: int = 100
    # steps, checkpoint cadence, budgets, device, AMP, seed (0 steps: publish the initial weights)
    loop: LoopParams = field(default_factory=lambda: LoopParams(checkpoint_every=500, eval_every=500))

    RENAMED: ClassVar[dict] = {
        **COMMON_RENAMES,
        "steps": "loop.steps",
        "checkpoint_every": ["loop.checkpoint_every", "loop.eval_every"],
        "num_threads": "loop.threads",
    }

    def validate(self) -> None:
        for name in ("global_crop_size", "local_crop_size", "sample_size", "out_dim", "hidden_dim", "bottleneck_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"pretrain.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("global_crop_size", "local_crop_size", "sample_size"):
            if getattr(self, name) % self.vit.patch_size:
                raise ConfigError(f"pretrain.{name} must be a multiple of the patch size {self.vit.patch_size}")
        if self.batch_size < 1:
            raise ConfigError("pretrain.batch_size must be >= 1")
        if self.n_local_crops < 0:
            raise ConfigError("pretrain.n_local_crops must be >= 0")

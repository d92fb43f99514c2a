"""Parameters of the ``finetune`` method (config section ``finetune``), apart from its torch code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from ...errors import ConfigError
from ...learn.params import COMMON_RENAMES, LoopParams
from ...ssl.tiling import Preprocess
from ...ssl.vit_spec import ViTSpec


@dataclass
class FinetuneParams:
    """Parameters of ``zarrseg finetune`` (config section ``finetune``)."""

    images: list[str] = field(default_factory=list)  # OME-Zarr training images
    vit: ViTSpec = field(default_factory=ViTSpec)  # used when the checkpoint does not carry an architecture
    preprocess: Preprocess = field(default_factory=Preprocess)
    weights: Literal["none", "hub"] = "none"
    checkpoint: str | None = None  # ViT to fine-tune (a dino model's best.pt or folder, or a plain state dict)
    trainable_blocks: int = 2
    activation: Literal["relu", "gelu"] = "relu"
    sample_size: int = 320  # training tile side (pixels of the resized image)
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 0.05
    # steps, checkpoint cadence, budgets, device, AMP, seed
    loop: LoopParams = field(default_factory=lambda: LoopParams(steps=2000, checkpoint_every=500, eval_every=500))

    RENAMED: ClassVar[dict] = {
        **COMMON_RENAMES,
        "steps": "loop.steps",
        "checkpoint_every": ["loop.checkpoint_every", "loop.eval_every"],
        "num_threads": "loop.threads",
    }

    def validate(self) -> None:
        if self.trainable_blocks < 0:
            raise ConfigError("finetune.trainable_blocks must be >= 0")
        if self.batch_size < 1:
            raise ConfigError("finetune.batch_size must be >= 1")

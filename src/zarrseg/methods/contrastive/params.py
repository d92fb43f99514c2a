"""Parameters of the two contrastive stages, apart from their torch code (parameter classes are
read while Snakemake plans a workflow, and again in every SLURM job)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from ...crops.store import check_fraction
from ...errors import ConfigError
from ...learn.params import LoopParams
from ..unet.model_config import ModelConfig

MAX_PAIRS = 1 << 24  # similarity entries per matrix (64 MB in float32)


@dataclass
class ViewAugment:
    """How two views of a crop are made (config ``<section>.augment``)."""

    translate: float = 0.0  # max shift, fraction of the crop side (stage 1; 0: off)
    zoom: float = 0.0  # max zoom-in: a window of 1 / (1 + zoom) of the crop side, resized (stage 1; 0: off)
    probability: float = 0.5  # each of brightness, blur and noise is applied to a view with this probability
    brightness: float = 0.2  # max additive intensity shift (normalised units)
    blur_sigma: float = 1.5  # max sigma of the Gaussian blur (pixels)
    noise_std: float = 0.1  # max sigma of Gaussian noise (normalised units)
    salt_pepper: float = 0.02  # max fraction of pixels set to the view's minimum or maximum

    def validate(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ConfigError(f"augment.probability must be in [0, 1], got {self.probability}")
        if min(self.translate, self.zoom, self.brightness, self.blur_sigma, self.noise_std, self.salt_pepper) < 0:
            raise ConfigError("augment strengths must be >= 0")


@dataclass
class CropStageParams:
    """Parameters both contrastive stages have (their sections add their own)."""

    SECTION: ClassVar[str] = ""

    crops: str = ""  # crop store written by 'zarrseg crops' (the workflow fills in the experiment's)
    split: str = "pretrain"  # split of the store the stage learns from
    fraction: float = 1.0  # fraction of the split's crops used, in (0, 1]; the subsets of one seed are nested
    lr: float = 1e-4  # Adam learning rate (thesis Tables 4.1 / 4.2)
    weight_decay: float = 1e-6  # Adam weight decay

    def validate(self) -> None:
        check_fraction(self.fraction, f"{self.SECTION}.fraction")
        if not self.crops:
            raise ConfigError(f"{self.SECTION}.crops: no crop store given (make one with 'zarrseg crops')")


def pretrain_loop() -> LoopParams:
    """Epochs decide the length (``epochs``); loop.steps is only an upper bound."""
    return LoopParams(steps=10**9, checkpoint_every=200, eval_every=200)


@dataclass
class GlobalParams(CropStageParams):
    """Stage 1 (config section ``contrastive_global``); defaults: thesis Table 4.1 (GPU size)."""

    SECTION = "contrastive_global"

    model: ModelConfig = field(default_factory=lambda: ModelConfig(ndim=2, f_maps=64, depth=4))  # the U-Net
    projection_dim: int = 256  # output of the MLP head (GAP -> FC -> ReLU -> FC)
    temperature: float = 0.5  # NT-Xent temperature
    batch_size: int = 50  # crops per step (two views each)
    epochs: int | None = 50  # passes over the used crops (null: loop.steps steps)
    # stage 1 adds a translation or zoom before brightness / blur / noise
    augment: ViewAugment = field(default_factory=lambda: ViewAugment(translate=0.1, zoom=0.3))
    # steps, checkpoint cadence, budgets, device, AMP, seed (epochs set the length; steps is a cap)
    loop: LoopParams = field(default_factory=pretrain_loop)

    def validate(self) -> None:
        super().validate()
        if self.model.ndim != 2:
            raise ConfigError("contrastive_global.model.ndim must be 2 (crops are 2D)")
        if self.batch_size < 2:
            raise ConfigError("contrastive_global.batch_size must be >= 2 (the other crops are the negatives)")


@dataclass
class LocalParams(CropStageParams):
    """Stage 2 (config section ``contrastive_local``); defaults: thesis Table 4.2 (GPU size)."""

    SECTION = "contrastive_local"

    init: str | None = None  # stage-1 checkpoint (contrastive_global best.pt; workflow: model:contrastive_global)
    freeze_encoder: bool = False  # keep stage 1's encoder fixed (weights and batch-norm statistics)
    embedding_dim: int = 128  # channels of the 1 x 1 convolution head
    temperature: float = 0.07  # temperature of Eq. 3.4
    sampling: Literal["block", "stride"] = "block"  # which pixels are contrasted together
    block_size: int = 16  # block: each block_size^2 window across the batch's views is one set
    stride: int = 4  # stride: every stride-th pixel in y and x of all views is one set
    max_pairs: int = MAX_PAIRS  # similarity entries held at once (larger sets are computed in row chunks)
    batch_size: int = 8  # labelled crops per step (two views each)
    epochs: int | None = 8  # passes over the used crops (null: loop.steps steps)
    augment: ViewAugment = field(default_factory=ViewAugment)  # brightness, blur, noise
    # steps, checkpoint cadence, budgets, device, AMP, seed (epochs set the length; steps is a cap)
    loop: LoopParams = field(default_factory=pretrain_loop)

    def validate(self) -> None:
        super().validate()
        if not self.init:
            raise ConfigError(
                "contrastive_local.init: the local stage starts from a stage-1 checkpoint "
                "(contrastive_global best.pt; in the workflow model:contrastive_global), none given"
            )
        if self.augment.translate or self.augment.zoom:
            raise ConfigError("contrastive_local.augment: translate and zoom would move the labelled pixels; set 0")
        if min(self.block_size, self.stride, self.batch_size, self.embedding_dim) < 1:
            raise ConfigError("contrastive_local: block_size, stride, batch_size and embedding_dim must be >= 1")

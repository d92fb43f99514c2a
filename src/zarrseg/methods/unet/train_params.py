"""Parameters of the ``unet`` learning method (config section ``train``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from ...errors import ConfigError
from ...learn.params import COMMON_RENAMES, LoopParams
from ...normalize import Normalization
from ...segment.params import SegmentParams
from .augment import AugmentParams
from .loss_params import LossParams
from .model_config import ModelConfig
from .targets import TargetParams


@dataclass
class DataItem:
    """One training/validation volume: an OME-Zarr image and its instance labels."""

    image: str
    labels: str
    roi: str | None = None  # numpy-style region of the spatial axes, e.g. "0:20" or "150:, :, :"
    channel: int = 0


@dataclass
class OptimizerParams:
    """Adam + ReduceLROnPlateau, as in the PlantSeg thesis."""

    lr: float = 2e-4
    weight_decay: float = 1e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    lr_factor: float = 0.5  # ReduceLROnPlateau factor
    lr_patience: int = 10  # validations without improvement before the LR is reduced
    min_lr: float = 1e-6  # training stops once the LR falls below this


@dataclass
class ValSegmentParams:
    """Validation by the full segment pipeline (blockwise engine + ARand/VOI) on a crop of each val volume.

    Off by default: it costs a segmentation per validation. A 2D model's stack is segmented and
    scored slice by slice (mean), unless ``segment.stacked_2d`` asks for one stacked segmentation.
    """

    enabled: bool = False  # costs one segmentation of the crop per validation
    every: int = 1  # run at every N-th validation (and always at the last one)
    # crop inside each val entry's roi, numpy-style and relative to it (e.g. "0:1, 0:512, 0:512"); null: all
    roi: str | None = None
    segment: SegmentParams = field(default_factory=SegmentParams)  # segment-stage parameters for the crop


@dataclass
class TrainParams:
    train: list[DataItem] = field(default_factory=list)
    val: list[DataItem] = field(default_factory=list)  # empty: select best by the training loss
    model: ModelConfig = field(default_factory=ModelConfig)
    # start from these weights: a checkpoint (or model folder) of the same U-Net, e.g. contrastive
    # pretraining (workflow: model:contrastive_local); every weight of the same name and shape is copied
    init: str | None = None
    normalization: Normalization = field(default_factory=lambda: Normalization(method="meanstd"))
    target: TargetParams = field(default_factory=TargetParams)
    loss: LossParams = field(default_factory=LossParams)
    optimizer: OptimizerParams = field(default_factory=OptimizerParams)
    augment: AugmentParams = field(default_factory=AugmentParams)
    patch_shape: list[int] | None = None  # default: [256, 256] (2D), [32, 128, 128] (3D)
    batch_size: int = 4
    epochs: int | None = None  # if set: steps = epochs * (training voxels / patch voxels / batch), at most loop.steps
    # selects best.pt and drives the LR schedule / early stop; segment_*: needs val_segment.enabled
    val_metric: Literal["arand", "loss", "segment_arand", "segment_voi"] = "arand"
    val_threshold: float = 0.5  # boundary threshold before connected components (validation ARand)
    val_segment: ValSegmentParams = field(default_factory=ValSegmentParams)
    supervision_fraction: float = 1.0  # fraction of training images / objects with labels used
    supervision_unit: Literal["images", "objects"] = "images"
    min_foreground: float = 0.05  # foreground-aware sampling: min. fraction of labelled voxels in a patch
    sampling_retries: int = 10
    num_workers: int = 2  # DataLoader processes preparing patches (augmentation runs there)
    auto_batch: bool = True  # CUDA: probe, shrink batch / patch on out-of-memory, regrow the batch
    # steps, validation / checkpoint cadence, early stopping, budgets, device, AMP, seed
    loop: LoopParams = field(default_factory=lambda: LoopParams(early_stopping=20))

    RENAMED: ClassVar[dict] = {
        **COMMON_RENAMES,
        "iterations": "loop.steps",
        "validate_every": ["loop.eval_every", "loop.checkpoint_every"],
        "early_stopping": "loop.early_stopping",
        "amp_dtype": "loop.amp_dtype",
        "multi_gpu": "loop.multi_gpu",
        "threads": "loop.threads",
        "tensorboard": "loop.tensorboard",
    }

    def validate(self) -> None:
        if not self.train:
            raise ConfigError("train.train needs at least one {image, labels} entry")
        if not 0.0 < self.supervision_fraction <= 1.0:
            raise ConfigError(
                f"train.supervision_fraction must be in (0, 1], got {self.supervision_fraction}"
            )
        if self.batch_size < 1:
            raise ConfigError("train.batch_size must be >= 1")
        if self.patch_shape is not None and len(self.patch_shape) != self.model.ndim:
            raise ConfigError(
                f"train.patch_shape {self.patch_shape} must have model.ndim={self.model.ndim} entries"
            )
        if self.patch_shape is not None and min(self.patch_shape) < 1:
            raise ConfigError(f"train.patch_shape must be positive, got {self.patch_shape}")
        if self.val_metric.startswith("segment") and not self.val_segment.enabled:
            raise ConfigError(f"train.val_metric {self.val_metric!r} needs train.val_segment.enabled: true")
        if self.val_segment.enabled:
            if self.target.kind == "foreground":
                raise ConfigError("train.val_segment needs a boundaries or affinities target, not foreground")
            if not self.val:
                raise ConfigError("train.val_segment needs validation data (train.val)")
            if self.val_segment.every < 1:
                raise ConfigError(f"train.val_segment.every must be >= 1, got {self.val_segment.every}")
        expected = self.target.channels(self.model.ndim)
        if self.model.out_channels == 1 and expected > 1:
            self.model.out_channels = expected  # affinities: one channel per offset unless given
        if self.model.out_channels != expected:
            raise ConfigError(
                f"train.model.out_channels is {self.model.out_channels} but the "
                f"{self.target.kind} target has {expected} channel(s)"
            )

    @property
    def patch(self) -> list[int]:
        if self.patch_shape is not None:
            return list(self.patch_shape)
        return [256, 256] if self.model.ndim == 2 else [32, 128, 128]

"""Parameters of the ``spoco`` learning method (config section ``spoco``).

Defaults are the thesis' GPU-size setting (2D U-Net 16..512 features on 448^2 patches, D = 16,
m = 0.999, Adam 2e-4); ``config/spoco_cpu.yaml`` holds the small CPU configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...errors import ConfigError
from ...learn.params import LoopParams
from ...normalize import Normalization
from ..unet.augment import AugmentParams
from ..unet.model_config import ModelConfig
from ..unet.train_params import DataItem, OptimizerParams


def _model() -> ModelConfig:
    return ModelConfig(ndim=2, f_maps=16, depth=6, norm="batch")


def _augment() -> AugmentParams:
    return AugmentParams(blur=0.5, blur_sigma=1.0)


@dataclass
class Weights:
    """L_SSO (Eq. 3.9) = alpha pull + beta push + lambda instance + gamma unlabelled push + delta consistency
    (config section ``spoco.loss``); the defaults are the thesis'."""

    pull: float = 1.0  # alpha: pull force (Eq. 3.1)
    push: float = 1.0  # beta: push force between objects (Eq. 3.2)
    instance: float = 1.0  # lambda: Dice of the differentiable instance selection (Eq. 3.4)
    unlabelled_push: float = 1.0  # gamma: objects pushed away from unlabelled pixels (Eq. 3.7)
    consistency: float = 1.0  # delta: f / g embedding consistency in the unlabelled region (Eq. 3.8)
    regulariser: float = 0.001  # mean embedding norm (footnote to Eq. 3.1)
    delta_v: float = 0.5  # pull margin; also the kernel's and mean-shift's radius
    delta_d: float = 2.0  # push margin; also the affinities' scale (Eq. 3.10)
    # t of Eq. 3.3: kernel value at distance delta_v (thesis text: 0.9; the authors' public code: 0.5)
    kernel_threshold: float = 0.9
    max_anchors: int = 20  # consistency: at most this many anchors per image
    uncovered: float = 0.05  # consistency: stop sampling anchors when less of the region is uncovered

    def validate(self) -> None:
        for name in ("pull", "push", "instance", "unlabelled_push", "consistency", "regulariser"):
            if getattr(self, name) < 0:
                raise ConfigError(f"spoco.loss.{name} must be >= 0, got {getattr(self, name)}")
        if self.delta_v <= 0 or self.delta_d <= 0:
            raise ConfigError("spoco.loss.delta_v and delta_d must be > 0")
        if not 0.0 < self.kernel_threshold < 1.0:
            raise ConfigError(f"spoco.loss.kernel_threshold must be in (0, 1), got {self.kernel_threshold}")
        if self.max_anchors < 1 or not 0.0 <= self.uncovered < 1.0:
            raise ConfigError("spoco.loss.max_anchors must be >= 1 and uncovered in [0, 1)")


@dataclass
class SpocoParams:
    """SPOCO: pixel embeddings from sparse object labels (thesis ch. 3)."""

    train: list[DataItem] = field(default_factory=list)
    val: list[DataItem] = field(default_factory=list)  # densely labelled; empty: the final weights are kept
    model: ModelConfig = field(default_factory=_model)  # the embedding U-Net f (out_channels = embedding_dim)
    embedding_dim: int = 16  # D
    normalization: Normalization = field(default_factory=lambda: Normalization(method="meanstd"))
    loss: Weights = field(default_factory=Weights)
    momentum: float = 0.999  # m of the momentum network g: theta_g <- m theta_g + (1 - m) theta_f
    # full: every object and the background labelled (SPOCO); sparse: a fraction of the objects, no background
    supervision: Literal["full", "sparse"] = "sparse"
    object_fraction: float = 1.0  # p of SPOCO@p: objects kept per training image (sparse)
    # N objects in all (Table 3.6): sparse: spread over the images; full: one densely labelled image
    object_budget: int | None = None
    sampling_seed: int = 0  # seed of the object sampling (the thesis' 3 samplings: 0, 1, 2)
    # geometry (flip, rot90, elastic) shared by both views; blur, noise and jitter drawn per view
    augment: AugmentParams = field(default_factory=_augment)
    patch_shape: list[int] | None = None  # default: [448, 448] (2D), [40, 64, 64] (3D)
    batch_size: int = 4
    optimizer: OptimizerParams = field(default_factory=lambda: OptimizerParams(lr_factor=0.2))
    min_foreground: float = 0.01  # prefer patches where at least this fraction is labelled
    sampling_retries: int = 4  # patch draws to find one (then the last draw is kept)
    val_patches: int = 8  # fixed validation patches (validation loss L_SO with the dense labels)
    export_momentum: bool = True  # best.pt also outputs g's embeddings (channels D..2D-1: consistency clustering)
    num_workers: int = 2  # DataLoader processes preparing patches
    loop: LoopParams = field(default_factory=lambda: LoopParams(steps=80000, eval_every=500, checkpoint_every=500))

    def validate(self) -> None:
        if not self.train:
            raise ConfigError("spoco.train needs at least one {image, labels} entry")
        if self.embedding_dim < 2:
            raise ConfigError(f"spoco.embedding_dim must be >= 2, got {self.embedding_dim}")
        if not 0.0 < self.object_fraction <= 1.0:
            raise ConfigError(f"spoco.object_fraction must be in (0, 1], got {self.object_fraction}")
        if self.supervision == "full" and self.object_fraction < 1.0:
            raise ConfigError("spoco.supervision 'full' labels every object: object_fraction must be 1")
        if self.object_budget is not None and self.object_budget < 1:
            raise ConfigError(f"spoco.object_budget must be >= 1, got {self.object_budget}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"spoco.momentum must be in [0, 1), got {self.momentum}")
        if self.batch_size < 1 or self.val_patches < 1:
            raise ConfigError("spoco.batch_size and val_patches must be >= 1")
        if self.patch_shape is not None and len(self.patch_shape) != self.model.ndim:
            raise ConfigError(f"spoco.patch_shape {self.patch_shape} must have model.ndim={self.model.ndim} entries")
        if self.model.out_channels not in (1, self.embedding_dim):
            raise ConfigError(
                f"spoco.model.out_channels ({self.model.out_channels}) is set by embedding_dim ({self.embedding_dim})"
            )
        self.model.out_channels = self.embedding_dim

    @property
    def patch(self) -> list[int]:
        if self.patch_shape is not None:
            return list(self.patch_shape)
        return [448, 448] if self.model.ndim == 2 else [40, 64, 64]

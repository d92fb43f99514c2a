"""Parameters of the ``wnet`` learning method (config section ``wnet``) and the paper's model types.

The nine model types of Leng et al. Table 1 are values of three keys of one method, not nine
code paths: ``graph`` (Dense: losses on pixels | Sparse: on superpixels), ``segmentation``
(NCut | SimCon: similarity + continuity) and ``reconstruction`` (Image | Patch | NoRec).
``beta`` is the weight of the chosen segmentation losses (the paper sweeps it; beta_rec = 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from ...errors import ConfigError
from ...learn.params import LoopParams
from ...normalize import Normalization
from ...ssl.superpixels import SuperpixelParams

# Leng et al. Table 1: model type -> (graph, segmentation, reconstruction)
MODEL_TYPES: dict[str, tuple[str, str, str]] = {
    "Dense-NCut-Image": ("dense", "ncut", "image"),  # = the original W-Net (Xia & Kulis 2017)
    "Dense-NCut-Patch": ("dense", "ncut", "patch"),
    "Dense-SimCon-Image": ("dense", "simcon", "image"),
    "Dense-SimCon-Patch": ("dense", "simcon", "patch"),
    "Dense-SimCon-NoRec": ("dense", "simcon", "none"),  # = Kim et al. 2020 (no decoder)
    "Sparse-NCut-Image": ("sparse", "ncut", "image"),
    "Sparse-NCut-Patch": ("sparse", "ncut", "patch"),
    "Sparse-SimCon-Image": ("sparse", "simcon", "image"),
    "Sparse-SimCon-Patch": ("sparse", "simcon", "patch"),
}
_NAMES = {"dense": "Dense", "sparse": "Sparse", "ncut": "NCut", "simcon": "SimCon", "all": "All",
          "image": "Image", "patch": "Patch", "none": "NoRec"}


def model_type_values(name: str) -> dict[str, str]:
    """The ``wnet`` keys of a model type of Table 1 (e.g. "Sparse-SimCon-Patch")."""
    if name not in MODEL_TYPES:
        raise ConfigError(f"unknown W-Net model type {name!r}; known: {', '.join(MODEL_TYPES)}")
    graph, segmentation, reconstruction = MODEL_TYPES[name]
    return {"graph": graph, "segmentation": segmentation, "reconstruction": reconstruction}


@dataclass
class WNetModel:
    """The two U-Nets of the W-Net (the project's U-Net, 2D): image -> K logits -> image.

    Defaults: the size of Xia & Kulis' W-Net used by Leng et al. (64 features, 5 levels; theirs
    has depthwise-separable convolutions inside, ours plain ones). Small CPU runs: 8-16, 3.
    """

    n_classes: int = 20  # K: channels of the soft segmentation, the most labels a model can give
    f_maps: int = 64  # features at the first level, doubled at every level
    depth: int = 5  # resolution levels of each U-Net
    norm: Literal["batch", "group", "none"] = "batch"
    layer_order: str = "cnr"  # conv -> norm -> ReLU, as in the W-Net paper's blocks


@dataclass
class PatchParams:
    """Size-varying augmented patches for the reconstruction loss ("Patch" types, §2.1)."""

    sizes: list[int] = field(default_factory=lambda: [96, 64, 48])  # square patch sides (pixels)
    counts: list[int] = field(default_factory=lambda: [32, 72, 128])  # patches of each size per image per epoch
    foreground: float = 0.0  # fraction of patches centred on foreground pixels (above Otsu's threshold)

    def validate(self) -> None:
        if len(self.sizes) != len(self.counts) or not self.sizes:
            raise ConfigError("wnet.patches.sizes and wnet.patches.counts must be non-empty lists of equal length")
        if any(s < 1 for s in self.sizes) or any(c < 1 for c in self.counts):
            raise ConfigError("wnet.patches.sizes and counts must be >= 1")
        if not 0.0 <= self.foreground <= 1.0:
            raise ConfigError(f"wnet.patches.foreground must be in [0, 1], got {self.foreground}")


@dataclass
class NCutParams:
    """Affinities of the soft N-cut: colour similarity x spatial proximity (Xia & Kulis 2017)."""

    radius: int = 5  # dense: pixels farther apart than this have no affinity (bounds the cost)
    sigma_colour: float = 0.1  # colour distance scale (intensities in [0, 1]); also the sparse affinities'
    sigma_space: float = 4.0  # dense: distance scale in pixels

    def validate(self) -> None:
        if self.radius < 1 or self.sigma_colour <= 0 or self.sigma_space <= 0:
            raise ConfigError("wnet.ncut: radius >= 1 and sigma_colour, sigma_space > 0 required")


@dataclass
class WNetParams:
    """Parameters of the sparse W-Net (Leng et al. 2023), config section ``wnet``."""

    images: list[str] = field(default_factory=list)  # OME-Zarr training images (the workflow fills it)
    slices: list[int] | None = None  # 3D images: train on these z indices only (null: every slice)
    normalization: Normalization = field(default_factory=lambda: Normalization(lower=0.0, upper=100.0))
    model: WNetModel = field(default_factory=WNetModel)
    # where the segmentation losses live: pixels (dense) or the superpixel graph (sparse)
    graph: Literal["dense", "sparse"] = "sparse"
    # ncut: soft N-cut; simcon: similarity + continuity; all: the three; none: reconstruction only
    segmentation: Literal["ncut", "simcon", "all", "none"] = "simcon"
    reconstruction: Literal["image", "patch", "none"] = "patch"  # what the decoder reconstructs
    beta: float = 0.1  # weight of the segmentation losses the type uses (Eq. 9)
    beta_rec: float = 1.0
    beta_cut: float | None = None  # null: beta if segmentation uses the N-cut, else 0
    beta_sim: float | None = None  # null: beta if segmentation uses similarity, else 0
    beta_con: float | None = None  # null: beta if segmentation uses continuity, else 0
    ncut: NCutParams = field(default_factory=NCutParams)
    superpixels: SuperpixelParams = field(default_factory=SuperpixelParams)
    tau: float = 0.0  # Eq. 8 temperature: 0 weighs all neighbours equally, > 0 favours similar colours
    patches: PatchParams = field(default_factory=PatchParams)
    batches_per_epoch: int = 8  # mini-batches per epoch (the patches of an epoch are split into these)
    epochs: int | None = 50  # steps = epochs * batches_per_epoch (at most loop.steps)
    lr: float = 1e-3  # Adam
    loop: LoopParams = field(
        default_factory=lambda: LoopParams(steps=100000, checkpoint_every=40, eval_every=40, multi_gpu=False)
    )

    def validate(self) -> None:
        if self.model.n_classes < 2:
            raise ConfigError(f"wnet.model.n_classes (K) must be >= 2, got {self.model.n_classes}")
        if self.model.depth < 1 or self.model.f_maps < 1:
            raise ConfigError("wnet.model.depth and wnet.model.f_maps must be >= 1")
        betas = {"beta": self.beta, "beta_rec": self.beta_rec, "beta_cut": self.beta_cut,
                 "beta_sim": self.beta_sim, "beta_con": self.beta_con}
        for name, value in betas.items():
            if value is not None and (value < 0 or not math.isfinite(value)):
                raise ConfigError(f"wnet.{name} must be a finite number >= 0, got {value}")
        if self.tau < 0:
            raise ConfigError(f"wnet.tau must be >= 0, got {self.tau}")
        if self.batches_per_epoch < 1 or (self.epochs is not None and self.epochs < 1):
            raise ConfigError("wnet.batches_per_epoch and wnet.epochs must be >= 1")
        if self.lr <= 0:
            raise ConfigError(f"wnet.lr must be > 0, got {self.lr}")
        if self.slices is not None and (not self.slices or any(s < 0 for s in self.slices)):
            raise ConfigError(f"wnet.slices must be a non-empty list of z indices >= 0, got {self.slices}")
        self.patches.validate()
        self.ncut.validate()
        self.superpixels.validate()
        if not any(self.weights().values()):
            raise ConfigError("wnet: every loss weight is 0 (set beta / beta_rec, or a segmentation and reconstruction)")

    def weights(self) -> dict[str, float]:
        """The betas of Eq. 9 in force: rec, cut, sim, con (0: the term is not computed)."""
        seg = self.segmentation
        uses = {"cut": seg in ("ncut", "all"), "sim": seg in ("simcon", "all"), "con": seg in ("simcon", "all")}
        out = {"rec": self.beta_rec if self.reconstruction != "none" else 0.0}
        for term, used in uses.items():
            explicit = getattr(self, f"beta_{term}")
            out[term] = float(explicit) if explicit is not None else (self.beta if used else 0.0)
        return out

    @property
    def model_type(self) -> str:
        """The paper's name of this configuration, e.g. "Sparse-SimCon-Patch"."""
        return "-".join(_NAMES[v] for v in (self.graph, self.segmentation, self.reconstruction))

    @property
    def steps(self) -> int:
        if self.epochs is None:
            return self.loop.steps
        return min(self.loop.steps, self.epochs * self.batches_per_epoch)

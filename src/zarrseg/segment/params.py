"""Parameters of the segmentation stage (config section ``segment``).

Defaults follow PlantSeg where it has them (DT-watershed threshold 0.5, sigma_seeds 1,
sigma_weights 2, min_size 100, alpha 1, GASP average linkage, beta 0.5, post_minsize 100).
``geometry`` turns the voxel size into the distance-transform weights and the 2D/3D choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..blocks import check_halo
from ..errors import ConfigError
from ..ome import Compression
from ..parallel import DaskParams

PARTITIONERS = ("multicut", "gasp", "mutex_watershed", "dtws", "connected_components")
SOLVERS = ("gaec", "kl", "fusion", "decomposition")
LINKAGES = ("average", "mean", "max", "min", "sum")


@dataclass
class SegmentParams:
    """Blockwise DT-watershed -> RAG -> graph partitioning. Spatial lists are (z, y, x); 2D uses (y, x)."""

    # blocking: a block reads inner + halo and writes its inner box. The halo should reach about
    # 1.5x the largest distance to a boundary (~ the radius of the largest cell; the run logs a
    # warning and sets summary "halo_short" when it does not); it costs
    # (1 + 2 halo / block) ** ndim in compute, and per-worker memory follows the block + halo size.
    # Small blocks cost some accuracy: supervoxels near block faces differ from one block's (FlyEM
    # 250^3, halo 35, PlantSeg's defaults, raw supervoxels vs one block: ARand 0.075 at 64^3 blocks,
    # 0.069 at 128^3; multicut and GASP <= 0.0001; benchmarks/supervoxel_stitching.py).
    block_shape: list[int] = field(default_factory=lambda: [128, 256, 256])
    halo: list[int] = field(default_factory=lambda: [16, 32, 32])  # voxels read around each block per axis
    # supervoxels: distance-transform watershed (elf.segmentation.watershed)
    threshold: float = 0.5  # boundary threshold before the distance transform (foreground maps: object where >=)
    sigma_seeds: float = 1.0  # smoothing of the distance transform before seed (maxima) detection
    sigma_weights: float = 2.0  # smoothing of the boundaries for the watershed heightmap
    min_size: int = 100  # supervoxels smaller than this are absorbed by neighbours
    alpha: float = 1.0  # heightmap = alpha * boundaries + (1 - alpha) * inverted distance transform
    # distance-transform weights per axis; "auto": the image's voxel size (relative to its finest
    # axis); null: every axis 1
    pixel_pitch: list[float] | Literal["auto"] | None = "auto"
    # PlantSeg's 2D mode (supervoxels per z-slice, linked through z by the partitioner);
    # null: automatic, on when the z voxel is >= stacked_2d_anisotropy x the y/x voxel
    stacked_2d: bool | None = None
    stacked_2d_anisotropy: float = 3.0  # z voxel / y,x voxel from which stacked_2d null means 2D
    invert: bool = False  # the map's high values mean cell interior (boundaries) / background (foreground)
    # partitioning; connected_components: the input is a foreground map (high = object), and
    # its connected components (face connectivity) are the segments
    partitioner: Literal["multicut", "gasp", "mutex_watershed", "dtws", "connected_components"] = "gasp"
    # connected_components: split touching objects by a distance-transform watershed of the foreground
    split: bool = False
    # split pieces whose contact is at least this fraction of the thinner piece's largest distance to
    # the background are joined again (0: keep every split; 1: keep only splits at real necks)
    split_neck: float = 0.0
    solver: Literal["gaec", "kl", "fusion", "decomposition"] = "gaec"  # multicut solver
    gasp_linkage: Literal["average", "mean", "max", "min", "sum"] = "average"
    beta: float = 0.5  # boundary bias: > 0.5 over-segments, < 0.5 under-segments
    edge_weighting: Literal["size", "none"] = "size"  # multicut costs weighted by boundary size
    # segments smaller than this merge into their weakest-boundary neighbour (foreground: the piece
    # they touch most; objects without one are removed)
    post_min_size: int = 100
    # huge graphs: elf's blockwise (domain-decomposition) multicut
    blockwise_solver: bool = False
    solver_block_shape: list[int] | None = None  # None: 2 x block_shape
    # output storage (the workflow passes its `storage` keys)
    chunks: list[int] = field(default_factory=lambda: [64, 256, 256])
    compression: Compression = field(default_factory=Compression)
    n_levels: int | None = 1  # label pyramid levels (None: down to < 512 px)
    dask: DaskParams = field(default_factory=DaskParams)

    def validate(self) -> None:
        if self.partitioner not in PARTITIONERS:
            raise ConfigError(
                f"segment.partitioner must be one of {list(PARTITIONERS)}, got {self.partitioner!r}"
            )
        if self.solver not in SOLVERS:
            raise ConfigError(f"segment.solver must be one of {list(SOLVERS)}, got {self.solver!r}")
        if self.gasp_linkage not in LINKAGES:
            raise ConfigError(
                f"segment.gasp_linkage must be one of {list(LINKAGES)}, got {self.gasp_linkage!r}"
            )
        for name in ("block_shape", "halo", "chunks"):
            value = list(getattr(self, name))
            if len(value) not in (2, 3):
                raise ConfigError(f"segment.{name} needs 2 (yx) or 3 (zyx) values, got {value}")
        if any(b <= 0 for b in self.block_shape) or any(c <= 0 for c in self.chunks):
            raise ConfigError(
                f"segment.block_shape and chunks must be positive, got {self.block_shape}, {self.chunks}"
            )
        if any(h < 0 for h in self.halo):
            raise ConfigError(f"segment.halo must be >= 0, got {self.halo}")
        if len(self.halo) != len(self.block_shape):
            raise ConfigError(f"segment.halo {self.halo} and block_shape {self.block_shape} differ in length")
        check_halo(self.block_shape, self.halo)
        solver = self.solver_block_shape
        if solver is not None and (len(solver) != len(self.block_shape) or any(int(b) <= 0 for b in solver)):
            raise ConfigError(f"segment.solver_block_shape must be {len(self.block_shape)} positive values like "
                              f"block_shape (or null: 2 x block_shape), got {solver}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"segment.threshold must be in [0, 1], got {self.threshold}")
        if not 0.0 < self.beta < 1.0:
            raise ConfigError(f"segment.beta must be in (0, 1), got {self.beta}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"segment.alpha must be in [0, 1], got {self.alpha}")
        if self.sigma_seeds < 0 or self.sigma_weights < 0:
            raise ConfigError("segment.sigma_seeds and sigma_weights must be >= 0")
        if self.min_size < 0 or self.post_min_size < 0:
            raise ConfigError("segment.min_size and post_min_size must be >= 0")
        if isinstance(self.pixel_pitch, str) and self.pixel_pitch != "auto":
            raise ConfigError(f"segment.pixel_pitch must be a list, 'auto' or null, got {self.pixel_pitch!r}")
        if isinstance(self.pixel_pitch, list) and any(p <= 0 for p in self.pixel_pitch):
            raise ConfigError(f"segment.pixel_pitch must be positive, got {self.pixel_pitch}")
        if self.blockwise_solver and self.partitioner != "multicut":
            raise ConfigError("segment.blockwise_solver needs partitioner 'multicut'")
        if self.blockwise_solver and self.solver not in ("gaec", "kl"):
            raise ConfigError(
                "segment.blockwise_solver supports solver 'gaec' or 'kl' as the internal solver"
            )
        if self.stacked_2d_anisotropy < 1.0:
            raise ConfigError(f"segment.stacked_2d_anisotropy must be >= 1, got {self.stacked_2d_anisotropy}")
        if not 0.0 <= self.split_neck <= 1.0:
            raise ConfigError(f"segment.split_neck must be in [0, 1], got {self.split_neck}")
        if self.split and self.partitioner != "connected_components":
            raise ConfigError("segment.split needs partitioner 'connected_components'")
        if self.n_levels is not None and self.n_levels < 1:
            raise ConfigError(f"segment.n_levels must be >= 1 or null, got {self.n_levels}")
        self.dask.validate()

    def spatial(self, name: str, ndim: int) -> tuple:
        """A (z, y, x) list parameter cut to the volume's dimensionality (2D uses the last two)."""
        value = list(getattr(self, name))
        if len(value) < ndim:
            raise ConfigError(f"segment.{name} {value} has fewer values than the {ndim}-d input")
        return tuple(value[-ndim:])


def geometry(params: SegmentParams, scale: tuple[float, ...], ndim: int) -> tuple[tuple[float, ...] | None, bool]:
    """(distance-transform pitch, stacked 2D?) of a ``ndim``-d image with voxel size ``scale``.

    The distance transform measures in units of the finest axis, so "auto" on an isotropic
    image is the unweighted transform and the voxel-based halo advice keeps its meaning.
    """
    pitch = params.pixel_pitch
    if pitch == "auto":
        spatial = [float(s) for s in list(scale)[-ndim:]]
        pitch = [s / min(spatial) for s in spatial] if spatial and min(spatial) > 0 else None
    if pitch is not None:
        pitch = list(pitch)[-ndim:]
        if len(pitch) != ndim:
            raise ConfigError(f"segment.pixel_pitch {params.pixel_pitch} does not match the {ndim}-d input")
    stacked = params.stacked_2d
    if stacked is None:
        spatial = [float(s) for s in list(scale)[-ndim:]]
        stacked = ndim == 3 and min(spatial[1:]) > 0 and spatial[0] / max(spatial[1:]) >= params.stacked_2d_anisotropy
    return (None if pitch is None else tuple(float(p) for p in pitch)), bool(stacked)

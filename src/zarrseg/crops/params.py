"""Parameters of the crop-preparation stage (config section ``crops``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError
from ..normalize import Normalization

SPLITS = ("pretrain", "finetune", "test")


@dataclass
class CropSource:
    """One staged acquisition and the split all its crops go to."""

    image: str  # OME-Zarr image (a scene of a staged container)
    split: str  # pretrain | finetune | test (every crop of an acquisition lands in one split)
    labels: str | None = None  # its ground truth (OME-Zarr); null: an unlabelled acquisition
    name: str = ""  # written to the origin table (default: the image path)
    channel: int = 0


@dataclass
class CropCompression:
    """Codec of the crop images. Crops are read at random many times per training and float16
    intensities compress little (~25 % with lz4, which doubles the read time), so the default
    stores them raw; masks are always lz4-compressed (20-100x smaller)."""

    codec: Literal["none", "lz4", "zstd", "blosclz", "zlib"] = "none"  # Blosc inner codec, or none
    level: int = 1  # compression level 0-9
    shuffle: Literal["noshuffle", "shuffle", "bitshuffle"] = "shuffle"  # Blosc byte / bit shuffle

    def validate(self) -> None:
        if not 0 <= self.level <= 9:
            raise ConfigError(f"crops.compression.level must be in 0..9, got {self.level}")


@dataclass
class CropParams:
    """Sliding-window crops of the middle planes of staged images, split by acquisition."""

    images: list[CropSource] = field(default_factory=list)  # filled by the workflow from `split`
    crop_size: int = 320  # side of a square crop (pixels)
    step: float = 0.5  # window step as a fraction of crop_size (< 1: overlapping crops)
    planes: int = 1  # middle z-planes taken from each 3D acquisition (fewer when it has fewer)
    # crops whose foreground fraction is below this are dropped (acquisitions with masks only)
    min_foreground: float = 0.03
    rotations: bool = True  # each read of a crop draws a 0/90/180/270 degree rotation (stored once)
    # binary: a mask must hold at most one non-zero value; instances: any label > 0 is foreground
    masks: Literal["binary", "instances"] = "binary"
    # per acquisition (its planes), before cropping; crops are float16 unless method 'none' (source dtype)
    normalization: Normalization = field(default_factory=lambda: Normalization(method="meanstd"))
    # crops per Zarr chunk (file) along N: one file per crop costs ~1 ms to write, while a training
    # batch of scattered crops decodes `chunk` crops per crop it uses
    chunk: int = 8
    buffer: int = 64  # crops collected per write, rounded up to whole chunks (two buffers are in memory)
    # pack `buffer` crops per shard file (of `chunk`-crop chunks): fewer files, but zarr-python 3
    # writes them slower than plain chunks (10 acquisitions: 1.7 vs 1.2 s CPU) and reads scattered
    # crops from shards ~8x slower (every training batch does)
    shards: bool = False
    compression: CropCompression = field(default_factory=CropCompression)

    def validate(self) -> None:
        if self.crop_size < 2:
            raise ConfigError(f"crops.crop_size must be >= 2, got {self.crop_size}")
        if not 0.0 < self.step <= 1.0:
            raise ConfigError(f"crops.step is a fraction of the crop size in (0, 1], got {self.step}")
        if self.planes < 1 or self.buffer < 1 or self.chunk < 1:
            raise ConfigError("crops.planes, crops.chunk and crops.buffer must be >= 1")
        if not 0.0 <= self.min_foreground < 1.0:
            raise ConfigError(f"crops.min_foreground must be in [0, 1), got {self.min_foreground}")
        for src in self.images:
            if src.split not in SPLITS:
                raise ConfigError(f"crops: split {src.split!r} of {src.image} is not one of {list(SPLITS)}")
            if src.labels is None and src.split != "pretrain":
                raise ConfigError(
                    f"crops: {src.name or src.image} has no ground truth, so it can only join the pretrain split"
                )

    @property
    def buffer_crops(self) -> int:
        """Crops per write: ``buffer`` rounded up to whole chunks, so every write but the last fills its chunks."""
        return -(-self.buffer // self.chunk) * self.chunk

    @property
    def step_px(self) -> int:
        return max(1, int(round(self.step * self.crop_size)))

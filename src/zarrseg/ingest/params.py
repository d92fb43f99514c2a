"""Parameters of the staging stage (config sections ``storage`` + ``ingest``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError
from ..ome import Compression

READERS = ("auto", "pylibczirw", "tifffile", "h5py", "pillow")


@dataclass
class IngestParams:
    """How a CZI / TIFF / HDF5 file becomes an OME-Zarr container."""

    chunks: list[int] = field(default_factory=lambda: [32, 256, 256])  # spatial chunk shape (z, y, x)
    compression: Compression = field(default_factory=Compression)
    pyramid_levels: int | None = None  # None: halve Y/X until both are < 512 px
    voxel_size: list[float] | None = None  # (z, y, x) or (y, x) in µm; overrides the file's metadata
    reader: Literal["auto", "pylibczirw", "tifffile", "h5py", "pillow"] = "auto"
    axes: str | None = None  # TIFF/HDF5 only: one letter of 'tczyx' per source axis, e.g. "zcyx"
    slab_mb: int = 128  # memory budget (MB) for the slabs in flight (one being read, two being encoded)
    threads: int = 0  # threads encoding chunks; 0: all cores given to the job (SLURM / Snakemake / affinity)

    def validate(self) -> None:
        if not 1 <= len(self.chunks) <= 3 or any(int(c) < 1 for c in self.chunks):
            raise ConfigError(f"ingest.chunks must be 1-3 positive integers (z, y, x), got {self.chunks}")
        if self.pyramid_levels is not None and self.pyramid_levels < 1:
            raise ConfigError(f"ingest.pyramid_levels must be >= 1 or null, got {self.pyramid_levels}")
        if self.voxel_size is not None and (
            len(self.voxel_size) not in (2, 3) or not all(0 < v < float("inf") for v in self.voxel_size)
        ):
            raise ConfigError(
                f"ingest.voxel_size must be 2 or 3 positive, finite numbers (µm), got {self.voxel_size}"
            )
        if self.axes is not None and (
            not self.axes
            or set(self.axes.lower()) - set("tczyx")
            or len(set(self.axes.lower())) != len(self.axes)
        ):
            raise ConfigError(f"ingest.axes must be distinct letters of 'tczyx', got {self.axes!r}")
        if self.threads < 0:
            raise ConfigError(f"ingest.threads must be >= 0 (0: all cores given), got {self.threads}")
        if self.slab_mb < 1:
            raise ConfigError(f"ingest.slab_mb must be >= 1, got {self.slab_mb}")
        if self.compression.shuffle not in ("noshuffle", "shuffle", "bitshuffle"):
            raise ConfigError(
                f"ingest.compression.shuffle must be noshuffle|shuffle|bitshuffle, got "
                f"{self.compression.shuffle!r}"
            )
        if self.compression.codec not in ("zstd", "lz4", "lz4hc", "zlib", "blosclz"):
            raise ConfigError(
                f"ingest.compression.codec must be zstd|lz4|lz4hc|zlib|blosclz, got "
                f"{self.compression.codec!r}"
            )

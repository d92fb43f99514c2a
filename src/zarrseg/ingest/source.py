"""What every reader hands the writer: scenes with axes, shape, dtype, voxel size and slab reads.

Readers translate their file format into ``Scene`` descriptions (canonical axes: a subset of
``tczyx`` in that order) and answer ``read(scene, t, c, z, y, x)`` with an array ``(C, Z, Y, X)``
for one timepoint, a channel range and a box of the scene, so the writer never needs to know the format.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

# numpy dtypes we write; anything else (complex, float16, bool, structured) is rejected up front.
SUPPORTED_DTYPES = tuple(np.dtype(d) for d in ("u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f4", "f8"))

# Length units found in OME-XML / ImageJ metadata, in micrometres.
UNIT_TO_UM = {
    "m": 1e6,
    "meter": 1e6,
    "cm": 1e4,
    "centimeter": 1e4,
    "mm": 1e3,
    "millimeter": 1e3,
    "µm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "\\u00b5m": 1.0,
    "μm": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "pm": 1e-6,
    "å": 1e-4,
    "angstrom": 1e-4,
}


@dataclass
class Scene:
    """One image of a file, described in canonical axes (subset of ``tczyx``, y and x always)."""

    index: int
    name: str
    sizes: dict[str, int]  # t, c, z, y, x -> size (all five present, 1 when absent)
    dtype: np.dtype
    voxel_size: dict[str, float] = field(default_factory=dict)  # z/y/x -> µm (t -> s), those in the metadata
    channel_names: list[str] | None = None
    channel_colors: list[str] | None = None  # RRGGBB display colour per channel, where the file has one
    extra: dict = field(default_factory=dict)  # reader-specific provenance (e.g. CZI scene origin)
    # where the scene's first voxel lies in the file's common frame, in voxels (z/y/x): a CZI scene's
    # place in the mosaic; ingest writes it times the voxel size as the NGFF translation
    origin_px: dict[str, float] = field(default_factory=dict)

    @property
    def axes(self) -> str:
        return "".join(a for a in "tczyx" if a in "yx" or self.sizes[a] > 1)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.sizes[a] for a in self.axes)

    @property
    def nbytes(self) -> int:
        return int(np.prod([self.sizes[a] for a in "tczyx"])) * self.dtype.itemsize


class Source(abc.ABC):
    """An open input file: its scenes and a way to read boxes of them."""

    reader: str = ""
    reader_version: str = ""

    def __init__(self, path: Path):
        self.path = path
        self.scenes: list[Scene] = []

    @abc.abstractmethod
    def read(self, scene: int, t: int, c: slice, z: slice, y: slice, x: slice) -> np.ndarray:
        """Pixels of channels ``c`` of timepoint ``t`` inside the box, shape ``(C, Z, Y, X)``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self) -> None:
        """Reject what we cannot write, before any output exists."""
        if not self.scenes:
            raise InputError("contains no image data", self.path)
        for scene in self.scenes:
            # tifffile reports uint64 as 'Q' (numpy's ulonglong), which zarr does not accept: use
            # the canonical type of the same size and byte order ('<u8'), whatever the reader said
            scene.dtype = np.dtype(scene.dtype.str)
            if scene.dtype not in SUPPORTED_DTYPES:
                raise InputError(
                    f"unsupported pixel type {scene.dtype} (supported: "
                    f"{', '.join(str(d) for d in SUPPORTED_DTYPES)})",
                    self.path,
                )
            if any(s < 1 for s in scene.sizes.values()):
                raise InputError(f"scene {scene.index} has an empty dimension {scene.sizes}", self.path)


def canonical_axes(source_axes: str, shape: tuple[int, ...], path: Path, override: str | None = None) -> str:
    """Map a reader's axis letters to ``tczyx`` letters (one per source axis).

    Size-1 axes of any kind are dropped later, so only axes longer than 1 must be understood.
    tifffile's 'S' (samples, e.g. RGB) becomes channels; a single unnamed page axis ('Q', 'I')
    of a plain multi-page file is a z-stack. Anything else must be named with the ``axes``
    parameter.
    """
    if override is not None:
        override = override.lower()
        if len(override) != len(shape):
            raise InputError(
                f"parameter axes={override!r} has {len(override)} letters but the image has "
                f"{len(shape)} axes ({source_axes} {tuple(shape)})",
                path,
            )
        if "y" not in override or "x" not in override:
            raise InputError(f"parameter axes={override!r} must contain y and x", path)
        return override
    mapped: list[str] = []
    unnamed = [i for i, a in enumerate(source_axes) if a in "QI" and shape[i] > 1]
    has_z = any(a == "Z" and s > 1 for a, s in zip(source_axes, shape, strict=True))
    for i, (a, s) in enumerate(zip(source_axes.upper(), shape, strict=True)):
        letter = {"T": "t", "C": "c", "S": "c", "Z": "z", "Y": "y", "X": "x"}.get(a)
        if letter is None and i in unnamed and len(unnamed) == 1 and not has_z:
            letter = "z"
        if letter is None:
            if s > 1:
                raise InputError(
                    f"cannot resolve image axes {source_axes!r} {tuple(shape)}: axis {a!r} of size "
                    f"{s} is not t/c/z/y/x; name them with ingest.axes (zarrseg ingest --set axes=zcyx, or "
                    "ingest: {axes: zcyx} in the workflow / nightly --config)",
                    path,
                )
            letter = "-"  # a size-1 axis we drop
        mapped.append(letter)
    kept = [m for m, s in zip(mapped, shape, strict=True) if m != "-" and (s > 1 or m in "yx")]
    if len(set(kept)) != len(kept) or "y" not in mapped or "x" not in mapped:
        raise InputError(
            f"cannot resolve image axes {source_axes!r} {tuple(shape)} into t/c/z/y/x; "
            "name them with ingest.axes (zarrseg ingest --set axes=..., or ingest: {axes: ...} in the "
            "workflow / nightly --config)",
            path,
        )
    return "".join(mapped)

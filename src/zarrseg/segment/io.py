"""Reading the boundary map, mask and intermediate arrays of the segmentation stage.

Boundary (or foreground) maps are read as float32 in [0, 1]: float inputs are used as they
are, uint8 and uint16 intensity images are divided by their dtype maximum (255 / 65535), so an
ingested membrane-stain image can be segmented directly; boolean maps and integer maps whose
largest value is 1 (binary masks) as 0 / 1 (``value_scale``); ``invert`` reads 1 - value.
Any other dtype is an input error.
Pixel embeddings (a SPOCO prediction) become a boundary map in the staging pass (``EvidenceTask``).
Readers are small picklable objects that (re)open their Zarr array lazily, so blocks can
run in threads, local processes or on distributed workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import zarr

from .. import ome
from ..errors import InputError

SCALED_DTYPES = {np.dtype("uint8"): 255.0, np.dtype("uint16"): 65535.0}


def check_boundary_dtype(dtype: np.dtype, path: str | Path) -> None:
    dtype = np.dtype(dtype)
    if dtype.kind not in "fb" and dtype not in SCALED_DTYPES:
        raise InputError(
            f"boundary map has dtype {dtype}; expected float (probabilities), bool or uint8/uint16", path
        )


def value_scale(dtype: np.dtype, largest: float) -> float | None:
    """Divisor of an integer map: 1 for a binary mask (largest value 1), else the dtype maximum."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui" and largest <= 1:
        return 1.0
    return SCALED_DTYPES.get(dtype)


def to_float(data: np.ndarray, scale: float | None = None, invert: bool = False) -> np.ndarray:
    """Map values as float32 in [0, 1] (integers divided by ``scale``, default their dtype maximum)."""
    scale = SCALED_DTYPES.get(data.dtype) if scale is None else scale
    if scale is not None:
        out = (data.astype(np.float32) / np.float32(scale)).astype(np.float32)
    else:
        out = data.astype(np.float32, copy=False)
    return np.subtract(np.float32(1.0), out, dtype=np.float32) if invert else out


@dataclass
class ImageReader:
    """One channel of an OME-Zarr image as a spatial volume, reopened lazily in each process."""

    path: str
    channel: int = 0
    _view: ome.SpatialView | None = field(default=None, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return {"path": self.path, "channel": self.channel, "_view": None}

    @property
    def view(self) -> ome.SpatialView:
        if self._view is None:
            self._view = ome.SpatialView.of(ome.open_image(self.path), channel=self.channel)
        return self._view

    def __getitem__(self, box: tuple[slice, ...]) -> np.ndarray:
        return self.view[box]

    def read_float(self, box: tuple[slice, ...]) -> np.ndarray:
        return to_float(self.view[box])

    def read_mask(self, box: tuple[slice, ...]) -> np.ndarray:
        return self.view[box] != 0


@dataclass
class ArrayRef:
    """A plain Zarr array by path (the intermediate supervoxel array), reopened lazily.

    ``scale`` / ``invert`` say how ``read_float`` reads a staged input map (see ``to_float``).
    """

    path: str
    scale: float | None = None
    invert: bool = False
    _array: zarr.Array | None = field(default=None, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return {"path": self.path, "scale": self.scale, "invert": self.invert, "_array": None}

    @property
    def array(self) -> zarr.Array:
        if self._array is None:
            self._array = zarr.open_array(self.path, mode="r+")
        return self._array

    def __getitem__(self, box: tuple[slice, ...]) -> np.ndarray:
        return np.asarray(self.array[tuple(box)])

    def __setitem__(self, box: tuple[slice, ...], value: np.ndarray) -> None:
        self.array[tuple(box)] = value

    def read_float(self, box: tuple[slice, ...]) -> np.ndarray:
        """A staged copy of the input map (input dtype), read as float32 in [0, 1]."""
        return to_float(self[box], self.scale, self.invert)


@dataclass
class CopyTask:
    """Copy one block's inner box of the input into the work array (``engine``'s staging pass).

    Reports what the engine checks before any work on the values: NaN / Inf voxels, and the
    largest finite value (a 0/1 integer mask is read as binary, see ``value_scale``).
    """

    source: ImageReader
    target: ArrayRef

    def __call__(self, block) -> dict:
        bounded_malloc()
        release_memory()
        data = self.source[block.inner]
        self.target[block.inner] = data
        return value_stats(data)


def value_stats(data: np.ndarray) -> dict:
    """What the engine checks of a staged block: NaN / Inf voxels and the largest finite value."""
    finite = np.isfinite(data) if data.dtype.kind == "f" else None
    bad = 0 if finite is None else int(data.size - np.count_nonzero(finite))
    values = data if finite is None or not bad else data[finite]
    return {"nonfinite": bad, "max": float(values.max()) if values.size else 0.0}


@dataclass
class EvidenceTask:
    """The boundary map of one block of pixel embeddings (``embeddings.boundary_evidence``, Eq. 3.10),
    written into the work array in place of ``CopyTask``'s copy: the engine then segments it like
    any boundary map. Reads the inner box plus one voxel (the direct neighbours across the faces)."""

    path: str
    dim: int  # f's channels (D)
    delta_d: float
    axes: tuple[int, ...]  # spatial axes with meaningful neighbours (in-plane only for a 2D model)
    target: ArrayRef

    def __call__(self, block) -> dict:
        from ..embeddings import boundary_evidence

        bounded_malloc()
        release_memory()
        data = ome.open_image(self.path).data
        shape = data.shape[1:]
        box = tuple(
            slice(max(s.start - (a in self.axes), 0), min(s.stop + (a in self.axes), n))
            for a, (s, n) in enumerate(zip(block.inner, shape, strict=True))
        )
        emb = np.asarray(data[(slice(0, self.dim), *box)], np.float32)
        evidence = boundary_evidence(emb, self.delta_d, self.axes)
        local = tuple(slice(i.start - b.start, i.stop - b.start) for i, b in zip(block.inner, box, strict=True))
        out = evidence[local]
        self.target[block.inner] = out
        return value_stats(out)  # as CopyTask: for the engine's NaN / Inf check


@lru_cache(maxsize=1)
def bounded_malloc() -> bool:
    """Make glibc return freed block buffers to the OS (once per process; no-op elsewhere).

    Blocks allocate and free hundreds of MB of temporaries (elf's watershed, zarr decoding).
    glibc's adaptive mmap threshold then serves them from a fragmented heap, and the
    process's peak memory creeps up with the number of blocks instead of staying at one
    block's worth (measured: 1.77 -> 1.25 GB peak on a 384^3 volume with 256^3 blocks).
    Fixing the thresholds keeps large buffers in mmap'd memory, released on free.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 20) and libc.mallopt(m_trim_threshold, 1 << 24))
    except (OSError, AttributeError):
        return False


def limit_malloc_arenas(n: int) -> None:
    """At most ``n`` glibc malloc arenas in this process (one per block worker).

    glibc gives each new thread (Dask workers, zarr's codec threads) its own arena, up to 8
    per core, and freed block-sized buffers stay fragmented in them: measured on a 512^3
    volume with 256^3 blocks, peak RSS 1080 MB with the default and 870 MB with one arena,
    against 826 MB for a single 256^3 block. Set before the stage starts its threads.
    """
    try:
        import ctypes

        m_arena_max = -8
        ctypes.CDLL("libc.so.6").mallopt(m_arena_max, max(1, int(n)))
    except (OSError, AttributeError):
        pass


def release_memory() -> None:
    """Hand the heap's free pages back to the OS after a block (all malloc arenas: zarr's codec
    threads each have one). Without it a process's resident memory drifts up by several
    hundred MB over the blocks of a 512^3 run although nothing is kept."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@lru_cache(maxsize=4)
def load_npy(path: str, mtime: float) -> np.ndarray:
    """A small global table (node ids, node labels), loaded once per process."""
    del mtime  # part of the cache key only: a rewritten file is reloaded
    return np.load(path, allow_pickle=False)


def cached_table(path: str | Path) -> np.ndarray:
    path = str(path)
    return load_npy(path, Path(path).stat().st_mtime)


def to_nodes(sparse: np.ndarray, sparse_ids: np.ndarray, node_of: np.ndarray) -> np.ndarray:
    """Map globally unique (sparse) supervoxel ids to consecutive node ids 1..N (0 stays 0)."""
    flat = sparse.ravel()
    pos = np.searchsorted(sparse_ids, flat)
    np.minimum(pos, max(len(sparse_ids) - 1, 0), out=pos)
    out = node_of[pos] if len(node_of) else np.zeros(len(flat), np.uint64)
    out[flat == 0] = 0
    out = out.reshape(sparse.shape)
    return out.astype(np.uint32) if len(node_of) < 2**32 - 1 else out


def nodes_of_block(sparse: np.ndarray, tables: str | Path) -> np.ndarray:
    """``to_nodes`` with the stage's node tables (``sparse_ids.npy``, ``node_of.npy`` in ``tables``)."""
    tables = Path(tables)
    return to_nodes(sparse, cached_table(tables / "sparse_ids.npy"), cached_table(tables / "node_of.npy"))

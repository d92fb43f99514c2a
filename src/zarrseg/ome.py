"""OME-Zarr (NGFF 0.4, Zarr format 2) reading and writing, and atomic outputs.

We write NGFF **0.4** on Zarr format 2 ("/" chunk keys) because that is what the tools our
users open results in (napari-ome-zarr, Fiji/MoBIE, neuroglancer, ome-zarr-py) read
everywhere today, and because it lets the numcodecs compressor from the config be stored as is.
A single-scene ingest output is a plain multiscale image at its root; multi-scene files use
the ``bioformats2raw.layout`` container: one multiscale image per scene at
``<container>/<scene index>``. ``scene_path`` maps (output, scene) to the image to open for both.
"""

from __future__ import annotations

import datetime
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr

from . import __version__
from .errors import ConfigError, InputError
from .runs import WORK, atomic_output, check_writable, mark_resumable, partial_path, same_run  # noqa: F401 (the run protocol)

log = logging.getLogger(__name__)

NGFF_VERSION = "0.4"
SPATIAL = "zyx"
AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
UNITS = {"t": "second", "z": "micrometer", "y": "micrometer", "x": "micrometer"}


@dataclass
class Compression:
    """Compressor of every written array (config ``storage.compressor``)."""

    codec: str = "zstd"  # blosc inner codec: zstd, lz4, zlib, blosclz
    level: int = 5
    shuffle: str = "bitshuffle"  # noshuffle, shuffle, bitshuffle

    def validate(self) -> None:
        """Checked with the other parameters, before any work (Blosc itself only checks when writing)."""
        codecs, shuffles = ("zstd", "lz4", "lz4hc", "zlib", "blosclz"), ("noshuffle", "shuffle", "bitshuffle")
        if self.codec not in codecs:
            raise ConfigError(f"compression.codec must be one of {list(codecs)}, got {self.codec!r}")
        if not 0 <= self.level <= 9:
            raise ConfigError(f"compression.level must be in 0..9, got {self.level}")
        if self.shuffle not in shuffles:
            raise ConfigError(f"compression.shuffle must be one of {list(shuffles)}, got {self.shuffle!r}")

    def numcodecs(self) -> numcodecs.abc.Codec:
        shuffle = {"noshuffle": numcodecs.Blosc.NOSHUFFLE, "shuffle": numcodecs.Blosc.SHUFFLE,
                   "bitshuffle": numcodecs.Blosc.BITSHUFFLE}[self.shuffle]
        return numcodecs.Blosc(cname=self.codec, clevel=self.level, shuffle=shuffle)


@dataclass
class Image:
    """A multiscale OME-Zarr image opened for reading (level 0 as ``data``)."""

    group: zarr.Group
    path: Path
    axes: str
    scale: tuple[float, ...]
    units: dict[str, str] = field(default_factory=dict)
    # where level 0's first voxel sits (NGFF 'translation', axis units): a CZI scene's place in its
    # mosaic, which outputs aligned with the image keep; empty when the file has none
    # (spatial_translation then gives zeros)
    translation: tuple[float, ...] = ()
    channel_names: list[str] | None = None
    level_paths: list[str] = field(default_factory=list)
    # levels opened so far: open_image checks level 0, and the caller's ``data`` reuses it
    _arrays: dict[str, zarr.Array] = field(default_factory=dict, repr=False, compare=False)

    @property
    def data(self) -> zarr.Array:
        return self.level(0)

    def level(self, index: int) -> zarr.Array:
        path = self.level_paths[index]
        if path not in self._arrays:
            self._arrays[path] = self.group[path]
        return self._arrays[path]

    @property
    def attrs(self) -> dict:
        return dict(self.group.attrs)

    @property
    def spatial_scale(self) -> tuple[float, ...]:
        return tuple(s for a, s in zip(self.axes, self.scale, strict=True) if a in SPATIAL)

    @property
    def spatial_translation(self) -> tuple[float, ...]:
        shift = self.translation or tuple(0.0 for _ in self.axes)
        return tuple(t for a, t in zip(self.axes, shift, strict=True) if a in SPATIAL)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


def chunk_shape(axes: str, shape: Sequence[int], spatial_chunks: Sequence[int]) -> tuple[int, ...]:
    """Chunks of 1 along t/c and ``spatial_chunks`` (last entries) along z/y/x, clipped to shape."""
    n_spatial = sum(a in SPATIAL for a in axes)
    spatial = list(spatial_chunks)[-n_spatial:] if spatial_chunks else []
    spatial = [*([64] * (n_spatial - len(spatial))), *spatial]  # too few entries: 64 for the leading axes
    out, k = [], 0
    for a, s in zip(axes, shape, strict=True):
        if a in SPATIAL:
            out.append(max(1, min(int(spatial[k]), int(s))))
            k += 1
        else:
            out.append(1)
    return tuple(out)


def create_array(group: zarr.Group, name: str, shape: Sequence[int], dtype: Any, chunks: Sequence[int],
                 compression: Compression | None = None, fill_value: Any = 0) -> zarr.Array:
    """Create a Zarr v2 array with '/' chunk keys and the configured compressor."""
    return group.create_array(
        name=name, shape=tuple(int(s) for s in shape), chunks=tuple(int(c) for c in chunks),
        dtype=np.dtype(dtype), compressors=(compression or Compression()).numcodecs(),
        fill_value=fill_value, chunk_key_encoding={"name": "v2", "separator": "/"}, overwrite=True,
    )


def provenance(**extra: Any) -> dict:
    """Attributes every zarrseg output carries: who wrote it and when."""
    return {"zarrseg_version": __version__,
            "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), **extra}


def multiscales_attrs(axes: str, scales: Sequence[Sequence[float]], name: str, downscale_type: str,
                      translation: Sequence[float] | None = None) -> dict:
    """NGFF 0.4 multiscales metadata; with a non-zero ``translation`` (level 0's first voxel, axis
    units) every level gets one after its scale: a mean-downsampled level's first voxel is the
    mean of a block, so its centre lies (factor - 1) / 2 level-0 voxels further on; a nearest one
    (labels: every factor-th voxel) starts where level 0 does."""
    datasets = []
    for i, s in enumerate(scales):
        transforms: list[dict] = [{"type": "scale", "scale": [float(v) for v in s]}]
        if translation is not None and any(translation):
            shift = [float(t) + ((v - s0) / 2 if downscale_type == "mean" else 0.0)
                     for t, v, s0 in zip(translation, s, scales[0], strict=True)]
            transforms.append({"type": "translation", "translation": shift})
        datasets.append({"path": str(i), "coordinateTransformations": transforms})
    return {"multiscales": [{
        "version": NGFF_VERSION,
        "name": name,
        "axes": [{"name": a, "type": AXIS_TYPES[a], **({"unit": UNITS[a]} if a in UNITS else {})} for a in axes],
        "datasets": datasets,
        "type": downscale_type,
    }]}


def pyramid_factors(axes: str, shape: Sequence[int], n_levels: int | None, min_size: int = 512) -> list[tuple[int, ...]]:
    """Per-level downsampling factors (2 in y and x per level). ``n_levels=None``: down to < ``min_size`` px."""
    factors = [tuple(1 for _ in axes)]
    yx = [i for i, a in enumerate(axes) if a in "yx"]
    cur = list(shape)
    while True:
        if n_levels is not None and len(factors) >= n_levels:
            break
        if n_levels is None and max(cur[i] for i in yx) < min_size:
            break
        if min(cur[i] for i in yx) < 2:
            break
        prev = factors[-1]
        factors.append(tuple(p * 2 if i in yx else p for i, p in enumerate(prev)))
        cur = [-(-c // 2) if i in yx else c for i, c in enumerate(cur)]
    return factors


def create_image(path: str | Path, *, shape: Sequence[int], dtype: Any, axes: str, scale: Sequence[float],
                 chunks: Sequence[int], compression: Compression | None = None, name: str | None = None,
                 channel_names: Sequence[str] | None = None, n_levels: int | None = 1, is_label: bool = False,
                 attrs: dict | None = None, channel_colors: Sequence[str] | None = None,
                 translation: Sequence[float] | None = None) -> zarr.Array:
    """Create an empty OME-Zarr multiscale image; return level 0 for the caller to fill blockwise.

    ``translation``: where level 0's first voxel sits (axis units; an output aligned with an input
    passes the input's). Call ``write_pyramid`` after level 0 is complete to fill the lower levels.
    """
    axes = axes.lower()
    if len(axes) != len(shape) or len(scale) != len(shape) or (translation is not None and len(translation) != len(shape)):
        raise ValueError(f"axes {axes!r}, scale {scale}, translation {translation} and shape {shape} disagree")
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    factors = pyramid_factors(axes, shape, n_levels)
    scales = [[s * f for s, f in zip(scale, fac, strict=True)] for fac in factors]
    for level, fac in enumerate(factors):
        lshape = [-(-s // f) for s, f in zip(shape, fac, strict=True)]
        create_array(group, str(level), lshape, dtype, [min(c, s) for c, s in zip(chunks, lshape, strict=True)],
                     compression)
    meta = multiscales_attrs(axes, scales, name or Path(str(path)).name, "nearest" if is_label else "mean",
                             translation)
    if is_label:
        meta["image-label"] = {"version": NGFF_VERSION}
    if channel_names is not None and ("c" in axes or len(channel_names) == 1):  # keep a lone channel's name
        colors = list(channel_colors) if channel_colors and len(channel_colors) == len(channel_names) else None
        meta["omero"] = {"version": NGFF_VERSION, "channels": [
            {"label": str(n), "active": True, "color": colors[i] if colors else "FFFFFF", "coefficient": 1.0,
             "family": "linear", "inverted": False, "window": _window(np.dtype(dtype))}
            for i, n in enumerate(channel_names)]}
    meta["zarrseg"] = provenance(**(attrs or {}))
    group.attrs.update(meta)
    return group["0"]


def _window(dtype: np.dtype) -> dict:
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return {"start": 0, "end": float(info.max), "min": float(info.min), "max": float(info.max)}
    return {"start": 0.0, "end": 1.0, "min": 0.0, "max": 1.0}


def downsample(block: np.ndarray, ratio: Sequence[int], is_label: bool) -> np.ndarray:
    """Downsample by integer ``ratio``: mean (edge-padded) for images, nearest for labels."""
    if is_label:
        return block[tuple(slice(None, None, r) for r in ratio)]
    pad = [(0, (-s) % r) for s, r in zip(block.shape, ratio, strict=True)]
    if any(p[1] for p in pad):
        block = np.pad(block, pad, mode="edge")
    shape = [v for s, r in zip(block.shape, ratio, strict=True) for v in (s // r, r)]
    out = block.reshape(shape).mean(axis=tuple(range(1, len(shape), 2)))
    return np.round(out).astype(block.dtype) if block.dtype.kind in "uib" else out.astype(block.dtype)


def write_pyramid(path: str | Path, *, is_label: bool | None = None, dask_params: Any = None) -> None:
    """Fill levels 1..n from level n-1, block by block (chunk-aligned, bounded memory)."""
    from .blocks import BlockGrid
    from .parallel import map_blocks

    image = open_image(path, mode="r+")
    if is_label is None:
        is_label = "image-label" in image.attrs
    for level in range(1, len(image.level_paths)):
        prev, target = image.level(level - 1), image.level(level)
        ratio = tuple(max(1, -(-p // t)) for p, t in zip(prev.shape, target.shape, strict=True))
        # blocks of whole target chunks, a few MB each, so writes never share a chunk
        block_shape = [c * max(1, (256 // c) if a in "yx" else 1) for c, a in zip(target.chunks, image.axes, strict=True)]
        grid = BlockGrid(target.shape, block_shape)

        def fill(block, prev=prev, target=target, ratio=ratio):
            src = tuple(slice(s.start * r, min(s.stop * r, n)) for s, r, n in zip(block.inner, ratio, prev.shape,
                                                                              strict=True))
            target[block.inner] = downsample(np.asarray(prev[src]), ratio, is_label)[
                tuple(slice(0, n) for n in block.shape)]

        map_blocks(fill, grid, name=f"pyramid level {level}", dask_params=dask_params)


def _find_multiscale(group: zarr.Group, path: Path) -> zarr.Group:
    attrs = dict(group.attrs)
    if "multiscales" in attrs:
        return group
    if "bioformats2raw.layout" in attrs or "0" in group:
        sub = group.get("0")
        if isinstance(sub, zarr.Group) and "multiscales" in sub.attrs:
            return sub
    raise InputError("not an OME-Zarr image (no 'multiscales' metadata)", path)


def _image_of_level0(path: Path) -> Path | None:
    """The multiscale image whose level 0 is the array at ``path`` (old ``<output>/0`` addressing), else None."""
    try:
        attrs = dict(zarr.open_group(str(path.parent), mode="r").attrs)
        return path.parent if attrs["multiscales"][0]["datasets"][0]["path"] == path.name else None
    except Exception:  # no group, no multiscales: a bare array
        return None


def scene_path(path: str | Path, scene: int = 0) -> Path:
    """The image to open for ``scene`` of an ingest output: the root of a single-scene output
    (a plain NGFF image), ``<path>/<scene>`` of a multi-scene bioformats2raw container."""
    path = Path(path)
    try:
        attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception as err:
        raise InputError(f"cannot be opened as Zarr ({err})", path) from err
    if "multiscales" in attrs:
        if scene != 0:
            raise InputError(f"scene {scene} does not exist: a single-scene image", path)
        return path
    if not (path / str(scene) / ".zattrs").exists():
        raise InputError(f"scene {scene} does not exist in this container", path)
    return path / str(scene)


def check_intensity(image: Image) -> None:
    """Refuse a label image where intensities are expected: with the arguments swapped, a stage
    would run to the end on segment ids and write a plausible-looking result."""
    if "image-label" in image.attrs:
        raise InputError("is a label image (OME-Zarr 'image-label'), not an intensity image: give the raw image "
                         "or map here", image.path)


def warn_if_intensity(image: Image, what: str) -> None:
    """Label ids are read from ``image``: say so when its metadata marks an intensity image (NGFF
    display settings, no 'image-label'), e.g. the raw image given where a segmentation belongs."""
    attrs = image.attrs
    if "omero" in attrs and "image-label" not in attrs:
        log.warning("%s: the %s looks like an intensity image (OME-Zarr 'omero' metadata, no 'image-label'); "
                    "reading its values as label ids (stage label images with 'zarrseg ingest --labels')",
                    image.path, what)


def open_image(path: str | Path, mode: str = "r") -> Image:
    """Open an OME-Zarr multiscale image (or a bioformats2raw container: scene 0).

    Level 0 of a plain image (``<image>/0``, how scenes of single-scene outputs used to be
    addressed) opens as the image itself, so old paths keep their voxel size and channels.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("does not exist", path)
    try:
        node = zarr.open(str(path), mode=mode)
    except Exception as err:  # zarr raises several types for non-zarr folders
        raise InputError(f"cannot be opened as Zarr ({err})", path) from err
    if isinstance(node, zarr.Array):
        parent = _image_of_level0(path)
        if parent is not None:  # "<image>/0" of a plain image: the image itself, with its metadata
            return open_image(parent, mode)
        axes = "zyx"[-node.ndim:] if node.ndim <= 3 else "tczyx"[-node.ndim:]
        try:
            group = zarr.open_group(str(path.parent), mode=mode)
        except Exception as err:  # a bare array at the top level: no group, so no OME-Zarr metadata
            raise InputError("is a bare Zarr array, not an OME-Zarr image (no multiscales metadata); "
                             "stage the data with 'zarrseg ingest'", path) from err
        return Image(group=group, path=path, axes=axes,
                     scale=tuple(1.0 for _ in axes), level_paths=[path.name])
    group = _find_multiscale(node, path)
    try:
        ms = group.attrs["multiscales"][0]
        axes = "".join(a["name"] if isinstance(a, dict) else a for a in ms["axes"])
        units = {a["name"]: a["unit"] for a in ms["axes"] if isinstance(a, dict) and "unit" in a}
        datasets = ms["datasets"]
        transforms = datasets[0].get("coordinateTransformations", [])
        scale = tuple(float(v) for t in transforms if t["type"] == "scale" for v in t["scale"]) or tuple(1.0 for _ in axes)
        translation = tuple(float(v) for t in transforms if t["type"] == "translation" for v in t["translation"])
        if len(scale) != len(axes) or len(translation) not in (0, len(axes)):
            raise ValueError(f"{len(axes)} axes but scale {list(scale)}, translation {list(translation)}")
        channels = None
        if "omero" in group.attrs:
            channels = [c.get("label", str(i)) for i, c in enumerate(group.attrs["omero"].get("channels", []))]
        image = Image(group=group, path=Path(str(path)), axes=axes, scale=scale, units=units,
                      channel_names=channels, level_paths=[d["path"] for d in datasets], translation=translation)
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise InputError(f"has malformed OME-Zarr multiscales metadata ({type(err).__name__}: {err})", path) from err
    _check_level0(image)
    return image


def _check_level0(image: Image) -> None:
    """Level 0 must open as an array with one dimension per axis: a damaged or missing level is one
    line naming the image here, not a traceback from the first stage that reads it."""
    level = image.level_paths[0] if image.level_paths else "?"
    try:
        data = image.data
    except Exception as err:  # zarr raises several types for missing or unreadable metadata
        raise InputError(f"level {level!r} cannot be opened ({type(err).__name__}: {err})", image.path) from err
    if not isinstance(data, zarr.Array):
        raise InputError(f"level {level!r} is not a Zarr array", image.path)
    if len(set(image.axes)) != len(image.axes) or not set(image.axes) <= set("tczyx"):
        raise InputError(f"metadata names axes {image.axes!r}: each of t, c, z, y, x at most once, and no other",
                         image.path)
    if data.ndim != len(image.axes) or len(image.scale) != len(image.axes):
        raise InputError(f"metadata names axes {image.axes!r} ({len(image.scale)} scales) but level {level!r} "
                         f"has {data.ndim} dimensions", image.path)


def ignore_snakemake_markers() -> None:
    """Silence zarr's warning about the ``.snakemake_timestamp`` file in Snakemake's directory outputs.

    Snakemake marks every ``directory()`` output with that file; zarr (>= 3) warns "Object at
    .snakemake_timestamp is not recognized as a component of a Zarr hierarchy" whenever it
    lists such a group's members. Harmless and not the user's business; any other foreign
    object still warns (but zarrseg's own mark of a folder output, ``runs.MARK``).
    """
    warnings.filterwarnings(
        "ignore", message=r"Object at \.(snakemake_timestamp|zarrseg|zarrseg-files) is not recognized", category=UserWarning
    )


class SpatialView:
    """A 2D/3D spatial view of one channel and timepoint of an image, indexed by spatial boxes.

    Blockwise stages work on spatial volumes; this keeps the t/c bookkeeping in one place.
    """

    def __init__(self, array: zarr.Array, axes: str, channel: int = 0, timepoint: int = 0,
                 path: str | Path | None = None):
        self.array, self.axes, self.path = array, axes, path
        fixed: list[int | None] = []
        for a, size in zip(axes, array.shape, strict=True):
            if a == "c":
                if not 0 <= channel < size:
                    raise InputError(f"channel {channel} out of range (image has {size} channels)", path)
                fixed.append(channel)
            elif a == "t":
                if not 0 <= timepoint < size:
                    raise InputError(f"timepoint {timepoint} out of range (image has {size})", path)
                fixed.append(timepoint)
            else:
                fixed.append(None)
        for axis, index, name in (("c", channel, "channel"), ("t", timepoint, "timepoint")):
            if index and axis not in axes:  # a channel asked of a one-channel image: not silently channel 0
                raise InputError(f"{name} {index} asked for, but the image has no {name} axis (axes {axes!r})",
                                 path)
        self._fixed = fixed
        self.spatial_axes = "".join(a for a in axes if a in SPATIAL)

    @classmethod
    def of(cls, image: Image, channel: int = 0, timepoint: int = 0, level: int = 0) -> SpatialView:
        return cls(image.level(level), image.axes, channel, timepoint, path=image.path)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(s for s, f in zip(self.array.shape, self._fixed, strict=True) if f is None)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    @property
    def chunks(self) -> tuple[int, ...]:
        return tuple(c for c, f in zip(self.array.chunks, self._fixed, strict=True) if f is None)

    def _index(self, box: tuple[slice, ...]) -> tuple:
        it = iter(box)
        return tuple(next(it, slice(None)) if f is None else f for f in self._fixed)

    def __getitem__(self, box: tuple[slice, ...]) -> np.ndarray:
        try:
            return np.asarray(self.array[self._index(tuple(box))])
        except (ValueError, RuntimeError, OSError) as err:  # a damaged or truncated chunk file
            if isinstance(err, PermissionError):
                raise
            where = ", ".join(f"{s.start or 0}:{'' if s.stop is None else s.stop}" for s in box) if box else "all"
            raise InputError(f"cannot read the block [{where}] ({' '.join(str(err).split())})",
                             self.path or self.array.store_path) from err

    def __setitem__(self, box: tuple[slice, ...], value: np.ndarray) -> None:
        self.array[self._index(tuple(box))] = value

"""TIFF, ImageJ hyperstack and OME-TIFF input through tifffile.

``TiffFile.series`` resolves the file's axes (OME-XML DimensionOrder, ImageJ hyperstack
metadata, tifffile's own shaped metadata) and ``series.aszarr()`` exposes every strip/tile as
a lazily decoded chunk, so a box read decodes only the segments it touches.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile
import zarr

from ..errors import InputError
from .layout import ArrayLayout
from .source import UNIT_TO_UM, Scene, Source, canonical_axes

log = logging.getLogger(__name__)

TIME_TO_S = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9, "min": 60.0, "h": 3600.0, "d": 86400.0}


class TiffSource(Source):
    reader = "tifffile"
    reader_version = tifffile.__version__

    def __init__(self, path: Path, axes: str | None = None):
        super().__init__(path)
        with _tifffile_log() as messages:
            try:
                self._tif = tifffile.TiffFile(str(path))
                series = list(self._tif.series)
                n_pages = len(self._tif.pages)  # walks the whole IFD chain
            except Exception as err:  # tifffile raises TiffFileError, ValueError, struct.error, ...
                raise InputError(f"not a readable TIFF file ({type(err).__name__}: {err})", path) from err
        problems = [m for level, m in messages if level >= logging.ERROR]
        if problems or not n_pages or not series:
            self._tif.close()
            why = problems[0] if problems else "no image pages"
            raise InputError(f"not a readable TIFF file ({why}): truncated or corrupt", path)
        for _level, message in messages:
            log.info("%s: tifffile: %s", path, message)
        self._check_complete()
        try:
            self._arrays: list = []
            self._layouts: list[ArrayLayout] = []
            ome = self._ome_images() if self._tif.is_ome else []
            for index, s in enumerate(series):
                letters = canonical_axes(s.axes, tuple(s.shape), path, axes)
                layout = ArrayLayout(letters, tuple(int(v) for v in s.shape))
                sizes = layout.sizes()
                voxel, names = self._metadata(s, ome[index] if index < len(ome) else None, sizes)
                colors = _ome_channel_colors(ome[index], sizes["c"]) if index < len(ome) else None
                self.scenes.append(
                    Scene(
                        index=index,
                        name=s.name or f"series {index}",
                        sizes=sizes,
                        dtype=np.dtype(s.dtype).newbyteorder("="),
                        voxel_size=voxel,
                        channel_names=names,
                        channel_colors=colors,
                        extra={"tiff_axes": s.axes, "tiff_kind": s.kind},
                    )
                )
                self._layouts.append(layout)
                self._arrays.append(None)
        except BaseException:
            self._tif.close()
            raise

    def _array(self, scene: int):
        if self._arrays[scene] is None:
            series = self._tif.series[scene]
            if series.dataoffset is not None:  # uncompressed and contiguous: read byte ranges directly
                dtype = np.dtype(series.dtype).newbyteorder(self._tif.byteorder)
                self._arrays[scene] = ContiguousArray(
                    self.path, series.dataoffset, tuple(series.shape), dtype
                )
            else:
                store = series.aszarr(level=0)
                self._arrays[scene] = zarr.open_array(store, mode="r", zarr_format=2)
        return self._arrays[scene]

    def read(self, scene: int, t: int, c: slice, z: slice, y: slice, x: slice) -> np.ndarray:
        with _tifffile_log() as messages:
            try:
                data = self._layouts[scene].read(self._array(scene), t, c, z, y, x)
            except InputError:
                raise
            except Exception as err:
                raise InputError(
                    f"cannot decode TIFF pixels ({type(err).__name__}: {err})", self.path
                ) from err
        problems = [m for level, m in messages if level >= logging.ERROR]
        if problems:
            raise InputError(f"cannot decode TIFF pixels ({problems[0]})", self.path)
        return data

    def _check_complete(self) -> None:
        """Every strip/tile must lie inside the file: a truncated TIFF fails before any output exists."""
        size = self.path.stat().st_size
        for page in self._tif.pages:
            ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=False) if n]
            if ends and max(ends) > size:
                self._tif.close()
                raise InputError(
                    f"truncated TIFF: pixel data of page {page.index} ends at byte {max(ends)} but the "
                    f"file has {size} bytes",
                    self.path,
                )

    def close(self) -> None:
        for array in getattr(self, "_arrays", []):
            if isinstance(array, ContiguousArray):
                array.close()
        self._tif.close()

    # -- metadata ---------------------------------------------------------------------------------

    def _ome_images(self) -> list[ET.Element]:
        try:
            root = ET.fromstring(self._tif.ome_metadata or "")
        except ET.ParseError as err:
            log.warning("%s: OME-XML cannot be parsed (%s); ignoring it", self.path, err)
            return []
        return [el for el in root if el.tag.endswith("}Image") or el.tag == "Image"]

    def _metadata(
        self, series, image: ET.Element | None, sizes: dict[str, int]
    ) -> tuple[dict[str, float], list[str] | None]:
        if image is not None:
            return _ome_metadata(image, sizes)
        if self._tif.is_imagej:
            return _imagej_metadata(self._tif.imagej_metadata or {}, series.keyframe), None
        return _resolution_metadata(series.keyframe), None


@contextlib.contextmanager
def _tifffile_log() -> Iterator[list[tuple[int, str]]]:
    """Collect tifffile's log records instead of printing them: broken files become one error line."""
    logger = logging.getLogger("tifffile")
    messages: list[tuple[int, str]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append((record.levelno, " ".join(record.getMessage().split())))

    handler, propagate = Collect(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


class ContiguousArray:
    """Box reads from an uncompressed, contiguous TIFF series (``series.dataoffset`` is set).

    tifffile's zarr store decodes whole strips, so reading a y-band of a single-strip page
    reads the page again for every band; here each box is a few ``preadv`` calls of exactly
    the bytes it covers (ImageJ and tifffile write large uncompressed stacks this way).
    Reads go into fresh buffers (not a memory map), so they do not accumulate in our RSS.
    """

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.offset, self.shape, self.dtype = path, offset, shape, dtype
        self.ndim = len(shape)
        self._fd = os.open(path, os.O_RDONLY)
        self._strides = [math.prod(shape[i + 1 :]) for i in range(self.ndim)]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __getitem__(self, key: tuple) -> np.ndarray:
        ranges = []
        for k, n in zip(key, self.shape, strict=True):
            if isinstance(k, slice):
                start, stop, step = k.indices(n)
                if step != 1:
                    raise ValueError("only unit steps")
                ranges.append(range(start, stop))
            else:
                ranges.append(range(int(k), int(k) + 1))
        out = np.empty([len(r) for r in ranges], self.dtype)
        partial = [i for i, (r, n) in enumerate(zip(ranges, self.shape, strict=True)) if len(r) != n]
        split = partial[-1] if partial else 0  # axes after `split` are whole: one contiguous run each
        for index in itertools.product(*ranges[:split]):
            start = sum(i * st for i, st in zip(index, self._strides, strict=False))
            start += ranges[split].start * self._strides[split]
            target = out[tuple(i - r.start for i, r in zip(index, ranges, strict=False))]
            got = os.preadv(self._fd, [target], self.offset + start * self.dtype.itemsize)
            if got != target.nbytes:
                raise InputError(
                    f"truncated TIFF: pixel data ends early at byte {self.offset + start * self.dtype.itemsize + got}",
                    self.path,
                )
        return out.reshape([len(r) for r, k in zip(ranges, key, strict=True) if isinstance(k, slice)])


def _ome_pixels(image: ET.Element) -> tuple[ET.Element | None, list[ET.Element]]:
    """An OME Image's Pixels element and its Channel elements."""
    pixels = next((el for el in image if el.tag.endswith("Pixels")), None)
    return pixels, [] if pixels is None else [el for el in pixels if el.tag.endswith("Channel")]


def _ome_channel_colors(image: ET.Element, n_c: int) -> list[str] | None:
    """RRGGBB of each OME Channel's Color (a signed 32-bit RGBA integer); None unless every channel has one."""
    colors = []
    for ch in _ome_pixels(image)[1]:
        try:
            rgba = int(ch.get("Color", "")) & 0xFFFFFFFF
        except ValueError:
            return None
        colors.append(f"{rgba >> 8:06X}")
    return colors if len(colors) == n_c and n_c > 0 else None


def _ome_metadata(image: ET.Element, sizes: dict[str, int]) -> tuple[dict[str, float], list[str] | None]:
    pixels, channels = _ome_pixels(image)
    if pixels is None:
        return {}, None
    voxel: dict[str, float] = {}
    for axis in "zyx":
        value = pixels.get(f"PhysicalSize{axis.upper()}")
        if value is None:
            continue
        unit = pixels.get(f"PhysicalSize{axis.upper()}Unit", "µm")
        factor = UNIT_TO_UM.get(unit.lower())
        if factor is None:
            log.warning("unknown OME length unit %r; ignoring PhysicalSize%s", unit, axis.upper())
            continue
        if float(value) > 0:
            voxel[axis] = float(value) * factor
    increment = pixels.get("TimeIncrement")
    if increment and float(increment) > 0:
        factor = TIME_TO_S.get(pixels.get("TimeIncrementUnit", "s"))
        if factor is not None:
            voxel["t"] = float(increment) * factor
    names = [ch.get("Name") or ch.get("ID", f"C{i}") for i, ch in enumerate(channels)]
    if len(names) != sizes["c"]:
        names = None
    return voxel, names


def _imagej_metadata(meta: dict, page) -> dict[str, float]:
    """Voxel size from ImageJ's description. ImageJ writes ``yunit`` / ``zunit`` when they differ
    from ``unit`` and ``tunit`` when the frame interval is not in seconds."""
    unit = str(meta.get("unit", "")).strip().lower()
    factor = UNIT_TO_UM.get(unit)
    voxel: dict[str, float] = {}
    if meta.get("finterval"):  # ImageJ frame interval, in tunit (default seconds)
        tunit = str(meta.get("tunit", "sec")).strip().lower()
        seconds = TIME_TO_S.get(IMAGEJ_TIME_UNITS.get(tunit, tunit))
        if seconds is None:
            log.warning("unknown ImageJ time unit %r: frame interval %s kept as seconds", tunit, meta["finterval"])
        voxel["t"] = float(meta["finterval"]) * (seconds or 1.0)
    if factor is None:  # 'pixel', '' or unknown: ImageJ spatial calibration absent
        return {**voxel, **_resolution_metadata(page)}

    def axis_factor(key: str) -> float:
        other = str(meta.get(key, "")).strip().lower()
        return UNIT_TO_UM.get(other, factor) if other else factor

    for axis, tag, key in (("x", "XResolution", "unit"), ("y", "YResolution", "yunit")):
        size = _pixel_size(page, tag)
        if size is not None:
            voxel[axis] = size * axis_factor(key)
    spacing = meta.get("spacing")
    if spacing:
        voxel["z"] = float(spacing) * axis_factor("zunit")
    return voxel


# ImageJ's time unit names (Calibration.setTimeUnit) -> TIME_TO_S keys
IMAGEJ_TIME_UNITS = {"sec": "s", "second": "s", "seconds": "s", "msec": "ms", "millisecond": "ms",
                     "milliseconds": "ms", "usec": "us", "minute": "min", "minutes": "min", "hour": "h",
                     "hours": "h", "hr": "h", "day": "d", "days": "d"}


def _pixel_size(page, tag: str) -> float | None:
    if tag not in page.tags:
        return None
    num, den = page.tags[tag].value
    return den / num if num else None


def _resolution_metadata(page) -> dict[str, float]:
    """Plain TIFF: pixel size from X/YResolution only when the unit is centimetre (inch is DPI)."""
    unit = page.tags["ResolutionUnit"].value if "ResolutionUnit" in page.tags else 2
    if int(unit) != 3:
        return {}
    voxel = {}
    for axis, tag in (("x", "XResolution"), ("y", "YResolution")):
        size = _pixel_size(page, tag)
        if size is not None:
            voxel[axis] = size * 1e4
    return voxel

"""Zeiss CZI input through pylibCZIrw (the only module that imports it).

libCZI's single-channel scaling-tile accessor composes each requested box of a plane from
the layer-0 subblocks at their stage positions (M-index order, background where no tile
lies), so mosaics and tile regions with arbitrary, also negative, origins come out as the
ZEN-assembled image. We only decide the box: a scene's layer-0 bounding rectangle (or the
whole document's when it has no scenes) and read it in slabs.
"""

from __future__ import annotations

import logging
import struct
import xml.etree.ElementTree as ET
from importlib.metadata import version
from pathlib import Path

import numpy as np
from pylibCZIrw import czi as pyczi

from ..errors import InputError
from .source import Scene, Source

log = logging.getLogger(__name__)

MAGIC = b"ZISRAWFILE"
# CZI pixel type -> (numpy dtype, samples per pixel). Anything else (Gray32 int, Bgra32,
# Gray64ComplexFloat, ...) is rejected with a clear message.
PIXEL_TYPES = {
    "Gray8": ("u1", 1),
    "Gray16": ("u2", 1),
    "Gray32Float": ("f4", 1),
    "Bgr24": ("u1", 3),
    "Bgr48": ("u2", 3),
    "Bgr96Float": ("f4", 3),
}
# Dimensions other than T/Z/C/S/M that would silently be dropped if larger than 1.
UNSUPPORTED_DIMS = ("R", "I", "H", "V", "B")


class CziSource(Source):
    reader = "pylibCZIrw"
    reader_version = version("pylibCZIrw")

    def __init__(self, path: Path):
        super().__init__(path)
        with open(path, "rb") as fh:
            if fh.read(len(MAGIC)) != MAGIC:
                raise InputError("not a CZI file (no ZISRAWFILE header)", path)
        check_complete(path)
        try:
            self._ctx = pyczi.open_czi(str(path))
            self._czi = self._ctx.__enter__()
        except Exception as err:  # libCZI raises RuntimeError for truncated / corrupt files
            raise InputError(f"cannot open CZI file, truncated or corrupt ({_short(err)})", path) from err
        try:
            self._describe()
        except InputError:
            self.close()
            raise
        except Exception as err:
            self.close()
            raise InputError(f"cannot read CZI metadata, truncated or corrupt ({_short(err)})", path) from err

    def _describe(self) -> None:
        box = self._czi.total_bounding_box_no_pyramid
        for dim in UNSUPPORTED_DIMS:
            if dim in box and box[dim][1] - box[dim][0] > 1:
                raise InputError(
                    f"CZI dimension {dim} of size {box[dim][1] - box[dim][0]} is not supported "
                    "(only scenes, T, C, Z, Y, X and mosaic tiles)",
                    self.path,
                )
        n_c = box["C"][1] - box["C"][0]
        kinds = {self._czi.get_channel_pixel_type(c) for c in range(n_c)}
        if len(kinds) != 1:
            raise InputError(f"channels have different pixel types {sorted(kinds)}; not supported", self.path)
        self.pixel_type = kinds.pop()
        if self.pixel_type not in PIXEL_TYPES:
            raise InputError(
                f"unsupported CZI pixel type {self.pixel_type!r} (supported: {', '.join(PIXEL_TYPES)})",
                self.path,
            )
        dtype, self.samples = PIXEL_TYPES[self.pixel_type]
        self._n_c = n_c
        meta = ET.fromstring(self._czi.raw_metadata)
        voxel = _scaling(meta)
        interval = _time_increment(meta)
        if interval is None and box["T"][1] - box["T"][0] > 1:
            interval = timestamps_step(self.path)  # ZEN keeps the real times in an attachment
        if interval is not None:
            voxel["t"] = interval
        names, colors = _channel_display(meta, n_c)
        if self.samples == 3:  # BGR samples become R, G, B channels
            names = [f"{n} {rgb}" if n_c > 1 else rgb for n in names for rgb in "RGB"]
            colors = ["FF0000", "00FF00", "0000FF"] * n_c
        try:
            rects = self._czi.scenes_bounding_rectangle_no_pyramid
        except ValueError as err:
            log.warning("%s: %s; reading the whole document as one scene", self.path, err)
            rects = {}
        scene_names = _scene_names(meta)
        if not rects:
            rects = {None: self._czi.total_bounding_rectangle_no_pyramid}
        self._rects = []
        for index, (key, rect) in enumerate(
            sorted(rects.items(), key=lambda kv: -1 if kv[0] is None else kv[0])
        ):
            sizes = {
                "t": box["T"][1] - box["T"][0],
                "c": n_c * self.samples,
                "z": box["Z"][1] - box["Z"][0],
                "y": rect.h,
                "x": rect.w,
            }
            name = scene_names.get(key, f"scene {key}") if key is not None else self.path.stem
            self._rects.append((key, rect))
            self.scenes.append(
                Scene(
                    index=index,
                    name=name,
                    sizes=sizes,
                    dtype=np.dtype(dtype),
                    voxel_size=dict(voxel),
                    channel_names=names,
                    channel_colors=colors,
                    extra={
                        "czi_scene": key,
                        "czi_origin_yx": [rect.y, rect.x],
                        "czi_pixel_type": self.pixel_type,
                    },
                    origin_px={"y": float(rect.y), "x": float(rect.x)},
                )
            )
        self._t0, self._z0 = box["T"][0], box["Z"][0]

    def read(self, scene: int, t: int, c: slice, z: slice, y: slice, x: slice) -> np.ndarray:
        key, rect = self._rects[scene]
        ny, nx = y.stop - y.start, x.stop - x.start
        out = np.empty((c.stop - c.start, z.stop - z.start, ny, nx), dtype=self.scenes[scene].dtype)
        roi = (rect.x + x.start, rect.y + y.start, nx, ny)
        # output channel k is CZI channel k // samples; BGR memory order -> channels R, G, B
        for channel in range(c.start // self.samples, (c.stop - 1) // self.samples + 1):
            for k, zi in enumerate(range(z.start, z.stop)):
                plane = {"T": self._t0 + t, "Z": self._z0 + zi, "C": channel}
                try:
                    tile = self._czi.read(roi=roi, plane=plane, scene=key, pixel_type=self.pixel_type)
                except Exception as err:
                    raise InputError(
                        f"cannot decode CZI plane {plane} ({_short(err)}); the file may be "
                        "truncated or corrupt",
                        self.path,
                    ) from err
                for sample in range(self.samples):
                    index = channel * self.samples + sample
                    if c.start <= index < c.stop:
                        out[index - c.start, k] = tile[..., self.samples - 1 - sample]
        return out

    def close(self) -> None:
        ctx, self._ctx = getattr(self, "_ctx", None), None
        if ctx is not None:
            ctx.__exit__(None, None, None)


def check_complete(path: Path) -> None:
    """Fail fast on a truncated CZI: every segment the header and directory point to must end inside the file.

    libCZI only notices missing bytes when it decodes the affected subblock, i.e. mid-conversion;
    this walks the file header and subblock directory (fixed binary layout of the CZI spec) first.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:

        def segment_end(pos: int, expected: bytes) -> int:
            fh.seek(pos)
            head = fh.read(32)
            if len(head) < 32 or not head.startswith(expected):
                raise InputError(
                    f"truncated or corrupt CZI: no {expected.decode()} segment at offset {pos} "
                    f"(file size {size})",
                    path,
                )
            return pos + 32 + struct.unpack_from("<q", head, 16)[0]  # header + used size

        segment_end(0, MAGIC)
        fh.seek(32 + 52)
        header = fh.read(28)
        if len(header) < 28:
            raise InputError(f"truncated CZI: file header incomplete (file size {size})", path)
        directory, metadata, _pending, attachments = struct.unpack("<qqiq", header)
        ends = [segment_end(metadata, b"ZISRAWMETADATA")] if metadata else []
        if attachments:
            ends.append(segment_end(attachments, b"ZISRAWATTDIR"))
        if directory:
            ends.append(segment_end(directory, b"ZISRAWDIRECTORY"))
            fh.seek(directory + 32)
            (count,) = struct.unpack("<i", fh.read(4))
            fh.seek(124, 1)
            last = 0
            for _ in range(count):
                entry = fh.read(32)
                if len(entry) < 32:
                    raise InputError(f"truncated CZI: subblock directory incomplete (file size {size})", path)
                last = max(last, struct.unpack_from("<q", entry, 6)[0])
                fh.seek(20 * struct.unpack_from("<i", entry, 28)[0], 1)
            if count:
                ends.append(segment_end(last, b"ZISRAWSUBBLOCK"))
        if max(ends, default=0) > size:
            raise InputError(
                f"truncated CZI: data extends to byte {max(ends)} but the file has only {size} bytes", path
            )


def timestamps_step(path: Path) -> float | None:
    """Mean seconds between timepoints from the CZI's "TimeStamps" attachment (CZTIMS), if any.

    pylibCZIrw does not expose attachments; their directory has the fixed binary layout of the
    CZI spec (entries of 128 bytes: file position at 12, content type at 40, name at 48), and a
    CZTIMS attachment holds int32 size, int32 count, then ``count`` float64 seconds.
    """
    try:
        with open(path, "rb") as fh:
            fh.seek(32 + 52 + 20)
            (directory,) = struct.unpack("<q", fh.read(8))
            if not directory:
                return None
            fh.seek(directory)
            if not fh.read(32).startswith(b"ZISRAWATTDIR"):
                return None
            (count,) = struct.unpack("<i", fh.read(4))
            fh.seek(252, 1)
            entries = [fh.read(128) for _ in range(count)]
            for entry in entries:
                if entry[40:48].rstrip(b"\0") != b"CZTIMS":
                    continue
                fh.seek(struct.unpack_from("<q", entry, 12)[0] + 32 + 256)  # segment header + attachment header
                _size, n = struct.unpack("<ii", fh.read(8))
                stamps = struct.unpack(f"<{n}d", fh.read(8 * n)) if 1 < n < 10**7 else ()
                if len(stamps) > 1 and stamps[-1] > stamps[0]:
                    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    except (OSError, struct.error):
        return None
    return None


def _short(err: Exception) -> str:
    return " ".join(str(err).split())[:200] or type(err).__name__


def _scaling(meta: ET.Element) -> dict[str, float]:
    """Voxel size in µm from Metadata/Scaling (metres in the file); zero means 'not calibrated'."""
    voxel = {}
    for dist in meta.iterfind("Metadata/Scaling/Items/Distance"):
        axis = (dist.get("Id") or "").lower()
        value = dist.findtext("Value")
        if axis in ("x", "y", "z") and value:
            try:
                metres = float(value)
            except ValueError:
                continue
            if metres > 0:
                voxel[axis] = metres * 1e6
    return voxel


def _time_increment(meta: ET.Element) -> float | None:
    """Seconds between timepoints: T/Positions/Interval/Increment, else the mean step of T/Positions/List."""
    positions = meta.find("Metadata/Information/Image/Dimensions/T/Positions")
    if positions is None:
        return None
    try:
        increment = positions.findtext("Interval/Increment")
        if increment:
            return float(increment) if float(increment) > 0 else None
        offsets = [float(v) for v in (positions.findtext("List/Offsets") or "").split()]
    except ValueError:
        return None
    if len(offsets) > 1 and offsets[-1] > offsets[0]:
        return (offsets[-1] - offsets[0]) / (len(offsets) - 1)
    return None


def _channel_display(meta: ET.Element, n_c: int) -> tuple[list[str], list[str] | None]:
    """Channel names and RRGGBB display colours. Names come from the image information, else from
    the display settings (some files name their channels only there), matched by channel Id or,
    failing that, by position."""
    channels = meta.findall("Metadata/Information/Image/Dimensions/Channels/Channel")
    display = meta.findall("Metadata/DisplaySetting/Channels/Channel")
    by_id = {ch.get("Id"): ch for ch in display if ch.get("Id")}
    if len(channels) == n_c:
        shown = [by_id.get(ch.get("Id")) for ch in channels]
        if any(d is None for d in shown):
            shown = display if len(display) == n_c else [None] * n_c
        names = [ch.get("Name") or ch.findtext("Name") or "" for ch in channels]
    else:
        shown, names = (display if len(display) == n_c else [None] * n_c), [""] * n_c
    names = [n.strip() or (d.get("Name") or "" if d is not None else "").strip() for n, d in zip(names, shown, strict=True)]
    colors = [_rgb_hex(d.findtext("Color") if d is not None else None) for d in shown]
    return [n or f"C{i}" for i, n in enumerate(names)], None if None in colors else colors


def _rgb_hex(color: str | None) -> str | None:
    """'#AARRGGBB' or '#RRGGBB' (ZEN's colours) -> 'RRGGBB'."""
    value = (color or "").strip().lstrip("#")
    if len(value) not in (6, 8) or any(c not in "0123456789abcdefABCDEF" for c in value):
        return None
    return value[-6:].upper()


def _scene_names(meta: ET.Element) -> dict[int, str]:
    out = {}
    for scene in meta.iterfind("Metadata/Information/Image/Dimensions/S/Scenes/Scene"):
        try:
            out[int(scene.get("Index", ""))] = scene.get("Name") or f"scene {scene.get('Index')}"
        except ValueError:
            continue
    return out

"""2D PNG / JPEG input through Pillow (the only module that imports it).

PNG and JPEG are the common formats of 2D microscopy exports, screenshots of stained slides
and natural images. They carry no usable physical pixel size (DPI is a printing hint), so the
voxel size comes from ``ingest.voxel_size`` (else 1 µm with the writer's warning). Neither
format decodes boxes independently, so the image is decoded once, when opened: a truncated or
corrupt file fails before any output exists, and slab reads are slices of that array.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from .source import Scene, Source

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
# Pillow mode -> (mode to convert to, channel names); None: keep the mode, one grey channel.
MODES = {
    "1": ("L", None),
    "L": (None, None),
    "I;16": (None, None),
    "I;16B": (None, None),
    "I;16L": (None, None),
    "I": (None, None),
    "F": (None, None),
    "LA": (None, ["grey", "alpha"]),
    "RGB": (None, ["R", "G", "B"]),
    "RGBA": (None, ["R", "G", "B", "A"]),
    "P": ("RGB", ["R", "G", "B"]),
    "PA": ("RGBA", ["R", "G", "B", "A"]),
    "CMYK": ("RGB", ["R", "G", "B"]),
    "YCbCr": ("RGB", ["R", "G", "B"]),
    "LAB": ("RGB", ["R", "G", "B"]),
    "HSV": ("RGB", ["R", "G", "B"]),
}


# PNG colour types of 16-bit images Pillow narrows to 8 bits -> channel names
DEEP_PNG_CHANNELS = {2: ["R", "G", "B"], 4: ["grey", "alpha"], 6: ["R", "G", "B", "A"]}


def _deep_colour_png(path: Path) -> list[str] | None:
    """Channel names of a 16-bit colour (or grey + alpha) PNG, read from its header; None otherwise."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or not head.startswith(PNG_MAGIC) or head[12:16] != b"IHDR":
        return None
    depth, colour_type = head[24], head[25]
    return DEEP_PNG_CHANNELS.get(colour_type) if depth == 16 else None


def _pillow_pixels(path: Path) -> tuple[str, list[str] | None, np.ndarray]:
    """Format, channel names and pixels of a single-frame image Pillow decodes faithfully."""
    with Image.open(path) as img:
        if getattr(img, "n_frames", 1) > 1:
            raise InputError(f"{img.format} with {img.n_frames} frames; only single 2D images are read", path)
        if img.mode not in MODES:
            raise InputError(f"unsupported {img.format} pixel mode {img.mode!r}", path)
        target, names = MODES[img.mode]
        if img.mode == "P" and "transparency" in img.info:
            target, names = "RGBA", ["R", "G", "B", "A"]
        img.load()  # decodes everything: a truncated file fails here
        return img.format, names, np.asarray(img.convert(target) if target else img)


class PillowSource(Source):
    reader = "Pillow"  # (imagecodecs for 16-bit colour PNGs)
    reader_version = version("Pillow")

    def __init__(self, path: Path):
        super().__init__(path)
        Image.MAX_IMAGE_PIXELS = None  # microscopy mosaics are large on purpose, not decompression bombs
        deep = _deep_colour_png(path)
        try:
            if deep is not None:  # Pillow reads 16-bit colour PNGs as 8 bits: decode them with imagecodecs
                import imagecodecs

                kind, names, pixels = "PNG", deep, imagecodecs.png_decode(path.read_bytes())
            else:
                kind, names, pixels = _pillow_pixels(path)
        except InputError:
            raise
        except Exception as err:  # PIL raises OSError / SyntaxError / ValueError for broken files
            raise InputError(f"cannot decode image, truncated or corrupt ({' '.join(str(err).split())})", path) from err
        if pixels.dtype == bool:
            pixels = pixels.astype(np.uint8) * 255
        self._pixels = pixels if pixels.ndim == 3 else pixels[..., np.newaxis]  # (Y, X, C)
        n_y, n_x, n_c = self._pixels.shape
        self.scenes.append(
            Scene(
                index=0,
                name=path.stem,
                sizes={"t": 1, "c": n_c, "z": 1, "y": n_y, "x": n_x},
                dtype=np.dtype(self._pixels.dtype.str).newbyteorder("="),
                channel_names=names,
                extra={"image_format": kind},
            )
        )

    def read(self, scene: int, t: int, c: slice, z: slice, y: slice, x: slice) -> np.ndarray:
        box = self._pixels[y, x, c]  # (Y, X, C)
        return np.ascontiguousarray(np.moveaxis(box, -1, 0)[:, np.newaxis])  # (C, Z=1, Y, X)

    def close(self) -> None:
        self._pixels = np.empty((0, 0, 0), np.uint8)

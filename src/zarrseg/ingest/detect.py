"""Pick the reader for an input from its magic bytes (the extension only names the error)."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .params import IngestParams
from .source import Source

TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
EXTENSIONS = {
    ".czi": "pylibczirw",
    ".tif": "tifffile",
    ".tiff": "tifffile",
    ".btf": "tifffile",
    ".h5": "h5py",
    ".hdf5": "h5py",
    ".hdf": "h5py",
    ".he5": "h5py",
    ".png": "pillow",
    ".jpg": "pillow",
    ".jpeg": "pillow",
}
KINDS = {"pylibczirw": "CZI", "tifffile": "TIFF", "h5py": "HDF5", "pillow": "PNG/JPEG"}


def resolve_input(spec: str | Path) -> tuple[Path, str | None]:
    """The file of an input spec and, for ``file.h5:dataset``, the dataset name."""
    from .hdf5 import split_h5_spec

    path = Path(spec)
    if path.is_file():
        return path, None
    h5 = split_h5_spec(str(spec))
    if h5 is not None and h5[0].is_file():
        return h5
    missing = h5[0] if h5 is not None else path
    if missing.is_dir():
        raise InputError("is a directory, expected a CZI, TIFF, HDF5, PNG or JPEG file", missing)
    raise InputError("does not exist", missing)


def sniff(path: Path) -> str:
    """'pylibczirw', 'tifffile', 'h5py' or 'pillow' from the first bytes of ``path``."""
    from .czi import MAGIC as CZI_MAGIC
    from .hdf5 import MAGIC as H5_MAGIC
    from .pillow import JPEG_MAGIC, PNG_MAGIC

    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as err:
        raise InputError(f"cannot be read ({err.strerror})", path) from err
    if not head:
        raise InputError("file is empty", path)
    if head.startswith(CZI_MAGIC):
        return "pylibczirw"
    if head[:4] in TIFF_MAGICS:
        return "tifffile"
    if head.startswith(H5_MAGIC):
        return "h5py"
    if head.startswith(PNG_MAGIC) or head.startswith(JPEG_MAGIC):
        return "pillow"
    kind = KINDS.get(EXTENSIONS.get(path.suffix.lower(), ""))
    if kind:
        raise InputError(f"not a {kind} file (its header is not a {kind} signature)", path)
    raise InputError("unsupported file type (expected CZI, TIFF/OME-TIFF, HDF5, PNG or JPEG)", path)


def open_source(path: Path, dataset: str | None, params: IngestParams) -> Source:
    reader = sniff(path) if params.reader == "auto" else params.reader
    if params.reader != "auto" and path.stat().st_size == 0:
        raise InputError("file is empty", path)
    if reader == "pylibczirw":
        from .czi import CziSource

        if params.axes is not None:
            raise InputError("parameter 'axes' applies to TIFF/HDF5 only; CZI files name their axes", path)
        return CziSource(path)
    if reader == "pillow":
        from .pillow import PillowSource

        if params.axes is not None:
            raise InputError("parameter 'axes' applies to TIFF/HDF5 only; PNG/JPEG images are 2D (yx or cyx)", path)
        return PillowSource(path)
    if reader == "tifffile":
        from .tiff import TiffSource

        return TiffSource(path, axes=params.axes)
    from .hdf5 import Hdf5Source

    return Hdf5Source(path, dataset, axes=params.axes)

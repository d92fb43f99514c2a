"""Staging: CZI / TIFF / OME-TIFF / HDF5 -> OME-Zarr (NGFF 0.4), streamed and atomic.

Why these readers
-----------------
* **CZI: pylibCZIrw** (Zeiss' own Python binding of libCZI, the reference implementation of
  the format). It decodes every compression ZEN writes (JPG-XR, zstd0/zstd1 incl. the
  hi-lo byte packing), assembles mosaics/tile regions from their stage positions (also with
  negative origins) through libCZI's tile accessor, reads any box of a plane (so huge
  mosaics are streamed, never loaded whole) and exposes the XML metadata. It reads every
  file in the shared test set; czifile cannot decode the zstd files, and bioio-czi /
  aicspylibczi wrap the same libCZI behind an extra layer (aicspylibczi is GPL-3.0).
* **TIFF / ImageJ / OME-TIFF: tifffile**, the de-facto standard TIFF reader of the
  scientific Python stack. ``TiffFile.series`` resolves the axes from OME-XML, ImageJ
  hyperstack or tifffile metadata, and ``series.aszarr()`` decodes only the strips/tiles a
  box touches, so reading is lazy and chunk-wise whatever the file's layout.
* **HDF5 (``file.h5:dataset``): h5py** hyperslab reads, for EM volumes, boundary maps and
  label images used as pre-computed samples or ground truth.

Every reader sits behind one ``Source`` interface (``source.py``); ``writer.py`` streams
chunk-aligned slabs into Zarr so peak memory is bounded by ``slab_mb``, not the file size.
"""

from .detect import open_source, resolve_input
from .params import IngestParams
from .source import Scene, Source
from .writer import ingest

__all__ = ["IngestParams", "Scene", "Source", "ingest", "open_source", "resolve_input"]

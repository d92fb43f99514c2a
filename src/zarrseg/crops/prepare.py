"""Crop preparation: sliding-window crops of the middle planes of staged images, split by acquisition.

The thesis (Zwijghuizen §3.1) cuts 320 x 320 crops from the middle z-planes of each acquisition
with a sliding window that moves a fraction of the crop (overlap), drops crops with < 3 %
foreground and adds 90/180/270 degree rotations. Here:

* every acquisition belongs to exactly one split (pretrain / finetune / test), so overlapping
  crops of one image never land on both sides of a split;
* the crops of a split are one Zarr array ``<split>/image`` (N x S x S, ``chunk`` crops per chunk
  file: a file per crop made writing 3-4x slower, a training batch of scattered crops reads
  ``chunk`` crops per crop it uses) with its masks ``<split>/mask`` (uint8 0/1);
  ``origins.parquet`` (and ``.csv``) says where each crop comes from; ``shards: true`` packs
  ``buffer`` crops per file instead (few files, faster writes, slower scattered reads);
* rotations are not stored: a store made with ``rotations: true`` tells its readers to draw one
  of the four rotations per read, which is the thesis' rotated set in expectation at a quarter
  of the disk space and write time;
* the stage streams: a few planes (and masks: the one being cut, the next ones being read ahead)
  plus two buffers of crops in memory, whatever the number of acquisitions; reading (a forked
  process, ``reader.py``: zarr's event loop would otherwise serialise reads and writes), cutting
  and writing (a thread) overlap;
* intensities are normalised per plane (``normalization``) before cropping, as inference
  normalises each image, and stored as float16 (``method: none``: the source dtype).
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from zarr.codecs import BloscCodec

from .. import ome
from ..errors import InputError
from ..normalize import Normalization, VolumeStats, apply, array_stats
from .params import SPLITS, CropParams, CropSource

log = logging.getLogger(__name__)

TABLE = "origins.parquet"
READ_AHEAD = 2  # planes read and prepared at once, in as many threads, while one is cut


@dataclass
class Acquisition:
    """An opened source: its image / mask views and the planes crops come from."""

    source: CropSource
    image: ome.SpatialView
    labels: ome.SpatialView | None
    planes: list[int | None]  # z indices (None: a 2D image)

    @property
    def name(self) -> str:
        return self.source.name or self.source.image

    def plane(self, z: int | None) -> tuple[np.ndarray, np.ndarray | None]:
        box = (slice(None), slice(None)) if z is None else (slice(z, z + 1), slice(None), slice(None))
        image = self.image[box]
        labels = None if self.labels is None else self.labels[box]
        if z is not None:
            image, labels = image[0], None if labels is None else labels[0]
        return image, labels


def middle_planes(n_z: int, wanted: int) -> list[int]:
    """The ``wanted`` planes around the middle of ``n_z`` (all of them when there are fewer)."""
    k = min(wanted, n_z)
    start = (n_z - k) // 2
    return list(range(start, start + k))


def window_starts(length: int, size: int, step: int) -> list[int]:
    """Sliding-window starts along one axis; the last window ends at the border (full coverage)."""
    starts = list(range(0, length - size + 1, step))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def open_acquisition(source: CropSource, params: CropParams) -> Acquisition:
    """Open and check one source before anything is written (shapes, crop size, mask type)."""
    image = ome.SpatialView.of(ome.open_image(source.image), channel=source.channel)
    if image.ndim not in (2, 3):
        raise InputError(f"crops need a 2D or 3D image, got spatial shape {list(image.shape)}", source.image)
    height, width = image.shape[-2:]
    if params.crop_size > min(height, width):
        raise InputError(
            f"crop size {params.crop_size} is larger than the image ({height} x {width} pixels); "
            "lower crops.crop_size",
            source.image,
        )
    labels = None
    if source.labels is not None:
        labels = ome.SpatialView.of(ome.open_image(source.labels))
        if labels.shape != image.shape:
            raise InputError(f"mask shape {list(labels.shape)} differs from the image's {list(image.shape)}",
                             source.labels)
        if labels.dtype.kind not in "uib":
            raise InputError(f"a mask must be an integer or boolean image, got {labels.dtype}", source.labels)
    planes: list[int | None] = [None] if image.ndim == 2 else middle_planes(image.shape[0], params.planes)
    return Acquisition(source, image, labels, planes)


def foreground(labels: np.ndarray, mode: str, path: str) -> np.ndarray:
    """Binary foreground (uint8 0/1) of a mask plane; a 'binary' mask with several object values is an error."""
    if mode == "binary":
        values = labels[labels != 0]
        if values.size and values.min() != values.max():
            shown = np.unique(values)[:4].tolist()
            raise InputError(
                f"mask is not binary (non-zero values {shown}...); set crops.masks: instances to take "
                "every label > 0 as foreground",
                path,
            )
    return np.not_equal(labels, 0).view(np.uint8)


def normalised(plane: np.ndarray, norm: Normalization) -> np.ndarray:
    """``plane`` normalised as ``norm`` says, in float16. Unsigned planes of at most 16 bits use
    their histogram (exact statistics in one pass) and a lookup table (4x faster than arithmetic);
    signed ones take the general path (a negative value cannot index a table)."""
    if plane.dtype.kind != "u" or plane.dtype.itemsize > 2:
        return apply(plane, array_stats(plane, norm), norm).astype(np.float16)
    hist = histogram(plane)
    values = np.arange(hist.size, dtype=np.float64)
    n = float(plane.size)
    # elementwise sums, not ``hist @ values``: a BLAS call wakes OpenBLAS's threads, which then
    # spin on the cores the reader and writer threads need
    mean = float(np.sum(hist * values)) / n
    cdf = np.cumsum(hist)

    def percentile(q: float) -> float:  # numpy's 'linear' percentile, from the histogram
        rank = q / 100.0 * (n - 1)
        lo, hi = np.searchsorted(cdf, [np.floor(rank) + 1, np.ceil(rank) + 1])
        return float(lo + (rank - np.floor(rank)) * (hi - lo))

    stats = VolumeStats(
        minimum=float(np.flatnonzero(hist)[0]), maximum=float(np.flatnonzero(hist)[-1]), mean=mean,
        std=float(np.sqrt(max(float(np.sum(hist * values**2)) / n - mean * mean, 0.0))),
        low=percentile(norm.lower), high=percentile(norm.upper), count=int(n),
    )
    lut = apply(np.arange(hist.size), stats, norm).astype(np.float16)
    out = np.empty(plane.shape, dtype=np.float16)
    flat_in, flat_out = plane.reshape(-1), out.reshape(-1)
    # ``np.take`` converts its indices to intp: a whole plane at once allocated (and the kernel
    # zeroed) 8 bytes per pixel; blocks of 64 Ki pixels reuse one cached buffer (~25 % faster)
    for start in range(0, flat_in.size, _BLOCK):
        np.take(lut, flat_in[start : start + _BLOCK], out=flat_out[start : start + _BLOCK])
    return out


_BLOCK = 1 << 16  # pixels per step of the blockwise histogram and lookup (a 512 KiB intp buffer)


def histogram(plane: np.ndarray) -> np.ndarray:
    """Exact histogram (one bin per value) of an unsigned integer plane of at most 16 bits.

    ``np.bincount`` converts its input to intp; 8-bit planes are counted in blocks so that
    conversion reuses one cache-sized buffer instead of allocating 8 bytes per pixel (16-bit
    ones at once: a block's 65,536-bin count would cost more than the conversion)."""
    flat = plane.reshape(-1)
    bins = int(np.iinfo(flat.dtype).max) + 1
    if flat.dtype.itemsize > 1:
        return np.bincount(flat, minlength=bins)
    hist = np.zeros(bins, dtype=np.int64)
    for start in range(0, flat.size, _BLOCK):
        hist += np.bincount(flat[start : start + _BLOCK], minlength=bins)
    return hist


def window_sums(mask: np.ndarray, ys: list[int], xs: list[int], size: int) -> np.ndarray:
    """Foreground pixel count of every window: rows summed once into the bands between window
    edges, then prefix sums over bands and over columns (one pass over the plane). A sum per band
    adds whole rows (SIMD); ``np.add.reduceat`` with a wider dtype was 20x slower."""
    edges = np.unique(np.concatenate([ys, np.asarray(ys) + size]))
    prefix = np.zeros((edges.size, mask.shape[1]), dtype=np.int64)
    for i in range(edges.size - 1):  # prefix[i + 1]: rows edges[i] .. edges[i + 1]
        prefix[i + 1] = mask[edges[i] : edges[i + 1]].sum(axis=0, dtype=np.int32)
    np.cumsum(prefix, axis=0, out=prefix)
    top, bottom = np.searchsorted(edges, ys), np.searchsorted(edges, np.asarray(ys) + size)
    rows = np.zeros((len(ys), mask.shape[1] + 1), dtype=np.int64)
    np.cumsum(prefix[bottom] - prefix[top], axis=1, out=rows[:, 1:])
    x0 = np.asarray(xs)
    return rows[:, x0 + size] - rows[:, x0]


class SplitWriter:
    """Appends crops of one split to its Zarr arrays, ``buffer`` crops per write.

    Writes run in one background thread while the next plane is read and cut (two buffers:
    bounded memory), as ingest overlaps reading and writing.
    """

    def __init__(self, root: zarr.Group, split: str, params: CropParams, dtype: np.dtype):
        size, n = params.crop_size, params.buffer_crops
        c = params.compression
        image_codec = None if c.codec == "none" else BloscCodec(cname=c.codec, clevel=c.level, shuffle=c.shuffle)
        layout = {"chunks": (params.chunk, size, size), **({"shards": (n, size, size)} if params.shards else {})}
        # every chunk holds crops: zarr's per-chunk test for a chunk of fill values (an array
        # comparison against a new chunk of zeros) was half the write time
        layout["config"] = {"write_empty_chunks": True}
        # chunk files side by side (c.<i>.0.0): the default c/<i>/0/0 made two directories per chunk
        layout["chunk_key_encoding"] = {"name": "default", "separator": "."}
        self.image = root.create_array(f"{split}/image", shape=(0, size, size), dtype=dtype,
                                       compressors=image_codec, **layout)
        # binary masks shrink 20-100x with lz4 at no noticeable decoding cost
        self.mask = root.create_array(f"{split}/mask", shape=(0, size, size), dtype="uint8",
                                      compressors=BloscCodec(cname="lz4", clevel=1, shuffle="noshuffle"), **layout)
        self.buffers = [(np.zeros((n, size, size), dtype=dtype), np.zeros((n, size, size), dtype=np.uint8))
                        for _ in range(2)]
        self.pending: list[concurrent.futures.Future | None] = [None, None]
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"crops-{split}")
        self.split = split
        self.current = 0  # buffer being filled
        self.filled = 0  # crops in it
        self.count = 0  # crops written or buffered

    def add(self, image: np.ndarray, mask: np.ndarray | None) -> int:
        """Buffer one crop; returns its index in the split."""
        buf_image, buf_mask = self.buffers[self.current]
        buf_image[self.filled] = image
        buf_mask[self.filled] = 0 if mask is None else mask
        self.filled += 1
        self.count += 1
        if self.filled == buf_image.shape[0]:
            self.flush()
        return self.count - 1

    def flush(self) -> None:
        """Hand the filled buffer to the writer thread and continue in the other one."""
        if not self.filled:
            return
        start, n, k = self.count - self.filled, self.filled, self.current
        self.pending[k] = self.pool.submit(self._write, start, n, *self.buffers[k])
        self.current, self.filled = 1 - k, 0
        waiting = self.pending[self.current]
        if waiting is not None:  # the other buffer is free once its write is done
            waiting.result()

    def _write(self, start: int, n: int, image: np.ndarray, mask: np.ndarray) -> None:
        if start + n > self.image.shape[0]:
            # grow by doubling (cut to the crop count at close): each resize rewrites both arrays'
            # metadata, which cost as much as writing a third of the crops when done per write
            shape = (max(start + n, 2 * self.image.shape[0]), *image.shape[1:])
            self.image.resize(shape)
            self.mask.resize(shape)
        self.image[start : start + n] = image[:n]
        self.mask[start : start + n] = mask[:n]

    def close(self) -> None:
        """Write what is buffered, wait for the writes and free the buffers."""
        self.flush()
        self.pool.shutdown(wait=True)
        for future in self.pending:
            if future is not None:
                future.result()  # a failed write raises here
        self.buffers = []
        if self.image.shape[0] != self.count:  # drop the room left by doubling (and its chunks)
            shape = (self.count, *self.image.shape[1:])
            self.image.resize(shape)
            self.mask.resize(shape)


def prepare_crops(params: CropParams, out: str | Path) -> dict:
    """Write the crop store ``out`` (Zarr group + origin table); returns a summary per split.

    Every source is opened and checked first, so bad input (a crop larger than an image, a
    mask of another shape) stops before anything is written; a mask found not to be binary
    while streaming removes the partial output.
    """
    params.validate()
    if not params.images:
        raise InputError("crops: no images given")
    acquisitions = [open_acquisition(s, params) for s in params.images]
    acquisitions.sort(key=lambda a: SPLITS.index(a.source.split))  # one split's buffer in memory at a time
    size, step = params.crop_size, params.step_px
    from .reader import planes_in_process  # it builds on this module's planes

    t0 = time.perf_counter()
    rows: list[dict] = []
    counts = {s: 0 for s in SPLITS}
    with ome.atomic_output(out) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        writers: dict[str, SplitWriter] = {}
        for plane in planes_in_process(acquisitions, params):
            split = plane.acq.source.split
            if split not in writers:
                for done in writers.values():  # sorted by split: the previous split is complete
                    done.close()
                writers[split] = SplitWriter(root, split, params, _dtype(acquisitions, split, params))
            rows += _cut(plane, params, writers[split])
        for writer in writers.values():
            writer.close()
            counts[writer.split] = writer.count
        table = pd.DataFrame(rows, columns=COLUMNS)
        table.to_parquet(tmp / TABLE, index=False)
        table.to_csv(tmp / TABLE.replace(".parquet", ".csv"), index=False)
        root.attrs.update(
            {
                "zarrseg": ome.provenance(kind="crops"),
                "crops": {
                    "crop_size": size,
                    "step": step,
                    "rotations": params.rotations,
                    "masks": params.masks,
                    "min_foreground": params.min_foreground,
                    "normalization": asdict(params.normalization),
                    "counts": counts,
                },
            }
        )
    seconds = time.perf_counter() - t0
    log.info("crops: %s in %.1f s -> %s", counts, seconds, out)
    return {"counts": counts, "seconds": seconds, "rows": len(rows)}


def _dtype(acquisitions: list[Acquisition], split: str, params: CropParams) -> np.dtype:
    """float16 for normalised crops, else a dtype that holds every source of the split."""
    if params.normalization.method != "none":
        return np.dtype("float16")
    return np.result_type(*[a.image.dtype for a in acquisitions if a.source.split == split])


COLUMNS = ["split", "index", "name", "image", "z", "y", "x", "foreground", "labelled"]


@dataclass
class Plane:
    """One plane ready to cut: its (normalised) image, binary mask and every window's foreground fraction."""

    acq: Acquisition
    z: int | None
    image: np.ndarray
    mask: np.ndarray | None  # None: an unlabelled acquisition
    ys: list[int]
    xs: list[int]
    fractions: np.ndarray | None


def load_plane(acq: Acquisition, z: int | None, params: CropParams, normalise: bool = True) -> Plane:
    """Read, normalise (unless not ``normalise``: ``normalise_plane`` later) and mask one plane and
    measure the foreground of its windows."""
    image, labels = acq.plane(z)
    if image.dtype.kind == "f" and not np.isfinite(image).all():  # crops of NaN would train on NaN
        bad = int(image.size - np.count_nonzero(np.isfinite(image)))
        where = "" if z is None else f" in plane z={z}"
        raise InputError(f"{bad} of {image.size} pixels{where} are NaN or Inf; replace them (e.g. by 0) "
                         "before cropping", acq.source.image)
    if normalise and params.normalization.method != "none":
        image = normalised(image, params.normalization)
    size, step = params.crop_size, params.step_px
    ys, xs = window_starts(image.shape[0], size, step), window_starts(image.shape[1], size, step)
    mask = None if labels is None else foreground(labels, params.masks, acq.source.labels)
    fractions = None if mask is None else window_sums(mask, ys, xs, size) / float(size * size)
    return Plane(acq, z, image, mask, ys, xs, fractions)


def normalise_plane(plane: Plane, params: CropParams) -> Plane:
    """``plane`` with its image normalised, for planes loaded with ``normalise=False``."""
    if params.normalization.method != "none":
        plane.image = normalised(plane.image, params.normalization)
    return plane


def planes_ahead(acquisitions: list[Acquisition], params: CropParams, normalise: bool = True) -> Iterator[Plane]:
    """Every selected plane in order; the next ``READ_AHEAD`` are read and prepared in as many
    background threads while the caller cuts this one (READ_AHEAD + 1 planes in memory, whatever
    the number of acquisitions). Two reads in flight were ~8 % faster than one (N = 20, 6 paired
    runs, normalising in the reader threads): one waits on zarr's event loop while the other works."""
    jobs = [(acq, z) for acq in acquisitions for z in acq.planes]
    depth = READ_AHEAD
    with concurrent.futures.ThreadPoolExecutor(depth, thread_name_prefix="crops-read") as pool:
        ahead = collections.deque(pool.submit(load_plane, *job, params, normalise) for job in jobs[:depth])
        for k in range(len(jobs)):
            plane = ahead.popleft().result()
            if k + depth < len(jobs):
                ahead.append(pool.submit(load_plane, *jobs[k + depth], params, normalise))
            yield plane


def _cut(plane: Plane, params: CropParams, writer: SplitWriter) -> list[dict]:
    """Hand the kept windows of one plane to the writer; their rows of the origin table."""
    acq, size, fractions, mask = plane.acq, params.crop_size, plane.fractions, plane.mask
    rows = []
    for i, y in enumerate(plane.ys):
        for j, x in enumerate(plane.xs):
            fg = float("nan") if fractions is None else float(fractions[i, j])
            if fractions is not None and fg < params.min_foreground:
                continue
            crop_mask = None if mask is None else mask[y : y + size, x : x + size]
            index = writer.add(plane.image[y : y + size, x : x + size], crop_mask)
            rows.append(
                {
                    "split": acq.source.split,
                    "index": index,
                    "name": acq.name,
                    "image": acq.source.image,
                    "z": -1 if plane.z is None else int(plane.z),
                    "y": int(y),
                    "x": int(x),
                    "foreground": fg,
                    "labelled": mask is not None,
                }
            )
    log.info("crops: %s plane %s: %d of %d windows kept", acq.name, plane.z, len(rows),
             len(plane.ys) * len(plane.xs))
    return rows

"""Encode and write the slabs of an ingest on all cores given, each chunk exactly once.

Encoding (Blosc) is what bounds staging speed, so it must never wait: level-0 chunks of a slab
are written by a pool of threads, one task per chunk (zarr encodes it; Blosc releases the GIL),
while the next slab is read and the lower pyramid levels are computed from the slab in memory.
Slabs are chunk-aligned, so a level-0 chunk lies inside one slab. A lower-level chunk usually
spans several slabs: its rows are kept until the chunk row is complete and then written whole,
so it is encoded once too (never read back and re-encoded). At most ``IN_FLIGHT`` slabs are held.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from .. import ome

IN_FLIGHT = 2  # slabs being encoded at once: the threads never wait for the last chunks of one slab


class SlabWriter:
    """Level-0 slabs and lower-level rows to Zarr on ``threads`` threads; the first failure stops it."""

    def __init__(self, threads: int, pyramid: Pyramid | None = None):
        self._chunks = concurrent.futures.ThreadPoolExecutor(max(1, threads), thread_name_prefix="ingest-encode")
        self._serial = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ingest-pyramid")
        self._slots = threading.Semaphore(IN_FLIGHT)
        self._futures: list[concurrent.futures.Future] = []
        self._lock = threading.Lock()
        self.pyramid = pyramid

    def submit(self, array, box: tuple, block: np.ndarray, done: Callable[[], None] | None = None) -> None:
        """Write ``block`` at the chunk-aligned ``box`` of level-0 ``array`` and its lower levels."""
        self._slots.acquire()
        self._raise_failed()
        tasks = self._write(array, box, block)
        if self.pyramid is not None:
            tasks.append(self._serial.submit(self.pyramid.add, box, block, self._write))
        left = [len(tasks)]

        def finished(_future: concurrent.futures.Future) -> None:
            with self._lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                self._slots.release()
                if done is not None:
                    done()

        for task in tasks:
            task.add_done_callback(finished)

    def _write(self, array, box: tuple, block: np.ndarray) -> list[concurrent.futures.Future]:
        """One task per chunk of a box whose chunks no other write touches."""
        tasks = [self._chunks.submit(_write_chunk, array, target, block[local])
                 for target, local in chunk_boxes(box, array.chunks)]
        with self._lock:
            self._futures += tasks
        return tasks

    def _raise_failed(self) -> None:
        with self._lock:
            failed = [f for f in self._futures if f.done() and f.exception() is not None]
            self._futures = [f for f in self._futures if not f.done()]
        if failed:
            raise failed[0].exception()

    def __enter__(self) -> SlabWriter:
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        try:
            if exc_type is None:
                if self.pyramid is not None:  # the last, incomplete chunk rows of the lower levels
                    self._serial.submit(self.pyramid.flush, self._write).result()
                while True:
                    with self._lock:
                        pending = list(self._futures)
                        self._futures = []
                    if not pending:
                        break
                    for future in concurrent.futures.as_completed(pending):
                        future.result()
        finally:
            for pool in (self._serial, self._chunks):
                pool.shutdown(wait=True, cancel_futures=True)


def fast_writes(array):
    """``array`` writing every chunk as given: zarr's default scans each chunk for being all
    fill value before encoding it (to skip it), which costs ~40 % of the encoding time here."""
    return array.with_config({"write_empty_chunks": True})


def _write_chunk(array, target: tuple, data: np.ndarray) -> None:
    """One chunk; a contiguous copy made here, on the encoding thread, is cheaper than zarr's of a view."""
    array[target] = np.ascontiguousarray(data)


def chunk_boxes(box: tuple, chunks: Sequence[int]) -> Iterator[tuple[tuple, tuple]]:
    """(target box, index into the block) of every chunk a ``box`` covers, split on the chunk grid.

    Integer entries of ``box`` (the timepoint) index an axis the block does not have.
    """
    ranges = []
    for entry, size in zip(box, chunks, strict=True):
        if isinstance(entry, slice):
            cuts = [entry.start, *range((entry.start // size + 1) * size, entry.stop, size), entry.stop]
            ranges.append([(slice(a, b), slice(a - entry.start, b - entry.start)) for a, b in itertools.pairwise(cuts)])
        else:
            ranges.append([(entry, None)])
    for combo in itertools.product(*ranges):
        yield tuple(t for t, _ in combo), tuple(local for _, local in combo if local is not None)


def level_ratios(levels: list) -> list[tuple[int, ...]]:
    """Per-axis integer ratio between consecutive levels (as ``ome.write_pyramid`` computes it)."""
    return [
        tuple(max(1, -(-p // t)) for p, t in zip(prev.shape, cur.shape, strict=True))
        for prev, cur in itertools.pairwise(levels)
    ]


class Pyramid:
    """Lower levels from each level-0 slab, kept until whole chunk rows are complete.

    Slabs arrive in order (y bands within each t / c / z / x range), each starting on a full
    downsampling window of the coarsest level, so each level's rows grow contiguously per
    (t, c, z, x) range. Complete chunk rows are written as independent chunks; a range that
    does not span the level's whole width (very wide images split into x bands) could share
    chunks with its neighbour and is written in order, on the calling (single) thread.
    """

    def __init__(self, levels: list, axes: str, labels: bool):
        self.levels, self.axes, self.labels = levels, axes, labels
        self.ratios = level_ratios(levels)
        self._iy, self._by = axes.index("y"), axes.replace("t", "").index("y")  # y in boxes / in blocks
        # (level, box without y) -> (box, first row, row blocks); slices are not hashable: keys use tuples
        self._pending: dict[tuple, tuple[tuple, int, list[np.ndarray]]] = {}

    def add(self, box: tuple, block: np.ndarray, write: Callable) -> None:
        """Downsample a level-0 slab and write the chunk rows of each level it completes."""
        for level, (lbox, lblock) in enumerate(downsample_levels(self.ratios, self.axes, box, block, self.labels),
                                               start=1):
            key = (level, *((e.start, e.stop) if isinstance(e, slice) else e
                            for k, e in enumerate(lbox) if k != self._iy))
            _box, first, blocks = self._pending.get(key, (lbox, lbox[self._iy].start, []))
            if first + sum(b.shape[self._by] for b in blocks) != lbox[self._iy].start:  # not contiguous
                self.levels[level][lbox] = lblock  # cannot happen for slabs in order; stay correct anyway
                continue
            self._pending[key] = (lbox, first, [*blocks, lblock])
            self._emit(key, write, final=False)

    def flush(self, write: Callable) -> None:
        """Write every row still kept (the last, incomplete chunk rows)."""
        for key in list(self._pending):
            self._emit(key, write, final=True)

    def _emit(self, key: tuple, write: Callable, final: bool) -> None:
        """Write the complete chunk rows of ``key`` (all rows when ``final`` or at the level's end)."""
        array = self.levels[key[0]]
        iy, by, ix = self._iy, self._by, self.axes.index("x")
        template, first, blocks = self._pending.pop(key)
        rows = np.concatenate(blocks, axis=by) if len(blocks) > 1 else blocks[0]
        end = first + rows.shape[by]
        cut = end if final or end >= array.shape[iy] else end // array.chunks[iy] * array.chunks[iy]
        if cut > first:
            box = tuple(slice(first, cut) if k == iy else e for k, e in enumerate(template))
            part = rows[(slice(None),) * by + (slice(0, cut - first),)]
            if box[ix] == slice(0, array.shape[ix]):
                write(array, box, part)
            else:  # an x band: its edge chunks are shared with the neighbouring band, so write in order, here
                array[box] = part
        if end > cut:
            self._pending[key] = (template, cut, [np.ascontiguousarray(rows[(slice(None),) * by + (slice(cut - first,
                                                                                                        None),)])])


def downsample_levels(ratios: list, axes: str, box: tuple, block: np.ndarray,
                      labels: bool) -> Iterator[tuple[tuple, np.ndarray]]:
    """(box, block) of each lower level, downsampled level by level from a level-0 slab.

    The slab covers whole downsampling windows (or the image border, edge-padded exactly like
    ``ome.write_pyramid``), so the result equals the blockwise pyramid of the finished level 0.
    Only y/x are downsampled, so we go one (y, x) plane at a time to bound temporary memory.
    """
    block_axes = axes.replace("t", "")
    iy, ix = block_axes.index("y"), block_axes.index("x")
    for ratio in ratios:
        ry, rx = ratio[axes.index("y")], ratio[axes.index("x")]
        planes = block.reshape(-1, *block.shape[iy:])
        out = np.empty((planes.shape[0], -(-planes.shape[1] // ry), -(-planes.shape[2] // rx)), block.dtype)
        fast = not labels and (ry, rx) == (2, 2) and block.dtype.kind in "ui" and block.dtype.itemsize <= 4
        for i, plane in enumerate(planes):
            out[i] = mean_2x2(plane) if fast else ome.downsample(plane, (ry, rx), labels)
        block = out.reshape(*block.shape[:iy], *out.shape[1:])
        box = tuple(
            slice(index.start // ratio[k], index.start // ratio[k] + block.shape[iy if a == "y" else ix])
            if a in "yx"
            else index
            for k, (a, index) in enumerate(zip(axes, box, strict=True))
        )
        yield box, block


def mean_2x2(plane: np.ndarray) -> np.ndarray:
    """``ome.downsample(plane, (2, 2), False)`` for integer planes, ~10x faster.

    numpy's mean over a reshaped (h, 2, w, 2) view walks memory with large strides; summing
    the four strided views is exact, and rounding the quarter of the sum half to even is done
    in integers: with s = 4q + r, round(s / 4) is (s + 1 + (q & 1)) >> 2, bit-identical to
    numpy's float rounding (tested against ``ome.write_pyramid``). Integers of up to 16 bits
    sum in 32 bits, wider ones in 64.
    """
    if plane.shape[0] % 2 or plane.shape[1] % 2:
        plane = np.pad(plane, ((0, plane.shape[0] % 2), (0, plane.shape[1] % 2)), mode="edge")
    wide = np.int32 if plane.dtype.itemsize <= 2 else np.int64
    rows = np.add(plane[0::2], plane[1::2], dtype=wide)  # widened on the fly: no separate cast pass
    total = rows[:, 0::2] + rows[:, 1::2]
    odd = total >> 2
    odd &= 1
    total += odd
    total += 1
    total >>= 2
    return total.astype(plane.dtype)

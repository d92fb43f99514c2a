"""Planes read and prepared in a forked process, so the crop stage reads and writes on two cores.

zarr-python's synchronous API runs every chunk read and write of a process in one event-loop
thread whose per-chunk bookkeeping holds the GIL (py-spy, 20 acquisitions: that thread held it in
73 % of the samples in which any thread did, 83 % of that for the plane reads). In one process the
crop writes therefore wait for the plane reads, however many threads do either. A reader process
has its own event loop and GIL: it reads and masks the planes and measures their windows'
foreground (``planes_ahead``, with its read-ahead threads) while this process normalises, cuts and
writes (normalising here balanced the two: the reader was the slower side). The pixels come back
through shared memory slots (no pickling), the small per-plane facts through a pipe; a slot is
reused once the cutter has copied its crops, so memory stays bounded by the slots whatever the
number of acquisitions. 20 organoid acquisitions (``benchmarks/crops.py``): 1.94x the time of
reading their planes in one process, 1.32x with the reader process. Without ``fork`` (not Linux)
the planes are read in threads of this process.
"""

from __future__ import annotations

import mmap
import multiprocessing
import sys
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import ZarrsegError
from .params import CropParams
from .prepare import READ_AHEAD, Acquisition, Plane, normalise_plane, planes_ahead

SLOTS = READ_AHEAD + 1  # planes handed over at once: one being cut, the others waiting for it


def process_available() -> bool:
    """A forked reader needs ``fork`` (Linux: macOS offers it, but its system libraries are not fork-safe)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


@dataclass
class Slots:
    """``count`` slots of shared anonymous memory, each holding one plane's image and mask."""

    count: int
    image_bytes: int
    mask_bytes: int

    def __post_init__(self) -> None:
        self.memory = mmap.mmap(-1, self.count * (self.image_bytes + self.mask_bytes))  # MAP_SHARED

    @classmethod
    def for_planes(cls, acquisitions: list[Acquisition], params: CropParams) -> Slots:
        image = mask = 1
        for acq in acquisitions:  # planes come in their source dtype (normalised by the cutter)
            pixels = int(np.prod(acq.image.shape[-2:]))
            image = max(image, pixels * acq.image.dtype.itemsize)
            if acq.labels is not None:
                mask = max(mask, pixels)
        return cls(SLOTS, image, mask)

    def _view(self, k: int, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        start = k * (self.image_bytes + self.mask_bytes) + offset
        return np.frombuffer(self.memory, dtype=dtype, count=int(np.prod(shape)), offset=start).reshape(shape)

    def put(self, k: int, plane: Plane) -> tuple:
        """Copy ``plane``'s pixels into slot ``k``; returns what ``get`` needs to see them again."""
        self._view(k, 0, plane.image.shape, plane.image.dtype)[...] = plane.image
        if plane.mask is not None:
            self._view(k, self.image_bytes, plane.mask.shape, plane.mask.dtype)[...] = plane.mask
        return plane.image.shape, plane.image.dtype.str, plane.mask is not None

    def get(self, k: int, shape: tuple[int, ...], dtype: str, masked: bool) -> tuple[np.ndarray, np.ndarray | None]:
        image = self._view(k, 0, shape, np.dtype(dtype))
        return image, (self._view(k, self.image_bytes, shape, np.dtype(np.uint8)) if masked else None)


def planes_in_process(acquisitions: list[Acquisition], params: CropParams) -> Iterator[Plane]:
    """``planes_ahead``'s planes, in the same order, read and prepared in a forked process.

    A plane's arrays are valid until the next one is asked for (its slot is then refilled). An
    error in the reader (a mask that is not binary, a plane of NaN) is raised here as it was
    raised there; the reader is stopped when the caller stops early or fails.
    """
    if not process_available():
        yield from planes_ahead(acquisitions, params)
        return
    slots = Slots.for_planes(acquisitions, params)
    ctx = multiprocessing.get_context("fork")
    here, there = ctx.Pipe()
    reader = ctx.Process(target=_serve, args=(there, here, slots, acquisitions, params), name="crops-reader",
                         daemon=True)
    with warnings.catch_warnings():
        # Python >= 3.12 warns that forking a threaded process may deadlock the child. The only
        # other thread here is zarr's idle event loop (no read is in flight while this thread
        # forks), and zarr replaces its loop and lock in a forked child (os.register_at_fork).
        warnings.simplefilter("ignore", DeprecationWarning)
        reader.start()
    there.close()  # the reader's end: its death reaches recv() as EOFError
    finished = False
    try:
        while True:
            try:
                message = here.recv()
            except EOFError:
                raise RuntimeError(f"the crop reader process died (exit code {reader.exitcode})") from None
            if message[0] == "end":
                finished = True
                break
            if message[0] == "error":
                raise message[1]
            _, k, index, z, layout, ys, xs, fractions = message
            image, mask = slots.get(k, *layout)
            yield normalise_plane(Plane(acquisitions[index], z, image, mask, ys, xs, fractions), params)
            try:
                here.send(k)  # the cutter has copied its crops: the slot can be refilled
            except BrokenPipeError:
                pass  # the reader died: the next recv() says so
    finally:
        here.close()  # after 'end' the reader waits for this (a slot handed back never meets a closed pipe)
        if finished:
            reader.join(timeout=30)
        if reader.is_alive():  # stopped early or failed: the reader may be in the middle of a read
            reader.terminate()
        reader.join()


def _serve(conn, cutters_end, slots: Slots, acquisitions: list[Acquisition], params: CropParams) -> None:
    """The reader process: every plane into a free slot, in order; then 'end', or the error.

    It closes its inherited copy of the cutter's end first: then a cutter that dies (killed, or
    stopped early) reaches it as EOF on ``recv`` or a broken pipe on ``send``, and it exits.
    """
    cutters_end.close()
    index = {id(acq): i for i, acq in enumerate(acquisitions)}
    free = list(range(slots.count))
    try:
        for plane in planes_ahead(acquisitions, params, normalise=False):
            if not free:
                free.append(conn.recv())
            k = free.pop(0)
            layout = slots.put(k, plane)
            conn.send(("plane", k, index[id(plane.acq)], plane.z, layout, plane.ys, plane.xs, plane.fractions))
        conn.send(("end",))
        while True:  # until the cutter closes its end
            conn.recv()
    except (EOFError, BrokenPipeError):
        pass  # the cutter stopped early: nothing left to hand over
    except ZarrsegError as exc:  # pickles by its one-line message
        conn.send(("error", exc))
    except BaseException as exc:  # noqa: BLE001 - any failure must reach the cutter as one error
        conn.send(("error", RuntimeError(f"crop reader: {exc!r}\n{traceback.format_exc()}")))

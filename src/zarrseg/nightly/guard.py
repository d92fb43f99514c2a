"""One nightly run at a time per results folder, and recovery from a run that was killed.

The guard is an exclusive lock on ``RESULTS_DIR/.nightly.lock`` (``fcntl.flock``, released by the
kernel when its process dies, however it dies). Holding it proves that no other nightly run is
active, so a Snakemake lock in the nightly's own working directory can only be a leftover of a
killed run, and is cleared (``snakemake --unlock``) instead of failing every night from then on.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import ZarrsegError


class AlreadyRunning(ZarrsegError):
    """Another nightly run holds the guard of this results folder."""

    exit_code = 75  # EX_TEMPFAIL (sysexits.h): try again later


@contextlib.contextmanager
def single_instance(results_dir: Path) -> Iterator[Path]:
    """Hold the guard of ``results_dir`` for the duration of the block; raise AlreadyRunning if taken."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / ".nightly.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise AlreadyRunning(f"another nightly run is active ({holder}); nothing done", path) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                  .encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def stale_snakemake_locks(workdir: Path) -> list[Path]:
    """Lock files Snakemake left in ``workdir`` (only meaningful while the guard is held)."""
    locks = workdir / ".snakemake" / "locks"
    return sorted(locks.iterdir()) if locks.is_dir() else []

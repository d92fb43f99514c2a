"""One nightly run at a time per results folder, and recovery from a run that was killed.

The guard is an exclusive lock on ``RESULTS_DIR/.nightly.lock`` (``fcntl.flock``, released by the
kernel when its process dies, however it dies). Holding it proves that no other nightly run is
active, so a Snakemake lock in the nightly's own working directory can only be a leftover of a
killed run, and is cleared (``snakemake --unlock``) instead of failing every night from then on.

Snakemake runs in a process group of its own, whose id is kept in the working directory while it
runs (``GROUP_FILE``). A nightly killed alone (``kill -9`` of its pid) leaves that group running
its jobs; the next run stops it (``stop_orphaned_group``) before it unlocks and reruns the same
jobs, so two Snakemakes never write the same outputs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import ZarrsegError
from ..runs import exclusive

log = logging.getLogger(__name__)

GROUP_FILE = "snakemake.pgid"  # in the workflow's working directory while its Snakemake runs


class AlreadyRunning(ZarrsegError):
    """Another nightly run holds the guard of this results folder."""

    exit_code = 75  # EX_TEMPFAIL (sysexits.h): try again later


@contextlib.contextmanager
def single_instance(results_dir: Path) -> Iterator[Path]:
    """Hold the guard of ``results_dir`` for the duration of the block; raise AlreadyRunning if taken."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / ".nightly.lock"
    with exclusive(path, lambda holder: AlreadyRunning(f"another nightly run is active ({holder}); nothing done", path)):
        yield path


def stale_snakemake_locks(workdir: Path) -> list[Path]:
    """Lock files Snakemake left in ``workdir`` (only meaningful while the guard is held)."""
    locks = workdir / ".snakemake" / "locks"
    return sorted(locks.iterdir()) if locks.is_dir() else []


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_snakemake_group(pgid: int, workdir: Path) -> bool:
    """The group is the one that was recorded: its leader runs Snakemake on this results folder
    (``--directory <workdir>``: a reused pid may now lead another folder's or user's Snakemake),
    or the leader is gone and its jobs remain (Linux never hands out a pid still in use as a
    process group id)."""
    try:
        cmdline = Path(f"/proc/{pgid}/cmdline").read_bytes()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    # empty: the leader is a zombie (killed, its jobs remain), as good as gone
    args = cmdline.split(b"\0")
    return not cmdline or (b"snakemake" in cmdline and os.fsencode(str(workdir)) in args)


def stop_orphaned_group(workdir: Path, grace: float = 10.0) -> bool:
    """Stop the Snakemake (and its jobs) a killed nightly left running; True when one was stopped.

    Only meaningful while the guard is held: then no live nightly run owns the recorded group.
    """
    path = workdir / GROUP_FILE
    try:
        pgid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    stopped = False
    if pgid > 1 and _group_alive(pgid) and _is_snakemake_group(pgid, workdir):
        log.warning("stopping Snakemake process group %d left running by a killed nightly run", pgid)
        try:
            os.killpg(pgid, signal.SIGTERM)
        except PermissionError:  # not ours after all
            path.unlink(missing_ok=True)
            return False
        deadline = time.monotonic() + grace
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
        stopped = True
    path.unlink(missing_ok=True)
    return stopped

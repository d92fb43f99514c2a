"""The run protocol every stage follows: atomic outputs, resume checks, per-block done markers.

One place for how a stage leaves its mark on disk:

* an output is written as ``<out>.partial`` and renamed only when complete (``atomic_output``),
  so an interrupted run never leaves anything that looks finished;
* a resumable stage stores the *fingerprint* of its run (inputs, parameters that change the
  result) inside the partial output once it is set up (``mark_resumable``); a rerun with the
  same fingerprint continues (``same_run``), anything else starts over;
* blockwise stages keep one done marker per finished block, holding that block's small
  summary (``DoneMarkers``), so a killed run redoes only unfinished blocks.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import OutputError

log = logging.getLogger(__name__)

WORK = "_work"  # folder inside a partial output holding a blockwise stage's run state

Summary = dict[str, Any]


def partial_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".partial")


def remove(path: Path, missing_ok: bool = False) -> None:
    """Remove a file, link or folder tree (nothing when absent); ``missing_ok``: also ignore what
    cannot be removed (cleanup after an error)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=missing_ok)
    elif path.exists() or path.is_symlink():
        try:
            path.unlink()
        except OSError:
            if not missing_ok:
                raise


def check_writable(path: str | Path) -> None:
    """Fail before any work when ``path`` cannot be created: its nearest existing folder is read-only."""
    folder = Path(path).absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write the output: folder {folder} is not writable", path)
    path = Path(path)
    if path.is_dir() and not path.is_symlink() and not os.access(path, os.W_OK | os.X_OK):
        raise OutputError("cannot replace the output: the existing folder is not writable", path)


def check_output(path: str | Path, *siblings: str) -> None:
    """Before any work: the output ``path`` (and the same name with each suffix in ``siblings``, e.g.
    the CSV beside a Parquet table) can be written and replaces nothing zarrseg did not write."""
    path = Path(path)
    for target in (path, *(path.with_suffix(s) for s in siblings)):
        check_writable(target)
        refuse_foreign(target)


MARK = ".zarrseg"  # left in a folder output without zarrseg attributes: "zarrseg wrote this, a rerun may replace it"


def _is_ours(folder: Path) -> bool:
    """Whether ``folder`` is an output a zarrseg stage wrote: its mark, or (outputs written before
    the mark) zarrseg attributes in its Zarr metadata."""
    if (folder / MARK).exists():
        return True
    for meta in (folder / ".zattrs", folder / "zarr.json"):
        try:
            attrs = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        attrs = attrs.get("attributes", {}) if meta.name == "zarr.json" else attrs
        if isinstance(attrs, dict) and any(k.startswith("zarrseg") for k in attrs):
            return True
    return False


# a folder's record of the file outputs zarrseg wrote in it (one name per line): a file output is
# replaced only when its name is there, whatever the format (Parquet, CSV, PNG, Markdown)
RECORD = ".zarrseg-files"


def _recorded(folder: Path) -> set[str]:
    try:
        return set((folder / RECORD).read_text().splitlines())
    except OSError:
        return set()


def record_file(path: str | Path) -> None:
    """Note in its folder's record that zarrseg wrote the file ``path`` (a rerun may replace it).
    One short append (O_APPEND): parallel jobs writing into one folder do not lose each other's lines."""
    path = Path(path)
    if path.name in _recorded(path.parent):
        return
    fd = os.open(path.parent / RECORD, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{path.name}\n".encode())
    finally:
        os.close(fd)


def _file_is_ours(path: Path) -> bool:
    """A file zarrseg wrote: named in its folder's record, or inside a folder output of zarrseg's."""
    return path.name in _recorded(path.parent) or (path.parent / MARK).exists()


def refuse_foreign(path: str | Path) -> None:
    """Never replace a folder or file zarrseg did not write (e.g. a data folder or someone's table
    given as the output by mistake)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        if any(path.iterdir()) and not _is_ours(path):
            raise OutputError("exists and was not written by zarrseg; refusing to replace it "
                              "(remove it or choose another output)", path)
    elif (path.is_file() or path.is_symlink()) and not _file_is_ours(path):
        raise OutputError(f"exists and zarrseg has no record of writing it ({RECORD} beside it); refusing to "
                          "replace it (remove it or choose another output)", path)


@contextlib.contextmanager
def atomic_output(path: str | Path, resume: bool = False) -> Iterator[Path]:
    """Write to ``<path>.partial`` and rename to ``path`` only when the body succeeds.

    A crash leaves only the ``.partial`` folder, which never looks like a finished output.
    With ``resume=True`` an existing partial folder is kept (blockwise stages resume from
    their done markers) and is also kept on failure; otherwise it is removed. An output that
    cannot be written (read-only folder, no permission, disk full) fails with one line:
    before any work when the folder is read-only, else when the write fails. A folder at
    ``path`` that zarrseg did not write is never replaced (``refuse_foreign``), nor is a file
    by a folder output.
    """
    path = Path(path)
    check_writable(path)
    refuse_foreign(path)
    tmp = partial_path(path)
    with writable(path):
        if tmp.exists() and not resume:
            remove(tmp)
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with writable(path):
            yield tmp
    except BaseException:
        if not resume:
            remove(tmp, missing_ok=True)
        raise
    with writable(path):
        if tmp.is_dir():
            if path.is_file() or path.is_symlink():
                remove(tmp, missing_ok=True)
                raise OutputError("exists as a file; refusing to replace it with a folder "
                                  "(remove it or choose another output)", path)
            if not _is_ours(tmp):  # Zarr outputs say so in their attributes (a file there makes zarr warn)
                (tmp / MARK).touch()
        if path.exists():
            remove(path)
        os.replace(tmp, path)
        if path.is_file():
            record_file(path)


@contextlib.contextmanager
def staged_folders(*targets: Path) -> Iterator[list[Path]]:
    """For stages that add files to a folder holding other outputs (an experiment's tables next to
    its cells): everything is written into a staging folder per target (``.<name>.partial`` next
    to it), and moved into the targets only when the body succeeds; a failure leaves nothing new
    (files of an earlier complete run stay as they were)."""
    stages = [t.with_name(f".{t.name}.partial") for t in targets]
    for target in targets:
        if target.exists() and not target.is_dir():
            raise OutputError("exists and is not a folder", target)
        check_writable(target)
        if target.is_dir() and not os.access(target, os.W_OK | os.X_OK):
            raise OutputError("cannot write the output: the folder is not writable", target)
    with writable(targets[0]):
        for stage in stages:
            remove(stage)
            stage.mkdir(parents=True)
    try:
        with writable(targets[0]):
            yield stages
    except BaseException:
        for stage in stages:
            remove(stage, missing_ok=True)
        raise
    with writable(targets[0]):
        # the stage's own records are not moved: one replaced the target's record, which then forgot
        # the earlier run's other files (a later run refused them as someone else's); each moved file
        # is recorded in its target folder instead
        moves = [(file, target / file.relative_to(stage)) for stage, target in zip(stages, targets, strict=True)
                 for file in sorted(p for p in stage.rglob("*") if p.is_file() and p.name != RECORD)]
        try:
            for _file, dest in moves:  # before anything moves: nothing of someone else's is replaced
                refuse_foreign(dest)
        except OutputError:
            for stage in stages:
                remove(stage, missing_ok=True)
            raise
        for file, dest in moves:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(file, dest)
            record_file(dest)
        for stage, target in zip(stages, targets, strict=True):
            for folder in sorted((p for p in stage.rglob("*") if p.is_dir()), reverse=True):
                (target / folder.relative_to(stage)).mkdir(parents=True, exist_ok=True)
            target.mkdir(parents=True, exist_ok=True)
            remove(stage)


def remove_stale(folder: Path, keep: set[Path], patterns: Sequence[str]) -> list[Path]:
    """Remove files of ``folder`` matching ``patterns`` that an earlier run of zarrseg wrote and this
    one did not (``keep``): e.g. the curve of a parameter a new grid no longer sweeps, which would
    otherwise sit beside the new figures as if it were one of them. Files of others stay."""
    removed = []
    for pattern in patterns:
        for path in sorted(folder.glob(pattern)):
            if path.is_file() and path not in keep and _file_is_ours(path):
                path.unlink()
                removed.append(path)
    return removed


# errno values that mean "this place cannot be written", not a bug: one line for the user
UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


@contextlib.contextmanager
def writable(path: Path) -> Iterator[None]:
    """Turn a permission / read-only / disk-full error while writing ``path`` into one clear line."""
    try:
        yield
    except OSError as err:
        if err.errno not in UNWRITABLE:
            raise
        where = f" ({err.filename})" if err.filename and not str(err.filename).startswith(str(path)) else ""
        raise OutputError(f"cannot write the output: {err.strerror}{where}", path) from err


def atomic_save(path: str | Path, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` to a temporary name with the same suffix, then rename: a resumable stage
    trusts such a file to be whole (a kill during ``np.save`` left a truncated table every rerun
    then failed on)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    write(tmp)
    os.replace(tmp, path)
    return path


class Busy(OutputError):
    """Another process holds the lock of this output."""


@contextlib.contextmanager
def exclusive(lock: Path, busy: Callable[[str], Exception]) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``lock`` (released by the kernel however the process
    ends, so a killed holder never blocks the next run); when another process holds it, raise
    ``busy(holder)`` (its pid, host and start time). One nightly run per results folder, one
    training per model folder (two interleaved its history and raced on its checkpoints)."""
    import fcntl
    import time

    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise busy(holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                  .encode(), 0)
        yield
    finally:
        os.close(fd)


def remove_work(work: Path) -> None:
    """Remove a finished run's state folder, its fingerprint first: a kill during the removal
    then leaves a partial output no rerun takes for resumable (it starts over)."""
    (work / "fingerprint.json").unlink(missing_ok=True)
    shutil.rmtree(work)


def atomic_save_npy(path: str | Path, array: Any) -> Path:
    """``np.save`` through ``atomic_save`` (the tables a resumed segment run loads)."""
    return atomic_save(path, lambda tmp: np.save(tmp, array))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write a small file through a temporary name and a rename (never half-written)."""
    return atomic_save(path, lambda tmp: tmp.write_bytes(data))


def same_run(tmp: Path, fingerprint: dict, stage: str) -> bool:
    """Whether the partial output ``tmp`` belongs to the run described by ``fingerprint``.

    Resumable stages store the fingerprint of their run last, once the partial output is set
    up. A partial output of any other run, or one that never got that far, is removed: the
    caller starts over.
    """
    fp_path = tmp / WORK / "fingerprint.json"
    if fp_path.exists():
        try:
            if json.loads(fp_path.read_text()) == fingerprint:
                return True
        except json.JSONDecodeError:
            pass
        log.info("%s: %s belongs to another run, starting over", stage, tmp)
    if tmp.exists():
        remove(tmp)
    return False


ZARR_METADATA = (".zarray", ".zattrs", ".zgroup", "zarr.json")


def input_identity(path: str | Path) -> list:
    """Which copy of an input a partial output was computed from: inode and modification time of
    the path and of its Zarr metadata files (HDF5 / TIFF: the file). A rerun after the input was
    written anew at the same path (a new staging, a new prediction) starts over instead of
    resuming with blocks of the old input. Reading the data itself would cost a whole pass."""
    base = Path(str(path).split(":", 1)[0] if not Path(path).exists() else path)
    items = [base, *(base / name for name in ZARR_METADATA)] if base.is_dir() else [base]
    out = []
    for item in items:
        try:
            st = item.stat()
        except OSError:
            continue
        out.append([item.name, st.st_ino, st.st_mtime_ns, st.st_size if item.is_file() else 0])
    return out


def mark_resumable(tmp: Path, fingerprint: dict) -> None:
    """Store the run's fingerprint: from now on ``same_run`` lets a rerun resume ``tmp``."""
    work = tmp / WORK
    work.mkdir(parents=True, exist_ok=True)
    (work / "fingerprint.json").write_text(json.dumps(fingerprint))


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class DoneMarkers:
    """Per-block done markers holding each block's summary (``<dir>/<block id>.npz``)."""

    def __init__(self, directory: str | Path | None):
        self.directory = None if directory is None else Path(directory)
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, block_id: int) -> Path:
        assert self.directory is not None
        return self.directory / f"{block_id}.npz"

    def load(self, block_id: int) -> Summary | None:
        if self.directory is None:
            return None
        path = self.path(block_id)
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as data:
            return {k: (data[k].item() if data[k].ndim == 0 else data[k]) for k in data.files}

    def save(self, block_id: int, summary: Summary | None) -> None:
        if self.directory is None:
            return
        path = self.path(block_id)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in (summary or {}).items()})
        os.replace(tmp, path)  # atomic: a marker exists only for a finished block

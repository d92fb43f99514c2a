"""Which acquisitions of the input folder a night processes: the complete ones that are new or changed.

* complete: a ``<file>.done`` marker exists (when the acquisition software writes one), or the
  file (and its ground truth) was not modified during the quiet period; and it passes the
  structural check of its reader (a CZI's directory and segments inside the file, a TIFF's IFD
  chain and strips, ...). Anything modified within the quiet period is "waiting": never ingested
  half-written. A quiet file that fails the structural check is "failed" with the reader's reason.
* new or changed: never settled before, or size / modification time differ from what was settled
  and so does the sha256 (a copy with a new time but the same bytes is "unchanged").
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ZarrsegError
from ..ingest import open_source
from ..ingest.params import IngestParams
from ..ingest.writer import sha256_file
from ..workflow import MULTI_SCENE_SUFFIXES, folder_acquisitions, read_scene_names
from .history import History, Settled

DONE_SUFFIX = ".done"


@dataclass
class Acquisition:
    """One file of the input folder (and its ground truth) as seen tonight."""

    file: Path
    ground_truth: Path | None
    status: str = ""  # new | changed | rerun | unchanged | waiting | failed
    reason: str = ""
    size: int = 0
    mtime_ns: int = 0
    gt_size: int | None = None
    gt_mtime_ns: int | None = None
    sha256: str = ""
    gt_sha256: str = ""
    scene_names: list[str] = field(default_factory=list)
    settled: Settled | None = None

    @property
    def to_process(self) -> bool:
        return self.status in ("new", "changed", "rerun")


def scan(folder: Path, history: History, *, quiet_period: float, params: IngestParams,
         gt_suffix: str = "_labels", rerun_all: bool = False, now: float | None = None) -> list[Acquisition]:
    """Classify every acquisition of ``folder`` for tonight (see the module docstring)."""
    now = time.time() if now is None else now
    out = []
    for file, gt in folder_acquisitions(folder, gt_suffix):
        acq = Acquisition(file=file.resolve(), ground_truth=gt.resolve() if gt else None)
        try:
            _classify(acq, history, quiet_period, params, rerun_all, now)
        except FileNotFoundError:  # removed or renamed while we looked: not an acquisition tonight
            continue
        out.append(acq)
    return out


def _classify(acq: Acquisition, history: History, quiet: float, params: IngestParams, rerun_all: bool,
              now: float) -> None:
    stat = acq.file.stat()
    acq.size, acq.mtime_ns = stat.st_size, stat.st_mtime_ns
    newest = stat.st_mtime_ns
    if acq.ground_truth is not None:
        gt = acq.ground_truth.stat()
        acq.gt_size, acq.gt_mtime_ns = gt.st_size, gt.st_mtime_ns
        newest = max(newest, gt.st_mtime_ns)
    acq.settled = prev = history.settled(str(acq.file))
    same = prev is not None and _same_stat(acq, prev)
    if same and not rerun_all:
        _unchanged(acq, prev)
        return
    age = now - newest / 1e9
    marker = acq.file.with_name(acq.file.name + DONE_SUFFIX).exists()
    if not marker and age < quiet:
        acq.status = "waiting"
        acq.reason = (f"modified {age:.0f} s ago (quiet period {quiet:g} s, no {DONE_SUFFIX} marker)" if age >= 0 else
                      f"modification time {-age:.0f} s in the future (clocks of the writing computer and this one "
                      f"differ?); waits until it is {quiet:g} s old")
        return
    same = same or (prev is not None and _same_content(acq, prev))  # same bytes under a new time
    if same and not rerun_all:
        _unchanged(acq, prev)
        return
    try:
        for path in (acq.file, acq.ground_truth):  # the structural check; PNG / JPEG: decoded (2D, small)
            if path is not None and not path.name.lower().endswith(MULTI_SCENE_SUFFIXES):
                with open_source(path, None, params):
                    pass
        acq.scene_names = read_scene_names(acq.file, params)
        if acq.ground_truth is not None:
            read_scene_names(acq.ground_truth, params)
    except ZarrsegError as err:
        acq.status, acq.reason = "failed", str(err)
        acq.sha256 = sha256_file(acq.file)  # retried only when the content changes
        acq.gt_sha256 = sha256_file(acq.ground_truth) if acq.ground_truth else ""
        return
    acq.status = "new" if prev is None else "rerun" if same else "changed"


def _same_stat(acq: Acquisition, prev: Settled) -> bool:
    return (acq.size, acq.mtime_ns, acq.gt_size, acq.gt_mtime_ns) == (
        prev.size, prev.mtime_ns, prev.gt_size, prev.gt_mtime_ns)


def _same_content(acq: Acquisition, prev: Settled) -> bool:
    """Sizes equal and sha256 equal (hashed only when the sizes agree)."""
    if (acq.size, acq.gt_size) != (prev.size, prev.gt_size) or not prev.sha256:
        return False
    acq.sha256 = sha256_file(acq.file)
    if acq.ground_truth is not None:
        acq.gt_sha256 = sha256_file(acq.ground_truth)
    return acq.sha256 == prev.sha256 and acq.gt_sha256 == prev.gt_sha256


def _unchanged(acq: Acquisition, prev: Settled) -> None:
    """Settled before and the same content: reported with what was settled (its failure reason, if any)."""
    acq.status = "unchanged"
    acq.sha256, acq.gt_sha256 = prev.sha256, prev.gt_sha256
    acq.reason = prev.reason

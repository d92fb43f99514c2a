"""The cumulative ``acquisitions.parquet``: one row per night, acquisition, scene and grid cell.

It is both the record a person reads (status, reason, timings, shape, segments, metrics) and the
memory of the nightly command: an acquisition is *settled* once it was processed, or failed for a
reason of its own; it is looked at again only when its size or modification time changes and
its content (sha256) differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import ome
from ..errors import InputError
from .outcome import DIED

STATUSES = ("processed", "waiting", "failed", "unchanged")
# nights a file's job may die silently (out of memory, a crash) with the same bytes before it is
# settled as failed: retried after a fluke, not every night forever
MAX_SILENT_DEATHS = 3
COLUMNS = [
    "night", "run", "file", "ground_truth", "sample", "scene", "cell", "status", "reason", "retry",
    "settled_night", "settled_status", "size", "mtime_ns", "sha256", "gt_size", "gt_mtime_ns", "gt_sha256",
    "axes", "shape", "voxel_size_um", "n_segments", "size_median", "size_mean", "size_unit",
    "arand", "voi_split", "voi_merge", "metrics", "seconds", "timings", "thumbnail",
]
INT_COLUMNS = ("scene", "size", "mtime_ns", "gt_size", "gt_mtime_ns", "n_segments")


@dataclass(frozen=True)
class Settled:
    """What an earlier night concluded about a file, and the fingerprint it concluded it for."""

    night: str
    status: str  # processed | failed
    reason: str
    size: int
    mtime_ns: int
    sha256: str
    gt_size: int | None
    gt_mtime_ns: int | None
    gt_sha256: str


class History:
    """Read, query and extend ``acquisitions.parquet`` (written atomically)."""

    def __init__(self, path: Path):
        self.path = path
        self._rows_of: dict[str, np.ndarray] | None = None  # file -> its row positions, built once per table
        try:
            self.table = pd.read_parquet(path) if path.is_file() else pd.DataFrame(columns=COLUMNS)
        except Exception as err:  # pyarrow raises several types for a damaged file
            raise InputError(f"the nightly history is damaged ({type(err).__name__}); move it away to start a new "
                             "one (every acquisition is then processed again)", path) from err

    def _rows(self, file: str) -> pd.DataFrame:
        """The rows of ``file``: one lookup in an index instead of a scan of every night's rows per file
        (a year of nights over thousands of files made the scan take minutes)."""
        if self._rows_of is None:
            self._rows_of = self.table.groupby("file", sort=False).indices if len(self.table) else {}
        return self.table.iloc[self._rows_of.get(file, np.empty(0, dtype=np.int64))]

    def settled(self, file: str) -> Settled | None:
        """The latest conclusion about ``file`` (a failure that was not its own fault does not count)."""
        rows = self._rows(file)
        failed = rows["status"] == "failed"
        final = rows["status"].isin(["processed", "unchanged"]) | (failed & ~rows["retry"].astype(bool))
        deaths = rows[failed & rows["reason"].astype(str).str.startswith(DIED)]
        if not deaths.empty:  # the same bytes killed a job MAX_SILENT_DEATHS nights: settle it
            latest = deaths.iloc[-1]
            same = deaths[(deaths["size"] == latest["size"]) & (deaths["mtime_ns"] == latest["mtime_ns"])]
            if same["run"].nunique() >= MAX_SILENT_DEATHS:
                final |= rows.index.isin(same.index[same["run"] == latest["run"]])
        rows = rows[final]
        if rows.empty:
            return None
        last = rows[rows["run"] == rows["run"].iloc[-1]]
        first = last.iloc[0]
        failed = last["status"].eq("failed").any() or first["settled_status"] == "failed"
        reasons = [r for r in last["reason"] if r]
        if reasons and reasons[0].startswith(DIED) and last["retry"].astype(bool).all():
            reasons[0] += f"; not retried after {MAX_SILENT_DEATHS} nights until the file changes"
        return Settled(night=str(first["settled_night"] or first["night"]),
                       status="failed" if failed else "processed", reason=reasons[0] if reasons else "",
                       size=int(first["size"]), mtime_ns=int(first["mtime_ns"]), sha256=str(first["sha256"] or ""),
                       gt_size=_int_or_none(first["gt_size"]), gt_mtime_ns=_int_or_none(first["gt_mtime_ns"]),
                       gt_sha256=str(first["gt_sha256"] or ""))

    def owner(self, sample: str) -> str | None:
        """The file a sample name belongs to (names are shared by all nights' outputs)."""
        rows = self.table[(self.table["sample"] == sample) & (self.table["status"] == "processed")]
        return None if rows.empty else str(rows["file"].iloc[-1])

    def append(self, rows: list[dict]) -> pd.DataFrame:
        """Add the night's rows and write the file; returns them as a table."""
        night = pd.DataFrame(rows, columns=COLUMNS)
        for column in INT_COLUMNS:  # from the Python ints: a float column would round nanosecond times
            night[column] = pd.array([None if _int_or_none(r.get(column)) is None else int(r[column]) for r in rows],
                                     dtype="Int64")
        for column in ("retry",):
            night[column] = night[column].fillna(False).astype(bool)
        frames = [f for f in (self.table, night) if not f.empty]
        self.table = pd.concat(frames, ignore_index=True) if len(frames) > 1 else night
        self._rows_of = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with ome.atomic_output(self.path) as tmp:
            self.table.to_parquet(tmp, engine="pyarrow", index=False)
        return night


def _int_or_none(value: object) -> int | None:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return int(value)

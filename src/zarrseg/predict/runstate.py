"""What a predict run keeps inside its partial output to resume: statistics and its fingerprint."""

from __future__ import annotations

import json
from pathlib import Path

from .. import runs
from ..normalize import VolumeStats, volume_stats


def run_stats(work: Path | None, view, norm, dask_params, source=None) -> VolumeStats:
    """Volume statistics: those saved by the run being resumed, else a blockwise pass over the input
    (which also rejects NaN/Inf input, naming ``source``)."""
    if work is not None and (work / "stats.json").exists():
        return VolumeStats(**json.loads((work / "stats.json").read_text()))
    return volume_stats(view, norm, dask_params=dask_params, source=source)


def mark_started(tmp: Path, fingerprint: dict, stats: VolumeStats | list[VolumeStats]) -> None:
    """Called once the output array exists (creating it clears the folder): from now on it can be resumed."""
    work = tmp / runs.WORK
    work.mkdir(parents=True, exist_ok=True)
    first = stats[0] if isinstance(stats, list) else stats  # resume reads the first channel's (all: 1 channel)
    (work / "stats.json").write_text(json.dumps(first.to_dict()))
    runs.mark_resumable(tmp, fingerprint)  # last: marks the partial as resumable

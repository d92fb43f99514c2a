"""The night report: ``nights/<date>/report.md`` and ``report.html`` with the thumbnails beside them.

One table row per acquisition and scene (and grid cell): status, the one-line reason of a failure
or wait, shape and voxel size, number and median size of the segments, ARand / VOI when ground
truth exists, seconds of work, and a thumbnail, so a person can check a night at a glance.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from pathlib import Path

import pandas as pd

from .. import ome
from ..evaluation.tables import markdown_table

HEADER = ["file", "scene", "sample", "status", "reason", "shape", "voxel µm", "segments", "median size",
          "ARand", "VOI split/merge", "seconds", "thumbnail"]


def _fmt(value: object, digits: int = 3) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _cells(row: dict) -> list[str]:
    voi = f"{_fmt(row.get('voi_split'))} / {_fmt(row.get('voi_merge'))}" if _fmt(row.get("voi_split")) else ""
    size = f"{_fmt(row.get('size_median'))} {row.get('size_unit') or ''}".strip()
    reason = _fmt(row.get("reason"))
    if row["status"] == "unchanged":  # what an earlier night settled, and why if it failed
        reason = f"{row.get('settled_status')} on {row.get('settled_night')}" + (f": {reason}" if reason else "")
    return [Path(str(row["file"])).name, _fmt(row.get("scene")), _fmt(row.get("sample")), str(row["status"]),
            reason, _fmt(row.get("shape")), _fmt(row.get("voxel_size_um")),
            _fmt(row.get("n_segments")), size, _fmt(row.get("arand")), voi, _fmt(row.get("seconds"), 2),
            _fmt(row.get("thumbnail"))]


def write_report(folder: Path, night: str, rows: list[dict], jobs: dict[str, int], notes: list[str]) -> Path:
    """Write report.md and report.html into ``folder``; returns the Markdown file."""
    counts = Counter(str(r["status"]) for r in rows)
    status_line = ", ".join(f"{counts[s]} {s}" for s in ("processed", "failed", "waiting", "unchanged") if counts[s])
    job_line = (", ".join(f"{rule} {n}" for rule, n in jobs.items())
                + " (what Snakemake planned; a failed job's dependants do not run)") if jobs else "none (nothing to do)"
    md_rows = []
    for row in rows:
        cells = _cells(row)
        cells[-1] = f"![{row['sample']}]({cells[-1]})" if cells[-1] else ""
        md_rows.append(cells)
    text = "\n".join([f"# Night {night}", "", f"Acquisitions: {status_line or 'none'}.", "",
                      f"Snakemake jobs: {job_line}.", "", *[f"- {n}" for n in notes], "",
                      markdown_table(HEADER, md_rows), ""])
    with ome.atomic_output(folder / "report.md") as tmp:
        tmp.write_text(text)
    with ome.atomic_output(folder / "report.html") as tmp:
        tmp.write_text(_html(night, status_line, job_line, notes, rows))
    return folder / "report.md"


def _html(night: str, status_line: str, job_line: str, notes: list[str], rows: list[dict]) -> str:
    colour = {"processed": "#d8f5d8", "failed": "#f8d0d0", "waiting": "#fff2c0", "unchanged": "#eeeeee"}
    body = []
    for row in rows:
        cells = [html.escape(c) for c in _cells(row)]
        if cells[-1]:
            cells[-1] = f'<a href="{cells[-1]}"><img src="{cells[-1]}" height="128"></a>'
        style = colour.get(str(row["status"]), "#ffffff")
        body.append(f'<tr style="background:{style}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Night {html.escape(night)}</title>"
            "<style>body{font-family:sans-serif} table{border-collapse:collapse} "
            "td,th{border:1px solid #bbb;padding:3px 6px;vertical-align:top}</style></head><body>"
            f"<h1>Night {html.escape(night)}</h1><p>Acquisitions: {html.escape(status_line or 'none')}.</p>"
            f"<p>Snakemake jobs: {html.escape(job_line)}.</p><ul>{items}</ul>"
            f"<table><tr>{head}</tr>{''.join(body)}</table></body></html>\n")

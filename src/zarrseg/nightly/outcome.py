"""What the night's Snakemake run gave each sample, read from Snakemake's own summary and the outputs.

A sample is processed when Snakemake reports every output of it present and up to date. Otherwise
it failed, and the reason is the error line its failing job wrote to its log (zarrseg's one-line
errors), in pipeline order; with no such line (the run was killed, or the workflow did not start)
the failure is not the acquisition's fault and the next night retries it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import zarr

from ..evaluation.tables import read_benchmark

PIPELINE = ("ingest", "ingest_ground_truth", "predict", "train", "segment", "cluster", "evaluate", "describe")
HEADLINE = ("arand", "voi_split", "voi_merge")
# a job that ran tonight and ended without an error line: killed by a signal (the kernel's
# out-of-memory killer, a scheduler limit) or crashed in native code; retried a few nights only
DIED = "job died without an error message"


@dataclass
class SampleOutcome:
    sample: str
    processed: bool
    reason: str = ""
    retry: bool = False  # failed for a reason that is not the acquisition's own
    sha256: str = ""
    gt_sha256: str = ""
    cells: list[dict] = field(default_factory=list)  # per grid cell: segments, metrics, thumbnail
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage (Snakemake benchmarks)


def sample_rows(summary: pd.DataFrame, sample: str, workdir: Path, results: Path) -> pd.DataFrame:
    """The summary rows of one sample's outputs.

    The workflow writes a sample's outputs below ``<results>/<stage or experiment>/<sample>/``
    (``ingest/<sample>/image.ome.zarr``, ``<experiment>/<sample>/<cell>/labels.ome.zarr``), so
    the second folder below the results folder names the sample.
    """
    def owner(path: str) -> str | None:
        try:
            parts = (workdir / path).relative_to(results).parts
        except ValueError:
            return None
        return parts[1] if len(parts) > 2 else None

    return summary[summary["output_file"].map(owner) == sample]


def outcome(summary: pd.DataFrame, sample: str, workdir: Path, results: Path, since: float,
            scored: bool = True) -> SampleOutcome:
    """The outcome of ``sample`` (paths in ``summary`` are relative to ``workdir`` or absolute);
    ``scored``: it has ground truth tonight (else metrics an earlier night left beside it are not shown)."""
    rows = sample_rows(summary, sample, workdir, results)
    pending = rows[(rows["status"] != "ok") | (rows["plan"] != "no update")]
    result = SampleOutcome(sample=sample, processed=not rows.empty and pending.empty)
    result.timings = _timings(rows, workdir, since)
    for _, row in rows.iterrows():
        path = workdir / row["output_file"]
        if row["rule"] in ("ingest", "ingest_ground_truth") and path.is_dir():
            sha = dict(zarr.open_group(str(path), mode="r").attrs).get("zarrseg", {}).get("source_sha256", "")
            setattr(result, "sha256" if row["rule"] == "ingest" else "gt_sha256", sha)
    if result.processed:
        result.cells = [_cell(workdir / p, scored) for p in rows["output_file"] if p.endswith("segments.parquet")]
        return result
    if rows.empty:
        result.reason, result.retry = "the workflow did not plan it (see the night's snakemake.log)", True
        return result
    errors = [(PIPELINE.index(r["rule"]) if r["rule"] in PIPELINE else len(PIPELINE), line)
              for _, r in pending.iterrows() for log in r["log-file(s)"].split(",") if log.strip()
              for line in [_error_line(workdir / log.strip(), since)] if line]
    if errors:
        result.reason = min(errors)[1]
    elif died := [r["rule"] for _, r in pending.iterrows() if _ran_silently(workdir, r["log-file(s)"], since)]:
        result.reason = f"{DIED} ({died[0]}: killed by a signal, e.g. out of memory, or crashed; see its log)"
        result.retry = True
    else:
        rules = sorted(set(pending["rule"]), key=lambda r: PIPELINE.index(r) if r in PIPELINE else len(PIPELINE))
        result.reason, result.retry = f"did not finish ({', '.join(rules)} pending: run stopped early)", True
    return result


def _ran_silently(workdir: Path, logs: str, since: float) -> bool:
    """A job of tonight's run wrote its log, and no error line into it."""
    paths = [workdir / log.strip() for log in logs.split(",") if log.strip()]
    return any(p.is_file() and p.stat().st_mtime >= since and not _error_line(p, since) for p in paths)


def _error_line(log: Path, since: float) -> str:
    """The last "error:" line a job wrote to its log during tonight's runs, as one line."""
    if not log.is_file() or log.stat().st_mtime < since:
        return ""
    lines = [" ".join(line.split()) for line in log.read_text(errors="replace").splitlines()]
    errors = [line for line in lines if "error:" in line]
    if errors:
        return errors[-1]
    tail = [line for line in lines if line]
    return f"job failed: {tail[-1]}" if tail and "Traceback" in "\n".join(lines) else ""


def _cell(segments: Path, scored: bool = True) -> dict:
    """Segments, metrics and thumbnail of one grid cell (the folder of its segments.parquet)."""
    row = pd.read_parquet(segments).iloc[0].to_dict()
    cell = {"cell": segments.parent.name, **{k: row.get(k) for k in (
        "axes", "shape", "voxel_size_um", "n_segments", "size_median", "size_mean", "size_unit")}}
    thumb = segments.with_name("thumbnail.png")
    cell["thumbnail_source"] = str(thumb) if thumb.is_file() else ""
    metrics_path = segments.with_name("metrics.parquet")
    if scored and metrics_path.is_file():
        metrics = pd.read_parquet(metrics_path)
        if "annotator" in metrics.columns:
            metrics = metrics[metrics["annotator"].isin(["", "0", "mean"]) | metrics["annotator"].isna()]
        values = {str(m): float(v) for m, v in zip(metrics["metric"], metrics["value"], strict=True)}
        cell.update({k: values.get(k) for k in HEADLINE})
        cell["metrics"] = json.dumps(values, sort_keys=True)
    return cell


def _timings(rows: pd.DataFrame, workdir: Path, since: float = 0.0) -> dict[str, float]:
    """Seconds per rule from the benchmark files of tonight's jobs (beside their logs: logs/ ->
    benchmarks/, .tsv); an earlier night's jobs that Snakemake did not rerun do not count."""
    out: dict[str, float] = {}
    for _, row in rows.drop_duplicates("log-file(s)").iterrows():
        for log in row["log-file(s)"].split(","):
            if not log.strip().endswith(".log"):
                continue
            bench = workdir / log.strip().replace("/logs/", "/benchmarks/", 1)[: -len(".log")]
            bench = bench.with_name(bench.name + ".tsv")
            if bench.is_file() and bench.stat().st_mtime >= since:
                out[row["rule"]] = out.get(row["rule"], 0.0) + read_benchmark(bench).get("runtime_s", 0.0)
    return out

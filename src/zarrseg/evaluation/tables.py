"""Long-format metric tables, Snakemake benchmark parsing, and summaries in the layout of thesis tables.

One row per (experiment, sample, method, cell, params, annotator, metric): a grid of any size
concatenates into one tidy table that pandas, R or a spreadsheet read directly. Runtime and peak
memory of the jobs that produced a segmentation come from Snakemake ``benchmark:`` TSV files.
Summaries are mean ± sd over samples, rows = method / parameter set, columns = metrics.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..errors import ConfigError, InputError
from ..ome import atomic_output
from ..runs import check_output
from .instance import LOWER_IS_BETTER, badness
from .selection import SelectionParams

log = logging.getLogger(__name__)

ID_COLUMNS = ["experiment", "sample", "method", "cell", "params", "annotator"]
COLUMNS = [*ID_COLUMNS, "metric", "value", "runtime_s", "max_rss_mb"]
META_DEFAULTS = {"experiment": "default", "method": "", "cell": "base", "params": "{}"}

# Columns of thesis tables, in the order they print them (PlantSeg Table 2.1, SPOCO, Leng Table 1,
# Zöngür Table 3.4, Zwijghuizen F1). Only those present in the data are shown.
HEADLINE = (
    "arand",
    "voi_split",
    "voi_merge",
    "seg",
    "sbd",
    "abs_dic",
    "ap@0.50",
    "f1@0.50",
    "msa",
    "iou",
    "dice",
    "rand_index",
    "ami",
    "fmi",
    "homogeneity",
    "completeness",
    "v_measure",
    "matched_iou",
    "matched_fg_iou",
)
DISPLAY = {
    "arand": "ARand",
    "arand_precision": "ARand prec.",
    "arand_recall": "ARand rec.",
    "voi_split": "VOI_split",
    "voi_merge": "VOI_merge",
    "voi": "VOI",
    "seg": "SEG",
    "sbd": "SBD",
    "abs_dic": "|DiC|",
    "dic": "DiC",
    "msa": "mSA",
    "rand_index": "RI",
    "adjusted_rand_index": "ARI",
    "ami": "A-MI",
    "fmi": "FMI",
    "homogeneity": "Homo",
    "completeness": "Comp",
    "v_measure": "V-M",
    "iou": "IoU",
    "dice": "Dice",
    "matched_iou": "IoU (matched)",
    "matched_fg_iou": "fg IoU (matched)",
    "matched_accuracy": "Acc. (matched)",
    "pixel_accuracy": "Pixel acc.",
    "clustering_s": "t [s]",
}


def display_name(metric: str) -> str:
    if "@" in metric:
        base, _, t = metric.partition("@")
        name = {"ap": "AP", "f1": "F1", "precision": "Prec", "recall": "Rec"}.get(base, base)
        return f"{name}@{float(t):g}"
    return DISPLAY.get(metric, metric)


# ----------------------------------------------------------------------------- building rows


def parse_meta(items: Iterable[str]) -> dict[str, str]:
    """``["sample=a", "params={...}"]`` -> dict; ``params`` must be a JSON object (normalised)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--meta {item!r} is not of the form key=value")
        if key in ("metric", "value", "runtime_s", "max_rss_mb"):
            raise ConfigError(f"--meta key {key!r} is reserved for a table column")
        out[key] = value
    if "params" in out:
        out["params"] = normalise_params(out["params"])
    return out


def normalise_params(text: str | dict) -> str:
    """A parameter set as compact JSON; key order is kept (the grid's order, used for row labels)."""
    if isinstance(text, dict):
        value = text
    else:
        try:
            value = json.loads(text) if str(text).strip() else {}
        except json.JSONDecodeError as err:
            raise ConfigError(f"params {text!r} is not a JSON object: {err}") from err
    if not isinstance(value, dict):
        raise ConfigError(f"params {text!r} must be a JSON object")
    return json.dumps(value, separators=(",", ":"))


def read_benchmark(path: str | Path) -> dict[str, float]:
    """Runtime (``s``) and peak RSS (``max_rss``, MB) of a Snakemake ``benchmark:`` TSV.

    With ``repeat()`` there is one row per repetition: mean runtime, max RSS. ``NA`` (no samples
    collected, e.g. a job shorter than the sampling interval) becomes NaN.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("benchmark file does not exist", path)
    try:
        bench = pd.read_csv(path, sep="\t", na_values=["NA", "-", ""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(f"not a Snakemake benchmark TSV ({err})", path) from err
    if "s" not in bench.columns or bench.empty:
        raise InputError("not a Snakemake benchmark TSV (no 's' column or no rows)", path)
    runtime = pd.to_numeric(bench["s"], errors="coerce")
    rss = (
        pd.to_numeric(bench["max_rss"], errors="coerce")
        if "max_rss" in bench.columns
        else pd.Series([np.nan])
    )
    return {
        "runtime_s": float(runtime.mean()) if runtime.notna().any() else float("nan"),
        "max_rss_mb": float(rss.max()) if rss.notna().any() else float("nan"),
    }


def parse_benchmarks(items: Iterable[str]) -> dict[str, dict[str, float]]:
    """``["segment=bench/seg.tsv", ...]`` -> {stage: {"runtime_s", "max_rss_mb"}}; files are checked."""
    out = {}
    for item in items:
        stage, sep, path = item.partition("=")
        if not sep or not stage.strip() or not path.strip():
            raise ConfigError(f"--benchmark {item!r} is not of the form STAGE=FILE")
        out[stage.strip()] = read_benchmark(path.strip())
    return out


def metrics_frame(
    scores: dict[str, dict[str, float]],
    meta: dict[str, Any],
    benchmarks: dict[str, dict[str, float]] | None = None,
) -> pd.DataFrame:
    """Long-format rows from {annotator: {metric: value}}.

    ``runtime_s`` is the total over the given stages, ``max_rss_mb`` the largest peak; per-stage
    values go to ``<stage>_runtime_s`` / ``<stage>_max_rss_mb`` columns. Extra meta keys become columns.
    """
    meta = {**META_DEFAULTS, **meta}
    meta = {k: normalise_params(v) if k == "params" else str(v) for k, v in meta.items()}
    benchmarks = benchmarks or {}
    runtimes = [b["runtime_s"] for b in benchmarks.values() if not math.isnan(b["runtime_s"])]
    rss = [b["max_rss_mb"] for b in benchmarks.values() if not math.isnan(b["max_rss_mb"])]
    extra: dict[str, float] = {}
    for stage, b in benchmarks.items():
        extra[f"{stage}_runtime_s"] = b["runtime_s"]
        extra[f"{stage}_max_rss_mb"] = b["max_rss_mb"]
    rows = []
    for annotator, metrics in scores.items():
        for metric, value in metrics.items():
            rows.append(
                {
                    **meta,
                    "annotator": annotator,
                    "metric": metric,
                    "value": float(value),
                    "runtime_s": float(sum(runtimes)) if runtimes else float("nan"),
                    "max_rss_mb": float(max(rss)) if rss else float("nan"),
                    **extra,
                }
            )
    frame = pd.DataFrame(rows)
    ordered = [c for c in COLUMNS if c in frame.columns]
    return frame[ordered + [c for c in frame.columns if c not in ordered]]


def write_table(frame: pd.DataFrame, path: str | Path) -> tuple[Path, Path]:
    """Write ``path`` (Parquet) and the same table as CSV next to it, each atomically."""
    path = Path(path)
    csv = path.with_suffix(".csv")
    check_output(csv)  # both checked before either is written (atomic_output checks path)
    with atomic_output(path) as tmp:
        frame.to_parquet(tmp, engine="pyarrow", index=False)
    with atomic_output(csv) as tmp:
        frame.to_csv(tmp, index=False)
    return path, csv


def read_metrics(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Concatenate per-cell metric tables (Parquet or CSV), checking the required columns."""
    if not paths:
        raise InputError("no metric tables given")
    frames = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise InputError("is a folder, not a metric table" if p.is_dir() else "metric table does not exist", p)
        try:
            frame = (
                # identifiers stay text: sample "001" must not become 1 (its Parquet twin keeps "001")
                pd.read_csv(p, keep_default_na=False, na_values=["", "NaN", "nan"],
                            dtype={col: str for col in ID_COLUMNS})
                if p.suffix == ".csv"
                else pd.read_parquet(p)
            )
        except Exception as err:  # pyarrow raises several types for corrupt files
            raise InputError(f"cannot be read as a metric table ({type(err).__name__}: {err})", p) from err
        missing = {"metric", "value"} - set(frame.columns)
        if missing:
            raise InputError(f"metric table lacks column(s) {sorted(missing)}", p)
        values = pd.to_numeric(frame["value"], errors="coerce")
        odd = frame["value"][values.isna() & frame["value"].notna()]
        if len(odd):
            raise InputError(f"column 'value' holds {len(odd)} non-numbers (e.g. {odd.iloc[0]!r})", p)
        frame["value"] = values.astype(float)
        for col, default in {**META_DEFAULTS, "sample": p.stem, "annotator": ""}.items():
            if col not in frame.columns:
                frame[col] = default
        for col in ID_COLUMNS:
            frame[col] = frame[col].fillna("").astype(str)
        for col in ("runtime_s", "max_rss_mb"):
            if col not in frame.columns:
                frame[col] = np.nan
        frames.append(frame.assign(_file=str(p)))
    table = pd.concat(frames, ignore_index=True, sort=False)
    _refuse_duplicates(table)
    table = table.drop(columns="_file")
    ordered = [c for c in COLUMNS if c in table.columns]
    return table[ordered + [c for c in table.columns if c not in ordered]]


def _refuse_duplicates(table: pd.DataFrame) -> None:
    """Two tables scoring the same sample of the same cell would be averaged as one sample (n = 1):
    e.g. ``evaluate`` without ``--meta sample`` names every workflow output after its file,
    ``labels``, or a shell glob lists one table twice."""
    keys = [*ID_COLUMNS, "metric"]
    repeated = table[table.duplicated(subset=keys, keep=False)]
    if repeated.empty:
        return
    first = repeated.iloc[0]
    same = repeated[(repeated[keys] == first[keys]).all(axis=1)]
    files = list(dict.fromkeys(same["_file"]))
    where = f"in {len(files)} metric tables ({', '.join(files[:3])})" if len(files) > 1 else "twice"
    raise InputError(
        f"sample {first['sample']!r} of cell {first['cell']!r} (method {first['method']!r}) is scored {where}; "
        "give each image its own name (zarrseg evaluate --meta sample=NAME) and list each table once",
        files[0],
    )


# ----------------------------------------------------------------------------- parameters


def _scalar(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | dict) else value


def expand_params(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Add one column per parameter of the ``params`` JSON; return the table and the *swept* ones.

    Column names are the parameter names without the stage prefix (``segment.beta`` -> ``beta``)
    unless that clashes with another parameter or a table column. Swept = more than one value.
    """
    parsed = {p: json.loads(p) if p else {} for p in table["params"].unique()}
    keys: list[str] = []
    for values in parsed.values():
        keys.extend(k for k in values if k not in keys)
    shorts = [k.rsplit(".", 1)[-1] for k in keys]
    names = {}
    for key, short in zip(keys, shorts, strict=True):
        clash = shorts.count(short) > 1 or short in table.columns
        names[key] = key if clash else short
    out = table.copy()
    for key, name in names.items():
        out[name] = out["params"].map(lambda p, k=key: _scalar(parsed[p].get(k)))
    # swept: set to more than one value (rows that lack a key, e.g. a value linked to only some
    # grid rows, do not make it swept: a constant of those rows is not a row label)
    swept = [names[k] for k in keys if out[names[k]].astype(str).nunique() > 1]
    out.attrs["param_columns"] = names  # grid key -> column name
    return out, swept


# ----------------------------------------------------------------------------- summaries


@dataclass
class CurveParams:
    """One family of curve figures (an entry of ``table.curves``, drawn by ``groups.curve_figures``)."""

    x: str  # parameter on the x axis (grid key or table column), e.g. contrastive_global.fraction
    panels: str | None = None  # one panel per value of this parameter
    figures: str | None = None  # one figure per value of this parameter
    metric: str | None = None  # default: the first of table.figure_metrics


@dataclass
class TableParams:
    """Parameters of ``zarrseg table`` (config section ``table``)."""

    metrics: list[str] | str = "headline"  # summary columns: "headline", "all" or metric names
    annotator: Literal["mean", "best"] = "mean"  # which multi-annotator aggregate the summary uses
    figure_metrics: list[str] = field(default_factory=lambda: ["arand", "voi_split", "voi_merge"])
    box_by: str = "partitioner"  # parameter (or column) whose values get one box each
    rank_by: str = "arand"  # metric that picks each method's best parameter set (best.md, box plots)
    digits: int = 3
    # more tables (by_<parameters>.md): per list of parameters a row per combination of their values, mean ± sd of
    # the summary metrics over the grid cells sharing it, e.g. [[train.loss.name]] (Zwijghuizen Tables 5.1 / 5.2)
    group_by: list[list[str]] = field(default_factory=list)
    # metric vs a parameter, a panel / figure per value of others; cells without it: reference lines (Figs 5.1-5.6)
    curves: list[CurveParams] = field(default_factory=list)
    # per-sample oracle vs one fixed setting per row (selection.md; Leng et al. Table 1)
    selection: SelectionParams = field(default_factory=SelectionParams)

    def validate(self) -> None:
        if not 0 <= self.digits <= 10:
            raise ConfigError(f"table.digits must be within 0..10, got {self.digits}")


def annotator_rows(table: pd.DataFrame, annotator: str) -> pd.DataFrame:
    """Rows of single-annotator tables plus the chosen aggregate of multi-annotator ones."""
    return table[table["annotator"].isin(["", annotator])]


def summary_metrics(table: pd.DataFrame, selection: list[str] | str) -> list[str]:
    present = list(dict.fromkeys(table["metric"]))
    if selection == "all":
        return present
    if selection == "headline":
        chosen = [m for m in HEADLINE if m in present]
        return chosen or present
    missing = [m for m in selection if m not in present]
    if missing:
        raise ConfigError(f"table.metrics {missing} are not in the metric tables; present: {present}")
    return list(selection)


def group_columns(table: pd.DataFrame) -> list[str]:
    cols = ["experiment"] if table["experiment"].nunique() > 1 else []
    return [*cols, "method", "cell", "params"]


def summarize(table: pd.DataFrame, params: TableParams | None = None) -> pd.DataFrame:
    """Mean, sd and n over samples per method / parameter set; one ``<metric>_mean``/``_sd`` pair each.

    Runtime and peak memory (per sample, from the benchmarks) are summarised the same way.
    """
    params = params or TableParams()
    table = annotator_rows(table, params.annotator)
    metrics = summary_metrics(table, params.metrics)
    keys = group_columns(table)
    expanded, swept = expand_params(table)
    per_sample = expanded[expanded["metric"].isin(metrics)].pivot_table(
        index=[*keys, "sample"], columns="metric", values="value", aggfunc="mean", sort=False
    )  # rows in the order of the tables (the grid's order), not alphabetical
    resources = expanded.groupby([*keys, "sample"])[["runtime_s", "max_rss_mb"]].first()
    per_sample = per_sample.join(resources)
    grouped = per_sample.groupby(level=keys, sort=False)
    rows = []
    for key, frame in grouped:
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = dict(zip(keys, key, strict=True))
        first = expanded[expanded["params"] == row["params"]].iloc[0]
        row.update({p: first[p] for p in swept})
        row["n"] = int(len(frame))
        for m in [*metrics, "runtime_s", "max_rss_mb"]:
            values = frame[m].dropna() if m in frame else pd.Series(dtype=float)
            row[f"{m}_mean"] = float(values.mean()) if len(values) else float("nan")
            row[f"{m}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
            if m in metrics:
                row[f"{m}_n"] = int(len(values))  # samples behind this mean (a metric can be NaN on some)
        rows.append(row)
    summary = pd.DataFrame(rows)
    summary.attrs["metrics"], summary.attrs["swept"] = metrics, swept
    return summary


def _fmt(mean: float, sd: float, digits: int) -> str:
    if not np.isfinite(mean):
        return "–"
    text = f"{mean:.{digits}f}"
    return f"{text} ± {sd:.{digits}f}" if np.isfinite(sd) else text


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table (pandas' to_markdown would add a 'tabulate' dependency)."""

    def cells(values: list[str]) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"  # "|DiC|" stays one cell

    lines = [cells(header), "|" + "|".join("---" for _ in header) + "|"]
    lines += [cells(r) for r in rows]
    return "\n".join(lines)


def summary_markdown(
    summary: pd.DataFrame, params: TableParams | None = None, title: str | None = None
) -> str:
    """Thesis-style table: rows = method / parameter set, columns = metrics (↓ lower is better),
    best mean per column in bold."""
    params = params or TableParams()
    metrics, swept = summary.attrs.get("metrics", []), summary.attrs.get("swept", [])
    # a swept parameter that only repeats the method name (e.g. partitioner) is not shown twice
    shown = [p for p in swept if not (summary[p].astype(str) == summary["method"].astype(str)).all()]
    label_cols = (["experiment"] if "experiment" in summary.columns else []) + ["method"] + shown
    if not swept:
        label_cols.append("cell")
    best = {}
    for m in metrics:
        col = summary[f"{m}_mean"].round(params.digits)
        key = badness(m, col)
        if key is not None and col.notna().any() and col.nunique() > 1:  # bold only where the rows differ
            best[m] = col[key.idxmin()]
    header = [
        *label_cols,
        "n",
        *[display_name(m) + (" ↓" if m in LOWER_IS_BETTER else "") for m in metrics],
        "runtime [s]",
        "mean peak RSS [MB]",  # each sample's job peak, averaged
    ]
    rows = []
    for _, r in summary.iterrows():
        # a parameter a row does not set (e.g. supervision_fraction of a clustering row) shows as "–"
        cells = ["–" if pd.isna(r[c]) else str(r[c]) for c in label_cols] + [str(r["n"])]
        for m in metrics:
            text = _fmt(r[f"{m}_mean"], r[f"{m}_sd"], params.digits)
            is_best = m in best and round(r[f"{m}_mean"], params.digits) == best[m]
            count = r.get(f"{m}_n", r["n"])
            if text != "–" and count < r["n"]:  # NaN on some samples: the mean is over fewer of them
                text += f" (n={int(count)})"
            cells.append(f"**{text}**" if is_best else text)
        cells.append(_fmt(r["runtime_s_mean"], r["runtime_s_sd"], 1))
        cells.append(_fmt(r["max_rss_mb_mean"], float("nan"), 0))
        rows.append(cells)
    lines = [f"# {title}", ""] if title else []
    lines.append(markdown_table(header, rows))
    lines += [
        "",
        f"Mean ± sd over samples (n per row; (n=k): a metric scored on fewer samples); ↓ lower is better; "
        f"bold: best per column (DiC: nearest 0). "
        f"Multi-annotator rows use the annotator '{params.annotator}'.",
    ]
    return "\n".join(lines) + "\n"


def ranking_metric(summary: pd.DataFrame, wanted: str) -> str:
    """``wanted`` if the summary has it, else its first metric column."""
    metrics = summary.attrs.get("metrics", [])
    if f"{wanted}_mean" in summary.columns or not metrics:
        return wanted
    return metrics[0]


def best_per_method(summary: pd.DataFrame, rank_by: str) -> pd.DataFrame:
    """One row per method (and experiment): its parameter set with the best mean ``rank_by``.

    The thesis layout for comparing methods that were each tuned (PlantSeg Table 2.1).
    """
    metric = ranking_metric(summary, rank_by)
    col = f"{metric}_mean"
    keys = [k for k in ("experiment", "method") if k in summary.columns]
    if col not in summary.columns or summary[col].isna().all():
        return summary.iloc[0:0].copy()
    ranked = summary.dropna(subset=[col])
    pick = (
        ranked.groupby(keys, sort=True)[col].idxmin()
        if metric in LOWER_IS_BETTER
        else ranked.groupby(keys, sort=True)[col].idxmax()
    )
    best = summary.loc[pick.to_numpy()].reset_index(drop=True)
    best.attrs.update(summary.attrs)
    best.attrs["rank_by"] = metric
    return best


def write_summary(
    summary: pd.DataFrame, markdown: str, outdir: Path, name: str = "summary"
) -> tuple[Path, Path]:
    md, csv = outdir / f"{name}.md", outdir / f"{name}.csv"
    with atomic_output(md) as tmp:
        tmp.write_text(markdown)
    with atomic_output(csv) as tmp:
        summary.to_csv(tmp, index=False)
    return md, csv

"""Summaries over grid cells: group tables and curves against a parameter with reference lines.

A grid cell is one trained configuration (one seed, one loss, ...); its score is its mean over
the scored samples. ``group_table`` pools cells that share the values of a few parameters
(mean ± sd over the cells: Zwijghuizen Table 5.1, one row per fine-tuning loss; Table 5.2, per
frozen / non-frozen encoder and loss). ``curve_figures`` draws a metric against one parameter
(mean ± sd over the cells at each value), one panel per value of a second parameter and one
figure per value of a third; cells that do not set the x parameter at all (a baseline such as
the supervised U-Net) are drawn as a horizontal line at their mean (Figures 5.1-5.6).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..errors import ConfigError
from ..ome import atomic_output
from .tables import CurveParams, display_name, expand_params, markdown_table

log = logging.getLogger(__name__)


def column(expanded: pd.DataFrame, name: str) -> str:
    """The table column of a parameter given by its grid key (``train.loss.name``) or column name."""
    if name in expanded.columns:
        return name
    mapped = expanded.attrs.get("param_columns", {}).get(name)
    if mapped is None:
        known = sorted(expanded.attrs.get("param_columns", {}))
        raise ConfigError(f"table: {name!r} is neither a grid parameter nor a table column; parameters: {known}")
    return mapped


def cell_scores(table: pd.DataFrame, metrics: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-cell means over samples, one column per metric, plus the parameter columns; the expanded table)."""
    expanded, _swept = expand_params(table)
    keys = [c for c in ("experiment", "method", "cell", "params") if c in expanded.columns]
    rows = expanded[expanded["metric"].isin(metrics)]
    scores = rows.pivot_table(index=keys, columns="metric", values="value", aggfunc="mean", sort=False)
    params = expanded.drop_duplicates("params")
    extra = [c for c in params.columns if c not in (*keys, "sample", "annotator", "metric", "value", *metrics)]
    cells = scores.reset_index().merge(params[["params", *extra]], on="params", how="left")
    cells.attrs.update(expanded.attrs)
    return cells, expanded


def group_table(table: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    """Mean, sd and number of cells per combination of the ``by`` values (cells lacking one of
    them, e.g. a baseline without pretraining, are left out)."""
    cells, _ = cell_scores(table, metrics)
    cols = [column(cells, b) for b in by]
    cells = cells.dropna(subset=cols)
    out = []
    for key, frame in cells.groupby(cols, sort=False):
        row = dict(zip(cols, key if isinstance(key, tuple) else (key,), strict=True))
        row["n"] = len(frame)
        for m in metrics:
            values = frame[m].dropna() if m in frame else pd.Series(dtype=float)
            row[f"{m}_mean"] = float(values.mean()) if len(values) else float("nan")
            row[f"{m}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        out.append(row)
    result = pd.DataFrame(out)
    result.attrs.update({"by": cols, "labels": list(by), "metrics": metrics})  # labels: the keys as given
    return result


def group_markdown(groups: pd.DataFrame, digits: int = 3) -> str:
    by, metrics = groups.attrs["by"], groups.attrs["metrics"]

    def fmt(mean: float, sd: float) -> str:
        if not np.isfinite(mean):
            return "–"
        return f"{mean:.{digits}f} ± {sd:.{digits}f}" if np.isfinite(sd) else f"{mean:.{digits}f}"

    rows = [[str(r[b]) for b in by] + [str(r["n"])] + [fmt(r[f"{m}_mean"], r[f"{m}_sd"]) for m in metrics]
            for _, r in groups.iterrows()]
    labels = groups.attrs.get("labels", by)  # train.loss.name, not its column's short name 'name'
    header = [*labels, "cells", *[display_name(m) for m in metrics]]
    note = "Mean ± sd over the grid cells (each cell: its mean over the scored samples)."
    return f"# By {', '.join(labels)}\n\n{markdown_table(header, rows)}\n\n{note}\n"


def write_group_tables(table: pd.DataFrame, group_by: list[list[str]], metrics: list[str], outdir: Path,
                       digits: int = 3) -> list[Path]:
    """One ``by_<parameters>.md`` / ``.csv`` per entry of ``group_by``."""
    paths = []
    for by in group_by:
        groups = group_table(table, list(by), metrics)
        name = "by_" + "_".join(_slug(b) for b in by)
        md, csv = outdir / f"{name}.md", outdir / f"{name}.csv"
        with atomic_output(md) as tmp:
            tmp.write_text(group_markdown(groups, digits))
        with atomic_output(csv) as tmp:
            groups.to_csv(tmp, index=False)
        paths += [md, csv]
    return paths


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "x"


def _sort_key(values: pd.Series) -> list:
    uniq = list(dict.fromkeys(values.dropna().tolist()))
    try:
        return sorted(uniq, key=float)
    except (TypeError, ValueError):
        return uniq


def curve_figures(table: pd.DataFrame, spec: CurveParams, metric: str, outdir: Path) -> list[Path]:
    """Metric against ``spec.x`` (mean ± sd over the cells at each x), one panel per ``spec.panels``
    value, one PNG per ``spec.figures`` value; cells without x: a horizontal line at their mean."""
    cells, _ = cell_scores(table, [metric])
    if metric not in cells:
        log.warning("table: metric %s not in the tables; no curves of %s", metric, spec.x)
        return []
    x = column(cells, spec.x)
    panel = column(cells, spec.panels) if spec.panels else None
    figure = column(cells, spec.figures) if spec.figures else None
    paths = []
    for fvalue in _sort_key(cells[figure]) if figure else [None]:
        sub = cells if figure is None else cells[cells[figure].astype(str) == str(fvalue)]
        curve, reference = sub[sub[x].notna()], sub[sub[x].isna()]
        pvalues = _sort_key(curve[panel]) if panel else [None]
        cols = min(3, len(pvalues))
        nrows = int(np.ceil(len(pvalues) / cols))
        fig = Figure(figsize=(3.6 * cols, 3.0 * nrows), layout="constrained")
        axes = fig.subplots(nrows, cols, squeeze=False, sharey=True).ravel()  # panels compare on one scale
        for ax, pvalue in zip(axes, pvalues, strict=False):
            points = curve if panel is None else curve[curve[panel].astype(str) == str(pvalue)]
            stats = points.groupby(x)[metric].agg(["mean", "std"])
            stats = stats.loc[[v for v in _sort_key(points[x]) if v in stats.index]]
            xs = pd.to_numeric(pd.Series(stats.index), errors="coerce")
            xs = xs if xs.notna().all() else pd.Series(range(len(stats)))
            ax.errorbar(xs, stats["mean"], yerr=stats["std"].fillna(0.0), marker="o", ms=4, capsize=3,
                        color="tab:red", label="mean ± sd")
            refs = reference
            if panel and reference[panel].notna().any():  # a baseline per panel value (e.g. per loss)
                refs = reference[reference[panel].astype(str) == str(pvalue)]
            for label, ref in refs.groupby("method", sort=False):
                ax.axhline(ref[metric].mean(), color="tab:blue", lw=1.2, label=f"{label} (mean)")
            ax.set_xticks(list(xs), [str(v) for v in stats.index])
            ax.set_xlabel(spec.x)
            ax.set_ylabel(display_name(metric))
            ax.set_title(f"{spec.panels} = {pvalue}" if panel else display_name(metric), fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        for ax in axes[len(pvalues):]:
            ax.set_visible(False)
        if figure:
            fig.suptitle(f"{spec.figures} = {fvalue}", fontsize=10)
        name = f"curve_{_slug(spec.x)}" + (f"_by_{_slug(spec.panels)}" if panel else "") + (
            f"_{_slug(str(fvalue))}" if figure else "")
        path = outdir / f"{name}.png"
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        paths.append(path)
    return paths

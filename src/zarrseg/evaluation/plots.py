"""Figures of an experiment grid: box plots per partitioner (PlantSeg Fig. 2.4) and metric-vs-parameter curves.

Drawn with matplotlib's object API on the Agg canvas (no pyplot state, no display needed), so
it runs inside Snakemake jobs and Dask workers alike. Every PNG is written atomically.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..experiments import is_seed
from ..ome import atomic_output
from .instance import LOWER_IS_BETTER, badness
from .tables import TableParams, display_name, expand_params

log = logging.getLogger(__name__)


def _best_index(values: pd.Series, metric: str):
    """Index of the best value of ``metric`` (the first for a metric with no better side)."""
    key = badness(metric, values)
    return values.index[0] if key is None else key.idxmin()


def _save(fig: Figure, path: Path) -> Path:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "x"


def _per_sample(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    return table[table["metric"] == metric]


def _box_column(table: pd.DataFrame, wanted: str) -> str | None:
    """``wanted`` (a parameter or column) if the tables have it, else the method, else the cell
    while there are few cells; None for one method over a larger grid (two dozen boxes, each of
    a few samples, labelled by cell ids, say nothing its curves do not)."""
    if wanted in table.columns and wanted not in ("metric", "value"):
        return wanted
    if table["method"].nunique() > 1:
        return "method"
    return "cell" if table["cell"].nunique() <= MAX_CELL_BOXES else None


MAX_CELL_BOXES = 8


def box_plot(
    table: pd.DataFrame, metrics: list[str], by: str, path: Path, key: str | None = None
) -> Path | None:
    """One panel per metric, one box per value of ``by`` over samples; each box shows the parameter
    set of that group with the best mean of the first metric (PlantSeg compares tuned partitioners)."""
    scored = set(table.loc[table["value"].notna(), "metric"])  # a metric NaN on every sample has no box
    metrics = [m for m in metrics if m in scored]
    if not metrics:
        return None
    key = key if key in scored else metrics[0]
    # rows without the box parameter (k-means next to multicut rows) get a box of their own
    table = table.assign(**{by: table[by].where(table[by].notna(), "(none)")})
    ranking = _per_sample(table, key).groupby([by, "params"])["value"].mean().reset_index()
    groups, chosen = [], {}
    for value, frame in ranking.groupby(by, sort=True):
        frame = frame.dropna(subset=["value"]) if frame["value"].notna().any() else frame.fillna({"value": 0.0})
        best = frame.loc[_best_index(frame["value"], key)]
        groups.append(value)
        chosen[value] = best["params"]
    fig = Figure(figsize=(3.2 * len(metrics), 3.6), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    rng = np.random.default_rng(0)
    for ax, metric in zip(axes, metrics, strict=True):
        data = []
        for g in groups:
            rows = _per_sample(table, metric)
            rows = rows[(rows[by] == g) & (rows["params"] == chosen[g])]
            data.append(rows.groupby("sample")["value"].mean().to_numpy())
        ax.boxplot(data, tick_labels=[str(g) for g in groups], widths=0.6, showfliers=False)
        for i, values in enumerate(data, start=1):
            ax.plot(i + rng.uniform(-0.12, 0.12, values.size), values, "o", ms=3, alpha=0.7, color="tab:blue")
        ax.set_title(
            display_name(metric) + (" (lower is better)" if metric in LOWER_IS_BETTER else ""), fontsize=9
        )
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"per {by}: best parameter set by mean {display_name(key)}", fontsize=10)
    return _save(fig, path)


def _numeric(series: pd.Series) -> bool:
    """Values that make a curve axis: numbers, not booleans (a True/False switch gets boxes, not a curve)."""
    values = series.dropna()
    if values.map(lambda v: isinstance(v, bool | np.bool_)).any():
        return False
    try:
        pd.to_numeric(values, errors="raise")
    except (ValueError, TypeError):
        return False
    return bool(series.notna().any())


def _best_setting(rows: pd.DataFrame, key: str, others: list[str]) -> dict:
    """Values of ``others`` in the parameter set with the best mean ``key`` metric among ``rows``."""
    ranked = rows[rows["metric"] == key].groupby("params")["value"].mean()
    if ranked.empty:
        return {}
    best = _best_index(ranked, key)
    first = rows[rows["params"] == best].iloc[0]
    return {o: first[o] for o in others}


def parameter_curves(
    table: pd.DataFrame,
    metrics: list[str],
    param: str,
    hue: str | None,
    path: Path,
    swept: list[str],
    key: str | None = None,
) -> Path | None:
    """Metric vs. one swept parameter, mean over samples (error bar: sd), one line per ``hue`` value.

    The other swept parameters stay at the best setting of each line (by the first metric), so a
    curve is a one-parameter sweep through that line's optimum, as in a sensitivity analysis.
    """
    metrics = [m for m in metrics if m in set(table["metric"])]
    if not metrics:
        return None
    # seeds are pooled into each point's mean ± sd, not held at the luckiest one
    others = [o for o in swept if o not in (param, hue) and not is_seed(o)]
    key = key or metrics[0]
    fig = Figure(figsize=(3.4 * len(metrics), 3.4), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    hues = sorted(table[hue].astype(str).unique()) if hue else [None]
    x_all = np.sort(pd.to_numeric(table[param]).dropna().unique())
    dodge = 0.008 * (x_all[-1] - x_all[0] if x_all.size > 1 else 1.0)
    drawn = 0
    held: dict[str | None, str] = {}  # line -> the values its other parameters are held at
    for ax, metric in zip(axes, metrics, strict=True):
        for k, h in enumerate(hues):
            sub = table if h is None else table[table[hue].astype(str) == h]
            sub = sub[sub[param].notna()]  # a line of rows that set the parameter (a W-Net row has no n_clusters)
            setting = _best_setting(sub, key, others)
            held[h] = ", ".join(f"{n} {v}" for n, v in setting.items() if pd.notna(v))
            for name, value in setting.items():
                sub = sub[sub[name].astype(str) == str(value)]
            sub = _per_sample(sub, metric)
            if sub.empty:
                continue
            per_sample = sub.assign(_x=pd.to_numeric(sub[param])).groupby(["_x", "sample"])["value"].mean()
            stats = per_sample.reset_index().groupby("_x")["value"].agg(["mean", "std"]).sort_index()
            offset = (k - (len(hues) - 1) / 2) * dodge
            drawn += 1
            ax.errorbar(
                stats.index + offset,
                stats["mean"],
                yerr=stats["std"].fillna(0.0),
                marker="o",
                ms=4,
                capsize=3,
                label=f"{h} ({held[h]})" if h is not None and held[h] else h,
            )
        ax.set_xlabel(param)
        ax.set_title(
            display_name(metric) + (" (lower is better)" if metric in LOWER_IS_BETTER else ""), fontsize=9
        )
        ax.grid(alpha=0.3)
        if hue:
            ax.legend(fontsize=7, title=hue, title_fontsize=7)
    if not drawn:
        log.info("table: no row sets %s; no curve drawn", param)
        return None
    if others:
        values = f": {held[None]}" if None in held and held[None] else ""
        fig.suptitle(
            f"{', '.join(others)} at the best setting of each line (by mean {display_name(key)}){values}",
            fontsize=9,
        )
    return _save(fig, path)


def make_figures(table: pd.DataFrame, outdir: Path, params: TableParams | None = None) -> list[Path]:
    """Box plot per ``box_by`` value and one curve figure per swept numeric parameter."""
    params = params or TableParams()
    expanded, swept = expand_params(table)
    by = _box_column(expanded, params.box_by)
    key = params.rank_by if params.rank_by in set(expanded["metric"]) else None
    figures = []
    box = None if by is None else box_plot(expanded, list(params.figure_metrics), by, outdir / f"box_{_slug(by)}.png", key)
    if box is not None:
        figures.append(box)
    # one line per box group, else per method: rows pooled into one line hid opposite trends
    hue = by if by in swept else "method" if expanded["method"].nunique() > 1 else None
    for param in swept:
        if param == by or is_seed(param) or not _numeric(expanded[param]):  # a seed is no sensitivity axis
            continue
        curve = parameter_curves(
            expanded,
            list(params.figure_metrics),
            param,
            hue,
            outdir / f"curve_{_slug(param)}.png",
            swept,
            key,
        )
        if curve is not None:
            figures.append(curve)
    if not figures:
        log.warning(
            "table: none of the figure metrics %s is in the tables; no figures drawn", params.figure_metrics
        )
    return figures

"""The ``table`` stage: one tidy table of a grid's metrics, its summaries and its figures.

Kept apart from ``tables`` (the table logic) and ``plots`` (the figures) so neither imports the other.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..runs import refuse_foreign, remove_stale, staged_folders
from .groups import column, curve_figures, write_group_tables
from .plots import make_figures
from .tables import (
    TableParams,
    annotator_rows,
    best_per_method,
    display_name,
    expand_params,
    read_metrics,
    summarize,
    summary_markdown,
    summary_metrics,
    write_summary,
    write_table,
)

log = logging.getLogger(__name__)


def aggregate(
    paths: Sequence[str | Path],
    outdir: str | Path,
    params: TableParams | None = None,
    figures: str | Path | None = None,
) -> dict[str, Any]:
    """The ``table`` stage: concatenated table, summary (Markdown + CSV) and figures under ``outdir``
    (figures in ``figures``, default ``outdir/figures``)."""
    params = params or TableParams()
    outdir = Path(outdir)
    table = read_metrics(paths)
    if table.empty:
        raise InputError(f"the {len(paths)} metric table(s) hold no rows")
    if table["value"].isna().all():
        raise InputError(f"every value of the {len(paths)} metric table(s) is NaN: nothing to summarise")
    chosen = annotator_rows(table, params.annotator)  # the rows figures and group tables show
    summary_metrics(chosen, params.metrics)  # fail on bad names before writing
    expanded, _ = expand_params(table)
    for name in [*(b for by in params.group_by for b in by),
                 *(n for c in params.curves for n in (c.x, c.panels, c.figures) if n)]:
        column(expanded, name)
    _check_explicit_names(table, expanded, params)
    for name in ("metrics.parquet", "metrics.csv", "summary.md", "summary.csv", "best.md", "best.csv"):
        refuse_foreign(outdir / name)  # the files every run writes: someone else's stops it before the work
    figdir = Path(figures) if figures else outdir / "figures"
    targets = [outdir] if figdir == outdir / "figures" else [outdir, figdir]
    with staged_folders(*targets) as stages:  # nothing new in outdir unless every table and figure is made
        out = _write_all(table, chosen, params, stages[0], stages[-1] / "figures" if len(stages) == 1 else stages[1])
    moved = dict(zip(stages, targets, strict=True))

    def final(p: Path) -> Path:
        stage = next(s for s in stages if p.is_relative_to(s))
        return moved[stage] / p.relative_to(stage)

    result = {k: final(v) if isinstance(v, Path) else [final(p) for p in v] if isinstance(v, list) else v
              for k, v in out.items()}
    written = {v for v in result.values() if isinstance(v, Path)} | {
        p for v in result.values() if isinstance(v, list) for p in v}
    stale = remove_stale(outdir, written, ["by_*.md", "by_*.csv", "selection.md", "selection.csv"])
    stale += remove_stale(figdir, written, ["box_*.png", "curve_*.png"])  # not the panels PNGs beside them
    if stale:
        log.info("table: removed %d file(s) of an earlier run this one no longer makes: %s", len(stale),
                 ", ".join(p.name for p in stale))
    log.info("table: %d rows from %d tables -> %s (%d figures)", len(table), len(paths), outdir, len(out["figures"]))
    return result


def _check_explicit_names(table, expanded, params: TableParams) -> None:
    """A ``rank_by`` or ``box_by`` the user set (not the default) must exist: a typo otherwise falls
    back silently to another metric or grouping, and the tables say nothing of it."""
    from dataclasses import fields

    from ..errors import ConfigError

    defaults = {f.name: f.default for f in fields(TableParams)}
    metrics = sorted(set(table["metric"]))
    if params.rank_by != defaults["rank_by"] and params.rank_by not in metrics:
        raise ConfigError(f"table.rank_by {params.rank_by!r} is not a metric of the tables; metrics: {metrics}")
    if params.box_by != defaults["box_by"]:
        column(expanded, params.box_by)


def _write_all(table, chosen, params: TableParams, outdir: Path, figdir: Path) -> dict[str, Any]:
    """Every table and figure of the stage into ``outdir`` / ``figdir`` (the staging folders)."""
    parquet, csv = write_table(table, outdir / "metrics.parquet")
    summary = summarize(table, params)
    title = ", ".join(sorted(table["experiment"].unique()))
    md, scsv = write_summary(summary, summary_markdown(summary, params, title=f"Experiment {title}"), outdir)
    best = best_per_method(summary, params.rank_by)
    best_title = f"Experiment {title}: best parameter set per method by mean {display_name(best.attrs.get('rank_by', ''))}"
    best_md, best_csv = write_summary(
        best, summary_markdown(best, params, title=best_title), outdir, name="best"
    )
    extra = {}
    if params.selection.metric:
        extra["selection_md"], extra["selection_csv"] = write_selection(table, params, outdir, title)
    figdir.mkdir(parents=True, exist_ok=True)  # exists even without figures (a workflow output)
    figures = make_figures(chosen, figdir, params)
    groups = write_group_tables(chosen, params.group_by, summary.attrs["metrics"], outdir, params.digits)
    for spec in params.curves:
        metric = spec.metric or params.figure_metrics[0]
        figures += curve_figures(chosen, spec, metric, figdir)
    return {
        "metrics": parquet,
        "metrics_csv": csv,
        "summary_md": md,
        "summary_csv": scsv,
        "best_md": best_md,
        "best_csv": best_csv,
        "figures": figures,
        "groups": groups,
        "summary": summary,
        **extra,
    }


def write_selection(table, params: TableParams, outdir: Path, title: str) -> tuple[Path, Path]:
    """selection.md / .csv: oracle vs fixed columns for the mean and the best annotator."""
    from .selection import selection_markdown, selection_table

    rows = table[table["annotator"].isin(["", "mean", "best"])]
    selection = selection_table(rows, params.selection, summary_metrics(rows, params.metrics))
    text = selection_markdown(selection, params.selection, params.digits, title=f"Experiment {title}: model selection")
    return write_summary(selection, text, outdir, name="selection")

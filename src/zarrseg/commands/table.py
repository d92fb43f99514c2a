"""Aggregate the per-cell metric tables of an experiment grid into one table, summaries and figures.

Writes OUTDIR/metrics.parquet + metrics.csv (all rows), OUTDIR/summary.md + summary.csv (rows =
method / parameter set, columns = metrics, mean ± sd over samples, in the layout of the thesis
tables) and OUTDIR/figures/*.png (box plots per partitioner, metric-vs-parameter curves; --figures
names another folder).

Example:
  zarrseg table results/exp/metrics/*.parquet -o results/exp --set box_by=partitioner

Also OUTDIR/best.md + best.csv: each method at its best parameter set (by rank_by).

Parameters (config section 'table'; --params / --set key=value):
  metrics         summary columns: "headline" (the thesis-table metrics present), "all" or names
  annotator       mean | best: which multi-annotator aggregate summaries use (default mean)
  figure_metrics  metrics drawn in the figures (default [arand, voi_split, voi_merge])
  box_by          parameter or column with one box per value (default partitioner)
  rank_by         metric that picks each method's best parameter set (default arand)
  digits          decimals in summary.md (default 3)
"""

from __future__ import annotations

import argparse

from ..evaluation.report import aggregate
from ..evaluation.tables import TableParams
from ._common import add_params_arguments, params_from_args

HELP = "aggregate metric tables of an experiment grid into summaries and plots"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "tables", metavar="METRICS.parquet", nargs="+", help="per-cell tables from 'zarrseg evaluate'"
    )
    parser.add_argument(
        "-o", "--outdir", metavar="OUTDIR", required=True, help="folder for tables and figures"
    )
    parser.add_argument("--figures", metavar="DIR", help="folder for the figures (default OUTDIR/figures)")
    add_params_arguments(parser, "table", "rank_by=voi_split")


def run(args: argparse.Namespace) -> int:
    params = params_from_args(TableParams, args, "table")
    out = aggregate(args.tables, args.outdir, params, figures=args.figures)
    print(out["summary_md"].read_text(), end="")
    return 0

"""Aggregate the per-cell metric tables of an experiment grid into one table, summaries and figures.

Writes into OUTDIR:
  metrics.parquet + metrics.csv  every row of every input table
  summary.md + summary.csv       rows = method / parameter set, columns = metrics, mean ± sd over
                                 samples (the layout of the method papers' result tables)
  best.md + best.csv             each method at its best parameter set (by rank_by)
  figures/*.png                  box plots (one box per box_by value), metric-vs-parameter curves
                                 (--figures names another folder)
and, when set, group tables (group_by), curve figures (curves) and a model-selection table
(selection); every key is listed at the end of this help.

Example:
  zarrseg table results/exp/metrics/*.parquet -o results/exp --set box_by=partitioner
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

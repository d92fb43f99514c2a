"""Model selection columns of a grid: a per-sample oracle next to one fixed, honestly chosen setting.

Leng et al. (Table 1) pick, per image, the best of 10 seeds x 9 beta values by the V-measure
against the ground truth: an oracle no unsupervised user has. Beside it this module reports what
an unsupervised user gets: one setting per row (e.g. one beta, or one k) for every sample, chosen
by the mean score on a few *selection* samples only and reported on the others, averaged over the
parameters that cannot be chosen (random seeds: ``average``).

* ``oracle``: per sample, the row's cell with the best ``metric``; every metric of that cell;
  mean over samples.
* ``fixed``: settings = the row's cells with the ``average`` parameters removed; the setting
  with the best mean ``metric`` over the selection samples (and averaged parameters) is reported
  as the mean over the remaining samples (and averaged parameters).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from .instance import UNRANKED, badness


@dataclass
class SelectionParams:
    """Oracle vs fixed model-selection columns (``selection.md``); off while ``metric`` is null."""

    metric: str | None = None  # the score that selects, e.g. v_measure (null: no selection table)
    average: list[str] = field(default_factory=list)  # parameters averaged over, never chosen (e.g. seeds)
    samples: list[str] = field(default_factory=list)  # names / patterns the fixed choice is made on (empty: all)


def _setting(params: str, average: list[str]) -> str:
    values = json.loads(params) if params else {}
    return json.dumps({k: v for k, v in values.items() if k not in average}, separators=(",", ":"))


def _better(metric: str):
    """Index of the best of an array of values (the first, for a metric with no better side)."""
    return lambda values: np.nanargmin(badness(metric, np.asarray(values))) if metric not in UNRANKED else 0


def selection_table(table: pd.DataFrame, params: SelectionParams, metrics: list[str]) -> pd.DataFrame:
    """One row per (method, annotator aggregate): oracle and fixed means of ``metrics``.

    ``table`` holds the long-format rows of one annotator aggregate per (sample, cell) (e.g. the
    rows ``annotator_rows`` keeps); columns of the result: ``method``, ``annotator``,
    ``oracle_n``, ``oracle_<metric>``, ``fixed_setting``, ``fixed_n``, ``fixed_<metric>``.
    """
    metric = params.metric
    present = set(table["metric"])
    if metric not in present:
        raise ConfigError(f"table.selection.metric {metric!r} is not among the scored metrics {sorted(present)}")
    wanted = list(dict.fromkeys([*metrics, metric]))
    wide = table[table["metric"].isin(wanted)].pivot_table(
        index=["method", "annotator", "cell", "params", "sample"], columns="metric", values="value",
        aggfunc="mean", sort=False,
    ).reset_index()
    wide["setting"] = [_setting(p, params.average) for p in wide["params"]]
    pick = _better(metric)
    chosen_on = wide["sample"].map(lambda s: not params.samples or any(fnmatchcase(s, p) for p in params.samples))
    rows: list[dict[str, Any]] = []
    for (method, annotator), frame in wide.groupby(["method", "annotator"], sort=False):
        row: dict[str, Any] = {"method": method, "annotator": annotator}
        best = [g.iloc[pick(g[metric].to_numpy())] for _, g in frame.groupby("sample", sort=False)]
        oracle = pd.DataFrame(best)
        row["oracle_n"] = len(oracle)
        row.update({f"oracle_{m}": float(oracle[m].mean()) for m in metrics})
        on = frame[chosen_on.loc[frame.index]]
        rest = frame[~chosen_on.loc[frame.index]] if params.samples else frame
        scores = on.groupby("setting", sort=False)[metric].mean()
        if len(scores) and len(rest):
            setting = scores.index[pick(scores.to_numpy())]
            fixed = rest[rest["setting"] == setting]
            row["fixed_setting"] = _varying(setting, frame["setting"].unique())
            row["fixed_n"] = int(fixed["sample"].nunique())
            row.update({f"fixed_{m}": float(fixed[m].mean()) for m in metrics})
        else:
            row["fixed_setting"], row["fixed_n"] = "", 0
            row.update({f"fixed_{m}": float("nan") for m in metrics})
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs["metrics"] = metrics
    return out


def selection_markdown(selection: pd.DataFrame, params: SelectionParams, digits: int = 3, title: str = "") -> str:
    """Oracle and fixed columns as Markdown, one section per annotator aggregate."""
    from .tables import display_name, markdown_table

    metrics = selection.attrs.get("metrics", [])
    lines = [f"# {title}", ""] if title else []
    names = {"mean": "mean over annotators", "best": "best annotator", "": "single ground truth"}
    chosen = ", ".join(params.samples) if params.samples else "all samples (optimistic: chosen and scored on the same)"
    for annotator, frame in selection.groupby("annotator", sort=False):
        lines += [f"## Ground truth: {names.get(annotator, annotator)}", ""]
        header = ["row", "oracle n", *[f"oracle {display_name(m)}" for m in metrics],
                  "fixed n", *[f"fixed {display_name(m)}" for m in metrics], "fixed choice"]
        body = []
        for _, r in frame.iterrows():
            body.append(
                [str(r["method"]), str(r["oracle_n"]), *[_num(r[f"oracle_{m}"], digits) for m in metrics],
                 str(r["fixed_n"]), *[_num(r[f"fixed_{m}"], digits) for m in metrics], _choice(r["fixed_setting"])]
            )
        lines += [markdown_table(header, body), ""]
    lines.append(
        f"Oracle: per sample, the row's cell with the best {display_name(params.metric)} against the ground truth "
        f"(Leng et al.'s protocol). Fixed: one setting per row, chosen by the mean {display_name(params.metric)} "
        f"on {chosen}, reported on the other samples"
        + (f", averaged over {', '.join(params.average)}" if params.average else "")
        + "."
    )
    return "\n".join(lines) + "\n"


def _varying(setting: str, settings) -> str:
    """``setting`` restricted to the parameters that differ between the row's settings (the choice)."""
    parsed = [json.loads(s) for s in settings]
    keys = [k for k in json.loads(setting) if len({json.dumps(p.get(k)) for p in parsed}) > 1]
    chosen = json.loads(setting)
    return json.dumps({k: chosen[k] for k in keys}, separators=(",", ":"))


def _num(value: float, digits: int) -> str:
    return "–" if not np.isfinite(value) else f"{value:.{digits}f}"


def _choice(setting: str) -> str:
    values = json.loads(setting) if setting else {}
    return ", ".join(f"{k.rsplit('.', 1)[-1]} {v}" for k, v in values.items()) or "–"

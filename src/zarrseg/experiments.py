"""Experiment grids: ``config/experiments/<name>.yaml`` -> named cells of stage parameters.

A grid declares samples and, per parameter ``<stage>.<key>``, a list of values; every
combination is one *cell*, a file target of the workflow. Cell ids are built from the
values only (``partitioner-gasp_beta-0.5``), so adding a value to a grid adds new cells and
leaves the existing ones (and their outputs) untouched. Stages that do not depend on a
swept key share outputs: ``cell_for(cell, stages)`` keeps only the keys of those stages.

Rows that are not a product of values (Table 3.4: colour K-means | DINO | ... | U-Net at 20 %)
use ``linked``: per value of a grid key, more ``<stage>.<key>`` values that cell also takes
(``linked: {grid.row: {unet_20: {train.supervision_fraction: 0.2}}}``). They are part of the
cell's values (so of its sub-cells) but not of its id.

Rows that sweep different parameters (Leng et al. Table 1: the W-Net rows sweep beta and the
seed, the K-means rows the number of clusters) use a *list* of grids: the cells are the union of
each grid's combinations, so no row is crossed with another row's parameters.

A variant of a grid (more seeds, a fixed step count, other samples) names it in ``extends`` and
says only what differs: ``fixed`` and ``linked`` (per grid value) are merged into the base's (the
variant's values win), every other key it sets replaces the base's, so a change to the base
reaches every variant.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

BASE_CELL = "base"


@dataclass
class Experiment:
    name: str
    samples: list[str] | None = None  # None: every discovered sample
    # "<stage>.<key>" -> values, or a list of such grids (cells: the union of their products)
    grid: dict[str, list[Any]] | list[dict[str, list[Any]]] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)  # "<stage>.<key>" -> value for every cell
    description: str = ""
    sheet: str | None = None  # a sample sheet of its own (e.g. shared benchmark data), else the config's
    # grid key -> {grid value -> {"<stage>.<key>": value}}: values a cell takes along with that grid value
    linked: dict[str, dict[Any, dict[str, Any]]] = field(default_factory=dict)
    extends: str | None = None  # the grid this one is a variant of (its keys are merged in already)

    @property
    def grids(self) -> list[dict[str, list[Any]]]:
        """The grid as a list of grids (one for a plain mapping)."""
        return list(self.grid) if isinstance(self.grid, list) else ([self.grid] if self.grid else [])

    def grid_values(self) -> dict[str, list[Any]]:
        """Every grid key with the union of its values over the grids."""
        return _union_of_values(self.grids)

    def cells(self) -> dict[str, dict[str, Any]]:
        """cell id -> {"stage.key": value} for every grid combination (insertion-ordered)."""
        if not self.grids:
            return {BASE_CELL: {}}
        out: dict[str, dict[str, Any]] = {}
        for grid in self.grids:
            keys = list(grid)
            for combo in itertools.product(*(grid[k] for k in keys)):
                values = dict(zip(keys, combo, strict=True))
                extra: dict[str, Any] = {}
                for key, value in values.items():
                    extra.update(self.linked.get(key, {}).get(value, {}))
                out[cell_id(values)] = {**values, **extra}
        return out


def _union_of_values(grids: list[dict]) -> dict[str, list[Any]]:
    """Every key of ``grids`` with the union of its values (a value that is not a list is skipped:
    checked, with its file named, when the experiment is loaded)."""
    out: dict[str, list[Any]] = {}
    for grid in grids:
        for key, values in grid.items():
            out.setdefault(key, [])
            out[key] += [v for v in values if v not in out[key]] if isinstance(values, list) else []
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, list | tuple):
        text = "x".join(_fmt(v) for v in value)
    elif isinstance(value, dict):
        text = "-".join(f"{k}{_fmt(v)}" for k, v in value.items())
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "", text.replace("/", "-"))


MAX_ID = 100  # longer ids keep a readable head and a hash of the whole (file names stay < 255 bytes)


def is_seed(key: str) -> bool:
    """A grid key or table column that repeats a setting with another random draw (grid.seed,
    train.loop.seed, spoco.sampling_seed, a column 'seed'): pooled over, never a setting of its own."""
    return "seed" in key.rsplit(".", 1)[-1]


def cell_id(values: dict[str, Any]) -> str:
    """Stable, readable id of a parameter combination: ``key-value`` pairs joined by '_'."""
    if not values:
        return BASE_CELL
    text = "_".join(f"{k.split('.', 1)[-1]}-{_fmt(v)}" for k, v in values.items())
    if len(text) <= MAX_ID:
        return text
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]
    return f"{text[: MAX_ID - 11]}_{digest}"


KEYS = {"name", "samples", "grid", "fixed", "description", "sheet", "linked", "extends"}


def _read(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The experiment file's keys with those of the grid it ``extends`` (a name in the same
    folder, or a path relative to it) filled in; a cycle or a missing base is a clear error."""
    if not path.is_file():
        where = f" (extended by {seen[-1]})" if seen else ""
        raise ConfigError(f"experiment file does not exist{where}", path)
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError("an experiment file must be a mapping of keys", path)
    unknown = set(data) - KEYS
    if unknown:
        raise ConfigError(f"unknown keys {sorted(unknown)} in experiment", path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str) or not parent:
        raise ConfigError(f"extends must name another experiment, got {parent!r}", path)
    base_path = path.parent / (parent if parent.endswith((".yaml", ".yml")) else f"{parent}.yaml")
    if base_path.resolve() in [p.resolve() for p in (*seen, path)]:
        raise ConfigError(f"extends {parent!r} makes a cycle of experiments", path)
    base = _read(base_path, (*seen, path))
    merged = {k: v for k, v in base.items() if k != "name"}  # a variant's name is its own
    merged.update({k: v for k, v in data.items() if k not in ("fixed", "linked")})
    merged["fixed"] = {**(base.get("fixed") or {}), **(data.get("fixed") or {})}
    merged["linked"] = _merge_linked(base.get("linked") or {}, data.get("linked") or {}, merged.get("grid"))
    merged["extends"] = parent
    return merged


def _merge_linked(base: dict, own: dict, grid: Any) -> dict:
    """The base's linked values the variant's grid still sweeps, merged with the variant's own per
    grid value (the variant's keys win, the base's other keys stay, as in ``fixed``). The variant's
    own are checked in full later: a typo there stays an error."""
    raw = grid if isinstance(grid, list) else [grid]
    swept = _union_of_values([g for g in raw if isinstance(g, dict)])
    out: dict = {}
    for key, per_value in base.items():
        if key in swept and isinstance(per_value, dict):
            out[key] = {v: extra for v, extra in per_value.items() if v in swept[key]}
    for key, per_value in own.items():
        if not isinstance(per_value, dict) or not isinstance(out.get(key), dict):
            out[key] = per_value
            continue
        merged = dict(out[key])
        for value, extra in per_value.items():
            old = merged.get(value)
            merged[value] = {**old, **extra} if isinstance(old, dict) and isinstance(extra, dict) else extra
        out[key] = merged
    return out


def load_experiment(path: str | Path) -> Experiment:
    path = Path(path)
    data = _read(path)
    exp = Experiment(name=data.get("name", path.stem), samples=data.get("samples"),
                     grid=data.get("grid") or {}, fixed=data.get("fixed") or {},
                     description=data.get("description", ""), sheet=data.get("sheet"),
                     linked=data.get("linked") or {}, extends=data.get("extends"))
    if not isinstance(exp.grid, dict | list) or (
        isinstance(exp.grid, list) and not all(isinstance(g, dict) and g for g in exp.grid)
    ):
        raise ConfigError("grid must map '<stage>.<parameter>' keys to values, or be a list of such mappings", path)
    grid_values = exp.grid_values()
    for key, values in [*(kv for g in exp.grids for kv in g.items()), *((k, [v]) for k, v in exp.fixed.items())]:
        if "." not in key:
            raise ConfigError(f"grid key {key!r} must be '<stage>.<parameter>'", path)
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid values of {key!r} must be a non-empty list", path)
    for key, per_value in exp.linked.items():
        if key not in grid_values or not isinstance(per_value, dict):
            raise ConfigError(f"linked key {key!r} must be a grid key mapping its values to parameters", path)
        for value, extra in per_value.items():
            if value not in grid_values[key]:
                raise ConfigError(f"linked value {value!r} is not among the grid values of {key!r}", path)
            bad = [k for k in (extra or {}) if "." not in k or k in grid_values]
            if not isinstance(extra, dict) or bad:
                raise ConfigError(
                    f"linked[{key!r}][{value!r}] must map '<stage>.<parameter>' keys that are not grid keys, "
                    f"got {bad or extra!r}", path)
    return exp


def stage_overrides(values: dict[str, Any], stage: str) -> dict[str, Any]:
    """The nested parameter dict of one stage from flat ``stage.key[.sub]`` entries."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        head, _, rest = key.partition(".")
        if head != stage:
            continue
        node = out
        parts = rest.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def cell_for(values: dict[str, Any], stages: tuple[str, ...]) -> str:
    """Id of the sub-cell that only the given stages depend on (shared upstream outputs)."""
    return cell_id({k: v for k, v in values.items() if k.split(".", 1)[0] in stages})


def cell_rows(exp: Experiment) -> list[dict[str, Any]]:
    """One row per cell: its id and every value it takes (grid and linked), for a listing."""
    return [{"cell": cid, **values} for cid, values in exp.cells().items()]


def list_experiments(folder: str | Path) -> list[dict[str, Any]]:
    """Name, cell count, base and description of every grid in ``folder``; a grid that does not
    load is listed with its error instead, so one broken file does not hide the others."""
    out = []
    for path in sorted(Path(folder).glob("*.yaml")):
        try:
            exp = load_experiment(path)
        except ConfigError as err:
            out.append({"name": path.stem, "cells": None, "extends": None, "description": f"ERROR: {err}"})
            continue
        out.append({"name": path.stem, "cells": len(exp.cells()), "extends": exp.extends,
                    "description": exp.description})
    return out

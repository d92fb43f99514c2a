"""List the experiment grids, or show what one grid runs: its samples, fixed values and cells.

Without NAME: one line per grid in the folder (cells, the grid it extends, description). With
NAME (or a path to a grid file): the grid resolved as the workflow sees it, a variant's base
merged in, and a table of its cells with every value each cell takes (grid and linked values).
Nothing is run; 'snakemake -n --config experiment=NAME' lists the jobs.

Examples:
  zarrseg grids
  zarrseg grids spoco_budget_900
  zarrseg grids spoco_budget_900 --csv cells.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "list the experiment grids, or show one grid's samples, fixed values and cells"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", nargs="?", help="a grid name in --dir, or a path to a grid file")
    parser.add_argument("--dir", help="folder of the grids (default: ./config/experiments, else the one of the "
                                      "zarrseg checkout)")
    parser.add_argument("--csv", metavar="FILE", help="also write the cell table of NAME to FILE")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..errors import ConfigError
    from ..experiments import cell_rows, list_experiments, load_experiment

    folder = Path(args.dir) if args.dir else _default_folder()
    if args.csv:
        from ..runs import check_output

        check_output(args.csv)  # before anything is printed
    if args.name is None:
        if args.csv:
            raise ConfigError("--csv writes the cells of one grid: give its NAME (zarrseg grids NAME --csv FILE)")
        if not folder.is_dir():
            raise ConfigError("no such folder of experiment grids (use --dir)", folder)
        table = pd.DataFrame(list_experiments(folder))
        if table.empty:
            raise ConfigError("no experiment grids (*.yaml) in this folder", folder)
        table["cells"] = table["cells"].astype("Int64")
        table["extends"] = table["extends"].fillna("")
        print(table.to_string(index=False, max_colwidth=90))
        return 0
    path = Path(args.name)
    if not path.suffix:
        path = folder / f"{args.name}.yaml"
    exp = load_experiment(path)
    head = exp.name + (f" (extends {exp.extends})" if exp.extends else "")
    print(f"{head}: {exp.description}" if exp.description else head)
    samples = ", ".join(exp.samples) if exp.samples else "every sample of the sheet"
    print(f"samples: {samples}" + (f" (sheet {exp.sheet})" if exp.sheet else ""))
    if exp.fixed:
        print("fixed:")
        for key, value in exp.fixed.items():
            print(f"  {key} = {value!r}")
    cells = pd.DataFrame(cell_rows(exp))
    for col in cells.columns:  # a value some cells lack makes pandas store whole numbers as floats (2.0)
        numbers = pd.to_numeric(cells[col], errors="coerce")
        if cells[col].dtype.kind == "f" and (numbers.dropna() % 1 == 0).all():
            cells[col] = numbers.astype("Int64")
    print(f"{len(cells)} cells:")
    print(cells.to_string(index=False, na_rep="-"))  # -: a value this cell does not set
    if args.csv:
        from ..ome import atomic_output

        with atomic_output(args.csv) as tmp:
            cells.to_csv(tmp, index=False)
    return 0


def _default_folder() -> Path:
    """The grids of the folder the command runs in (a checkout), else those of zarrseg's own checkout."""
    here = Path("config/experiments")
    if here.is_dir():
        return here
    from ..nightly.snake import repo_root

    return repo_root() / "config" / "experiments"

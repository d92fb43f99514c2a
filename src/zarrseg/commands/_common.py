"""Argument helpers shared by the subcommands."""

from __future__ import annotations

import argparse
from typing import TypeVar

from ..params import load_params, parse_overrides

T = TypeVar("T")


def add_params_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("parameters")
    group.add_argument("--params", metavar="YAML|JSON", action="append", default=[],
                       help="stage parameters: a YAML/JSON file or a JSON string (repeatable; later wins)")
    group.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                       help="override one parameter, e.g. --set beta=0.6 --set dask.n_workers=2")


def params_from_args(cls: type[T], args: argparse.Namespace, where: str) -> T:
    return load_params(cls, *args.params, parse_overrides(args.overrides), where=where)

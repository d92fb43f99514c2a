"""Argument helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TypeVar

from ..errors import ConfigError
from ..params import load_params, parse_overrides, read_mapping, renamed_keys, unknown_key_message

T = TypeVar("T")


def add_params_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("parameters")
    group.add_argument("--params", metavar="YAML|JSON", action="append", default=[],
                       help="stage parameters: a YAML/JSON file or a JSON string (repeatable; later wins)")
    group.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                       help="override one parameter, e.g. --set beta=0.6 --set dask.n_workers=2")


def params_from_args(cls: type[T], args: argparse.Namespace, where: str) -> T:
    """``cls`` from the ``--params`` sources (later wins) and ``--set`` overrides.

    A file may hold the section itself or, as in config/config.yaml, the section under its name
    (``segment: {beta: 0.6}``); a key no parameter has is reported with the file that holds it.
    """
    sources = [_section(source, cls, where) for source in args.params]
    return load_params(cls, *sources, parse_overrides(args.overrides), where=where)


def _section(source: str, cls: type, where: str) -> dict:
    values = read_mapping(source)
    names = {f.name for f in dataclasses.fields(cls)}
    if list(values) == [where] and where not in names and isinstance(values[where], dict):
        values = values[where]
    unknown = sorted(set(values) - names - set(renamed_keys(cls)))
    if unknown and not str(source).lstrip().startswith("{"):  # a file: name it
        raise ConfigError(unknown_key_message(unknown[0], sorted(names), where), source)
    return values

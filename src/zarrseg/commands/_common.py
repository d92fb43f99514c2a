"""Argument helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TypeVar

from ..errors import ConfigError
from ..params import load_params, parse_overrides, read_mapping, renamed_keys, unknown_key_message

T = TypeVar("T")


def add_params_arguments(parser: argparse.ArgumentParser, section: str, example: str) -> None:
    """``--params`` / ``--set`` for the parameters of config section ``section`` (a stage or method
    section, or ``name=module:Class``); ``--help`` ends with every key, its default and meaning,
    read from the dataclass when help is asked for (the command's start-up imports nothing more)."""
    name = section.split("=")[0]
    group = parser.add_argument_group(
        "parameters", f"keys of the '{name}' section of config/config.yaml; all of them, with defaults, at the end")
    group.add_argument("--params", metavar="YAML|JSON", action="append", default=[],
                       help=f"a YAML/JSON file (the section itself, or under '{name}:') or a JSON string "
                            "(repeatable; later wins)")
    group.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                       help=f"override one parameter (dotted keys reach nested ones), e.g. --set {example}")
    base = parser.format_help
    parser.format_help = lambda: base() + "\n" + parameters_help(section)  # type: ignore[method-assign]


def parameters_help(section: str, width: int = 100) -> str:
    """The parameter reference of ``section`` as plain text: ``key = default`` and its meaning."""
    import importlib
    import textwrap

    from ..schema import parameter_rows, params_class

    name, _, target = section.partition("=")
    if target:
        module, cls_name = target.split(":")
        cls = getattr(importlib.import_module(module), cls_name)
    else:
        cls = params_class(name)
    lines = [f"parameters of '{name}' (key = default: meaning):"]
    for key, shown, text in parameter_rows(cls):
        head = f"  {key} = {shown}"
        lines += textwrap.wrap(f"{head}: {text}" if text else head, width, subsequent_indent=" " * 6)
    return "\n".join(lines) + "\n"


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
    # the section under its own name (a workflow config's layout); the unet method's section "train"
    # also has a field "train" (a list of images), so a mapping there is the section too
    if list(values) == [where] and isinstance(values[where], dict):
        values = values[where]
    unknown = sorted(set(values) - names - set(renamed_keys(cls)))
    if unknown and not str(source).lstrip().startswith("{"):  # a file: name it
        raise ConfigError(unknown_key_message(unknown[0], sorted(names), where), source)
    return values


def given_keys(cls: type, args: argparse.Namespace, where: str) -> set[str]:
    """Top-level keys the user set (``--params`` files or ``--set``), defaults aside."""
    keys = set(parse_overrides(args.overrides))
    for source in args.params:
        keys |= set(_section(source, cls, where))
    return keys
